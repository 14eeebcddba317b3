//! Embedded local store: every port — metadata and token vault — on one SQLite file.
//!
//! It is the backend when no AWS configuration is given: a person runs the broker (and the admin CLI
//! beside it) on their own machine with no AWS account, and everything lives in one owner-only file
//! (mode 0600, created so before SQLite opens it). It is not a test double: the contract suite
//! (`tests/tests/store_contract/`) runs the same scenarios against it and against the AWS adapters.
//!
//! # Schema (`PRAGMA user_version` = [`schema::SCHEMA_VERSION`])
//!
//! | table                    | key                                   | other columns |
//! |--------------------------|---------------------------------------|---------------|
//! | `tenants`                | `id`                                  | `data` |
//! | `apps`                   | `(tenant, id)`                        | `data` |
//! | `connections`            | `id`                                  | `tenant`, `data` (without `version`, `lease`), `version`, `lease_owner`, `lease_until`, `created_at`, `next_refresh_at` |
//! | `transitions`            | `seq` (autoincrement)                 | `connection`, `at`, `data` |
//! | `api_keys`               | `prefix`                              | `tenant`, `data` |
//! | `pending_authorizations` | `key` (SHA-256 of the state)          | `expires_at`, `data` |
//! | `vault_versions`         | `seq`; unique `(tenant, connection, slot, write_id)` | `content` (credentials JSON), `created_at` |
//! | `client_secrets`         | `(tenant, app)`                       | `content`, `updated_at` |
//! | `notices` (version 2)    | `key`                                 | `connection`, `created_at`, `state`, `claimed_at`, `attempts`, `subject`, `outcome` (see `notifications.rs`) |
//! | `usage_counters` (version 5) | `(tenant, app, provider_user, counter, window_start)` | `used`, `expires_at` (see `usage.rs`) |
//! | `connection_changes` (version 6) | `(connection, version)`      | `at`, `data` (see `history.rs`) |
//! | `session_reads` (version 6) | `(connection, hour, key_prefix)` | `tenant`, `count`, `first`, `last`, `expires_at` |
//! | `status_events`, `event_deliveries`, `webhooks` (version 6) | `seq`; `key`; `(tenant, id)` | the event outbox and the tenants' endpoints (see `events.rs`) |
//!
//! Indexes: connections by `(tenant, created_at, id)` (a tenant's listing) and by
//! `(next_refresh_at, id)` where set (the due index); transitions by `(connection, at, seq)`; API keys
//! by `(tenant, prefix)`; vault versions by `(tenant, connection, slot, seq)`.
//! `data` is the domain record as JSON; a value that a condition, an order or an index needs has its
//! own column and is left out of `data`, so each value has one source of truth. Times are RFC 3339 text
//! with nine fractional digits (the DynamoDB adapter's key format): exact, and text order is time order.
//!
//! The vault's values — `content` in `vault_versions` and `client_secrets`, `key` in `local_keys` — are
//! sealed with AES-256-GCM under a key in a file of its own beside the store file (`sealing.rs`), and
//! deleting them scrubs the WAL: a copy of the store file without its key file shows no token.
//!
//! # Why the semantics equal the AWS adapters'
//!
//! Each DynamoDB condition expression becomes a check inside one `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock before reading, so check and write are atomic across threads *and*
//! processes sharing the file:
//! - a save is refused (`Conflict`) unless the stored `version` (and, under a lease fence,
//!   `lease_owner`) is what the writer read, writes `version + 1` and never touches the lease columns;
//!   its transitions are written in the same transaction, so a refused save writes none;
//! - `acquire_lease` compares `lease_until` with the caller's `now` (never the wall clock) and bumps
//!   `version`, fencing off everyone who read before;
//! - `consume_pending` is one `DELETE … RETURNING`: of concurrent consumers one gets the row; an
//!   expired row is deleted and reported `Expired`, like an item DynamoDB's TTL has not removed yet;
//! - listings are keyset-paged in the same order as the AWS indexes (a tenant's connections by
//!   `created_at` then id; due by `next_refresh_at` then id; transitions by time, then write), and a
//!   cursor is checked against the listing it is passed to;
//! - the vault keeps versions by write id like Secrets Manager's `ClientRequestToken`: a repeated write
//!   is a no-op, a reused id with other content is refused, and old versions are pruned as Secrets
//!   Manager drops unlabelled ones — but never the newest few of a slot, nor one the connection's
//!   metadata points at (current credentials, or either end of a refresh in flight).
//!
//! SQLite is strongly consistent where DynamoDB's indexes are eventually consistent; callers already
//! tolerate the lag, so reading fresher data changes nothing for them.
//!
//! # Concurrency
//!
//! Writes go through the store's one writer connection, on a thread of its own (`writer.rs`), so
//! writers of one process queue instead of spinning on the file lock. It commits what is queued in
//! groups: one `BEGIN IMMEDIATE` transaction and one fsync for every write waiting, each write in its
//! own savepoint, and no caller hears "done" before that commit has returned. Reads run in
//! `spawn_blocking` on a small pool of read-only connections, which WAL lets run beside a write.
//! Another process's lock is waited for by SQLite's busy timeout, then by a few bounded retries; only
//! then does the caller see `Unavailable`.

