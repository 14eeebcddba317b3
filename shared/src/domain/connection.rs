//! A connection: one authorized link between a tenant's app and one provider organisation.

use super::locale::{Locale, TimeZone};
use super::people::{Identity, Recipients};
use super::provider::{ProviderContext, ProviderKind};
use super::status::ConnectionStatus;
use super::write_budget::VaultWriteBudget;
use crate::ids::{AppId, ConnectionId, LeaseOwner, TenantId, WriteId};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Which of a connection's two vault slots holds its current credentials.
///
/// New credentials are always written to the slot that is *not* current, and only then does the
/// metadata switch to it. So the current credentials are never overwritten in place (a crash between
/// the vault write and the metadata write leaves the old ones intact and the new ones findable), and
/// each slot takes half of the writes, which keeps an Exact Online connection in continuous use
/// (~150 rotations a day) under Secrets Manager's ~100 versions per secret per 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VaultSlot {
    #[serde(rename = "a")]
    A,
    #[serde(rename = "b")]
    B,
}

impl VaultSlot {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// The exact vault version holding the connection's current credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsPointer {
    pub slot: VaultSlot,
    pub write: WriteId,
}

/// Written before a refresh calls the provider, cleared when the outcome is stored. A worker that finds
/// it left behind knows a refresh was interrupted, which token it spent, and where the new credentials
/// would have been written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshInFlight {
    pub started_at: DateTime<Utc>,
    /// The credentials whose refresh token is being spent.
    pub spending: CredentialsPointer,
    /// Where the new credentials go if the provider answers.
    pub target: CredentialsPointer,
    /// The provider's answer, sealed, when the vault refused it: the next worker moves it to `target`
    /// (see [`crate::escrow`]). Cleared with the marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<crate::escrow::SealedCredentials>,
}

/// A cross-process refresh lease. Taking it bumps the connection's version, so writes fenced on the
/// version read under the lease are refused once someone else has taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: LeaseOwner,
    pub expires_at: DateTime<Utc>,
}

/// One failed attempt, kept for operators and for the "failing for days" rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub at: DateTime<Utc>,
    /// The classified failure, e.g. `provider_unavailable`.
    pub class: String,
    /// The provider's own words, without secrets.
    pub message: String,
}

/// Recent failures and the counters the refresh engine's cool-down reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureHistory {
    pub consecutive: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
    /// The most recent failures, newest last, at most [`FailureHistory::KEEP`].
    pub recent: Vec<FailureRecord>,
}

impl FailureHistory {
    pub const KEEP: usize = 10;

    pub fn record(&mut self, failure: FailureRecord) {
        if self.consecutive == 0 {
            self.first_failure_at = Some(failure.at);
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.recent.push(failure);
        if self.recent.len() > Self::KEEP {
            let excess = self.recent.len() - Self::KEEP;
            self.recent.drain(..excess);
        }
    }

    pub fn clear(&mut self) {
        self.consecutive = 0;
        self.first_failure_at = None;
    }

    /// Attempts that failed since `since` (for the per-hour ceiling).
    pub fn failures_since(&self, since: DateTime<Utc>) -> usize {
        self.recent.iter().filter(|f| f.at >= since).count()
    }
}

/// Token-endpoint calls a connection's refreshes made on one UTC day, for providers that cap them
/// (Exact Online: 200 per app per user per day). Kept with the connection, so every process counts
/// the same calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyTokenCalls {
    pub day: Option<NaiveDate>,
    pub count: u32,
}

impl DailyTokenCalls {
    /// Calls made on the day of `now`.
    pub fn on(&self, now: DateTime<Utc>) -> u32 {
        if self.day == Some(now.date_naive()) {
            self.count
        } else {
            0
        }
    }

    /// Counts one call at `now`.
    pub fn record(&mut self, now: DateTime<Utc>) {
        *self = Self {
            day: Some(now.date_naive()),
            count: self.on(now).saturating_add(1),
        };
    }

    fn is_unused(&self) -> bool {
        *self == Self::default()
    }
}

