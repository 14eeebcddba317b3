//! The token-read audit, counted in the process and written in the background.
//!
//! Every token or session handed out is counted per connection, API key and UTC hour in memory; the
//! counts are written to the store (one upsert per key and hour, `count + n`) by a background task
//! started by the first request after they waited [`FLUSH_EVERY`], when the buffer reaches
//! [`FLUSH_AT`] counts, and whenever the history is read. A session answer never waits for a store
//! write.
//!
//! The price: counts not yet written live only in this process. On Lambda a process is frozen between
//! invocations (its background write resumes at the next one) and may be shut down while idle without
//! notice: counts made after its last write, with no request after them to start another, are lost;
//! and a write whose answer was lost and is repeated counts twice. The audit is a count of who read
//! what, when, within an hour; it is not a ledger. Each handout is also logged ("credential handed
//! out"), which is the record that cannot be lost. If the store refuses a write, the counts are kept
//! for the next one, up to [`MAX_PENDING`] entries; beyond that new counts are dropped and the drop is
//! logged.

use crate::domain::SessionReads;
use crate::ids::ConnectionId;
use crate::ports::{MetadataStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a count waits in memory while reads keep coming.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Counts (connection, key, hour) that start a write at once.
pub const FLUSH_AT: usize = 500;
/// The most counts kept unwritten (while the store refuses writes).
pub const MAX_PENDING: usize = 10_000;

type Slot = (ConnectionId, String, chrono::DateTime<chrono::Utc>);

#[derive(Default)]
struct Pending {
    counts: HashMap<Slot, SessionReads>,
    /// When the oldest unwritten count was made.
    since: Option<Instant>,
    /// A background write is under way.
    flushing: bool,
    dropped: u64,
}

impl Pending {
    fn add(&mut self, read: SessionReads) {
        let slot = (read.connection.clone(), read.key_prefix.clone(), read.hour);
        if let Some(stored) = self.counts.get_mut(&slot) {
            stored.absorb(&read);
        } else if self.counts.len() < MAX_PENDING {
            self.counts.insert(slot, read);
        } else {
            self.dropped += read.count;
            return;
        }
        self.since.get_or_insert_with(Instant::now);
    }
}

/// Counts session reads and writes them in the background (see the module documentation).
pub struct SessionReadLog {
    store: Arc<dyn MetadataStore>,
    pending: Mutex<Pending>,
    /// Writes one batch at a time, so batches of one process arrive in order.
    writing: tokio::sync::Mutex<()>,
}

impl SessionReadLog {
    pub fn new(store: Arc<dyn MetadataStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one read; starts a background write when one is due. Never waits for the store.
    pub fn count(self: &Arc<Self>, read: SessionReads) {
        self.pending().add(read);
        self.write_if_due();
    }

    /// Starts a background write if counts have waited [`FLUSH_EVERY`] or the buffer holds
    /// [`FLUSH_AT`]: called on every request, so counts wait at most until the next one.
    pub fn write_if_due(self: &Arc<Self>) {
        {
            let mut pending = self.pending();
            let due = !pending.flushing
                && (pending.counts.len() >= FLUSH_AT
                    || pending.since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY));
            if !due {
                return;
            }
            pending.flushing = true;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let log = self.clone();
                runtime.spawn(async move {
                    if let Err(e) = log.flush().await {
                        tracing::warn!(error = %e, "session-read counts could not be written; kept for the next write");
                    }
                });
            }
            Err(_) => self.pending().flushing = false,
        }
    }

    /// Writes every count made so far. On failure they are kept for the next write.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.writing.lock().await;
        let (batch, dropped) = {
            let mut pending = self.pending();
            pending.since = None;
            pending.flushing = false;
            let dropped = std::mem::take(&mut pending.dropped);
            (
                std::mem::take(&mut pending.counts)
                    .into_values()
                    .collect::<Vec<_>>(),
                dropped,
            )
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "session reads were not counted: the store refused writes while the buffer was full"
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.store.add_session_reads(&batch).await;
        if written.is_err() {
            let mut pending = self.pending();
            for read in batch {
                pending.add(read);
            }
        }
        written
    }

    /// Counts not yet written (for tests and shutdown logs).
    pub fn unwritten(&self) -> usize {
        self.pending().counts.len()
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
    use crate::ids::TenantId;
    use crate::ports::HistoryStore;
    use chrono::{TimeZone, Utc};

    #[tokio::test]
    async fn reads_are_counted_per_key_and_hour_and_written_only_when_flushed() {
        let store = EmbeddedStore::in_memory().unwrap();
        let log = SessionReadLog::new(Arc::new(store.clone()));
        let tenant = TenantId::parse("acme").unwrap();
        let id = ConnectionId::generate();
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 10, 15, 0).unwrap();
        for (key, minutes) in [
            ("aaaaaaaaaaaa", 0),
            ("aaaaaaaaaaaa", 20),
            ("bbbbbbbbbbbb", 5),
        ] {
            log.count(SessionReads::one(
                tenant.clone(),
                id.clone(),
                key,
                at + chrono::Duration::minutes(minutes),
            ));
        }
        assert!(
            store
                .list_session_reads(&id, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "counting writes nothing"
        );
        assert_eq!(log.unwritten(), 2);
        log.flush().await.unwrap();
        log.count(SessionReads::one(tenant, id.clone(), "aaaaaaaaaaaa", at));
        log.flush().await.unwrap();
        let stored = store.list_session_reads(&id, None, 10).await.unwrap();
        let counts: Vec<(String, u64)> = stored
            .iter()
            .map(|k| (k.id.clone(), k.item.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("bbbbbbbbbbbb".to_string(), 1),
                ("aaaaaaaaaaaa".to_string(), 3)
            ]
        );
        assert_eq!(stored[1].item.last, at + chrono::Duration::minutes(20));
    }

    #[tokio::test]
    async fn a_full_buffer_is_written_in_the_background() {
        let store = EmbeddedStore::in_memory().unwrap();
        let log = SessionReadLog::new(Arc::new(store.clone()));
        let tenant = TenantId::parse("acme").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 10, 15, 0).unwrap();
        let ids: Vec<ConnectionId> = (0..FLUSH_AT).map(|_| ConnectionId::generate()).collect();
        for id in &ids {
            log.count(SessionReads::one(
                tenant.clone(),
                id.clone(),
                "aaaaaaaaaaaa",
                at,
            ));
        }
        for _ in 0..100 {
            if log.unwritten() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(log.unwritten(), 0);
        let last = store
            .list_session_reads(&ids[FLUSH_AT - 1], None, 1)
            .await
            .unwrap();
        assert_eq!(last[0].item.count, 1);
    }
}
