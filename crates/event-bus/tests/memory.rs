//! The conformance suite on the in-memory bus, plus what is specific to it.

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::conformance::{Capabilities, Harness};
use dynreg_event_bus::{EventBus, InMemoryEventBus};

struct MemoryHarness;

#[async_trait]
impl Harness for MemoryHarness {
    async fn bus(&self, capacity: usize) -> Arc<dyn EventBus> {
        Arc::new(InMemoryEventBus::with_capacity(capacity))
    }
    async fn peer(&self, bus: &Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        Arc::clone(bus)
    }
    /// No server connections to kill: the reconnect checks are skipped.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

fn harness() -> Option<MemoryHarness> {
    Some(MemoryHarness)
}

dynreg_event_bus::event_bus_conformance_tests!(harness());

/// The route cache never serves a stale route: a topic published (and cached) with no
/// subscriber reaches a later exact or pattern subscriber, and stops reaching one that left.
#[tokio::test]
async fn route_cache_follows_subscribe_and_unsubscribe() {
    use dynreg_event_bus::conformance::{next_event, numbered};
    let bus = InMemoryEventBus::with_capacity(64);
    bus.publish("cache:t", &numbered(0)).await.unwrap();
    let mut exact = bus.subscribe("cache:t").await.unwrap();
    bus.publish("cache:t", &numbered(1)).await.unwrap();
    assert_eq!(
        next_event(&mut exact, "exact after cached miss")
            .await
            .1
            .payload["seq"],
        1
    );
    let mut pattern = bus.subscribe_pattern("cache:*").await.unwrap();
    bus.publish("cache:t", &numbered(2)).await.unwrap();
    assert_eq!(next_event(&mut exact, "exact").await.1.payload["seq"], 2);
    assert_eq!(
        next_event(&mut pattern, "pattern after cached route")
            .await
            .1
            .payload["seq"],
        2
    );
    drop(exact);
    bus.publish("cache:t", &numbered(3)).await.unwrap();
    assert_eq!(
        next_event(&mut pattern, "pattern").await.1.payload["seq"],
        3
    );
    assert_eq!(bus.subscription_count(), 1);
}

/// Fan-out shares one event: every subscription gets the same `Arc`, and `publish_shared`
/// hands the caller's own `Arc` through.
#[tokio::test]
async fn deliveries_share_one_event() {
    use dynreg_event_bus::Delivery;
    use dynreg_event_bus::conformance::numbered;
    let bus = InMemoryEventBus::with_capacity(8);
    let mut a = bus.subscribe("share:t").await.unwrap();
    let mut b = bus.subscribe_pattern("share:*").await.unwrap();
    let event = Arc::new(numbered(1));
    bus.publish_shared("share:t", Arc::clone(&event))
        .await
        .unwrap();
    for sub in [&mut a, &mut b] {
        match sub.try_next() {
            Some(Delivery::Event { topic, event: got }) => {
                assert_eq!(&*topic, "share:t");
                assert!(Arc::ptr_eq(&got, &event), "the event was copied");
            }
            other => panic!("expected the event, got {other:?}"),
        }
    }
    let err = bus.publish_shared("bad topic", event).await.unwrap_err();
    assert!(err.to_string().contains("bad topic"), "{err}");
}
