//! HTTP registry benchmark: dynreg's server driven by dynreg's `HttpBackend` over loopback,
//! on the memory and SQLite backends — register (`PUT /configs/{id}`) and `get_config`
//! (`GET /configs/{id}`) from one client with keep-alive, `get_config` from 64 concurrent
//! connections beside the same workload run on the backend directly (so the server's cost is
//! visible), `list_active` of every registration, and the watch latency: from a register
//! through the server to a long-polling client holding the change.
//!
//! The workloads mirror the original's HTTP benchmark (1,000 registrations of a ~450-byte config,
//! then 1,000 random reads). Run with `cargo bench -p dynreg-server --bench http`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynreg_registry_backends::{HttpBackend, SqliteBackend};
use dynreg_registry_core::{ChangeFeed, InMemoryBackend, RegistryBackend, RegistryBackendExt};
use dynreg_server::{RegistryServer, ServerConfig};
use serde_json::{Value, json};

const N: usize = 1_000;
const CONCURRENT: usize = 64;
const WATCH_ROUNDS: usize = 300;

/// The original benchmark's config (~450 bytes as JSON).
fn make_config(i: usize, version: usize) -> Value {
    json!({
        "llm": {"provider": "ollama", "model": format!("llama3.{}:8b", i % 3),
                "temperature": 0.2 + (i % 5) as f64 / 10.0, "max_tokens": 1024},
        "system_prompt": format!("You are helpful assistant number {i}. Answer briefly and cite sources."),
        "memory": {"type": "buffer", "max_messages": 20},
        "knowledge_base": {"enabled": i.is_multiple_of(2), "domain": format!("domain-{}", i % 13), "k": 5},
        "reasoning": {"strategy": "simple"},
        "version": version,
    })
}

fn bot_id(i: usize) -> String {
    format!("bot-{i:05}")
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn concurrent_gets(b: Arc<dyn RegistryBackend>) -> f64 {
    let per = N / 4;
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut rng = Lcg(k as u64 + 1);
                for _ in 0..per {
                    b.get_config(&bot_id(rng.next(N))).await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    rate(per * CONCURRENT, t.elapsed())
}

/// Serves `inner` from its own runtime on its own threads, as a server process would, so the
/// client's runtime does not share workers with it: a multi-thread runtime of
/// `DYNREG_BENCH_SERVER_WORKERS` workers (default 2), or a current-thread runtime when it is 0.
fn spawn_server(
    inner: Arc<dyn RegistryBackend>,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let workers: usize = std::env::var("DYNREG_BENCH_SERVER_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(2);
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(async move {
            inner.initialize().await.unwrap();
            let server = RegistryServer::new(inner)
                .with_config(ServerConfig::default())
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    (format!("http://{addr}/api/v1"), stop, thread)
}

async fn run(kind: &str, inner: Arc<dyn RegistryBackend>) {
    let (base, stop, serving) = spawn_server(inner.clone());
    let client = Arc::new(HttpBackend::new(base.clone()).unwrap());
    client.initialize().await.unwrap();

    // The floor: the same HTTP client and server on a route that does nothing (no auth, no
    // registry, no JSON to speak of).
    let raw = reqwest::Client::new();
    let health = base.replace("/api/v1", "/healthz");
    for _ in 0..100 {
        raw.get(&health)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let t = Instant::now();
    for _ in 0..N {
        raw.get(&health)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    println!(
        "http/{kind}: the floor, GET /healthz, one client:                 {:>9.0} ops/s",
        rate(N, t.elapsed())
    );

    let t = Instant::now();
    for i in 0..N {
        client
            .register(&bot_id(i), make_config(i, 1))
            .await
            .unwrap();
    }
    println!(
        "http/{kind}: register via HTTP (PUT /configs/{{id}}), one client: {:>9.0} ops/s",
        rate(N, t.elapsed())
    );
    let t = Instant::now();
    for i in 0..N {
        client
            .register(&bot_id(i), make_config(i, 2))
            .await
            .unwrap();
    }
    println!(
        "http/{kind}: update via HTTP (PUT, new config), one client:      {:>9.0} ops/s",
        rate(N, t.elapsed())
    );
    let mut rng = Lcg(4);
    let ids: Vec<String> = (0..N).map(|_| bot_id(rng.next(N))).collect();
    let t = Instant::now();
    for id in &ids {
        client.get_config(id).await.unwrap().unwrap();
    }
    println!(
        "http/{kind}: get_config via HTTP (GET /configs/{{id}}), one client: {:>9.0} ops/s",
        rate(N, t.elapsed())
    );
    let over_http = concurrent_gets(client.clone()).await;
    let direct = concurrent_gets(inner.clone()).await;
    println!(
        "http/{kind}: get_config, {CONCURRENT} concurrent: via HTTP {over_http:>9.0} ops/s, on the backend directly {direct:>9.0} ops/s"
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let n = client.list_active().await.unwrap().len();
        assert_eq!(n, N);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "http/{kind}: list_active via HTTP at {N}: {:.2} ms (median of 5)",
        times[2].as_secs_f64() * 1e3
    );

    // Watch latency: a client long-polls from the current revision; another registers.
    let watcher = Arc::new(HttpBackend::new(client.base_url()).unwrap());
    watcher.initialize().await.unwrap();
    let mut lat = Vec::with_capacity(WATCH_ROUNDS);
    for round in 0..WATCH_ROUNDS {
        let from = client.current_revision().await.unwrap();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let w = watcher.clone();
        let waiting = tokio::spawn(async move {
            let _ = started_tx.send(());
            let feed = w.watch(from, Duration::from_secs(10)).await.unwrap();
            (Instant::now(), feed)
        });
        started_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await; // the watch is waiting on the server
        let t = Instant::now();
        client
            .register(&bot_id(round % N), make_config(round, 100 + round))
            .await
            .unwrap();
        let (seen, feed) = waiting.await.unwrap();
        assert!(matches!(feed, ChangeFeed::Changes { ref changes, .. } if !changes.is_empty()));
        lat.push(seen - t);
    }
    lat.sort();
    println!(
        "http/{kind}: watch, register → a long-polling client holds the change: p50 {:.0} µs, p99 {:.0} µs ({WATCH_ROUNDS} rounds)",
        pct(&lat, 0.5).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6
    );
    let _ = stop.send(());
    serving.join().unwrap();
}

fn main() {
    // The client: one thread, as the original's benchmark client is one event loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run("memory", Arc::new(InMemoryBackend::new())).await;
        let dir = tempfile::tempdir().unwrap();
        run(
            "sqlite",
            Arc::new(SqliteBackend::new(dir.path().join("bench.sqlite3"))),
        )
        .await;
    });
}
