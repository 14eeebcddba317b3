//! The broker when AWS misbehaves: throttling, HTTP 500, reset connections and timeouts from DynamoDB,
//! Secrets Manager and KMS, injected by the harness's fault proxy between the SDK clients and moto, at
//! every step of a refresh. After the fault clears, every connection is `connected` with tokens the
//! provider accepts, and no refresh token was presented twice (the simulator counts presentations).

use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::ids::{ConnectionId, TenantId};
use broker_core::ports::{Fence, VaultError};
use broker_core::providers::{Catalogue, HttpSettings, ProviderHttp};
use broker_core::refresh::{EngineError, EngineSettings, Outcome, OutcomeKind, Trigger};
use broker_tests::aws_faults::{Fault, FaultProxy, FaultRule};
use broker_tests::backends::Backend;
use broker_tests::vaults::{HookedVault, VaultHooks};
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{FaultAction, Provider, SimulatorHandle};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const EXACT_CLIENT: &str = "exact-client";
const SECRET: &str = "client-secret-value";

/// The marker save (its record holds a refresh in flight) and the metadata switch (it clears it), as
/// they appear in the body of a DynamoDB save, whose `data` is JSON inside JSON.
const MARKER_SAVE: &str = r#"refresh_in_flight\":{"#;
const SWITCH_SAVE: &str = r#"refresh_in_flight\":null"#;
const LEASE_ACQUIRE: &str = "SET #owner = :owner";
const LEASE_RELEASE: &str = "REMOVE #owner, #until";
const VAULT_WRITES: &str = "secretsmanager.PutSecretValue|secretsmanager.CreateSecret";
const SAVES: &str = "dynamodb.UpdateItem|dynamodb.TransactWriteItems";

struct World {
    sim: SimulatorHandle,
    stores: Stores,
    clock: Arc<dyn Clock>,
    catalogue: Catalogue,
    tenant: TenantId,
    faults: Option<Arc<FaultProxy>>,
    app: OAuthApp,
}

fn settings() -> EngineSettings {
    EngineSettings {
        call_timeout: std::time::Duration::from_secs(5),
        wait_for_other_worker: std::time::Duration::from_secs(5),
        store_retry_for: std::time::Duration::from_secs(3),
        ..EngineSettings::default()
    }
}

impl World {
    async fn new(backend: Backend) -> Self {
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();
        let sim = broker_tests::world::start_simulator(Some(start), false).await;
        sim.register_exact_client(broker_tests::world::registration(
            EXACT_CLIENT,
            SECRET,
            REDIRECT,
        ));
        sim.update_knobs(|k| k.hang_secs = 8);
        let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
        let stores = backend.stores();
        let tenant = broker_tests::world::add_tenant(&stores, "acme", "Acme", Utc::now()).await;
        let app = broker_tests::world::exact_nl_app(
            &tenant,
            "exact-nl",
            EXACT_CLIENT,
            REDIRECT,
            Utc::now(),
        );
        broker_tests::world::register_app(&stores, &app, SECRET).await;
        let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
        Self {
            sim,
            stores,
            clock,
            catalogue,
            tenant,
            faults: backend.aws.as_ref().and_then(|aws| aws.faults.clone()),
            app,
        }
    }

    fn faults(&self) -> &FaultProxy {
        self.faults.as_deref().expect("a backend behind the proxy")
    }

    /// A broker process: its own provider clients and engine.
    fn process(&self) -> BrokerContext {
        self.process_on(self.stores.clone())
    }

    fn process_on(&self, stores: Stores) -> BrokerContext {
        let http = ProviderHttp::new(HttpSettings {
            total_timeout: std::time::Duration::from_secs(4),
            ..broker_tests::provider_http_settings()
        })
        .unwrap();
        broker_tests::world::process(
            &stores,
            self.catalogue.clone(),
            http,
            self.clock.clone(),
            settings(),
        )
    }

    /// A connected Exact connection whose tokens the simulator issued just now, due for a refresh
    /// after the clock moves past its access token's lifetime.
    async fn connected(&self) -> Connection {
        let now = self.clock.now();
        let connection = broker_tests::world::new_connection(&self.stores, &self.app, now).await;
        let minted = broker_tests::world::mint(&self.sim, &self.app, "nl", "demo.user");
        let tokens = broker_tests::world::token_set(minted, now);
        broker_tests::world::authorized(&self.stores, connection, "demo.user", tokens, now).await
    }