/// A connection's place in the stores' schedule indexes (see [`Connection::schedule_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleEntry {
    /// The scheduled refresh should look at it at this time.
    Due(DateTime<Utc>),
    /// Only a person can move it on, since this time.
    Awaiting(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant: TenantId,
    pub app: AppId,
    pub provider: ProviderKind,
    /// A label the integration chose, shown to people.
    pub display_name: Option<String>,
    /// Discovered after authorization.
    pub context: Option<ProviderContext>,
    /// Changed only by the transitions (`domain::transitions`); read it with [`Connection::status`].
    pub(super) status: ConnectionStatus,
    pub recipients: Recipients,
    pub authorized_by: Option<Identity>,
    /// When set, only this person may authorize (e.g. Acumatica's designated integration user).
    pub required_identity: Option<Identity>,
    /// The language its pages and emails are written in; `None` leaves it to the tenant's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// The time zone its people read times in; `None` leaves it to the tenant's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// The integration's page the connect pages offer a way back to; its origin is on the tenant's
    /// allow-list (checked when it is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<super::ReturnUrl>,
    /// The Acumatica instance its customer named, when its app leaves that to each customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acumatica_instance: Option<super::AcumaticaInstance>,
    pub credentials: Option<CredentialsPointer>,
    /// The current credentials are Twinfield's legacy (pre-OAuth 2.0) ones: they cannot be refreshed,
    /// the provider is retiring them, and only a person reconnecting moves the connection on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_credentials: bool,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the current access token was issued (received): with `access_expires_at`, its lifetime,
    /// which bounds the validity a caller may demand of it. Records written before it was kept have
    /// none until their next refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_issued_at: Option<DateTime<Utc>>,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// When the scheduled refresh should next look at it; `None` keeps it out of the due index.
    pub next_refresh_at: Option<DateTime<Utc>>,
    pub failures: FailureHistory,
    #[serde(default, skip_serializing_if = "DailyTokenCalls::is_unused")]
    pub token_calls: DailyTokenCalls,
    pub refresh_in_flight: Option<RefreshInFlight>,
    /// Managed by the store's lease operations only; a save never changes it.
    pub(crate) lease: Option<Lease>,
    /// Optimistic concurrency: every successful write (and every lease acquisition) increments it.
    /// Only the stores set it.
    pub(crate) version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a person last authorized it (connect, reconnect, registered credentials): when its current
    /// grant began, which absolute and capped refresh-token lifetimes count from. Records written
    /// before it was kept have none; [`Connection::grant_started_at`] falls back to `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<DateTime<Utc>>,
    /// When the current status began (a transition to the same status keeps it). Records written
    /// before it was kept have none; [`Connection::status_since`] falls back to `updated_at`.
    #[serde(
        default,
        rename = "status_since",
        skip_serializing_if = "Option::is_none"
    )]
    pub status_changed_at: Option<DateTime<Utc>>,
    /// Refresh writes per vault slot, held under the vault's version ceiling.
    #[serde(default, skip_serializing_if = "VaultWriteBudget::is_empty")]
    pub vault_writes: VaultWriteBudget,
    /// Since when the vault write budget holds refreshes back: the provider's tokens live shorter than
    /// the budget's pace, so callers get the current token until it expires and wait after that.
    /// Cleared once the budget has room again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_limited_since: Option<DateTime<Utc>>,
    /// Exact Online: the division the integration asked for when it created the connection. The
    /// first authorization binds to it (and is refused when it does not grant it); after that the
    /// context's `division` is the binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_division: Option<i64>,
    /// Exact Online: the customer may still choose another of the granted divisions (see
    /// `connect::flow::division`); cleared by the choice or the next authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division_choice: Option<super::authorization::DivisionChoice>,
    /// Only connect links of this generation work. It moves on when a newer link is issued (which
    /// retires the older ones) and when a person completes an authorization (which spends them all), so
    /// a forwarded or old link cannot re-authorize the connection. A counter, not a time: a link issued
    /// and spent within one clock tick must still be told apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub link_generation: u64,
    /// A reconnect may be authorized by another account of the same provider (generic providers; by
    /// default the account that connected is the only one that may reconnect).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_user_change: bool,
}

