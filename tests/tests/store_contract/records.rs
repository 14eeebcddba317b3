//! Tenant isolation, apps and client secrets, connect links, and the index of connections waiting for
//! a person.

use super::*;

contract!(
    tenants_see_only_their_own_connections_and_keys,
    apps_and_client_secrets_round_trip,
    connect_links_are_found_by_token_hash_until_they_expire,
    the_awaiting_index_holds_exactly_the_connections_waiting_for_a_person,
);

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
            instance_per_connection: false,
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
