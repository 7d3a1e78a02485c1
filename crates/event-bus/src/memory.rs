//! `InMemoryEventBus`: in-process delivery through the shared subscriber table (always built).

use std::sync::Arc;

use async_trait::async_trait;

use crate::EventBus;
use crate::error::EventBusError;
use crate::event::Event;
use crate::router::Router;
use crate::subscription::{DEFAULT_CAPACITY, Subscription};
use crate::topic::validate_topic;

/// An in-process bus. `publish` only queues the event for each matching subscription (it never
/// waits for a consumer), so a slow consumer cannot block the publisher — unlike the original,
/// which ran handlers inline (reference-spec §9.3 #28). Clones share the same bus.
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
        validate_topic(topic)?;
        if self.router.is_closed() {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        self.router.dispatch(topic, event);
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

    fn backend(&self) -> &'static str {
        "memory"
    }
}
