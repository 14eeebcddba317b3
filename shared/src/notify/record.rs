//! The outbox's records: one notice per email the broker owes someone, and how it was settled.
//!
//! A notice is created atomically with what causes it — a status transition's notice is written by
//! the store in the same write as the transition (so none is lost) — or, for the daily sweep's
//! warnings, under a deterministic key (so a repeated sweep finds it instead of creating another).

use crate::domain::{StatusKind, StatusTransition};
use crate::ids::ConnectionId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a notice within its store. Opaque: each backend has its own form (the DynamoDB one
/// also arrives in the table's stream: `adapters::dynamodb::stream`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeKey(String);

impl NoticeKey {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NoticeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeSubject {
    /// A status change people must hear of (see [`notice_kind_of`]).
    Transition(StatusTransition),
    /// The daily sweep's warning that a connection is about to stop working.
    Warning(Warning),
    /// The daily sweep's reminder that a connection still waits for a person.
    Reminder(Reminder),
}

/// A reminder while a connection stays in a status only a person can end (see
/// [`crate::domain::Connection::awaiting_person_since`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// The status it waits in, and since when: a reminder whose connection has left that wait since
    /// (reconnected, or a new wait begun) is not sent.
    pub status: StatusKind,
    pub since: DateTime<Utc>,
    /// 1 for the first reminder after the transition's own email.
    pub number: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    /// When the connection stops working, if known (legacy credentials have no set date).
    pub deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// The refresh token's absolute lifetime ends (Acumatica's 30 days); only a person can renew it.
    AbsoluteExpiry,
    /// Refreshing keeps failing and the refresh token dies when unused for too long.
    IdleExpiry,
    /// A Twinfield connection still runs on legacy (OAuth 1.0-era) credentials.
    LegacyCredentials,
}

/// The kind of email a notice becomes; the settled record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    ReconnectRequired,
    Disabled,
    Recovered,
    Warning(WarningKind),
    /// A reminder while reconnect required (or disabled, with that status).
    Reminder(StatusKind),
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReconnectRequired => "reconnect_required",
            Self::Disabled => "disabled",
            Self::Recovered => "recovered",
            Self::Warning(WarningKind::AbsoluteExpiry) => "warning_absolute_expiry",
            Self::Warning(WarningKind::IdleExpiry) => "warning_idle_expiry",
            Self::Warning(WarningKind::LegacyCredentials) => "warning_legacy_credentials",
            Self::Reminder(StatusKind::Disabled) => "reminder_disabled",
            Self::Reminder(_) => "reminder_reconnect_required",
        }
    }
}

/// Which transitions get a notice: those that need a person ([`StatusTransition::needs_notification`])
/// and a recovery from one of them. The embedded store's outbox trigger states the same rule in SQL
/// (`adapters/embedded/schema.rs`); a test holds the two together.
pub fn notice_kind_of(transition: &StatusTransition) -> Option<NoticeKind> {
    if transition.needs_notification() {
        return Some(match transition.to {
            StatusKind::Disabled => NoticeKind::Disabled,
            _ => NoticeKind::ReconnectRequired,
        });
    }
    let recovered = transition.to == StatusKind::Connected
        && matches!(
            transition.from,
            StatusKind::ReconnectRequired | StatusKind::Disabled
        );
    recovered.then_some(NoticeKind::Recovered)
}

impl NoticeSubject {
    pub fn kind(&self) -> Option<NoticeKind> {
        match self {
            Self::Transition(t) => notice_kind_of(t),
            Self::Warning(w) => Some(NoticeKind::Warning(w.kind)),
            Self::Reminder(r) => Some(NoticeKind::Reminder(r.status)),
        }
    }

    /// When the notice came to be owed: the outbox's order.
    pub fn created_at(&self) -> DateTime<Utc> {
        match self {
            Self::Transition(t) => t.at,
            Self::Warning(w) => w.created_at,
            Self::Reminder(r) => r.created_at,
        }
    }
}

/// Where a notice stands. Only `Pending` and `Sending` notices are in the outbox index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeState {
    Pending,
    /// Claimed at this time by a notifier that is sending it (or crashed while doing so).
    Sending {
        claimed_at: DateTime<Utc>,
    },
    Settled(NoticeOutcome),
}

/// How a notice ended: the record kept for every notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NoticeOutcome {
    Sent {
        at: DateTime<Utc>,
        kind: NoticeKind,
        recipients: u32,
    },
    /// Every attempt failed; the last error (without any secret) is kept.
    Failed {
        at: DateTime<Utc>,
        kind: Option<NoticeKind>,
        attempts: u32,
        error: String,
    },
    /// A notifier claimed it and was not heard of again (a crash between sending and recording), or
    /// the mail service's answer was lost: it may or may not have gone out, and is not sent again.
    DeliveryUnknown { at: DateTime<Utc> },
    /// Nothing to send (no recipients, superseded by a later status, recovery emails turned off).
    Skipped { at: DateTime<Utc>, why: String },
}

impl NoticeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::DeliveryUnknown { .. } => "unknown",
            Self::Skipped { .. } => "skipped",
        }
    }
}

/// One notice as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRecord {
    pub key: NoticeKey,
    pub connection: ConnectionId,
    pub subject: NoticeSubject,
    pub state: NoticeState,
    /// Failed sending attempts so far.
    pub attempts: u32,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It was pending and is now ours to send, claimed at the `now` given.
    Claimed(NoticeRecord),
    /// Another notifier claimed it at `claimed_at`, before the stale limit: leave it alone.
    Busy,
    /// Claimed at `claimed_at`, before the stale limit: its claimant is presumed dead.
    Stale {
        claimed_at: DateTime<Utc>,
    },
    /// Already settled.
    Settled(NoticeOutcome),
    Missing,
}

/// How a claim is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Settle it for good.
    Settle(NoticeOutcome),
    /// Back to pending after a failed attempt that certainly sent nothing; `attempts` is the new count.
    Retry { attempts: u32 },
}
