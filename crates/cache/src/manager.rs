//! `CachingRegistryManager<T>`: the instance cache over a registry — single-flight builds per
//! id, TTL with a background sweeper, CLOCK (second-chance) eviction, change notices and build-then-swap refresh.
//!
//! The cache knows no event bus: change notices reach it through
//! [`CachingRegistryManager::apply_notice`] or as a [`ChangeListener`] (the sync layer, `dynreg-hot-reload`, feeds both),
//! and failed rebuilds leave it through [`CachingRegistryManager::on_refresh_failure`] hooks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use dynreg_registry_core::{ChangeListener, ChangeNotice, RegistryBackend};
use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::{self, Instant};
use crate::error::CacheError;
use crate::factory::{DynFactory, Erased, InstanceFactory};
use crate::flight::{Lookup, wait};
use crate::options::CacheOptions;
use crate::stats::{CacheStats, Counters};
use crate::store::{Flight, Ready, Slot, Store, lock};

/// What [`CachingRegistryManager::apply_notice`] did with a change notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeEffect {
    /// Nothing about that id is cached.
    NotCached,
    /// The cached instance is already at (or past) that revision; nothing changed.
    Ignored,
    /// The cached instance must be rebuilt before it is served again (it stays as last good).
    MarkedStale,
    /// A build in progress will be redone from the newer registration.
    BuildRestarted,
    /// The bot is gone or inactive: its instance(s) were removed and destroyed.
    Removed(usize),
}

/// A rebuild after a registry change failed and the last good instance kept serving: what
/// [`CachingRegistryManager::on_refresh_failure`] hooks receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshFailure {
    /// The bot whose rebuild failed.
    pub bot_id: String,
    /// The registry revision the failed build read.
    pub revision: u64,
    /// The revision of the instance that keeps serving.
    pub serving_revision: u64,
    /// The build's error, as text.
    pub error: String,
}

/// A hook called for every failed rebuild (see [`CachingRegistryManager::on_refresh_failure`]).
pub type RefreshFailureHook = Arc<dyn Fn(&RefreshFailure) + Send + Sync>;

/// A cache of instances built from registry configs (see the crate docs for the guarantees).
///
/// Cheap to clone (clones share the cache). Build one with [`CachingRegistryManager::builder`].
pub struct CachingRegistryManager<T: Send + Sync + 'static> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + Sync + 'static> Clone for CachingRegistryManager<T> {
    fn clone(&self) -> Self {
        CachingRegistryManager {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Send + Sync + 'static> std::fmt::Debug for CachingRegistryManager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingRegistryManager")
            .field("backend", &self.inner.backend.kind())
            .field("size", &self.inner.store.len())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Configures and builds a [`CachingRegistryManager`].
pub struct CacheBuilder<T: Send + Sync + 'static> {
    backend: Arc<dyn RegistryBackend>,
    factory: Arc<dyn DynFactory<T>>,
    options: CacheOptions,
}

impl<T: Send + Sync + 'static> CacheBuilder<T> {
    /// Sets the TTL (`None`: never expires; zero: every lookup rebuilds).
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// Sets the size bound (`None`: unbounded; 0: nothing is kept).
    pub fn max_size(mut self, max_size: Option<usize>) -> Self {
        self.options.max_size = max_size;
        self
    }

    /// Sets the sweeper period.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.options.sweep_interval = Some(every);
        self
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: CacheOptions) -> Self {
        self.options = options;
        self
    }

    /// Whether `close()` closes the backend too (default `false`).
    pub fn owns_backend(mut self, owns: bool) -> Self {
        self.options.owns_backend = owns;
        self
    }

    /// Whether a failed rebuild keeps the last good instance serving (default `true`).
    pub fn keep_last_good(mut self, keep: bool) -> Self {
        self.options.keep_last_good = keep;
        self
    }

