//! One provider's definition, as data: endpoints, scopes, client authentication, PKCE, extra authorize
//! parameters, token lifetimes, the refresh policy and the post-authorization discovery step.

use super::{err, CatalogueError};
use crate::domain::ProviderKind;
use crate::providers::error::ErrorRule;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `authorize_params` value that stands for a fresh random value per request.
pub const RANDOM_PARAM: &str = "{random}";

/// How the client authenticates at the token endpoint. Servers disagree on the Basic header, so which
/// Basic is a per-provider choice: a secret with a character outside `A-Za-z0-9-._*` reaches the server
/// intact only in the encoding it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic as RFC 6749 §2.3.1 defines `client_secret_basic`: id and secret are each
    /// form-urlencoded, then joined with `:` and base64-encoded. What OpenID Connect discovery means.
    Basic,
    /// HTTP Basic over the plain `client_id:client_secret`, not form-encoded first. Twinfield's help
    /// article "How to create an authorization string" builds it this way, and its IdentityServer-based
    /// login service does not URL-decode the parts, so the RFC encoding breaks such secrets there.
    BasicUnencoded,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

/// Whether a refresh token survives its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshRotation {
    /// Good for one use; every refresh brings a new one (Exact Online). Never present one twice.
    SingleUse,
    /// Stays valid across refreshes. A reply that carries a new one still replaces it.
    Reusable,
}

/// When a refresh token stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshExpiry {
    /// The provider does not say.
    Unknown,
    /// Dies `days` after it was issued unless used (and replaced) before.
    Idle { days: u32 },
    /// Dies `days` after the grant was first authorized, however often it is used.
    Absolute { days: u32 },
    /// Each refresh extends it to `days` from now, up to `absolute_cap_days` after the first authorization.
    Sliding {
        days: u32,
        #[serde(default)]
        absolute_cap_days: Option<u32>,
    },
}

/// A provider's refresh-token rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshPolicy {
    pub rotation: RefreshRotation,
    pub expiry: RefreshExpiry,
    /// The least time between receiving a token set and asking for the next (Exact Online: 570 s).
    #[serde(default)]
    pub min_interval_secs: Option<u64>,
    /// Refresh at least this often, so a revoked grant is noticed before anyone needs the connection
    /// (Twinfield's refresh token never expires on its own).
    #[serde(default)]
    pub health_check_secs: Option<u64>,
    /// Token-endpoint calls the refresh engine makes per connection per UTC day, at most: below a
    /// provider's daily cap, leaving room for connects (Exact Online: 200 per app per user per day).
    #[serde(default)]
    pub max_token_calls_per_day: Option<u32>,
    /// Token-endpoint calls the refresh engine makes per UTC day for all the connections one provider
    /// user authorized under one app, at most (Exact Online caps per app and user, and one user may
    /// authorize several connections). Counted in the store, so every process shares the count.
    #[serde(default)]
    pub max_token_calls_per_app_user_per_day: Option<u32>,
    /// Failed token-endpoint calls per app and user after which that user's connections stop calling
    /// the token endpoint, counted over the current and the previous UTC hour so that no sliding hour
    /// holds more (Exact Online blocks the app for an hour after more than 10 in an hour).
    #[serde(default)]
    pub max_failed_token_calls_per_app_user_per_hour: Option<u32>,
}

impl RefreshPolicy {
    /// When a refresh token received at `now` dies. `authorized_at` is when the grant was first
    /// authorized, if known; `previous` is the expiry of the token it replaces, if any.
    pub fn refresh_expiry(
        &self,
        now: DateTime<Utc>,
        authorized_at: Option<DateTime<Utc>>,
        previous: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let days = |d: u32| Duration::days(i64::from(d));
        match self.expiry {
            RefreshExpiry::Unknown => None,
            RefreshExpiry::Idle { days: d } => Some(now + days(d)),
            RefreshExpiry::Absolute { days: d } => match (authorized_at, previous) {
                (Some(start), _) => Some(start + days(d)),
                // The lifetime counts from the first authorization: a refresh keeps the expiry it had.
                (None, Some(previous)) => Some(previous),
                (None, None) => Some(now + days(d)),
            },
            RefreshExpiry::Sliding {
                days: d,
                absolute_cap_days,
            } => {
                let slid = now + days(d);
                let cap = absolute_cap_days
                    .and_then(|cap| authorized_at.or(Some(now)).map(|start| start + days(cap)));
                Some(cap.map_or(slid, |cap| slid.min(cap)))
            }
        }
    }

