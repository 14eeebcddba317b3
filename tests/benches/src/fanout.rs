//! Refresh fan-out: N connections due at once, 100 ms per provider token call, one scheduled run.

use crate::world::{embedded_stores, World};
use broker_core::refresh::{EngineSettings, OutcomeKind, RunSettings};
use chrono::Duration;
use std::time::{Duration as StdDuration, Instant};

const LATENCY: StdDuration = StdDuration::from_millis(100);

pub struct Run {
    pub connections: usize,
    pub concurrency: usize,
    pub seed: StdDuration,
    pub wall: StdDuration,
    pub refreshed: usize,
}

impl Run {
    pub fn ideal(&self) -> StdDuration {
        LATENCY * self.connections as u32 / self.concurrency as u32
    }
    pub fn ratio(&self) -> f64 {
        self.wall.as_secs_f64() / self.ideal().as_secs_f64()
    }
}

/// One fresh world (embedded store), `n` connections seeded and made due, one run at `concurrency`.
pub async fn run(n: usize, concurrency: usize, tmpfs: bool) -> anyhow::Result<Run> {
    let stores = if tmpfs {
        tmpfs_stores()?
    } else {
        embedded_stores()
    };
    let world = World::new(stores).await?;
    let seeding = Instant::now();
    world.seed(n, 8).await?;
    let seed = seeding.elapsed();
    world.sim.clock().advance(Duration::days(26)); // every connection is due
    world.sim.set_route_latency("exact.token", LATENCY);
    let ctx = world.process(EngineSettings::default());
    let settings = RunSettings {
        concurrency,
        stop_margin: StdDuration::ZERO,
        ..RunSettings::default()
    };
    let started = Instant::now();
    let summary =
        broker_tests::world::run_scheduled_within(&ctx, StdDuration::from_secs(3600), &settings)
            .await;
    let wall = started.elapsed();
    let refreshed = summary.count(OutcomeKind::Refreshed);
    if refreshed != n {
        println!("  !! only {refreshed} of {n} refreshed: {summary:?}");
    }
    world.sim.shutdown();
    if tmpfs {
        // The store file lives in memory: give it back (an open file is only unlinked on Linux).
        for entry in std::fs::read_dir("/dev/shm")?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("broker-bench-{}-", std::process::id())) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(Run {
        connections: n,
        concurrency,
        seed,
        wall,
        refreshed,
    })
}

/// The embedded store on /dev/shm: the same code with fsync made free, to show what the store's
/// durable commits cost the run.
fn tmpfs_stores() -> anyhow::Result<broker_core::backend::Backend> {
    let dir =
        std::path::Path::new("/dev/shm").join(broker_tests::moto::unique_name("broker-bench"));
    std::fs::create_dir_all(&dir)?;
    let store = broker_core::adapters::embedded::EmbeddedStore::open(dir.join("broker.db"))?;
    Ok(broker_core::backend::Backend {
        store: std::sync::Arc::new(store.clone()),
        vault: std::sync::Arc::new(store),
    })
}

fn secs(d: StdDuration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub async fn bench(quick: bool) -> anyhow::Result<()> {
    println!("== Refresh fan-out (embedded store; simulator token call latency 100 ms; RunSettings::default() concurrency {})", RunSettings::default().concurrency);
    let concurrency = RunSettings::default().concurrency;
    let sample = if quick { 100 } else { 300 };
    // Sequential: measured on a sample, extrapolated (10,000 x 100 ms would take ~17 minutes).
    let seq = run(sample, 1, false).await?;
    let per_connection = seq.wall / sample as u32;
    let sequential_10k = per_connection * 10_000;
    println!(
        "  concurrency 1, sample of {sample} (measured): {} wall, {:.1} ms per connection (ideal 100 ms, ratio {:.3})",
        secs(seq.wall),
        per_connection.as_secs_f64() * 1000.0,
        seq.ratio()
    );
    println!(
        "  concurrency 1, 10,000 connections: EXTRAPOLATED from the sample = {} (~{:.1} min), not run",
        secs(sequential_10k),
        sequential_10k.as_secs_f64() / 60.0
    );
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 50_000]
    };
    println!(
        "  {:>7} {:>5} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "conns", "conc", "wall", "ideal", "ratio", "target", "speedup", "seed time"
    );
    let mut runs: Vec<(usize, bool)> = sizes.iter().map(|&n| (n, false)).collect();
    // The same store file on tmpfs (fsync free): how much of each figure is the disk.
    if std::path::Path::new("/dev/shm").is_dir() {
        runs.push((10_000, true));
        if !quick {
            runs.push((50_000, true));
        }
    }
    for (n, tmpfs) in runs {
        let r = run(n, concurrency, tmpfs).await?;
        let speedup = (per_connection * n as u32).as_secs_f64() / r.wall.as_secs_f64();
        println!(
            "  {:>7} {:>5} {:>10} {:>10} {:>8.3}x {:>9} {:>9.1}x {:>10}{}{}",
            n,
            concurrency,
            secs(r.wall),
            secs(r.ideal()),
            r.ratio(),
            if r.ratio() <= 1.25 {
                "<=1.25 ok"
            } else {
                "<=1.25 MISS"
            },
            speedup,
            secs(r.seed),
            if r.refreshed == n {
                ""
            } else {
                "  (not all refreshed!)"
            },
            if tmpfs {
                "  <- store file on tmpfs (/dev/shm)"
            } else {
                ""
            }
        );
    }
    println!("  speedup = measured sequential per-connection time x connections / wall time; target >= 50x at 10,000");
    profile(if quick { 100 } else { 300 }).await?;
    Ok(())
}

