//! The storage contract: every test here runs unchanged against both backends — the embedded store,
//! and the AWS adapters (the real aws-sdk clients) against moto server — and against the in-memory
//! store the core's unit tests use (`adapters::memory`), so that fake keeps the same semantics.

use broker_core::domain::*;
use broker_core::ids::{AppId, ConnectionId, LeaseOwner, TenantId, WriteId};
use broker_core::ports::*;
use broker_core::secret::{
    AccessToken, ClientSecret, LegacyAccessSecret, LegacyAccessToken, RefreshToken,
};
use broker_core::{Clock, CredentialKeeper, ManualClock};
use broker_tests::backends::Backend;
use broker_tests::vaults::RecordingVault;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::Arc;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::embedded()).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::aws().await).await;
                }
            )*
        }
        // The unit tests' in-memory store, held to the same contract.
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::memory()).await;
                }
            )*
        }
    };
}

contract!(
    thirty_two_tasks_race_for_one_lease_and_exactly_one_wins,
    an_expired_lease_is_taken_over_and_the_old_owner_is_fenced_off,
    a_stale_version_is_refused_and_its_transitions_are_not_written,
    a_state_value_is_consumed_at_most_once_under_concurrency,
    an_expired_state_is_refused_even_before_it_is_deleted,
    a_repeated_credentials_write_is_idempotent_and_reads_are_exact,
    listing_pages_past_one_megabyte_and_a_hundred_items,
    due_for_refresh_pages_in_order_and_skips_what_is_not_due,
    a_day_of_exact_rotation_writes_at_most_100_versions_to_any_secret,
    tenants_see_only_their_own_connections_and_keys,
    apps_and_client_secrets_round_trip,
    connect_links_are_found_by_token_hash_until_they_expire,
    the_awaiting_index_holds_exactly_the_connections_waiting_for_a_person,
    a_last_save_gives_the_lease_up_in_the_same_write,
    a_usage_counter_grants_up_to_its_limit_per_key_and_window,
    twenty_concurrent_takers_of_a_limit_of_ten_get_exactly_ten_units,
    a_deleted_app_and_its_client_secret_are_gone_and_its_id_can_be_registered_again,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn new_connection(tenant_id: &TenantId, created: DateTime<Utc>) -> Connection {
    let mut c = Connection::new(
        tenant_id.clone(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["finance@example.com"]).unwrap(),
        created,
    );
    c.display_name = Some("Acme B.V.".into());
    c
}

async fn insert(backend: &Backend, connection: &Connection) {
    backend
        .store
        .insert_connection(connection, &[])
        .await
        .expect("insert");
}

fn tokens(n: u32, now: DateTime<Utc>) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        access_expires_at: now + Duration::seconds(600),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        refresh_expires_at: Some(now + Duration::days(30)),
        scope: None,
        received_at: now,
    })
}

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
    let LeaseAttempt::Acquired(read_by_old) = backend
        .store
        .acquire_lease(&connection.id, &old, t0(), ttl)
        .await
        .unwrap()
    else {
        panic!("the first lease must be granted")
    };
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
    let LeaseAttempt::Acquired(read_by_new) = backend
        .store
        .acquire_lease(&connection.id, &new, later, ttl)
        .await
        .unwrap()
    else {
        panic!("{}: an expired lease must be taken over", backend.name)
    };
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
        .save_connection(&connection, Fence::Version, &[authorized.clone()])
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

