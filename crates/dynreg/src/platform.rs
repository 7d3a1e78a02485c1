//! `Platform`: one builder that wires a registry, an event bus, a knowledge store, a cache of
//! live bots and hot reload from one environment, with the change topic set once.
//!
//! Invariants the builder keeps (each was a way to get the wiring wrong by hand):
//! * every write through [`Platform::registry`] is announced once: to this process's cache
//!   before the write returns (read-your-writes), then on the bus;
//! * the registry announces and the hot-reload manager listens on the **same** topic;
//! * the cache has no bus subscription of its own: the hot-reload manager holds the replica's
//!   one subscription to registry changes, and reports failed rebuilds on the bus;
//! * [`Platform::close`] shuts down in dependency order: hot reload, cache, registry,
//!   knowledge store, bus.
//!
//! The lower-level pieces ([`crate::cache`], [`crate::hot_reload`], [`crate::build`]) stay
//! public for wiring by hand.

use std::sync::Arc;
use std::time::Duration;

use dynreg_cache::{
    CacheError, CacheOptions, CachedConfig, CachingRegistryManager, ConfigFactory, InstanceFactory,
};
use dynreg_event_bus::{EventBus, EventBusError};
use dynreg_hot_reload::{
    DEFAULT_POLL_INTERVAL, EventedRegistry, HotReloadError, HotReloadManager, REGISTRY_TOPIC,
    ReloadMode,
};
use dynreg_knowledge_store::{KnowledgeBackend, KnowledgeError};
use dynreg_registry_core::{RegistryBackend, RegistryError};
use dynreg_resource_resolver::{
    Component, ComponentPaths, DomainConfig, Environment, ResolveError,
};

use crate::build::{self, Components};
use crate::resolver::EnvironmentResolver;

/// What can go wrong starting or closing a [`Platform`]; each variant says which part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The environment or domain config did not resolve, or a backend could not be built.
    #[error(transparent)]
    Config(#[from] ResolveError),
    /// The domain config has no section for a component the platform needs.
    #[error("the domain config has no {component} section at `{path}`, and none was given")]
    Missing {
        /// The component.
        component: &'static str,
        /// Where it was looked for.
        path: String,
    },
    /// The cache could not be built.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Hot reload could not be configured or started.
    #[error(transparent)]
    HotReload(#[from] HotReloadError),
    /// Closing the registry failed.
    #[error("closing the registry failed: {0}")]
    Registry(#[from] RegistryError),
    /// Closing the knowledge store failed.
    #[error("closing the knowledge store failed: {0}")]
    Knowledge(#[from] KnowledgeError),
    /// Closing the event bus failed.
    #[error("closing the event bus failed: {0}")]
    EventBus(#[from] EventBusError),
}

type MakeCache<T> = Box<dyn FnOnce(Arc<dyn RegistryBackend>) -> CachingBuilder<T> + Send>;
type CachingBuilder<T> = dynreg_cache::CacheBuilder<T>;

/// Configures a [`Platform`]: where its parts come from, what it caches and how it reloads.
pub struct PlatformBuilder<T: Send + Sync + 'static> {
    env: Option<Arc<Environment>>,
    domain: Option<DomainConfig>,
    paths: ComponentPaths,
    parts: Components,
    make_cache: MakeCache<T>,
    cache: CacheOptions,
    mode: Option<ReloadMode>,
    poll_interval: Duration,
    topic: String,
}

impl<T: Send + Sync + 'static> std::fmt::Debug for PlatformBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformBuilder")
            .field("environment", &self.env.as_ref().map(|e| e.name()))
            .field("parts", &self.parts)
            .field("mode", &self.mode)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A running bot platform: registry, cache of live bots kept current by hot reload, event bus
/// and knowledge store, closed together by [`Platform::close`].
pub struct Platform<T: Send + Sync + 'static = CachedConfig> {
    registry: Arc<EventedRegistry>,
    bots: CachingRegistryManager<T>,
    hot_reload: HotReloadManager<T>,
    events: Option<Arc<dyn EventBus>>,
    knowledge: Option<Arc<dyn KnowledgeBackend>>,
    environment: Option<Arc<Environment>>,
}

impl<T: Send + Sync + 'static> std::fmt::Debug for Platform<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("environment", &self.environment.as_ref().map(|e| e.name()))
            .field("registry", &self.registry.kind())
            .field("events", &self.events.as_ref().map(|b| b.kind()))
            .field("knowledge", &self.knowledge.is_some())
            .field("mode", &self.hot_reload.mode())
            .finish_non_exhaustive()
    }
}

