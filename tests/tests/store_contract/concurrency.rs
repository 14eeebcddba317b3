//! Leases, versions and states under concurrency: one winner, fencing of an old owner, stale versions
//! refused, a state consumed at most once, and a last save that gives its lease up.

use super::*;

contract!(
    thirty_two_tasks_race_for_one_lease_and_exactly_one_wins,
    an_expired_lease_is_taken_over_and_the_old_owner_is_fenced_off,
    a_stale_version_is_refused_and_its_transitions_are_not_written,
    a_state_value_is_consumed_at_most_once_under_concurrency,
    an_expired_state_is_refused_even_before_it_is_deleted,
    a_last_save_gives_the_lease_up_in_the_same_write,
);

async fn thirty_two_tasks_race_for_one_lease_and_exactly_one_wins(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    insert(&backend, &connection).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = backend.store.clone();
        let id = connection.id.clone();
        tasks.push(tokio::spawn(async move {
            let owner = LeaseOwner::generate();
            let attempt = store
                .acquire_lease(&id, &owner, t0(), Duration::seconds(60))
                .await
                .expect("acquire");
            (owner, attempt)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (owner, attempt) = task.await.unwrap();
        match attempt {
            LeaseAttempt::Acquired(c) => winners.push((owner, c)),
            LeaseAttempt::Busy { until } => assert_eq!(until, t0() + Duration::seconds(60)),
            LeaseAttempt::Missing => panic!("{}: the connection went missing", backend.name),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{}: exactly one task must win the lease",
        backend.name
    );
    let (owner, leased) = &winners[0];
    assert_eq!(leased.version(), 1, "taking the lease bumps the version");
    assert!(leased.lease_held_by(owner, t0()));
    let stored = backend
        .store
        .get_connection(&connection.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.lease().as_ref().map(|l| &l.owner), Some(owner));
}

async fn an_expired_lease_is_taken_over_and_the_old_owner_is_fenced_off(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    insert(&backend, &connection).await;
    let ttl = Duration::seconds(30);
    let (old, new) = (LeaseOwner::generate(), LeaseOwner::generate());
    let read_by_old = acquired(
        &backend,
        &connection.id,
        &old,
        t0(),
        ttl,
        "the first lease must be granted",
    )
    .await;
    // Still held: nobody else gets it.
    let busy = backend
        .store
        .acquire_lease(&connection.id, &new, t0() + Duration::seconds(29), ttl)
        .await
        .unwrap();
    assert!(
        matches!(busy, LeaseAttempt::Busy { until } if until == t0() + ttl),
        "{}: {busy:?}",
        backend.name
    );
    // Expired: taken over.
    let later = t0() + Duration::seconds(31);
    let read_by_new = acquired(
        &backend,
        &connection.id,
        &new,
        later,
        ttl,
        &format!("{}: an expired lease must be taken over", backend.name),
    )
    .await;
    // The old owner's write is refused, fenced by lease or by version alike.
    let mut stale = read_by_old.clone();
    stale.display_name = Some("written by the old owner".into());
    let by_lease = backend
        .store
        .save_connection(&stale, Fence::Lease(&old), &[])
        .await;
    assert_eq!(
        by_lease.unwrap_err(),
        StoreError::Conflict,
        "{}",
        backend.name
    );
    let by_version = backend
        .store
        .save_connection(&stale, Fence::Version, &[])
        .await;
    assert_eq!(
        by_version.unwrap_err(),
        StoreError::Conflict,
        "{}",
        backend.name
    );
    // Releasing a lease that was taken over leaves the new owner's lease alone.
    backend
        .store
        .release_lease(&connection.id, &old)
        .await
        .unwrap();
    // The new owner writes fine, and its lease survives its own save.
    let mut fresh = read_by_new.clone();
    fresh.display_name = Some("written by the new owner".into());
    let saved = backend
        .store
        .save_connection(&fresh, Fence::Lease(&new), &[])
        .await
        .unwrap();
    assert_eq!(saved.version(), read_by_new.version() + 1);
    assert!(
        saved.lease_held_by(&new, later),
        "{}: a save must not drop the lease",
        backend.name
    );
    let stored = backend
        .store
        .get_connection(&connection.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.display_name.as_deref(),
        Some("written by the new owner")
    );
    // After release, anyone may take it at once.
    backend
        .store
        .release_lease(&connection.id, &new)
        .await
        .unwrap();
    let third = LeaseOwner::generate();
    let attempt = backend
        .store
        .acquire_lease(&connection.id, &third, later, ttl)
        .await
        .unwrap();
    assert!(
        matches!(attempt, LeaseAttempt::Acquired(_)),
        "{}: {attempt:?}",
        backend.name
    );
    let missing = backend
        .store
        .acquire_lease(&ConnectionId::generate(), &third, later, ttl)
        .await
        .unwrap();
    assert!(matches!(missing, LeaseAttempt::Missing));
}

async fn a_stale_version_is_refused_and_its_transitions_are_not_written(backend: Backend) {
    let mut connection = new_connection(&tenant("acme"), t0());
    let created = StatusTransition {
        from: StatusKind::NotConnected,
        to: StatusKind::NotConnected,
        at: t0(),
        actor: Actor::ApiKey("abc".into()),
        reason: "created".into(),
    };
    backend
        .store
        .insert_connection(&connection, std::slice::from_ref(&created))
        .await
        .unwrap();
    let again = backend.store.insert_connection(&connection, &[]).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{}: {again:?}",
        backend.name
    );
    let stale_copy = connection.clone();
    let authorized = connection
        .apply(StatusEvent::Authorized, Actor::EndUser("u1".into()), t0())
        .unwrap();
    let saved = backend
        .store
        .save_connection(
            &connection,
            Fence::Version,
            std::slice::from_ref(&authorized),
        )
        .await
        .unwrap();
    assert_eq!(saved.version(), 1);
    assert_eq!(saved.status(), ConnectionStatus::Connected);

    let mut stale = stale_copy;
    let refused = stale
        .apply(
            StatusEvent::Disconnect,
            Actor::Operator("ops".into()),
            t0() + Duration::seconds(1),
        )
        .unwrap();
    let err = backend
        .store
        .save_connection(&stale, Fence::Version, &[refused])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict, "{}", backend.name);

    let history = backend
        .store
        .list_transitions(&connection.id, PageRequest::first(50))
        .await
        .unwrap();
    assert_eq!(
        history.items,
        vec![created, authorized],
        "{}: only committed transitions are kept",
        backend.name
    );
    let stored = backend
        .store
        .get_connection(&connection.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert_eq!(stored.version(), 1);
}

fn pending(
    connection: &Connection,
    expires_at: DateTime<Utc>,
) -> (OneTimeKey, PendingAuthorization) {
    let (_state, key) = new_one_time_secret();
    let (_cookie, binding) = new_one_time_secret();
    let pending = PendingAuthorization {
        tenant: connection.tenant.clone(),
        connection: connection.id.clone(),
        purpose: AuthorizationPurpose::Connect,
        pkce_verifier: Some(broker_core::secret::PkceVerifier::new("verifier-value")),
        nonce: Some("nonce-1".into()),
        browser_binding: binding,
        created_at: t0(),
        expires_at,
    };
    (key, pending)
}

async fn a_state_value_is_consumed_at_most_once_under_concurrency(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    let (key, pending) = pending(&connection, t0() + Duration::minutes(10));
    backend.store.put_pending(&key, &pending).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = backend.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.consume_pending(&key, t0()).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            Consumed::Fresh(p) => {
                fresh += 1;
                assert_eq!(p.connection, connection.id);
                assert_eq!(p.pkce_verifier.unwrap().expose(), "verifier-value");
                assert_eq!(p.browser_binding, pending.browser_binding);
            }
            Consumed::Unknown => {}
            Consumed::Expired => panic!("{}: not expired", backend.name),
        }
    }
    assert_eq!(
        fresh, 1,
        "{}: exactly one consumer gets the state",
        backend.name
    );
    let (unknown, _) = new_one_time_secret();
    let outcome = backend
        .store
        .consume_pending(&OneTimeKey::of(&unknown), t0())
        .await
        .unwrap();
    assert!(matches!(outcome, Consumed::Unknown));
}

