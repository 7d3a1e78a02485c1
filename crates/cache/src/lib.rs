//! # dynreg-cache
//!
//! Caches of things built from bot registrations, that every replica keeps current:
//!
//! * [`CachingRegistryManager<T>`]: instances built by an [`InstanceFactory`] from a bot's
//!   config (the original's `_create_instance` / `_destroy_instance`), with `get_or_create`,
//!   `invalidate`, `invalidate_all`, `refresh` and [`CacheStats`].
//! * [`ConfigCachingManager`]: the same cache for configs, as [`CachedConfig`] (config,
//!   revision, config hash, environment), with `$resource` references resolved through a
//!   [`ConfigResolver`] (`dynreg-resource-resolver` provides one for an environment).
//!
//! The cache is a data structure over a `RegistryBackend`: it knows no event bus. It is told
//! about registry changes through [`CachingRegistryManager::apply_notice`] (a
//! [`ChangeNotice`] from `dynreg-registry-core`) or as a [`ChangeListener`], and reports failed
//! rebuilds to [`CachingRegistryManager::on_refresh_failure`] hooks. The sync layer
//! (`dynreg-hot-reload`: `EventedRegistry`, `HotReloadManager`) connects it to the bus and the
//! change feed; the facade's `Platform` wires everything from one environment.
//!
//! Features: `testkit` exports [`testkit`], a tracking instance factory for tests (used by
//! this crate's and `dynreg-hot-reload`'s tests).
//!
//! ```
//! # use std::sync::Arc;
//! # use dynreg_cache::{CachingRegistryManager, InstanceFactory};
//! # use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
//! struct Names;
//! #[async_trait::async_trait]
//! impl InstanceFactory<String> for Names {
//!     type Error = std::convert::Infallible;
//!     async fn create(&self, id: &str, config: Arc<serde_json::Value>) -> Result<String, Self::Error> {
//!         Ok(format!("{id}: {}", config["name"]))
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let registry: Arc<dyn RegistryBackend> = Arc::new(InMemoryBackend::new());
//! registry.register("b1", serde_json::json!({"name": "one"})).await.unwrap();
//! let cache = CachingRegistryManager::builder(registry, Names).build().await.unwrap();
//! assert_eq!(*cache.get_or_create("b1").await.unwrap(), "b1: \"one\"");
//! assert_eq!(cache.stats().misses, 1);
//! # }
//! ```
//!
//! ## Guarantees (each fixes a way the original's cache loses or serves stale instances)
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
//!   ([`CacheStats::refresh_failures`]) and handed to [`CachingRegistryManager::on_refresh_failure`]
//!   hooks (the sync layer publishes it on the bus).
//! * **TTL and recency.** TTL on the monotonic clock, enforced on access (to within a few
//!   milliseconds: hits read a coarse clock and the precise one only near the TTL) and by a
//!   background sweeper. A size bound with CLOCK (second-chance) eviction: an instance used
//!   since the hand last passed it is never evicted before one that was not — least recently
//!   used at the granularity of one pass, unlike the original, which evicts the oldest
//!   *created* instance whatever its use. Hits make no shared write besides the shard's read
//!   lock and the instance's `Arc` count.
//! * **Inactive is not served.** An inactive or absent bot is [`CacheError::NotFound`].
//! * **The backend is not owned** unless [`CacheOptions::owns_backend`] says so: `close()`
//!   leaves it open.
//! * **Read-your-writes.** Write through a registry decorator the cache listens to
//!   ([`CachingRegistryManager::change_listener`]; `dynreg_hot_reload::EventedRegistry::attach`):
//!   when the write returns, older instances in this process are already stale.

mod clock;
mod config_cache;
mod error;
mod factory;
mod flight;
mod manager;
mod options;
mod stats;
mod store;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use config_cache::{
    CachedConfig, ConfigCachingManager, ConfigFactory, ConfigResolveError, ConfigResolver,
};
pub use dynreg_registry_core::{ChangeKind, ChangeListener, ChangeNotice};
pub use error::{CacheError, SharedError};
pub use factory::InstanceFactory;
pub use manager::{
    CacheBuilder, CachingRegistryManager, NoticeEffect, RefreshFailure, RefreshFailureHook,
};
pub use options::{CacheOptions, DEFAULT_MAX_BUILD_ATTEMPTS, DEFAULT_MAX_SIZE, DEFAULT_TTL};
pub use stats::CacheStats;