async fn a_repeated_credentials_write_is_idempotent_and_reads_are_exact(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    let write = WriteId::generate();
    let creds = tokens(1, t0());
    for _ in 0..3 {
        backend
            .vault
            .put_credentials(
                &connection.tenant,
                &connection.id,
                VaultSlot::A,
                &write,
                &creds,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: a repeated write must succeed: {e}", backend.name));
    }
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write: write.clone(),
    };
    let read = backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &pointer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.token_set().unwrap().access_token.expose(), "access-1");
    if let Some(aws) = &backend.aws {
        let name = format!(
            "{}/tenants/acme/connections/{}/a",
            aws.secret_prefix, connection.id
        );
        let versions = aws
            .secrets
            .list_secret_version_ids()
            .secret_id(&name)
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        assert_eq!(
            versions.versions().len(),
            1,
            "a repeated write must not add a version"
        );
    }
    // A second version in the same slot; both are readable exactly, by write id.
    let second = WriteId::generate();
    backend
        .vault
        .put_credentials(
            &connection.tenant,
            &connection.id,
            VaultSlot::A,
            &second,
            &tokens(2, t0()),
        )
        .await
        .unwrap();
    let read_second = CredentialsPointer {
        slot: VaultSlot::A,
        write: second,
    };
    let got = backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &read_second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.token_set().unwrap().access_token.expose(), "access-2");
    let got = backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &pointer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.token_set().unwrap().access_token.expose(), "access-1");
    // Unknown versions and slots read as absent.
    let unknown = CredentialsPointer {
        slot: VaultSlot::B,
        write: WriteId::generate(),
    };
    assert!(backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &unknown)
        .await
        .unwrap()
        .is_none());
    let unknown = CredentialsPointer {
        slot: VaultSlot::A,
        write: WriteId::generate(),
    };
    assert!(backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &unknown)
        .await
        .unwrap()
        .is_none());
    // Disconnect removes them.
    backend
        .vault
        .delete_credentials(&connection.tenant, &connection.id)
        .await
        .unwrap();
    assert!(backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, &pointer)
        .await
        .unwrap()
        .is_none());
}

async fn listing_pages_past_one_megabyte_and_a_hundred_items(backend: Backend) {
    let acme = tenant("acme");
    // 260 connections of ~5 KB each: more than 100 items and more than DynamoDB's 1 MB page.
    let mut expected = Vec::new();
    for i in 0..260 {
        let mut c = new_connection(&acme, t0() + Duration::seconds(i));
        c.display_name = Some(format!("{i:04} {}", "x".repeat(5_000)));
        insert(&backend, &c).await;
        expected.push(c.id);
    }
    insert(&backend, &new_connection(&tenant("other"), t0())).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = backend
            .store
            .list_connections(&acme, PageRequest::after(100, cursor))
            .await
            .unwrap();
        assert!(page.items.len() <= 100);
        pages += 1;
        seen.extend(page.items.into_iter().map(|c| c.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 10, "{}: paging does not end", backend.name);
    }
    assert_eq!(
        seen, expected,
        "{}: every connection exactly once, oldest first",
        backend.name
    );
    let bad = backend
        .store
        .list_connections(&acme, PageRequest::after(10, Some("not-a-cursor".into())))
        .await;
    assert_eq!(
        bad.unwrap_err(),
        StoreError::InvalidCursor,
        "{}",
        backend.name
    );
}

async fn due_for_refresh_pages_in_order_and_skips_what_is_not_due(backend: Backend) {
    let acme = tenant("acme");
    let now = t0() + Duration::hours(1);
    let mut due = Vec::new();
    for i in 0..230i64 {
        let mut c = new_connection(&acme, t0());
        insert(&backend, &c).await;
        // Spread over an hour before and after `now`; every third one has no refresh scheduled.
        c.next_refresh_at = match i % 3 {
            0 => None,
            _ => Some(now + Duration::seconds((i * 37 % 7200) - 5400)),
        };
        backend
            .store
            .save_connection(&c, Fence::Version, &[])
            .await
            .unwrap();
        if let Some(at) = c.next_refresh_at.filter(|at| *at <= now) {
            due.push((at, c.id.clone()));
        }
    }
    due.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = backend
            .store
            .due_for_refresh(now, PageRequest::after(40, cursor))
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|d| (d.next_refresh_at, d.id)));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(due.len() > 100);
    assert_eq!(
        seen, due,
        "{}: exactly the due connections, earliest first",
        backend.name
    );
    // Taking one out of the schedule removes it from the index.
    let first = backend
        .store
        .get_connection(&due[0].1)
        .await
        .unwrap()
        .unwrap();
    let mut unscheduled = first.clone();
    unscheduled.next_refresh_at = None;
    backend
        .store
        .save_connection(&unscheduled, Fence::Version, &[])
        .await
        .unwrap();
    let page = backend
        .store
        .due_for_refresh(now, PageRequest::first(1000))
        .await
        .unwrap();
    assert_eq!(page.items.len(), due.len() - 1);
    assert!(page.items.iter().all(|d| d.id != first.id));
}

