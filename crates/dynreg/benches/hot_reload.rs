//! Benchmarks of issue 6 (plain timing loops; `cargo bench -p dynreg --all-features --bench hot_reload`):
//! cache-hit throughput (1 and 2 threads), 100 cold ids with a 10 ms create, update -> 3
//! replicas serving the new config (p50/p99 per bus), one poll at N = 100,000 with 1 change.
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dynreg::Platform;
use dynreg::cache::{CachingRegistryManager, InstanceFactory};
use dynreg::events::{EventBus, InMemoryEventBus, create_event_bus};
use dynreg::hot_reload::{RegistryPoller, ReloadMode};
use dynreg::registry::{
    InMemoryBackend, PostgresBackend, RegistryBackend, RegistryBackendExt, SqliteBackend,
};
use serde_json::{Value, json};
use tokio::sync::watch;

struct Bot {
    config: Arc<Value>,
}

/// Creates bots after an optional delay and reports the `v` of every config it built, so the
/// replica benchmark can wait for a build without spinning on the 2 cores it measures.
struct Factory(Duration, watch::Sender<i64>);

impl Factory {
    fn new(delay: Duration) -> Self {
        Factory(delay, watch::Sender::new(-1))
    }
}

#[async_trait]
impl InstanceFactory<Bot> for Factory {
    type Error = std::convert::Infallible;
    async fn create(&self, _id: &str, config: Arc<Value>) -> Result<Bot, Self::Error> {
        if !self.0.is_zero() {
            tokio::time::sleep(self.0).await;
        }
        if let Some(v) = config["v"].as_i64() {
            self.1.send_replace(v);
        }
        Ok(Bot { config })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn hits(threads: usize, same_key: bool) -> f64 {
    let backend = Arc::new(InMemoryBackend::new());
    for i in 0..64 {
        backend
            .register(&format!("bot-{i}"), json!({"i": i}))
            .await
            .unwrap();
    }
    let cache = CachingRegistryManager::builder(
        backend as Arc<dyn RegistryBackend>,
        Factory::new(Duration::ZERO),
    )
    .build()
    .await
    .unwrap();
    for i in 0..64 {
        cache.get_or_create(&format!("bot-{i}")).await.unwrap();
    }
    const PER: usize = 4_000_000;
    let t = Instant::now();
    let tasks: Vec<_> = (0..threads)
        .map(|w| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let keys: Vec<String> = (0..8)
                    .map(|k| {
                        if same_key {
                            "bot-0".to_owned()
                        } else {
                            format!("bot-{}", w * 8 + k)
                        }
                    })
                    .collect();
                let mut sum = 0usize;
                for i in 0..PER {
                    let b = cache.get_or_create(&keys[i & 7]).await.unwrap();
                    sum += Arc::strong_count(&b) & 1;
                }
                sum
            })
        })
        .collect();
    for t in tasks {
        std::hint::black_box(t.await.unwrap());
    }
    (threads * PER) as f64 / t.elapsed().as_secs_f64()
}

