//! The status-change event: what EventBridge carries as `detail` and what a webhook receives as its
//! body. It names the connection and its statuses, never a credential: it is built only from a
//! [`StatusTransition`] and ids.

use crate::domain::{StatusKind, StatusTransition};
use crate::ids::{ConnectionId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// EventBridge `source` of every event the broker puts on its bus.
pub const EVENT_SOURCE: &str = "connection-broker";
/// EventBridge `detail-type` of a status change.
pub const DETAIL_TYPE: &str = "Connection Status Changed";
/// `type` in the body: lets a receiver that takes several kinds of webhook tell this one apart.
pub const EVENT_TYPE: &str = "connection.status_changed";

/// One status change of one connection, as integrators receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChangeEvent {
    /// Stable across repeated deliveries of the same change: receivers deduplicate on it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant: TenantId,
    pub connection: ConnectionId,
    pub from: StatusKind,
    pub to: StatusKind,
    /// Why, in words a person can read (the transition's reason; it never holds a secret).
    pub reason: String,
    /// When the status changed.
    pub time: DateTime<Utc>,
}

impl StatusChangeEvent {
    /// The event of a transition recorded under `outbox_key` (the store's stable key of the
    /// transition), or `None` for a transition that changes nothing (`from == to`).
    pub fn of(
        tenant: TenantId,
        connection: ConnectionId,
        outbox_key: &str,
        transition: &StatusTransition,
    ) -> Option<Self> {
        (transition.from != transition.to).then(|| Self {
            id: event_id(&connection, outbox_key),
            kind: EVENT_TYPE.to_string(),
            tenant,
            connection,
            from: transition.from,
            to: transition.to,
            reason: transition.reason.clone(),
            time: transition.at,
        })
    }

    /// The JSON body a webhook receives (and the EventBridge `detail`).
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("an event of ids, statuses, text and a time serializes")
    }
}

/// `evt_` and 32 hex digits derived from the transition's place in the store: the same transition
/// always gets the same id, whichever process delivers it and however often.
fn event_id(connection: &ConnectionId, outbox_key: &str) -> String {
    let digest = Sha256::digest(format!("{connection}\n{outbox_key}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// Whether a transition is an event at all: the broker records some transitions that keep the
/// status (a refresh failing again), which are history but not changes.
pub fn is_status_change(transition: &StatusTransition) -> bool {
    transition.from != transition.to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Actor;
    use chrono::TimeZone;

    fn transition(from: StatusKind, to: StatusKind) -> StatusTransition {
        StatusTransition {
            from,
            to,
            at: Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap(),
            actor: Actor::System("token-refresh".into()),
            reason: "the provider refused the refresh token".into(),
        }
    }

    #[test]
    fn the_id_is_stable_per_transition_and_differs_between_transitions() {
        let (tenant, connection) = (TenantId::parse("acme").unwrap(), ConnectionId::generate());
        let t = transition(StatusKind::Connected, StatusKind::ReconnectRequired);
        let a = StatusChangeEvent::of(tenant.clone(), connection.clone(), "k1", &t).unwrap();
        let again = StatusChangeEvent::of(tenant.clone(), connection.clone(), "k1", &t).unwrap();
        let other = StatusChangeEvent::of(tenant, connection, "k2", &t).unwrap();
        assert_eq!(a.id, again.id);
        assert_ne!(a.id, other.id);
        assert!(a.id.starts_with("evt_") && a.id.len() == 36, "{}", a.id);
    }

    #[test]
    fn the_body_has_the_documented_fields_and_no_more() {
        let t = transition(StatusKind::Connected, StatusKind::ReconnectRequired);
        let event = StatusChangeEvent::of(
            TenantId::parse("acme").unwrap(),
            ConnectionId::generate(),
            "k",
            &t,
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(&event.body()).unwrap();
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "connection",
                "from",
                "id",
                "reason",
                "tenant",
                "time",
                "to",
                "type"
            ]
        );
        assert_eq!(body["from"], "connected");
        assert_eq!(body["to"], "reconnect_required");
        assert_eq!(body["type"], EVENT_TYPE);
    }

    #[test]
    fn a_transition_that_keeps_the_status_is_no_event() {
        let t = transition(StatusKind::RefreshFailing, StatusKind::RefreshFailing);
        assert!(StatusChangeEvent::of(
            TenantId::parse("acme").unwrap(),
            ConnectionId::generate(),
            "k",
            &t
        )
        .is_none());
    }
}
