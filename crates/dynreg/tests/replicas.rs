//! Three replicas (each a `Platform`: its own backend connection, bus connection, registry,
//! cache and Hybrid hot reload): an update on one is served by all; a dead bus still converges
//! by polling; a bad config keeps the old bot serving. SQLite + memory bus always; PostgreSQL +
//! Redis bus and PostgreSQL + Postgres bus when DYNREG_TEST_POSTGRES_URL / DYNREG_TEST_REDIS_URL
//! are set.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynreg::Platform;
#[cfg(feature = "postgres")]
use dynreg::events::create_event_bus;
use dynreg::events::{EventBus, InMemoryEventBus};
use dynreg::hot_reload::ReloadMode;
use dynreg::registry::{RegistryBackend, RegistryBackendExt, SqliteBackend};
use dynreg_cache::testkit::{Bot, TestFactory, eventually};
use serde_json::json;

const POLL: Duration = Duration::from_millis(200);

struct Replica {
    platform: Platform<Bot>,
    bus: Arc<dyn EventBus>,
    factory: TestFactory,
}

async fn replica(backend: Arc<dyn RegistryBackend>, bus: Arc<dyn EventBus>) -> Replica {
    backend.initialize().await.unwrap();
    let factory = TestFactory::new();
    let platform = Platform::builder()
        .registry(backend)
        .events(bus.clone())
        .instances(factory.clone())
        .reload(ReloadMode::Hybrid)
        .poll_interval(POLL)
        .start()
        .await
        .unwrap();
    Replica {
        platform,
        bus,
        factory,
    }
}

async fn serves(r: &Replica, v: i64) -> bool {
    r.platform
        .bots()
        .get_or_create("bot")
        .await
        .is_ok_and(|b| b.config["v"] == v)
}

async fn all_serve(rs: &[Replica], v: i64) -> bool {
    for r in rs {
        if !serves(r, v).await {
            return false;
        }
    }
    true
}

async fn wait_all(rs: &[Replica], v: i64, what: &str) -> Duration {
    let t = Instant::now();
    for _ in 0..2000 {
        if all_serve(rs, v).await {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("replicas never converged: {what}");
}

async fn scenario(name: &str, rs: Vec<Replica>) {
    rs[0]
        .platform
        .registry()
        .register("bot", json!({"v": 1}))
        .await
        .unwrap();
    wait_all(&rs, 1, "initial").await;

    // Update on replica 1: read-your-writes there, then every replica serves it.
    rs[1]
        .platform
        .registry()
        .register("bot", json!({"v": 2}))
        .await
        .unwrap();
    assert!(
        serves(&rs[1], 2).await,
        "{name}: the writer served its old config"
    );
    let took = wait_all(&rs, 2, "update").await;
    println!("{name}: update served by all 3 replicas after {took:?}");

    // A bad config: every replica keeps serving v2 and reports the failed rebuild.
    rs[2]
        .platform
        .registry()
        .register("bot", json!({"v": 3, "bad": true}))
        .await
        .unwrap();
    assert!(serves(&rs[2], 2).await, "{name}: the writer lost its bot");
    for r in &rs {
        eventually("failed rebuild reported", || {
            r.platform.hot_reload().stats().reload_failures >= 1
        })
        .await;
        assert!(serves(r, 2).await, "{name}: a replica lost its bot");
    }

    // Events dropped: the writer's bus is closed, so no event is published; Hybrid polling
    // converges (the poll interval is 200 ms; the time taken is printed, not asserted).
    rs[0].bus.close().await.unwrap();
    rs[0]
        .platform
        .registry()
        .register("bot", json!({"v": 4}))
        .await
        .unwrap();
    assert!(rs[0].platform.registry().publish_failures() >= 1);
    let took = wait_all(&rs, 4, "dead bus").await;
    println!(
        "{name}: with events dropped, converged by polling after {took:?} (poll interval {POLL:?})"
    );

    // Delete: nobody serves it any more.
    rs[1].platform.registry().unregister("bot").await.unwrap();
    for r in &rs {
        let c = r.platform.bots().clone();
        for _ in 0..2000 {
            if c.get_or_create("bot")
                .await
                .is_err_and(|e| e.is_not_found())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            r.platform
                .bots()
                .get_or_create("bot")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    for r in &rs {
        r.platform.close().await.unwrap();
        let t = &r.factory.tracker;
        assert_eq!(
            t.double_destroys.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert_eq!(t.live(), 0, "{name}: leaked instances");
    }
}

#[cfg(feature = "postgres")]
fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sqlite_memory_bus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let bus = InMemoryEventBus::new();
    let mut rs = Vec::new();
    for _ in 0..3 {
        let backend: Arc<dyn RegistryBackend> = Arc::new(SqliteBackend::new(&path));
        // Memory bus handles are clones of one in-process bus; each replica closes only via rs[0].
        rs.push(replica(backend, Arc::new(bus.clone())).await);
    }
    scenario("sqlite+memory", rs).await;
}

#[cfg(feature = "postgres")]
fn pg_backend(url: &str, table: &str) -> Arc<dyn RegistryBackend> {
    Arc::new(
        dynreg::registry::PostgresBackend::from_config(&json!({"url": url, "table": table}))
            .unwrap(),
    )
}

#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_postgres_redis_bus() {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("DYNREG_TEST_POSTGRES_URL"),
        std::env::var("DYNREG_TEST_REDIS_URL"),
    ) else {
        println!(
            "skipped: postgres+redis tests (DYNREG_TEST_POSTGRES_URL / DYNREG_TEST_REDIS_URL unset)"
        );
        return;
    };
    let s = suffix();
    let table = format!("hr_{s}");
    let mut rs = Vec::new();
    for _ in 0..3 {
        let bus = create_event_bus(
            &json!({"backend": "redis", "url": redis, "channel_prefix": format!("hr{s}:")}),
        )
        .await
        .unwrap();
        rs.push(replica(pg_backend(&pg, &table), bus).await);
    }
    scenario("postgres+redis", rs).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_postgres_postgres_bus() {
    let Ok(pg) = std::env::var("DYNREG_TEST_POSTGRES_URL") else {
        println!("skipped: postgres tests (DYNREG_TEST_POSTGRES_URL unset)");
        return;
    };
    let s = suffix();
    let table = format!("hp_{s}");
    let mut rs = Vec::new();
    for _ in 0..3 {
        let bus = create_event_bus(
            &json!({"backend": "postgres", "url": pg, "channel_prefix": format!("hp{s}_")}),
        )
        .await
        .unwrap();
        rs.push(replica(pg_backend(&pg, &table), bus).await);
    }
    scenario("postgres+postgres", rs).await;
}
