//! Registry benchmark: register (insert, update), get_config, list_active at N = 10,000 and
//! changes_since with one change at N = 100,000, on memory, SQLite and (when
//! `DYNREG_TEST_POSTGRES_URL` is set) PostgreSQL. Prints one line per figure.
//!
//! Run with `cargo bench -p dynreg-registry-backends --all-features` (or `cargo xtask bench`).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::{Value, json};

const N: usize = 10_000;
const BIG_N: usize = 100_000;

fn cfg(i: usize) -> Value {
    json!({"llm": {"provider": "anthropic", "model": format!("claude-{i}")},
           "system_prompt": "You are a helpful support agent.", "memory": {"type": "buffer", "max_messages": 10}})
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>12.0} ops/s ({:.2} µs/op)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1e6 / n as f64
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn fill(b: &Arc<dyn RegistryBackend>, from: usize, to: usize, writers: usize) {
    let per = (to - from).div_ceil(writers);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in (from + w * per)..(from + (w + 1) * per).min(to) {
                    b.register(&format!("bot-{i:06}"), cfg(i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// `filler`, when given, is a second instance on the same storage used only to load the
/// 100,000 rows (PostgreSQL: with `synchronous_commit` off, so the load does not take minutes).
fn id(i: usize) -> String {
    format!("bot-{i:06}")
}

fn wanted(name: &str) -> bool {
    std::env::var("DYNREG_BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o == name))
}

/// PostgreSQL maintenance for the benchmark: `VACUUM ANALYZE` (what autovacuum does in
/// production; the local test server runs with `autovacuum = off`, so without this every run
/// would measure a table bloated by all earlier runs), or dropping the tables for a fresh start.
#[cfg(feature = "postgres")]
async fn pg_maintain(url: &str, statements: &[String]) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

#[cfg(feature = "postgres")]
fn pg_tables(table: &str) -> Vec<String> {
    [
        table.to_owned(),
        format!("{table}_tombstones"),
        format!("{table}_state"),
    ]
    .to_vec()
}

/// Run before `list_active` (PostgreSQL: `VACUUM ANALYZE`, see [`pg_maintain`]).
type Maintain = Option<
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>,
>;

async fn run(
    name: &str,
    b: Arc<dyn RegistryBackend>,
    filler: Option<Arc<dyn RegistryBackend>>,
    reads: usize,
    writers: usize,
    before_listing: Maintain,
) {
    if !wanted(name) {
        return;
    }
    let ids: Arc<Vec<String>> = Arc::new((0..N).map(id).collect());
    b.initialize().await.unwrap();
    b.clear().await.unwrap();
    let t = Instant::now();
    for i in 0..N {
        b.register(&format!("bot-{i:06}"), cfg(i)).await.unwrap();
    }
    println!(
        "{name:<9} register (insert, N={N}, 1 client)     {}",
        rate(N, t.elapsed())
    );
    let t = Instant::now();
    for i in 0..N {
        b.register(&format!("bot-{i:06}"), cfg(i + 1))
            .await
            .unwrap();
    }
    println!(
        "{name:<9} register (update, N={N}, 1 client)     {}",
        rate(N, t.elapsed())
    );
    if writers > 1 {
        let t = Instant::now();
        let per = N / writers;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in w * per..(w + 1) * per {
                        b.register(&format!("bot-{i:06}"), cfg(i + 2))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        println!(
            "{name:<9} register (update, N={N}, {writers} tasks)    {}",
            rate(per * writers, t.elapsed())
        );
    }
    let t = Instant::now();
    for k in 0..reads {
        assert!(b.get_config(&ids[(k * 7919) % N]).await.unwrap().is_some());
    }
    println!(
        "{name:<9} get_config (N={N}, 1 client)           {}",
        rate(reads, t.elapsed())
    );
    let t = Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|w| {
            let (b, ids) = (b.clone(), ids.clone());
            tokio::spawn(async move {
                for k in 0..reads / 2 {
                    b.get_config(&ids[(k * 7919 + w) % N]).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{name:<9} get_config (N={N}, 2 tasks)            {}",
        rate(reads, t.elapsed())
    );
    if let Some(m) = &before_listing {
        m().await;
    }
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        assert_eq!(b.list_active().await.unwrap().len(), N);
        times.push(t.elapsed());
    }
    println!(
        "{name:<9} list_active (N={N})                    {:>9.2} ms (median of 7)",
        median(times).as_secs_f64() * 1e3
    );

    let filler = filler.unwrap_or_else(|| b.clone());
    filler.initialize().await.unwrap();
    fill(&filler, N, BIG_N, writers).await;
    let cursor = b.current_revision().await.unwrap();
    b.register("bot-000001", cfg(7)).await.unwrap();
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let feed = b.changes_since(cursor).await.unwrap();
        times.push(t.elapsed());
        assert!(
            matches!(feed, dynreg_registry_core::ChangeFeed::Changes { ref changes, .. } if changes.len() == 1)
        );
    }
    println!(
        "{name:<9} changes_since, 1 change (N={BIG_N})     {:>9.3} ms (median of 21)",
        median(times).as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let n = b.count().await.unwrap();
    println!(
        "{name:<9} count (N={n})                         {:>9.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    b.clear().await.unwrap();
    b.close().await.unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The benchmark runs as a task on the runtime's workers, as a server's request handlers
    // do, not inside `block_on` on the main thread (where each await that waits for I/O would
    // also wait for the worker that saw the I/O to wake the main thread).
    rt.block_on(async { tokio::spawn(benchmarks()).await.unwrap() });
}

/// A tenant's bots among `n` (1% each): the filtered list against the whole list.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn filtered(name: &str, b: Arc<dyn RegistryBackend>, n: usize) {
    use dynreg_registry_core::{ListQuery, RegisterOptions};
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(4) {
                    let meta = json!({"tenant": format!("t{}", i % 100)});
                    b.register_with(
                        &format!("tb-{i:06}"),
                        Arc::new(cfg(i)),
                        RegisterOptions::default().metadata(meta.as_object().unwrap().clone()),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let q = ListQuery::with_status("active").filter("tenant", json!("t7"));
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        assert_eq!(b.list(&q).await.unwrap().len(), n / 100);
        times.push(t.elapsed());
    }
    let all = ListQuery::with_status("active");
    let mut whole = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        b.list(&all).await.unwrap();
        whole.push(t.elapsed());
    }
    println!(
        "{name:<8}  list_active, tenant filter, 1% of N={n} match   {:.2} ms (the whole list: {:.2} ms)",
        median(times).as_secs_f64() * 1e3,
        median(whole).as_secs_f64() * 1e3
    );
}

async fn benchmarks() {
    if let Ok(only) = std::env::var("DYNREG_BENCH_FILTERED") {
        #[cfg_attr(
            not(any(feature = "sqlite", feature = "postgres")),
            allow(unused_variables)
        )]
        let n: usize = only.parse().unwrap_or(100_000);
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().unwrap();
            let b = dynreg_registry_backends::SqliteBackend::new(dir.path().join("f.sqlite3"));
            b.initialize().await.unwrap();
            filtered("sqlite", Arc::new(b), n).await;
        }
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("DYNREG_TEST_POSTGRES_URL") {
            let table = format!("bench_filtered_{}", std::process::id());
            let b = Arc::new(
                dynreg_registry_backends::PostgresBackend::from_config(
                    &json!({"url": url, "table": table, "pool_size": 8, "synchronous_commit": false}),
                )
                .unwrap(),
            );
            b.initialize().await.unwrap();
            filtered("postgres", b.clone(), n).await;
            b.clear().await.unwrap();
        }
        return;
    }
    {
        // The same 1 s touch resolution as the persistent backends.
        let memory = InMemoryBackend::with_touch_resolution(Duration::from_secs(1));
        run("memory", Arc::new(memory), None, 2_000_000, 1, None).await;
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().unwrap();
            let b = dynreg_registry_backends::SqliteBackend::new(dir.path().join("bench.sqlite3"));
            run("sqlite", Arc::new(b), None, 200_000, 1, None).await;
        }
        #[cfg(feature = "postgres")]
        match std::env::var("DYNREG_TEST_POSTGRES_URL") {
            Ok(url) => {
                let b = dynreg_registry_backends::PostgresBackend::from_config(
                    &json!({"url": url, "table": "bench_registry", "pool_size": 8}),
                )
                .unwrap();
                let filler = dynreg_registry_backends::PostgresBackend::from_config(&json!({
                    "url": url, "table": "bench_registry", "pool_size": 8, "synchronous_commit": false
                }))
                .unwrap();
                if wanted("postgres") {
                    let drop: Vec<String> = pg_tables("bench_registry")
                        .iter()
                        .map(|t| format!("DROP TABLE IF EXISTS \"{t}\""))
                        .collect();
                    pg_maintain(&url, &drop).await;
                }
                let vacuum_url = url.clone();
                let maintain: Maintain = Some(Box::new(move || {
                    let url = vacuum_url.clone();
                    Box::pin(async move {
                        let vacuum: Vec<String> = pg_tables("bench_registry")
                            .iter()
                            .map(|t| format!("VACUUM ANALYZE \"{t}\""))
                            .collect();
                        pg_maintain(&url, &vacuum).await;
                    })
                }));
                run(
                    "postgres",
                    Arc::new(b),
                    Some(Arc::new(filler)),
                    20_000,
                    8,
                    maintain,
                )
                .await;
            }
            Err(_) => println!("skipped: postgres benchmark (DYNREG_TEST_POSTGRES_URL unset)"),
        }
        #[cfg(feature = "postgres")]
        if let (true, Ok(url)) = (
            wanted("postgres"),
            std::env::var("DYNREG_TEST_POSTGRES_URL"),
        ) {
            let drop: Vec<String> = pg_tables("bench_registry_async")
                .iter()
                .map(|t| format!("DROP TABLE IF EXISTS \"{t}\""))
                .collect();
            pg_maintain(&url, &drop).await;
            let b: Arc<dyn RegistryBackend> = Arc::new(
                dynreg_registry_backends::PostgresBackend::from_config(&json!({
                    "url": url, "table": "bench_registry_async", "synchronous_commit": false
                }))
                .unwrap(),
            );
            b.initialize().await.unwrap();
            b.clear().await.unwrap();
            let t = Instant::now();
            for i in 0..N {
                b.register(&format!("bot-{i:06}"), cfg(i)).await.unwrap();
            }
            println!(
                "postgres  register (insert, synchronous_commit=off)  {}",
                rate(N, t.elapsed())
            );
            b.clear().await.unwrap();
        }
    }
}
