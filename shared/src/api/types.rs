//! Request and response bodies of the integration API. Request bodies refuse unknown fields, so a
//! misspelt field is an error rather than silently ignored.

use crate::domain::{
    Connection, ConnectionStatus, Identity, Locale, ProviderContext, ProviderKind, TimeZone,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /v1/connections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// The tenant's app registration the connection uses (it selects the provider).
    pub app_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Who hears when the connection needs a person.
    pub recipients: Vec<String>,
    /// When set, only this person may authorize it (e.g. Acumatica's integration user).
    #[serde(default)]
    pub required_identity: Option<IdentityInput>,
    /// Exact Online only: the division (administration) to bind the connection to. The
    /// authorization must grant it. Without it the broker binds the customer's only granted
    /// division, or the one open in Exact Online when several are granted.
    #[serde(default)]
    pub exact_division: Option<i64>,
    /// Generic OAuth 2.0 / OpenID Connect providers: a reconnect may be authorized by another
    /// account than the one that connected (by default it is refused).
    #[serde(default)]
    pub allow_user_change: bool,
    /// The integration's page to offer a way back to after connecting (the outcome is added to its
    /// query). Its origin must be on the tenant's allow-list.
    #[serde(default)]
    pub return_url: Option<String>,
    /// The language of its pages and emails, `nl` or `en` (else the tenant's).
    #[serde(default)]
    pub locale: Option<String>,
    /// The IANA time zone its people read times in, e.g. `Europe/Amsterdam` (else the tenant's).
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    pub subject: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /v1/connections/{id}/credentials`: credentials obtained outside the broker. Exactly one kind:
/// an authorization code (exchanged at once), an OAuth 2.0 token pair, or Twinfield's OAuth 1.0-era
/// access token and secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCredentials {
    #[serde(default)]
    pub authorization_code: Option<String>,
    /// The redirect URI the code was issued for, when it is not the app's.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// The PKCE verifier, when the code was requested with a challenge.
    #[serde(default)]
    pub code_verifier: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires, if known. Without it the broker refreshes once to learn.
    #[serde(default)]
    pub access_token_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub legacy_access_token: Option<String>,
    #[serde(default)]
    pub legacy_access_secret: Option<String>,
}

impl fmt::Debug for RegisterCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "[redacted]" } else { "-" };
        f.debug_struct("RegisterCredentials")
            .field("authorization_code", &set(&self.authorization_code))
            .field("redirect_uri", &self.redirect_uri)
            .field("code_verifier", &set(&self.code_verifier))
            .field("access_token", &set(&self.access_token))
            .field("refresh_token", &set(&self.refresh_token))
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("legacy_access_token", &set(&self.legacy_access_token))
            .field("legacy_access_secret", &set(&self.legacy_access_secret))
            .finish()
    }
}

/// A connection as an integration sees it. Never carries a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionView {
    pub id: String,
    pub app_id: String,
    pub provider: ProviderKind,
    pub display_name: Option<String>,
    /// `not_connected`, `connected`, `refresh_failing`, `reconnect_required`, `disabled`, `disconnected`.
    pub status: String,
    /// Why the status is what it is, and what to do, when a person must act.
    pub status_detail: Option<String>,
    pub context: Option<ProviderContext>,
    pub recipients: Vec<String>,
    pub required_identity: Option<Identity>,
    /// The language of its pages and emails (`nl`, `en`); `None` leaves it to the tenant's choice.
    pub locale: Option<Locale>,
    /// The IANA time zone its people read times in; `None` leaves it to the tenant's choice.
    pub time_zone: Option<TimeZone>,
    /// Exact Online: the division the integration named on creation (the binding is the context's
    /// `division` once connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_division: Option<i64>,
    /// Whether a reconnect may be authorized by another account (generic providers).
    pub allow_user_change: bool,
    /// Where the connect pages offer a way back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    pub authorized_by: Option<Identity>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// Set while the provider's tokens live shorter than the vault's write budget allows refreshes:
    /// sessions get the current token until it expires, then wait (503, `Retry-After`) for the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_limited_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Connection> for ConnectionView {
    fn from(c: &Connection) -> Self {
        let status_detail = match &c.status() {
            ConnectionStatus::NotConnected => {
                Some("open the connect link, or register credentials obtained elsewhere".into())
            }
            ConnectionStatus::RefreshFailing { last_error, .. } => Some(format!(
                "refreshing fails for now ({last_error}); the broker keeps retrying"
            )),
            ConnectionStatus::ReconnectRequired { reason } => Some(reason.explain()),
            ConnectionStatus::Disabled { reason } => Some(format!(
                "{reason} Resolve it with the provider, then reconnect."
            )),
            ConnectionStatus::Disconnected => {
                Some("disconnected on request; create a new connection to connect again".into())
            }
            ConnectionStatus::Connected => None,
        };
        Self {
            id: c.id.to_string(),
            app_id: c.app.to_string(),
            provider: c.provider,
            display_name: c.display_name.clone(),
            status: c.status().kind().as_str().into(),
            status_detail,
            context: c.context.clone(),
            recipients: c
                .recipients
                .addresses()
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            required_identity: c.required_identity.clone(),
            locale: c.locale,
            time_zone: c.time_zone,
            exact_division: c.requested_division,
            allow_user_change: c.allow_user_change,
            return_url: c.return_url.as_ref().map(|u| u.as_str().to_owned()),
            authorized_by: c.authorized_by.clone(),
            access_expires_at: c.access_expires_at,
            refresh_expires_at: c.refresh_expires_at,
            refresh_limited_since: c.refresh_limited_since,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A connect or reconnect link: the URL is the only place its token exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkView {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// `201` answer to `POST /v1/connections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedConnection {
    pub connection: ConnectionView,
    pub connect_link: LinkView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionPage {
    pub connections: Vec<ConnectionView>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/connections/{id}/session`: the one answer that carries a token.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionGrant {
    pub connection_id: String,
    pub provider: ProviderKind,
    pub access_token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    /// Seconds from now until `expires_at`.
    pub expires_in: i64,
    /// Where the data lives: Twinfield cluster and organisation; Exact base URL, the bound division,
    /// the authorizing user and every division the authorization grants; Acumatica instance and
    /// tenant.
    pub context: Option<ProviderContext>,
}

impl fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGrant")
            .field("connection_id", &self.connection_id)
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/connections/{id}/twinfield-session`: a SOAP session id and the cluster to call.
#[derive(Clone, Serialize, Deserialize)]
pub struct TwinfieldSessionGrant {
    pub connection_id: String,
    pub session_id: String,
    pub cluster_url: String,
    /// `oauth2` (AccessTokenLogon) or `legacy` (OAuthLogon).
    pub logon: String,
    /// The company selected on the session, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// When the session dies if nobody uses it; every call on it moves this on by `idle_timeout_secs`.
    pub idle_expires_at: DateTime<Utc>,
    pub idle_timeout_secs: i64,
}

impl fmt::Debug for TwinfieldSessionGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwinfieldSessionGrant")
            .field("connection_id", &self.connection_id)
            .field("session_id", &"[redacted]")
            .field("cluster_url", &self.cluster_url)
            .finish_non_exhaustive()
    }
}