    /// Starts the manager (and its sweeper). Must run inside a tokio runtime.
    pub async fn build(self) -> Result<CachingRegistryManager<T>, CacheError> {
        self.options.validate()?;
        if self.options.ttl.is_some_and(|t| !t.is_zero()) {
            clock::start();
        }
        let inner = Arc::new(Inner {
            backend: self.backend,
            factory: self.factory,
            options: self.options,
            store: Store::new(),
            counters: Counters::default(),
            failure_hooks: RwLock::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
            closed: AtomicBool::new(false),
            destroyer: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        if let Some(every) = inner.options.effective_sweep_interval() {
            tasks.push(tokio::spawn(sweep_loop(Arc::downgrade(&inner), every)));
        }
        *lock(&inner.tasks) = tasks;
        Ok(CachingRegistryManager { inner })
    }
}

pub(crate) struct Inner<T: Send + Sync + 'static> {
    pub(crate) backend: Arc<dyn RegistryBackend>,
    pub(crate) factory: Arc<dyn DynFactory<T>>,
    pub(crate) options: CacheOptions,
    pub(crate) store: Store<T>,
    pub(crate) counters: Counters,
    pub(crate) failure_hooks: RwLock<Vec<RefreshFailureHook>>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) closed: AtomicBool,
    destroyer: Arc<Destroyer>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<T: Send + Sync + 'static> Drop for Inner<T> {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

impl<T: Send + Sync + 'static> CachingRegistryManager<T> {
    /// Starts configuring a cache over `backend`, building instances with `factory`.
    pub fn builder<F>(backend: Arc<dyn RegistryBackend>, factory: F) -> CacheBuilder<T>
    where
        F: InstanceFactory<T>,
    {
        CacheBuilder {
            backend,
            factory: Arc::new(Erased(factory)),
            options: CacheOptions::default(),
        }
    }

    /// The instance of `bot_id`: a hit returns at once (never waiting behind any build);
    /// otherwise one build per id runs (concurrent callers share it) and every caller gets its
    /// result. An inactive or absent bot is [`CacheError::NotFound`]; a failed build is not
    /// cached.
    pub async fn get_or_create(&self, bot_id: &str) -> Result<Arc<T>, CacheError> {
        if let Some(hit) = self.inner.try_hit(bot_id) {
            return Ok(hit);
        }
        match Arc::clone(&self.inner).lookup(bot_id, false)? {
            Lookup::Hit(hit) => Ok(hit),
            Lookup::Wait(flight) => {
                Counters::bump(&self.inner.counters.misses);
                wait(&flight, bot_id).await
            }
        }
    }

    /// Builds a fresh instance of `bot_id` now and swaps it in once built (hits keep getting
    /// the current one meanwhile). If the build fails and an instance was cached, that last
    /// good instance is returned and stays (the failure is logged, counted and published).
    pub async fn refresh(&self, bot_id: &str) -> Result<Arc<T>, CacheError> {
        match Arc::clone(&self.inner).lookup(bot_id, true)? {
            Lookup::Hit(hit) => Ok(hit),
            Lookup::Wait(flight) => wait(&flight, bot_id).await,
        }
    }

