//! The connection status state machine.
//!
//! ```text
//!                      authorized
//!   NotConnected ───────────────────────────────┐
//!        │ reconnect needed (legacy credentials)│
//!        ▼                                      ▼
//!   ReconnectRequired ◄── reconnect needed ── Connected ◄──── refresh succeeded ───┐
//!        │    ▲                                 │  ▲                                │
//!        │    └──── reconnect needed ──┐        │  └──────── authorized           │
//!        │                             │   refresh failed                          │
//!        │ authorized                  │        ▼                                  │
//!        └───────► Connected     RefreshFailing ──────────────────────────────────┘
//!                                      (transient; counts attempts)
//!   provider disabled (from any live status) ──► Disabled ── authorized ──► Connected
//!   disconnect (from any status but Disconnected) ──► Disconnected (terminal; the record is kept)
//! ```
//!
//! Every applied event yields a [`StatusTransition`] that is stored atomically with the connection,
//! so notifications and audits are derived from what really happened.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a person must authorize the connection again. The kind drives behaviour; the detail keeps the
/// provider's own words (never a secret) for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectReason {
    pub kind: ReconnectKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectKind {
    /// The user or an administrator revoked the grant, or the provider no longer recognises it.
    GrantRevoked,
    /// The refresh token outlived its lifetime (idle or absolute).
    RefreshTokenExpired,
    /// The provider says the refresh token was already used: the chain is broken.
    RefreshTokenReused,
    /// A refresh was interrupted and the provider's new token could not be recovered.
    RefreshInterrupted,
    /// The provider retired the legacy credentials and requires OAuth 2.0 (Twinfield).
    LegacyCredentialsRetired,
    /// Refreshing failed for too long to keep trying.
    RepeatedFailures,
    /// The provider rejects the app's own credentials (client id or secret), or the app's provider
    /// settings name an address the broker refuses to call.
    ClientMisconfigured,
}