async fn a_day_of_exact_rotation_writes_at_most_100_versions_to_any_secret(backend: Backend) {
    let clock = ManualClock::starting_at(t0());
    let vault = RecordingVault::around(backend.vault.clone(), Arc::new(clock.clone()));
    let keeper = CredentialKeeper::new(backend.store.clone(), vault.clone());
    let mut connection = new_connection(&tenant("acme"), clock.now());
    insert(&backend, &connection).await;
    // Exact Online allows a new token 570 s after the previous one; a connection in continuous use
    // rotates at exactly that pace: 24 h / 570 s ≈ 152 rotations.
    let end = t0() + Duration::hours(24);
    let mut rotations = 0u32;
    while clock.now() < end {
        let target = CredentialKeeper::next_target(&connection);
        connection.last_refresh_at = Some(clock.now());
        connection = keeper
            .commit(
                connection,
                target,
                &tokens(rotations, clock.now()),
                Fence::Version,
                &[],
            )
            .await
            .unwrap();
        rotations += 1;
        clock.advance(Duration::seconds(570));
    }
    assert_eq!(rotations, 152);
    let writes = vault.writes();
    assert_eq!(writes.len(), 2, "both slots are used");
    for ((_, slot), times) in &writes {
        // Any 24 h window: here the whole run is one window.
        assert!(
            times.len() <= 100,
            "{}: slot {slot:?} got {} writes in 24 h",
            backend.name,
            times.len()
        );
        println!(
            "{}: slot {} took {} writes in 24 h",
            backend.name,
            slot.as_str(),
            times.len()
        );
    }
    // The latest credentials are the current ones.
    let current = keeper.current(&connection).await.unwrap().unwrap();
    assert_eq!(
        current.token_set().unwrap().access_token.expose(),
        format!("access-{}", rotations - 1)
    );
    if let Some(aws) = &backend.aws {
        // Cross-check with Secrets Manager itself: versions per secret.
        for slot in ["a", "b"] {
            let name = format!(
                "{}/tenants/acme/connections/{}/{slot}",
                aws.secret_prefix, connection.id
            );
            let mut versions = 0;
            let mut token = None;
            loop {
                let out = aws
                    .secrets
                    .list_secret_version_ids()
                    .secret_id(&name)
                    .include_deprecated(true)
                    .set_next_token(token)
                    .send()
                    .await
                    .unwrap();
                versions += out.versions().len();
                // moto answers the last page with an empty next token.
                token = out
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            assert!(versions <= 100, "secret {slot} holds {versions} versions");
        }
    }
}

async fn tenants_see_only_their_own_connections_and_keys(backend: Backend) {
    let (acme, other) = (tenant("acme"), tenant("globex"));
    for t in [&acme, &other] {
        backend
            .store
            .insert_tenant(&Tenant::new(t.clone(), t.as_str(), t0()).unwrap())
            .await
            .unwrap();
    }
    assert!(matches!(
        backend
            .store
            .insert_tenant(&Tenant::new(acme.clone(), "again", t0()).unwrap())
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        backend
            .store
            .get_tenant(&acme)
            .await
            .unwrap()
            .unwrap()
            .display_name,
        "acme"
    );
    let theirs = new_connection(&other, t0());
    insert(&backend, &theirs).await;
    assert!(backend
        .store
        .get_tenant_connection(&acme, &theirs.id)
        .await
        .unwrap()
        .is_none());
    assert!(backend
        .store
        .get_tenant_connection(&other, &theirs.id)
        .await
        .unwrap()
        .is_some());
    assert!(backend
        .store
        .list_connections(&acme, PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());

    let key = ApiKeyRecord::generate(acme.clone(), "ci", ApiKeyScope::default(), t0());
    backend.store.insert_api_key(&key.record).await.unwrap();
    let found = backend
        .store
        .get_api_key(&key.record.prefix)
        .await
        .unwrap()
        .unwrap();
    assert!(found.accepts(&key.plaintext));
    assert!(
        !backend
            .store
            .revoke_api_key(&other, &key.record.prefix, t0())
            .await
            .unwrap(),
        "another tenant cannot revoke it"
    );
    assert!(backend
        .store
        .list_api_keys(&other)
        .await
        .unwrap()
        .is_empty());
    assert!(backend
        .store
        .revoke_api_key(&acme, &key.record.prefix, t0())
        .await
        .unwrap());
    let revoked = backend
        .store
        .get_api_key(&key.record.prefix)
        .await
        .unwrap()
        .unwrap();
    assert!(!revoked.accepts(&key.plaintext));
    assert_eq!(backend.store.list_api_keys(&acme).await.unwrap().len(), 1);
}

async fn apps_and_client_secrets_round_trip(backend: Backend) {
    let acme = tenant("acme");
    let app = OAuthApp {
        tenant: acme.clone(),
        id: AppId::parse("acumatica-main").unwrap(),
        settings: ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
            tenant: "Company".into(),
            refresh_tokens: None,
        },
        client_id: "0A1B2C3D-0000-0000-0000-000000000000@Company".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec!["api".into(), "offline_access".into()],
        created_at: t0(),
    };
    app.validate().unwrap();
    backend.store.put_app(&app).await.unwrap();
    assert_eq!(
        backend.store.get_app(&acme, &app.id).await.unwrap(),
        Some(app.clone())
    );
    assert!(backend
        .store
        .get_app(&tenant("globex"), &app.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        backend.store.list_apps(&acme).await.unwrap(),
        vec![app.clone()]
    );
    backend
        .vault
        .put_client_secret(&acme, &app.id, &ClientSecret::new("first"))
        .await
        .unwrap();
    backend
        .vault
        .put_client_secret(&acme, &app.id, &ClientSecret::new("rotated"))
        .await
        .unwrap();
    let secret = backend
        .vault
        .get_client_secret(&acme, &app.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.expose(), "rotated");
    assert!(backend
        .vault
        .get_client_secret(&tenant("globex"), &app.id)
        .await
        .unwrap()
        .is_none());
}

async fn connect_links_are_found_by_token_hash_until_they_expire(backend: Backend) {
    let connection = new_connection(&tenant("acme"), t0());
    let (token, key) = new_one_time_secret();
    let link = ConnectLink {
        tenant: connection.tenant.clone(),
        connection: connection.id.clone(),
        purpose: AuthorizationPurpose::Reconnect,
        generation: 3,
        created_at: t0(),
        expires_at: t0() + Duration::days(7),
    };
    backend.store.put_link(&key, &link).await.unwrap();
    for _ in 0..2 {
        // Reading does not consume: a person may open the link again after denying consent.
        let found = backend
            .store
            .get_link(&OneTimeKey::of(&token), t0() + Duration::days(6))
            .await
            .unwrap();
        assert!(
            matches!(found, Consumed::Fresh(ref l) if *l == link),
            "{}: {found:?}",
            backend.name
        );
    }
    let late = backend
        .store
        .get_link(&key, t0() + Duration::days(7))
        .await
        .unwrap();
    assert!(
        matches!(late, Consumed::Expired),
        "{}: {late:?}",
        backend.name
    );
    let (other, _) = new_one_time_secret();
    let unknown = backend
        .store
        .get_link(&OneTimeKey::of(&other), t0())
        .await
        .unwrap();
    assert!(matches!(unknown, Consumed::Unknown));
    assert!(matches!(
        backend.store.put_link(&key, &link).await,
        Err(StoreError::AlreadyExists(_))
    ));
}

/// The notifier's reminders page over the connections only a person can move on: reconnect
/// required, disabled, or working on legacy credentials; longest waiting first; nothing scheduled.
async fn the_awaiting_index_holds_exactly_the_connections_waiting_for_a_person(backend: Backend) {
    let acme = tenant("acme");
    let keeper = CredentialKeeper::new(backend.store.clone(), backend.vault.clone());
    let mut expected = Vec::new();
    for i in 0..45i64 {
        let mut c = new_connection(&acme, t0());
        insert(&backend, &c).await;
        let at = t0() + Duration::minutes(90 - 2 * i);
        let system = || Actor::System("test".into());
        let transition = c.apply(StatusEvent::Authorized, system(), t0()).unwrap();
        c = backend
            .store
            .save_connection(&c, Fence::Version, &[transition])
            .await
            .unwrap();
        let event = match i % 5 {
            0 => Some(StatusEvent::ReconnectNeeded(ReconnectReason::new(
                ReconnectKind::GrantRevoked,
                "invalid_grant",
            ))),
            1 => Some(StatusEvent::ProviderDisabled {
                reason: "Blocked".into(),
            }),
            _ => None,
        };
        match (i % 5, event) {
            (_, Some(event)) => {
                let transition = c.apply(event, system(), at).unwrap();
                c.next_refresh_at = None;
                backend
                    .store
                    .save_connection(&c, Fence::Version, &[transition])
                    .await
                    .unwrap();
                expected.push((at, c.id.clone()));
            }
            (2, None) => {
                c.next_refresh_at = Some(at);
                backend
                    .store
                    .save_connection(&c, Fence::Version, &[])
                    .await
                    .unwrap();
            }
            (3, None) => {
                // Twinfield's legacy credentials: working, never refreshed, waiting for a reconnect.
                let legacy = Credentials::TwinfieldLegacy(LegacyTwinfieldCredentials {
                    access_token: LegacyAccessToken::new(format!("legacy-access-{i}")),
                    access_secret: LegacyAccessSecret::new(format!("legacy-secret-{i}")),
                });
                let target = CredentialKeeper::next_target(&c);
                let saved = keeper
                    .commit(c, target, &legacy, Fence::Version, &[])
                    .await
                    .unwrap();
                assert!(saved.legacy_credentials);
                expected.push((t0(), saved.id.clone()));
            }
            _ => {}
        }
    }
    expected.sort();
    let listed = |limit: u32| {
        let store = backend.store.clone();
        async move {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .awaiting_person(PageRequest::after(limit, cursor))
                    .await
                    .unwrap();
                seen.extend(page.items.into_iter().map(|a| (a.since, a.id)));
                cursor = page.next_cursor;
                if cursor.is_none() {
                    return seen;
                }
            }
        }
    };
    assert_eq!(expected.len(), 27);
    assert_eq!(
        listed(7).await,
        expected,
        "{}: exactly the waiting connections, longest waiting first",
        backend.name
    );

    // A save that changes nothing about the wait (new recipients) keeps its place.
    let (since, id) = expected.last().unwrap().clone();
    let mut waiting = backend.store.get_connection(&id).await.unwrap().unwrap();
    waiting.recipients = Recipients::parse(&["ops@example.com"]).unwrap();
    waiting.updated_at = t0() + Duration::days(1);
    backend
        .store
        .save_connection(&waiting, Fence::Version, &[])
        .await
        .unwrap();
    assert_eq!(listed(100).await.last(), Some(&(since, id.clone())));

    // Reconnected: scheduled again, and out of the awaiting index.
    let mut waiting = backend.store.get_connection(&id).await.unwrap().unwrap();
    let transition = waiting
        .apply(
            StatusEvent::Authorized,
            Actor::EndUser("someone".into()),
            t0() + Duration::days(1),
        )
        .unwrap();
    waiting.next_refresh_at = Some(t0() + Duration::days(2));
    backend
        .store
        .save_connection(&waiting, Fence::Version, &[transition])
        .await
        .unwrap();
    let now_listed = listed(100).await;
    assert_eq!(now_listed.len(), expected.len() - 1, "{}", backend.name);
    assert!(now_listed.iter().all(|(_, listed)| *listed != id));

    // A cursor of another listing does not page this one.
    let due = backend
        .store
        .due_for_refresh(t0() + Duration::days(3), PageRequest::first(1))
        .await
        .unwrap();
    assert!(matches!(
        backend
            .store
            .awaiting_person(PageRequest::after(5, due.next_cursor))
            .await,
        Err(StoreError::InvalidCursor)
    ));
}

/// A refresh's last save releases its lease in the same write (with or without transitions); an
/// owner whose lease was taken over cannot, and leaves the new owner's lease alone.
async fn a_last_save_gives_the_lease_up_in_the_same_write(backend: Backend) {
    let ttl = Duration::seconds(30);
    for with_transition in [false, true] {
        let connection = new_connection(&tenant("acme"), t0());
        insert(&backend, &connection).await;
        let (old, new) = (LeaseOwner::generate(), LeaseOwner::generate());
        let LeaseAttempt::Acquired(read_by_old) = backend
            .store
            .acquire_lease(&connection.id, &old, t0(), ttl)
            .await
            .unwrap()
        else {
            panic!("the first lease must be granted")
        };
        let LeaseAttempt::Acquired(mut mine) = backend
            .store
            .acquire_lease(&connection.id, &new, t0() + Duration::seconds(31), ttl)
            .await
            .unwrap()
        else {
            panic!("an expired lease must be taken over")
        };
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

fn usage_key(tenant_name: &str, app: &str, user: &str, counter: UsageCounter) -> UsageKey {
    UsageKey::new(
        tenant(tenant_name),
        AppId::parse(app).unwrap(),
        user,
        counter,
    )
    .unwrap()
}

async fn a_usage_counter_grants_up_to_its_limit_per_key_and_window(backend: Backend) {
    let store = &backend.store;
    let name = backend.name;
    let key = usage_key("acme", "exact-nl", "U-1", UsageCounter::TokenCalls);
    let day = UsageWindow::utc_day(t0());
    assert_eq!(store.units_used(&key, day).await.unwrap(), 0, "{name}");
    for used in 1..=3 {
        assert_eq!(
            store.take_unit(&key, day, 3).await.unwrap(),
            UsageTake::Granted { used },
            "{name}"
        );
    }
    assert_eq!(
        store.take_unit(&key, day, 3).await.unwrap(),
        UsageTake::Refused { used: 3 },
        "{name}: the limit holds"
    );
    assert_eq!(store.units_used(&key, day).await.unwrap(), 3, "{name}");
    // The same user spelled as Exact may spell it elsewhere is the same counter.
    let same = usage_key("acme", "exact-nl", " u-1 ", UsageCounter::TokenCalls);
    assert_eq!(
        store.take_unit(&same, day, 3).await.unwrap(),
        UsageTake::Refused { used: 3 },
        "{name}"
    );
    // A higher limit for the same window goes on from the count.
    assert_eq!(
        store.take_unit(&key, day, 4).await.unwrap(),
        UsageTake::Granted { used: 4 },
        "{name}"
    );
    // Windows are independent: the next day starts at zero, and the old day keeps its count.
    let next_day = UsageWindow::utc_day(t0() + Duration::days(1));
    assert_eq!(
        store.take_unit(&key, next_day, 3).await.unwrap(),
        UsageTake::Granted { used: 1 },
        "{name}"
    );
    assert_eq!(store.units_used(&key, day).await.unwrap(), 4, "{name}");
    // Keys are independent: another user, app, tenant or counter has a count of its own.
    for other in [
        usage_key("acme", "exact-nl", "U-2", UsageCounter::TokenCalls),
        usage_key("acme", "exact-be", "U-1", UsageCounter::TokenCalls),
        usage_key("globex", "exact-nl", "U-1", UsageCounter::TokenCalls),
        usage_key("acme", "exact-nl", "U-1", UsageCounter::FailedTokenCalls),
    ] {
        assert_eq!(
            store.take_unit(&other, day, 3).await.unwrap(),
            UsageTake::Granted { used: 1 },
            "{name}: {other:?}"
        );
    }
    // A user id is the last part of its key: one holding the separator cannot reach another's count.
    let tricky = usage_key(
        "acme",
        "exact-nl",
        "U-1#token_calls",
        UsageCounter::TokenCalls,
    );
    assert_eq!(store.units_used(&tricky, day).await.unwrap(), 0, "{name}");
    // Nothing is granted under a limit of zero, and nothing is counted.
    let unused = usage_key("acme", "exact-nl", "U-3", UsageCounter::TokenCalls);
    assert_eq!(
        store.take_unit(&unused, day, 0).await.unwrap(),
        UsageTake::Refused { used: 0 },
        "{name}"
    );
    assert_eq!(store.units_used(&unused, day).await.unwrap(), 0, "{name}");
    // Hours are windows too.
    let hour = UsageWindow::utc_hour(t0());
    let failures = key.with_counter(UsageCounter::FailedTokenCalls);
    store.take_unit(&failures, hour, 10).await.unwrap();
    store
        .take_unit(&failures, hour.previous(), 10)
        .await
        .unwrap();
    store
        .take_unit(&failures, hour.previous(), 10)
        .await
        .unwrap();
    assert_eq!(
        store.units_used(&failures, hour).await.unwrap(),
        1,
        "{name}"
    );
    assert_eq!(
        store.units_used(&failures, hour.previous()).await.unwrap(),
        2,
        "{name}"
    );
    // On DynamoDB each window is an item that TTL removes a day after the window ends.
    if let Some(aws) = &backend.aws {
        let items = aws
            .dynamodb
            .scan()
            .table_name(&aws.table)
            .filter_expression("entity = :usage")
            .expression_attribute_values(
                ":usage",
                aws_sdk_dynamodb::types::AttributeValue::S("usage".into()),
            )
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let ttl_of_day = items
            .iter()
            .find(|item| {
                item.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("USAGE#acme#exact-nl#u-1")
                    && item
                        .get("sk")
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|sk| sk.starts_with("token_calls#2026-11-01T00:00:00"))
            })
            .and_then(|item| item.get("ttl"))
            .and_then(|v| v.as_n().ok())
            .cloned();
        assert_eq!(
            ttl_of_day,
            Some(day.expires_at().timestamp().to_string()),
            "{items:?}"
        );
    }
}

async fn twenty_concurrent_takers_of_a_limit_of_ten_get_exactly_ten_units(backend: Backend) {
    let key = usage_key("acme", "exact-nl", "U-1", UsageCounter::TokenCalls);
    let day = UsageWindow::utc_day(t0());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = backend.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.take_unit(&key, day, 10).await.expect("take")
        }));
    }
    let mut granted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            UsageTake::Granted { used } => granted.push(used),
            UsageTake::Refused { used } => {
                assert_eq!(used, 10, "{}", backend.name);
                refused += 1;
            }
        }
    }
    granted.sort_unstable();
    assert_eq!(
        granted,
        (1..=10).collect::<Vec<u32>>(),
        "{}: exactly ten takers are granted, each its own unit",
        backend.name
    );
    assert_eq!(refused, 10, "{}", backend.name);
    assert_eq!(
        backend.store.units_used(&key, day).await.unwrap(),
        10,
        "{}",
        backend.name
    );
}

