//! `HotReloadManager`: keeps a cache current from registry change events, the change feed, or
//! both, rebuilding changed bots build-then-swap.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use dynreg_cache::{CachingRegistryManager, NoticeEffect};
use dynreg_event_bus::{Backoff, Delivery, EventBus, Subscription};
use dynreg_registry_core::{Change, ChangeKind, ChangeNotice, RegistryBackend};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::HotReloadError;
use crate::mode::ReloadMode;
use crate::poller::{PollBatch, RegistryPoller};
use crate::wire::{REGISTRY_TOPIC, RELOAD_ERRORS_TOPIC, notice_from_event, reload_error_event};

/// The original's default poll interval (5 s).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Counters of a hot-reload manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotReloadStats {
    /// The mode.
    pub mode: ReloadMode,
    /// Whether it was started and not closed.
    pub running: bool,
    /// Whether the initial (or post-resync) catch-up completed.
    pub synced: bool,
    /// The poll interval.
    pub poll_interval: Duration,
    /// Rebuilds started because of a change, plus manual reloads.
    pub reloads: u64,
    /// Cached bots removed because they were deleted or deactivated.
    pub removals: u64,
    /// Change events received from the bus.
    pub events: u64,
    /// Resync signals handled (catch-ups through the change feed).
    pub resyncs: u64,
    /// Polls that succeeded / failed.
    pub polls: u64,
    /// Polls that failed.
    pub poll_errors: u64,
    /// Rebuilds that failed while the last good instance kept serving (from the cache).
    pub reload_failures: u64,
}

/// Configures a [`HotReloadManager`].
pub struct HotReloadBuilder<T: Send + Sync + 'static> {
    cache: CachingRegistryManager<T>,
    backend: Option<Arc<dyn RegistryBackend>>,
    bus: Option<Arc<dyn EventBus>>,
    mode: Option<ReloadMode>,
    poll_interval: Duration,
    topic: String,
}

impl<T: Send + Sync + 'static> HotReloadBuilder<T> {
    /// The registry to read changes from (default: the cache's backend).
    pub fn backend(mut self, backend: Arc<dyn RegistryBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The bus carrying registry change events. Failed rebuilds of the cache are published on
    /// it too ([`RELOAD_ERRORS_TOPIC`]).
    pub fn events(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The mode (default: event-driven with a bus, polling without).
    pub fn mode(mut self, mode: ReloadMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The poll interval (default 5 s; zero is rejected by `build`).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The change topic (default [`REGISTRY_TOPIC`]).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Checks the configuration. Call [`HotReloadManager::start`] to begin.
    pub fn build(self) -> Result<HotReloadManager<T>, HotReloadError> {
        let mode = self.mode.unwrap_or(if self.bus.is_some() {
            ReloadMode::EventDriven
        } else {
            ReloadMode::Polling
        });
        if mode.listens() && self.bus.is_none() {
            return Err(HotReloadError::BusRequired {
                mode: mode.as_str(),
            });
        }
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::clone(self.cache.backend()));
        let poller = RegistryPoller::new(Arc::clone(&backend), self.poll_interval)?;
        if let Some(bus) = &self.bus {
            let bus = Arc::clone(bus);
            self.cache.on_refresh_failure(move |failure| {
                let event = reload_error_event(failure);
                let bus = Arc::clone(&bus);
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if let Err(e) = bus.publish(RELOAD_ERRORS_TOPIC, &event).await {
                                tracing::warn!(error = %e, "could not publish a failed-rebuild event");
                            }
                        });
                    }
                    Err(_) => tracing::warn!("no runtime to publish a failed-rebuild event on"),
                }
            });
        }
        Ok(HotReloadManager {
            inner: Arc::new(Inner {
                cache: self.cache,
                bus: self.bus,
                mode,
                topic: self.topic,
                poller,
                synced: watch::Sender::new(false),
                started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                reloads: AtomicU64::new(0),
                removals: AtomicU64::new(0),
                events: AtomicU64::new(0),
                resyncs: AtomicU64::new(0),
            }),
        })
    }
}

