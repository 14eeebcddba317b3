//! An in-memory store: every metadata port and the token vault in one process's memory, for unit tests
//! only. It is not a backend the broker runs on; the contract suite (`tests/tests/store_contract.rs`)
//! runs on the real backends, and on this one too, so its semantics stay theirs.
//!
//! Every operation takes one `std::sync::Mutex` for its whole check-and-write, which is what the
//! embedded store's `BEGIN IMMEDIATE` transactions and DynamoDB's condition expressions give: a
//! conditional write is atomic, so of concurrent lease takers or state consumers exactly one wins.
//! The lock is never held across an `.await`.
//!
//! Where the real backends differ in what they may do (delete expired entries, prune old vault
//! versions), this store keeps everything: the ports promise no deletion, only what reads answer.
//!
//! [`Faults`] makes the next vault or store writes fail as an unavailable AWS service would, for tests
//! of what the core does then.

use crate::domain::{
    ApiKeyPrefix, ApiKeyRecord, ConnectLink, Connection, Consumed, Credentials, CredentialsPointer,
    Lease, OAuthApp, OneTimeKey, PendingAuthorization, ScheduleEntry, StatusTransition, Tenant,
    VaultSlot,
};
use crate::escrow::{self, DataKey, SealedCredentials};
use crate::ids::{AppId, ConnectionId, LeaseOwner, TenantId, WriteId};
use crate::notify::{
    notice_kind_of, Claim, NoticeKey, NoticeOutcome, NoticeRecord, NoticeState, NoticeSubject,
    Release,
};
use crate::ports::{
    ApiKeyStore, AuthorizationStateStore, AwaitingConnection, ConnectLinkStore, ConnectionStore,
    DueConnection, Fence, LeaseAttempt, NotificationStore, Page, PageRequest, StoreError,
    TenantStore, TokenVault, UsageKey, UsageStore, UsageTake, UsageWindow, VaultError,
};
use crate::secret::ClientSecret;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The in-memory store (unit tests only). Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    /// Seals escrows, as the embedded store's local escrow key does.
    escrow_key: DataKey,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

/// Writes to fail next, each as [`VaultError::Unavailable`] or [`StoreError::Unavailable`]: what a
/// throttled or unreachable AWS service answers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// `put_credentials` calls to refuse.
    pub vault_writes: u32,
    /// `save_connection` calls to refuse.
    pub connection_saves: u32,
}

#[derive(Default)]
struct State {
    tenants: BTreeMap<TenantId, Tenant>,
    apps: BTreeMap<(TenantId, AppId), OAuthApp>,
    connections: HashMap<ConnectionId, Connection>,
    /// Per connection, in write order: `(seq, transition)`.
    transitions: HashMap<ConnectionId, Vec<(u64, StatusTransition)>>,
    next_seq: u64,
    api_keys: BTreeMap<String, ApiKeyRecord>,
    pending: HashMap<OneTimeKey, PendingAuthorization>,
    links: HashMap<OneTimeKey, ConnectLink>,
    notices: BTreeMap<String, Notice>,
    usage: HashMap<(UsageKey, DateTime<Utc>), u32>,
    vault: HashMap<VaultEntry, Credentials>,
    client_secrets: HashMap<(TenantId, AppId), ClientSecret>,
}

type VaultEntry = (TenantId, ConnectionId, VaultSlot, WriteId);

struct Notice {
    connection: ConnectionId,
    subject: NoticeSubject,
    state: NoticeState,
    attempts: u32,
}

impl Notice {
    fn record(&self, key: &str) -> NoticeRecord {
        NoticeRecord {
            key: NoticeKey::new(key),
            connection: self.connection.clone(),
            subject: self.subject.clone(),
            state: self.state.clone(),
            attempts: self.attempts,
        }
    }
}

/// A listing's position, checked against the listing it is passed back to.
#[derive(Serialize, Deserialize, PartialEq)]
enum Cursor {
    Connections {
        tenant: TenantId,
        created_at: DateTime<Utc>,
        id: ConnectionId,
    },
    Due {
        at: DateTime<Utc>,
        id: ConnectionId,
    },
    Awaiting {
        since: DateTime<Utc>,
        id: ConnectionId,
    },
    Transitions {
        connection: ConnectionId,
        at: DateTime<Utc>,
        seq: u64,
    },
}