impl ReconnectReason {
    pub fn new(kind: ReconnectKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// One sentence a person can act on.
    pub fn explain(&self) -> String {
        let what = match self.kind {
            ReconnectKind::GrantRevoked => "The provider no longer accepts this connection's authorization (it was revoked or replaced).",
            ReconnectKind::RefreshTokenExpired => "The connection's authorization expired at the provider.",
            ReconnectKind::RefreshTokenReused => "The provider reports that the connection's refresh token was already used, so the authorization chain is broken.",
            ReconnectKind::RefreshInterrupted => "A token refresh was interrupted and the provider's new token could not be recovered.",
            ReconnectKind::LegacyCredentialsRetired => "The provider retired this connection's old-style credentials and now requires OAuth 2.0.",
            ReconnectKind::RepeatedFailures => "Refreshing the connection has failed for too long.",
            ReconnectKind::ClientMisconfigured => "The provider rejects the app registration's client id or secret, or the registration points at an address the broker does not call.",
        };
        let todo = match self.kind {
            ReconnectKind::ClientMisconfigured => {
                "Check the app registration's client id, secret and provider URLs, then reconnect."
            }
            _ => "Open the reconnect link and authorize again.",
        };
        if self.detail.is_empty() {
            format!("{what} {todo}")
        } else {
            format!("{what} {todo} (Provider said: {})", self.detail)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Created; nobody has authorized it yet.
    NotConnected,
    /// Tokens are in the vault and the broker keeps them fresh.
    Connected,
    /// Refreshing fails for a reason that may pass (outage, rate limit); the broker keeps trying.
    RefreshFailing {
        since: DateTime<Utc>,
        attempts: u32,
        last_error: String,
    },
    /// Only a person can fix it: authorize again.
    ReconnectRequired { reason: ReconnectReason },
    /// The provider blocked, disabled or deleted the organisation.
    Disabled { reason: String },
    /// Disconnected on request; tokens are gone, the record stays for the audit trail.
    Disconnected,
}

/// The status without its data: for indexes, metrics and transition records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    NotConnected,
    Connected,
    RefreshFailing,
    ReconnectRequired,
    Disabled,
    Disconnected,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Connected => "connected",
            Self::RefreshFailing => "refresh_failing",
            Self::ReconnectRequired => "reconnect_required",
            Self::Disabled => "disabled",
            Self::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for StatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEvent {
    /// A person completed the OAuth flow (connect or reconnect), or credentials were registered.
    Authorized,
    RefreshSucceeded,
    RefreshFailed {
        error: String,
    },
    ReconnectNeeded(ReconnectReason),
    ProviderDisabled {
        reason: String,
    },
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a connection that is {from} cannot take the event '{event}'")]
pub struct InvalidTransition {
    pub from: StatusKind,
    pub event: &'static str,
}

/// Who caused a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// A broker component, e.g. `token-refresh`.
    System(String),
    /// An integration, by API key prefix.
    ApiKey(String),
    /// An operator using the admin CLI.
    Operator(String),
    /// The person who authorized at the provider, by the provider's identity for them.
    EndUser(String),
}

/// One recorded status change: who, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusTransition {
    pub from: StatusKind,
    pub to: StatusKind,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// Why, in words a person can read. Never contains a secret.
    pub reason: String,
}

impl StatusTransition {
    /// Whether the people named on the connection must hear of it.
    pub fn needs_notification(&self) -> bool {
        self.from != self.to
            && matches!(
                self.to,
                StatusKind::ReconnectRequired | StatusKind::Disabled
            )
    }
}

impl StatusEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::RefreshSucceeded => "refresh succeeded",
            Self::RefreshFailed { .. } => "refresh failed",
            Self::ReconnectNeeded(_) => "reconnect needed",
            Self::ProviderDisabled { .. } => "provider disabled",
            Self::Disconnect => "disconnect",
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Authorized => "authorized at the provider".into(),
            Self::RefreshSucceeded => "token refreshed".into(),
            Self::RefreshFailed { error } => format!("refresh failed: {error}"),
            Self::ReconnectNeeded(reason) => reason.explain(),
            Self::ProviderDisabled { reason } => reason.clone(),
            Self::Disconnect => "disconnected on request".into(),
        }
    }
}

impl ConnectionStatus {
    pub fn kind(&self) -> StatusKind {
        match self {
            Self::NotConnected => StatusKind::NotConnected,
            Self::Connected => StatusKind::Connected,
            Self::RefreshFailing { .. } => StatusKind::RefreshFailing,
            Self::ReconnectRequired { .. } => StatusKind::ReconnectRequired,
            Self::Disabled { .. } => StatusKind::Disabled,
            Self::Disconnected => StatusKind::Disconnected,
        }
    }

    /// Whether only a person can make it work again: authorize again, or first resolve the
    /// provider's block. These are the statuses that get reminders.
    pub fn needs_person(&self) -> bool {
        matches!(self, Self::ReconnectRequired { .. } | Self::Disabled { .. })
    }