/// Keeps a [`CachingRegistryManager`] current on this replica.
///
/// * **Polling**: a [`RegistryPoller`] reads the change feed every interval.
/// * **EventDriven**: registry change events (from an `EventedRegistry` on any replica) are
///   applied as they arrive; a resync signal from the bus (missed events, reconnect) triggers a
///   catch-up through the change feed.
/// * **Hybrid**: both, so a dead bus still converges within one poll interval.
///
/// Every change newer than a cached instance marks it stale and starts its rebuild at once
/// (build-then-swap: the old instance serves until the new one is built; if the build fails the
/// old one stays, and the cache logs, counts and publishes the failure). A deleted or
/// deactivated bot is removed. Changes to bots that are not cached cost nothing.
pub struct HotReloadManager<T: Send + Sync + 'static> {
    inner: Arc<Inner<T>>,
}

struct Inner<T: Send + Sync + 'static> {
    cache: CachingRegistryManager<T>,
    bus: Option<Arc<dyn EventBus>>,
    mode: ReloadMode,
    topic: String,
    poller: RegistryPoller,
    synced: watch::Sender<bool>,
    started: AtomicBool,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    reloads: AtomicU64,
    removals: AtomicU64,
    events: AtomicU64,
    resyncs: AtomicU64,
}

impl<T: Send + Sync + 'static> Drop for Inner<T> {
    fn drop(&mut self) {
        self.poller.stop();
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

impl<T: Send + Sync + 'static> HotReloadManager<T> {
    /// Starts configuring hot reload for `cache`.
    pub fn builder(cache: CachingRegistryManager<T>) -> HotReloadBuilder<T> {
        HotReloadBuilder {
            cache,
            backend: None,
            bus: None,
            mode: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            topic: REGISTRY_TOPIC.to_owned(),
        }
    }

    /// Subscribes (event modes), catches up from the oldest cached revision through the change
    /// feed, marks the manager synced, and starts polling (polling modes).
    pub async fn start(&self) -> Result<(), HotReloadError> {
        let inner = &self.inner;
        if inner.started.swap(true, Ordering::AcqRel) {
            return Err(HotReloadError::AlreadyStarted);
        }
        let subscription =
            match (&inner.bus, inner.mode.listens()) {
                (Some(bus), true) => Some(bus.subscribe(&inner.topic).await.map_err(|e| {
                    HotReloadError::Subscribe {
                        topic: inner.topic.clone(),
                        source: Arc::new(e),
                    }
                })?),
                _ => None,
            };
        // Subscribed first, cursor second: nothing committed after this point is missed.
        let oldest_cached = inner.cache.cached().iter().map(|(_, r)| *r).min();
        let cursor = match oldest_cached {
            Some(r) => r,
            None => inner
                .cache
                .backend()
                .current_revision()
                .await
                .map_err(|e| HotReloadError::registry("current_revision", e))?,
        };
        inner.poller.set_cursor(cursor).await;
        let weak = Arc::downgrade(inner);
        inner.poller.add_change_callback(move |batch| {
            if let Some(inner) = weak.upgrade() {
                inner.apply_batch(batch);
            }
        });
        inner.poller.poll_once().await?;
        inner.synced.send_replace(true);
        if let Some(sub) = subscription {
            let task = tokio::spawn(listen_loop(Arc::downgrade(inner), sub));
            inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task);
        }
        if inner.mode.polls() {
            inner.poller.start();
        }
        Ok(())
    }

    /// Waits until the start-up catch-up (or the catch-up after a resync) has completed.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether the manager is currently synced.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Polls the change feed now (any mode) and applies what it finds.
    pub async fn poll_now(&self) -> Result<PollBatch, HotReloadError> {
        self.inner.poller.poll_once().await
    }

    /// Rebuilds `bot_id` now (build-then-swap) and returns the instance now serving.
    pub async fn reload(&self, bot_id: &str) -> Result<Arc<T>, HotReloadError> {
        let instance = self.inner.cache.refresh(bot_id).await?;
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(instance)
    }

    /// Starts a rebuild of every cached bot (build-then-swap). Returns how many.
    pub fn reload_all(&self) -> usize {
        let cache = &self.inner.cache;
        cache.mark_all_stale();
        let n = cache
            .cached()
            .iter()
            .filter(|(id, _)| cache.refresh_in_background(id))
            .count();
        self.inner.reloads.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The cache this manager keeps current.
    pub fn cache(&self) -> &CachingRegistryManager<T> {
        &self.inner.cache
    }

    /// The mode.
    pub fn mode(&self) -> ReloadMode {
        self.inner.mode
    }

    /// The poller (also used for catch-ups in event-driven mode).
    pub fn poller(&self) -> &RegistryPoller {
        &self.inner.poller
    }

    /// The counters.
    pub fn stats(&self) -> HotReloadStats {
        let i = &self.inner;
        let p = i.poller.stats();
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HotReloadStats {
            mode: i.mode,
            running: i.started.load(Ordering::Acquire) && !i.closed.load(Ordering::Acquire),
            synced: *i.synced.borrow(),
            poll_interval: i.poller.interval(),
            reloads: r(&i.reloads),
            removals: r(&i.removals),
            events: r(&i.events),
            resyncs: r(&i.resyncs),
            polls: p.polls,
            poll_errors: p.errors,
            reload_failures: i.cache.stats().refresh_failures,
        }
    }

    /// Stops polling and listening (the cache stays open; close it separately).
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.poller.stop();
        let tasks: Vec<_> = inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        inner.synced.send_replace(false);
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    fn apply_notice(&self, notice: &ChangeNotice) {
        match self.cache.apply_notice(notice) {
            NoticeEffect::Removed(n) => {
                self.removals.fetch_add(n as u64, Ordering::Relaxed);
            }
            NoticeEffect::NotCached | NoticeEffect::BuildRestarted => {}
            NoticeEffect::MarkedStale | NoticeEffect::Ignored => {
                // Stale here, or already marked by an in-process listener: rebuild now.
                if let Some(id) = notice.bot_id.as_deref()
                    && self.cache.refresh_in_background(id)
                {
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn apply_batch(&self, batch: &PollBatch) {
        for change in &batch.changes {
            self.apply_notice(&ChangeNotice::from_change(change));
        }
        if batch.relisted {
            let live: HashSet<&str> = batch.changes.iter().map(Change::bot_id).collect();
            for (id, _) in self.cache.cached() {
                if !live.contains(id.as_str()) {
                    self.apply_notice(&ChangeNotice::new(ChangeKind::Deleted, id, batch.revision));
                }
            }
        }
    }
}

async fn listen_loop<T: Send + Sync + 'static>(weak: Weak<Inner<T>>, mut sub: Subscription) {
    while let Some(delivery) = sub.next().await {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match delivery {
            Delivery::Event { event, .. } => {
                if let Some(notice) = notice_from_event(&event) {
                    inner.events.fetch_add(1, Ordering::Relaxed);
                    inner.apply_notice(&notice);
                }
            }
            Delivery::Resync { reason } => {
                tracing::warn!(
                    ?reason,
                    "registry events may have been missed; catching up through the change feed"
                );
                inner.resyncs.fetch_add(1, Ordering::Relaxed);
                inner.synced.send_replace(false);
                let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(10));
                loop {
                    match inner.poller.poll_once().await {
                        Ok(_) => break,
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::error!(%error, retry_in = ?delay, "catch-up after resync failed");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
                inner.synced.send_replace(true);
            }
        }
    }
}