/// Where a refresh's broker-side time goes on the embedded store: each store/vault operation the
/// engine performs for one refresh, timed one at a time (median over `n` connections).
pub async fn profile(n: usize) -> anyhow::Result<()> {
    use broker_core::domain::Credentials;
    use broker_core::ids::LeaseOwner;
    use broker_core::ports::{Fence, LeaseAttempt};
    use broker_core::CredentialKeeper;
    use std::collections::BTreeMap;
    let world = World::new(embedded_stores()).await?;
    let connections = world.seed(n, 8).await?;
    let (store, vault) = (world.stores.store.clone(), world.stores.vault.clone());
    let keeper = CredentialKeeper::new(store.clone(), vault.clone());
    let mut times: BTreeMap<&'static str, Vec<StdDuration>> = BTreeMap::new();
    macro_rules! timed {
        ($name:literal, $e:expr) => {{
            let t = Instant::now();
            let out = $e;
            times.entry($name).or_default().push(t.elapsed());
            out
        }};
    }
    for c in &connections {
        let id = &c.id;
        let connection =
            timed!("1 get_connection (read)", store.get_connection(id).await?).unwrap();
        timed!("2 get_app (read)", store.get_app(&c.tenant, &c.app).await?);
        let owner = LeaseOwner::generate();
        let leased = match timed!(
            "3 acquire_lease (write)",
            store
                .acquire_lease(id, &owner, world.clock.now(), chrono::Duration::seconds(90))
                .await?
        ) {
            LeaseAttempt::Acquired(c) => c,
            _ => anyhow::bail!("lease not acquired"),
        };
        let current = timed!(
            "4 vault get_credentials (read)",
            keeper.current(&leased).await?
        )
        .unwrap();
        timed!(
            "5 vault get_client_secret (read)",
            vault.get_client_secret(&c.tenant, &c.app).await?
        );
        let marked = timed!(
            "6 save_connection: marker (write)",
            store
                .save_connection(&leased, Fence::Lease(&owner), &[])
                .await?
        );
        let target = CredentialKeeper::next_target(&marked);
        let token_set = current.token_set().cloned().unwrap();
        timed!(
            "7 vault put_credentials (write)",
            vault
                .put_credentials(
                    &c.tenant,
                    id,
                    target.slot,
                    &target.write,
                    &Credentials::OAuth2(token_set)
                )
                .await?
        );
        let mut switched = marked.clone();
        switched.credentials = Some(target);
        timed!(
            "8 save_connection: switch + release (write)",
            store
                .save_connection(&switched, Fence::LeaseReleased(&owner), &[])
                .await?
        );
        let _ = connection;
    }
    println!(
        "  per-refresh store operations on the embedded store (median of {n}, one at a time):"
    );
    let mut total = StdDuration::ZERO;
    let mut writes = StdDuration::ZERO;
    for (name, mut t) in times {
        t.sort();
        let median = t[t.len() / 2];
        total += median;
        if name.ends_with("(write)") {
            writes += median;
        }
        println!("    {name:<38} {:>8.3} ms", median.as_secs_f64() * 1000.0);
    }
    println!(
        "    total per refresh {:.2} ms, of which 4 writes {:.2} ms (each alone: one commit and disk flush, synchronous=FULL)",
        total.as_secs_f64() * 1000.0,
        writes.as_secs_f64() * 1000.0
    );
    println!(
        "    → one at a time the writer would cap at ≈ {:.0} refreshes/s; with refreshes in flight the writes waiting share one commit (group commit), so it does not",
        1.0 / writes.as_secs_f64(),
    );
    world.sim.shutdown();
    Ok(())
}
