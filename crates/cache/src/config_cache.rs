//! `ConfigCachingManager` and `CachedConfig`: a cache of bot configs (the section a bot is
//! built from), each carrying the revision and config hash it was read at, with references
//! (such as `$resource` blocks) resolved by a [`ConfigResolver`] when one is given.

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use dynreg_registry_core::{BoxError, Registration, RegistryBackend, config_hash};
use serde_json::Value;

use crate::error::CacheError;
use crate::factory::InstanceFactory;
use crate::manager::CachingRegistryManager;
use crate::options::CacheOptions;

/// A config as cached: the section to build from, the full stored config, and where it came
/// from (revision and hash of the stored config).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedConfig {
    /// The bot id.
    pub bot_id: String,
    /// The config to build from: `raw_config[config_key]` when a key is set and present,
    /// otherwise the whole config.
    pub config: Arc<Value>,
    /// The whole stored config.
    pub raw_config: Arc<Value>,
    /// The registry revision of the registration it was read from.
    pub revision: u64,
    /// SHA-256 (hex) of the canonical JSON of `raw_config`.
    pub config_hash: String,
    /// The environment the config was resolved against (`None` without a resolver).
    pub environment_name: Option<String>,
}

impl CachedConfig {
    /// The value of a top-level key of `config`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key)
    }
}

/// Resolves what a stored config refers to — for example `$resource` blocks against an
/// environment (`dynreg-resource-resolver` implements it for its `Environment`) — before the
/// config is cached. The stored config is never changed; [`CachedConfig::raw_config`] keeps
/// it as stored.
pub trait ConfigResolver: Send + Sync + 'static {
    /// The name of the environment configs are resolved against, recorded in each
    /// [`CachedConfig`].
    fn environment_name(&self) -> Option<&str> {
        None
    }

    /// Resolves the section `bot_id` is built from. An error should name the reference that
    /// failed; the cache adds the bot id and revision.
    fn resolve(&self, bot_id: &str, section: &Value) -> Result<Value, BoxError>;
}

/// A [`ConfigResolver`] failed: the config of `bot_id` refers to something it could not
/// resolve. Nothing is cached; a previously cached config of the bot keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("resolving the references in the config of bot {bot_id:?} failed: {source}")]
pub struct ConfigResolveError {
    /// The bot id.
    pub bot_id: String,
    /// The resolver's error.
    #[source]
    pub source: BoxError,
}

/// Builds [`CachedConfig`]s: extracts the configured section and resolves it.
#[derive(Clone, Default)]
pub struct ConfigFactory {
    config_key: Option<String>,
    resolver: Option<Arc<dyn ConfigResolver>>,
}

impl std::fmt::Debug for ConfigFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFactory")
            .field("config_key", &self.config_key)
            .field(
                "resolver",
                &self.resolver.as_ref().map(|r| r.environment_name()),
            )
            .finish()
    }
}

impl ConfigFactory {
    /// Extracts `config_key` (when present) rather than the whole config.
    pub fn new(config_key: Option<String>) -> Self {
        ConfigFactory {
            config_key,
            resolver: None,
        }
    }

    /// Resolves each extracted section with `resolver`.
    pub fn with_resolver(mut self, resolver: Arc<dyn ConfigResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    fn resolve(
        &self,
        bot_id: &str,
        raw: Arc<Value>,
        revision: u64,
        hash: String,
    ) -> Result<CachedConfig, ConfigResolveError> {
        let section = self.config_key.as_deref().and_then(|k| raw.get(k));
        let config = match (&self.resolver, section) {
            (Some(r), section) => Arc::new(r.resolve(bot_id, section.unwrap_or(&raw)).map_err(
                |source| ConfigResolveError {
                    bot_id: bot_id.to_owned(),
                    source,
                },
            )?),
            (None, Some(section)) => Arc::new(section.clone()),
            (None, None) => Arc::clone(&raw),
        };
        Ok(CachedConfig {
            bot_id: bot_id.to_owned(),
            config,
            raw_config: raw,
            revision,
            config_hash: hash,
            environment_name: self
                .resolver
                .as_ref()
                .and_then(|r| r.environment_name().map(str::to_owned)),
        })
    }
}

#[async_trait]
impl InstanceFactory<CachedConfig> for ConfigFactory {
    type Error = ConfigResolveError;

