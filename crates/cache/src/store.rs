//! The cache's storage: sharded slots (read-locked on hits), per-key generation and staleness,
//! and a CLOCK (second-chance) recency index.
//!
//! The hit path makes no shared write besides the shard's read lock and the instance's `Arc`
//! count: it reads a coarse clock (no syscall), sets the slot's `referenced` bit only if it is
//! clear, and counts the hit on a counter stripe of its own thread (with no read-modify-write
//! when the thread owns its stripe: only it ever writes there). A hit hashes its key once, with
//! a seeded fast hash (foldhash): the hash picks the shard and probes the shard's map.
//!
//! Recency: the index is a queue of `(sequence, key)` in install order, touched only when an
//! instance is installed, removed or evicted. Eviction pops the front: an instance used since
//! it was filed (its `referenced` bit set) gets a second chance — the bit is cleared and it is
//! re-filed at the back — otherwise it is the victim. So an instance used since the last pass
//! is never evicted before one that was not: least recently used at the granularity of one
//! pass of the hand, without a clock read or a shared write on hits.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use quanta::Instant;

use tokio::sync::watch;

use crate::error::CacheError;

const SHARDS: usize = 64;
/// Hit-counter stripes owned by one thread each (the first threads to count a hit, in any
/// cache): only the owner writes one, so it counts with a plain load and store.
const OWNED_STRIPES: usize = 32;
/// Stripes shared by every later thread, round-robin (counted with `fetch_add`).
const SHARED_STRIPES: usize = 8;
const STRIPES: usize = OWNED_STRIPES + SHARED_STRIPES;

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
    /// Used since it was filed in the recency index (CLOCK's reference bit).
    pub(crate) referenced: AtomicBool,
    /// The sequence under which the slot is filed in the recency index (0: not filed).
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
            referenced: AtomicBool::new(false),
            indexed: 0,
        }
    }

    pub(crate) fn owns(&self, flight: &Arc<Flight<T>>) -> bool {
        self.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight))
    }
}

pub(crate) type Hasher = foldhash::fast::RandomState;
/// A shard's slots. hashbrown rather than std's map for its raw entries: a hit probes with the
/// hash that already picked the shard instead of hashing the key again.
pub(crate) type Map<T> = hashbrown::HashMap<Arc<str>, Slot<T>, Hasher>;

/// One shard, on its own cache lines so that hits on different shards do not contend.
#[repr(align(128))]
pub(crate) struct Shard<T> {
    pub(crate) map: RwLock<Map<T>>,
}

/// A counter stripe on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

thread_local! {
    /// This thread's hit-counter stripe (assigned round-robin on first use).
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn my_stripe() -> usize {
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            let n = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
            i = if n < OWNED_STRIPES {
                n
            } else {
                OWNED_STRIPES + n % SHARED_STRIPES
            };
            s.set(i);
        }
        i
    })
}

pub(crate) struct Store<T> {
    shards: Box<[Shard<T>]>,
    hasher: Hasher,
    /// The recency index: `(sequence, key)` in filing order; the front is the hand.
    lru: Mutex<BTreeSet<(u64, Arc<str>)>>,
    sequence: AtomicU64,
    len: AtomicUsize,
    hits: Box<[Stripe]>,
    pub(crate) evict_lock: Mutex<()>,
}

pub(crate) fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Store<T> {
    pub(crate) fn new() -> Self {
        let hasher = Hasher::default();
        Store {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: RwLock::new(Map::with_hasher(hasher.clone())),
                })
                .collect(),
            hasher,
            lru: Mutex::new(BTreeSet::new()),
            sequence: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            hits: (0..STRIPES).map(|_| Stripe::default()).collect(),
            evict_lock: Mutex::new(()),
        }
    }

    pub(crate) fn shard(&self, key: &str) -> &Shard<T> {
        self.shard_of(self.hash(key))
    }

    /// The maps' own (seeded) hash of `key`: what [`Store::shard_of`] and a raw-entry probe of
    /// the shard's map take.
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key of hash `hash`: its top bits (the maps use the low bits).
    pub(crate) fn shard_of(&self, hash: u64) -> &Shard<T> {
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// Counts one hit on this thread's stripe: a plain load and store on a stripe this thread
    /// owns (no other thread writes it, so no count is lost), `fetch_add` on a shared one.
    pub(crate) fn count_hit(&self) {
        let i = my_stripe();
        let stripe = &self.hits[i].0;
        if i < OWNED_STRIPES {
            stripe.store(stripe.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            stripe.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks `slot` used (a write only when its reference bit is clear).
    pub(crate) fn touch(slot: &Slot<T>) {
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
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

    /// The next never-zero filing sequence (call with the index locked).
    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    /// Installs `ready` in `slot` (caller holds the shard's write lock) and files it at the
    /// back of the recency index, unreferenced. Returns the instance it replaces.
    pub(crate) fn install(&self, slot: &mut Slot<T>, ready: Ready<T>) -> Option<Ready<T>> {
        let mut lru = lock(&self.lru);
        if slot.indexed != 0 {
            lru.remove(&(slot.indexed, Arc::clone(&slot.key)));
        }
        let sequence = self.next_sequence();
        lru.insert((sequence, Arc::clone(&slot.key)));
        drop(lru);
        slot.indexed = sequence;
        slot.referenced.store(false, Ordering::Relaxed);
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

    /// The entry under the hand (the front of the recency index), removed from it.
    pub(crate) fn pop_oldest(&self) -> Option<(u64, Arc<str>)> {
        lock(&self.lru).pop_first()
    }

    /// Gives `slot` its second chance: clears its reference bit and re-files it at the back
    /// (caller holds the shard's write lock).
    pub(crate) fn refile(&self, slot: &mut Slot<T>) {
        let mut lru = lock(&self.lru);
        let sequence = self.next_sequence();
        lru.insert((sequence, Arc::clone(&slot.key)));
        drop(lru);
        slot.indexed = sequence;
        slot.referenced.store(false, Ordering::Relaxed);
    }
}