impl Connection {
    pub fn new(
        tenant: TenantId,
        app: AppId,
        provider: ProviderKind,
        recipients: Recipients,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ConnectionId::generate(),
            tenant,
            app,
            provider,
            display_name: None,
            context: None,
            status: ConnectionStatus::NotConnected,
            recipients,
            authorized_by: None,
            required_identity: None,
            locale: None,
            time_zone: None,
            return_url: None,
            acumatica_instance: None,
            credentials: None,
            legacy_credentials: false,
            access_expires_at: None,
            access_issued_at: None,
            refresh_expires_at: None,
            last_refresh_at: None,
            next_refresh_at: None,
            failures: FailureHistory::default(),
            token_calls: DailyTokenCalls::default(),
            refresh_in_flight: None,
            lease: None,
            version: 0,
            created_at: now,
            updated_at: now,
            authorized_at: None,
            status_changed_at: Some(now),
            vault_writes: VaultWriteBudget::default(),
            refresh_limited_since: None,
            requested_division: None,
            division_choice: None,
            link_generation: 0,
            allow_user_change: false,
        }
    }

    /// Exact Online divisions this connection already knows (its binding, or the one the integration
    /// named), through which the granted divisions can be listed when `CurrentDivision` cannot.
    pub fn known_divisions(&self) -> Vec<i64> {
        let bound = match &self.context {
            Some(ProviderContext::ExactOnline { division, .. }) => Some(*division),
            _ => None,
        };
        bound.into_iter().chain(self.requested_division).collect()
    }

    /// Which of the stores' schedule indexes holds it (at most one): the due index while the broker has
    /// it scheduled, else the awaiting index while it waits for a person, else neither.
    pub fn schedule_entry(&self) -> Option<ScheduleEntry> {
        match self.next_refresh_at {
            Some(at) => Some(ScheduleEntry::Due(at)),
            None => self.awaiting_person_since().map(ScheduleEntry::Awaiting),
        }
    }

    /// When the current grant began (see `authorized_at`).
    pub fn grant_started_at(&self) -> DateTime<Utc> {
        self.authorized_at.unwrap_or(self.created_at)
    }

    /// When the current status began.
    pub fn status_since(&self) -> DateTime<Utc> {
        self.status_changed_at.unwrap_or(self.updated_at)
    }

    /// Since when it waits for a person: only a person can make it work again (reconnect required,
    /// or disabled by the provider), or it works on legacy credentials only a person can replace.
    /// What reminders and legacy warnings count from. `None` while the broker keeps it working itself.
    pub fn awaiting_person_since(&self) -> Option<DateTime<Utc>> {
        let on_legacy = self.legacy_credentials && self.status.is_usable();
        (self.status.needs_person() || on_legacy).then(|| self.status_since())
    }

    pub fn status(&self) -> &ConnectionStatus {
        &self.status
    }

    /// The version this copy was read or written at (see the stores' fences).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// This copy as if it had been read at `version`: for tests of the stores' fences only.
    #[cfg(any(test, feature = "testing"))]
    pub fn read_at_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The refresh lease, as last read.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Whether a link of `generation` still works: the newest issued, and none completed since.
    pub fn link_is_current(&self, generation: u64) -> bool {
        generation == self.link_generation
    }

    /// Spends every link issued so far (a person completed an authorization).
    pub fn spend_links(&mut self) {
        self.link_generation += 1;
    }

    pub fn lease_held_by(&self, owner: &LeaseOwner, now: DateTime<Utc>) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| &l.owner == owner && l.expires_at > now)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn daily_token_calls_count_per_utc_day() {
        let day = Utc.with_ymd_and_hms(2026, 3, 2, 23, 0, 0).unwrap();
        let mut calls = DailyTokenCalls::default();
        calls.record(day);
        calls.record(day + chrono::Duration::minutes(30));
        assert_eq!(calls.on(day), 2);
        let next = day + chrono::Duration::hours(2);
        assert_eq!(calls.on(next), 0, "a new UTC day starts from zero");
        calls.record(next);
        assert_eq!((calls.on(next), calls.on(day)), (1, 0));
    }
}