async fn a_deleted_app_and_its_client_secret_are_gone_and_its_id_can_be_registered_again(
    backend: Backend,
) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let app = |t: &TenantId, id: &str| OAuthApp {
        tenant: t.clone(),
        id: AppId::parse(id).unwrap(),
        settings: ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        client_id: "exact-client".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    let (gone, kept, theirs) = (
        app(&acme, "exact-nl"),
        app(&acme, "exact-be"),
        app(&globex, "exact-nl"),
    );
    for a in [&gone, &kept, &theirs] {
        backend.store.put_app(a).await.unwrap();
        backend
            .vault
            .put_client_secret(
                &a.tenant,
                &a.id,
                &ClientSecret::new(format!("{}-{}", a.tenant, a.id)),
            )
            .await
            .unwrap();
    }

    assert!(backend.store.delete_app(&acme, &gone.id).await.unwrap());
    backend
        .vault
        .delete_client_secret(&acme, &gone.id)
        .await
        .unwrap();
    assert!(backend
        .store
        .get_app(&acme, &gone.id)
        .await
        .unwrap()
        .is_none());
    assert!(backend
        .vault
        .get_client_secret(&acme, &gone.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        backend.store.list_apps(&acme).await.unwrap(),
        vec![kept.clone()]
    );
    // Another app of the tenant, and the other tenant's app of the same id, are untouched.
    assert_eq!(
        backend.store.get_app(&globex, &theirs.id).await.unwrap(),
        Some(theirs.clone())
    );
    let secret = |t: &TenantId, a: &OAuthApp| {
        let vault = backend.vault.clone();
        let (t, id) = (t.clone(), a.id.clone());
        async move {
            vault
                .get_client_secret(&t, &id)
                .await
                .unwrap()
                .map(|s| s.expose().to_string())
        }
    };
    assert_eq!(
        secret(&globex, &theirs).await.as_deref(),
        Some("globex-exact-nl")
    );
    assert_eq!(secret(&acme, &kept).await.as_deref(), Some("acme-exact-be"));

    // Deleting again is not an error, and says there was nothing.
    assert!(!backend.store.delete_app(&acme, &gone.id).await.unwrap());
    backend
        .vault
        .delete_client_secret(&acme, &gone.id)
        .await
        .unwrap();

    // The id is free again, with a new secret (Secrets Manager restores the secret it had scheduled
    // for deletion, and the new value becomes current).
    backend.store.put_app(&gone).await.unwrap();
    backend
        .vault
        .put_client_secret(&acme, &gone.id, &ClientSecret::new("registered-again"))
        .await
        .unwrap();
    assert_eq!(
        backend.store.get_app(&acme, &gone.id).await.unwrap(),
        Some(gone.clone())
    );
    assert_eq!(
        secret(&acme, &gone).await.as_deref(),
        Some("registered-again")
    );
}
