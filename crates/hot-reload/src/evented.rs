//! `EventedRegistry`: a `RegistryBackend` decorator that announces every committed write — to
//! in-process listeners synchronously (read-your-writes) and on one bus topic (default
//! [`crate::REGISTRY_TOPIC`]) — so it works on every backend.
//!
//! Invariant: one committed, state-changing write is one notice, announced to the listeners
//! before the write returns and then handed to the bus once; a no-op write announces nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_cache::CachingRegistryManager;
use dynreg_event_bus::EventBus;
use dynreg_registry_core::{
    ChangeFeed, ChangeKind, ChangeListener, ChangeNotice, Deactivation, ListQuery, RegisterOptions,
    Registered, Registration, RegistryBackend, Result, Status, WriteEffect,
};
use serde_json::{Map, Value};

use crate::wire::{REGISTRY_TOPIC, notice_to_event};

/// Wraps a backend and publishes one [`ChangeNotice`] per committed write: register
/// (`created` / `updated` / `deactivated` by status), deactivate, unregister and clear
/// (`cleared`, one event). No-op writes (identical re-register, deactivating an inactive bot,
/// unregistering a missing one) publish nothing. What a register or deactivate did, and its
/// revision, come from the backend's own report of the write
/// ([`RegistryBackend::register_reporting`]), so announcing costs no extra read.
///
/// Order of announcement: first the in-process listeners (so once the write returns, every
/// cache in this process that is attached treats older entries as stale), then the bus. A bus
/// publish failure does not fail the committed write: it is logged and counted
/// ([`EventedRegistry::publish_failures`]); other replicas then converge by polling or resync.
/// A bus that does not answer is given up on after the publish timeout
/// ([`EventedRegistry::with_publish_timeout`]), so it cannot stall registry writes.
pub struct EventedRegistry<B: RegistryBackend + ?Sized = dyn RegistryBackend> {
    inner: Arc<B>,
    bus: Option<Arc<dyn EventBus>>,
    topic: String,
    listeners: RwLock<Vec<Weak<dyn ChangeListener>>>,
    published: AtomicU64,
    publish_failures: AtomicU64,
    publish_timeout: Duration,
}

/// How long a write waits for the bus to take its event before giving up on the event (the
/// write itself is committed; other replicas converge by polling).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

impl<B: RegistryBackend + ?Sized> fmt::Debug for EventedRegistry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventedRegistry")
            .field("inner", &self.inner)
            .field("bus", &self.bus.as_ref().map(|b| b.kind()))
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl<B: RegistryBackend + ?Sized> EventedRegistry<B> {
    /// Wraps `inner`; events go to `bus` (if any) on [`REGISTRY_TOPIC`].
    pub fn new(inner: Arc<B>, bus: Option<Arc<dyn EventBus>>) -> Self {
        EventedRegistry {
            inner,
            bus,
            topic: REGISTRY_TOPIC.to_owned(),
            listeners: RwLock::new(Vec::new()),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
        }
    }

    /// Waits at most `timeout` (default [`DEFAULT_PUBLISH_TIMEOUT`]) for the bus to take each
    /// event, so a stuck bus delays a registry write by at most that much; an event that times
    /// out is counted in [`EventedRegistry::publish_failures`] and logged.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Publishes on `topic` instead of [`REGISTRY_TOPIC`] (the hot-reload managers of every
    /// replica must listen on the same topic; the platform builder sets both from one value).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// The bus topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes `cache` an in-process listener, so a write through this registry marks its older
    /// instances stale before the write returns (read-your-writes). Held weakly.
    pub fn attach<T: Send + Sync + 'static>(&self, cache: &CachingRegistryManager<T>) {
        self.add_listener(cache.change_listener());
    }

    /// Adds an in-process listener (held weakly: a dropped listener is forgotten).
    pub fn add_listener(&self, listener: Weak<dyn ChangeListener>) {
        let mut l = self.listeners.write().unwrap_or_else(|p| p.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(listener);
    }

    /// Events handed to the bus so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events the bus refused (the writes themselves were committed).
    pub fn publish_failures(&self) -> u64 {
        self.publish_failures.load(Ordering::Relaxed)
    }

    async fn announce(&self, notice: ChangeNotice) {
        let listeners: Vec<_> = self
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for l in listeners {
            l.on_change(&notice);
        }
        if let Some(bus) = &self.bus {
            let event = notice_to_event(&notice, &self.topic);
            let publish = bus.publish(&self.topic, &event);
            match tokio::time::timeout(self.publish_timeout, publish).await {
                Ok(Ok(())) => {
                    self.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.publish_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        topic = %self.topic,
                        bot_id = ?notice.bot_id,
                        revision = ?notice.revision,
                        timeout_ms = self.publish_timeout.as_millis() as u64,
                        "registry change committed but the bus did not take its event in time"
                    );
                }
                Ok(Err(error)) => {
                    self.publish_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        topic = %self.topic,
                        bot_id = ?notice.bot_id,
                        revision = ?notice.revision,
                        %error,
                        "registry change committed but its event was not published"
                    );
                }
            }
        }
    }
}

#[async_trait]
impl<B: RegistryBackend + ?Sized> RegistryBackend for EventedRegistry<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn initialize(&self) -> Result<()> {
        self.inner.initialize().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        let written = self
            .inner
            .register_reporting(bot_id, config, options)
            .await?;
        let kind = match (written.effect, &written.registration.status) {
            (effect, _) if !effect.changed() => None,
            (_, Status::Inactive) => Some(ChangeKind::Deactivated),
            (WriteEffect::Created, _) => Some(ChangeKind::Created),
            _ => Some(ChangeKind::Updated),
        };
        if let Some(kind) = kind {
            self.announce(ChangeNotice::new(
                kind,
                bot_id,
                written.registration.revision,
            ))
            .await;
        }
        Ok(written)
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.inner.get(bot_id).await
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.inner.peek(bot_id).await
    }

    async fn get_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        self.inner.get_config(bot_id).await
    }

    async fn peek_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        self.inner.peek_config(bot_id).await
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        let done = self.inner.deactivate_reporting(bot_id).await?;
        if let Some(revision) = done.revision {
            self.announce(ChangeNotice::new(ChangeKind::Deactivated, bot_id, revision))
                .await;
        }
        Ok(done)
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        let done = self.inner.unregister(bot_id).await?;
        if done {
            let revision = self.inner.current_revision().await?;
            self.announce(ChangeNotice::new(ChangeKind::Deleted, bot_id, revision))
                .await;
        }
        Ok(done)
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        self.inner.unregister_if(bot_id, revision).await?;
        let revision = self.inner.current_revision().await?;
        self.announce(ChangeNotice::new(ChangeKind::Deleted, bot_id, revision))
            .await;
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.inner.list(query).await
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        self.inner.count_where(status, filter_metadata).await
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.inner.changes_since(revision).await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.inner.current_revision().await
    }

    async fn clear(&self) -> Result<u64> {
        let removed = self.inner.clear().await?;
        if removed > 0 {
            let revision = self.inner.current_revision().await?;
            self.announce(ChangeNotice::cleared(revision)).await;
        }
        Ok(removed)
    }
}
