//! Open Twinfield sessions kept per connection and company, so repeated requests share one logon.
//!
//! A session lives on Twinfield's side until it has been idle for a while: every call on it, `KeepAlive`
//! included, starts the idle time again. Twinfield does not publish how long; the catalogue's
//! `lifetimes.session_idle_secs` says what the broker assumes (20 minutes by default, ASP.NET's default
//! session timeout). So a pooled session is never trusted on that figure alone: when the broker has not
//! touched it for [`PoolSettings::recheck_after`], it calls `KeepAlive` before handing it out again,
//! which both proves the session alive and restarts its idle time; a session Twinfield has dropped
//! is replaced by a new logon.
//!
//! The pool is per process (each warm Lambda instance has its own): at worst one logon per instance,
//! not one per request. An entry belongs to one grant: a reconnect (new grant) or a change of
//! credential kind opens a new session. Callers hold an entry's lock while they log on, so concurrent
//! requests for one connection and company open one session (single flight).

use super::TwinfieldSession;
use crate::ids::ConnectionId;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Hand a pooled session out without a `KeepAlive` when the broker touched it this recently.
    pub recheck_after: Duration,
    /// Sessions kept before the pool starts again empty (a bound on memory, not a policy).
    pub max_entries: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            recheck_after: Duration::seconds(30),
            max_entries: 10_000,
        }
    }
}

/// Which session: one per connection and selected company (`None`: the user's default company).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub connection: ConnectionId,
    pub company: Option<String>,
}

/// A session in the pool, and what it was opened with.
#[derive(Debug, Clone)]
pub struct PooledSession {
    pub session: TwinfieldSession,
    /// When the grant the session was opened under began; another grant needs another session.
    pub grant_started_at: DateTime<Utc>,
    /// `oauth2` or `legacy`: how it was opened.
    pub logon: &'static str,
    /// When the broker last opened it or kept it alive.
    pub touched_at: DateTime<Utc>,
}

/// One entry's slot; its lock is held while a session is checked or opened.
pub type PoolSlot = Arc<tokio::sync::Mutex<Option<PooledSession>>>;

#[derive(Debug, Default)]
pub struct SessionPool {
    settings: PoolSettings,
    slots: Mutex<HashMap<PoolKey, PoolSlot>>,
}

impl SessionPool {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            slots: Mutex::default(),
        }
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// The slot for a key, created empty on first use.
    pub fn slot(&self, key: PoolKey) -> PoolSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= self.settings.max_entries && !slots.contains_key(&key) {
            // Slots in use stay alive through their Arc; only the pool forgets them.
            slots.clear();
        }
        slots.entry(key).or_default().clone()
    }

    /// Drops every session of a connection (it was disconnected, disabled or needs a reconnect).
    pub fn forget(&self, connection: &ConnectionId) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|key, _| &key.connection != connection);
    }
}

impl PooledSession {
    /// Whether it can serve a request under this grant and credential kind.
    pub fn serves(&self, grant_started_at: DateTime<Utc>, logon: &str) -> bool {
        self.grant_started_at == grant_started_at && self.logon == logon
    }

    /// Whether it must be kept alive (and so proven alive) before it is handed out again.
    pub fn needs_recheck(&self, now: DateTime<Utc>, settings: PoolSettings) -> bool {
        now - self.touched_at >= settings.recheck_after || now < self.touched_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ServiceUrl;
    use crate::secret::SessionId;

    fn pooled(touched_at: DateTime<Utc>) -> PooledSession {
        PooledSession {
            session: TwinfieldSession {
                session_id: SessionId::new("s"),
                cluster_url: ServiceUrl::parse("https://c3.twinfield.com").unwrap(),
            },
            grant_started_at: touched_at,
            logon: "oauth2",
            touched_at,
        }
    }

    #[test]
    fn entries_are_per_connection_and_company_and_rechecked_when_stale() {
        let pool = SessionPool::default();
        let id = ConnectionId::generate();
        let key = |company: Option<&str>| PoolKey {
            connection: id.clone(),
            company: company.map(str::to_string),
        };
        assert!(Arc::ptr_eq(&pool.slot(key(None)), &pool.slot(key(None))));
        assert!(!Arc::ptr_eq(
            &pool.slot(key(None)),
            &pool.slot(key(Some("NL001")))
        ));
        pool.forget(&id);
        assert!(pool.slots.lock().unwrap().is_empty());

        let now = Utc::now();
        let p = pooled(now);
        let settings = PoolSettings::default();
        assert!(!p.needs_recheck(now + Duration::seconds(29), settings));
        assert!(p.needs_recheck(now + Duration::seconds(30), settings));
        assert!(
            p.needs_recheck(now - Duration::seconds(1), settings),
            "a clock going back rechecks"
        );
        assert!(p.serves(now, "oauth2"));
        assert!(
            !p.serves(now + Duration::seconds(1), "oauth2"),
            "another grant"
        );
        assert!(!p.serves(now, "legacy"));
    }
}
