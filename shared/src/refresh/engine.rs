//! The refresh engine: keeps a connection's tokens fresh without ever spending a single-use refresh
//! token twice or losing one the provider issued.
//!
//! ## Single flight
//! In a process, callers for one connection queue on a local lock and re-read after getting it. Across
//! processes, a lease in the store: taken with a conditional write, held by an owner token, fencing
//! every later write (see `ports::ConnectionStore::acquire_lease`). After taking the lease the engine
//! works on the connection as stored at that moment, so a refresh another worker completed is seen.
//!
//! ## One refresh per expiry
//! An on-demand caller names the validity it wants ([`Demand`]), bounded by half the token's issued
//! lifetime (`rules::required_validity`), and the credentials it found wanting: under the lock, a token
//! written since then is the answer, however little of its life is left. So a burst of callers after an
//! expiry makes one refresh, and a provider whose tokens live less than the caller's wish is not
//! refreshed once per caller. Every refresh is also held to the vault write budget
//! ([`crate::domain::WriteBudgetPolicy`]): when it says not yet, the outcome is `BudgetLimited` (said
//! once in the log and on the connection) and callers get the current token while it is valid.
//!
//! ## Deadlines
//! A caller with a deadline (a Lambda invocation's) waits for other workers only until then, and a
//! provider call starts only when a whole call plus the writes after it still fit (`OutOfTime`
//! otherwise): a call cut short may be answered at the provider all the same, spending a single-use
//! token whose successor nobody receives.
//!
//! ## Crash safety
//! Before calling the provider, the engine saves a [`RefreshInFlight`] marker naming the token being
//! spent and the vault version the new tokens will be written to. The provider's answer goes to the
//! vault first (the non-current slot), then the metadata is switched to it and the marker cleared.
//!
//! ## When AWS refuses the answer
//! A crash is one way to lose the answer; a vault that throttles, fails or times out just after the
//! provider answered is the other. So at the vault's first refusal the answer is *escrowed*: sealed
//! (AES-256-GCM under a KMS data key, or the embedded store's local key; see [`crate::escrow`]) into the
//! marker, in the metadata store — another service — under the lease. Then both writes are retried,
//! with backoff and jitter, for `store_retry_for` and never beyond the lease. A metadata switch refused
//! after the vault write landed needs no escrow: the marker already names the vault version. The
//! answer is lost only if the vault and the metadata store both refuse it for that whole time.
//!
//! ## Recovery
//! A worker that finds a marker left behind (by a crash or by writes that kept failing), under a new
//! lease, follows this order:
//! 1. the new tokens are in the vault → the answer was kept: adopt them (switch the metadata, clear the
//!    marker, and with it any escrow);
//! 2. they are not, and the marker holds an escrow → the answer was kept there: open it, write it to the
//!    vault version the marker names (idempotent: the same write id with the same content), then
//!    switch. If the vault still refuses, the marker and escrow stay and the next run tries again; the
//!    old token is never presented, so a long vault outage delays a connection and loses none;
//! 3. neither, and the original call may still be running (its time budget has not passed) → wait:
//!    presenting the same refresh token now could spend it twice;
//! 4. neither, and the budget has passed → the answer, if any, was lost. Refresh once more with
//!    the only token there is. A reusable token just works; a single-use one works if the provider never
//!    answered (or still honours it); otherwise the provider says it was used and the connection becomes
//!    `reconnect_required` with reason "refresh interrupted" — said once, never retried in a loop.
//!
//! A worker holding a lease that ended is fenced off (its writes are refused), so an escrow adopted by
//! the next worker and a late write of the original one can never both switch the connection.
//!
//! ## Failures
//! Revoked, expired or reused grants and a rejected client → reconnect required. Rate limits wait for
//! the provider's `Retry-After`. An unavailable provider is retried within the call (bounded, with
//! jitter; never for a single-use refresh token, which the failed call may have spent) and then across
//! runs with exponential backoff; a ceiling of failed attempts per hour stops a broken connection from
//! storming the provider, a provider's daily cap on token calls is never reached (limits per app and
//! user are held for all of one user's connections together, see [`super::app_user`]), and failing for
//! longer than `give_up_after` ends in reconnect required. An answer the provider gives that is not
//! recognised keeps the connection: it is retried within those bounds and logged as a warning. A
//! refresh token found in an error reply is stored before anything else.

use super::app_user::{AppUserBudget, AppUserHold};
use super::grant::{GrantFailure, GrantedTokens, TokenGrant};
use super::rules::{access_token_fresh, backoff, jitter_unit};
use crate::clock::Clock;
use crate::credential_keeper::{CredentialKeeper, KeeperError};
use crate::domain::ErrorClass;
use crate::domain::{
    Actor, Connection, Credentials, FailureRecord, OAuthApp, ReconnectKind, ReconnectReason,
    RefreshInFlight, StatusKind, StatusTransition, TokenSet,
};
use crate::domain::{CredentialsPointer, VaultSlot, WriteBudgetPolicy};
use crate::ids::{ConnectionId, LeaseOwner};
use crate::ports::{Fence, LeaseAttempt, MetadataStore, StoreError, TokenVault, VaultError};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The longest one provider call may take (the HTTP client's own total timeout must not exceed it).
    pub call_timeout: std::time::Duration,
    /// Extra provider attempts within one refresh when the provider is unavailable.
    pub retries_when_unavailable: u32,
    /// Lease lifetime beyond the worst-case time of all attempts.
    pub lease_margin: Duration,
    /// Failed attempts per connection per hour before it cools down.
    pub max_failures_per_hour: usize,
    /// Failing continuously for this long means a person must look: reconnect required.
    pub give_up_after: Duration,
    /// How long an on-demand caller waits for another worker's refresh (never past its deadline).
    pub wait_for_other_worker: std::time::Duration,
    /// How long storing a provider's answer is retried when the vault or the metadata store refuses
    /// it (throttled, failing, timing out), within the lease in any case. The answer is escrowed at
    /// the first refusal, so this only decides when the refresh stops trying and leaves the rest to
    /// the next worker.
    pub store_retry_for: std::time::Duration,
    /// What an on-demand refresh keeps back from its deadline for the writes after the provider's
    /// answer (vault, then metadata): a provider call starts only with more than this left.
    pub write_reserve: std::time::Duration,
    /// Refresh writes per vault slot (see [`WriteBudgetPolicy`]).
    pub write_budget: WriteBudgetPolicy,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            // 15 s: one whole call, plus the writes after it, fits in an on-demand request on Lambda
            // (25 s, under the HTTP API's 30-s integration timeout).
            call_timeout: std::time::Duration::from_secs(15),
            retries_when_unavailable: 2,
            lease_margin: Duration::seconds(15),
            max_failures_per_hour: 6,
            give_up_after: Duration::days(3),
            wait_for_other_worker: std::time::Duration::from_secs(45),
            store_retry_for: std::time::Duration::from_secs(20),
            write_reserve: std::time::Duration::from_secs(4),
            write_budget: WriteBudgetPolicy::default(),
        }
    }
}

