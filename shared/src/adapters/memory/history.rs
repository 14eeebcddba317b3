//! A connection's API changes and session-read counts, in memory. A change is recorded right after
//! its save succeeds, under the same lock order, so no reader sees one without the other for long;
//! the real backends write both atomically.

use super::*;
use crate::domain::{ConnectionChange, SessionReads};
use crate::ports::{HistoryStore, Keyed};

#[derive(Default)]
pub(super) struct History {
    /// Per connection: `(at, version of the write) → change`.
    changes: HashMap<ConnectionId, BTreeMap<(DateTime<Utc>, u64), ConnectionChange>>,
    /// Per connection: `(hour, key prefix) → count`.
    reads: HashMap<ConnectionId, BTreeMap<(DateTime<Utc>, String), SessionReads>>,
}

/// The newest `limit` entries at or before `until`, of a map ordered oldest first.
fn newest<K: Ord, T: Clone>(
    entries: Option<&BTreeMap<K, T>>,
    time: impl Fn(&K) -> DateTime<Utc>,
    id: impl Fn(&K) -> String,
    until: Option<DateTime<Utc>>,
    limit: u32,
) -> Vec<Keyed<T>> {
    entries
        .into_iter()
        .flatten()
        .rev()
        .filter(|(k, _)| until.is_none_or(|until| time(k) <= until))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(k, v)| Keyed {
            id: id(k),
            item: v.clone(),
        })
        .collect()
}

impl MemoryStore {
    fn history(&self) -> MutexGuard<'_, History> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn save_connection_change(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        change: &ConnectionChange,
    ) -> Result<Connection, StoreError> {
        let saved = self.save_connection(connection, fence, &[]).await?;
        self.history()
            .changes
            .entry(connection.id.clone())
            .or_default()
            .insert((change.at, saved.version()), change.clone());
        Ok(saved)
    }

    async fn list_changes(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<ConnectionChange>>, StoreError> {
        Ok(newest(
            self.history().changes.get(id),
            |(at, _)| *at,
            |(_, version)| format!("{version:020}"),
            until,
            limit,
        ))
    }

    async fn list_recent_transitions(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<StatusTransition>>, StoreError> {
        let sorted: BTreeMap<(DateTime<Utc>, u64), StatusTransition> = self
            .state()
            .transitions
            .get(id)
            .into_iter()
            .flatten()
            .map(|(seq, t)| ((t.at, *seq), t.clone()))
            .collect();
        Ok(newest(
            Some(&sorted),
            |(at, _)| *at,
            |(_, seq)| format!("{seq:020}"),
            until,
            limit,
        ))
    }

    async fn add_session_reads(&self, reads: &[SessionReads]) -> Result<(), StoreError> {
        let mut history = self.history();
        for read in reads {
            history
                .reads
                .entry(read.connection.clone())
                .or_default()
                .entry((read.hour, read.key_prefix.clone()))
                .and_modify(|stored| stored.absorb(read))
                .or_insert_with(|| read.clone());
        }
        Ok(())
    }

    async fn list_session_reads(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<SessionReads>>, StoreError> {
        Ok(newest(
            self.history().reads.get(id),
            |(hour, _)| *hour,
            |(_, prefix)| prefix.clone(),
            until,
            limit,
        ))
    }

    async fn list_connection_notices(
        &self,
        id: &ConnectionId,
    ) -> Result<Vec<NoticeRecord>, StoreError> {
        Ok(self
            .state()
            .notices
            .iter()
            .filter(|(_, notice)| &notice.connection == id)
            .map(|(key, notice)| notice.record(key))
            .collect())
    }
}
