//! A connection's story, newest first: its status transitions (who, when, why), the notices sent about
//! it, the changes made to it through the API, and the credentials handed out, counted per API key and
//! hour. One list, read the same way by the integration API (`GET /v1/connections/{id}/events`) and by
//! `broker-admin connection show`.
//!
//! # Paging
//!
//! Each kind of entry is its own listing in the store, each newest first. A page asks every listing for
//! `limit + 1` entries at or before the cursor's time, merges them by position (time, then kind, then
//! the entry's id: a total order) and keeps those after the cursor. A listing that answered in full may
//! hold more entries older than the oldest it returned, so nothing older than that entry is shown on
//! this page (the *horizon*); the next page starts there. A page can so come out shorter than `limit`
//! while more follows, never with an entry missing or shown twice. Notices are read whole: a
//! connection has few.
//!
//! The cursor is the URL-safe base64 of the last entry's position. Session-read counts sit at the
//! start of their hour, so their position never moves as reads are added: a count shown on one page
//! is not shown again on the next, though its number may have grown since.

mod reads;

pub use reads::SessionReadLog;

use crate::domain::{ConnectionChange, FieldChange, SessionReads, StatusTransition};
use crate::ids::ConnectionId;
use crate::notify::{NoticeOutcome, NoticeRecord, NoticeState};
use crate::ports::{Keyed, MetadataStore, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The entries a page holds by default, and at most.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// One entry of a connection's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEvent {
    /// A status change: `from`, `to`, `at`, `actor` (who), `reason` (why).
    Transition(StatusTransition),
    /// An email owed to the connection's people, and what became of it.
    Notice(NoticeEvent),
    /// Settings changed through the API: which key, which fields, from what to what.
    Change(ConnectionChange),
    /// Credentials handed out to one API key within one UTC hour.
    Sessions(SessionsEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeEvent {
    /// When it came to be owed.
    pub at: DateTime<Utc>,
    /// What it is about (`reconnect_required`, `warning_idle_expiry`, ...).
    pub notice: String,
    /// `pending`, `sending`, `sent`, `failed`, `unknown` (may or may not have gone out) or `skipped`.
    pub state: String,
    /// When it was sent, failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<DateTime<Utc>>,
    /// How many people it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<u32>,
    /// Why it failed, or why nothing was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl NoticeEvent {
    fn of(record: &NoticeRecord) -> Self {
        let subject = &record.subject;
        let mut event = Self {
            at: subject.created_at(),
            notice: subject
                .kind()
                .map_or("none", |kind| kind.as_str())
                .to_string(),
            state: String::new(),
            settled_at: None,
            recipients: None,
            detail: None,
        };
        event.state = match &record.state {
            NoticeState::Pending => "pending".into(),
            NoticeState::Sending { .. } => "sending".into(),
            NoticeState::Settled(outcome) => {
                match outcome {
                    NoticeOutcome::Sent { at, recipients, .. } => {
                        event.settled_at = Some(*at);
                        event.recipients = Some(*recipients);
                    }
                    NoticeOutcome::Failed { at, error, .. } => {
                        event.settled_at = Some(*at);
                        event.detail = Some(error.clone());
                    }
                    NoticeOutcome::DeliveryUnknown { at } => event.settled_at = Some(*at),
                    NoticeOutcome::Skipped { at, why } => {
                        event.settled_at = Some(*at);
                        event.detail = Some(why.clone());
                    }
                }
                outcome.label().into()
            }
        };
        event
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsEvent {
    /// The start of the UTC hour counted.
    pub at: DateTime<Utc>,
    /// The API key, by its prefix.
    pub key_prefix: String,
    pub count: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl From<&SessionReads> for SessionsEvent {
    fn from(reads: &SessionReads) -> Self {
        Self {
            at: reads.hour,
            key_prefix: reads.key_prefix.clone(),
            count: reads.count,
            first: reads.first,
            last: reads.last,
        }
    }
}

impl HistoryEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Transition(t) => t.at,
            Self::Notice(n) => n.at,
            Self::Change(c) => c.at,
            Self::Sessions(s) => s.at,
        }
    }

    /// Among entries of the same time, newest first lists a notice before the transition that
    /// caused it.
    fn rank(&self) -> u8 {
        match self {
            Self::Sessions(_) => 0,
            Self::Change(_) => 1,
            Self::Transition(_) => 2,
            Self::Notice(_) => 3,
        }
    }
}

/// Where an entry stands in the history: a total order, compared newest first by the pager.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Position {
    at: DateTime<Utc>,
    kind: u8,
    id: String,
}

impl Position {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(cursor: &str) -> Result<Self, StoreError> {
        let json = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| StoreError::InvalidCursor)?;
        serde_json::from_slice(&json).map_err(|_| StoreError::InvalidCursor)
    }
}

struct Entry {
    position: Position,
    event: HistoryEvent,
}

fn entries<T>(keyed: Vec<Keyed<T>>, event: impl Fn(&T) -> HistoryEvent) -> Vec<Entry> {
    keyed
        .into_iter()
        .map(|k| {
            let event = event(&k.item);
            Entry {
                position: Position {
                    at: event.at(),
                    kind: event.rank(),
                    id: k.id,
                },
                event,
            }
        })
        .collect()
}

/// One page of a connection's history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryPage {
    pub events: Vec<HistoryEvent>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of `connection`'s history after `cursor` (from the page before), at most `limit` entries
