//! The conformance suite on the in-memory bus, plus what is specific to it.

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::conformance::Harness;
use dynreg_event_bus::{BoxError, EventBus, InMemoryEventBus};

struct MemoryHarness;

#[async_trait]
impl Harness for MemoryHarness {
    async fn bus(&self, capacity: usize) -> Arc<dyn EventBus> {
        Arc::new(InMemoryEventBus::with_capacity(capacity))
    }
    async fn peer(&self, bus: &Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        Arc::clone(bus)
    }
    async fn kill_listener(&self, _: &Arc<dyn EventBus>) -> Option<Result<(), BoxError>> {
        None
    }
    async fn kill_publisher(&self, _: &Arc<dyn EventBus>) -> Option<Result<(), BoxError>> {
        None
    }
}

fn harness() -> Option<MemoryHarness> {
    Some(MemoryHarness)
}

dynreg_event_bus::conformance_tests!(harness());
