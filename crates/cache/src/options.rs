//! `CacheOptions`: TTL, size bound, sweeper period and refresh policy of a cache.

use std::time::Duration;

use crate::error::CacheError;

/// The original's default TTL (300 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The original's default size bound (1000 instances).
pub const DEFAULT_MAX_SIZE: usize = 1000;
/// How many times one lookup rebuilds an instance whose registration changed during the build.
pub const DEFAULT_MAX_BUILD_ATTEMPTS: u32 = 16;

/// How a cache keeps instances.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Time to live since an instance was built, on the monotonic clock. `None`: never
    /// expires. `Some(ZERO)`: every lookup rebuilds (the original's `cache_ttl=0`).
    pub ttl: Option<Duration>,
    /// At most this many instances, least recently *used* evicted first. `None`: unbounded.
    /// `Some(0)`: nothing is kept (each lookup still builds once per concurrent burst).
    pub max_size: Option<usize>,
    /// How often the background sweeper destroys expired instances. `None`: half the TTL,
    /// clamped to 10 ms ..= 60 s (no sweeper without a TTL).
    pub sweep_interval: Option<Duration>,
    /// When a rebuild after a change fails, keep serving the last good instance (and report the
    /// failure) instead of failing lookups. Default `true`.
    pub keep_last_good: bool,
    /// Whether `close()` also closes the backend. Default `false`: a cache never closes a
    /// backend it was merely given.
    pub owns_backend: bool,
    /// Bound on rebuilds while the registration keeps changing during builds.
    pub max_build_attempts: u32,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Some(DEFAULT_TTL),
            max_size: Some(DEFAULT_MAX_SIZE),
            sweep_interval: None,
            keep_last_good: true,
            owns_backend: false,
            max_build_attempts: DEFAULT_MAX_BUILD_ATTEMPTS,
        }
    }
}

impl CacheOptions {
    /// Checks the options; errors name the option.
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.sweep_interval == Some(Duration::ZERO) {
            return Err(CacheError::InvalidOption {
                option: "sweep_interval",
                reason: "must be greater than zero".into(),
            });
        }
        if self.max_build_attempts == 0 {
            return Err(CacheError::InvalidOption {
                option: "max_build_attempts",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The sweeper period in effect (`None`: no sweeper).
    pub fn effective_sweep_interval(&self) -> Option<Duration> {
        let ttl = self.ttl?;
        Some(
            self.sweep_interval.unwrap_or_else(|| {
                (ttl / 2).clamp(Duration::from_millis(10), Duration::from_secs(60))
            }),
        )
    }
}
