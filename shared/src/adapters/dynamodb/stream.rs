//! What the table's stream tells the notifier: which new items are status transitions whose notices
//! are owed. The stream carries the items' table keys, which are this adapter's business; the notifier
//! sees only opaque [`NoticeKey`]s.

use super::keys::{PK, SK, TRANSITION_SK_PREFIX};
use crate::notify::NoticeKey;
use serde_json::Value;

/// The notice a stream record (one element of a Lambda event's `Records`) announces: present for the
/// INSERT of a status transition, absent for every other record (connection updates, leases, notices
/// settling) — the template's event filter already lets only transitions through; this is the check
/// that does not rely on it.
pub fn transition_notice(record: &Value) -> Option<NoticeKey> {
    let keys = &record["dynamodb"]["Keys"];
    let key = |name: &str| keys[name]["S"].as_str();
    match (record["eventName"].as_str(), key(PK), key(SK)) {
        (Some("INSERT"), Some(pk), Some(sk)) if sk.starts_with(TRANSITION_SK_PREFIX) => {
            Some(notice_key(pk, sk))
        }
        _ => None,
    }
}

/// The key of the notice held on the item with these table keys.
pub(super) fn notice_key(pk: &str, sk: &str) -> NoticeKey {
    NoticeKey::new(format!("{pk}|{sk}"))
}

/// The table keys of the item holding this notice, if the key is one of this store's.
pub(super) fn table_keys(key: &NoticeKey) -> Option<(&str, &str)> {
    key.as_str().split_once('|')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TRANSITION_SK: &str =
        "TRANSITION#2026-11-01T09:00:00.000000000Z#00000000000000000001#0000";

    fn record(event: &str, sk: &str) -> Value {
        json!({"eventName": event, "dynamodb": {"SequenceNumber": "1",
            "Keys": {"pk": {"S": "CONN#c1"}, "sk": {"S": sk}}}})
    }

    #[test]
    fn only_inserted_transitions_announce_a_notice() {
        let notice = transition_notice(&record("INSERT", TRANSITION_SK)).unwrap();
        assert_eq!(table_keys(&notice), Some(("CONN#c1", TRANSITION_SK)));
        assert_eq!(transition_notice(&record("INSERT", "CONN")), None);
        assert_eq!(transition_notice(&record("MODIFY", TRANSITION_SK)), None);
        assert_eq!(transition_notice(&json!({"eventName": "INSERT"})), None);
    }
}
