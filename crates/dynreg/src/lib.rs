//! # dynreg
//!
//! Dynamic registration for AI-bot applications: bot configurations and knowledge change at
//! run time, and every running replica picks the change up without a restart, without serving
//! stale bots and without losing data. This facade re-exports the layered crates:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`registry`] | `dynreg-registry-core` + `dynreg-registry-backends` | `Registration`, `RegistryBackend`, revisions and change feeds, `create_registry_backend` |
//! | [`events`] | `dynreg-event-bus` | `Event`, `EventBus`, `create_event_bus` |
//! | [`knowledge`] | `dynreg-knowledge-store` | `KnowledgeBackend`, `create_knowledge_backend` |
//! | [`ingestion`] | `dynreg-ingestion` | the document pipeline, embedders, vector stores, `RagKnowledgeBase`, `KnowledgeIngestionManager`, `IngestOrchestrator`, `IndexFollower` |
//! | [`cache`] | `dynreg-cache` | `CachingRegistryManager`, `ConfigCachingManager` (no bus) |
//! | [`hot_reload`] | `dynreg-hot-reload` | the sync layer: `EventedRegistry`, `HotReloadManager`, `ReloadMode`, the wire form of change events |
//! | [`config`] | `dynreg-resource-resolver` | `Environment`, `DomainConfig`, `${VAR}` and `$resource` resolution, portability |
//! | [`build`] | this crate | live backends from config sections |
//!
//! The entry point is [`Platform`]: one builder that builds the registry, event bus and
//! knowledge store from an environment (or takes them by hand), caches your bots, keeps them
//! current with hot reload on one topic, and closes everything in order.
//!
//! ```
//! use std::sync::Arc;
//! use dynreg::{Platform, cache::InstanceFactory, hot_reload::ReloadMode};
//! use dynreg::registry::{InMemoryBackend, RegistryBackendExt};
//! use dynreg::events::InMemoryEventBus;
//!
//! struct Bots;
//! #[async_trait::async_trait]
//! impl InstanceFactory<String> for Bots {
//!     type Error = std::convert::Infallible;
//!     async fn create(&self, id: &str, cfg: Arc<serde_json::Value>) -> Result<String, Self::Error> {
//!         Ok(format!("{id} on {}", cfg["model"]))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let platform = Platform::builder()
//!     .registry(Arc::new(InMemoryBackend::new()))
//!     .events(Arc::new(InMemoryEventBus::new()))
//!     .instances(Bots)
//!     .reload(ReloadMode::Hybrid)
//!     .start()
//!     .await?;
//! platform.registry().register("b1", serde_json::json!({"model": "m1"})).await?;
//! assert_eq!(*platform.bots().get_or_create("b1").await?, "b1 on \"m1\"");
//! platform.registry().register("b1", serde_json::json!({"model": "m2"})).await?;
//! assert_eq!(*platform.bots().get_or_create("b1").await?, "b1 on \"m2\""); // read-your-writes
//! platform.close().await?;
//! # Ok(()) }
//! ```
//!
//! From configuration: `Platform::from_env(Environment::load(..)?, DomainConfig::load(..)?)`
//! builds the parts named by the domain config's `bot.registry`, `bot.events` and
//! `bot.knowledge` sections (see `examples/bot_platform.rs`).
//!
//! ## Features
//! - `sqlite` (default): the SQLite registry backend.
//! - `file` (default): the file registry backend and the filesystem knowledge store.
//! - `postgres`: the PostgreSQL registry backend, the LISTEN/NOTIFY event bus and the cross-process ingest lock.
//! - `redis`: the Redis pub/sub event bus.
//! - `s3`: the S3 registry backend and the S3 knowledge store.
//! - `pgvector`: the PostgreSQL + pgvector vector store of the RAG knowledge base.
//! - `http`: HTTP clients — the `http` registry backend (a dynreg server, or the original's
//!   reference server) and embedding services (OpenAI-compatible, Ollama).
//! - `server`: the HTTP registry server, as [`server`].
//! - `full`: all of the above.
//!
//! The in-memory registry, event bus and knowledge store are always built.

/// The bot registry: model, trait, backends and factory.
pub mod registry {
    pub use dynreg_registry_backends::*;
    pub use dynreg_registry_core::*;
}

/// The HTTP registry server (feature `server`).
#[cfg(feature = "server")]
pub mod server {
    pub use dynreg_server::*;
}

/// The event bus.
pub mod events {
    pub use dynreg_event_bus::*;
}

/// Raw knowledge storage (and, from the sync layer, its bus bridge).
pub mod knowledge {
    pub use dynreg_hot_reload::{
        ChangesSubscription, KnowledgeWatchError, also_publish_to, subscribe_to_changes,
    };
    pub use dynreg_knowledge_store::*;
}

/// Ingestion: the document pipeline, embedding, vector stores, the RAG knowledge base, the
/// ingestion manager and orchestrator.
pub mod ingestion {
    pub use dynreg_ingestion::*;
}

/// Caching of live bot instances and resolved configs.
pub mod cache {
    pub use dynreg_cache::*;
}

/// The sync layer: registry change events, change-feed polling, event-driven and hybrid reload.
pub mod hot_reload {
    pub use dynreg_hot_reload::*;
}

/// Environment configs, `${VAR:default}` substitution, `$resource` references and portability.
pub mod config {
    pub use crate::resolver::EnvironmentResolver;
    pub use dynreg_resource_resolver::*;
}

pub mod build;
mod platform;
mod resolver;

pub use dynreg_resource_resolver::{DomainConfig, Environment};
pub use platform::{Platform, PlatformBuilder, PlatformError};
