//! Ports: what the core needs from storage. Two backends implement every one of them with the same
//! semantics — AWS (DynamoDB + Secrets Manager) and the embedded local store — and one contract test
//! suite (`tests/tests/store_contract/`) holds them to it.

use crate::domain::{
    ApiKeyPrefix, ApiKeyRecord, ConnectLink, Connection, Consumed, Credentials, CredentialsPointer,
    OAuthApp, OneTimeKey, PendingAuthorization, StatusTransition, Tenant, VaultSlot,
};
use crate::escrow::SealedCredentials;
use crate::ids::{AppId, ConnectionId, LeaseOwner, TenantId, WriteId};
use crate::secret::ClientSecret;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read, or the writer's lease was taken over: read it again and
    /// decide afresh. Never retried blindly.
    #[error("the record changed since it was read (or its lease was taken over); read it again")]
    Conflict,
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("the page cursor is not valid: pass back the cursor from the previous page unchanged")]
    InvalidCursor,
    /// The backend could not be reached or refused the call; safe to retry later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The same write id was used for different content: a bug in the caller, never a retry.
    #[error("write {0} was already used for different content")]
    WriteIdReused(String),
    #[error("the vault is unavailable: {0}")]
    Unavailable(String),
    #[error("a vault entry is unreadable: {0}")]
    Corrupt(String),
}

/// One page of a listing. Pass `next_cursor` back to get the following page; `None` means the end.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 1000;

    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            cursor: None,
        }
    }

    pub fn after(limit: u32, cursor: Option<String>) -> Self {
        Self {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            cursor,
        }
    }
}

/// How a connection write is guarded.
#[derive(Debug, Clone, Copy)]
pub enum Fence<'a> {
    /// The stored version must equal the one read (`Connection::version`).
    Version,
    /// As `Version`, and the lease must still belong to this owner.
    Lease(&'a LeaseOwner),
    /// As `Lease`, and the lease is given up in the same write: a refresh's last write, so it needs
    /// no write of its own to release (each write on the embedded store waits for a disk flush).
    LeaseReleased(&'a LeaseOwner),
}

impl<'a> Fence<'a> {
    /// The lease owner the write is fenced by, if any.
    pub fn owner(&self) -> Option<&'a LeaseOwner> {
        match *self {
            Self::Version => None,
            Self::Lease(owner) | Self::LeaseReleased(owner) => Some(owner),
        }
    }
}

// The connection is returned by value once per attempt and consumed at once; boxing it would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum LeaseAttempt {
    /// The lease is ours; the connection as stored right after taking it (version already bumped).
    Acquired(Connection),
    /// Someone else holds an unexpired lease.
    Busy {
        until: DateTime<Utc>,
    },
    Missing,
}

/// A connection the due index returned. The index may lag (DynamoDB GSIs are eventually
/// consistent), so callers re-read the connection before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueConnection {
    pub id: ConnectionId,
    pub tenant: TenantId,
    pub next_refresh_at: DateTime<Utc>,
}

/// A connection that only a person can make work again (see
/// [`Connection::awaiting_person_since`]), as the awaiting index returned it. The index may lag, so
/// callers re-read the connection before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingConnection {
    pub id: ConnectionId,
    pub tenant: TenantId,
    pub since: DateTime<Utc>,
}