async fn an_expired_state_is_refused_even_before_it_is_deleted(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    let (key, pending) = pending(&connection, t0() + Duration::minutes(10));
    backend.store.put_pending(&key, &pending).await.unwrap();
    let late = t0() + Duration::minutes(10);
    assert!(
        matches!(
            backend.store.consume_pending(&key, late).await.unwrap(),
            Consumed::Expired
        ),
        "{}",
        backend.name
    );
    assert!(
        matches!(
            backend.store.consume_pending(&key, t0()).await.unwrap(),
            Consumed::Unknown
        ),
        "{}",
        backend.name
    );
}

/// A refresh's last save releases its lease in the same write (with or without transitions); an
/// owner whose lease was taken over cannot, and leaves the new owner's lease alone.
async fn a_last_save_gives_the_lease_up_in_the_same_write(backend: Backend) {
    let ttl = Duration::seconds(30);
    for with_transition in [false, true] {
        let connection = new_connection(&tenant("acme"), t0());
        insert(&backend, &connection).await;
        let (old, new) = (LeaseOwner::generate(), LeaseOwner::generate());
        let read_by_old = acquired(
            &backend,
            &connection.id,
            &old,
            t0(),
            ttl,
            "the first lease must be granted",
        )
        .await;
        let mut mine = acquired(
            &backend,
            &connection.id,
            &new,
            t0() + Duration::seconds(31),
            ttl,
            "an expired lease must be taken over",
        )
        .await;
        let stale = read_by_old.clone().read_at_version(mine.version());
        assert!(
            matches!(
                backend
                    .store
                    .save_connection(&stale, Fence::LeaseReleased(&old), &[])
                    .await,
                Err(StoreError::Conflict)
            ),
            "{}: the old owner is fenced off",
            backend.name
        );
        mine.display_name = Some("refreshed".into());
        let transitions = if with_transition {
            vec![mine
                .apply(
                    StatusEvent::Authorized,
                    Actor::System("test".into()),
                    t0() + Duration::seconds(32),
                )
                .unwrap()]
        } else {
            Vec::new()
        };
        let saved = backend
            .store
            .save_connection(&mine, Fence::LeaseReleased(&new), &transitions)
            .await
            .unwrap();
        assert_eq!(saved.lease(), None, "{}", backend.name);
        assert_eq!(saved.version(), mine.version() + 1);
        let stored = backend
            .store
            .get_connection(&connection.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.lease(), None, "{}", backend.name);
        assert_eq!(stored.display_name.as_deref(), Some("refreshed"));
        // Free at once, long before the lease would have expired.
        let again = backend
            .store
            .acquire_lease(&connection.id, &old, t0() + Duration::seconds(33), ttl)
            .await
            .unwrap();
        assert!(
            matches!(again, LeaseAttempt::Acquired(_)),
            "{}: {again:?}",
            backend.name
        );
    }
}

/// The connection as read with a lease `owner` takes at `now`; `must` says why it must be granted.
async fn acquired(
    backend: &Backend,
    id: &ConnectionId,
    owner: &LeaseOwner,
    now: DateTime<Utc>,
    ttl: Duration,
    must: &str,
) -> Connection {
    match backend
        .store
        .acquire_lease(id, owner, now, ttl)
        .await
        .unwrap()
    {
        LeaseAttempt::Acquired(connection) => connection,
        _ => panic!("{must}"),
    }
}
