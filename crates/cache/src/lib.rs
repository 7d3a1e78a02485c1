//! # dynreg-cache
//!
//! Caches of things built from bot registrations, that every replica keeps current:
//!
//! * [`CachingRegistryManager<T>`]: instances built by an [`InstanceFactory`] from a bot's
//!   config (the original's `_create_instance` / `_destroy_instance`), with `get_or_create`,
//!   `invalidate`, `invalidate_all`, `refresh` and [`CacheStats`].
//! * [`ConfigCachingManager`]: the same cache for configs, as [`ResolvedConfig`] (config,
//!   revision, config hash, environment), with `$resource` references resolved through a
//!   [`ConfigResolver`] (`dynreg-resource-resolver` provides one for an environment).
//! * [`EventedRegistry`]: a `RegistryBackend` decorator that publishes one [`ChangeNotice`] per
//!   committed write on [`REGISTRY_TOPIC`] (`registry:bots`, payload `bot_id`, `kind`,
//!   `revision`) and tells attached caches in the same process before the write returns.
//!
//! Features: `testkit` exports [`testkit`], a tracking instance factory for tests (used by
//! this crate's and `dynreg-hot-reload`'s tests). The cache itself works with any
//! `RegistryBackend` and any `EventBus`.
//!
//! ## Guarantees (fixing reference-spec §9.1 #1–#9)
//! * **Single-flight per id.** Concurrent lookups of a cold id share one build; builds of
//!   different ids run in parallel; hits take only a shard's read lock and never wait behind a
//!   build. A failed build is not cached and every waiter gets the error.
//! * **Exactly-once destroy.** Instances are handed out as `Arc<T>`; every built instance is
//!   destroyed exactly once, when it leaves the cache (eviction, invalidation, expiry,
//!   replacement, removal of the bot, `close`) or when it was built from a registration that
//!   changed during the build.
//! * **No stale instance after a change.** Each id has a generation bumped by every change
//!   notice and invalidation; a build that saw its generation move is discarded and redone.
//!   A notice older than the revision an instance was built from is ignored.
//! * **Build-then-swap.** A change marks the instance stale; the next lookup (or
//!   `refresh_in_background`) builds the new one and swaps it in. If that build fails, the last
//!   good instance keeps serving and the failure is logged, counted
//!   ([`CacheStats::refresh_failures`]) and published on [`RELOAD_ERRORS_TOPIC`].
//! * **TTL and LRU.** TTL on the monotonic clock, enforced on access and by a background
//!   sweeper; a size bound with exact least-recently-used eviction.
//! * **Inactive is not served.** An inactive or absent bot is [`CacheError::NotFound`].
//! * **The backend is not owned** unless [`CacheOptions::owns_backend`] says so: `close()`
//!   leaves it open.
//! * **Read-your-writes.** Write through an [`EventedRegistry`] the cache is attached to
//!   ([`CachingRegistryManager::attach`]): when the write returns, older instances in this
//!   process are already stale.

mod config_cache;
mod error;
mod evented;
mod factory;
mod manager;
mod notice;
mod options;
mod stats;
mod store;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use config_cache::{
    ConfigCachingManager, ConfigFactory, ConfigResolveError, ConfigResolver, ResolvedConfig,
};
pub use error::{CacheError, SharedError};
pub use evented::{ChangeListener, EventedRegistry};
pub use factory::InstanceFactory;
pub use manager::{CacheBuilder, CachingRegistryManager, NoticeEffect};
pub use notice::{ChangeKind, ChangeNotice, EVENT_SOURCE, REGISTRY_TOPIC, RELOAD_ERRORS_TOPIC};
pub use options::{CacheOptions, DEFAULT_MAX_BUILD_ATTEMPTS, DEFAULT_MAX_SIZE, DEFAULT_TTL};
pub use stats::CacheStats;
