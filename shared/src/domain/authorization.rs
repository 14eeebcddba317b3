//! A browser's authorization in progress: created when a connect link is opened, consumed exactly once
//! by the callback.

use crate::ids::{ConnectionId, TenantId};
use crate::secret::{random_urlsafe, sha256_hex, OneTimeSecret, PkceVerifier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key a one-time secret (OAuth state, connect-link token) is stored under: its SHA-256, so a
/// leaked table does not hand out usable values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OneTimeKey(String);

impl OneTimeKey {
    pub fn of(secret: &OneTimeSecret) -> Self {
        Self(sha256_hex(secret.expose()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new random one-time secret (256 bits) and the key it is stored under.
pub fn new_one_time_secret() -> (OneTimeSecret, OneTimeKey) {
    let secret = OneTimeSecret::new(random_urlsafe(32));
    let key = OneTimeKey::of(&secret);
    (secret, key)
}

/// A customer's pending choice of division (Exact Online). An authorization that grants several
/// divisions, for a connection that named none, is stored at once, bound provisionally, and the page
/// after it offers the granted divisions: one choice, from the browser that authorized, for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivisionChoice {
    /// The hash of the single-use value the page's form carries.
    pub ticket: OneTimeKey,
    /// The hash of the cookie binding the choice to the browser that authorized.
    pub browser_binding: OneTimeKey,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationPurpose {
    Connect,
    Reconnect,
}

/// A connect or reconnect link: names one connection and one purpose, expires, and is stored only
/// under the hash of its token. It may be opened more than once until it expires (a person may retry
/// after denying consent); each opening starts a new single-use authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectLink {
    pub tenant: TenantId,
    pub connection: ConnectionId,
    pub purpose: AuthorizationPurpose,
    /// The connection's link generation it was issued for (`Connection::link_generation`); links
    /// stored before generations were kept have 0, as had their connections.
    #[serde(default)]
    pub generation: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Everything the callback needs, kept server-side under the state's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub tenant: TenantId,
    pub connection: ConnectionId,
    pub purpose: AuthorizationPurpose,
    pub pkce_verifier: Option<PkceVerifier>,
    /// Twinfield requires a nonce on every authorize request.
    pub nonce: Option<String>,
    /// Hash of the browser-binding cookie value: the callback must come from the same browser.
    pub browser_binding: OneTimeKey,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The outcome of consuming a one-time value: it can be used at most once, and never after expiry.
#[derive(Debug, Clone)]
pub enum Consumed<T> {
    Fresh(T),
    Expired,
    /// Never issued, or already used.
    Unknown,
}