impl EngineSettings {
    /// The worst-case duration of one refresh's provider calls, sleeps included.
    pub fn call_budget(&self) -> Duration {
        let attempts = 1 + self.retries_when_unavailable;
        let calls = self.call_timeout * attempts;
        let sleeps = std::time::Duration::from_millis(1_500) * self.retries_when_unavailable;
        Duration::from_std(calls + sleeps).unwrap_or(Duration::minutes(5))
    }

    pub fn lease_ttl(&self) -> Duration {
        self.call_budget() + self.lease_margin
    }
}

/// Why the engine was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The scheduled run: refresh if the connection is due.
    Scheduled,
    /// Someone needs an access token now.
    OnDemand(Demand),
}

/// What an on-demand caller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// How long the token should stay valid; bounded by half the token's lifetime
    /// ([`super::rules::required_validity`]).
    pub wanted: Duration,
    /// The credentials the caller found wanting. Credentials written since are the answer to its
    /// need, however little of their life is left: one refresh per expiry, never a second for the same.
    pub seen: Option<CredentialsPointer>,
    /// The provider refused the access token at `seen` (an expired or revoked access token that its
    /// recorded expiry does not show): refresh even though it looks valid. Bounded like every refresh,
    /// by the provider's minimum interval and the vault write budget.
    pub rejected: bool,
    /// The caller's answer is due by then (a Lambda invocation's deadline, less the time to answer):
    /// nothing is started that could not finish before it.
    pub deadline: Option<tokio::time::Instant>,
}

impl Demand {
    /// A token valid for `wanted` (or half its lifetime), with no deadline.
    pub fn valid_for(wanted: Duration) -> Self {
        Self {
            wanted,
            seen: None,
            rejected: false,
            deadline: None,
        }
    }

    /// The caller found the credentials at `seen` wanting.
    pub fn after(mut self, seen: Option<CredentialsPointer>) -> Self {
        self.seen = seen;
        self
    }

    /// The provider refused the access token of the credentials at `seen`.
    pub fn rejected(mut self, seen: CredentialsPointer) -> Self {
        self.seen = Some(seen);
        self.rejected = true;
        self
    }

    pub fn by(mut self, deadline: Option<tokio::time::Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    fn time_left(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }
}

impl Trigger {
    /// `Trigger::OnDemand` for a caller that wants a token valid for `wanted`.
    pub fn on_demand(wanted: Duration) -> Self {
        Self::OnDemand(Demand::valid_for(wanted))
    }

    fn demand(&self) -> Option<&Demand> {
        match self {
            Self::OnDemand(demand) => Some(demand),
            Self::Scheduled => None,
        }
    }
}

/// What happened, for callers and for the scheduled run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    AlreadyFresh,
    Refreshed,
    /// Tokens an interrupted refresh had stored were adopted.
    Recovered,
    NotDue,
    /// Another worker is refreshing it.
    Busy,
    CoolingDown,
    /// Its status does not allow refreshing (not connected, reconnect required, disabled, ...).
    NotUsable(StatusKind),
    /// The vault write budget allows the next refresh from `until`; the current token (if still
    /// valid) is all there is until then.
    BudgetLimited {
        until: DateTime<Utc>,
    },
    /// A provider's limit per app and user, shared with the user's other connections under the app,
    /// allows no token call until `hold.until()`; the current token (if still valid) is all there is.
    AppUserLimited(AppUserHold),
    /// An on-demand caller's deadline leaves too little time to refresh; whoever asks next (or the
    /// scheduled run) does it.
    OutOfTime,
    /// This refresh ended in reconnect required.
    ReconnectRequired(ReconnectKind),
    /// This refresh failed and will be retried later.
    Failed(ErrorClass),
}

impl Outcome {
    /// The outcome without its data, for counting.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::AlreadyFresh => OutcomeKind::AlreadyFresh,
            Self::Refreshed => OutcomeKind::Refreshed,
            Self::Recovered => OutcomeKind::Recovered,
            Self::NotDue => OutcomeKind::NotDue,
            Self::Busy => OutcomeKind::Busy,
            Self::CoolingDown => OutcomeKind::CoolingDown,
            Self::NotUsable(status) => OutcomeKind::NotUsable(*status),
            Self::BudgetLimited { .. } => OutcomeKind::BudgetLimited,
            Self::AppUserLimited(_) => OutcomeKind::AppUserLimited,
            Self::OutOfTime => OutcomeKind::OutOfTime,
            Self::ReconnectRequired(_) => OutcomeKind::ReconnectRequired,
            Self::Failed(class) => OutcomeKind::Failed(*class),
        }
    }

    pub fn label(&self) -> String {
        self.kind().label()
    }
}

/// What a refresh came to, without its data: what a scheduled run counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    AlreadyFresh,
    Refreshed,
    Recovered,
    NotDue,
    Busy,
    CoolingDown,
    NotUsable(StatusKind),
    BudgetLimited,
    AppUserLimited,
    OutOfTime,
    ReconnectRequired,
    Failed(ErrorClass),
}

impl OutcomeKind {
    /// A refresh that did not work out: a provider failure, or a connection that now needs a person.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed(_) | Self::ReconnectRequired)
    }

    /// Its name in logs and in the run's summary (`failed:<class>`, `not_usable:<status>`).
    pub fn label(self) -> String {
        match self {
            Self::AlreadyFresh => "already_fresh".into(),
            Self::Refreshed => "refreshed".into(),
            Self::Recovered => "recovered".into(),
            Self::NotDue => "not_due".into(),
            Self::Busy => "busy".into(),
            Self::CoolingDown => "cooling_down".into(),
            Self::NotUsable(status) => format!("not_usable:{status}"),
            Self::BudgetLimited => "budget_limited".into(),
            Self::AppUserLimited => "app_user_limited".into(),
            Self::OutOfTime => "out_of_time".into(),
            Self::ReconnectRequired => "reconnect_required".into(),
            Self::Failed(class) => format!("failed:{}", class.as_str()),
        }
    }
}

/// Counted outcomes appear in the run's JSON summary under their labels.
impl serde::Serialize for OutcomeKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.label())
    }
}