impl Cursor {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("a cursor is plain data")
    }

    /// The request's cursor, if any, as the position `accept` takes out of it.
    fn of_request<K>(
        page: &PageRequest,
        accept: impl FnOnce(Cursor) -> Option<K>,
    ) -> Result<Option<K>, StoreError> {
        let Some(text) = &page.cursor else {
            return Ok(None);
        };
        let cursor: Cursor = serde_json::from_str(text).map_err(|_| StoreError::InvalidCursor)?;
        accept(cursor).map(Some).ok_or(StoreError::InvalidCursor)
    }
}

/// The page of `sorted` (keyed by position in the listing's order) that follows `after`.
fn page_after<K: Ord, T>(
    sorted: BTreeMap<K, T>,
    after: Option<K>,
    page: &PageRequest,
    cursor_of: impl Fn(&K) -> Cursor,
) -> Page<T> {
    let limit = page.limit.clamp(1, PageRequest::MAX_LIMIT) as usize;
    let mut rest: Vec<(K, T)> = sorted
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next_cursor = match (more, rest.last()) {
        (true, Some((k, _))) => Some(cursor_of(k).encode()),
        _ => None,
    };
    Page {
        items: rest.into_iter().map(|(_, t)| t).collect(),
        next_cursor,
    }
}

// The store-managed parts of a connection, in one place: the fields a save never takes from its caller.
fn stored_version(c: &Connection) -> u64 {
    c.version
}

fn stored_lease(c: &Connection) -> Option<&Lease> {
    c.lease.as_ref()
}

fn with_store_fields(mut c: Connection, version: u64, lease: Option<Lease>) -> Connection {
    c.version = version;
    c.lease = lease;
    c
}

fn next_version(c: &Connection) -> Result<u64, StoreError> {
    stored_version(c).checked_add(1).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "connection {}: its version is at its ceiling",
            c.id
        ))
    })
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                faults: Mutex::default(),
                escrow_key: DataKey::generate().expect("the system has randomness"),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left no half-done write: every operation
        // checks before it changes anything.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds to the writes that fail next (see [`Faults`]).
    pub fn fail_next(&self, faults: Faults) {
        let mut f = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.vault_writes += faults.vault_writes;
        f.connection_saves += faults.connection_saves;
    }

    /// Takes one fault of the kind `pick` names, if any is left.
    fn take_fault(&self, pick: impl FnOnce(&mut Faults) -> &mut u32) -> bool {
        let mut f = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let left = pick(&mut f);
        let hit = *left > 0;
        *left = left.saturating_sub(1);
        hit
    }

    /// How many versions the vault holds for a connection (both slots), for tests of what a write
    /// left behind.
    pub fn vault_versions(&self, tenant: &TenantId, connection: &ConnectionId) -> usize {
        self.state()
            .vault
            .keys()
            .filter(|(t, c, _, _)| t == tenant && c == connection)
            .count()
    }
}

impl State {
    /// Transitions with their notices, as one write (the outbox rule: `notify::notice_kind_of`).
    fn add_transitions(&mut self, connection: &ConnectionId, transitions: &[StatusTransition]) {
        for t in transitions {
            self.next_seq += 1;
            let seq = self.next_seq;
            self.transitions
                .entry(connection.clone())
                .or_default()
                .push((seq, t.clone()));
            if notice_kind_of(t).is_some() {
                self.notices.insert(
                    format!("transition:{seq}"),
                    Notice {
                        connection: connection.clone(),
                        subject: NoticeSubject::Transition(t.clone()),
                        state: NoticeState::Pending,
                        attempts: 0,
                    },
                );
            }
        }
    }
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn insert_connection(
        &self,
        connection: &Connection,
        transitions: &[StatusTransition],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.connections.contains_key(&connection.id) {
            return Err(StoreError::AlreadyExists(format!(
                "connection {}",
                connection.id
            )));
        }
        state
            .connections
            .insert(connection.id.clone(), connection.clone());
        state.add_transitions(&connection.id, transitions);
        Ok(())
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        Ok(self.state().connections.get(id).cloned())
    }

