//! Crashes at every step of a refresh, and the known loss cases of single-use refresh tokens.

use super::*;
use broker_tests::vaults::{HookedVault, VaultHooks};

broker_tests::on_both_backends!(
    a_crash_before_the_provider_call_ends_in_a_working_connection,
    a_crash_after_the_answer_before_the_vault_write_ends_in_reconnect_required_once,
    a_crash_after_the_vault_write_before_the_metadata_is_recovered,
    issue_then_500_on_a_single_use_token_is_not_retried_at_once_and_ends_in_one_clear_reconnect,
    a_dropped_connection_of_a_single_use_token_is_retried_later_not_at_once,
);

/// Wraps the provider grant: `Crash::BeforeCall` never reaches the provider, `Crash::AfterAnswer`
/// gets the answer and then never returns — as a worker that died at that point.
#[derive(Clone, Copy, PartialEq)]
enum Crash {
    BeforeCall,
    AfterAnswer,
}

struct CrashingGrant {
    inner: Arc<Providers>,
    crash: Crash,
}

#[async_trait]
impl TokenGrant for CrashingGrant {
    fn rules(&self, app: &OAuthApp) -> broker_core::refresh::RefreshRules {
        self.inner.rules(app)
    }
    async fn refresh(
        &self,
        app: &OAuthApp,
        secret: &ClientSecret,
        token: &RefreshToken,
    ) -> Result<broker_core::refresh::GrantedTokens, broker_core::refresh::GrantFailure> {
        if self.crash == Crash::AfterAnswer {
            let _ = self.inner.refresh(app, secret, token).await;
        }
        std::future::pending().await
    }
}

/// Credential writes land and then never return.
struct CrashAfterVaultWrite;

#[async_trait]
impl VaultHooks for CrashAfterVaultWrite {
    async fn after_write(&self) {
        std::future::pending().await
    }
}

/// Runs a refresh that "dies" (its task is aborted) once it has recorded its in-flight marker and done
/// whatever the crash point allows.
async fn refresh_and_die(
    world: &World,
    id: &ConnectionId,
    engine: broker_core::refresh::RefreshEngine,
) {
    let engine = Arc::new(engine);
    let task = {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::spawn(async move { engine.refresh(&id, Trigger::Scheduled).await })
    };
    // Wait until the marker is down (and, for the later crash points, the provider has answered).
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let c = world
            .stores
            .store
            .get_connection(id)
            .await
            .unwrap()
            .unwrap();
        if c.refresh_in_flight.is_some() && world.sim.token_calls(Provider::Exact) > 0 {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;
}

fn crashing_engine(
    world: &World,
    grant: Arc<dyn TokenGrant>,
    vault: Arc<dyn TokenVault>,
) -> broker_core::refresh::RefreshEngine {
    broker_core::refresh::RefreshEngine::new(
        world.stores.store.clone(),
        vault,
        grant,
        world.clock.clone(),
        settings(),
    )
}

async fn due_now(world: &World, id: &ConnectionId) {
    let mut c = world
        .stores
        .store
        .get_connection(id)
        .await
        .unwrap()
        .unwrap();
    c.next_refresh_at = Some(world.clock.now() - Duration::seconds(1));
    world.save(&c).await;
}

async fn a_crash_before_the_provider_call_ends_in_a_working_connection(backend: Backend) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let grant = Arc::new(CrashingGrant {
        inner: ctx.providers.clone(),
        crash: Crash::BeforeCall,
    });
    let engine = crashing_engine(&world, grant, world.stores.vault.clone());
    let engine = Arc::new(engine);
    let task = {
        let (engine, id) = (engine.clone(), connection.id.clone());
        tokio::spawn(async move { engine.refresh(&id, Trigger::Scheduled).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    task.abort();
    let (stuck, _) = world.current(&connection.id).await;
    assert!(
        stuck.refresh_in_flight.is_some(),
        "the marker was written before the call"
    );
    // While the dead worker's call could still be running, nobody presents its token.
    assert_eq!(
        refresh(&ctx, &connection.id, Trigger::Scheduled).await,
        Outcome::Busy
    );
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    assert_eq!(
        refresh(&ctx, &connection.id, Trigger::Scheduled).await,
        Outcome::Refreshed
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(world.max_presentations(), 1);
}

async fn a_crash_after_the_answer_before_the_vault_write_ends_in_reconnect_required_once(
    backend: Backend,
) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let grant = Arc::new(CrashingGrant {
        inner: ctx.providers.clone(),
        crash: Crash::AfterAnswer,
    });
    refresh_and_die(
        &world,
        &connection.id,
        crashing_engine(&world, grant, world.stores.vault.clone()),
    )
    .await;
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        1,
        "the provider answered the dead worker"
    );
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    // The new pair died with the worker; the old refresh token is spent. Said once, clearly.
    let report = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::ReconnectRequired(ReconnectKind::RefreshInterrupted)
    );
    let (stored, _) = world.current(&connection.id).await;
    let ConnectionStatus::ReconnectRequired { reason } = &stored.status() else {
        panic!("{:?}", stored.status())
    };
    assert!(
        reason.explain().contains("interrupted"),
        "{}",
        reason.explain()
    );
    assert!(
        stored.next_refresh_at.is_none(),
        "out of the schedule: no retry loop"
    );
    let history = world
        .stores
        .store
        .list_transitions(&connection.id, broker_core::ports::PageRequest::first(50))
        .await
        .unwrap();
    assert!(
        history.items.last().unwrap().needs_notification(),
        "a notification is queued with the transition"
    );
    // Never a loop: later runs leave it alone.
    let again = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        again.outcome,
        Outcome::NotUsable(StatusKind::ReconnectRequired)
    );
    assert_eq!(world.sim.token_calls(Provider::Exact), 2);
}