    /// The earliest moment a set received at `received_at` may be refreshed.
    pub fn earliest_refresh(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        received_at + Duration::seconds(self.min_interval_secs.unwrap_or(0) as i64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetimes {
    /// Assumed when a token reply has no `expires_in`.
    pub access_token_secs: u64,
    #[serde(default)]
    pub authorization_code_secs: Option<u64>,
    /// How long a Twinfield session.asmx session lives unused (every call on it, `KeepAlive`
    /// included, restarts it). Unpublished; the broker states it in the session answer and checks a
    /// pooled session with `KeepAlive` before trusting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_secs: Option<u64>,
}

/// What the broker does after authorization to learn where the data lives and who authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryStep {
    /// `accesstokenvalidation`: cluster URL, organisation, user code.
    TwinfieldAccessTokenValidation,
    /// `/api/v1/current/Me`: current division and user.
    ExactCurrentMe,
    /// Instance and tenant from the app settings; identity from userinfo where available.
    Acumatica,
    /// Identity from userinfo (or the id_token) where offered.
    Userinfo,
    /// Nothing to discover.
    None,
}

/// Endpoint templates: absolute URLs, or paths joined to the definition's `base_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTemplates {
    #[serde(default)]
    pub authorize: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub userinfo: Option<String>,
    /// Twinfield's `accesstokenvalidation`.
    #[serde(default)]
    pub token_validation: Option<String>,
    /// Twinfield's login-host `session.asmx`.
    #[serde(default)]
    pub session_service: Option<String>,
    /// Exact Online's `current/Me`.
    #[serde(default)]
    pub current_user: Option<String>,
    /// RFC 7009 token revocation, when the provider offers it and has no discovery document saying so.
    #[serde(default)]
    pub revocation: Option<String>,
}

/// One provider, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDefinition {
    pub id: String,
    pub kind: ProviderKind,
    pub display_name: String,
    /// Free text: why a value is what it is, where the provider leaves it open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    /// OpenID Connect issuer: endpoints, PKCE and client authentication not given come from its
    /// discovery document.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub endpoints: EndpointTemplates,
    /// Default scopes; an app's own scopes replace them.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Send a PKCE S256 challenge.
    #[serde(default)]
    pub pkce: Option<bool>,
    /// Hosts besides the issuer's that its discovery document may name for endpoints. Empty: every
    /// discovered endpoint must be on the issuer's origin, so a tampered or careless document cannot
    /// send the client secret or tokens elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovered_endpoint_hosts: Vec<String>,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    pub lifetimes: Lifetimes,
    pub refresh: RefreshPolicy,
    pub discovery: DiscoveryStep,
    /// Checked before the RFC 6749 defaults when classifying an error answer.
    #[serde(default)]
    pub error_rules: Vec<ErrorRule>,
    /// Where the provider may say an organisation's services are (Twinfield's `twf.clusterUrl` and a
    /// logon's `<cluster>`), as [`super::OriginPattern`]s; a URL outside them is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_origins: Vec<String>,
}