    async fn create(
        &self,
        bot_id: &str,
        config: Arc<Value>,
    ) -> Result<CachedConfig, ConfigResolveError> {
        let hash = config_hash(&config);
        self.resolve(bot_id, config, 0, hash)
    }

    async fn create_from(&self, reg: &Registration) -> Result<CachedConfig, ConfigResolveError> {
        self.resolve(
            &reg.bot_id,
            Arc::clone(&reg.config),
            reg.revision,
            reg.config_hash.clone(),
        )
    }
}

/// A cache of resolved configs with every guarantee of [`CachingRegistryManager`]
/// (which it dereferences to, for `invalidate`, `stats`, `close`...).
#[derive(Clone, Debug)]
pub struct ConfigCachingManager {
    cache: CachingRegistryManager<CachedConfig>,
}

impl ConfigCachingManager {
    /// A config cache over `backend`, extracting `config_key` when set. Keep it current with a
    /// hot-reload manager (`dynreg_hot_reload`), as any other cache.
    pub async fn new(
        backend: Arc<dyn RegistryBackend>,
        config_key: Option<String>,
        options: CacheOptions,
    ) -> Result<Self, CacheError> {
        Self::with_factory(backend, ConfigFactory::new(config_key), options).await
    }

    /// A config cache whose sections are resolved by `resolver` (e.g. `$resource` references
    /// against an environment). A config that does not resolve is an error for `get` — a
    /// [`CacheError::Create`] whose source is a [`ConfigResolveError`] — and is not cached; after
    /// a change, the last config that resolved keeps serving.
    pub async fn with_resolver(
        backend: Arc<dyn RegistryBackend>,
        config_key: Option<String>,
        resolver: Arc<dyn ConfigResolver>,
        options: CacheOptions,
    ) -> Result<Self, CacheError> {
        let factory = ConfigFactory::new(config_key).with_resolver(resolver);
        Self::with_factory(backend, factory, options).await
    }

    async fn with_factory(
        backend: Arc<dyn RegistryBackend>,
        factory: ConfigFactory,
        options: CacheOptions,
    ) -> Result<Self, CacheError> {
        let cache = CachingRegistryManager::builder(backend, factory)
            .options(options)
            .build()
            .await?;
        Ok(ConfigCachingManager { cache })
    }

    /// Wraps an already built config cache.
    pub fn from_cache(cache: CachingRegistryManager<CachedConfig>) -> Self {
        ConfigCachingManager { cache }
    }

    /// The cached config of `bot_id` (built on a miss).
    pub async fn get(&self, bot_id: &str) -> Result<Arc<CachedConfig>, CacheError> {
        self.cache.get_or_create(bot_id).await
    }

    /// The config section to build `bot_id` from.
    pub async fn get_resolved_config(&self, bot_id: &str) -> Result<Arc<Value>, CacheError> {
        Ok(Arc::clone(&self.get(bot_id).await?.config))
    }

    /// The stored config of an active `bot_id`, read from the backend without a touch and
    /// without populating the cache.
    pub async fn get_raw_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>, CacheError> {
        self.cache
            .backend()
            .peek_config(bot_id)
            .await
            .map_err(|e| CacheError::Registry {
                bot_id: bot_id.to_owned(),
                source: Arc::new(e),
            })
    }

    /// The underlying cache.
    pub fn cache(&self) -> &CachingRegistryManager<CachedConfig> {
        &self.cache
    }
}

impl Deref for ConfigCachingManager {
    type Target = CachingRegistryManager<CachedConfig>;

    fn deref(&self) -> &Self::Target {
        &self.cache
    }
}