mod codec;
mod connections;
mod events;
mod history;
#[cfg(test)]
mod in_memory_tests;
mod links;
mod notifications;
mod records;
mod schema;
mod sealing;
#[cfg(test)]
mod sealing_tests;
#[cfg(any(test, feature = "testing"))]
mod testing;
#[cfg(test)]
mod tests;
mod usage;
mod vault;
mod writer;

use crate::ports::{StoreError, VaultError};
use rusqlite::{Connection as Db, ErrorCode};
use sealing::VaultKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use writer::{AfterCommit, Writer};

#[cfg(any(test, feature = "testing"))]
pub use testing::Faults;

/// The embedded store. Cheap to clone: clones share the file's connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    /// Seals the vault's values; from the key file beside the store file (see `sealing.rs`).
    key: Arc<VaultKey>,
    /// Idle read connections; more are opened on demand, at most [`IDLE_READERS`] are kept. `None`
    /// for a database in memory, which no connection but the writer's sees: reads run there.
    readers: Option<Mutex<Vec<Db>>>,
    #[cfg(any(test, feature = "testing"))]
    faults: Mutex<Faults>,
}

const IDLE_READERS: usize = 4;

/// Retries after SQLite's own busy timeout ran out (another process held the file locked for long).
const BUSY_RETRIES: u32 = 3;

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating it (and its folders) if needed, owner-only, and
    /// creating or upgrading its schema; opens its key file ([`EmbeddedStore::key_path`]), creating
    /// it for a store that holds nothing sealed yet. Blocks briefly: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let what = format!("opening the store file {}", path.display());
        schema::prepare_file(&path).map_err(|e| StoreError::Unavailable(format!("{what}: {e}")))?;
        let mut writer = with_busy_retry(|| schema::connect(&path, schema::Role::Writer))
            .map_err(|f| f.into_store(&what))?;
        with_busy_retry(|| schema::migrate(&mut writer)).map_err(|f| f.into_store(&what))?;
        let key_file = sealing::key_path(&path);
        let key = with_busy_retry(|| sealing::unlock(&mut writer, &key_file))
            .map_err(|f| f.into_store(&what))?;
        Self::start(path, writer, key, Some(Mutex::default()), &what)
    }

    /// A store on a private database in memory, gone with its last clone: the same SQL, transactions
    /// and sealing as a store file, for tests that need a store but not a file. Its vault key is
    /// random and held in memory; [`EmbeddedStore::path`] answers `:memory:`.
    #[cfg(any(test, feature = "testing"))]
    pub fn in_memory() -> Result<Self, StoreError> {
        let what = "opening a store in memory";
        let opened = schema::connect_in_memory().and_then(|mut db| {
            schema::migrate(&mut db)?;
            let key = sealing::unlock_in_memory(&mut db)?;
            Ok((db, key))
        });
        let (db, key) = opened.map_err(|f| f.into_store(what))?;
        Self::start(PathBuf::from(":memory:"), db, key, None, what)
    }

    fn start(
        path: PathBuf,
        writer: Db,
        key: VaultKey,
        readers: Option<Mutex<Vec<Db>>>,
        what: &str,
    ) -> Result<Self, StoreError> {
        let writer = Writer::start(writer).map_err(|e| {
            StoreError::Unavailable(format!("{what}: starting its writer thread: {e}"))
        })?;
        let inner = Inner {
            path,
            writer,
            key: Arc::new(key),
            readers,
            #[cfg(any(test, feature = "testing"))]
            faults: Mutex::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key file that seals the vault's values of the store file at `path`: beside it, owner-only.
    /// A backup needs both files; without the key file the stored tokens and client secrets are lost.
    pub fn key_path(path: impl AsRef<Path>) -> PathBuf {
        sealing::key_path(path.as_ref())
    }

    fn vault_key(&self) -> Arc<VaultKey> {
        self.inner.key.clone()
    }

    /// Runs `job` in a `BEGIN IMMEDIATE` transaction on the writer connection, atomically: if it
    /// returns `Ok`, its writes are kept, else none of them. Answers once the transaction committed
    /// (durably), which it may share with other writes (see `writer.rs`); a failed commit is an `Err`.
    async fn write<T, F>(&self, job: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        self.inner.writer.run(job, AfterCommit::Nothing).await
    }

    /// As [`EmbeddedStore::write`], for a write that deletes or replaces vault values: once committed,
    /// the WAL is checkpointed and truncated, so no old copy stays in the WAL or the file's free pages.
    async fn write_and_scrub<T, F>(&self, job: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        self.inner.writer.run(job, AfterCommit::Scrub).await
    }

    /// Runs `job` on a pooled read-only connection (on the writer's, for a database in memory).
    async fn read<T, F>(&self, mut job: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        if self.inner.readers.is_none() {
            return self.write(job).await;
        }
        let inner = self.inner.clone();
        blocking(move || {
            let db = match inner.idle_reader() {
                Some(db) => db,
                None => with_busy_retry(|| schema::connect(&inner.path, schema::Role::Reader))?,
            };
            let out = with_busy_retry(|| job(&db));
            inner.keep_reader(db);
            out
        })
        .await
    }
}

impl Inner {
    fn idle_reader(&self) -> Option<Db> {
        let pool = self.readers.as_ref()?;
        pool.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn keep_reader(&self, db: Db) {
        if let Some(pool) = &self.readers {
            let mut idle = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.push(db);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(job).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Failure::Cancelled),
    }
}

/// Runs `attempt` again, a bounded number of times, while it fails because the file is locked. Safe
/// because a failed attempt's transaction has rolled back.
fn with_busy_retry<T>(mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T, Failure> {
    let mut retries = 0;
    loop {
        match attempt() {
            Err(failure) if failure.is_busy() && retries < BUSY_RETRIES => {
                retries += 1;
                std::thread::sleep(Duration::from_millis(20 << retries));
            }
            outcome => return outcome,
        }
    }
}

/// Why an operation failed, before it is told as the port's error type.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    /// A stored value could not be decoded (or a value could not be encoded); names it, never quotes it.
    Corrupt(String),
    /// An answer the port defines: `Conflict`, `AlreadyExists`, `NotFound`, ...
    Refused(StoreError),
    WriteIdReused(String),
    Cancelled,
    /// The writer thread is gone: it stopped on a panic of its own (a bug; a job's panic is the job's).
    WriterStopped,
    /// Something this adapter's own logic rules out happened.
    Bug(&'static str),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl Failure {
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Sql(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }

    /// Why the database failed, after `operation`. SQLite's messages name tables and columns, not values.
    fn unavailable(self, operation: &str) -> String {
        match self {
            failure if failure.is_busy() => {
                format!("{operation}: the store file stayed locked by another process; try again")
            }
            Self::Sql(e) => format!("{operation}: {e}"),
            Self::Cancelled => format!("{operation}: the operation was cancelled"),
            Self::WriterStopped => format!(
                "{operation}: the store's writer stopped after an internal error; restart the broker"
            ),
            Self::Bug(m) => format!("{operation}: internal error: {m}"),
            Self::Refused(e) => format!("{operation}: {e}"),
            Self::Corrupt(m) | Self::WriteIdReused(m) => format!("{operation}: {m}"),
        }
    }

    /// The same failure again, for each job of a batch that failed as a whole. An SQLite error keeps
    /// its code (so a busy file is still seen as busy); another `rusqlite` error keeps its message.
    fn duplicate(&self) -> Failure {
        match self {
            Self::Sql(rusqlite::Error::SqliteFailure(code, message)) => {
                Self::Sql(rusqlite::Error::SqliteFailure(*code, message.clone()))
            }
            Self::Sql(other) => Self::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(other.to_string()),
            )),
            Self::Corrupt(m) => Self::Corrupt(m.clone()),
            Self::Refused(e) => Self::Refused(e.clone()),
            Self::WriteIdReused(w) => Self::WriteIdReused(w.clone()),
            Self::Cancelled => Self::Cancelled,
            Self::WriterStopped => Self::WriterStopped,
            Self::Bug(m) => Self::Bug(m),
        }
    }

    fn into_store(self, operation: &str) -> StoreError {
        match self {
            Self::Refused(e) => e,
            Self::Corrupt(m) => StoreError::Corrupt(m),
            other => StoreError::Unavailable(other.unavailable(operation)),
        }
    }

    fn into_vault(self, operation: &str) -> VaultError {
        match self {
            Self::WriteIdReused(write) => VaultError::WriteIdReused(write),
            Self::Corrupt(m) => VaultError::Corrupt(m),
            other => VaultError::Unavailable(other.unavailable(operation)),
        }
    }
}