impl ProviderDefinition {
    /// Checks that the definition can be used at all; resolution checks the URLs.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        let id = &self.id;
        if id.trim().is_empty() || id.len() > 100 || id.contains(char::is_whitespace) {
            return err(format!(
                "definition id {id:?} must be 1 to 100 characters without spaces"
            ));
        }
        if self
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return err(format!("{id}: each scope must be one word"));
        }
        let e = &self.endpoints;
        let has = |endpoint: &Option<String>| endpoint.is_some() || self.issuer.is_some();
        if !has(&e.authorize) || !has(&e.token) {
            return err(format!(
                "{id}: give the authorize and token endpoints, or an issuer to discover them from"
            ));
        }
        let relative = [
            &e.authorize,
            &e.token,
            &e.userinfo,
            &e.token_validation,
            &e.session_service,
            &e.current_user,
            &e.revocation,
        ]
        .into_iter()
        .flatten()
        .any(|t| t.starts_with('/'));
        if relative && self.base_url.is_none() {
            return err(format!("{id}: endpoint paths need a base_url"));
        }
        if self.issuer.is_none() && (self.client_auth.is_none() || self.pkce.is_none()) {
            return err(format!("{id}: client_auth and pkce must be given when there is no issuer to read them from"));
        }
        let needs = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                err(format!("{id}: the {what}"))
            }
        };
        match self.discovery {
            DiscoveryStep::TwinfieldAccessTokenValidation => needs(
                e.token_validation.is_some(),
                "discovery step needs endpoints.token_validation",
            )?,
            DiscoveryStep::ExactCurrentMe => needs(
                e.current_user.is_some(),
                "discovery step needs endpoints.current_user",
            )?,
            _ => {}
        }
        match (self.kind, self.discovery) {
            (ProviderKind::Twinfield, DiscoveryStep::TwinfieldAccessTokenValidation)
            | (ProviderKind::ExactOnline, DiscoveryStep::ExactCurrentMe)
            | (ProviderKind::Acumatica, DiscoveryStep::Acumatica)
            | (ProviderKind::Generic, DiscoveryStep::Userinfo | DiscoveryStep::None) => {}
            (kind, step) => {
                return err(format!(
                    "{id}: a {kind:?} provider cannot use the {step:?} discovery step"
                ))
            }
        }
        for (name, value) in &self.authorize_params {
            if name.is_empty() || value.is_empty() {
                return err(format!("{id}: authorize_params need a name and a value"));
            }
            if RESERVED_PARAMS.contains(&name.as_str()) {
                return err(format!(
                    "{id}: authorize parameter {name} is set by the client itself"
                ));
            }
        }
        for pattern in &self.cluster_origins {
            super::OriginPattern::parse(pattern)
                .map_err(|e| CatalogueError(format!("{id}: {e}")))?;
        }
        if self.lifetimes.access_token_secs == 0 {
            return err(format!(
                "{id}: lifetimes.access_token_secs must be positive"
            ));
        }
        Ok(())
    }
}

/// Parameters the client writes itself; a definition may not set them.
const RESERVED_PARAMS: [&str; 7] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_expiry_follows_the_policy() {
        let now = Utc::now();
        let start = now - Duration::days(10);
        let policy = |expiry| RefreshPolicy {
            rotation: RefreshRotation::SingleUse,
            expiry,
            min_interval_secs: Some(570),
            health_check_secs: None,
            max_token_calls_per_day: None,
            max_token_calls_per_app_user_per_day: None,
            max_failed_token_calls_per_app_user_per_hour: None,
        };
        assert_eq!(
            policy(RefreshExpiry::Idle { days: 30 }).refresh_expiry(now, None, None),
            Some(now + Duration::days(30))
        );
        assert_eq!(
            policy(RefreshExpiry::Absolute { days: 30 }).refresh_expiry(now, Some(start), None),
            Some(start + Duration::days(30))
        );
        let prev = now + Duration::days(3);
        assert_eq!(
            policy(RefreshExpiry::Absolute { days: 30 }).refresh_expiry(now, None, Some(prev)),
            Some(prev)
        );
        let sliding = policy(RefreshExpiry::Sliding {
            days: 15,
            absolute_cap_days: Some(20),
        });
        assert_eq!(
            sliding.refresh_expiry(now, Some(start), None),
            Some(start + Duration::days(20))
        );
        assert_eq!(
            policy(RefreshExpiry::Unknown).refresh_expiry(now, None, None),
            None
        );
        assert_eq!(sliding.earliest_refresh(now), now + Duration::seconds(570));
    }
}