#[derive(Debug, Clone)]
pub struct RefreshReport {
    pub outcome: Outcome,
    pub connection: Connection,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("connection {0} does not exist")]
    NotFound(ConnectionId),
    #[error("the app registration {0} of this connection is missing: register it again")]
    AppMissing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The connection's status changed under the lease in a way the engine did not expect (a broken
    /// invariant, reported for this connection alone instead of ending the whole run).
    #[error("connection status: {0}")]
    Transition(#[from] crate::domain::InvalidTransition),
}

impl From<KeeperError> for EngineError {
    fn from(e: KeeperError) -> Self {
        match e {
            KeeperError::Store(e) => Self::Store(e),
            KeeperError::Vault(e) => Self::Vault(e),
        }
    }
}

/// Where an interrupted refresh's answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopted {
    FromVault,
    FromEscrow,
}

impl Adopted {
    fn as_str(self) -> &'static str {
        match self {
            Self::FromVault => "vault",
            Self::FromEscrow => "escrow",
        }
    }
}

pub struct RefreshEngine {
    store: Arc<dyn MetadataStore>,
    vault: Arc<dyn TokenVault>,
    keeper: CredentialKeeper,
    grant: Arc<dyn TokenGrant>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    local: Mutex<HashMap<ConnectionId, Arc<tokio::sync::Mutex<()>>>>,
    actor: Actor,
}

