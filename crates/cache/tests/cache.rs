//! CachingRegistryManager behaviour: single flight, LRU, TTL, destroy accounting, notices.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dynreg_cache::testkit::{Bot, TestFactory, eventually};
use dynreg_cache::{CacheError, CachingRegistryManager, ChangeKind, ChangeNotice, NoticeEffect};
use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::json;

async fn setup(
    factory: TestFactory,
    ttl: Option<Duration>,
    max: Option<usize>,
) -> (Arc<InMemoryBackend>, CachingRegistryManager<Bot>) {
    let backend = Arc::new(InMemoryBackend::new());
    let cache =
        CachingRegistryManager::builder(backend.clone() as Arc<dyn RegistryBackend>, factory)
            .ttl(ttl)
            .max_size(max)
            .build()
            .await
            .unwrap();
    (backend, cache)
}

#[tokio::test]
async fn get_or_create_builds_once_and_hits_return_the_same_instance() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({"m": 1})).await.unwrap();
    let x = cache.get_or_create("a").await.unwrap();
    let y = cache.get_or_create("a").await.unwrap();
    assert!(Arc::ptr_eq(&x, &y));
    assert_eq!(x.config["m"], 1);
    let s = cache.stats();
    assert_eq!((s.creations, s.hits, s.misses, s.size), (1, 1, 1, 1));
    assert_eq!(cache.cached_revision("a"), Some(x.revision));
}

/// Hits from many threads at once are all counted: more threads than there are per-thread
/// counter stripes, so both the owned stripes (counted without a read-modify-write) and the
/// shared ones are written concurrently.
#[tokio::test]
async fn hits_from_many_threads_are_all_counted() {
    let (b, cache) = setup(TestFactory::new(), None, None).await;
    b.register("a", json!({"m": 1})).await.unwrap();
    cache.get_or_create("a").await.unwrap();
    let before = cache.stats().hits;
    let (threads, per_thread) = (64u64, 20_000u64);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    futures::executor::block_on(cache.get_or_create("a")).unwrap();
                }
            });
        }
    });
    assert_eq!(cache.stats().hits - before, threads * per_thread);
}

#[tokio::test]
async fn absent_and_inactive_bots_are_not_found() {
    let (b, cache) = setup(TestFactory::new(), None, None).await;
    let e = cache.get_or_create("nope").await.unwrap_err();
    assert!(
        matches!(e, CacheError::NotFound { ref bot_id } if bot_id == "nope"),
        "{e}"
    );
    b.register("a", json!({})).await.unwrap();
    b.deactivate("a").await.unwrap();
    assert!(cache.get_or_create("a").await.unwrap_err().is_not_found());
    assert_eq!(cache.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_cold_gets_create_one_instance() {
    let f = TestFactory::with_delay(Duration::from_millis(20));
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({})).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get_or_create("a").await.unwrap() })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    assert_eq!(f.tracker.creates.load(Ordering::SeqCst), 1);
    assert!(all.iter().all(|x| Arc::ptr_eq(x, &all[0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_of_different_ids_run_in_parallel() {
    let f = TestFactory::with_delay(Duration::from_millis(30));
    let (b, cache) = setup(f.clone(), None, None).await;
    for i in 0..8 {
        b.register(&format!("id{i}"), json!({})).await.unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = cache.clone();
            tokio::spawn(async move { c.get_or_create(&format!("id{i}")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        f.tracker.max_in_create.load(Ordering::SeqCst) > 1,
        "creations were serialised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_never_waits_behind_another_ids_creation() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("hot", json!({})).await.unwrap();
    b.register("slow", json!({})).await.unwrap();
    cache.get_or_create("hot").await.unwrap();
    // Rebuild the cache with a gated factory sharing the backend: the slow create blocks.
    let gated = TestFactory {
        gate: Some(gate.clone()),
        ..TestFactory::new()
    };
    let cache2 =
        CachingRegistryManager::builder(b.clone() as Arc<dyn RegistryBackend>, gated.clone())
            .build()
            .await
            .unwrap();
    gate.add_permits(1);
    cache2.get_or_create("hot").await.unwrap();
    let c = cache2.clone();
    let slow = tokio::spawn(async move { c.get_or_create("slow").await });
    eventually("slow create started", || {
        gated.tracker.in_create.load(Ordering::SeqCst) == 1
    })
    .await;
    // The slow create holds no lock: the hit completes while it is blocked.
    let hit = tokio::time::timeout(Duration::from_secs(10), cache2.get_or_create("hot")).await;
    assert!(hit.is_ok() && !slow.is_finished());
    gate.add_permits(1);
    slow.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_creation_is_not_cached_and_every_waiter_gets_the_error() {
    let f = TestFactory::with_delay(Duration::from_millis(20));
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({"bad": true})).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get_or_create("a").await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(
            matches!(e, CacheError::Create { ref bot_id, .. } if bot_id == "a"),
            "{e}"
        );
    }
    assert_eq!(f.tracker.creates.load(Ordering::SeqCst), 1);
    assert!(!cache.is_cached("a"));
    b.register("a", json!({"bad": false})).await.unwrap();
    assert!(cache.get_or_create("a").await.is_ok());
}

#[tokio::test]
async fn lru_evicts_the_least_recently_used_not_the_oldest() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, Some(2)).await;
    for id in ["a", "b", "c"] {
        b.register(id, json!({})).await.unwrap();
    }
    cache.get_or_create("a").await.unwrap();
    cache.get_or_create("b").await.unwrap();
    cache.get_or_create("a").await.unwrap(); // a is now more recent than b
    cache.get_or_create("c").await.unwrap();
    assert!(cache.is_cached("a") && cache.is_cached("c") && !cache.is_cached("b"));
    assert_eq!(cache.stats().evictions, 1);
    eventually("evicted instance destroyed", || f.tracker.destroyed() == 1).await;
}

#[tokio::test]
async fn max_size_zero_keeps_nothing_and_destroys_each_instance() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, Some(0)).await;
    b.register("a", json!({})).await.unwrap();
    cache.get_or_create("a").await.unwrap();
    cache.get_or_create("a").await.unwrap();
    assert_eq!(cache.len(), 0);
    eventually("both destroyed", || f.tracker.destroyed() == 2).await;
}

#[tokio::test]
async fn ttl_zero_rebuilds_every_time_and_destroys_the_old() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), Some(Duration::ZERO), None).await;
    b.register("a", json!({})).await.unwrap();
    let x = cache.get_or_create("a").await.unwrap();
    let y = cache.get_or_create("a").await.unwrap();
    assert!(!Arc::ptr_eq(&x, &y));
    eventually("first destroyed", || f.tracker.destroyed() == 1).await;
}

