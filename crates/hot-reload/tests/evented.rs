//! EventedRegistry: one event per committed write, none for no-ops; read-your-writes.

use std::sync::Arc;
use std::time::Duration;

use dynreg_cache::testkit::{Bot, TestFactory};
use dynreg_cache::{CacheOptions, CachingRegistryManager, ConfigCachingManager};
use dynreg_event_bus::{Delivery, EventBus, InMemoryEventBus, Subscription};
use dynreg_hot_reload::{
    EventedRegistry, HotReloadManager, REGISTRY_TOPIC, ReloadMode, notice_from_event,
};
use dynreg_registry_core::{
    ChangeKind, ChangeNotice, InMemoryBackend, RegistryBackend, RegistryBackendExt,
};
use serde_json::json;

async fn drain(sub: &mut Subscription) -> Vec<ChangeNotice> {
    let mut out = Vec::new();
    tokio::time::sleep(Duration::from_millis(20)).await;
    while let Some(d) = sub.try_next() {
        if let Delivery::Event { topic, event } = d {
            assert_eq!(&*topic, REGISTRY_TOPIC);
            out.push(notice_from_event(&event).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn every_committed_write_publishes_one_event_and_no_ops_publish_none() {
    let bus = Arc::new(InMemoryEventBus::new());
    let mut sub = bus.subscribe(REGISTRY_TOPIC).await.unwrap();
    let reg = EventedRegistry::new(
        Arc::new(InMemoryBackend::new()),
        Some(bus.clone() as Arc<dyn EventBus>),
    );
    let r1 = reg.register("a", json!({"v": 1})).await.unwrap();
    reg.register("a", json!({"v": 1})).await.unwrap(); // identical: no-op
    let r2 = reg.register("a", json!({"v": 2})).await.unwrap();
    assert!(reg.deactivate("a").await.unwrap());
    assert!(reg.deactivate("a").await.unwrap()); // already inactive: no-op
    assert!(!reg.deactivate("missing").await.unwrap());
    assert!(reg.unregister("a").await.unwrap());
    assert!(!reg.unregister("a").await.unwrap());
    reg.register("b", json!({})).await.unwrap();
    reg.register("c", json!({})).await.unwrap();
    assert_eq!(reg.clear().await.unwrap(), 2);
    assert_eq!(reg.clear().await.unwrap(), 0);
    let got = drain(&mut sub).await;
    let kinds: Vec<_> = got.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deactivated,
            ChangeKind::Deleted,
            ChangeKind::Created,
            ChangeKind::Created,
            ChangeKind::Cleared
        ]
    );
    assert_eq!(got[0].revision, Some(r1.revision));
    assert_eq!(got[1].revision, Some(r2.revision));
    let revs: Vec<u64> = got.iter().map(|n| n.revision.unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(reg.published(), 7);
}

#[tokio::test]
async fn read_your_writes_in_the_writing_process() {
    // A bus that is slow to deliver does not matter: attached caches hear synchronously.
    let backend = Arc::new(InMemoryBackend::new());
    let reg = Arc::new(EventedRegistry::new(backend, None));
    let cache = CachingRegistryManager::<Bot>::builder(
        reg.clone() as Arc<dyn RegistryBackend>,
        TestFactory::new(),
    )
    .build()
    .await
    .unwrap();
    reg.attach(&cache);
    for v in 0..200 {
        reg.register("a", json!({"v": v})).await.unwrap();
        assert_eq!(cache.get_or_create("a").await.unwrap().config["v"], v);
    }
    reg.deactivate("a").await.unwrap();
    assert!(cache.get_or_create("a").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn caches_fed_by_the_bus_drop_older_instances() {
    let bus: Arc<dyn EventBus> = Arc::new(InMemoryEventBus::new());
    let backend = Arc::new(InMemoryBackend::new());
    let writer = EventedRegistry::new(backend.clone(), Some(bus.clone()));
    let cache = CachingRegistryManager::<Bot>::builder(
        backend.clone() as Arc<dyn RegistryBackend>,
        TestFactory::new(),
    )
    .build()
    .await
    .unwrap();
    let sync = HotReloadManager::builder(cache.clone())
        .events(bus.clone())
        .mode(ReloadMode::EventDriven)
        .build()
        .unwrap();
    sync.start().await.unwrap();
    writer.register("a", json!({"v": 1})).await.unwrap();
    assert_eq!(cache.get_or_create("a").await.unwrap().config["v"], 1);
    writer.register("a", json!({"v": 2})).await.unwrap();
    // Applied by the hot-reload manager's subscription; the lookup then serves the rebuild.
    let mut served = 1;
    for _ in 0..2000 {
        served = cache.get_or_create("a").await.unwrap().config["v"]
            .as_i64()
            .unwrap();
        if served == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(served, 2);
    // An event older than the cached revision is ignored.
    let cached = cache.cached_revision("a").unwrap();
    let n = ChangeNotice::new(ChangeKind::Updated, "a", cached - 1);
    assert_eq!(cache.apply_notice(&n), dynreg_cache::NoticeEffect::Ignored);
    sync.close().await;
}

#[tokio::test]
async fn config_cache_carries_revision_and_hash_and_extracts_a_section() {
    let backend = Arc::new(InMemoryBackend::new());
    let r = backend
        .register("a", json!({"bot": {"model": "m"}, "other": 1}))
        .await
        .unwrap();
    let cfg =
        ConfigCachingManager::new(backend.clone(), Some("bot".into()), CacheOptions::default())
            .await
            .unwrap();
    assert_eq!(cfg.get_raw_config("a").await.unwrap().unwrap()["other"], 1);
    assert!(
        !cfg.is_cached("a"),
        "get_raw_config must not populate the cache"
    );
    let resolved = cfg.get("a").await.unwrap();
    assert_eq!(resolved.revision, r.revision);
    assert_eq!(resolved.config_hash, r.config_hash);
    assert_eq!(*resolved.config, json!({"model": "m"}));
    assert_eq!(resolved.raw_config["other"], 1);
    assert_eq!(resolved.get("model"), Some(&json!("m")));
    let before = backend.peek("a").await.unwrap().unwrap().last_accessed_at;
    cfg.invalidate("a");
    cfg.get("a").await.unwrap();
    assert_eq!(
        backend.peek("a").await.unwrap().unwrap().last_accessed_at,
        before,
        "a miss must not touch"
    );
    assert!(cfg.get("zzz").await.unwrap_err().is_not_found());
}

/// A bus that takes events and never answers.
#[derive(Debug)]
struct StuckBus(InMemoryEventBus);

#[async_trait::async_trait]
impl EventBus for StuckBus {
    async fn publish(
        &self,
        _topic: &str,
        _event: &dynreg_event_bus::Event,
    ) -> Result<(), dynreg_event_bus::EventBusError> {
        std::future::pending().await
    }

    async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<Subscription, dynreg_event_bus::EventBusError> {
        self.0.subscribe(topic).await
    }

    async fn subscribe_pattern(
        &self,
        pattern: &str,
    ) -> Result<Subscription, dynreg_event_bus::EventBusError> {
        self.0.subscribe_pattern(pattern).await
    }

    async fn close(&self) -> Result<(), dynreg_event_bus::EventBusError> {
        self.0.close().await
    }
}

#[tokio::test]
async fn a_stuck_bus_delays_a_write_by_at_most_the_publish_timeout() {
    let inner = Arc::new(InMemoryBackend::new());
    let reg = EventedRegistry::new(
        inner.clone(),
        Some(Arc::new(StuckBus(InMemoryEventBus::new())) as Arc<dyn EventBus>),
    )
    .with_publish_timeout(Duration::from_millis(100));
    // Without the timeout this write would never return.
    let written = tokio::time::timeout(Duration::from_secs(30), reg.register("a", json!({"v": 1})))
        .await
        .expect("the write returned")
        .unwrap();
    assert_eq!(
        inner.peek("a").await.unwrap().unwrap().revision,
        written.revision
    );
    assert_eq!((reg.published(), reg.publish_failures()), (0, 1));
}
