//! Twinfield's session service (`session.asmx`, SOAP 1.1): `AccessTokenLogon` and `OAuthLogon` on the
//! login host, `SelectCompany`, `KeepAlive` and `Abandon` on the cluster the logon named.
//!
//! Answers are read with the bounded reader in [`super::xml`], whatever prefixes, SOAP version (1.1 or
//! 1.2) or encoding (UTF-8 or UTF-16) they come in; every `LogonResult` maps to a [`LogonVerdict`].

mod answers;
mod pool;

pub use answers::*;
pub use pool::{PoolKey, PoolSettings, PoolSlot, PooledSession, SessionPool};

use super::catalogue::{CatalogueError, ResolvedProvider};
use super::error::Redactor;
use super::http::{parse_retry_after, ProviderHttp};
use crate::domain::LegacyTwinfieldCredentials;
use crate::secret::{AccessToken, ClientSecret, SessionId};
use url::Url;

/// The OAuth 1.0-era consumer credentials of the app (`OAuthLogon`'s `clientToken` / `clientSecret`).
#[derive(Debug, Clone)]
pub struct LegacyConsumer {
    pub client_token: String,
    pub client_secret: ClientSecret,
}

/// Client for the session service.
#[derive(Debug, Clone)]
pub struct TwinfieldSessionClient {
    http: ProviderHttp,
    login_service: Url,
    /// Checks and rewrites the cluster a logon names.
    twinfield: std::sync::Arc<ResolvedProvider>,
}

impl TwinfieldSessionClient {
    pub fn new(twinfield: &ResolvedProvider, http: ProviderHttp) -> Result<Self, CatalogueError> {
        let login_service = twinfield.endpoints.session_service.clone().ok_or_else(|| {
            CatalogueError(format!(
                "{}: no endpoints.session_service",
                twinfield.definition.id
            ))
        })?;
        Ok(Self {
            http,
            login_service,
            twinfield: std::sync::Arc::new(twinfield.clone()),
        })
    }

    /// Logs on with an OAuth 2.0 access token.
    pub async fn access_token_logon(
        &self,
        access_token: &AccessToken,
    ) -> Result<Logon, SessionError> {
        let op = "AccessTokenLogon";
        let body = envelope(None, op, &[("accessToken", access_token.expose())]);
        let mut redactor = Redactor::default();
        redactor.add(access_token.expose());
        let cluster = |u: &str| self.twinfield.reported_service_url(u);
        self.call(self.login_service.clone(), op, body, &redactor, |reply| {
            read_logon(reply, op, &cluster)
        })
        .await
    }

    /// Logs on with OAuth 1.0-era credentials. Organisations that moved to OAuth 2.0 answer
    /// `OAuth2AuthenticationRequired`.
    pub async fn oauth_logon(
        &self,
        consumer: &LegacyConsumer,
        credentials: &LegacyTwinfieldCredentials,
    ) -> Result<Logon, SessionError> {
        let op = "OAuthLogon";
        let body = envelope(
            None,
            op,
            &[
                ("clientToken", &consumer.client_token),
                ("clientSecret", consumer.client_secret.expose()),
                ("accessToken", credentials.access_token.expose()),
                ("accessSecret", credentials.access_secret.expose()),
            ],
        );
        let mut redactor = Redactor::default();
        redactor.add(consumer.client_secret.expose());
        redactor.add(credentials.access_token.expose());
        redactor.add(credentials.access_secret.expose());
        let cluster = |u: &str| self.twinfield.reported_service_url(u);
        self.call(self.login_service.clone(), op, body, &redactor, |reply| {
            read_logon(reply, op, &cluster)
        })
        .await
    }

    pub async fn select_company(
        &self,
        session: &TwinfieldSession,
        company: &str,
    ) -> Result<SelectCompanyResult, SessionError> {
        let body = envelope(
            Some(&session.session_id),
            "SelectCompany",
            &[("company", company)],
        );
        self.call(
            cluster_service(session)?,
            "SelectCompany",
            body,
            &session_redactor(session),
            read_select_company,
        )
        .await
    }

    pub async fn keep_alive(&self, session: &TwinfieldSession) -> Result<(), SessionError> {
        let body = envelope(Some(&session.session_id), "KeepAlive", &[]);
        let read = |reply: SoapReply<'_>| read_soap_answer(reply, "KeepAlive").map(|_| ());
        self.call(
            cluster_service(session)?,
            "KeepAlive",
            body,
            &session_redactor(session),
            read,
        )
        .await
    }

    pub async fn abandon(&self, session: &TwinfieldSession) -> Result<(), SessionError> {
        let body = envelope(Some(&session.session_id), "Abandon", &[]);
        let read = |reply: SoapReply<'_>| read_soap_answer(reply, "Abandon").map(|_| ());
        self.call(
            cluster_service(session)?,
            "Abandon",
            body,
            &session_redactor(session),
            read,
        )
        .await
    }

    async fn call<T>(
        &self,
        url: Url,
        operation: &str,
        body: String,
        redactor: &Redactor,
        read: impl FnOnce(SoapReply<'_>) -> Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        let request = self
            .http
            .client()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{TWINFIELD_NS}{operation}\""))
            .body(body);
        let reply = self.http.send(request).await.map_err(|f| {
            if f.address_refused {
                SessionError::AddressRefused(f.detail)
            } else if f.too_large {
                SessionError::Malformed(f.detail)
            } else {
                SessionError::Unavailable {
                    detail: f.detail,
                    outcome_unknown: f.outcome_unknown,
                }
            }
        })?;
        let retry_after = reply
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let soap = SoapReply {
            status: reply.status,
            content_type: reply.content_type.as_deref(),
            retry_after,
            body: &reply.body,
        };
        read(soap).map_err(|e| e.scrub(redactor))
    }
}

fn session_redactor(session: &TwinfieldSession) -> Redactor {
    let mut r = Redactor::default();
    r.add(session.session_id.expose());
    r
}

fn cluster_service(session: &TwinfieldSession) -> Result<Url, SessionError> {
    Url::parse(&format!(
        "{}/webservices/session.asmx",
        session.cluster_url.base()
    ))
    .map_err(|e| SessionError::Malformed(format!("cluster URL: {e}")))
}

/// A SOAP 1.1 request envelope; values are escaped.
fn envelope(session: Option<&SessionId>, operation: &str, params: &[(&str, &str)]) -> String {
    let esc = |v: &str| quick_xml::escape::escape(v).into_owned();
    let header = session
        .map(|id| format!("<soap:Header><Header xmlns=\"{TWINFIELD_NS}\"><SessionID>{}</SessionID></Header></soap:Header>", esc(id.expose())))
        .unwrap_or_default();
    let params: String = params
        .iter()
        .map(|(name, value)| format!("<{name}>{}</{name}>", esc(value)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:soap=\"{SOAP11_NS}\">\
         {header}<soap:Body><{operation} xmlns=\"{TWINFIELD_NS}\">{params}</{operation}></soap:Body></soap:Envelope>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_are_escaped() {
        let xml = envelope(
            Some(&SessionId::new("s<1>")),
            "SelectCompany",
            &[("company", "A&B")],
        );
        assert!(
            xml.contains("<SessionID>s&lt;1&gt;</SessionID>")
                && xml.contains("<company>A&amp;B</company>")
        );
    }
}
