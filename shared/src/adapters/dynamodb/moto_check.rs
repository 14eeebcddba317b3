//! THROWAWAY: checks against a moto server on 127.0.0.1:5055. Not to be committed.

use super::keys::*;
use super::DynamoStore;
use crate::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use crate::domain::*;
use crate::ids::*;
use crate::ports::*;
use crate::secret::{AccessToken, ClientSecret};
use aws_config::{BehaviorVersion, Region};
use chrono::{Duration, TimeZone, Utc};

async fn config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(std::env::var("MOTO_ENDPOINT").unwrap_or("http://127.0.0.1:5055".into()))
        .region(Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .load()
        .await
}

fn connection(tenant: &str, at: chrono::DateTime<Utc>) -> Connection {
    Connection::new(
        TenantId::parse(tenant).unwrap(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["a@example.com"]).unwrap(),
        at,
    )
}

#[tokio::test]
#[ignore]
async fn against_moto() {
    let config = config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("check-{}", std::process::id());
    DynamoStore::create_table(&client, &table).await.unwrap();
    DynamoStore::create_table(&client, &table).await.unwrap(); // idempotent
    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    println!("ttl: {:?}", ttl.time_to_live_description());
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    for index in described.table().unwrap().global_secondary_indexes() {
        println!("index {:?} {:?}", index.index_name(), index.projection());
    }
    let store = DynamoStore::new(client.clone(), &table);

    let t0 =
        Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::nanoseconds(123_456_789);
    let c = connection("acme", t0);
    // Saving a connection never inserted: NotFound, on both paths.
    let r = store.save_connection(&c, Fence::Version, &[]).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    let tr = StatusTransition {
        from: StatusKind::NotConnected,
        to: StatusKind::Connected,
        at: t0,
        actor: Actor::System("x".into()),
        reason: "r".into(),
    };
    let r = store
        .save_connection(&c, Fence::Version, std::slice::from_ref(&tr))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    store
        .insert_connection(&c, std::slice::from_ref(&tr))
        .await
        .unwrap();
    assert_eq!(store.get_connection(&c.id).await.unwrap().unwrap(), c);

    // Lease with nanosecond times: Busy until exact.
    let (a, b) = (LeaseOwner::generate(), LeaseOwner::generate());
    let LeaseAttempt::Acquired(leased) = store
        .acquire_lease(&c.id, &a, t0, Duration::seconds(30))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(leased.version, 1);
    assert_eq!(
        leased.lease.as_ref().unwrap().expires_at,
        t0 + Duration::seconds(30)
    );
    let busy = store
        .acquire_lease(
            &c.id,
            &b,
            t0 + Duration::seconds(30) - Duration::nanoseconds(1),
            Duration::seconds(30),
        )
        .await
        .unwrap();
    assert!(
        matches!(busy, LeaseAttempt::Busy { until } if until == t0 + Duration::seconds(30)),
        "{busy:?}"
    );
    // Exactly at expiry: taken over.
    let took = store
        .acquire_lease(&c.id, &b, t0 + Duration::seconds(30), Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        matches!(took, LeaseAttempt::Acquired(ref c) if c.version == 2),
        "{took:?}"
    );
    let LeaseAttempt::Acquired(by_b) = took else {
        panic!()
    };

    // Save with transitions under lease: the returned connection keeps the lease and version + 1.
    let mut next = by_b.clone();
    next.next_refresh_at = Some(t0 + Duration::minutes(5));
    let saved = store
        .save_connection(&next, Fence::Lease(&b), std::slice::from_ref(&tr))
        .await
        .unwrap();
    assert_eq!(saved.version, 3);
    assert_eq!(saved.lease, by_b.lease);
    // Tenant is fenced.
    let mut moved = saved.clone();
    moved.tenant = TenantId::parse("globex").unwrap();
    assert_eq!(
        store
            .save_connection(&moved, Fence::Version, &[])
            .await
            .unwrap_err(),
        StoreError::Conflict
    );
    // A released lease shows in the result of a version-fenced save with transitions.
    store.release_lease(&c.id, &b).await.unwrap();
    let saved2 = store
        .save_connection(&saved, Fence::Version, std::slice::from_ref(&tr))
        .await
        .unwrap();
    assert_eq!((saved2.version, saved2.lease.clone()), (4, None));
    let history = store
        .list_transitions(&c.id, PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(history.items.len(), 2);
    let rest = store
        .list_transitions(&c.id, PageRequest::after(2, history.next_cursor))
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next_cursor), (1, None));

    // Due index: exact times, cursor past a smaller due_by.
    let due = store
        .due_for_refresh(t0 + Duration::minutes(5), PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        due.items,
        vec![DueConnection {
            id: c.id.clone(),
            tenant: c.tenant.clone(),
            next_refresh_at: t0 + Duration::minutes(5)
        }]
    );
    let not_yet = store
        .due_for_refresh(
            t0 + Duration::minutes(5) - Duration::nanoseconds(1),
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert!(not_yet.items.is_empty());
    let mut others = Vec::new();
    for i in 0..3 {
        let mut o = connection("acme", t0 + Duration::seconds(i));
        o.next_refresh_at = Some(t0 + Duration::minutes(i + 10));
        store.insert_connection(&o, &[]).await.unwrap();
        others.push(o);
    }
    let first = store
        .due_for_refresh(t0 + Duration::hours(1), PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let past = store
        .due_for_refresh(t0, PageRequest::after(2, first.next_cursor.clone()))
        .await
        .unwrap();
    assert!(past.items.is_empty() && past.next_cursor.is_none());
    let second = store
        .due_for_refresh(
            t0 + Duration::hours(1),
            PageRequest::after(2, first.next_cursor),
        )
        .await
        .unwrap();
    assert_eq!(
        (second.items.len(), second.next_cursor.is_none()),
        (2, true)
    );

    // Listing: exact page boundary gives no cursor; another tenant's cursor is refused.
    let page = store
        .list_connections(&c.tenant, PageRequest::first(4))
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_cursor.is_none()), (4, true));
    let page = store
        .list_connections(&c.tenant, PageRequest::first(3))
        .await
        .unwrap();
    let cursor = page.next_cursor.unwrap();
    let other = store
        .list_connections(
            &TenantId::parse("globex").unwrap(),
            PageRequest::after(3, Some(cursor)),
        )
        .await;
    assert_eq!(other.unwrap_err(), StoreError::InvalidCursor);

    // Pending authorization at the exact expiry boundary.
    let (_, key) = new_one_time_secret();
    let (_, binding) = new_one_time_secret();
    let pending = PendingAuthorization {
        tenant: c.tenant.clone(),
        connection: c.id.clone(),
        purpose: AuthorizationPurpose::Connect,
        pkce_verifier: None,
        nonce: None,
        browser_binding: binding,
        created_at: t0,
        expires_at: t0 + Duration::minutes(10),
    };
    store.put_pending(&key, &pending).await.unwrap();
    assert!(matches!(
        store.put_pending(&key, &pending).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let item = client
        .get_item()
        .table_name(&table)
        .key(PK, super::records::s(state_pk(&key)))
        .key(SK, super::records::s(STATE_SK))
        .send()
        .await
        .unwrap();
    println!(
        "state item ttl={:?} expires_at={:?}",
        item.item().unwrap().get(TTL),
        item.item().unwrap().get(EXPIRES_AT)
    );
    let just_before = store
        .consume_pending(&key, t0 + Duration::minutes(10) - Duration::nanoseconds(1))
        .await
        .unwrap();
    assert!(matches!(just_before, Consumed::Fresh(_)));

    // API keys.
    let k = ApiKeyRecord::generate(c.tenant.clone(), "ci", ApiKeyScope::default(), t0).record;
    store.insert_api_key(&k).await.unwrap();
    assert!(matches!(
        store.insert_api_key(&k).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(store
        .revoke_api_key(&c.tenant, &k.prefix, t0)
        .await
        .unwrap());
    assert!(store
        .revoke_api_key(&c.tenant, &k.prefix, t0 + Duration::days(1))
        .await
        .unwrap());
    assert_eq!(
        store
            .get_api_key(&k.prefix)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(t0),
        "the first revocation stays"
    );
    assert_eq!(store.list_api_keys(&c.tenant).await.unwrap().len(), 1);

    // Vault: same write id, other content.
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let vault = SecretsManagerVault::new(
        secrets.clone(),
        VaultNaming {
            prefix: format!("check-{}", std::process::id()),
            kms_key_id: None,
        },
    );
    let write = WriteId::generate();
    let creds = |v: &str| {
        Credentials::OAuth2(TokenSet {
            access_token: AccessToken::new(v),
            access_expires_at: t0,
            refresh_token: None,
            refresh_expires_at: None,
            scope: None,
            received_at: t0,
        })
    };
    vault
        .put_credentials(&c.tenant, &c.id, VaultSlot::B, &write, &creds("one"))
        .await
        .unwrap();
    let reused = vault
        .put_credentials(&c.tenant, &c.id, VaultSlot::B, &write, &creds("two"))
        .await;
    println!("reused: {reused:?}");
    let name = format!(
        "check-{}/tenants/acme/connections/{}/b",
        std::process::id(),
        c.id
    );
    let described = secrets
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .unwrap();
    println!("tags: {:?}", described.tags());
    vault.delete_credentials(&c.tenant, &c.id).await.unwrap();
    vault.delete_credentials(&c.tenant, &c.id).await.unwrap(); // again: fine
    let after = vault
        .put_credentials(
            &c.tenant,
            &c.id,
            VaultSlot::B,
            &WriteId::generate(),
            &creds("three"),
        )
        .await;
    println!("put after delete: {after:?}");
    let app = AppId::parse("exact-nl").unwrap();
    assert!(vault
        .get_client_secret(&c.tenant, &app)
        .await
        .unwrap()
        .is_none());
    vault
        .put_client_secret(&c.tenant, &app, &ClientSecret::new("s1"))
        .await
        .unwrap();
    secrets
        .put_secret_value()
        .secret_id(format!(
            "check-{}/tenants/acme/apps/exact-nl/client_secret",
            std::process::id()
        ))
        .secret_string("by-hand")
        .send()
        .await
        .unwrap();
    assert_eq!(
        vault
            .get_client_secret(&c.tenant, &app)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "by-hand"
    );
}

#[tokio::test]
#[ignore]
async fn rotation_timing() {
    let config = config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("timing-{}", std::process::id());
    DynamoStore::create_table(&client, &table).await.unwrap();
    let store = std::sync::Arc::new(DynamoStore::new(client.clone(), &table));
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let vault = std::sync::Arc::new(SecretsManagerVault::new(
        secrets,
        VaultNaming {
            prefix: format!("timing-{}", std::process::id()),
            kms_key_id: None,
        },
    ));
    let keeper = crate::CredentialKeeper::new(store.clone(), vault.clone());
    let t0 = Utc::now();
    let mut c = connection("acme", t0);
    store.insert_connection(&c, &[]).await.unwrap();
    let started = std::time::Instant::now();
    for i in 0..152 {
        let target = crate::CredentialKeeper::next_target(&c);
        let creds = Credentials::OAuth2(TokenSet {
            access_token: AccessToken::new(format!("a{i}")),
            access_expires_at: t0,
            refresh_token: None,
            refresh_expires_at: None,
            scope: None,
            received_at: t0,
        });
        let t = std::time::Instant::now();
        vault
            .put_credentials(&c.tenant, &c.id, target.slot, &target.write, &creds)
            .await
            .unwrap();
        let put = t.elapsed();
        let t = std::time::Instant::now();
        c = keeper
            .commit(c, target, &creds, Fence::Version, &[])
            .await
            .unwrap();
        let _ = (put, t);
    }
    println!("total {:?}", started.elapsed());
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    for slot in ["a", "b"] {
        let name = format!(
            "timing-{}/tenants/acme/connections/{}/{slot}",
            std::process::id(),
            c.id
        );
        let out = secrets
            .list_secret_version_ids()
            .secret_id(&name)
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        println!(
            "slot {slot}: {} versions, next_token {:?}",
            out.versions().len(),
            out.next_token()
        );
    }
    let current = keeper.current(&c).await.unwrap().unwrap();
    assert_eq!(current.token_set().unwrap().access_token.expose(), "a151");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn consume_stress() {
    let config = config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("stress-{}", std::process::id());
    DynamoStore::create_table(&client, &table).await.unwrap();
    let store = std::sync::Arc::new(DynamoStore::new(client.clone(), &table));
    let t0 = Utc::now();
    let c = connection("acme", t0);
    let mut bad = 0;
    for round in 0..40 {
        let (_, key) = new_one_time_secret();
        let (_, binding) = new_one_time_secret();
        let pending = PendingAuthorization {
            tenant: c.tenant.clone(),
            connection: c.id.clone(),
            purpose: AuthorizationPurpose::Connect,
            pkce_verifier: None,
            nonce: None,
            browser_binding: binding,
            created_at: t0,
            expires_at: t0 + Duration::minutes(10),
        };
        store.put_pending(&key, &pending).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store.consume_pending(&key, t0).await
            }));
        }
        let mut fresh = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Consumed::Fresh(_)) => fresh += 1,
                Ok(Consumed::Unknown) => {}
                other => println!("round {round}: {other:?}"),
            }
        }
        if fresh != 1 {
            bad += 1;
            println!("round {round}: {fresh} fresh");
        }
    }
    assert_eq!(bad, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn lease_stress() {
    let config = config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("lease-stress-{}", std::process::id());
    DynamoStore::create_table(&client, &table).await.unwrap();
    let store = std::sync::Arc::new(DynamoStore::new(client.clone(), &table));
    let t0 = Utc::now();
    let mut bad = 0;
    for round in 0..30 {
        let c = connection("acme", t0);
        store.insert_connection(&c, &[]).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let store = store.clone();
            let id = c.id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .acquire_lease(&id, &LeaseOwner::generate(), t0, Duration::seconds(60))
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(LeaseAttempt::Acquired(_)) => won += 1,
                Ok(LeaseAttempt::Busy { .. }) => {}
                other => println!("round {round}: {other:?}"),
            }
        }
        if won != 1 {
            bad += 1;
            println!("round {round}: {won} winners");
        }
    }
    assert_eq!(bad, 0);
}
