//! Randomised stress: concurrent get_or_create / invalidate / update / notices for 10 s (the
//! issue's figure; `DYNREG_STRESS_SECS` changes it), then: no instance destroyed twice, none
//! leaked, and every cached instance built from the latest revision once quiet.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dynreg_cache::CachingRegistryManager;
use dynreg_cache::testkit::{Bot, TestFactory};
use dynreg_event_bus::{EventBus, InMemoryEventBus};
use dynreg_hot_reload::{EventedRegistry, HotReloadManager, ReloadMode};
use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use rand::Rng;
use serde_json::json;

const IDS: usize = 12;

fn run_for() -> Duration {
    let secs = std::env::var("DYNREG_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_never_double_destroy_leak_or_serve_stale() {
    let bus: Arc<dyn EventBus> = Arc::new(InMemoryEventBus::new());
    let backend = Arc::new(InMemoryBackend::new());
    let writer = Arc::new(EventedRegistry::new(backend.clone(), Some(bus.clone())));
    let factory = TestFactory::with_delay(Duration::from_micros(200));
    // A local cache (attached: read-your-writes) and a remote-like one fed by the bus only.
    let local = CachingRegistryManager::<Bot>::builder(
        writer.clone() as Arc<dyn RegistryBackend>,
        factory.clone(),
    )
    .max_size(Some(8))
    .ttl(Some(Duration::from_millis(50)))
    .sweep_interval(Duration::from_millis(10))
    .build()
    .await
    .unwrap();
    writer.attach(&local);
    let remote = CachingRegistryManager::<Bot>::builder(
        backend.clone() as Arc<dyn RegistryBackend>,
        factory.clone(),
    )
    .max_size(Some(6))
    .build()
    .await
    .unwrap();
    let remote_sync = HotReloadManager::builder(remote.clone())
        .events(bus.clone())
        .mode(ReloadMode::EventDriven)
        .build()
        .unwrap();
    remote_sync.start().await.unwrap();
    for i in 0..IDS {
        writer
            .register(&format!("id{i}"), json!({"v": 0}))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + run_for();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (local, remote, writer) = (local.clone(), remote.clone(), writer.clone());
        tasks.push(tokio::spawn(async move {
            let mut ops = 0u64;
            while Instant::now() < deadline {
                let (op, id, v) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..100),
                        rng.random_range(0..IDS),
                        rng.random_range(0..1000),
                    )
                };
                let id = format!("id{id}");
                let cache = if w % 2 == 0 { &local } else { &remote };
                match op {
                    0..=69 => match cache.get_or_create(&id).await {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => panic!("unexpected {e}"),
                    },
                    70..=79 => {
                        cache.invalidate(&id);
                    }
                    80..=93 => {
                        let mine = writer.register(&id, json!({"v": v})).await.unwrap();
                        if w % 2 == 0 {
                            // Read-your-writes on the attached cache: never older than our write
                            // (a concurrent deactivation may make it NotFound).
                            match local.get_or_create(&id).await {
                                Ok(got) => assert!(got.revision >= mine.revision, "stale read"),
                                Err(e) => assert!(e.is_not_found(), "{e}"),
                            }
                        }
                    }
                    94..=96 => {
                        writer.deactivate(&id).await.unwrap();
                    }
                    97 => {
                        cache.invalidate_all();
                    }
                    _ => {
                        cache.refresh_in_background(&id);
                    }
                }
                ops += 1;
                if ops.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            ops
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!("stress: {total} operations in {:?}", run_for());
    // Quiet: let events drain, then every cached instance must match the latest revision.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for cache in [&local, &remote] {
        for i in 0..IDS {
            let id = format!("id{i}");
            let latest = writer.peek(&id).await.unwrap().unwrap();
            match cache.get_or_create(&id).await {
                Ok(bot) => {
                    assert!(latest.is_active());
                    assert_eq!(
                        bot.revision, latest.revision,
                        "{id} served a stale instance"
                    );
                }
                Err(e) => {
                    assert!(e.is_not_found() && !latest.is_active(), "{id}: {e}");
                }
            }
        }
    }
    remote_sync.close().await;
    local.close().await.unwrap();
    remote.close().await.unwrap();
    let t = &factory.tracker;
    assert_eq!(
        t.double_destroys.load(Ordering::SeqCst),
        0,
        "an instance was destroyed twice"
    );
    assert_eq!(t.live(), 0, "instances leaked (built, never destroyed)");
    assert_eq!(t.destroyed() as u64, t.next.load(Ordering::SeqCst));
}