#[tokio::test]
async fn the_sweeper_destroys_expired_instances_without_access() {
    let f = TestFactory::new();
    let backend = Arc::new(InMemoryBackend::new());
    backend.register("a", json!({})).await.unwrap();
    let cache = CachingRegistryManager::builder(backend as Arc<dyn RegistryBackend>, f.clone())
        .ttl(Some(Duration::from_millis(30)))
        .sweep_interval(Duration::from_millis(10))
        .build()
        .await
        .unwrap();
    cache.get_or_create("a").await.unwrap();
    eventually("swept", || f.tracker.destroyed() == 1).await;
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().expirations, 1);
}

#[tokio::test]
async fn invalidate_and_invalidate_all_destroy_exactly_once() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    for id in ["a", "b", "c"] {
        b.register(id, json!({})).await.unwrap();
        cache.get_or_create(id).await.unwrap();
    }
    assert!(cache.invalidate("a"));
    assert!(!cache.invalidate("a"));
    assert_eq!(cache.invalidate_all(), 2);
    cache.close().await.unwrap();
    assert_eq!(f.tracker.destroyed(), 3);
    assert_eq!(f.tracker.double_destroys.load(Ordering::SeqCst), 0);
    assert!(matches!(
        cache.get_or_create("a").await,
        Err(CacheError::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_an_in_flight_build_never_leaves_the_stale_instance() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = TestFactory {
        gate: Some(gate.clone()),
        ..TestFactory::new()
    };
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({"v": 1})).await.unwrap();
    let c = cache.clone();
    let getter = tokio::spawn(async move { c.get_or_create("a").await.unwrap() });
    eventually("build started", || {
        f.tracker.in_create.load(Ordering::SeqCst) == 1
    })
    .await;
    let reg = b.register("a", json!({"v": 2})).await.unwrap();
    assert_eq!(
        cache.apply_notice(&ChangeNotice::new(ChangeKind::Updated, "a", reg.revision)),
        NoticeEffect::BuildRestarted
    );
    gate.add_permits(10);
    let bot = getter.await.unwrap();
    assert_eq!(bot.config["v"], 2);
    assert_eq!(bot.revision, reg.revision);
    assert_eq!(cache.stats().discarded_builds, 1);
    eventually("stale build destroyed", || f.tracker.destroyed() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_an_in_flight_build_redoes_it() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = TestFactory {
        gate: Some(gate.clone()),
        ..TestFactory::new()
    };
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({})).await.unwrap();
    let c = cache.clone();
    let getter = tokio::spawn(async move { c.get_or_create("a").await.unwrap() });
    eventually("build started", || {
        f.tracker.in_create.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!cache.invalidate("a"));
    gate.add_permits(10);
    let bot = getter.await.unwrap();
    assert_eq!(f.tracker.creates.load(Ordering::SeqCst), 2);
    assert!(Arc::ptr_eq(&bot, &cache.get_or_create("a").await.unwrap()));
}

#[tokio::test]
async fn notices_older_than_the_cached_revision_are_ignored() {
    let (b, cache) = setup(TestFactory::new(), None, None).await;
    let r1 = b.register("a", json!({"v": 1})).await.unwrap();
    b.register("other", json!({})).await.unwrap();
    let x = cache.get_or_create("a").await.unwrap();
    let n = ChangeNotice::new(ChangeKind::Updated, "a", r1.revision);
    assert_eq!(cache.apply_notice(&n), NoticeEffect::Ignored);
    assert_eq!(
        cache.apply_notice(&ChangeNotice::new(ChangeKind::Updated, "zzz", 99)),
        NoticeEffect::NotCached
    );
    let r2 = b.register("a", json!({"v": 2})).await.unwrap();
    let n = ChangeNotice::new(ChangeKind::Updated, "a", r2.revision);
    assert_eq!(cache.apply_notice(&n), NoticeEffect::MarkedStale);
    let y = cache.get_or_create("a").await.unwrap();
    assert!(!Arc::ptr_eq(&x, &y));
    assert_eq!(y.config["v"], 2);
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test]
async fn a_failed_rebuild_keeps_the_last_good_instance_serving() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({"v": 1})).await.unwrap();
    let good = cache.get_or_create("a").await.unwrap();
    let r = b.register("a", json!({"v": 2, "bad": true})).await.unwrap();
    cache.apply_notice(&ChangeNotice::new(ChangeKind::Updated, "a", r.revision));
    let served = cache.get_or_create("a").await.unwrap();
    assert!(Arc::ptr_eq(&good, &served));
    // The rejected revision is not rebuilt on every lookup...
    let again = cache.get_or_create("a").await.unwrap();
    assert!(Arc::ptr_eq(&good, &again));
    assert_eq!(f.tracker.creates.load(Ordering::SeqCst), 2);
    let s = cache.stats();
    assert_eq!((s.refresh_failures, s.creation_failures), (1, 1));
    // ...but a fixed config replaces it.
    let r = b.register("a", json!({"v": 3})).await.unwrap();
    cache.apply_notice(&ChangeNotice::new(ChangeKind::Updated, "a", r.revision));
    assert_eq!(cache.get_or_create("a").await.unwrap().config["v"], 3);
}