#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores a new connection (its `version` must be 0) with its first transitions.
    async fn insert_connection(
        &self,
        connection: &Connection,
        transitions: &[StatusTransition],
    ) -> Result<(), StoreError>;

    /// A strongly consistent read, whatever the tenant. Internal callers only.
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError>;

    /// A connection as one tenant may see it: another tenant's connection does not exist.
    async fn get_tenant_connection(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
    ) -> Result<Option<Connection>, StoreError> {
        Ok(self
            .get_connection(id)
            .await?
            .filter(|c| &c.tenant == tenant))
    }

    /// Writes `connection` if the stored version still equals `connection.version` (and, for
    /// [`Fence::Lease`] and [`Fence::LeaseReleased`], the lease is still this owner's), together with
    /// `transitions`, atomically. The lease is never changed by a save, except given up under
    /// [`Fence::LeaseReleased`]. Returns the stored connection (version + 1).
    async fn save_connection(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, StoreError>;

    /// Takes the refresh lease if it is free or expired (`now` decides). Taking it increments the
    /// version, which fences off every writer that read the connection before.
    async fn acquire_lease(
        &self,
        id: &ConnectionId,
        owner: &LeaseOwner,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError>;

    /// Gives the lease up if this owner still holds it; a lease already taken over is left alone.
    async fn release_lease(&self, id: &ConnectionId, owner: &LeaseOwner) -> Result<(), StoreError>;

    /// A tenant's connections, oldest first.
    async fn list_connections(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> Result<Page<Connection>, StoreError>;

    /// Connections whose `next_refresh_at` is at or before `due_by`, earliest first.
    async fn due_for_refresh(
        &self,
        due_by: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<DueConnection>, StoreError>;

    /// Connections waiting for a person (reconnect required or disabled), longest waiting first.
    /// Every save keeps a connection's entry in step with its status.
    async fn awaiting_person(
        &self,
        page: PageRequest,
    ) -> Result<Page<AwaitingConnection>, StoreError>;

    /// A connection's status transitions, oldest first.
    async fn list_transitions(
        &self,
        id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<StatusTransition>, StoreError>;
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    /// Creates or replaces an app registration (its client secret goes to the vault separately).
    async fn put_app(&self, app: &OAuthApp) -> Result<(), StoreError>;
    async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<Option<OAuthApp>, StoreError>;
    async fn list_apps(&self, tenant: &TenantId) -> Result<Vec<OAuthApp>, StoreError>;
    /// Deletes an app registration; `false` when the tenant has none by that id. Whether connections
    /// still use it is the caller's to check first.
    async fn delete_app(&self, tenant: &TenantId, id: &AppId) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn get_api_key(&self, prefix: &ApiKeyPrefix) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Marks the key revoked; `false` when the tenant has no such key.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        prefix: &ApiKeyPrefix,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError>;
}

#[async_trait]
pub trait AuthorizationStateStore: Send + Sync {
    /// Stores a pending authorization under the hash of its OAuth `state`.
    async fn put_pending(
        &self,
        key: &OneTimeKey,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError>;

    /// Removes and returns it in one atomic step: of concurrent callers, at most one gets `Fresh`.
    /// An expired entry (by `now`) is never returned, even where the backend has not deleted it yet.
    async fn consume_pending(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<PendingAuthorization>, StoreError>;
}

/// Connect and reconnect links, stored under the hash of their token.
#[async_trait]
pub trait ConnectLinkStore: Send + Sync {
    async fn put_link(&self, key: &OneTimeKey, link: &ConnectLink) -> Result<(), StoreError>;

    /// The link, if it exists and has not expired by `now` (expired ones read as `Expired` even
    /// where the backend has not deleted them yet). Reading does not consume it.
    async fn get_link(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<ConnectLink>, StoreError>;
}

/// The token vault. Credentials live in two slots per connection (see [`VaultSlot`]); each write is
/// identified by a [`WriteId`] and can be read back by it exactly.
#[async_trait]
pub trait TokenVault: Send + Sync {
    /// Writes credentials to a slot as version `write`. Repeating the same write (same id, same
    /// content) is a no-op; the same id with other content is [`VaultError::WriteIdReused`].
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError>;

    /// The credentials written as `pointer.write` in `pointer.slot`, if that version exists.
    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError>;

    /// Deletes both slots of a connection (disconnect).
    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError>;

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError>;

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError>;

    /// Deletes an app's client secret (the app registration is deleted). Deleting one that is not
    /// there is not an error.
    async fn delete_client_secret(&self, tenant: &TenantId, app: &AppId) -> Result<(), VaultError>;

    /// Seals credentials that could not be written to the vault, for keeping in the metadata until
    /// they can be (see [`crate::escrow`]): with a key independent of the vault's storage, bound to
    /// the connection and the version `target` they are meant for. A vault with no escrow key says so.
    async fn seal_escrow(
        &self,
        _tenant: &TenantId,
        _connection: &ConnectionId,
        _target: &WriteId,
        _credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        Err(VaultError::Unavailable(
            "this vault has no escrow key (set BROKER_ESCROW_KEY_ID)".into(),
        ))
    }

    /// Keeps a webhook's signing secret (the dispatcher needs it back to sign every delivery).
    async fn put_webhook_secret(
        &self,
        _tenant: &TenantId,
        _webhook: &crate::ids::WebhookId,
        _secret: &crate::secret::WebhookSecret,
    ) -> Result<(), VaultError> {
        Err(VaultError::Unavailable(
            "this vault keeps no webhook signing secrets".into(),
        ))
    }

    async fn get_webhook_secret(
        &self,
        _tenant: &TenantId,
        _webhook: &crate::ids::WebhookId,
    ) -> Result<Option<crate::secret::WebhookSecret>, VaultError> {
        Err(VaultError::Unavailable(
            "this vault keeps no webhook signing secrets".into(),
        ))
    }

    /// Deleting one that is not there is not an error.
    async fn delete_webhook_secret(
        &self,
        _tenant: &TenantId,
        _webhook: &crate::ids::WebhookId,
    ) -> Result<(), VaultError> {
        Err(VaultError::Unavailable(
            "this vault keeps no webhook signing secrets".into(),
        ))
    }

    /// Opens what [`TokenVault::seal_escrow`] sealed for the same connection and target.
    async fn open_escrow(
        &self,
        _tenant: &TenantId,
        _connection: &ConnectionId,
        _target: &WriteId,
        _sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        Err(VaultError::Unavailable(
            "this vault has no escrow key (set BROKER_ESCROW_KEY_ID)".into(),
        ))
    }
}

/// Everything the broker stores, as one metadata store plus the vault.
pub trait MetadataStore:
    ConnectionStore
    + TenantStore
    + ApiKeyStore
    + AuthorizationStateStore
    + ConnectLinkStore
    + NotificationStore
    + UsageStore
    + HistoryStore
    + EventStore
{
}
impl<T> MetadataStore for T where
    T: ConnectionStore
        + TenantStore
        + ApiKeyStore
        + AuthorizationStateStore
        + ConnectLinkStore
        + NotificationStore
        + UsageStore
        + HistoryStore
        + EventStore
{
}

/// The notification outbox (see [`crate::notify`]). A transition that needs a notice gets one in the
/// same atomic write as the transition itself; warnings are created by the daily sweep. A notice is
/// sent only under a claim (a conditional pending → sending write), so of concurrent or repeated
/// notifiers at most one sends it.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Unsettled notices (pending or claimed), oldest first, at most `limit`.
    async fn unsettled_notices(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::notify::NoticeKey>, StoreError>;

    async fn get_notice(
        &self,
        key: &crate::notify::NoticeKey,
    ) -> Result<Option<crate::notify::NoticeRecord>, StoreError>;

    /// Creates a pending notice (a warning or a reminder) named `name` among `connection`'s notices
    /// unless one by that name exists: `false` when it already did, whatever its state. The name is
    /// deterministic (the sweep derives it from what the notice is about), so a repeated sweep finds
    /// the notice instead of creating another; the store derives the notice's key from it.
    async fn create_notice(
        &self,
        connection: &ConnectionId,
        name: &str,
        subject: &crate::notify::NoticeSubject,
    ) -> Result<bool, StoreError>;

    /// Claims a pending notice (pending → sending at `now`). A notice already claimed before
    /// `stale_before` is reported `Stale`, after it `Busy`.
    async fn claim_notice(
        &self,
        key: &crate::notify::NoticeKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<crate::notify::Claim, StoreError>;

    /// Gives up the claim made at `claimed_at`: settles the notice or puts it back to pending.
    /// `Conflict` if the claim is no longer that one.
    async fn release_notice(
        &self,
        key: &crate::notify::NoticeKey,
        claimed_at: DateTime<Utc>,
        release: &crate::notify::Release,
    ) -> Result<(), StoreError>;
}

/// What a shared usage counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageCounter {
    /// Calls to the provider's token endpoint.
    TokenCalls,
    /// Token-endpoint calls the provider refused.
    FailedTokenCalls,
}

impl UsageCounter {
    /// Its name in stored keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenCalls => "token_calls",
            Self::FailedTokenCalls => "failed_token_calls",
        }
    }
}

/// A counter shared by every connection one provider user authorized under one app: providers limit
/// per app and user (Exact Online: 200 token calls a day, blocked after 10 failures in an hour), and
/// one user may authorize several connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub tenant: TenantId,
    pub app: AppId,
    /// The provider's id of the user, trimmed and lowercased (Exact's `UserID` compares so).
    user: String,
    pub counter: UsageCounter,
}

impl UsageKey {
    /// `None` for a blank user: who it is must be known to share a count.
    pub fn new(tenant: TenantId, app: AppId, user: &str, counter: UsageCounter) -> Option<Self> {
        let user = user.trim().to_lowercase();
        (!user.is_empty()).then_some(Self {
            tenant,
            app,
            user,
            counter,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The same user and app, another counter.
    pub fn with_counter(&self, counter: UsageCounter) -> Self {
        Self {
            counter,
            ..self.clone()
        }
    }
}

/// A fixed window of time, `[start, end)`. It is part of a counter's identity, so a new window starts
/// at zero whether or not the store has deleted the old one yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsageWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl UsageWindow {
    /// The UTC day `at` falls in.
    pub fn utc_day(at: DateTime<Utc>) -> Self {
        let start = at
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc();
        Self {
            start,
            end: start + Duration::days(1),
        }
    }

    /// The UTC clock hour `at` falls in.
    pub fn utc_hour(at: DateTime<Utc>) -> Self {
        let start = DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0)
            .expect("an hour boundary of a valid time is valid");
        Self {
            start,
            end: start + Duration::hours(1),
        }
    }

    /// The window of the same length just before this one.
    pub fn previous(&self) -> Self {
        Self {
            start: self.start - (self.end - self.start),
            end: self.start,
        }
    }

    /// When a store may forget the window: a day after it ended, so one still being read around its
    /// end is never missing.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.end + Duration::days(1)
    }
}

/// The answer to taking one unit from a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageTake {
    /// Taken: the window's count is now `used`.
    Granted { used: u32 },
    /// The window's count had reached the limit; nothing was taken.
    Refused { used: u32 },
}

/// Atomic bounded counters shared across connections and processes.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Takes one unit from the counter's window unless `limit` units are already taken, atomically:
    /// of any number of concurrent takers, exactly as many as the limit leaves room for are granted.
    /// A take whose answer was lost may have counted all the same (over-counting is the safe side).
    async fn take_unit(
        &self,
        key: &UsageKey,
        window: UsageWindow,
        limit: u32,
    ) -> Result<UsageTake, StoreError>;

    /// The units taken in the window (0 for a window nobody took from). Strongly consistent.
    async fn units_used(&self, key: &UsageKey, window: UsageWindow) -> Result<u32, StoreError>;
}

// ----- A connection's history ------------------------------------------------------------------

/// One entry of a history listing with its id: unique within the connection and its kind of entry,
/// and ordered as the store orders entries of the same time (so "newest first" is `(time, id)`
/// descending everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed<T> {
    pub id: String,
    pub item: T,
}

/// What a connection's history reads and writes beyond its transitions (see [`crate::history`]).
/// Listings are newest first, at or before `until` when given, at most `limit` entries: the history
/// merges them page by page.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// As [`ConnectionStore::save_connection`] (same fence, same result), and records `change` in the
    /// same atomic write: a refused save records nothing.
    async fn save_connection_change(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        change: &crate::domain::ConnectionChange,
    ) -> Result<Connection, StoreError>;

    async fn list_changes(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<crate::domain::ConnectionChange>>, StoreError>;

    /// The connection's transitions newest first (ids order transitions of the same time).
    async fn list_recent_transitions(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<StatusTransition>>, StoreError>;

    /// Adds counts of session reads to the stored counts of their key, connection and hour (creating
    /// them): the count is the sum, `first` the earliest, `last` the latest. Not idempotent: a write
    /// whose answer was lost and is repeated counts twice (over-counting is the safe side of an audit).
    async fn add_session_reads(
        &self,
        reads: &[crate::domain::SessionReads],
    ) -> Result<(), StoreError>;

    /// Counts by hour (newest first; the id is the key prefix).
    async fn list_session_reads(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<crate::domain::SessionReads>>, StoreError>;

    /// Every notice about the connection, settled or not (a connection has few: one per transition
    /// that needs a person, and the sweep's warnings and reminders).
    async fn list_connection_notices(
        &self,
        id: &ConnectionId,
    ) -> Result<Vec<crate::notify::NoticeRecord>, StoreError>;
}

// ----- Status-change events --------------------------------------------------------------------

/// The status-change event outbox and the tenants' webhook endpoints (see [`crate::events`]). Every
/// status transition that changes the status is an outbox entry, written in the same atomic write as
/// the transition. A dispatcher turns it into one delivery per target in one atomic write, then sends
/// each delivery under a claim (a conditional write) and settles it.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Transitions not yet turned into deliveries, oldest first, at most `limit`.
    async fn pending_events(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::events::PendingEvent>, StoreError>;

    /// Creates the deliveries of the pending event `key` and marks it done, atomically: `false` (and
    /// nothing written) when it was done already.
    async fn fan_out_event(
        &self,
        key: &str,
        deliveries: &[crate::events::DeliveryTicket],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Deliveries due by `now` (pending and due, or claimed longer ago than their stale time),
    /// earliest first, at most `limit`.
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::events::DeliveryKey>, StoreError>;

    /// Claims a delivery: pending and due by `now`, or sending with a claim older than
    /// `stale_before` (taken over). The claim is `now`.
    async fn claim_delivery(
        &self,
        key: &crate::events::DeliveryKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<crate::events::DeliveryClaim, StoreError>;

    /// Ends the attempt claimed at `claimed_at`. `Conflict` when the claim is no longer that one.
    async fn settle_delivery(
        &self,
        key: &crate::events::DeliveryKey,
        claimed_at: DateTime<Utc>,
        settle: &crate::events::DeliverySettle,
    ) -> Result<(), StoreError>;

    async fn get_delivery(
        &self,
        key: &crate::events::DeliveryKey,
    ) -> Result<Option<crate::events::DeliveryRecord>, StoreError>;

    /// A tenant's dead deliveries, most recent first, at most `limit`.
    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<crate::events::DeliveryRecord>, StoreError>;

    /// Stores a new endpoint; `AlreadyExists` if its id is taken.
    async fn insert_webhook(&self, webhook: &crate::events::Webhook) -> Result<(), StoreError>;

    /// A tenant's endpoints, oldest first.
    async fn list_webhooks(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<crate::events::Webhook>, StoreError>;

    /// `false` when the tenant has no endpoint by that id.
    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        id: &crate::ids::WebhookId,
    ) -> Result<bool, StoreError>;
}