    /// Starts rebuilding `bot_id` in the background if it is cached and stale. Returns whether
    /// a rebuild is (now) running.
    pub fn refresh_in_background(&self, bot_id: &str) -> bool {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return false;
        }
        let shard = inner.store.shard(bot_id);
        let mut map = inner.store.write(shard);
        let Some(slot) = map.get_mut(bot_id) else {
            return false;
        };
        if slot.flight.is_some() {
            return true;
        }
        if slot.ready.is_none() || !slot.stale {
            return false;
        }
        let flight = Flight::new();
        slot.flight = Some(Arc::clone(&flight));
        let key = Arc::clone(&slot.key);
        drop(map);
        inner.spawn_flight(key, flight);
        true
    }

    /// Removes and destroys the cached instance of `bot_id` (the registry is not touched); a
    /// build in progress is redone. Returns whether an instance was cached.
    pub fn invalidate(&self, bot_id: &str) -> bool {
        let inner = &self.inner;
        let shard = inner.store.shard(bot_id);
        let mut map = inner.store.write(shard);
        let Some(slot) = map.get_mut(bot_id) else {
            return false;
        };
        slot.generation += 1;
        let old = inner.store.take(slot);
        if slot.flight.is_none() {
            map.remove(bot_id);
        }
        drop(map);
        match old {
            Some(ready) => {
                Counters::bump(&inner.counters.invalidations);
                inner.destroy_later(ready.instance);
                true
            }
            None => false,
        }
    }

    /// Removes and destroys every cached instance; builds in progress are redone. Returns how
    /// many instances were cached.
    pub fn invalidate_all(&self) -> usize {
        self.inner.remove_where(|_| true)
    }

    /// Applies a registry change notice: an instance older than the notice is marked stale (it
    /// is rebuilt before being served again, and kept as last good meanwhile), or removed when
    /// the bot was deactivated or deleted; a build in progress is redone. Older notices are
    /// ignored.
    pub fn apply_notice(&self, notice: &ChangeNotice) -> NoticeEffect {
        self.inner.apply_notice(notice)
    }

    /// Marks every cached instance stale (after missed events) and redoes builds in progress.
    pub fn mark_all_stale(&self) -> usize {
        self.inner.mark_all_stale()
    }

    /// Destroys every expired instance now (the sweeper does this periodically). Returns how
    /// many were removed.
    pub fn sweep(&self) -> usize {
        self.inner.sweep()
    }

    /// This cache as a [`ChangeListener`] (held weakly): give it to a registry decorator that
    /// announces committed writes in process (`dynreg_hot_reload::EventedRegistry::attach`),
    /// so a write through it marks older instances stale before the write returns.
    pub fn change_listener(&self) -> Weak<dyn ChangeListener> {
        let weak: Weak<Inner<T>> = Arc::downgrade(&self.inner);
        weak
    }

    /// Whether an instance of `bot_id` is cached (ignoring TTL and staleness).
    pub fn is_cached(&self, bot_id: &str) -> bool {
        self.with_slot(bot_id, |s| s.ready.is_some())
            .unwrap_or(false)
    }

    /// The registry revision the cached instance of `bot_id` was built from.
    pub fn cached_revision(&self, bot_id: &str) -> Option<u64> {
        self.with_slot(bot_id, |s| s.ready.as_ref().map(|r| r.revision))
            .flatten()
    }

    /// The config hash the cached instance of `bot_id` was built from.
    pub fn cached_config_hash(&self, bot_id: &str) -> Option<String> {
        self.with_slot(bot_id, |s| {
            s.ready.as_ref().map(|r| r.config_hash.to_string())
        })
        .flatten()
    }

    /// Ids with a cached instance and the revision each was built from.
    pub fn cached(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for shard in self.inner.store.shards() {
            let map = self.inner.store.read(shard);
            out.extend(
                map.values()
                    .filter_map(|s| s.ready.as_ref().map(|r| (s.key.to_string(), r.revision))),
            );
        }
        out
    }

    /// Number of cached instances.
    pub fn len(&self) -> usize {
        self.inner.store.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats {
            size: self.inner.store.len(),
            max_size: self.inner.options.max_size,
            ttl: self.inner.options.ttl,
            hits: self.inner.store.hits(),
            ..CacheStats::default()
        };
        self.inner.counters.fill(&mut s);
        s.destroys = self.inner.destroyer.destroys.load(Ordering::Relaxed);
        s
    }

    /// The backend builds read from.
    pub fn backend(&self) -> &Arc<dyn RegistryBackend> {
        &self.inner.backend
    }

    /// The options in effect.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }

    /// Calls `hook` for every later rebuild that failed while the last good instance kept
    /// serving (after it is logged and counted in [`CacheStats::refresh_failures`]). Hooks run
    /// on the task that ran the build and must not block; the sync layer uses one to publish
    /// the failure on the bus.
    pub fn on_refresh_failure(&self, hook: impl Fn(&RefreshFailure) + Send + Sync + 'static) {
        self.inner
            .failure_hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(hook));
    }

    /// Whether `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Stops the sweeper, waits for builds in progress, destroys every
    /// instance (waiting for each `destroy`), and closes the backend only if the cache owns it.
    /// Later lookups fail with [`CacheError::Closed`]. Idempotent.
    pub async fn close(&self) -> Result<(), dynreg_registry_core::RegistryError> {
        let inner = &self.inner;
        let first = !inner.closed.swap(true, Ordering::AcqRel);
        for t in lock(&inner.tasks).drain(..) {
            t.abort();
        }
        loop {
            inner.remove_where(|_| true);
            let flights: Vec<Arc<Flight<T>>> = inner
                .store
                .shards()
                .iter()
                .flat_map(|s| {
                    inner
                        .store
                        .read(s)
                        .values()
                        .filter_map(|slot| slot.flight.clone())
                        .collect::<Vec<_>>()
                })
                .collect();
            if flights.is_empty() {
                break;
            }
            for f in flights {
                let _ = wait(&f, "").await;
            }
        }
        inner.wait_destroys().await;
        if first && inner.options.owns_backend {
            inner.backend.close().await?;
        }
        Ok(())
    }

    fn with_slot<R>(&self, bot_id: &str, f: impl FnOnce(&Slot<T>) -> R) -> Option<R> {
        let shard = self.inner.store.shard(bot_id);
        let map = self.inner.store.read(shard);
        map.get(bot_id).map(f)
    }
}

