//! A scheduled run while Secrets Manager throttles: N connections due at once on the AWS adapters
//! (moto behind the harness's fault proxy, production SDK timeouts and retries): without faults, with
//! 30 % of Secrets Manager writes throttled for a minute, and with every write throttled for the first
//! 10 seconds (more than the SDK's own retries absorb). Reports run time, what the run
//! did (retries, how far it slowed down, throttles met) and what was lost: a connection counts as kept
//! when it is `connected`, has no refresh in flight, and the provider accepts its stored access token.

use crate::world::World;
use broker_core::adapters::dynamodb::DynamoStore;
use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use broker_core::backend::{AwsCallLimits, Backend as Stores};
use broker_core::refresh::{EngineSettings, OutcomeKind, RunSettings, RunSummary};
use broker_core::CredentialKeeper;
use broker_tests::aws_faults::{Fault, FaultRule};
use chrono::Duration;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

const LATENCY: StdDuration = StdDuration::from_millis(100);
const VAULT_WRITES: &str = "secretsmanager.PutSecretValue|secretsmanager.CreateSecret";

struct Outcome {
    wall: StdDuration,
    summary: RunSummary,
    injected: u64,
    /// Answers the vault refused and the engine sealed into the metadata (KMS GenerateDataKey calls).
    escrows: u64,
    kept: usize,
    max_presentations: u32,
    follow_up: Option<(StdDuration, usize)>,
}

/// What Secrets Manager does during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Faults {
    None,
    /// 30 % of writes throttled for a minute: the scenario.
    ShareForAMinute,
    /// Every write throttled for 10 s: more than the SDK's own retries absorb.
    AllForTenSeconds,
}

impl Faults {
    fn label(self) -> &'static str {
        match self {
            Self::None => "no faults",
            Self::ShareForAMinute => "30 % of SM writes, 60 s",
            Self::AllForTenSeconds => "all SM writes, first 10 s",
        }
    }
}

async fn run(n: usize, faults: Faults) -> anyhow::Result<Outcome> {
    let backend = broker_tests::backends::aws_with_faults_limited(AwsCallLimits::default()).await;
    let proxy = backend
        .aws
        .as_ref()
        .and_then(|aws| aws.faults.clone())
        .expect("a proxied backend");
    // Seeding goes straight to moto, without timeouts: moto copies the whole table for each
    // transaction, so with a thousand items its calls outgrow the production attempt timeout, and it
    // does not honour the idempotency token of a retried transaction that had landed (AWS does).
    let aws = backend.aws.as_ref().expect("the AWS backend");
    let direct = broker_tests::backends::shared_moto().sdk_config().await;
    let seeding = Stores {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&direct),
            aws.table.clone(),
        )),
        vault: Arc::new(SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(&direct),
            VaultNaming {
                prefix: aws.secret_prefix.clone(),
                kms_key_id: None,
            },
        )),
    };
    let mut world = World::new(seeding).await?;
    let connections = world.seed(n, 16).await?;
    // The run itself goes through the proxy, with the production SDK timeouts and retries.
    world.stores = Stores {
        store: backend.store.clone(),
        vault: backend.vault.clone(),
    };
    world.sim.clock().advance(Duration::days(26)); // every connection is due
    world.sim.set_route_latency("exact.token", LATENCY);
    let ctx = world.process(EngineSettings::default());
    let settings = RunSettings {
        stop_margin: StdDuration::ZERO,
        ..RunSettings::default()
    };
    match faults {
        Faults::None => {}
        Faults::ShareForAMinute => proxy.inject(
            FaultRule::on(VAULT_WRITES, Fault::Throttle)
                .share(0.3)
                .for_window(StdDuration::from_secs(60)),
        ),
        Faults::AllForTenSeconds => proxy.inject(
            FaultRule::on(VAULT_WRITES, Fault::Throttle).for_window(StdDuration::from_secs(10)),
        ),
    }
    let injected_before = proxy.injected("secretsmanager");
    let escrows_before = proxy.calls("kms.GenerateDataKey");
    let started = Instant::now();
    let summary =
        broker_tests::world::run_scheduled_within(&ctx, StdDuration::from_secs(3600), &settings)
            .await;
    let wall = started.elapsed();
    let injected = proxy.injected("secretsmanager") - injected_before;
    let escrows = proxy.calls("kms.GenerateDataKey") - escrows_before;
    let kept_now = |world: &World| {
        let connections = connections.clone();
        let (store, vault) = (world.stores.store.clone(), world.stores.vault.clone());
        let sim = world.sim.clone();
        async move {
            let keeper = CredentialKeeper::new(store.clone(), vault);
            let mut kept = 0;
            for c in &connections {
                let stored = store.get_connection(&c.id).await?.expect("stored");
                let tokens = keeper.current(&stored).await?;
                let valid = tokens
                    .as_ref()
                    .and_then(|t| t.token_set())
                    .is_some_and(|t| sim.is_access_token_valid(t.access_token.expose()));
                if stored.status() == broker_core::domain::ConnectionStatus::Connected
                    && stored.refresh_in_flight.is_none()
                    && valid
                {
                    kept += 1;
                }
            }
            anyhow::Ok(kept)
        }
    };
    let kept = kept_now(&world).await?;
    // What was not finished in this run is the next run's: run it once (the fault window is over).
    let follow_up = if kept < n {
        proxy.clear();
        world.sim.clock().advance(Duration::minutes(5));
        let t = Instant::now();
        broker_tests::world::run_scheduled_within(&ctx, StdDuration::from_secs(3600), &settings)
            .await;
        Some((t.elapsed(), kept_now(&world).await?))
    } else {
        None
    };
    let max_presentations = world.sim.max_presentations_of_any_refresh_token();
    world.sim.shutdown();
    Ok(Outcome {
        wall,
        summary,
        injected,
        escrows,
        kept,
        max_presentations,
        follow_up,
    })
}

