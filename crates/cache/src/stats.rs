//! `CacheStats`: counters of a cache, and the atomics behind them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of a cache's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Instances currently cached.
    pub size: usize,
    /// The size bound (`None`: unbounded).
    pub max_size: Option<usize>,
    /// The TTL (`None`: none).
    pub ttl: Option<Duration>,
    /// Lookups answered from the cache without waiting.
    pub hits: u64,
    /// Lookups that waited for a build (started one or joined one).
    pub misses: u64,
    /// Instances built successfully.
    pub creations: u64,
    /// Builds that failed (factory error or panic).
    pub creation_failures: u64,
    /// Instances evicted by the size bound.
    pub evictions: u64,
    /// Instances removed because their TTL ran out (on access or by the sweeper).
    pub expirations: u64,
    /// Instances removed by `invalidate`/`invalidate_all` or because the bot was removed.
    pub invalidations: u64,
    /// Instances replaced by a rebuild after a change (build-then-swap).
    pub refreshes: u64,
    /// Rebuilds after a change that failed while the last good instance kept serving.
    pub refresh_failures: u64,
    /// Instances discarded because their registration changed during the build.
    pub discarded_builds: u64,
    /// `destroy` calls completed.
    pub destroys: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) misses: AtomicU64,
    pub(crate) creations: AtomicU64,
    pub(crate) creation_failures: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) discarded_builds: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fill(&self, s: &mut CacheStats) {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.misses = r(&self.misses);
        s.creations = r(&self.creations);
        s.creation_failures = r(&self.creation_failures);
        s.evictions = r(&self.evictions);
        s.expirations = r(&self.expirations);
        s.invalidations = r(&self.invalidations);
        s.refreshes = r(&self.refreshes);
        s.refresh_failures = r(&self.refresh_failures);
        s.discarded_builds = r(&self.discarded_builds);
    }
}
