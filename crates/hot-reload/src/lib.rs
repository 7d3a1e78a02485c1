//! # dynreg-hot-reload
//!
//! Keeps every replica's caches serving the current bot configs:
//!
//! * [`RegistryPoller`] polls the registry's change feed (`changes_since(cursor)`): O(changes)
//!   per poll, a full relist only when the cursor expired, no change lost between polls, error
//!   back-off, and a zero/negative interval rejected (reference-spec §9.1 #10).
//! * [`HotReloadManager`] in [`ReloadMode::Polling`], [`ReloadMode::EventDriven`] or
//!   [`ReloadMode::Hybrid`]. It reacts to the registry change events that
//!   `dynreg_cache::EventedRegistry` publishes on `registry:bots` (one per committed write, on
//!   every backend), catches up through the change feed on a bus resync signal, offers
//!   [`HotReloadManager::wait_until_synced`] for start-up readiness, and rebuilds changed bots
//!   build-then-swap: a failed build keeps the last good instance serving and is reported
//!   (error log, `reload_failures`, an `error` event on `registry:errors`).
//!
//! No cargo features: it works with any registry backend and any event bus.

mod error;
mod manager;
mod mode;
mod poller;

pub use error::HotReloadError;
pub use manager::{DEFAULT_POLL_INTERVAL, HotReloadBuilder, HotReloadManager, HotReloadStats};
pub use mode::ReloadMode;
pub use poller::{ChangeCallback, MAX_ERROR_BACKOFF, PollBatch, PollerStats, RegistryPoller};