    async fn current(&self, id: &ConnectionId) -> (Connection, Option<TokenSet>) {
        broker_tests::world::stored_with_tokens(&self.stores, id).await
    }

    fn advance(&self, by: Duration) {
        self.sim.clock().advance(by);
    }

    /// Refreshes until the connection is refreshed or recovered, as later scheduled runs would once the
    /// fault has cleared: a lease left by the faulted refresh is waited out (the clock moves past it).
    async fn recover(&self, ctx: &BrokerContext, id: &ConnectionId) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..6 {
            // A write held past the client's timeout may have landed after all: then the faulted
            // refresh did its job, and another would spend a token for nothing.
            let (stored, _) = self.current(id).await;
            let fresh = stored
                .access_expires_at
                .is_some_and(|end| end > self.clock.now());
            if stored.refresh_in_flight.is_none() && fresh {
                seen.push("kept".into());
                return seen;
            }
            let result = ctx.engine.refresh(id, Trigger::Scheduled).await;
            let label = match &result {
                Ok(report) => report.outcome.label(),
                Err(e) => format!("error: {e}"),
            };
            seen.push(label);
            match result {
                Ok(report) if matches!(report.outcome, Outcome::Refreshed | Outcome::Recovered) => {
                    return seen
                }
                Ok(report) if report.outcome == Outcome::NotDue => {
                    // A failed attempt was rescheduled with backoff: move to when it is due.
                    let due = report.connection.next_refresh_at.expect("still scheduled");
                    self.advance(
                        (due - self.clock.now()).max(Duration::zero()) + Duration::seconds(1),
                    );
                }
                _ => self.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1)),
            }
        }
        panic!("the connection did not recover: {seen:?}");
    }

    /// What every scenario ends with.
    async fn assert_kept(&self, id: &ConnectionId, what: &str) {
        let (stored, tokens) = self.current(id).await;
        assert_eq!(stored.status(), ConnectionStatus::Connected, "{what}");
        assert!(stored.refresh_in_flight.is_none(), "{what}: marker left");
        let tokens = tokens.unwrap_or_else(|| panic!("{what}: no tokens"));
        assert!(
            self.sim.is_access_token_valid(tokens.access_token.expose()),
            "{what}: the provider refuses the stored access token"
        );
        assert!(
            self.sim
                .presentations_of(tokens.refresh_token.as_ref().unwrap().expose())
                == 0,
            "{what}: the stored refresh token is unspent"
        );
        assert!(
            self.sim.max_presentations_of_any_refresh_token() <= 1,
            "{what}: a refresh token was presented twice"
        );
    }
}

/// One scenario: a due connection, a refresh under `rules`, then the faults clear and later refreshes
/// run. Returns the first refresh's result for the step's own checks.
async fn scenario(
    world: &World,
    what: &str,
    rules: Vec<FaultRule>,
) -> (ConnectionId, Result<Outcome, EngineError>) {
    let connection = world.connected().await;
    world.advance(Duration::seconds(700)); // the access token (600 s) has expired
    let ctx = world.process();
    for rule in rules {
        world.faults().inject(rule);
    }
    let first = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .map(|r| r.outcome);
    world.faults().clear();
    world.sim.clear_faults();
    let seen = world.recover(&ctx, &connection.id).await;
    world
        .assert_kept(&connection.id, &format!("{what} {seen:?}"))
        .await;
    (connection.id, first)
}

