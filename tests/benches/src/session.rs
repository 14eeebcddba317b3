//! The session hot path on a warm instance, and Secrets Manager writes per secret per simulated day.

use crate::counting::{aws_stores, CallCounter};
use crate::world::{embedded_stores, World};
use broker_core::api::IntegrationApi;
use broker_core::domain::{ApiKeyRecord, ApiKeyScope};
use broker_core::refresh::EngineSettings;
use chrono::Duration;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

struct Fixture {
    world: World,
    api: Arc<IntegrationApi>,
    key: String,
    id: String,
}

async fn fixture(stores: broker_core::backend::Backend) -> anyhow::Result<Fixture> {
    let world = World::new(stores).await?;
    let connection = world.seed(1, 1).await?.remove(0);
    let new = ApiKeyRecord::generate(
        world.tenant.clone(),
        "bench",
        ApiKeyScope::default(),
        world.clock.now(),
    );
    world.stores.store.insert_api_key(&new.record).await?;
    let api = Arc::new(IntegrationApi::new(
        world.process(EngineSettings::default()),
    ));
    Ok(Fixture {
        key: format!("Bearer {}", new.plaintext.expose()),
        id: connection.id.to_string(),
        world,
        api,
    })
}

impl Fixture {
    async fn session(&self) -> anyhow::Result<()> {
        let caller = self
            .api
            .authenticate(Some(&self.key))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.api
            .session(&caller, &self.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(label: &str, mut times: Vec<StdDuration>) {
    times.sort();
    let us = |d: StdDuration| d.as_secs_f64() * 1e6;
    println!(
        "  {label:<44} n={:<6} p50 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs",
        times.len(),
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99)),
        us(*times.last().unwrap())
    );
}

async fn in_process(f: &Fixture, n: usize) -> anyhow::Result<Vec<StdDuration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.session().await?;
        times.push(t.elapsed());
    }
    Ok(times)
}

async fn through_router(f: &Fixture, n: usize) -> anyhow::Result<Vec<StdDuration>> {
    use tower::ServiceExt;
    let router = session_exchange::router_with(f.api.clone());
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("/v1/connections/{}/session", f.id))
            .header("authorization", &f.key)
            .body(axum::body::Body::empty())?;
        let t = Instant::now();
        let response = router.clone().oneshot(request).await?;
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        times.push(t.elapsed());
        anyhow::ensure!(status == 200, "session answered {status}");
    }
    Ok(times)
}

pub async fn bench(quick: bool) -> anyhow::Result<()> {
    println!("== Session hot path (warm instance, still-valid Exact token; IntegrationApi::authenticate + session)");
    let n = if quick { 2_000 } else { 20_000 };
    let f = fixture(embedded_stores()).await?;
    for _ in 0..200 {
        f.session().await?; // warm: key cache, credentials cache, SQLite page cache
    }
    let embedded = in_process(&f, n).await?;
    let p99 = {
        let mut s = embedded.clone();
        s.sort();
        percentile(&s, 0.99)
    };
    report("embedded store, in process", embedded);
    println!(
        "    target p99 < 2 ms in process on the embedded store: {}",
        if p99 < StdDuration::from_millis(2) {
            "met"
        } else {
            "MISSED"
        }
    );
    report(
        "embedded store, through the axum router",
        through_router(&f, n).await?,
    );
    f.world.sim.shutdown();

    let counter = CallCounter::default();
    let (stores, _, _) = aws_stores(&counter).await?;
    let f = fixture(stores).await?;
    for _ in 0..20 {
        f.session().await?;
    }
    let m = if quick { 200 } else { 1_000 };
    counter.reset();
    let aws = in_process(&f, m).await?;
    let calls = counter.snapshot();
    report("AWS adapters on moto, in process", aws);
    let per = |prefix: &str| -> f64 {
        calls
            .iter()
            .filter(|(k, _)| k.to_lowercase().replace(' ', "").starts_with(prefix))
            .map(|(_, v)| *v)
            .sum::<u64>() as f64
            / m as f64
    };
    println!(
        "    AWS API calls per warm request (counted by an SDK interceptor over {m} requests):"
    );
    for (op, count) in &calls {
        println!("      {op:<40} {:.3}", *count as f64 / m as f64);
    }
    let (ddb, sm) = (per("dynamodb."), per("secretsmanager."));
    println!(
        "    DynamoDB {ddb:.3}/request (target <= 1 read), Secrets Manager {sm:.3}/request (target 0): {}",
        if ddb <= 1.0 && sm == 0.0 { "met" } else { "MISSED" }
    );
    println!("    (moto latency is not AWS latency: the AWS p50/p99 show the adapter path, not production)");
    f.world.sim.shutdown();
    Ok(())
}

/// 24 simulated hours of one session a minute on one Exact connection, on the AWS adapters (moto).
pub async fn secret_writes(quick: bool) -> anyhow::Result<()> {
    let _ = quick; // cheap enough to always simulate the whole day
    let hours = 24;
    println!("== Secrets Manager writes per secret: an Exact connection with a session every minute for {hours} simulated hours (AWS adapters on moto)");
    let counter = CallCounter::default();
    let (stores, _, _) = aws_stores(&counter).await?;
    let f = fixture(stores).await?;
    f.session().await?;
    counter.reset();
    let before = f
        .world
        .sim
        .token_calls(provider_simulators::Provider::Exact);
    let started = Instant::now();
    for _ in 0..hours * 60 {
        f.world.sim.clock().advance(Duration::seconds(60));
        f.session().await?;
    }
    let refreshes = f
        .world
        .sim
        .token_calls(provider_simulators::Provider::Exact)
        - before;
    let writes = counter.secret_writes();
    let scale = 24.0 / hours as f64;
    println!(
        "  {} sessions in {:.1} s; {refreshes} token refreshes ({:.0} per 24 h)",
        hours * 60,
        started.elapsed().as_secs_f64(),
        refreshes as f64 * scale
    );
    let mut per_secret: std::collections::BTreeMap<String, u64> = Default::default();
    for (write, count) in &writes {
        println!("  {write:<100} {count}");
        let name = write.split_once(' ').map_or(write.as_str(), |(_, n)| n);
        *per_secret.entry(name.to_string()).or_default() += count;
    }
    let worst = per_secret.values().copied().max().unwrap_or(0) as f64 * scale;
    println!(
        "  most writes to one secret per 24 h: {worst:.0} (target <= 100): {}",
        if worst <= 100.0 { "met" } else { "MISSED" },
    );
    f.world.sim.shutdown();
    Ok(())
}
