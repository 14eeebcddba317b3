//! In-process caches that keep the warm session path to one small DynamoDB read.
//!
//! - **API keys** are cached for [`ApiSettings::key_cache_ttl`] (30 s by default) after they are read:
//!   a revocation takes effect on a warm instance within that time. A presented key is still checked
//!   against the cached hash in constant time on every request; unknown prefixes are not cached.
//! - **Unknown key prefixes** are remembered for the same 30 s (at most `max_cached` of them), so a
//!   client repeating a wrong key is refused without a store read each time.
//! - **Decrypted credentials** are cached under (connection id, credentials write id). A write id names
//!   one immutable vault version, so an entry can never hold other content than what that version holds;
//!   whether it is still *current* is decided by the connection read on every request (strongly
//!   consistent), whose credentials pointer names the current write id. Staleness is therefore bounded
//!   by that read: a refresh or disconnect elsewhere is seen by the very next request. Entries for
//!   replaced write ids are dropped when a newer one is stored.

use crate::domain::{ApiKeyPrefix, ApiKeyRecord, Credentials};
use crate::ids::{ConnectionId, WriteId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// How long a read API key record is trusted before it is read again (bounds revocation delay).
    pub key_cache_ttl: Duration,
    /// Entries kept per cache before the oldest half is dropped.
    pub max_cached: usize,
    /// How long a request may take when no platform says (off Lambda): the Lambda function's timeout,
    /// so a local run answers within the same bounds. On Lambda the invocation's deadline is used.
    pub request_budget: Duration,
}

impl ApiSettings {
    /// The defaults, with `BROKER_REQUEST_BUDGET_SECS` (1-900) as the request budget off Lambda.
    pub fn from_env() -> Self {
        let mut settings = Self::default();
        if let Some(secs) = std::env::var("BROKER_REQUEST_BUDGET_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            settings.request_budget = Duration::from_secs(secs.clamp(1, 900));
        }
        settings
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            key_cache_ttl: Duration::from_secs(30),
            max_cached: 10_000,
            request_budget: Duration::from_secs(25),
        }
    }
}

pub(super) struct KeyCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<ApiKeyPrefix, (ApiKeyRecord, Instant)>>,
    /// Prefixes no key has: refused without a store read for `ttl` after the first miss.
    pub(super) unknown: NegativeCache<ApiKeyPrefix>,
}

impl KeyCache {
    pub(super) fn new(settings: &ApiSettings) -> Self {
        Self {
            ttl: settings.key_cache_ttl,
            max: settings.max_cached,
            entries: Mutex::default(),
            unknown: NegativeCache::new(settings.key_cache_ttl, settings.max_cached),
        }
    }

    pub(super) fn get(&self, prefix: &ApiKeyPrefix) -> Option<ApiKeyRecord> {
        let entries = self.entries.lock().expect("key cache poisoned");
        entries
            .get(prefix)
            .filter(|(_, read_at)| read_at.elapsed() < self.ttl)
            .map(|(record, _)| record.clone())
    }

    pub(super) fn put(&self, record: ApiKeyRecord) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("key cache poisoned");
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, (_, read_at)| read_at.elapsed() < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(record.prefix.clone(), (record, Instant::now()));
    }
}

/// Keys recently looked up and not found, so repeated unknown keys (a misconfigured client, or traffic
/// meant to wear the store down) are refused without another store read. Bounded in size (cleared
/// when full: a flood of distinct keys costs what it cost before, never memory) and in time (a miss
/// is trusted for `ttl`, so something created meanwhile is found after at most that long).
pub(crate) struct NegativeCache<K> {
    ttl: Duration,
    max: usize,
    misses: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq> NegativeCache<K> {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            misses: Mutex::default(),
        }
    }

    /// Whether `key` missed within the last `ttl`.
    pub(crate) fn missed(&self, key: &K) -> bool {
        self.misses
            .lock()
            .expect("negative cache poisoned")
            .get(key)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub(crate) fn record_miss(&self, key: K) {
        if self.ttl.is_zero() {
            return;
        }
        let mut misses = self.misses.lock().expect("negative cache poisoned");
        if misses.len() >= self.max {
            misses.clear();
        }
        misses.insert(key, Instant::now());
    }
}

pub(super) struct CredentialsCache {
    max: usize,
    entries: Mutex<HashMap<ConnectionId, (WriteId, Credentials)>>,
}

impl CredentialsCache {
    pub(super) fn new(settings: &ApiSettings) -> Self {
        Self {
            max: settings.max_cached,
            entries: Mutex::default(),
        }
    }

    /// The credentials of `write`, if that is the version cached for the connection.
    pub(super) fn get(&self, connection: &ConnectionId, write: &WriteId) -> Option<Credentials> {
        let entries = self.entries.lock().expect("credentials cache poisoned");
        entries
            .get(connection)
            .filter(|(cached, _)| cached == write)
            .map(|(_, credentials)| credentials.clone())
    }

    pub(super) fn put(&self, connection: &ConnectionId, write: &WriteId, credentials: Credentials) {
        let mut entries = self.entries.lock().expect("credentials cache poisoned");
        if entries.len() >= self.max && !entries.contains_key(connection) {
            entries.clear();
        }
        entries.insert(connection.clone(), (write.clone(), credentials));
    }

    pub(super) fn forget(&self, connection: &ConnectionId) {
        self.entries
            .lock()
            .expect("credentials cache poisoned")
            .remove(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_cache_forgets_after_its_ttl_and_stays_bounded() {
        let cache = NegativeCache::new(Duration::from_millis(50), 3);
        cache.record_miss("a");
        assert!(cache.missed(&"a"));
        assert!(!cache.missed(&"b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!cache.missed(&"a"));
        for key in ["b", "c", "d", "e"] {
            cache.record_miss(key);
        }
        assert!(cache.misses.lock().unwrap().len() <= 3);
        assert!(cache.missed(&"e"));
        let off = NegativeCache::new(Duration::ZERO, 3);
        off.record_miss("a");
        assert!(!off.missed(&"a"));
    }
}