fn failed(first: &Result<Outcome, EngineError>) -> bool {
    !matches!(first, Ok(Outcome::Refreshed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_taking_the_lease_delay_the_refresh_and_lose_nothing() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    for fault in Fault::ALL {
        let rule = FaultRule::on("dynamodb.UpdateItem", fault).when_body_contains(LEASE_ACQUIRE);
        let what = format!("lease × {}", fault.label());
        let (_, first) = scenario(&world, &what, vec![rule]).await;
        assert!(failed(&first), "{what}: the fault had no effect: {first:?}");
    }
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        4,
        "one refresh each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_saving_the_marker_stop_the_refresh_before_the_provider_sees_the_token() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    for fault in Fault::ALL {
        let before = world.sim.token_calls(Provider::Exact);
        let rule = FaultRule::on(SAVES, fault).when_body_contains(MARKER_SAVE);
        let what = format!("marker × {}", fault.label());
        let (_, first) = scenario(&world, &what, vec![rule]).await;
        assert!(failed(&first), "{what}: the fault had no effect: {first:?}");
        assert_eq!(
            world.sim.token_calls(Provider::Exact) - before,
            1,
            "{what}: the provider was asked once, after the fault"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_faults_are_retried_later_and_lose_nothing() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    let actions = [
        (
            "throttle",
            FaultAction::TooManyRequests {
                retry_after_secs: 30,
                body: None,
            },
        ),
        (
            "500",
            FaultAction::Status {
                status: 500,
                body: "{}".into(),
                content_type: Some("application/json".into()),
            },
        ),
        ("reset", FaultAction::Drop),
        ("timeout", FaultAction::Hang),
    ];
    for (label, action) in actions {
        world
            .sim
            .inject_fault(provider_simulators::FaultRule::always(
                "exact.token",
                action,
            ));
        let what = format!("provider answer × {label}");
        let (_, first) = scenario(&world, &what, vec![]).await;
        assert!(
            matches!(first, Ok(Outcome::Failed(_))),
            "{what}: a failure to retry later: {first:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vault_that_refuses_the_new_tokens_leaves_them_escrowed_and_they_are_adopted() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    for fault in Fault::ALL {
        let what = format!("vault write × {}", fault.label());
        let connection = world.connected().await;
        world.advance(Duration::seconds(700));
        let ctx = world.process();
        world.faults().inject(FaultRule::on(VAULT_WRITES, fault));
        let first = ctx.engine.refresh(&connection.id, Trigger::Scheduled).await;
        assert!(
            matches!(first, Err(EngineError::Vault(VaultError::Unavailable(_)))),
            "{what}: {:?}",
            first.map(|r| r.outcome)
        );
        // The answer is kept, sealed, beside the marker; nothing readable is in the record.
        let (stuck, old) = world.current(&connection.id).await;
        let marker = stuck.refresh_in_flight.as_ref().expect("the marker stays");
        assert!(
            marker.escrow.is_some(),
            "{what}: the new tokens are escrowed"
        );
        let record = serde_json::to_string(&stuck).unwrap();
        assert!(
            world
                .sim
                .valid_access_tokens()
                .iter()
                .all(|t| !record.contains(&t.token)),
            "{what}: the escrow is sealed"
        );
        assert!(old.is_some(), "{what}: the current tokens are intact");
        // While the vault still refuses, a later refresh keeps the escrow and spends nothing.
        let calls = world.sim.token_calls(Provider::Exact);
        world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
        let still = ctx.engine.refresh(&connection.id, Trigger::Scheduled).await;
        assert!(still.is_err(), "{what}: {:?}", still.map(|r| r.outcome));
        assert_eq!(world.sim.token_calls(Provider::Exact), calls, "{what}");
        let (stuck, _) = world.current(&connection.id).await;
        assert!(stuck.refresh_in_flight.unwrap().escrow.is_some(), "{what}");
        world.faults().clear();
        let seen = world.recover(&ctx, &connection.id).await;
        assert_eq!(
            seen.last().map(String::as_str),
            Some("recovered"),
            "{what}: {seen:?}"
        );
        assert_eq!(
            world.sim.token_calls(Provider::Exact),
            calls,
            "{what}: no second refresh"
        );
        world.assert_kept(&connection.id, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_switching_the_metadata_leave_the_answer_in_the_vault_for_adoption() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    for fault in Fault::ALL {
        let before = world.sim.token_calls(Provider::Exact);
        let rule = FaultRule::on(SAVES, fault).when_body_contains(SWITCH_SAVE);
        let what = format!("metadata switch × {}", fault.label());
        let (_, first) = scenario(&world, &what, vec![rule]).await;
        if fault != Fault::TIMEOUT {
            // A held save lands after the client gave up on it; the retry recognises it.
            assert!(failed(&first), "{what}: the fault had no effect: {first:?}");
        }
        assert_eq!(
            world.sim.token_calls(Provider::Exact) - before,
            1,
            "{what}: the answer was adopted, not asked for again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_that_cannot_be_released_expires_and_the_escrow_is_adopted() {
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    for fault in Fault::ALL {
        let before = world.sim.token_calls(Provider::Exact);
        let rules = vec![
            FaultRule::on(VAULT_WRITES, fault),
            FaultRule::on("dynamodb.UpdateItem", fault).when_body_contains(LEASE_RELEASE),
        ];
        let what = format!("release × {}", fault.label());
        let (_, first) = scenario(&world, &what, rules).await;
        assert!(failed(&first), "{what}: the fault had no effect: {first:?}");
        assert_eq!(world.sim.token_calls(Provider::Exact) - before, 1, "{what}");
    }
    assert!(world.faults().injected("dynamodb") > 0);
}

/// Refuses credential writes while `refusing` is above zero, counting down.
struct RefusingWrites {
    refusing: AtomicU32,
}

impl VaultHooks for RefusingWrites {
    fn before_write(&self, _: &ConnectionId, _: VaultSlot) -> Result<(), VaultError> {
        match self
            .refusing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(VaultError::Unavailable(
                "the vault is refusing writes".into(),
            )),
            Err(_) => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_store_escrows_with_its_local_key() {
    let world = World::new(broker_tests::backends::embedded()).await;
    let connection = world.connected().await;
    world.advance(Duration::seconds(700));
    let refusing = Arc::new(HookedVault {
        inner: world.stores.vault.clone(),
        hooks: RefusingWrites {
            refusing: AtomicU32::new(1_000),
        },
    });
    let ctx = world.process_on(Stores {
        store: world.stores.store.clone(),
        vault: refusing.clone(),
    });
    let first = ctx.engine.refresh(&connection.id, Trigger::Scheduled).await;
    assert!(first.is_err(), "{:?}", first.map(|r| r.outcome));
    let (stuck, _) = world.current(&connection.id).await;
    let sealed = stuck.refresh_in_flight.unwrap().escrow.expect("escrowed");
    assert_eq!(
        sealed.key,
        broker_core::escrow::SealedCredentials::LOCAL_KEY
    );
    refusing.hooks.refusing.store(0, Ordering::SeqCst);
    let seen = world.recover(&ctx, &connection.id).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("recovered"),
        "{seen:?}"
    );
    assert_eq!(world.sim.token_calls(Provider::Exact), 1);
    world.assert_kept(&connection.id, "embedded escrow").await;
}

// ----- SES: the outbox under faults ------------------------------------------------------------

const SENDER: &str = "broker@example.com";

/// How many messages moto recorded for `recipient`.
async fn moto_mail_to(recipient: &str) -> usize {
    let moto = broker_tests::backends::shared_moto();
    moto.raw_mail_to(recipient).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_or_failing_send_is_retried_by_the_outbox_and_never_sent_twice() {
    use broker_core::adapters::SesMailer;
    use broker_core::notify::{Mailer, Notifier, NotifySettings};
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    let client = SesMailer::client(&world.faults().sdk_config().await);
    // moto refuses mail from an unverified sender, like SES outside the sandbox does.
    let _ = client
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await;
    let mailer: Arc<dyn Mailer> = Arc::new(SesMailer::new(client));
    let notifier = Notifier::new(
        world.process(),
        mailer,
        NotifySettings::new(EmailAddress::parse(SENDER).unwrap()),
    );
    for fault in Fault::ALL {
        let what = format!("SES × {}", fault.label());
        let recipient = format!("{}@example.com", broker_tests::moto::unique_name("finance"));
        let mut c = world.connected().await;
        c.recipients = Recipients::parse(&[recipient.as_str()]).unwrap();
        let t = broker_tests::world::revoke_grant(&mut c, "token-refresh", world.clock.now());
        world
            .stores
            .store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap();
        world.faults().inject(FaultRule::on("ses.SendEmail", fault));
        let first = notifier.drain_outbox().await.unwrap();
        assert_eq!(first.sent, 0, "{what}: {first:?}");
        world.faults().clear();
        // A held send is delivered after the client gave up on it: let it land before counting.
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        world.advance(Duration::hours(1));
        let second = notifier.drain_outbox().await.unwrap();
        let third = notifier.drain_outbox().await.unwrap();
        assert_eq!(third.sent, 0, "{what}: settled once");
        assert_eq!(
            moto_mail_to(&recipient).await,
            1,
            "{what}: exactly one email ({first:?}, then {second:?})"
        );
        if fault == Fault::TIMEOUT {
            // The send may have left: recorded as unknown, never sent again.
            assert_eq!((first.unknown, second.sent), (1, 0), "{what}");
        } else {
            assert_eq!((first.retry_later, second.sent), (1, 1), "{what}");
        }
        assert!(
            world
                .stores
                .store
                .unsettled_notices(100)
                .await
                .unwrap()
                .is_empty(),
            "{what}"
        );
    }
    assert!(world.faults().injected("ses") >= 4);
}

// ----- The session hot path under a DynamoDB outage ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dynamodb_outage_answers_503_with_retry_after_and_writes_nothing_half() {
    use broker_core::api::IntegrationApi;
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    let key = ApiKeyRecord::generate(
        world.tenant.clone(),
        "test",
        ApiKeyScope::default(),
        world.clock.now(),
    );
    world
        .stores
        .store
        .insert_api_key(&key.record)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.plaintext.expose());
    let api = Arc::new(IntegrationApi::new(world.process()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, session_exchange::router_with(api))
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    for fault in Fault::ALL {
        let what = format!("session × DynamoDB {}", fault.label());
        let connection = world.connected().await;
        world.advance(Duration::seconds(700)); // the access token has expired: a refresh is needed
        let session = || {
            http.post(format!("{base}/v1/connections/{}/session", connection.id))
                .header("authorization", &bearer)
                .send()
        };
        world.faults().inject(FaultRule::on("dynamodb.*", fault));
        let refused = session().await.unwrap();
        assert_eq!(refused.status().as_u16(), 503, "{what}");
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after > 0, "{what}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("retry"),
            "{what}: {body}"
        );
        world.faults().clear();
        // Whatever the outage interrupted is finished or undone by the next request.
        let mut answer = None;
        for _ in 0..8 {
            let response = session().await.unwrap();
            if response.status().is_success() {
                answer = Some(response.json::<serde_json::Value>().await.unwrap());
                break;
            }
            assert_eq!(response.status().as_u16(), 503, "{what}: never a 500");
            // A lease or marker the outage left behind: later requests wait it out.
            world.advance(settings().lease_ttl() + Duration::seconds(1));
        }
        let answer = answer.unwrap_or_else(|| panic!("{what}: no session after the outage"));
        let token = answer["access_token"].as_str().unwrap();
        assert!(world.sim.is_access_token_valid(token), "{what}");
        world.assert_kept(&connection.id, &what).await;
    }
}

// ----- A scheduled run under throttling -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_scheduled_run_slows_down_retries_and_loses_nothing() {
    use broker_core::refresh::RunSettings;
    let world = World::new(broker_tests::backends::aws_with_faults().await).await;
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(world.connected().await.id);
    }
    world.advance(Duration::seconds(700));
    let ctx = world.process();
    // Every vault write is throttled for longer than one refresh retries it.
    world.faults().inject(
        FaultRule::on(VAULT_WRITES, Fault::Throttle).for_window(std::time::Duration::from_secs(6)),
    );
    let settings = RunSettings {
        concurrency: 8,
        stop_margin: std::time::Duration::ZERO,
        ..RunSettings::default()
    };
    let summary = broker_tests::world::run_scheduled_within(
        &ctx,
        std::time::Duration::from_secs(120),
        &settings,
    )
    .await;
    assert_eq!(summary.taken, ids.len(), "{summary:?}");
    assert_eq!(summary.errors, 0, "nothing failed for good: {summary:?}");
    assert_eq!(
        summary.count(OutcomeKind::Refreshed) + summary.count(OutcomeKind::Recovered),
        ids.len(),
        "{summary:?}"
    );
    assert!(
        summary.count(OutcomeKind::Recovered) > 0,
        "escrows were adopted: {summary:?}"
    );
    assert!(summary.retried > 0, "{summary:?}");
    assert!(
        summary.lowest_concurrency < 8,
        "the run slowed down: {summary:?}"
    );
    assert!(summary.aws_throttles > 0, "{summary:?}");
    for id in &ids {
        world.assert_kept(id, "throttled run").await;
    }
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        ids.len() as u64,
        "one refresh each"
    );
}
