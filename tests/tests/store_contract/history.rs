//! The history's records: a change saved with its connection (or not at all), session-read counts
//! that add up, and listings newest first up to a time.

use super::*;

contract!(
    a_change_is_recorded_with_its_save_and_not_without,
    session_reads_add_up_per_key_and_hour,
    history_listings_are_newest_first_up_to_a_time,
);

fn change(at: DateTime<Utc>, to: &str) -> ConnectionChange {
    ConnectionChange {
        at,
        actor: Actor::ApiKey("abcdefghijkl".into()),
        fields: vec![FieldChange {
            field: "display_name".into(),
            from: serde_json::Value::Null,
            to: to.into(),
        }],
    }
}

async fn a_change_is_recorded_with_its_save_and_not_without(backend: Backend) {
    let store = &backend.store;
    let mut c = new_connection(&tenant("acme"), t0());
    insert(&backend, &c).await;
    c.display_name = Some("Renamed".into());
    let saved = store
        .save_connection_change(&c, Fence::Version, &change(t0(), "Renamed"))
        .await
        .unwrap();
    assert_eq!(saved.version(), 1);
    // A stale copy is refused, and its change is not recorded.
    let refused = store
        .save_connection_change(
            &c,
            Fence::Version,
            &change(t0() + Duration::seconds(1), "Stale"),
        )
        .await;
    assert_eq!(refused.unwrap_err(), StoreError::Conflict);
    // Under a lease: fenced by its owner, and released by the save.
    let owner = LeaseOwner::generate();
    let LeaseAttempt::Acquired(leased) = store
        .acquire_lease(&c.id, &owner, t0(), Duration::seconds(30))
        .await
        .unwrap()
    else {
        panic!("the lease is free");
    };
    let released = store
        .save_connection_change(
            &leased,
            Fence::LeaseReleased(&owner),
            &change(t0() + Duration::seconds(2), "Leased"),
        )
        .await
        .unwrap();
    assert!(released.lease().is_none());
    let stored = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!((stored.version(), stored.lease()), (3, None));
    assert_eq!(stored.display_name.as_deref(), Some("Renamed"));
    let changes = store.list_changes(&c.id, None, 10).await.unwrap();
    let said: Vec<&serde_json::Value> = changes.iter().map(|k| &k.item.fields[0].to).collect();
    assert_eq!(said, ["Leased", "Renamed"]);
    let missing = new_connection(&tenant("acme"), t0());
    assert!(matches!(
        store
            .save_connection_change(&missing, Fence::Version, &change(t0(), "x"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store
        .list_changes(&missing.id, None, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn session_reads_add_up_per_key_and_hour(backend: Backend) {
    let store = &backend.store;
    let c = new_connection(&tenant("acme"), t0());
    insert(&backend, &c).await;
    let read = |key: &str, minutes: i64| {
        SessionReads::one(
            c.tenant.clone(),
            c.id.clone(),
            key,
            t0() + Duration::minutes(minutes),
        )
    };
    store
        .add_session_reads(&[read("aaaaaaaaaaaa", 30), read("bbbbbbbbbbbb", 10)])
        .await
        .unwrap();
    // A later batch with an earlier first read (another process's) and a later last one.
    let mut batch = read("aaaaaaaaaaaa", 5);
    batch.absorb(&read("aaaaaaaaaaaa", 50));
    store
        .add_session_reads(&[batch, read("aaaaaaaaaaaa", 70)])
        .await
        .unwrap();
    let stored = store.list_session_reads(&c.id, None, 10).await.unwrap();
    let seen: Vec<(String, DateTime<Utc>, u64, i64, i64)> = stored
        .iter()
        .map(|k| {
            let r = &k.item;
            (
                k.id.clone(),
                r.hour,
                r.count,
                (r.first - t0()).num_minutes(),
                (r.last - t0()).num_minutes(),
            )
        })
        .collect();
    let ten = t0() + Duration::hours(1);
    assert_eq!(
        seen,
        [
            ("aaaaaaaaaaaa".to_string(), ten, 1, 70, 70),
            ("bbbbbbbbbbbb".to_string(), t0(), 1, 10, 10),
            ("aaaaaaaaaaaa".to_string(), t0(), 3, 5, 50),
        ]
    );
    assert_eq!(stored[0].item.tenant, c.tenant);
}

async fn history_listings_are_newest_first_up_to_a_time(backend: Backend) {
    let store = &backend.store;
    let mut c = new_connection(&tenant("acme"), t0());
    insert(&backend, &c).await;
    for minutes in 1..=4 {
        let at = t0() + Duration::minutes(minutes);
        let transition = c
            .apply(StatusEvent::Authorized, Actor::EndUser("u".into()), at)
            .unwrap();
        c = store
            .save_connection(&c, Fence::Version, &[transition])
            .await
            .unwrap();
        c = store
            .save_connection_change(&c, Fence::Version, &change(at, &minutes.to_string()))
            .await
            .unwrap();
    }
    let until = Some(t0() + Duration::minutes(3));
    let transitions = store
        .list_recent_transitions(&c.id, until, 2)
        .await
        .unwrap();
    let times: Vec<i64> = transitions
        .iter()
        .map(|k| (k.item.at - t0()).num_minutes())
        .collect();
    assert_eq!(times, [3, 2], "newest first, the bound included");
    assert!(
        transitions[0].id > transitions[1].id,
        "ids order entries as the store does"
    );
    let changes = store.list_changes(&c.id, until, 10).await.unwrap();
    let said: Vec<&serde_json::Value> = changes.iter().map(|k| &k.item.fields[0].to).collect();
    assert_eq!(said, ["3", "2", "1"]);
    assert_eq!(
        store
            .list_recent_transitions(&c.id, None, 10)
            .await
            .unwrap()
            .len(),
        4
    );
}
