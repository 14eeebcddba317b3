//! An in-memory store: every metadata port and the token vault in one process's memory, for unit tests
//! only. It is not a backend the broker runs on; the contract suite (`tests/tests/store_contract/`)
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

mod accounts;
mod connections;
mod events;
mod notifications;
mod vault;

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
    events: events::Events,
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
