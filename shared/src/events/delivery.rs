//! Deliveries: one per event and target (the bus, or one webhook endpoint), each settled on its own so
//! one endpoint that is down holds back neither the others nor the bus.

use super::event::StatusChangeEvent;
use crate::domain::StatusTransition;
use crate::ids::{ConnectionId, TenantId, WebhookId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A transition not yet turned into deliveries: the event outbox entry the store wrote in the same
/// atomic write as the transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// The store's stable key of the transition; the event id is derived from it.
    pub key: String,
    pub connection: ConnectionId,
    pub transition: StatusTransition,
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The broker's EventBridge bus.
    Bus,
    Webhook {
        id: WebhookId,
    },
}

/// A delivery's key: the event and the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey(String);

impl DeliveryKey {
    pub fn of(event_id: &str, target: &Target) -> Self {
        match target {
            Target::Bus => Self(format!("{event_id}/bus")),
            Target::Webhook { id } => Self(format!("{event_id}/{id}")),
        }
    }

    /// A key as a store gave it back.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a delivery is about: fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTicket {
    pub tenant: TenantId,
    pub target: Target,
    pub event: StatusChangeEvent,
    pub created_at: DateTime<Utc>,
}

impl DeliveryTicket {
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey::of(&self.event.id, &self.target)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt, due at `due_at`.
    Pending {
        due_at: DateTime<Utc>,
    },
    /// Claimed at `claimed_at` by a dispatcher that is sending it (or crashed doing so).
    Sending {
        claimed_at: DateTime<Utc>,
    },
    Delivered {
        at: DateTime<Utc>,
    },
    /// Given up after retrying for the policy's whole window: a dead letter the tenant can list.
    Dead {
        at: DateTime<Utc>,
    },
    /// Not sent, and not to be: the webhook was deleted before its turn.
    Dropped {
        at: DateTime<Utc>,
    },
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub ticket: DeliveryTicket,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// What the last failed attempt met (a status code, a timeout); never a response body.
    pub last_error: Option<String>,
}

impl DeliveryRecord {
    pub fn key(&self) -> DeliveryKey {
        self.ticket.key()
    }
}

/// The answer to claiming a delivery.
// The record is returned by value once per claim and consumed at once; boxing it would only add an
// allocation (as for `LeaseAttempt`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryClaim {
    /// Ours to send; the state is `Sending` at the claim time.
    Claimed(DeliveryRecord),
    /// Another dispatcher holds a claim that is not stale.
    Busy,
    /// Pending, but not due yet.
    NotDue,
    /// Already delivered, dead or dropped.
    Settled,
    Missing,
}

/// How a claimed delivery ends its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverySettle {
    Delivered {
        at: DateTime<Utc>,
        attempts: u32,
    },
    Retry {
        due_at: DateTime<Utc>,
        attempts: u32,
        last_error: String,
    },
    Dead {
        at: DateTime<Utc>,
        attempts: u32,
        last_error: String,
    },
    Dropped {
        at: DateTime<Utc>,
        reason: String,
    },
}

impl DeliverySettle {
    /// The state a delivery has after this settle.
    pub fn state(&self) -> DeliveryState {
        match *self {
            Self::Delivered { at, .. } => DeliveryState::Delivered { at },
            Self::Retry { due_at, .. } => DeliveryState::Pending { due_at },
            Self::Dead { at, .. } => DeliveryState::Dead { at },
            Self::Dropped { at, .. } => DeliveryState::Dropped { at },
        }
    }

    pub fn attempts(&self, before: u32) -> u32 {
        match *self {
            Self::Delivered { attempts, .. }
            | Self::Retry { attempts, .. }
            | Self::Dead { attempts, .. } => attempts,
            Self::Dropped { .. } => before,
        }
    }

    pub fn last_error(&self) -> Option<&str> {
        match self {
            Self::Retry { last_error, .. } | Self::Dead { last_error, .. } => Some(last_error),
            Self::Dropped { reason, .. } => Some(reason),
            Self::Delivered { .. } => None,
        }
    }
}

/// When failed deliveries are tried again: after `first_delay`, doubling up to `max_delay`, for at
/// most `give_up_after` from the event's first attempt; then the delivery is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
    /// A claim older than this is taken to belong to a dispatcher that died, and is taken over (the
    /// delivery may then be sent twice; receivers deduplicate on the event id).
    pub stale_after: Duration,
}

impl Default for RetryPolicy {
    /// 1, 2, 4 … minutes up to two hours apart, for a day: 18 attempts.
    fn default() -> Self {
        Self {
            first_delay: Duration::minutes(1),
            max_delay: Duration::hours(2),
            give_up_after: Duration::hours(24),
            stale_after: Duration::minutes(5),
        }
    }
}

impl RetryPolicy {
    /// After failed attempt number `attempts` (1 for the first) at `now`: when to try again, or
    /// `None` when that would fall outside the window that began at `created_at`.
    pub fn next_attempt(
        &self,
        created_at: DateTime<Utc>,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let doublings = attempts.saturating_sub(1).min(30);
        let delay = self
            .first_delay
            .checked_mul(1 << doublings)
            .map_or(self.max_delay, |d| d.min(self.max_delay));
        let due = now + delay;
        (due <= created_at + self.give_up_after).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retries_double_from_a_minute_up_to_the_cap_and_end_after_a_day() {
        let policy = RetryPolicy::default();
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let mut now = start;
        let mut delays = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match policy.next_attempt(start, attempts, now) {
                Some(due) => {
                    delays.push((due - now).num_minutes());
                    now = due;
                }
                None => break,
            }
        }
        assert_eq!(&delays[..8], &[1, 2, 4, 8, 16, 32, 64, 120]);
        assert!(delays[8..].iter().all(|d| *d == 120), "{delays:?}");
        assert!(now <= start + Duration::hours(24));
        assert!(
            now > start + Duration::hours(22),
            "the window is used: {now}"
        );
        assert_eq!(attempts, 18);
    }
}
