//! The HTTP side of the OAuth client: the token POST with either client authentication, JSON GETs for
//! discovery, and turning every failure into a classified [`ProviderError`].

use super::catalogue::ClientAuth;
use super::error::{
    classify, tidy, ErrorClass, Operation, ProviderError, RecoveredTokens, Redactor,
};
use super::http::{parse_retry_after, HttpReply, TransportFailure};
use super::oauth::OAuthClient;
use super::token_response::{self, describe_non_json, ParsedTokens, TokenReply};
use crate::domain::{ProviderKind, TokenSet};
use crate::secret::AccessToken;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use url::Url;

impl OAuthClient {
    /// `request` carrying `form`, with the client authenticated as `style` says: by HTTP Basic, or by
    /// its id and secret in the form. The revocation endpoint takes the same (RFC 7009 §2.1). `Err`
    /// says why the client's credentials cannot be sent that way.
    pub(super) fn authenticated_form(
        &self,
        request: reqwest::RequestBuilder,
        style: ClientAuth,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let secret = self.app.client_secret.expose();
        let request = match basic_credentials(style, &self.app.client_id, secret) {
            Some(basic) => request.header(reqwest::header::AUTHORIZATION, basic?),
            None => {
                form.push(("client_id", self.app.client_id.clone()));
                form.push(("client_secret", secret.to_string()));
                request
            }
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        Ok(request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body))
    }

    /// POSTs to the token endpoint and reads the answer.
    pub(super) async fn token_request(
        &self,
        operation: Operation,
        form: Vec<(&'static str, String)>,
        mut redactor: Redactor,
        now: DateTime<Utc>,
    ) -> Result<ParsedTokens, TokenFailure> {
        let endpoints = self.endpoints().await.map_err(TokenFailure::Ready)?;
        redactor.add(self.app.client_secret.expose());
        let request = self
            .http
            .client()
            .post(endpoints.token.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        let request = self
            .authenticated_form(request, endpoints.client_auth, form)
            .map_err(|why| {
                let e = ProviderError::new(
                    ErrorClass::ClientMisconfigured,
                    self.kind(),
                    operation,
                    why,
                );
                TokenFailure::Ready(e)
            })?;
        let reply = self
            .http
            .send(request)
            .await
            .map_err(|f| TokenFailure::Transport(operation, f))?;
        if (300..400).contains(&reply.status) {
            return Err(TokenFailure::Redirected(operation, reply.status));
        }
        match token_response::read_token_reply(reply.status, &reply.body) {
            TokenReply::Tokens(tokens) => Ok(tokens),
            TokenReply::Refused(refused) => {
                let retry_after = reply
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now));
                Err(TokenFailure::Refused {
                    operation,
                    refused: Box::new(refused),
                    retry_after,
                    redactor,
                })
            }
        }
    }

    /// GETs a JSON object (discovery document, userinfo, Twinfield's token validation, Exact's Me).
    pub(super) async fn get_json(
        &self,
        operation: Operation,
        url: Url,
        bearer: Option<&AccessToken>,
        redactor: &Redactor,
    ) -> Result<Map<String, Value>, ProviderError> {
        let mut request = self
            .http
            .client()
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token.expose());
        }
        let reply = self
            .http
            .send(request)
            .await
            .map_err(|f| transport_error(self.kind(), operation, f))?;
        json_object(self.kind(), operation, reply, redactor, self.clock.now())
    }
}

