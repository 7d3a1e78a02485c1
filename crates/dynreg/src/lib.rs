//! # dynreg
//!
//! Dynamic registration for AI-bot applications: bot configurations and knowledge change at
//! run time, and every running replica picks the change up without a restart, without serving
//! stale bots and without losing data. This facade re-exports the layered crates:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`registry`] | `dynreg-registry-core` + `dynreg-registry-backends` | `Registration`, `RegistryBackend`, revisions and change feeds, `create_registry_backend`, portability |
//! | [`events`] | `dynreg-event-bus` | `Event`, `EventBus`, `create_event_bus` |
//! | [`knowledge`] | `dynreg-knowledge-store` | `KnowledgeBackend`, `create_knowledge_backend` |
//! | [`cache`] | `dynreg-cache` | `CachingRegistryManager`, `ConfigCachingManager`, `EventedRegistry` |
//! | [`hot_reload`] | `dynreg-hot-reload` | `RegistryPoller`, `HotReloadManager`, `ReloadMode` |
//! | [`config`] | `dynreg-resource-resolver` | `Environment`, `DomainConfig`, `${VAR}` and `$resource` resolution |
//!
//! The entry point for configuration-driven setups is [`Environment`]: load
//! `configs/environments/<name>.yaml`, resolve a domain config against it and build live
//! components (registry, event bus, knowledge store).
//!
//! ## Features
//! - `sqlite` (default): the SQLite registry backend.
//! - `file` (default): the file registry backend and the filesystem knowledge store.
//! - `postgres`: the PostgreSQL registry backend and the LISTEN/NOTIFY event bus.
//! - `redis`: the Redis pub/sub event bus.
//! - `s3`: the S3 registry backend and the S3 knowledge store.
//! - `full`: all of the above.
//!
//! The in-memory registry, event bus and knowledge store are always built.

/// The bot registry: model, trait, backends and factory.
pub mod registry {
    pub use dynreg_registry_backends::*;
    pub use dynreg_registry_core::*;
}

/// The event bus.
pub mod events {
    pub use dynreg_event_bus::*;
}

/// Raw knowledge storage.
pub mod knowledge {
    pub use dynreg_knowledge_store::*;
}

/// Caching of live bot instances and resolved configs, and registry change events.
pub mod cache {
    pub use dynreg_cache::*;
}

/// Hot reload: change-feed polling, event-driven and hybrid reload.
pub mod hot_reload {
    pub use dynreg_hot_reload::*;
}

/// Environment configs, `${VAR:default}` substitution and `$resource` references.
pub mod config {
    pub use dynreg_resource_resolver::*;
}

pub use dynreg_resource_resolver::{DomainConfig, Environment};