impl Platform<CachedConfig> {
    /// A platform whose parts are built from `domain`'s sections (`bot.registry`,
    /// `bot.events`, `bot.knowledge`) resolved against `env`. Until
    /// [`PlatformBuilder::instances`] says otherwise it caches resolved configs (config-only
    /// caching: `$resource` references resolved against `env`).
    pub fn from_env(env: Environment, domain: DomainConfig) -> PlatformBuilder<CachedConfig> {
        let env = Arc::new(env);
        let resolver = Arc::new(EnvironmentResolver::new(Arc::clone(&env)));
        let mut b = PlatformBuilder::with_factory(ConfigFactory::new(None).with_resolver(resolver));
        b.env = Some(env);
        b.domain = Some(domain);
        b
    }

    /// A platform from parts given by hand ([`PlatformBuilder::registry`] is required,
    /// [`PlatformBuilder::events`] and [`PlatformBuilder::knowledge`] optional), caching
    /// configs until [`PlatformBuilder::instances`] says otherwise.
    pub fn builder() -> PlatformBuilder<CachedConfig> {
        PlatformBuilder::with_factory(ConfigFactory::new(None))
    }
}

impl<T: Send + Sync + 'static> PlatformBuilder<T> {
    fn with_factory<F: InstanceFactory<T>>(factory: F) -> Self {
        PlatformBuilder {
            env: None,
            domain: None,
            paths: ComponentPaths::default(),
            parts: Components::default(),
            make_cache: Box::new(move |registry| {
                CachingRegistryManager::builder(registry, factory)
            }),
            cache: CacheOptions::default(),
            mode: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            topic: REGISTRY_TOPIC.to_owned(),
        }
    }

    /// Caches instances built by `factory` (your bots) instead of resolved configs.
    pub fn instances<U: Send + Sync + 'static, F: InstanceFactory<U>>(
        self,
        factory: F,
    ) -> PlatformBuilder<U> {
        PlatformBuilder {
            env: self.env,
            domain: self.domain,
            paths: self.paths,
            parts: self.parts,
            make_cache: Box::new(move |registry| {
                CachingRegistryManager::builder(registry, factory)
            }),
            cache: self.cache,
            mode: self.mode,
            poll_interval: self.poll_interval,
            topic: self.topic,
        }
    }

    /// Where the domain config's sections are (default `bot.registry`, `bot.events`,
    /// `bot.knowledge`).
    pub fn paths(mut self, paths: ComponentPaths) -> Self {
        self.paths = paths;
        self
    }

    /// Uses this registry backend (initialized) instead of the domain config's.
    pub fn registry(mut self, registry: Arc<dyn RegistryBackend>) -> Self {
        self.parts.registry = Some(registry);
        self
    }

    /// Uses this event bus instead of the domain config's.
    pub fn events(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.parts.event_bus = Some(bus);
        self
    }

    /// Uses this knowledge store instead of the domain config's.
    pub fn knowledge(mut self, knowledge: Arc<dyn KnowledgeBackend>) -> Self {
        self.parts.knowledge = Some(knowledge);
        self
    }

    /// The reload mode (default: hybrid with an event bus, polling without).
    pub fn reload(mut self, mode: ReloadMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The poll interval of the polling and hybrid modes (default 5 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The bus topic of registry changes, for the registry and hot reload alike (default
    /// `registry:bots`).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The cache's options.
    pub fn cache(mut self, options: CacheOptions) -> Self {
        self.cache = options;
        self
    }

    /// The cache's TTL (`None`: never expires).
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// The cache's size bound (`None`: unbounded).
    pub fn max_size(mut self, max_size: Option<usize>) -> Self {
        self.cache.max_size = max_size;
        self
    }

    /// Builds what is not given from the domain config, wires the parts, catches up with the
    /// registry and starts hot reload. When this returns, the cache is in sync.
    pub async fn start(self) -> Result<Platform<T>, PlatformError> {
        let mut parts = self.parts;
        if let (Some(env), Some(domain)) = (&self.env, &self.domain) {
            // Build from the domain config only what was not given by hand.
            let resolved = domain.resolve(env)?;
            let section = |c: Component| resolved.section(self.paths.of(c), c);
            if parts.registry.is_none()
                && let Some(s) = section(Component::Registry)?
            {
                parts.registry = Some(build::registry(&s).await?);
            }
            if parts.event_bus.is_none()
                && let Some(s) = section(Component::EventBus)?
            {
                parts.event_bus = Some(build::event_bus(&s).await?);
            }
            if parts.knowledge.is_none()
                && let Some(s) = section(Component::Knowledge)?
            {
                parts.knowledge = Some(build::knowledge(&s).await?);
            }
        }
        let Some(backend) = parts.registry else {
            return Err(PlatformError::Missing {
                component: "registry",
                path: self.paths.registry,
            });
        };
        let registry = Arc::new(
            EventedRegistry::new(backend, parts.event_bus.clone()).with_topic(self.topic.clone()),
        );
        let bots = (self.make_cache)(Arc::clone(&registry) as Arc<dyn RegistryBackend>)
            .options(self.cache)
            .build()
            .await?;
        registry.attach(&bots);
        let mode = self.mode.unwrap_or(if parts.event_bus.is_some() {
            ReloadMode::Hybrid
        } else {
            ReloadMode::Polling
        });
        let mut hot_reload = HotReloadManager::builder(bots.clone())
            .mode(mode)
            .poll_interval(self.poll_interval)
            .topic(self.topic);
        if let Some(bus) = &parts.event_bus {
            hot_reload = hot_reload.events(Arc::clone(bus));
        }
        let hot_reload = hot_reload.build()?;
        hot_reload.start().await?;
        hot_reload.wait_until_synced().await;
        Ok(Platform {
            registry,
            bots,
            hot_reload,
            events: parts.event_bus,
            knowledge: parts.knowledge,
            environment: self.env,
        })
    }
}

impl<T: Send + Sync + 'static> Platform<T> {
    /// The registry: every committed write through it reaches this replica's cache before it
    /// returns and every other replica through the bus (and the change feed).
    pub fn registry(&self) -> &Arc<EventedRegistry> {
        &self.registry
    }

    /// The cache of live bots (or resolved configs), kept current by hot reload.
    pub fn bots(&self) -> &CachingRegistryManager<T> {
        &self.bots
    }

    /// The hot-reload manager (stats, `poll_now`, `reload`).
    pub fn hot_reload(&self) -> &HotReloadManager<T> {
        &self.hot_reload
    }

    /// The event bus, if one was configured.
    pub fn events(&self) -> Option<&Arc<dyn EventBus>> {
        self.events.as_ref()
    }

    /// The knowledge store, if one was configured.
    pub fn knowledge(&self) -> Option<&Arc<dyn KnowledgeBackend>> {
        self.knowledge.as_ref()
    }

    /// The environment the platform was built from, if any.
    pub fn environment(&self) -> Option<&Environment> {
        self.environment.as_deref()
    }

    /// Shuts everything down in dependency order: hot reload stops, the cache destroys its
    /// instances, then the registry, the knowledge store and the bus close. Every part is
    /// closed even if an earlier one fails; the first failure is returned.
    pub async fn close(&self) -> Result<(), PlatformError> {
        self.hot_reload.close().await;
        let mut first: Option<PlatformError> = None;
        if let Err(e) = self.bots.close().await {
            first.get_or_insert(e.into());
        }
        if let Err(e) = self.registry.close().await {
            first.get_or_insert(e.into());
        }
        if let Some(k) = &self.knowledge
            && let Err(e) = k.close().await
        {
            first.get_or_insert(e.into());
        }
        if let Some(b) = &self.events
            && let Err(e) = b.close().await
        {
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}
