//! Credentials: idempotent writes and exact reads, paging, what is due for refresh, and the versions a
//! day of rotation leaves in a secret.

use super::*;

contract!(
    a_repeated_credentials_write_is_idempotent_and_reads_are_exact,
    listing_pages_past_one_megabyte_and_a_hundred_items,
    due_for_refresh_pages_in_order_and_skips_what_is_not_due,
    a_day_of_exact_rotation_writes_at_most_100_versions_to_any_secret,
);

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
    let read = stored_credentials(&backend, &connection, &pointer)
        .await
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
    let got = stored_credentials(&backend, &connection, &read_second)
        .await
        .unwrap();
    assert_eq!(got.token_set().unwrap().access_token.expose(), "access-2");
    let got = stored_credentials(&backend, &connection, &pointer)
        .await
        .unwrap();
    assert_eq!(got.token_set().unwrap().access_token.expose(), "access-1");
    // Unknown versions and slots read as absent.
    let unknown = CredentialsPointer {
        slot: VaultSlot::B,
        write: WriteId::generate(),
    };
    assert!(stored_credentials(&backend, &connection, &unknown)
        .await
        .is_none());
    let unknown = CredentialsPointer {
        slot: VaultSlot::A,
        write: WriteId::generate(),
    };
    assert!(stored_credentials(&backend, &connection, &unknown)
        .await
        .is_none());
    // Disconnect removes them.
    backend
        .vault
        .delete_credentials(&connection.tenant, &connection.id)
        .await
        .unwrap();
    assert!(stored_credentials(&backend, &connection, &pointer)
        .await
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

/// What the vault holds for `connection` under `pointer`.
async fn stored_credentials(
    backend: &Backend,
    connection: &Connection,
    pointer: &CredentialsPointer,
) -> Option<Credentials> {
    backend
        .vault
        .get_credentials(&connection.tenant, &connection.id, pointer)
        .await
        .unwrap()
}
