//! The cache's storage: sharded slots (read-locked on hits), per-key generation and staleness,
//! and an exact LRU index keyed by last-use time.
//!
//! Hits take only their shard's read lock and store the monotonic time of use in the slot (no
//! shared counter). The LRU index is an ordered set of `(stamp, key)` touched only when an
//! instance is installed, removed or evicted; eviction pops the oldest stamp and, when the
//! slot was used since it was indexed, re-files it at its real last use. Since every hit
//! records its exact time, the victim is always the least recently used instance.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::CacheError;

const SHARDS: usize = 64;

/// A built instance and what it was built from.
pub(crate) struct Ready<T> {
    pub(crate) instance: Arc<T>,
    pub(crate) revision: u64,
    pub(crate) config_hash: Arc<str>,
    pub(crate) built: Instant,
}

/// The shared outcome of one single-flight build.
pub(crate) type FlightResult<T> = Option<Result<Arc<T>, CacheError>>;

/// One in-flight build; every waiter subscribes to its result.
pub(crate) struct Flight<T> {
    pub(crate) tx: watch::Sender<FlightResult<T>>,
}

impl<T> Flight<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Flight {
            tx: watch::Sender::new(None),
        })
    }
}

/// Everything the cache knows about one id.
pub(crate) struct Slot<T> {
    pub(crate) key: Arc<str>,
    /// The instance being served (the last good one during a rebuild).
    pub(crate) ready: Option<Ready<T>>,
    /// The build in progress, if any (at most one per id).
    pub(crate) flight: Option<Arc<Flight<T>>>,
    /// Bumped by every change notice and invalidation; a build whose generation moved is
    /// discarded and redone, so a change during a build never leaves a stale instance.
    pub(crate) generation: u64,
    /// A change newer than `ready` was announced: the instance must not be served as a hit.
    pub(crate) stale: bool,
    /// A revision whose build failed while the last good instance was kept.
    pub(crate) rejected: u64,
    /// Monotonic time of the last use (LRU).
    pub(crate) last_used: AtomicU64,
    /// The stamp under which the slot is filed in the LRU index (0: not filed).
    pub(crate) indexed: u64,
}

impl<T> Slot<T> {
    pub(crate) fn new(key: Arc<str>) -> Self {
        Slot {
            key,
            ready: None,
            flight: None,
            generation: 0,
            stale: false,
            rejected: 0,
            last_used: AtomicU64::new(0),
            indexed: 0,
        }
    }

    pub(crate) fn owns(&self, flight: &Arc<Flight<T>>) -> bool {
        self.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight))
    }
}

pub(crate) type Map<T> = HashMap<Arc<str>, Slot<T>>;

/// One shard, on its own cache lines so that hits on different shards do not contend.
#[repr(align(128))]
pub(crate) struct Shard<T> {
    pub(crate) map: RwLock<Map<T>>,
    pub(crate) hits: AtomicU64,
}

pub(crate) struct Store<T> {
    shards: Box<[Shard<T>]>,
    lru: Mutex<BTreeSet<(u64, Arc<str>)>>,
    len: AtomicUsize,
    epoch: Instant,
    pub(crate) evict_lock: Mutex<()>,
}

pub(crate) fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Store<T> {
    pub(crate) fn new() -> Self {
        Store {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: RwLock::new(HashMap::new()),
                    hits: AtomicU64::new(0),
                })
                .collect(),
            lru: Mutex::new(BTreeSet::new()),
            len: AtomicUsize::new(0),
            epoch: Instant::now(),
            evict_lock: Mutex::new(()),
        }
    }

    pub(crate) fn shard(&self, key: &str) -> &Shard<T> {
        // FNV-1a: cheap, and only spreads keys over shards (the maps hash with RandomState).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h as usize) % SHARDS]
    }

    pub(crate) fn shards(&self) -> &[Shard<T>] {
        &self.shards
    }

    pub(crate) fn read<'a>(&self, shard: &'a Shard<T>) -> RwLockReadGuard<'a, Map<T>> {
        shard.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write<'a>(&self, shard: &'a Shard<T>) -> RwLockWriteGuard<'a, Map<T>> {
        shard.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A monotonic, never-zero use stamp for `now`.
    pub(crate) fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Installs `ready` in `slot` (caller holds the shard's write lock) and files it in the LRU
    /// index as just used. Returns the instance it replaces.
    pub(crate) fn install(
        &self,
        slot: &mut Slot<T>,
        ready: Ready<T>,
        now: Instant,
    ) -> Option<Ready<T>> {
        let stamp = self.stamp(now);
        let mut lru = lock(&self.lru);
        if slot.indexed != 0 {
            lru.remove(&(slot.indexed, Arc::clone(&slot.key)));
        }
        lru.insert((stamp, Arc::clone(&slot.key)));
        drop(lru);
        slot.indexed = stamp;
        slot.last_used.store(stamp, Ordering::Relaxed);
        let old = slot.ready.replace(ready);
        if old.is_none() {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        old
    }

    /// Takes the instance out of `slot` (caller holds the shard's write lock).
    pub(crate) fn take(&self, slot: &mut Slot<T>) -> Option<Ready<T>> {
        let old = slot.ready.take()?;
        if slot.indexed != 0 {
            lock(&self.lru).remove(&(slot.indexed, Arc::clone(&slot.key)));
            slot.indexed = 0;
        }
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(old)
    }

    /// The oldest entry of the LRU index, removed from it.
    pub(crate) fn pop_oldest(&self) -> Option<(u64, Arc<str>)> {
        lock(&self.lru).pop_first()
    }

    /// Re-files `slot` at its real last use (caller holds the shard's write lock).
    pub(crate) fn refile(&self, slot: &mut Slot<T>, stamp: u64) {
        lock(&self.lru).insert((stamp, Arc::clone(&slot.key)));
        slot.indexed = stamp;
    }
}