pub async fn bench(quick: bool) -> anyhow::Result<()> {
    let n = if quick { 200 } else { 1_000 };
    println!(
        "== Scheduled run under Secrets Manager throttling ({n} due connections; AWS adapters on moto through the fault proxy; production SDK timeouts/retries; RunSettings::default() concurrency {}; simulator token call latency 100 ms)",
        RunSettings::default().concurrency
    );
    println!(
        "  {:<28} {:>9} {:>9} {:>9} {:>8} {:>7} {:>10} {:>9} {:>8} {:>7} {:>6} {:>7}",
        "run",
        "wall",
        "refreshed",
        "recovered",
        "retried",
        "errors",
        "lowest conc",
        "throttles",
        "injected",
        "escrows",
        "lost",
        "max pres"
    );
    for faults in [
        Faults::None,
        Faults::ShareForAMinute,
        Faults::AllForTenSeconds,
    ] {
        let r = run(n, faults).await?;
        let s = &r.summary;
        println!(
            "  {:<28} {:>7.1} s {:>9} {:>9} {:>8} {:>7} {:>10} {:>9} {:>8} {:>7} {:>6} {:>7}",
            faults.label(),
            r.wall.as_secs_f64(),
            s.count(OutcomeKind::Refreshed),
            s.count(OutcomeKind::Recovered),
            s.retried,
            s.errors,
            s.lowest_concurrency,
            s.aws_throttles,
            r.injected,
            r.escrows,
            n - r.follow_up.map_or(r.kept, |(_, kept)| kept),
            r.max_presentations,
        );
        if let Some((wall, kept)) = r.follow_up {
            println!(
                "    {} of {n} kept after the run; a follow-up run ({:.1} s) brought it to {kept}",
                r.kept,
                wall.as_secs_f64()
            );
        }
    }
    println!("  lost = connections not `connected` with a provider-accepted token and no refresh in flight (after a follow-up run if one was needed); max pres = most presentations of any refresh token (1 = none spent twice); escrows = answers the vault refused after the SDK's retries, sealed into DynamoDB (a refresh that then stored them within its own retries counts as refreshed)");
    Ok(())
}