/// The `Authorization` header value for a Basic style, `None` for credentials in the body. The value
/// holds the secret: it goes into the request and nowhere else.
fn basic_credentials(
    style: ClientAuth,
    client_id: &str,
    secret: &str,
) -> Option<Result<String, String>> {
    let pair = match style {
        ClientAuth::Body => return None,
        // RFC 6749 2.3.1: both parts are form-encoded before joining.
        ClientAuth::Basic => {
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            format!("{}:{}", enc(client_id), enc(secret))
        }
        // The server splits at the first colon and decodes nothing, so a colon in the id cannot be sent.
        ClientAuth::BasicUnencoded if client_id.contains(':') => {
            return Some(Err(
                "the client id contains a colon, which HTTP Basic without encoding cannot carry: check the app registration's client id".into(),
            ))
        }
        ClientAuth::BasicUnencoded => format!("{client_id}:{secret}"),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    Some(Ok(format!("Basic {encoded}")))
}

/// A token request that did not yield tokens, before it is turned into a [`ProviderError`].
pub(super) enum TokenFailure {
    /// The endpoints could not be established (discovery document).
    Ready(ProviderError),
    Transport(Operation, TransportFailure),
    Redirected(Operation, u16),
    Refused {
        operation: Operation,
        refused: Box<token_response::RefusedReply>,
        retry_after: Option<std::time::Duration>,
        redactor: Redactor,
    },
}

impl TokenFailure {
    pub(super) fn into_error(self, now: DateTime<Utc>, client: &OAuthClient) -> ProviderError {
        let kind = client.kind();
        match self {
            Self::Ready(e) => e,
            Self::Transport(op, f) => transport_error(kind, op, f),
            Self::Redirected(op, status) => {
                let mut e = ProviderError::new(
                    ErrorClass::Unexpected,
                    kind,
                    op,
                    "the token endpoint answered with a redirect",
                );
                e.status = Some(status);
                e
            }
            Self::Refused {
                operation,
                refused,
                retry_after,
                redactor,
            } => {
                let r = *refused;
                let description = redactor.clean(&r.description);
                let d = &client.provider.definition;
                let class = classify(
                    &d.error_rules,
                    r.status,
                    r.error_code.as_deref(),
                    &description,
                );
                let mut e = ProviderError::new(class, kind, operation, description);
                e.status = Some(r.status);
                e.error_code = r.error_code.map(|c| redactor.clean(&c));
                e.retry_after = retry_after;
                // A 5xx may come after the provider acted (Exact's lost token pair).
                e.outcome_unknown = class == ErrorClass::ProviderUnavailable;
                if let Some(refresh_token) = r.carried_refresh_token {
                    let tokens = r.carried_access_token.map(|access_token| {
                        let secs = r
                            .carried_expires_in
                            .filter(|s| *s > 0)
                            .unwrap_or(d.lifetimes.access_token_secs as i64);
                        TokenSet {
                            access_token,
                            access_expires_at: now + Duration::seconds(secs),
                            refresh_token: Some(refresh_token.clone()),
                            refresh_expires_at: d.refresh.refresh_expiry(now, None, None),
                            scope: None,
                            received_at: now,
                        }
                    });
                    e.recovered = Some(Box::new(RecoveredTokens {
                        refresh_token,
                        tokens,
                    }));
                }
                e
            }
        }
    }
}

pub(super) fn transport_error(
    kind: ProviderKind,
    operation: Operation,
    f: TransportFailure,
) -> ProviderError {
    // A refused address is the configuration's fault (an instance URL, the catalogue, a discovery
    // document): retrying as for an outage would only repeat the refusal.
    let class = if f.address_refused {
        ErrorClass::ClientMisconfigured
    } else if f.too_large {
        ErrorClass::Unexpected
    } else {
        ErrorClass::ProviderUnavailable
    };
    let mut e = ProviderError::new(class, kind, operation, f.detail);
    e.outcome_unknown = f.outcome_unknown;
    e
}

/// A JSON object from a 2xx answer, or the classified failure.
pub(super) fn json_object(
    kind: ProviderKind,
    operation: Operation,
    reply: HttpReply,
    redactor: &Redactor,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, ProviderError> {
    let parsed = serde_json::from_slice::<Value>(
        reply
            .body
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(&reply.body),
    );
    let fail = |class: ErrorClass, detail: String| {
        let mut e = ProviderError::new(class, kind, operation, redactor.clean(&detail));
        e.status = Some(reply.status);
        e.retry_after = reply
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, now));
        e
    };
    match (reply.status, parsed) {
        (200..=299, Ok(Value::Object(map))) => Ok(map),
        (200..=299, _) => Err(fail(
            ErrorClass::Unexpected,
            "the answer is not a JSON object".into(),
        )),
        (status, parsed) => {
            let map = match parsed {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            };
            let code = map
                .as_ref()
                .and_then(|m| m.get("error"))
                .and_then(Value::as_str)
                .map(|c| tidy(c, 100));
            let words = map
                .as_ref()
                .and_then(token_response::description)
                .unwrap_or_else(|| describe_non_json(&reply.body));
            let class = match status {
                429 => ErrorClass::RateLimited,
                500.. => ErrorClass::ProviderUnavailable,
                // The token was refused: it was revoked (or the grant lost the access it needs).
                400 | 401 | 403 => ErrorClass::GrantRevoked,
                _ => ErrorClass::Unexpected,
            };
            let mut e = fail(class, words);
            e.error_code = code;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(header: &str) -> String {
        let b64 = header.strip_prefix("Basic ").unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn each_basic_style_encodes_as_its_server_decodes() {
        let secret = "a+b/c=d&e%f g";
        let plain = basic_credentials(ClientAuth::BasicUnencoded, "app", secret)
            .unwrap()
            .unwrap();
        assert_eq!(decoded(&plain), format!("app:{secret}"));
        let rfc = basic_credentials(ClientAuth::Basic, "app", secret)
            .unwrap()
            .unwrap();
        assert_eq!(decoded(&rfc), "app:a%2Bb%2Fc%3Dd%26e%25f+g");
        assert!(basic_credentials(ClientAuth::Body, "app", secret).is_none());
        let colon = basic_credentials(ClientAuth::BasicUnencoded, "a:b", secret).unwrap();
        assert!(colon.unwrap_err().contains("colon"));
    }
}