    async fn save_connection(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, StoreError> {
        if self.take_fault(|f| &mut f.connection_saves) {
            return Err(StoreError::Unavailable(
                "saving a connection: the in-memory store was told to fail this write".into(),
            ));
        }
        let mut state = self.state();
        let Some(stored) = state.connections.get(&connection.id) else {
            return Err(StoreError::NotFound(format!(
                "connection {}",
                connection.id
            )));
        };
        let fenced = fence
            .owner()
            .is_some_and(|owner| stored_lease(stored).map(|l| &l.owner) != Some(owner));
        if stored.tenant != connection.tenant
            || stored_version(stored) != stored_version(connection)
            || fenced
        {
            return Err(StoreError::Conflict);
        }
        let lease = match fence {
            Fence::LeaseReleased(_) => None,
            _ => stored_lease(stored).cloned(),
        };
        let saved = with_store_fields(connection.clone(), next_version(stored)?, lease);
        state
            .connections
            .insert(connection.id.clone(), saved.clone());
        state.add_transitions(&connection.id, transitions);
        Ok(saved)
    }

    async fn acquire_lease(
        &self,
        id: &ConnectionId,
        owner: &LeaseOwner,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let expires_at = now.checked_add_signed(ttl).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "taking a refresh lease: a lease of {ttl} from {now} ends out of range"
            ))
        })?;
        let mut state = self.state();
        let Some(stored) = state.connections.get_mut(id) else {
            return Ok(LeaseAttempt::Missing);
        };
        if let Some(held) = stored_lease(stored).filter(|l| l.expires_at > now) {
            return Ok(LeaseAttempt::Busy {
                until: held.expires_at,
            });
        }
        let lease = Lease {
            owner: owner.clone(),
            expires_at,
        };
        let taken = with_store_fields(stored.clone(), next_version(stored)?, Some(lease));
        *stored = taken.clone();
        Ok(LeaseAttempt::Acquired(taken))
    }

    async fn release_lease(&self, id: &ConnectionId, owner: &LeaseOwner) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(stored) = state.connections.get_mut(id) {
            if stored_lease(stored).is_some_and(|l| &l.owner == owner) {
                let version = stored_version(stored);
                *stored = with_store_fields(stored.clone(), version, None);
            }
        }
        Ok(())
    }

    async fn list_connections(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> Result<Page<Connection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Connections {
                tenant: t,
                created_at,
                id,
            } if &t == tenant => Some((created_at, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter(|c| &c.tenant == tenant)
            .map(|c| ((c.created_at, c.id.clone()), c.clone()))
            .collect();
        Ok(page_after(sorted, after, &page, |(created_at, id)| {
            Cursor::Connections {
                tenant: tenant.clone(),
                created_at: *created_at,
                id: id.clone(),
            }
        }))
    }

    async fn due_for_refresh(
        &self,
        due_by: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<DueConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Due { at, id } => Some((at, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter_map(|c| match c.schedule_entry() {
                Some(ScheduleEntry::Due(at)) if at <= due_by => Some((
                    (at, c.id.clone()),
                    DueConnection {
                        id: c.id.clone(),
                        tenant: c.tenant.clone(),
                        next_refresh_at: at,
                    },
                )),
                _ => None,
            })
            .collect();
        Ok(page_after(sorted, after, &page, |(at, id)| Cursor::Due {
            at: *at,
            id: id.clone(),
        }))
    }

    async fn awaiting_person(
        &self,
        page: PageRequest,
    ) -> Result<Page<AwaitingConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Awaiting { since, id } => Some((since, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter_map(|c| match c.schedule_entry() {
                Some(ScheduleEntry::Awaiting(since)) => Some((
                    (since, c.id.clone()),
                    AwaitingConnection {
                        id: c.id.clone(),
                        tenant: c.tenant.clone(),
                        since,
                    },
                )),
                _ => None,
            })
            .collect();
        Ok(page_after(sorted, after, &page, |(since, id)| {
            Cursor::Awaiting {
                since: *since,
                id: id.clone(),
            }
        }))
    }

    async fn list_transitions(
        &self,
        id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<StatusTransition>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Transitions {
                connection,
                at,
                seq,
            } if &connection == id => Some((at, seq)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .transitions
            .get(id)
            .into_iter()
            .flatten()
            .map(|(seq, t)| ((t.at, *seq), t.clone()))
            .collect();
        Ok(page_after(sorted, after, &page, |(at, seq)| {
            Cursor::Transitions {
                connection: id.clone(),
                at: *at,
                seq: *seq,
            }
        }))
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.tenants.contains_key(&tenant.id) {
            return Err(StoreError::AlreadyExists(format!("tenant {}", tenant.id)));
        }
        state.tenants.insert(tenant.id.clone(), tenant.clone());
        Ok(())
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.state().tenants.get(id).cloned())
    }

    async fn put_app(&self, app: &OAuthApp) -> Result<(), StoreError> {
        self.state()
            .apps
            .insert((app.tenant.clone(), app.id.clone()), app.clone());
        Ok(())
    }

    async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<Option<OAuthApp>, StoreError> {
        Ok(self
            .state()
            .apps
            .get(&(tenant.clone(), id.clone()))
            .cloned())
    }

    async fn list_apps(&self, tenant: &TenantId) -> Result<Vec<OAuthApp>, StoreError> {
        Ok(self
            .state()
            .apps
            .values()
            .filter(|a| &a.tenant == tenant)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        let prefix = key.prefix.as_str().to_string();
        if state.api_keys.contains_key(&prefix) {
            return Err(StoreError::AlreadyExists(format!("API key {prefix}")));
        }
        state.api_keys.insert(prefix, key.clone());
        Ok(())
    }

    async fn get_api_key(&self, prefix: &ApiKeyPrefix) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.state().api_keys.get(prefix.as_str()).cloned())
    }

    /// A key already revoked keeps its first revocation time, as on the real backends.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        prefix: &ApiKeyPrefix,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        match state
            .api_keys
            .get_mut(prefix.as_str())
            .filter(|k| &k.tenant == tenant)
        {
            Some(key) => {
                key.revoked_at.get_or_insert(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .values()
            .filter(|k| &k.tenant == tenant)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl AuthorizationStateStore for MemoryStore {
    async fn put_pending(
        &self,
        key: &OneTimeKey,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.pending.contains_key(key) {
            return Err(StoreError::AlreadyExists("the authorization state".into()));
        }
        state.pending.insert(key.clone(), pending.clone());
        Ok(())
    }

    async fn consume_pending(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<PendingAuthorization>, StoreError> {
        Ok(match self.state().pending.remove(key) {
            None => Consumed::Unknown,
            Some(pending) if pending.expires_at <= now => Consumed::Expired,
            Some(pending) => Consumed::Fresh(pending),
        })
    }
}

#[async_trait]
impl ConnectLinkStore for MemoryStore {
    async fn put_link(&self, key: &OneTimeKey, link: &ConnectLink) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.links.contains_key(key) {
            return Err(StoreError::AlreadyExists("the connect link".into()));
        }
        state.links.insert(key.clone(), link.clone());
        Ok(())
    }

    async fn get_link(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<ConnectLink>, StoreError> {
        Ok(match self.state().links.get(key) {
            None => Consumed::Unknown,
            Some(link) if link.expires_at <= now => Consumed::Expired,
            Some(link) => Consumed::Fresh(link.clone()),
        })
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn unsettled_notices(&self, limit: u32) -> Result<Vec<NoticeKey>, StoreError> {
        let state = self.state();
        let mut unsettled: Vec<_> = state
            .notices
            .iter()
            .filter(|(_, n)| !matches!(n.state, NoticeState::Settled(_)))
            .map(|(key, n)| (n.subject.created_at(), key.clone()))
            .collect();
        unsettled.sort();
        Ok(unsettled
            .into_iter()
            .take(limit as usize)
            .map(|(_, key)| NoticeKey::new(key))
            .collect())
    }

    async fn get_notice(&self, key: &NoticeKey) -> Result<Option<NoticeRecord>, StoreError> {
        Ok(self
            .state()
            .notices
            .get(key.as_str())
            .map(|n| n.record(key.as_str())))
    }

    async fn create_notice(
        &self,
        connection: &ConnectionId,
        name: &str,
        subject: &NoticeSubject,
    ) -> Result<bool, StoreError> {
        let key = format!("warning:{connection}:{name}");
        let mut state = self.state();
        if state.notices.contains_key(&key) {
            return Ok(false);
        }
        state.notices.insert(
            key,
            Notice {
                connection: connection.clone(),
                subject: subject.clone(),
                state: NoticeState::Pending,
                attempts: 0,
            },
        );
        Ok(true)
    }

    async fn claim_notice(
        &self,
        key: &NoticeKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let mut state = self.state();
        let Some(notice) = state.notices.get_mut(key.as_str()) else {
            return Ok(Claim::Missing);
        };
        Ok(match notice.state.clone() {
            NoticeState::Pending => {
                notice.state = NoticeState::Sending { claimed_at: now };
                Claim::Claimed(notice.record(key.as_str()))
            }
            NoticeState::Sending { claimed_at } if claimed_at < stale_before => {
                Claim::Stale { claimed_at }
            }
            NoticeState::Sending { .. } => Claim::Busy,
            NoticeState::Settled(outcome) => Claim::Settled(outcome),
        })
    }

    async fn release_notice(
        &self,
        key: &NoticeKey,
        claimed_at: DateTime<Utc>,
        release: &Release,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let notice = state
            .notices
            .get_mut(key.as_str())
            .filter(|n| n.state == NoticeState::Sending { claimed_at })
            .ok_or(StoreError::Conflict)?;
        match release {
            Release::Settle(outcome) => {
                if let NoticeOutcome::Failed { attempts, .. } = outcome {
                    notice.attempts = *attempts;
                }
                notice.state = NoticeState::Settled(outcome.clone());
            }
            Release::Retry { attempts } => {
                notice.attempts = *attempts;
                notice.state = NoticeState::Pending;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn take_unit(
        &self,
        key: &UsageKey,
        window: UsageWindow,
        limit: u32,
    ) -> Result<UsageTake, StoreError> {
        let mut state = self.state();
        let used = state.usage.entry((key.clone(), window.start)).or_insert(0);
        Ok(if *used < limit {
            *used += 1;
            UsageTake::Granted { used: *used }
        } else {
            UsageTake::Refused { used: *used }
        })
    }

    async fn units_used(&self, key: &UsageKey, window: UsageWindow) -> Result<u32, StoreError> {
        Ok(self
            .state()
            .usage
            .get(&(key.clone(), window.start))
            .copied()
            .unwrap_or(0))
    }
}

/// Credentials as a JSON value: a repeated write is recognised by content, whatever the key order.
fn content_of(credentials: &Credentials) -> Result<serde_json::Value, VaultError> {
    serde_json::to_value(credentials)
        .map_err(|_| VaultError::Corrupt("credentials could not be serialised".into()))
}

#[async_trait]
impl TokenVault for MemoryStore {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        if self.take_fault(|f| &mut f.vault_writes) {
            return Err(VaultError::Unavailable(
                "writing credentials to the vault: the in-memory vault was told to fail this write"
                    .into(),
            ));
        }
        let entry = (tenant.clone(), connection.clone(), slot, write.clone());
        let mut state = self.state();
        if let Some(existing) = state.vault.get(&entry) {
            return if content_of(existing)? == content_of(credentials)? {
                Ok(())
            } else {
                Err(VaultError::WriteIdReused(write.to_string()))
            };
        }
        state.vault.insert(entry, credentials.clone());
        Ok(())
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        let entry = (
            tenant.clone(),
            connection.clone(),
            pointer.slot,
            pointer.write.clone(),
        );
        Ok(self.state().vault.get(&entry).cloned())
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError> {
        self.state()
            .vault
            .retain(|(t, c, _, _), _| !(t == tenant && c == connection));
        Ok(())
    }

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError> {
        self.state()
            .client_secrets
            .insert((tenant.clone(), app.clone()), secret.clone());
        Ok(())
    }

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        Ok(self
            .state()
            .client_secrets
            .get(&(tenant.clone(), app.clone()))
            .cloned())
    }

    async fn seal_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        escrow::seal(
            &self.inner.escrow_key,
            SealedCredentials::LOCAL_KEY.into(),
            tenant,
            connection,
            target,
            credentials,
        )
    }

    async fn open_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        escrow::open(&self.inner.escrow_key, tenant, connection, target, sealed)
    }
}