/// (1..=[`MAX_LIMIT`]). The caller has checked that whoever asks may see the connection.
pub async fn connection_history(
    store: &dyn MetadataStore,
    connection: &ConnectionId,
    limit: u32,
    cursor: Option<&str>,
) -> Result<HistoryPage, StoreError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let after = cursor.map(Position::decode).transpose()?;
    let until = after.as_ref().map(|p| p.at);
    let mut fetch = limit + 1;
    loop {
        let (transitions, changes, reads, notices) = tokio::try_join!(
            store.list_recent_transitions(connection, until, fetch),
            store.list_changes(connection, until, fetch),
            store.list_session_reads(connection, until, fetch),
            store.list_connection_notices(connection),
        )?;
        let listings = [
            entries(transitions, |t| HistoryEvent::Transition(t.clone())),
            entries(changes, |c| HistoryEvent::Change(c.clone())),
            entries(reads, |r| HistoryEvent::Sessions(r.into())),
        ];
        let horizon = listings
            .iter()
            .filter(|l| l.len() == fetch as usize)
            .filter_map(|l| l.iter().map(|e| &e.position).min())
            .max()
            .cloned();
        let notices = notices
            .iter()
            .map(|n| Keyed {
                id: n.key.to_string(),
                item: NoticeEvent::of(n),
            })
            .collect();
        let mut merged: Vec<Entry> = listings
            .into_iter()
            .flatten()
            .chain(entries(notices, |n| HistoryEvent::Notice(n.clone())))
            .filter(|e| after.as_ref().is_none_or(|after| &e.position < after))
            .filter(|e| horizon.as_ref().is_none_or(|h| &e.position >= h))
            .collect();
        // Entries sharing the cursor's time filled a whole listing: ask for more.
        if merged.is_empty() && horizon.is_some() {
            fetch = fetch.saturating_mul(2);
            continue;
        }
        merged.sort_by(|a, b| b.position.cmp(&a.position));
        let more = merged.len() > limit as usize || horizon.is_some();
        merged.truncate(limit as usize);
        let next_cursor = more
            .then(|| merged.last().map(|e| e.position.encode()))
            .flatten();
        return Ok(HistoryPage {
            events: merged.into_iter().map(|e| e.event).collect(),
            next_cursor,
        });
    }
}

/// The fields a change names, as one line for people (`broker-admin`).
pub fn describe_fields(fields: &[FieldChange]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {} -> {}", f.field, f.from, f.to))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
    use crate::domain::{Actor, Connection, ProviderKind, Recipients, StatusEvent};
    use crate::ids::{AppId, TenantId};
    use crate::ports::{ConnectionStore, Fence, HistoryStore};
    use chrono::{Duration, TimeZone};

    /// Every page of the history, `limit` at a time.
    async fn all_pages(store: &EmbeddedStore, id: &ConnectionId, limit: u32) -> Vec<HistoryEvent> {
        let mut events = Vec::new();
        let mut cursor = None;
        loop {
            let page = connection_history(store, id, limit, cursor.as_deref())
                .await
                .unwrap();
            assert!(page.events.len() <= limit as usize);
            events.extend(page.events);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return events,
            }
        }
    }

    #[tokio::test]
    async fn pages_hold_every_entry_once_even_when_many_share_one_instant() {
        let store = EmbeddedStore::in_memory().unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let mut c = Connection::new(
            TenantId::parse("acme").unwrap(),
            AppId::parse("exact-nl").unwrap(),
            ProviderKind::ExactOnline,
            Recipients::default(),
            t0,
        );
        store.insert_connection(&c, &[]).await.unwrap();
        // Five transitions in one write, all at one instant: more than a page of one fetches.
        let at = t0 + Duration::minutes(1);
        let mut transitions = Vec::new();
        for _ in 0..5 {
            transitions.push(
                c.apply(StatusEvent::Authorized, Actor::EndUser("u".into()), at)
                    .unwrap(),
            );
        }
        c = store
            .save_connection(&c, Fence::Version, &transitions)
            .await
            .unwrap();
        for minutes in [1, 2] {
            let at = t0 + Duration::minutes(minutes);
            c = store
                .save_connection_change(
                    &c,
                    Fence::Version,
                    &ConnectionChange {
                        at,
                        actor: Actor::ApiKey("abcdefghijkl".into()),
                        fields: vec![],
                    },
                )
                .await
                .unwrap();
        }
        store
            .add_session_reads(&[SessionReads::one(
                c.tenant.clone(),
                c.id.clone(),
                "abcdefghijkl",
                at,
            )])
            .await
            .unwrap();

        let whole = all_pages(&store, &c.id, MAX_LIMIT).await;
        assert_eq!(whole.len(), 8);
        let kinds: Vec<u8> = whole.iter().map(HistoryEvent::rank).collect();
        // Newest first; at 09:01, the transitions before the change of that minute.
        assert_eq!(kinds, [1, 2, 2, 2, 2, 2, 1, 0]);
        assert!(whole.windows(2).all(|w| w[0].at() >= w[1].at()));
        for limit in [1, 2, 3] {
            assert_eq!(
                all_pages(&store, &c.id, limit).await,
                whole,
                "limit {limit}"
            );
        }
        assert_eq!(
            connection_history(&store, &c.id, 5, Some("not-a-cursor"))
                .await
                .unwrap_err(),
            StoreError::InvalidCursor
        );
    }
}