#[tokio::test]
async fn a_deleted_or_deactivated_notice_removes_the_instance() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({})).await.unwrap();
    cache.get_or_create("a").await.unwrap();
    b.deactivate("a").await.unwrap();
    let rev = b.current_revision().await.unwrap();
    assert_eq!(
        cache.apply_notice(&ChangeNotice::new(ChangeKind::Deactivated, "a", rev)),
        NoticeEffect::Removed(1)
    );
    assert!(cache.get_or_create("a").await.unwrap_err().is_not_found());
    eventually("destroyed", || f.tracker.destroyed() == 1).await;
}

#[tokio::test]
async fn refresh_builds_then_swaps() {
    let f = TestFactory::new();
    let (b, cache) = setup(f.clone(), None, None).await;
    b.register("a", json!({"v": 1})).await.unwrap();
    let old = cache.get_or_create("a").await.unwrap();
    b.register("a", json!({"v": 2})).await.unwrap();
    let new = cache.refresh("a").await.unwrap();
    assert_eq!(new.config["v"], 2);
    assert!(Arc::ptr_eq(&new, &cache.get_or_create("a").await.unwrap()));
    eventually("old destroyed", || f.tracker.destroyed() == 1).await;
    assert!(f.tracker.destroyed.lock().unwrap().contains(&old.serial));
}

#[tokio::test]
async fn invalid_options_name_the_option() {
    let backend = Arc::new(InMemoryBackend::new()) as Arc<dyn RegistryBackend>;
    let e = CachingRegistryManager::<Bot>::builder(backend, TestFactory::new())
        .sweep_interval(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sweep_interval"), "{e}");
}

/// Each build is counted by outcome and timed; hits are not sent to the recorder.
#[test]
fn builds_are_counted_by_outcome_and_timed() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (b, cache) = setup(TestFactory::new(), None, None).await;
            b.register("good", json!({"m": 1})).await.unwrap();
            b.register("bad", json!({"bad": true})).await.unwrap();
            cache.get_or_create("good").await.unwrap();
            cache.get_or_create("good").await.unwrap();
            assert!(cache.get_or_create("bad").await.is_err());
        });
    });
    let mut counts = std::collections::HashMap::new();
    let mut timed = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        match (key.key().name(), value) {
            ("dynreg_cache_builds_total", DebugValue::Counter(n)) => {
                counts.insert(labels.join(","), n);
            }
            ("dynreg_cache_build_seconds", DebugValue::Histogram(h)) => timed += h.len(),
            _ => {}
        }
    }
    assert_eq!(counts.get("outcome=ok"), Some(&1), "{counts:?}");
    assert!(
        counts.get("outcome=error").is_some_and(|n| *n >= 1),
        "{counts:?}"
    );
    assert_eq!(
        timed as u64,
        counts.values().sum::<u64>(),
        "one timing per build"
    );
}