async fn cold_ids() -> Duration {
    let backend = Arc::new(InMemoryBackend::new());
    for i in 0..100 {
        backend
            .register(&format!("bot-{i}"), json!({"i": i}))
            .await
            .unwrap();
    }
    let cache = CachingRegistryManager::builder(
        backend as Arc<dyn RegistryBackend>,
        Factory::new(Duration::from_millis(10)),
    )
    .build()
    .await
    .unwrap();
    let t = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = cache.clone();
            tokio::spawn(async move { c.get_or_create(&format!("bot-{i}")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

struct Replica {
    platform: Platform<Bot>,
    built: watch::Receiver<i64>,
}

async fn replica(backend: Arc<dyn RegistryBackend>, bus: Arc<dyn EventBus>) -> Replica {
    backend.initialize().await.unwrap();
    let factory = Factory::new(Duration::ZERO);
    let built = factory.1.subscribe();
    let platform = Platform::builder()
        .registry(backend)
        .events(bus)
        .instances(factory)
        .reload(ReloadMode::Hybrid)
        .poll_interval(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    Replica { platform, built }
}

/// How the benchmark waits for a replica to serve the new config.
#[derive(Clone, Copy)]
enum Wait {
    /// Wait for the replica's factory to report the build, then check `get_or_create` (what
    /// a replica serving traffic sees; nothing spins on the two cores being measured).
    Notified,
    /// Spin on `get_or_create` + `yield_now` (the earlier method: the spinning task holds one
    /// of the two runtime threads and competes with the servers for the two cores).
    Spin,
}

async fn serves(r: &mut Replica, v: i64, wait: Wait) {
    if let Wait::Notified = wait {
        r.built.wait_for(|b| *b >= v).await.unwrap();
    }
    loop {
        let b = r.platform.bots().get_or_create("bot").await.unwrap();
        if b.config["v"] == v {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn propagation(name: &str, mut rs: Vec<Replica>) {
    rs[0]
        .platform
        .registry()
        .register("bot", json!({"v": 0}))
        .await
        .unwrap();
    for r in &rs {
        r.platform.bots().get_or_create("bot").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Warm-up: the first writes on fresh tables and connections are not what is measured.
    let mut v = 0i64;
    for _ in 0..50 {
        v += 1;
        let writer = (v as usize) % 3;
        rs[writer]
            .platform
            .registry()
            .register("bot", json!({"v": v}))
            .await
            .unwrap();
        for r in rs.iter_mut() {
            serves(r, v, Wait::Notified).await;
        }
    }
    for wait in [Wait::Notified, Wait::Spin] {
        let (mut total, mut write) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            v += 1;
            let writer = (v as usize) % 3;
            let t = Instant::now();
            rs[writer]
                .platform
                .registry()
                .register("bot", json!({"v": v}))
                .await
                .unwrap();
            write.push(t.elapsed());
            for r in rs.iter_mut() {
                serves(r, v, wait).await;
            }
            total.push(t.elapsed());
        }
        let how = match wait {
            Wait::Notified => "notified",
            Wait::Spin => "spin-wait",
        };
        println!(
            "update -> 3 replicas serving it [{name}, {how}]: {}; the write alone: {}",
            percentiles(total),
            percentiles(write)
        );
    }
    for r in rs {
        r.platform.close().await.unwrap();
    }
}

fn percentiles(mut lat: Vec<Duration>) -> String {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    format!(
        "p50 {:.2?} p90 {:.2?} p99 {:.2?} max {:.2?}",
        p(0.50),
        p(0.90),
        p(0.99),
        lat[lat.len() - 1]
    )
}

async fn one_poll(name: &str, backend: Arc<dyn RegistryBackend>, n: usize) {
    backend.initialize().await.unwrap();
    let t = Instant::now();
    let chunk = n / 8;
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let b = backend.clone();
            tokio::spawn(async move {
                for i in w * chunk..(w + 1) * chunk {
                    b.register(&format!("bot-{i:06}"), json!({"i": i}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let load = t.elapsed();
    let poller = RegistryPoller::new(backend.clone(), Duration::from_secs(1)).unwrap();
    let mut samples = Vec::new();
    for k in 0..20 {
        poller.poll_once().await.unwrap();
        backend
            .register("bot-000001", json!({"changed": k}))
            .await
            .unwrap();
        let t = Instant::now();
        let batch = poller.poll_once().await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(batch.changes.len(), 1);
    }
    samples.sort();
    println!(
        "one poll at N={n} with 1 change [{name}]: median {:?}  max {:?}  (loading N took {load:?})",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}

fn main() {
    let rt = runtime();
    rt.block_on(async {
        for threads in [1, 2] {
            let r = hits(threads, false).await;
            println!(
                "cache hit get_or_create, {threads} thread(s), distinct keys: {:.1} M/s ({:.0} ns/hit/thread)",
                r / 1e6,
                threads as f64 * 1e9 / r
            );
        }
        let r = hits(2, true).await;
        println!("cache hit get_or_create, 2 threads, one shared key: {:.1} M/s", r / 1e6);
        let mut cold: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            cold.push(cold_ids().await);
        }
        cold.sort();
        println!("100 cold ids, 10 ms create each: median {:?} max {:?}", cold[2], cold[4]);

        // update -> 3 replicas
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.db");
        let bus = InMemoryEventBus::new();
        let mut rs = Vec::new();
        for _ in 0..3 {
            rs.push(replica(Arc::new(SqliteBackend::new(&path)), Arc::new(bus.clone())).await);
        }
        propagation("sqlite + memory bus", rs).await;
        let pg = std::env::var("DYNREG_TEST_POSTGRES_URL").ok();
        let redis = std::env::var("DYNREG_TEST_REDIS_URL").ok();
        let s = format!("{:08x}", rand::random::<u32>());
        if let Some(pg) = &pg {
            // Durable commits (the default), then asynchronous commit (`synchronous_commit:
            // false`), which takes the WAL flush out of the write's latency.
            for durable in [true, false] {
                let table = format!("bench_{s}_{}", if durable { "d" } else { "a" });
                let label = if durable { "" } else { ", synchronous_commit off" };
                let pg_backend = |suffix: &str| {
                    Arc::new(
                        PostgresBackend::from_config(&json!({
                            "url": pg, "table": format!("{table}_{suffix}"),
                            "synchronous_commit": durable
                        }))
                        .unwrap(),
                    )
                };
                if let Some(redis) = &redis {
                    let mut rs = Vec::new();
                    for _ in 0..3 {
                        let bus = create_event_bus(&json!({"backend": "redis", "url": redis, "channel_prefix": format!("b{s}:")})).await.unwrap();
                        rs.push(replica(pg_backend("r"), bus).await);
                    }
                    propagation(&format!("postgres + redis bus{label}"), rs).await;
                } else {
                    println!("skipped: redis bench (DYNREG_TEST_REDIS_URL unset)");
                }
                let mut rs = Vec::new();
                for _ in 0..3 {
                    let bus = create_event_bus(&json!({"backend": "postgres", "url": pg, "channel_prefix": format!("b{s}_")})).await.unwrap();
                    rs.push(replica(pg_backend("p"), bus).await);
                }
                propagation(&format!("postgres + postgres bus{label}"), rs).await;
            }
        } else {
            println!("skipped: postgres bench (DYNREG_TEST_POSTGRES_URL unset)");
        }

        let n: usize = std::env::var("DYNREG_BENCH_POLL_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        one_poll("memory", Arc::new(InMemoryBackend::new()), n).await;
        let dir = tempfile::tempdir().unwrap();
        one_poll("sqlite", Arc::new(SqliteBackend::new(dir.path().join("poll.db"))), n).await;
        if let Some(pg) = &pg {
            let be = Arc::new(PostgresBackend::from_config(&json!({"url": pg, "table": format!("poll_{s}")})).unwrap());
            one_poll("postgres", be, n).await;
        }
    });
}
