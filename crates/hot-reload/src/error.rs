//! `HotReloadError`: what polling and hot reload can fail with; variants name the input.

use std::sync::Arc;

use dynreg_cache::CacheError;
use dynreg_event_bus::EventBusError;
use dynreg_registry_core::RegistryError;

/// Errors of [`crate::RegistryPoller`] and [`crate::HotReloadManager`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HotReloadError {
    /// A poll interval that is zero, negative or not finite.
    #[error("invalid poll interval {interval}: must be a positive, finite duration")]
    InvalidPollInterval {
        /// The interval as given.
        interval: String,
    },
    /// The mode needs an event bus and none was given.
    #[error("reload mode {mode} needs an event bus; none was given")]
    BusRequired {
        /// The mode's name.
        mode: &'static str,
    },
    /// Reading the registry's change feed failed.
    #[error("registry {operation} failed while polling: {source}")]
    Registry {
        /// The registry operation.
        operation: &'static str,
        /// The registry's error.
        #[source]
        source: Arc<RegistryError>,
    },
    /// Subscribing to the change topic failed.
    #[error("subscribing to topic {topic:?} failed: {source}")]
    Subscribe {
        /// The bus topic.
        topic: String,
        /// The bus's error.
        #[source]
        source: Arc<EventBusError>,
    },
    /// A cache operation failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The manager was already started.
    #[error("the hot-reload manager is already started")]
    AlreadyStarted,
}

impl HotReloadError {
    pub(crate) fn registry(operation: &'static str, e: RegistryError) -> Self {
        HotReloadError::Registry {
            operation,
            source: Arc::new(e),
        }
    }
}
