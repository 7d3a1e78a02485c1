//! Building live backends from the component sections of a resolved config: the one place
//! where configuration meets the backend crates' factories (`create_registry_backend`,
//! `create_event_bus`, `create_knowledge_backend`).
//!
//! Every error names the section's file, line and YAML path and never shows a value that was
//! substituted from the environment; a kind whose cargo feature is off is
//! [`ResolveError::FeatureDisabled`] naming the feature of this crate to enable.

use std::sync::Arc;

use dynreg_event_bus::{EventBus, EventBusError};
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
