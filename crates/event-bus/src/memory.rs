//! `InMemoryEventBus`: in-process delivery through the shared subscriber table (always built).

use std::sync::Arc;

use async_trait::async_trait;

use crate::EventBus;
use crate::error::EventBusError;
use crate::event::Event;
use crate::router::Router;
use crate::subscription::{DEFAULT_CAPACITY, Subscription};

/// An in-process bus. `publish` only queues the event for each matching subscription (it never
/// waits for a consumer), so a slow consumer cannot block the publisher — unlike the original,
/// which ran handlers inline. Clones share the same bus.
///
/// The publish path: one lookup in a per-topic route cache (validated topic and the matching
/// exact and pattern subscriptions; cleared by every subscribe, unsubscribe and close), then per
/// subscription one short lock to queue an `Arc` of the event. `publish(&Event)` copies the event
/// once per publish (not per subscription); [`EventBus::publish_shared`] copies nothing. A parked
/// consumer is woken once, not once per event.
#[derive(Debug, Clone)]
pub struct InMemoryEventBus {
    router: Arc<Router>,
}

impl InMemoryEventBus {
    /// A bus whose subscriptions buffer [`DEFAULT_CAPACITY`] events each.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus whose subscriptions buffer `capacity` events each before signalling `Lagged`.
    pub fn with_capacity(capacity: usize) -> Self {
        InMemoryEventBus {
            router: Router::new(capacity, None),
        }
    }

    /// Number of live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.router.count()
    }
}

impl Default for InMemoryEventBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for InMemoryEventBus {
    async fn publish(&self, topic: &str, event: &Event) -> Result<(), EventBusError> {
        let route = self.router.route(topic)?;
        if !route.is_empty() {
            route.deliver(&Arc::new(event.clone()));
        }
        Ok(())
    }

    async fn publish_shared(&self, topic: &str, event: Arc<Event>) -> Result<(), EventBusError> {
        self.router.route(topic)?.deliver(&event);
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, EventBusError> {
        self.router.subscribe(topic)
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription, EventBusError> {
        self.router.subscribe_pattern(pattern)
    }

    async fn close(&self) -> Result<(), EventBusError> {
        self.router.close();
        Ok(())
    }

    fn subscription_count(&self) -> usize {
        self.router.count()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
