//! Building live backends from the component sections of a resolved config: the one place
//! where configuration meets the backend crates' factories (`create_registry_backend`,
//! `create_event_bus`, `create_knowledge_backend`).
//!
//! Every error names the section's file, line and YAML path and never shows a value that was
//! substituted from the environment; a kind whose cargo feature is off is
//! [`ResolveError::FeatureDisabled`] naming the feature of this crate to enable.

use std::sync::Arc;

use dynreg_event_bus::{EventBus, EventBusError};
use dynreg_ingestion::{InProcessLock, IngestLock};
use dynreg_knowledge_store::{KnowledgeBackend, KnowledgeError};
use dynreg_registry_core::{RegistryBackend, RegistryError};
use dynreg_resource_resolver::{
    Component, ComponentPaths, ComponentSection, ResolveError, ResolvedConfig,
};

/// The live handles built from a domain config.
#[derive(Clone, Default)]
pub struct Components {
    /// The registry backend (initialized), if the config has a registry section.
    pub registry: Option<Arc<dyn RegistryBackend>>,
    /// The event bus (connected), if the config has an event-bus section.
    pub event_bus: Option<Arc<dyn EventBus>>,
    /// The knowledge backend, if the config has a knowledge section.
    pub knowledge: Option<Arc<dyn KnowledgeBackend>>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components")
            .field("registry", &self.registry.as_ref().map(|r| r.kind()))
            .field("event_bus", &self.event_bus.as_ref().map(|b| b.kind()))
            .field("knowledge", &self.knowledge.is_some())
            .finish()
    }
}

/// Builds and initializes the registry backend of `section`.
pub async fn registry(
    section: &ComponentSection,
) -> Result<Arc<dyn RegistryBackend>, ResolveError> {
    dynreg_registry_backends::create_registry_backend(&section.kind, &section.options_value())
        .await
        .map_err(|e| match e {
            RegistryError::FeatureDisabled { feature, .. } => section.feature_disabled(feature),
            other => section.build_error(other),
        })
}

/// Builds (and connects) the event bus of `section`.
pub async fn event_bus(section: &ComponentSection) -> Result<Arc<dyn EventBus>, ResolveError> {
    dynreg_event_bus::create_event_bus(&section.options_with_backend())
        .await
        .map_err(|e| match e {
            EventBusError::FeatureDisabled { feature, .. } => section.feature_disabled(feature),
            other => section.build_error(other),
        })
}

/// Builds the knowledge backend of `section`.
pub async fn knowledge(
    section: &ComponentSection,
) -> Result<Arc<dyn KnowledgeBackend>, ResolveError> {
    dynreg_knowledge_store::create_knowledge_backend(&section.kind, &section.options_value())
        .await
        .map_err(|e| match e {
            KnowledgeError::FeatureDisabled { feature, .. } => section.feature_disabled(feature),
            other => section.build_error(other),
        })
}

/// The lock that keeps two ingests of one knowledge base apart ([`IngestOrchestrator`]'s
/// lock), chosen from `config`: a PostgreSQL advisory lock when the event bus is PostgreSQL
/// (on the bus's server) or else the registry is (on the registry's), so that the ingests of
/// every process of the platform exclude each other; otherwise an in-process lock, which
/// excludes the ingests of this process (with the in-process bus there is only one).
/// A PostgreSQL section in a build without the `postgres` feature is
/// [`ResolveError::FeatureDisabled`].
///
/// [`IngestOrchestrator`]: dynreg_ingestion::IngestOrchestrator
pub fn ingest_lock(
    config: &ResolvedConfig,
    paths: &ComponentPaths,
) -> Result<Arc<dyn IngestLock>, ResolveError> {
    let bus = config.section(paths.of(Component::EventBus), Component::EventBus)?;
    if let Some(s) = bus.filter(|s| s.kind == "postgres") {
        return postgres_lock(&s, Server::Bus);
    }
    let registry = config.section(paths.of(Component::Registry), Component::Registry)?;
    if let Some(s) = registry.filter(|s| s.kind == "postgres") {
        return postgres_lock(&s, Server::Registry);
    }
    Ok(Arc::new(InProcessLock::default()))
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
enum Server {
    Bus,
    Registry,
}

#[cfg(feature = "postgres")]
fn postgres_lock(
    section: &ComponentSection,
    server: Server,
) -> Result<Arc<dyn IngestLock>, ResolveError> {
    use dynreg_ingestion::orchestrator::PgAdvisoryLock;
    Ok(Arc::new(match server {
        Server::Bus => {
            let options = section.options_with_backend();
            let map = options.as_object().cloned().unwrap_or_default();
            let c = dynreg_event_bus::postgres::PostgresEventBusConfig::from_json(&map)
                .map_err(|e| section.build_error(e))?;
            PgAdvisoryLock::new(c.url)
        }
        Server::Registry => {
            let c = dynreg_registry_backends::config::PostgresConfig::from_json(
                &section.options_value(),
            )
            .and_then(|c| c.connect_options())
            .map_err(|e| section.build_error(e))?;
            PgAdvisoryLock::with_options(c)
        }
    }))
}

#[cfg(not(feature = "postgres"))]
fn postgres_lock(
    section: &ComponentSection,
    _server: Server,
) -> Result<Arc<dyn IngestLock>, ResolveError> {
    Err(section.feature_disabled("postgres"))
}

/// Builds every component found at the default paths (`bot.registry`, `bot.events`,
/// `bot.knowledge`) of `config`.
pub async fn components(config: &ResolvedConfig) -> Result<Components, ResolveError> {
    components_at(config, &ComponentPaths::default()).await
}

/// Builds every component found at `paths`. A section that is absent leaves its handle `None`;
/// one that is present but fails is an error.
pub async fn components_at(
    config: &ResolvedConfig,
    paths: &ComponentPaths,
) -> Result<Components, ResolveError> {
    let mut out = Components::default();
    if let Some(s) = config.section(paths.of(Component::Registry), Component::Registry)? {
        out.registry = Some(registry(&s).await?);
    }
    if let Some(s) = config.section(paths.of(Component::EventBus), Component::EventBus)? {
        out.event_bus = Some(event_bus(&s).await?);
    }
    if let Some(s) = config.section(paths.of(Component::Knowledge), Component::Knowledge)? {
        out.knowledge = Some(knowledge(&s).await?);
    }
    Ok(out)
}