    /// Whether the broker holds tokens it may use and refresh.
    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Connected | Self::RefreshFailing { .. })
    }

    /// Applies an event, returning the new status and the record of the change.
    pub fn apply(
        &self,
        event: StatusEvent,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<(ConnectionStatus, StatusTransition), InvalidTransition> {
        use ConnectionStatus as S;
        let invalid = || InvalidTransition {
            from: self.kind(),
            event: event.name(),
        };
        let next = match (self, &event) {
            (S::Disconnected, _) => return Err(invalid()),
            (_, StatusEvent::Disconnect) => S::Disconnected,
            (_, StatusEvent::Authorized) => S::Connected,
            (S::Connected | S::RefreshFailing { .. }, StatusEvent::RefreshSucceeded) => {
                S::Connected
            }
            (S::Connected, StatusEvent::RefreshFailed { error }) => S::RefreshFailing {
                since: at,
                attempts: 1,
                last_error: error.clone(),
            },
            (
                S::RefreshFailing {
                    since, attempts, ..
                },
                StatusEvent::RefreshFailed { error },
            ) => S::RefreshFailing {
                since: *since,
                attempts: attempts.saturating_add(1),
                last_error: error.clone(),
            },
            (
                S::NotConnected
                | S::Connected
                | S::RefreshFailing { .. }
                | S::ReconnectRequired { .. },
                StatusEvent::ReconnectNeeded(reason),
            ) => S::ReconnectRequired {
                reason: reason.clone(),
            },
            (
                S::Connected
                | S::RefreshFailing { .. }
                | S::ReconnectRequired { .. }
                | S::Disabled { .. },
                StatusEvent::ProviderDisabled { reason },
            ) => S::Disabled {
                reason: reason.clone(),
            },
            _ => return Err(invalid()),
        };
        let transition = StatusTransition {
            from: self.kind(),
            to: next.kind(),
            at,
            actor,
            reason: event.reason(),
        };
        Ok((next, transition))
    }
}

/// Lets `connection.status() == ConnectionStatus::Connected` read as it says.
impl PartialEq<ConnectionStatus> for &ConnectionStatus {
    fn eq(&self, other: &ConnectionStatus) -> bool {
        **self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system() -> Actor {
        Actor::System("test".into())
    }

    #[test]
    fn the_happy_life_cycle() {
        let now = Utc::now();
        let (s, t) = ConnectionStatus::NotConnected
            .apply(StatusEvent::Authorized, system(), now)
            .unwrap();
        assert_eq!(s, ConnectionStatus::Connected);
        assert_eq!(
            (t.from, t.to),
            (StatusKind::NotConnected, StatusKind::Connected)
        );
        let mut s = s;
        for _ in 0..2 {
            let failed = StatusEvent::RefreshFailed {
                error: "503".into(),
            };
            s = s.apply(failed, system(), now).unwrap().0;
        }
        assert!(matches!(
            s,
            ConnectionStatus::RefreshFailing { attempts: 2, .. }
        ));
        let (s, _) = s
            .apply(StatusEvent::RefreshSucceeded, system(), now)
            .unwrap();
        assert_eq!(s, ConnectionStatus::Connected);
        let (s, t) = s.apply(StatusEvent::Disconnect, system(), now).unwrap();
        assert_eq!(s, ConnectionStatus::Disconnected);
        assert!(!t.needs_notification());
    }

    #[test]
    fn reconnect_required_is_notified_and_fixed_by_authorizing() {
        let now = Utc::now();
        let reason =
            ReconnectReason::new(ReconnectKind::RefreshTokenReused, "Old refresh token used.");
        let (s, t) = ConnectionStatus::Connected
            .apply(StatusEvent::ReconnectNeeded(reason), system(), now)
            .unwrap();
        assert!(t.needs_notification());
        assert!(t.reason.contains("already used") && t.reason.contains("Old refresh token used."));
        let (s, _) = s
            .apply(StatusEvent::Authorized, Actor::EndUser("u1".into()), now)
            .unwrap();
        assert_eq!(s, ConnectionStatus::Connected);
    }

    #[test]
    fn refused_transitions_say_what_was_refused() {
        let now = Utc::now();
        let err = ConnectionStatus::NotConnected
            .apply(StatusEvent::RefreshSucceeded, system(), now)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a connection that is not_connected cannot take the event 'refresh succeeded'"
        );
        assert!(ConnectionStatus::Disconnected
            .apply(StatusEvent::Authorized, system(), now)
            .is_err());
        let disabled = ConnectionStatus::Disabled {
            reason: "Blocked".into(),
        };
        assert!(disabled
            .apply(
                StatusEvent::RefreshFailed { error: "x".into() },
                system(),
                now
            )
            .is_err());
    }
}