impl RefreshEngine {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        vault: Arc<dyn TokenVault>,
        grant: Arc<dyn TokenGrant>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            keeper: CredentialKeeper::new(store.clone(), vault.clone()),
            store,
            vault,
            grant,
            clock,
            settings,
            local: Mutex::default(),
            actor: Actor::System("refresh-engine".into()),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Refreshes the connection if the trigger calls for it. On-demand callers wait (bounded, and never
    /// past their deadline) for a refresh another worker is doing, then get its result.
    pub async fn refresh(
        &self,
        id: &ConnectionId,
        trigger: Trigger,
    ) -> Result<RefreshReport, EngineError> {
        const POLL: std::time::Duration = std::time::Duration::from_millis(100);
        let mut deadline = tokio::time::Instant::now() + self.settings.wait_for_other_worker;
        if let Some(caller_deadline) = trigger.demand().and_then(|d| d.deadline) {
            deadline = deadline.min(caller_deadline);
        }
        let on_demand = trigger.demand().is_some();
        loop {
            let waiting = match self.refresh_once(id, &trigger).await {
                Ok(report) if report.outcome == Outcome::Busy && on_demand => Ok(report),
                // Our lease was taken over while the provider answered: whoever took it over
                // finishes the job (adopting what we stored). An on-demand caller waits for that.
                Err(EngineError::Store(StoreError::Conflict)) if on_demand => {
                    Err(EngineError::Store(StoreError::Conflict))
                }
                other => return other,
            };
            if tokio::time::Instant::now() + POLL >= deadline {
                return waiting;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The connection's current credentials (for handing out after a refresh).
    pub async fn credentials(
        &self,
        connection: &Connection,
    ) -> Result<Option<Credentials>, EngineError> {
        Ok(self.keeper.current(connection).await?)
    }

    fn local_lock(&self, id: &ConnectionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().expect("local lock map poisoned");
        if map.len() > 10_000 {
            // Drop locks nobody holds or waits for, so the map stays small in a long-lived process.
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        map.entry(id.clone()).or_default().clone()
    }

    async fn refresh_once(
        &self,
        id: &ConnectionId,
        trigger: &Trigger,
    ) -> Result<RefreshReport, EngineError> {
        let lock = self.local_lock(id);
        let _in_process = lock.lock().await;
        let connection = self
            .store
            .get_connection(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.clone()))?;
        // The app record is needed up to three times in one refresh; it is read once, when first needed
        // (a request whose token is still fresh never needs it).
        let app = OnceCell::new();
        match self.needs_no_refresh(&connection, trigger, &app).await? {
            // A budget limit not yet recorded is recorded under the lease (once: later callers see it).
            Some(Outcome::BudgetLimited { .. })
                if connection.refresh_limited_since.is_none()
                    || matches!(trigger, Trigger::Scheduled) => {}
            Some(outcome) => {
                return Ok(RefreshReport {
                    outcome,
                    connection,
                })
            }
            None => {}
        }
        let owner = LeaseOwner::generate();
        let now = self.clock.now();
        // Writes under the lease are only worth retrying while it lasts (in real time: the store's
        // clock may be simulated, the retries are not), nor past an on-demand caller's deadline: the
        // answer is escrowed at the first refusal, so stopping early loses nothing.
        let lease_ends =
            tokio::time::Instant::now() + self.settings.lease_ttl().to_std().unwrap_or_default();
        let lease_ends = match trigger.demand().and_then(|d| d.deadline) {
            Some(deadline) => lease_ends.min(deadline),
            None => lease_ends,
        };
        let leased = match self
            .store
            .acquire_lease(id, &owner, now, self.settings.lease_ttl())
            .await?
        {
            LeaseAttempt::Acquired(connection) => connection,
            LeaseAttempt::Busy { .. } => {
                return Ok(RefreshReport {
                    outcome: Outcome::Busy,
                    connection,
                })
            }
            LeaseAttempt::Missing => return Err(EngineError::NotFound(id.clone())),
        };
        // Re-check under the lease: another worker may have refreshed in the meantime.
        let result = match self.needs_no_refresh(&leased, trigger, &app).await {
            Ok(Some(Outcome::BudgetLimited { until })) => {
                self.record_budget_limit(leased, &owner, trigger, until)
                    .await
            }
            Ok(Some(outcome)) => Ok(RefreshReport {
                outcome,
                connection: leased,
            }),
            Ok(None) => {
                self.refresh_under_lease(leased, &owner, trigger, &app, lease_ends)
                    .await
            }
            Err(e) => Err(e),
        };
        // A refresh's last save gives the lease up itself (one disk flush fewer per refresh on the
        // embedded store); otherwise release it here. Best effort: an unreleased lease expires.
        let released = matches!(&result, Ok(report) if report.connection.lease.is_none());
        if !released {
            if let Err(e) = self.store.release_lease(id, &owner).await {
                tracing::warn!(connection = %id, error = %e, "could not release the refresh lease; it will expire");
            }
        }
        result
    }

    /// `Some(outcome)` when nothing needs doing now.
    async fn needs_no_refresh(
        &self,
        connection: &Connection,
        trigger: &Trigger,
        app: &OnceCell<OAuthApp>,
    ) -> Result<Option<Outcome>, EngineError> {
        let now = self.clock.now();
        if !connection.status().is_usable() {
            return Ok(Some(Outcome::NotUsable(connection.status().kind())));
        }
        if connection.refresh_in_flight.is_some() {
            return Ok(None); // recovery needed, whatever the trigger
        }
        match trigger {
            Trigger::OnDemand(demand) => {
                let still_valid = connection.access_expires_at.is_some_and(|exp| exp > now);
                let written_since = demand
                    .seen
                    .as_ref()
                    .is_some_and(|seen| connection.credentials.as_ref() != Some(seen));
                if still_valid
                    && (written_since
                        || (!demand.rejected && access_token_fresh(connection, now, demand.wanted)))
                {
                    return Ok(Some(Outcome::AlreadyFresh));
                }
            }
            Trigger::Scheduled if connection.next_refresh_at.is_none_or(|at| at > now) => {
                return Ok(Some(Outcome::NotDue))
            }
            Trigger::Scheduled => {}
        }
        if connection.failures.failures_since(now - Duration::hours(1))
            >= self.settings.max_failures_per_hour
        {
            return Ok(Some(Outcome::CoolingDown));
        }
        if let Some(until) = self.budget_holds_back(connection, now) {
            return Ok(Some(Outcome::BudgetLimited { until }));
        }
        let app = self.app_of(connection, app).await?;
        // A provider's daily cap (Exact: 200 token calls per app and user) is never reached: the
        // connection waits for the next day; its access token, if any, stays in use until then.
        if self
            .grant
            .max_token_calls_per_day(app)
            .is_some_and(|max| connection.token_calls.on(now) >= max)
        {
            return Ok(Some(Outcome::CoolingDown));
        }
        let rules = self.grant.rules(app);
        let received = connection.last_refresh_at.unwrap_or(connection.created_at);
        if now < rules.earliest_refresh(received) {
            // Too early for the provider (Exact's 570 s). A caller that needs a token still has the
            // current one, valid until at least 600 s after it was received.
            return Ok(Some(match trigger {
                Trigger::OnDemand(_) => Outcome::AlreadyFresh,
                Trigger::Scheduled => Outcome::NotDue,
            }));
        }
        Ok(None)
    }

    /// From when the vault write budget allows the connection's next refresh, when that is later than
    /// `now`.
    fn budget_holds_back(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let until = connection.vault_writes.allowed_from(
            next_slot(connection),
            &self.settings.write_budget,
            now,
        );
        (until > now).then_some(until)
    }

    /// For callers that read the connection anyway: from when the next refresh is allowed, while a
    /// budget limit recorded on the connection still holds (asking the engine would only say so).
    pub fn recorded_budget_limit(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        connection.refresh_limited_since?;
        if connection.refresh_in_flight.is_some() {
            return None; // recovery first
        }
        self.budget_holds_back(connection, now)
    }

    /// The vault write budget holds this refresh back: say so once (log and connection record) when a
    /// limit begins, and move a scheduled look to when the budget allows.
    async fn record_budget_limit(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        trigger: &Trigger,
        until: DateTime<Utc>,
    ) -> Result<RefreshReport, EngineError> {
        let now = self.clock.now();
        if connection.refresh_limited_since.is_none() {
            let lifetime = super::rules::access_token_lifetime(&connection);
            tracing::warn!(
                connection = %connection.id,
                access_token_lifetime_secs = lifetime.map(|l| l.num_seconds()),
                writes_per_slot_per_day = self.settings.write_budget.per_day,
                next_refresh_allowed_at = %until,
                "the provider's tokens live shorter than the vault write budget allows refreshes: the current token is handed out until it expires, and refreshes are spaced"
            );
            connection.refresh_limited_since = Some(now);
        }
        if matches!(trigger, Trigger::Scheduled) {
            connection.next_refresh_at = Some(until);
        }
        let saved = self
            .store
            .save_connection(&connection, Fence::LeaseReleased(owner), &[])
            .await?;
        Ok(RefreshReport {
            outcome: Outcome::BudgetLimited { until },
            connection: saved,
        })
    }

    async fn app_of<'a>(
        &self,
        connection: &Connection,
        app: &'a OnceCell<OAuthApp>,
    ) -> Result<&'a OAuthApp, EngineError> {
        app.get_or_try_init(|| async {
            self.store
                .get_app(&connection.tenant, &connection.app)
                .await?
                .map(|app| app.for_connection(connection))
                .ok_or_else(|| EngineError::AppMissing(connection.app.to_string()))
        })
        .await
    }

    async fn refresh_under_lease(
        &self,
        connection: Connection,
        owner: &LeaseOwner,
        trigger: &Trigger,
        app: &OnceCell<OAuthApp>,
        lease_ends: tokio::time::Instant,
    ) -> Result<RefreshReport, EngineError> {
        let now = self.clock.now();
        let left_behind = connection.refresh_in_flight.clone();
        let (mut connection, interrupted) = match self
            .recover_interrupted(connection, owner, app, lease_ends, now)
            .await?
        {
            Recovery::Settled(report) => return Ok(report),
            Recovery::RefreshAgain {
                connection,
                interrupted,
            } => (connection, interrupted),
        };
        let (spending, previous, refresh_token) = match self.spendable(&connection).await? {
            Spendable::Token {
                spending,
                previous,
                refresh_token,
            } => (spending, previous, refresh_token),
            Spendable::Nothing => {
                return Ok(RefreshReport {
                    outcome: Outcome::NotDue,
                    connection,
                })
            }
            Spendable::OnlyByAPerson(reason) => {
                return self.end_in_reconnect(connection, owner, reason).await
            }
        };
        let app = self.app_of(&connection, app).await?;
        let secret = self
            .vault
            .get_client_secret(&connection.tenant, &connection.app)
            .await?
            .ok_or_else(|| {
                EngineError::AppMissing(format!("{} (client secret)", connection.app))
            })?;
        let Some(call_window) = self.call_window(trigger) else {
            return Ok(RefreshReport {
                outcome: Outcome::OutOfTime,
                connection,
            });
        };

        // The provider's limits per app and user are shared with the user's other connections: checked,
        // and a call counted, in the store before the provider sees anything.
        let app_user = AppUserBudget::of(&connection, self.grant.app_user_limits(app));
        if let Some(budget) = &app_user {
            if let Some(hold) = budget.before_call(&*self.store, now).await? {
                // An interrupted refresh's marker stays until a call is made in its place.
                connection.refresh_in_flight = left_behind;
                return self
                    .hold_for_app_user(connection, owner, trigger, budget, hold)
                    .await;
            }
        }

        let target = CredentialKeeper::next_target(&connection);
        let connection = self
            .mark_in_flight(connection, owner, spending, &target, now)
            .await?;
        let answer = self
            .call_provider(app, &secret, &refresh_token, call_window)
            .await;
        let call = Call {
            owner,
            target,
            previous,
            interrupted,
            rules: self.grant.rules(app),
            lease_ends,
        };
        self.store_answer(connection, call, answer, app_user).await
    }

    /// Settles what an interrupted refresh left behind, if anything: its answer in the vault or
    /// escrowed in its marker is adopted; a call that may still be running holds everyone off; a marker
    /// that left nothing means refreshing once more, with the last known token.
    async fn recover_interrupted(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        app: &OnceCell<OAuthApp>,
        lease_ends: tokio::time::Instant,
        now: DateTime<Utc>,
    ) -> Result<Recovery, EngineError> {
        let Some(marker) = connection.refresh_in_flight.clone() else {
            return Ok(Recovery::RefreshAgain {
                connection,
                interrupted: false,
            });
        };
        // Its answer, if it left one: in the vault already, or escrowed in the marker. Known, it needs
        // no wait for the original call, and the token that call spent is never presented again.
        let answer = match self.keeper.read(&connection, &marker.target).await? {
            Some(found) => Some((found, Adopted::FromVault)),
            None => match &marker.escrow {
                Some(sealed) => {
                    let found = self
                        .vault
                        .open_escrow(
                            &connection.tenant,
                            &connection.id,
                            &marker.target.write,
                            sealed,
                        )
                        .await?;
                    Some((found, Adopted::FromEscrow))
                }
                None => None,
            },
        };
        if let Some((found, adopted)) = answer {
            let report = self
                .adopt(connection, owner, marker, found, adopted, app, lease_ends)
                .await?;
            return Ok(Recovery::Settled(report));
        }
        if now < marker.started_at + self.settings.call_budget() {
            // The original call may still be running: presenting its token now could spend it twice.
            return Ok(Recovery::Settled(RefreshReport {
                outcome: Outcome::Busy,
                connection,
            }));
        }
        tracing::warn!(connection = %connection.id, "an interrupted refresh left no tokens; refreshing once more with the last known token");
        connection.refresh_in_flight = None;
        Ok(Recovery::RefreshAgain {
            connection,
            interrupted: true,
        })
    }

    /// The refresh token a refresh would spend, and the credentials it comes from.
    async fn spendable(&self, connection: &Connection) -> Result<Spendable, EngineError> {
        let no_tokens = || {
            Spendable::OnlyByAPerson(ReconnectReason::new(
                ReconnectKind::GrantRevoked,
                "the broker holds no tokens for this connection",
            ))
        };
        let Some(spending) = connection.credentials.clone() else {
            return Ok(no_tokens());
        };
        let Some(current) = self.keeper.current(connection).await? else {
            return Ok(no_tokens());
        };
        let Some(previous) = current.token_set().cloned() else {
            // Legacy credentials have no refresh: nothing to do until the connection moves to OAuth 2.0.
            return Ok(Spendable::Nothing);
        };
        let Some(refresh_token) = previous.refresh_token.clone() else {
            return Ok(Spendable::OnlyByAPerson(ReconnectReason::new(
                ReconnectKind::RefreshTokenExpired,
                "the provider issued no refresh token (was offline_access granted?)",
            )));
        };
        Ok(Spendable::Token {
            spending,
            previous,
            refresh_token,
        })
    }

    /// How long a provider call may take: `Some(None)` without a deadline; `Some(window)` when a
    /// caller's deadline leaves room for a whole call (its full timeout) and the writes after it;
    /// `None` when it does not. A call cut short could still be answered at the provider, spending a
    /// single-use token whose successor nobody receives; and an invocation the platform ends
    /// mid-refresh leaves a marker that holds everyone off for the whole call budget.
    fn call_window(&self, trigger: &Trigger) -> Option<Option<std::time::Duration>> {
        match trigger.demand().and_then(Demand::time_left) {
            None => Some(None),
            Some(left) => left
                .checked_sub(self.settings.write_reserve)
                .filter(|window| *window >= self.settings.call_timeout)
                .map(Some),
        }
    }

    /// Puts the in-flight marker down before the provider sees the token, and counts the call with
    /// the marker's own write: a call is counted before the provider sees it.
    async fn mark_in_flight(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        spending: CredentialsPointer,
        target: &CredentialsPointer,
        now: DateTime<Utc>,
    ) -> Result<Connection, EngineError> {
        connection.refresh_in_flight = Some(RefreshInFlight {
            started_at: now,
            spending,
            target: target.clone(),
            escrow: None,
        });
        connection.token_calls.record(now);
        Ok(self
            .store
            .save_connection(&connection, Fence::Lease(owner), &[])
            .await?)
    }

    /// Stores what the provider answered: new tokens, or the failure (and counts a refusal toward the
    /// provider's limit per app and user once it is stored).
    async fn store_answer(
        &self,
        connection: Connection,
        call: Call<'_>,
        answer: Result<GrantedTokens, GrantFailure>,
        app_user: Option<AppUserBudget>,
    ) -> Result<RefreshReport, EngineError> {
        let received_at = self.clock.now();
        match answer {
            Ok(granted) => {
                let tokens = self.token_set(
                    &connection,
                    &call.previous,
                    granted,
                    received_at,
                    &call.rules,
                );
                self.store_refreshed(connection, call, tokens, received_at)
                    .await
            }
            Err(failure) => {
                // Exact counts refusals (4xx) toward its hourly block; an unavailable provider answered
                // nothing to count, and each connection's own backoff spaces those retries.
                let counted = app_user.filter(|_| failure.class != ErrorClass::ProviderUnavailable);
                let id = connection.id.clone();
                let report = self.store_failure(connection, call, failure).await;
                // After the failure is stored: a refresh token in the reply comes before anything else.
                if let Some(budget) = counted {
                    if let Err(e) = budget.count_failure(&*self.store, received_at).await {
                        tracing::warn!(connection = %id, error = %e, "a failed token call could not be counted toward the provider's limit per app and user");
                    }
                }
                report
            }
        }
    }

    /// A provider's limit per app and user holds this refresh back: say so, and move a scheduled look
    /// to when the limit allows (the lease is given up in the same write).
    async fn hold_for_app_user(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        trigger: &Trigger,
        budget: &AppUserBudget,
        hold: AppUserHold,
    ) -> Result<RefreshReport, EngineError> {
        tracing::warn!(
            connection = %connection.id,
            app = %connection.app,
            provider_user = %budget.user(),
            limit = hold.as_str(),
            next_call_allowed_at = %hold.until(),
            "the provider's limit per app and user, shared with this user's other connections, holds the refresh back: the current token stays in use"
        );
        let connection = match trigger {
            Trigger::Scheduled => {
                connection.next_refresh_at = Some(hold.until());
                self.store
                    .save_connection(&connection, Fence::LeaseReleased(owner), &[])
                    .await?
            }
            Trigger::OnDemand(_) => connection,
        };
        Ok(RefreshReport {
            outcome: Outcome::AppUserLimited(hold),
            connection,
        })
    }

    /// Calls the provider, retrying an unavailable one (bounded). `window`, when given, is all the time
    /// the calls and pauses may take: a retry starts only when its pause and a whole call still fit.
    async fn call_provider(
        &self,
        app: &OAuthApp,
        secret: &crate::secret::ClientSecret,
        refresh_token: &crate::secret::RefreshToken,
        window: Option<std::time::Duration>,
    ) -> Result<GrantedTokens, GrantFailure> {
        let ends = window.map(|w| tokio::time::Instant::now() + w);
        // A single-use token presented again right after a 5xx may already be spent (Exact's gateway
        // has failed replies after issuing a new pair), and each refusal counts toward Exact's error
        // budget: such retries are left to the schedule's backoff instead of repeated at once.
        let retries = if self.grant.rules(app).rotating {
            0
        } else {
            self.settings.retries_when_unavailable
        };
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout(
                self.settings.call_timeout,
                self.grant.refresh(app, secret, refresh_token),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(GrantFailure::new(
                    ErrorClass::ProviderUnavailable,
                    "the provider did not answer in time",
                )),
            };
            match result {
                Err(failure)
                    if failure.class == ErrorClass::ProviderUnavailable
                        && failure.issued_refresh_token.is_none()
                        && attempt < retries =>
                {
                    attempt += 1;
                    let pause = std::time::Duration::from_millis(
                        (500.0 * f64::from(attempt) * (1.0 + jitter_unit())) as u64,
                    );
                    let room =
                        ends.map(|e| e.saturating_duration_since(tokio::time::Instant::now()));
                    if room.is_some_and(|room| room < pause + self.settings.call_timeout) {
                        return Err(failure);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    fn token_set(
        &self,
        connection: &Connection,
        previous: &TokenSet,
        granted: GrantedTokens,
        received_at: DateTime<Utc>,
        rules: &super::rules::RefreshRules,
    ) -> TokenSet {
        let rotated = granted.refresh_token.is_some();
        let refresh_token = granted
            .refresh_token
            .or_else(|| previous.refresh_token.clone());
        let refresh_expires_at = if rotated || !rules.rotating {
            rules.refresh_token_expiry_after_refresh(
                received_at,
                connection.grant_started_at(),
                previous.refresh_expires_at,
            )
        } else {
            previous.refresh_expires_at
        };
        TokenSet {
            access_token: granted.access_token,
            access_expires_at: received_at + granted.expires_in,
            refresh_token,
            refresh_expires_at,
            scope: granted.scope.or_else(|| previous.scope.clone()),
            received_at,
        }
    }

    async fn store_refreshed(
        &self,
        mut connection: Connection,
        call: Call<'_>,
        tokens: TokenSet,
        received_at: DateTime<Utc>,
    ) -> Result<RefreshReport, EngineError> {
        let Call {
            owner,
            target,
            rules,
            lease_ends,
            ..
        } = call;
        let marked = connection.clone();
        let next = rules.next_scheduled_refresh(received_at, tokens.refresh_expires_at);
        let transitions: Vec<_> = connection
            .refreshed(Some((received_at, next)), self.actor.clone(), received_at)?
            .into_iter()
            .collect();
        self.spend_write_budget(&mut connection, target.slot, received_at);
        let credentials = Credentials::OAuth2(tokens);
        let saved = self
            .commit_with_retry(
                connection,
                target,
                &credentials,
                Fence::LeaseReleased(owner),
                &transitions,
                Some(marked),
                lease_ends,
            )
            .await?;
        Ok(RefreshReport {
            outcome: Outcome::Refreshed,
            connection: saved,
        })
    }

    /// Stores a provider's answer: the vault write, then the metadata switch ([`CredentialKeeper::commit`]).
    /// These are the writes that must not fail for a passing reason, so:
    /// - at the vault's first refusal the answer is escrowed: sealed into the marker of `marked` (the
    ///   connection as saved with its in-flight marker), a write to the metadata store, which is
    ///   another service. From then on the tokens survive this process whatever happens;
    /// - both writes are retried with backoff and jitter until `store_retry_for` has passed or the
    ///   lease is about to end (a refused metadata switch after a vault write that landed needs no
    ///   escrow: the marker names the vault version, and the next worker adopts it);
    /// - a repeated vault write is idempotent (same write id, same content), and a repeated metadata
    ///   save recognises its own landed write, so a retry after a lost answer is safe.
    ///
    /// If the writes still fail, the error is returned; the marker (with the escrow, if it was
    /// written) stays for the next worker.
    #[allow(clippy::too_many_arguments)]
    async fn commit_with_retry(
        &self,
        mut connection: Connection,
        target: crate::domain::CredentialsPointer,
        credentials: &Credentials,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
        marked: Option<Connection>,
        lease_ends: tokio::time::Instant,
    ) -> Result<Connection, EngineError> {
        // Stop with time left for one more write before the lease ends: after it, every write under
        // this lease is refused anyway. The first attempt is always made.
        let started = tokio::time::Instant::now();
        let lease_left = lease_ends
            .saturating_duration_since(started)
            .saturating_sub(std::time::Duration::from_secs(2));
        let give_up_at = started + self.settings.store_retry_for.min(lease_left);
        let mut marked = marked;
        let mut sealed = None;
        let mut attempt: u32 = 0;
        loop {
            let error = match self
                .keeper
                .commit(
                    connection.clone(),
                    target.clone(),
                    credentials,
                    fence,
                    transitions,
                )
                .await
            {
                Err(KeeperError::Vault(VaultError::Unavailable(e))) => {
                    tracing::warn!(connection = %connection.id, attempt, error = %e, "the vault refused the new tokens");
                    if let (Some(base), Some(owner)) = (marked.take(), fence.owner()) {
                        match self
                            .escrow(base.clone(), owner, &target, credentials, &mut sealed)
                            .await
                        {
                            Ok(saved) => {
                                // The escrow took a write: the final save follows it.
                                connection.version = saved.version;
                                tracing::warn!(connection = %connection.id, "the new tokens are escrowed in the connection's record until the vault takes them");
                            }
                            Err(escrow_error) => {
                                tracing::error!(connection = %connection.id, error = %escrow_error, "the new tokens could not be escrowed either; still trying both");
                                marked = Some(base);
                            }
                        }
                    }
                    EngineError::Vault(VaultError::Unavailable(e))
                }
                Err(KeeperError::Store(StoreError::Unavailable(e))) => {
                    tracing::warn!(connection = %connection.id, attempt, error = %e, "the metadata switch to the new tokens failed");
                    EngineError::Store(StoreError::Unavailable(e))
                }
                other => return Ok(other?),
            };
            attempt += 1;
            let pause = std::time::Duration::from_millis(
                (250.0 * 2f64.powi(attempt.min(5) as i32 - 1) * (0.5 + jitter_unit())) as u64,
            );
            if tokio::time::Instant::now() + pause >= give_up_at {
                if marked.is_some() {
                    tracing::error!(connection = %connection.id, "the provider's new tokens could be stored nowhere: vault and metadata store both refused them");
                }
                return Err(error);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Seals `credentials` into the marker of `marked` and saves it under the lease. The sealed record
    /// is made once and reused, so a retried save whose first attempt landed is recognised as ours.
    async fn escrow(
        &self,
        mut marked: Connection,
        owner: &LeaseOwner,
        target: &crate::domain::CredentialsPointer,
        credentials: &Credentials,
        sealed: &mut Option<crate::escrow::SealedCredentials>,
    ) -> Result<Connection, EngineError> {
        let record = match sealed {
            Some(record) => record.clone(),
            None => {
                let record = self
                    .vault
                    .seal_escrow(&marked.tenant, &marked.id, &target.write, credentials)
                    .await?;
                *sealed = Some(record.clone());
                record
            }
        };
        let Some(marker) = marked.refresh_in_flight.as_mut() else {
            return Err(EngineError::Store(StoreError::Corrupt(
                "an escrow needs the refresh's marker".into(),
            )));
        };
        marker.escrow = Some(record);
        // Due now, so the scheduled run moves the tokens to the vault as soon as it can.
        marked.next_refresh_at = Some(self.clock.now());
        Ok(self
            .store
            .save_connection(&marked, Fence::Lease(owner), &[])
            .await?)
    }

    /// Stores a failed refresh: a refresh token the reply carried first, then reconnect required when
    /// the failure means only a person can help (or the refresh token is past its end, or failures
    /// have lasted `give_up_after`), else the failure recorded and a later try scheduled.
    async fn store_failure(
        &self,
        mut connection: Connection,
        call: Call<'_>,
        failure: GrantFailure,
    ) -> Result<RefreshReport, EngineError> {
        let now = self.clock.now();
        let marked = connection.clone();
        connection.refresh_in_flight = None;
        if failure.class == ErrorClass::Unexpected {
            // Not recognised: kept and retried (bounded by the hourly ceiling and `give_up_after`), but
            // someone should look at the provider's words. Counted in RefreshFailures too.
            tracing::warn!(connection = %connection.id, message = %failure.message, "unrecognised refresh refusal; the connection is kept and retried later");
        } else {
            tracing::info!(connection = %connection.id, class = failure.class.as_str(), message = %failure.message, "refresh failed");
        }
        if let Some(issued) = failure.issued_refresh_token.clone() {
            connection = self
                .keep_issued_token(connection, &call, issued, marked, now)
                .await?;
        }
        let past_end = connection.refresh_expires_at.is_some_and(|end| end <= now);
        if let Some(kind) = reconnect_kind(failure.class, past_end, call.interrupted) {
            let reason = ReconnectReason::new(kind, failure.message);
            return self.end_in_reconnect(connection, call.owner, reason).await;
        }
        connection.failures.record(FailureRecord {
            at: now,
            class: failure.class.as_str().into(),
            message: failure.message.clone(),
        });
        let failing_since = connection.failures.first_failure_at.unwrap_or(now);
        if past_end || now - failing_since >= self.settings.give_up_after {
            let kind = if past_end {
                ReconnectKind::RefreshTokenExpired
            } else {
                ReconnectKind::RepeatedFailures
            };
            let reason = ReconnectReason::new(kind, failure.message);
            return self.end_in_reconnect(connection, call.owner, reason).await;
        }
        let earliest = call
            .rules
            .earliest_refresh(connection.last_refresh_at.unwrap_or(now));
        let wait = retry_wait(&failure, connection.failures.consecutive, earliest - now);
        // Too early for the provider is no failure of the connection's: it waits, status unchanged.
        let error = (failure.class != ErrorClass::TooEarly)
            .then(|| format!("{}: {}", failure.class.as_str(), failure.message));
        let transitions: Vec<_> = connection
            .refresh_failed(error, now + wait, self.actor.clone(), now)?
            .into_iter()
            .collect();
        let saved = self
            .store
            .save_connection(&connection, Fence::LeaseReleased(call.owner), &transitions)
            .await?;
        Ok(RefreshReport {
            outcome: Outcome::Failed(failure.class),
            connection: saved,
        })
    }

    /// A refresh token in an error reply replaces the one just spent: kept before anything else.
    async fn keep_issued_token(
        &self,
        mut connection: Connection,
        call: &Call<'_>,
        issued: crate::secret::RefreshToken,
        marked: Connection,
        now: DateTime<Utc>,
    ) -> Result<Connection, EngineError> {
        let mut kept = call.previous.clone();
        kept.refresh_token = Some(issued);
        kept.refresh_expires_at = call.rules.refresh_token_expiry_after_refresh(
            now,
            connection.grant_started_at(),
            call.previous.refresh_expires_at,
        );
        connection.last_refresh_at = Some(now);
        self.spend_write_budget(&mut connection, call.target.slot, now);
        self.commit_with_retry(
            connection,
            call.target.clone(),
            &Credentials::OAuth2(kept),
            Fence::Lease(call.owner),
            &[],
            Some(marked),
            call.lease_ends,
        )
        .await
    }

    /// Finishes an interrupted refresh with the answer it left: in the vault already, or escrowed in
    /// its marker (then written to the vault first). Clearing the marker clears the escrow.
    #[allow(clippy::too_many_arguments)]
    async fn adopt(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        marker: RefreshInFlight,
        found: Credentials,
        adopted: Adopted,
        app: &OnceCell<OAuthApp>,
        lease_ends: tokio::time::Instant,
    ) -> Result<RefreshReport, EngineError> {
        let now = self.clock.now();
        let app = self.app_of(&connection, app).await?;
        let rules = self.grant.rules(app);
        tracing::info!(connection = %connection.id, from = adopted.as_str(), "adopting tokens stored by an interrupted refresh");
        let schedule = found.token_set().map(|tokens| {
            connection.access_expires_at = Some(tokens.access_expires_at);
            connection.refresh_expires_at = tokens.refresh_expires_at;
            let next = rules.next_scheduled_refresh(tokens.received_at, tokens.refresh_expires_at);
            (tokens.received_at, next)
        });
        let transitions: Vec<_> = connection
            .refreshed(schedule, self.actor.clone(), now)?
            .into_iter()
            .collect();
        let saved = match adopted {
            Adopted::FromVault => {
                connection.credentials = Some(marker.target);
                self.store
                    .save_connection(&connection, Fence::LeaseReleased(owner), &transitions)
                    .await?
            }
            // Already escrowed: nothing more to keep elsewhere if the vault still refuses.
            Adopted::FromEscrow => {
                self.commit_with_retry(
                    connection,
                    marker.target,
                    &found,
                    Fence::LeaseReleased(owner),
                    &transitions,
                    None,
                    lease_ends,
                )
                .await?
            }
        };
        Ok(RefreshReport {
            outcome: Outcome::Recovered,
            connection: saved,
        })
    }

    /// Counts a refresh's vault write against the slot's budget; a limit that was recorded ends once the
    /// slot has half its burst to spare again (demand has fallen below the budget's pace).
    fn spend_write_budget(&self, connection: &mut Connection, slot: VaultSlot, at: DateTime<Utc>) {
        let policy = &self.settings.write_budget;
        connection.vault_writes.spend(slot, policy, at);
        if connection.refresh_limited_since.is_some()
            && connection.vault_writes.spare(slot, policy, at) >= policy.burst / 2
        {
            tracing::info!(connection = %connection.id, "the vault write budget no longer holds refreshes back");
            connection.refresh_limited_since = None;
        }
    }

    async fn end_in_reconnect(
        &self,
        mut connection: Connection,
        owner: &LeaseOwner,
        reason: ReconnectReason,
    ) -> Result<RefreshReport, EngineError> {
        let now = self.clock.now();
        let kind = reason.kind;
        let transition = connection.require_reconnect(reason, self.actor.clone(), now)?;
        let saved = self
            .store
            .save_connection(&connection, Fence::LeaseReleased(owner), &[transition])
            .await?;
        Ok(RefreshReport {
            outcome: Outcome::ReconnectRequired(kind),
            connection: saved,
        })
    }
}

/// The reconnect reason a failure stands for, when only a person can help. Providers often answer an
/// expired refresh token with a bare `invalid_grant`: past the token's known end, that is what it
/// means. A reuse or revocation right after an interrupted refresh is most likely that refresh's own
/// doing (its token was spent and the answer lost), and is said so.
fn reconnect_kind(class: ErrorClass, past_end: bool, interrupted: bool) -> Option<ReconnectKind> {
    let kind = class.reconnect_kind()?;
    let kind = if kind == ReconnectKind::GrantRevoked && past_end {
        ReconnectKind::RefreshTokenExpired
    } else {
        kind
    };
    Some(
        if interrupted
            && matches!(
                kind,
                ReconnectKind::RefreshTokenReused | ReconnectKind::GrantRevoked
            )
        {
            ReconnectKind::RefreshInterrupted
        } else {
            kind
        },
    )
}

/// How long a failed refresh waits before the next try (at least a second): what a rate limit asks
/// (a minute when it does not say), until the provider's earliest refresh when it was too early, else
/// exponential backoff with jitter over the consecutive failures.
fn retry_wait(failure: &GrantFailure, consecutive: u32, until_earliest: Duration) -> Duration {
    let wait = match failure.class {
        ErrorClass::RateLimited => failure.retry_after.unwrap_or(Duration::minutes(1)),
        ErrorClass::TooEarly => until_earliest,
        _ => backoff(consecutive, jitter_unit()),
    };
    wait.max(Duration::seconds(1))
}

/// One provider call under the lease: where its answer goes and what it spends.
struct Call<'a> {
    owner: &'a LeaseOwner,
    /// Where the new credentials go.
    target: CredentialsPointer,
    /// The tokens whose refresh token the call spends.
    previous: TokenSet,
    /// The call replaces one an interrupted refresh made (whose token may already be spent).
    interrupted: bool,
    rules: super::rules::RefreshRules,
    lease_ends: tokio::time::Instant,
}

/// What an interrupted refresh left, once looked at.
enum Recovery {
    /// Adopted, or still possibly running: this is the outcome.
    Settled(RefreshReport),
    /// Nothing to recover: refresh (once more, when `interrupted`).
    RefreshAgain {
        connection: Connection,
        interrupted: bool,
    },
}

/// What a refresh would spend.
enum Spendable {
    Token {
        spending: CredentialsPointer,
        previous: TokenSet,
        refresh_token: crate::secret::RefreshToken,
    },
    /// Credentials without a refresh (Twinfield's legacy ones).
    Nothing,
    /// No tokens, or no refresh token: only a person can help.
    OnlyByAPerson(ReconnectReason),
}

/// The vault slot a refresh of `connection` writes to: the one that is not current.
fn next_slot(connection: &Connection) -> VaultSlot {
    connection
        .credentials
        .as_ref()
        .map_or(VaultSlot::A, |current| current.slot.other())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_named_for_what_most_likely_caused_it() {
        use ReconnectKind as K;
        let kind = |class, past_end, interrupted| reconnect_kind(class, past_end, interrupted);
        assert_eq!(
            kind(ErrorClass::GrantRevoked, false, false),
            Some(K::GrantRevoked)
        );
        assert_eq!(
            kind(ErrorClass::GrantRevoked, true, false),
            Some(K::RefreshTokenExpired),
            "a bare invalid_grant past the token's end"
        );
        assert_eq!(
            kind(ErrorClass::RefreshTokenReused, false, true),
            Some(K::RefreshInterrupted),
            "reuse right after an interrupted refresh is that refresh's own doing"
        );
        assert_eq!(
            kind(ErrorClass::ClientMisconfigured, false, true),
            Some(K::ClientMisconfigured)
        );
        assert_eq!(kind(ErrorClass::ProviderUnavailable, true, true), None);
        assert_eq!(kind(ErrorClass::Unexpected, false, false), None);
    }

    #[test]
    fn a_failed_refresh_waits_as_the_provider_asks_and_never_less_than_a_second() {
        let failure = |class| GrantFailure::new(class, "x");
        let mut limited = failure(ErrorClass::RateLimited);
        assert_eq!(
            retry_wait(&limited, 1, Duration::zero()),
            Duration::minutes(1)
        );
        limited.retry_after = Some(Duration::seconds(90));
        assert_eq!(
            retry_wait(&limited, 1, Duration::zero()),
            Duration::seconds(90)
        );
        let early = failure(ErrorClass::TooEarly);
        assert_eq!(
            retry_wait(&early, 1, Duration::seconds(200)),
            Duration::seconds(200)
        );
        assert_eq!(
            retry_wait(&early, 1, Duration::seconds(-5)),
            Duration::seconds(1)
        );
        let down = failure(ErrorClass::ProviderUnavailable);
        assert!(retry_wait(&down, 6, Duration::zero()) > retry_wait(&down, 1, Duration::zero()));
    }
}