async fn a_crash_after_the_vault_write_before_the_metadata_is_recovered(backend: Backend) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let vault: Arc<dyn TokenVault> = Arc::new(HookedVault {
        inner: world.stores.vault.clone(),
        hooks: CrashAfterVaultWrite,
    });
    refresh_and_die(
        &world,
        &connection.id,
        crashing_engine(&world, ctx.providers.clone(), vault),
    )
    .await;
    let (stuck, old) = world.current(&connection.id).await;
    assert!(stuck.refresh_in_flight.is_some());
    assert!(old.is_some(), "the old credentials are intact");
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    let report = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Recovered,
        "the stored answer is adopted"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(stored.refresh_in_flight.is_none());
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        1,
        "no second refresh was needed"
    );
    assert_eq!(world.max_presentations(), 1);
}

async fn issue_then_500_on_a_single_use_token_is_not_retried_at_once_and_ends_in_one_clear_reconnect(
    backend: Backend,
) {
    let (world, lost) = World::with_expired_exact_token(backend).await;
    world
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::IssueThen500));
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Exact);
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Failed(ErrorClass::ProviderUnavailable)
    );
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - calls,
        1,
        "the spent token is not presented again at once"
    );
    let (stored, _) = world.current(&lost.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::RefreshFailing { .. }),
        "{:?}",
        stored.status()
    );
    // The pair Exact issued never arrived and no public source says it honours the old token again:
    // the spaced retry learns it was spent, and the connection asks for a person, once.
    world.advance(Duration::minutes(3));
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::ReconnectRequired(ReconnectKind::RefreshTokenReused)
    );
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert!(matches!(report.outcome, Outcome::NotUsable(_)));
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 2);
}

async fn a_dropped_connection_of_a_single_use_token_is_retried_later_not_at_once(backend: Backend) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    world
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::Drop));
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Exact);
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Failed(ErrorClass::ProviderUnavailable)
    );
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 1);
    let next = report.connection.next_refresh_at.unwrap();
    assert!(
        next >= world.clock.now() + Duration::seconds(30),
        "the retry is spaced: {next}"
    );
    world.advance(Duration::minutes(2));
    assert_eq!(
        refresh(&ctx, &connection.id, on_demand()).await,
        Outcome::Refreshed
    );
    let (_, tokens) = world.current(&connection.id).await;
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(
        world.max_presentations(),
        1,
        "the dropped request never reached the token logic"
    );
}
