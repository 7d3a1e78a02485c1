//! `ConfigCachingManager` and `ResolvedConfig`: a cache of bot configs (the section a bot is
//! built from), each carrying the revision and config hash it was read at.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::EventBus;
use dynreg_registry_core::{Registration, RegistryBackend, config_hash};
use serde_json::Value;

use crate::error::CacheError;
use crate::factory::InstanceFactory;
use crate::manager::CachingRegistryManager;
use crate::options::CacheOptions;

/// A config as cached: the section to build from, the full stored config, and where it came
/// from (revision and hash of the stored config).
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
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
}

impl ResolvedConfig {
    /// The value of a top-level key of `config`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key)
    }
}

/// Builds [`ResolvedConfig`]s (never fails).
#[derive(Clone, Debug, Default)]
pub struct ConfigFactory {
    config_key: Option<String>,
}

impl ConfigFactory {
    /// Extracts `config_key` (when present) rather than the whole config.
    pub fn new(config_key: Option<String>) -> Self {
        ConfigFactory { config_key }
    }

    fn resolve(
        &self,
        bot_id: &str,
        raw: Arc<Value>,
        revision: u64,
        hash: String,
    ) -> ResolvedConfig {
        let config = match self.config_key.as_deref().and_then(|k| raw.get(k)) {
            Some(section) => Arc::new(section.clone()),
            None => Arc::clone(&raw),
        };
        ResolvedConfig {
            bot_id: bot_id.to_owned(),
            config,
            raw_config: raw,
            revision,
            config_hash: hash,
        }
    }
}

#[async_trait]
impl InstanceFactory<ResolvedConfig> for ConfigFactory {
    type Error = Infallible;

    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<ResolvedConfig, Infallible> {
        let hash = config_hash(&config);
        Ok(self.resolve(bot_id, config, 0, hash))
    }

    async fn create_from(&self, reg: &Registration) -> Result<ResolvedConfig, Infallible> {
        Ok(self.resolve(
            &reg.bot_id,
            Arc::clone(&reg.config),
            reg.revision,
            reg.config_hash.clone(),
        ))
    }
}

/// A cache of resolved configs with every guarantee of [`CachingRegistryManager`]
/// (which it dereferences to, for `invalidate`, `stats`, `close`...).
#[derive(Clone, Debug)]
pub struct ConfigCachingManager {
    cache: CachingRegistryManager<ResolvedConfig>,
}

impl ConfigCachingManager {
    /// A config cache over `backend`, extracting `config_key` when set, subscribing to registry
    /// change events on `bus` when given.
    pub async fn new(
        backend: Arc<dyn RegistryBackend>,
        config_key: Option<String>,
        options: CacheOptions,
        bus: Option<Arc<dyn EventBus>>,
    ) -> Result<Self, CacheError> {
        let mut b = CachingRegistryManager::builder(backend, ConfigFactory::new(config_key))
            .options(options);
        if let Some(bus) = bus {
            b = b.events(bus);
        }
        Ok(ConfigCachingManager {
            cache: b.build().await?,
        })
    }

    /// Wraps an already built config cache.
    pub fn from_cache(cache: CachingRegistryManager<ResolvedConfig>) -> Self {
        ConfigCachingManager { cache }
    }

    /// The cached config of `bot_id` (built on a miss).
    pub async fn get(&self, bot_id: &str) -> Result<Arc<ResolvedConfig>, CacheError> {
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
    pub fn cache(&self) -> &CachingRegistryManager<ResolvedConfig> {
        &self.cache
    }
}

impl Deref for ConfigCachingManager {
    type Target = CachingRegistryManager<ResolvedConfig>;

    fn deref(&self) -> &Self::Target {
        &self.cache
    }
}