impl<T: Send + Sync + 'static> ChangeListener for Inner<T> {
    fn on_change(&self, notice: &ChangeNotice) {
        self.apply_notice(notice);
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    pub(crate) fn expired(&self, ready: &Ready<T>, now: Instant) -> bool {
        self.options
            .ttl
            .is_some_and(|ttl| now.saturating_duration_since(ready.built) >= ttl)
    }

    /// The hit path: the shard's read lock, the coarse clock (the precise one only near the
    /// TTL), the reference bit set if clear, and a hit counted on this thread's stripe.
    fn try_hit(&self, key: &str) -> Option<Arc<T>> {
        let hash = self.store.hash(key);
        let map = self.store.read(self.store.shard_of(hash));
        let (_, slot) = map.raw_entry().from_key_hashed_nocheck(hash, key)?;
        let ready = slot.ready.as_ref()?;
        if slot.stale {
            return None;
        }
        if let Some(ttl) = self.options.ttl {
            let coarse_age = clock::recent().saturating_duration_since(ready.built);
            if coarse_age.saturating_add(clock::SLACK) >= ttl && self.expired(ready, clock::now()) {
                return None;
            }
        }
        Store::touch(slot);
        self.store.count_hit();
        Some(Arc::clone(&ready.instance))
    }

    pub(crate) fn report_failed_rebuild(
        &self,
        key: &str,
        revision: u64,
        serving: u64,
        error: &CacheError,
    ) {
        tracing::error!(
            bot_id = key,
            revision,
            serving_revision = serving,
            %error,
            "rebuild after a registry change failed; the last good instance keeps serving"
        );
        let hooks = self
            .failure_hooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !hooks.is_empty() {
            let failure = RefreshFailure {
                bot_id: key.to_owned(),
                revision,
                serving_revision: serving,
                error: error.to_string(),
            };
            for hook in hooks {
                hook(&failure);
            }
        }
    }

    /// Evicts instances until the size bound holds, by CLOCK (second chance; see `store`).
    pub(crate) fn evict(&self) {
        let Some(max) = self.options.max_size else {
            return;
        };
        if self.store.len() <= max {
            return;
        }
        let _one_evictor = lock(&self.store.evict_lock);
        while self.store.len() > max {
            let Some((stamp, key)) = self.store.pop_oldest() else {
                break;
            };
            let shard = self.store.shard(&key);
            let mut map = self.store.write(shard);
            let Some(slot) = map.get_mut(&*key) else {
                continue;
            };
            if slot.indexed != stamp || slot.ready.is_none() {
                continue;
            }
            if slot.referenced.load(Ordering::Relaxed) {
                self.store.refile(slot);
                continue;
            }
            slot.indexed = 0;
            let old = self.store.take(slot);
            if slot.flight.is_none() {
                map.remove(&*key);
            }
            drop(map);
            if let Some(old) = old {
                Counters::bump(&self.counters.evictions);
                self.destroy_later(old.instance);
            }
        }
    }

    fn apply_notice(&self, notice: &ChangeNotice) -> NoticeEffect {
        let Some(key) = notice.bot_id.as_deref() else {
            // Cleared: everything older than the clear is gone.
            let n = self.remove_where(|slot| match (&slot.ready, notice.revision) {
                (Some(r), Some(rev)) => r.revision < rev,
                _ => true,
            });
            return NoticeEffect::Removed(n);
        };
        let shard = self.store.shard(key);
        let mut map = self.store.write(shard);
        let Some(slot) = map.get_mut(key) else {
            return NoticeEffect::NotCached;
        };
        let Some(ready) = &slot.ready else {
            slot.generation += 1;
            return NoticeEffect::BuildRestarted;
        };
        let newer = notice.revision.is_none_or(|r| r > ready.revision);
        if !newer {
            return NoticeEffect::Ignored;
        }
        if notice.kind.removes() {
            slot.generation += 1;
            let old = self.store.take(slot);
            if slot.flight.is_none() {
                map.remove(key);
            }
            drop(map);
            if let Some(old) = old {
                Counters::bump(&self.counters.invalidations);
                self.destroy_later(old.instance);
            }
            return NoticeEffect::Removed(1);
        }
        if notice.revision.is_some_and(|r| r <= slot.rejected) {
            return NoticeEffect::Ignored;
        }
        slot.generation += 1;
        slot.stale = true;
        NoticeEffect::MarkedStale
    }

    fn mark_all_stale(&self) -> usize {
        let mut n = 0;
        for shard in self.store.shards() {
            let mut map = self.store.write(shard);
            for slot in map.values_mut() {
                slot.generation += 1;
                if slot.ready.is_some() {
                    slot.stale = true;
                    n += 1;
                }
            }
        }
        n
    }

    /// Removes (and destroys) every instance whose slot matches; bumps generations of builds
    /// in progress in matching slots.
    fn remove_where(&self, pred: impl Fn(&Slot<T>) -> bool) -> usize {
        let mut removed = Vec::new();
        for shard in self.store.shards() {
            let mut map = self.store.write(shard);
            map.retain(|_, slot| {
                if !pred(slot) {
                    return true;
                }
                slot.generation += 1;
                if let Some(old) = self.store.take(slot) {
                    removed.push(old.instance);
                }
                slot.flight.is_some()
            });
        }
        let n = removed.len();
        for instance in removed {
            Counters::bump(&self.counters.invalidations);
            self.destroy_later(instance);
        }
        n
    }

    fn sweep(&self) -> usize {
        if self.options.ttl.is_none() {
            return 0;
        }
        let now = clock::now();
        let mut expired = Vec::new();
        for shard in self.store.shards() {
            let mut map = self.store.write(shard);
            map.retain(|_, slot| {
                if !slot.ready.as_ref().is_some_and(|r| self.expired(r, now)) {
                    return true;
                }
                if let Some(old) = self.store.take(slot) {
                    expired.push(old.instance);
                }
                slot.flight.is_some()
            });
        }
        let n = expired.len();
        for instance in expired {
            Counters::bump(&self.counters.expirations);
            self.destroy_later(instance);
        }
        n
    }

    /// Runs `destroy` for an instance that left the cache, off every lock.
    pub(crate) fn destroy_later(&self, instance: Arc<T>) {
        self.destroyer.pending.fetch_add(1, Ordering::AcqRel);
        let factory = Arc::clone(&self.factory);
        let destroyer = Arc::clone(&self.destroyer);
        self.runtime.spawn(async move {
            if AssertUnwindSafe(factory.destroy(instance))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("an instance's destroy panicked");
            }
            destroyer.destroys.fetch_add(1, Ordering::Relaxed);
            if destroyer.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                destroyer.idle.notify_waiters();
            }
        });
    }

    async fn wait_destroys(&self) {
        loop {
            let notified = self.destroyer.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.destroyer.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Tracks `destroy` calls still running, so `close()` can wait for them.
#[derive(Default)]
struct Destroyer {
    pending: AtomicUsize,
    destroys: AtomicU64,
    idle: Notify,
}

async fn sweep_loop<T: Send + Sync + 'static>(weak: Weak<Inner<T>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        inner.sweep();
    }
}
