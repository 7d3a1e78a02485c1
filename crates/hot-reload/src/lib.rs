//! # dynreg-hot-reload
//!
//! The sync layer: the one home of registry change traffic. It keeps every replica's caches
//! serving the current bot configs, and it is the only layer that connects registry, cache
//! and knowledge storage to the event bus:
//!
//! * [`EventedRegistry`] decorates any registry backend and announces each committed write
//!   once: to in-process caches before the write returns ([`EventedRegistry::attach`],
//!   read-your-writes) and on the bus topic ([`REGISTRY_TOPIC`], in the wire form of
//!   [`notice_to_event`]).
//! * [`RegistryPoller`] polls the registry's change feed (`changes_since(cursor)`): O(changes)
//!   per poll, a full relist only when the cursor expired, no change lost between polls, error
//!   back-off, and a zero/negative interval rejected.
//! * [`HotReloadManager`] in [`ReloadMode::Polling`], [`ReloadMode::EventDriven`] or
//!   [`ReloadMode::Hybrid`], with the replica's one bus subscription to registry changes. It
//!   reacts to the events [`EventedRegistry`] publishes (one per committed write, on every
//!   backend), catches up through the change feed on a bus resync signal, offers
//!   [`HotReloadManager::wait_until_synced`] for start-up readiness, and rebuilds changed bots
//!   build-then-swap: a failed build keeps the last good instance serving and is reported
//!   (error log, `reload_failures`, an `error` event on [`RELOAD_ERRORS_TOPIC`]).
//!
//! * Knowledge storage to the bus: [`also_publish_to`] publishes a knowledge backend's state
//!   writes (`ingest:metadata:write`, `ingest:snapshot:write`), and [`subscribe_to_changes`]
//!   watches one kind of key of a backend through the bus.
//!
//! The data of a change ([`dynreg_registry_core::ChangeNotice`]) lives beside the change feed in
//! `dynreg-registry-core`; its wire form lives here ([`wire`]). The facade's `Platform` wires a
//! registry, a cache and a hot-reload manager from one environment with the topic set once.
//!
//! ```
//! use std::sync::Arc;
//! use dynreg_event_bus::{Delivery, EventBus, InMemoryEventBus};
//! use dynreg_hot_reload::{EventedRegistry, REGISTRY_TOPIC, notice_from_event};
//! use dynreg_registry_core::{ChangeKind, InMemoryBackend, RegistryBackendExt};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus: Arc<dyn EventBus> = Arc::new(InMemoryEventBus::new());
//! let mut sub = bus.subscribe(REGISTRY_TOPIC).await?;
//! let registry = EventedRegistry::new(Arc::new(InMemoryBackend::new()), Some(bus.clone()));
//! let reg = registry.register("b1", serde_json::json!({})).await?;
//! // One committed write, one event, in the wire form every replica reads.
//! let Some(Delivery::Event { event, .. }) = sub.next().await else { unreachable!() };
//! let notice = notice_from_event(&event).unwrap();
//! assert_eq!((notice.kind, notice.revision), (ChangeKind::Created, Some(reg.revision)));
//! # Ok(()) }
//! ```
//!
//! No cargo features: it works with any registry backend and any event bus.

mod error;
mod evented;
mod knowledge;
mod manager;
mod mode;
mod poller;
pub mod wire;

pub use error::HotReloadError;
pub use evented::{DEFAULT_PUBLISH_TIMEOUT, EventedRegistry};
pub use knowledge::{
    ChangesSubscription, KnowledgeWatchError, also_publish_to, subscribe_to_changes,
};
pub use manager::{DEFAULT_POLL_INTERVAL, HotReloadBuilder, HotReloadManager, HotReloadStats};
pub use mode::ReloadMode;
pub use poller::{ChangeCallback, MAX_ERROR_BACKOFF, PollBatch, PollerStats, RegistryPoller};
pub use wire::{
    EVENT_SOURCE, REGISTRY_TOPIC, RELOAD_ERRORS_TOPIC, notice_from_event, notice_to_event,
};
