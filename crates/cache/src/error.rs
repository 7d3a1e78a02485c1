//! `CacheError`: everything a cache lookup can fail with; each variant names the bot id or option.

use std::sync::Arc;

use dynreg_registry_core::RegistryError;

/// A creation error from an [`crate::InstanceFactory`], shared by every waiter of one creation.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the caching managers. Cloneable: every waiter of a single-flight creation receives
/// the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The bot is not registered, or its registration is not active.
    #[error("no active registration for bot {bot_id:?}")]
    NotFound {
        /// The bot id asked for.
        bot_id: String,
    },
    /// Reading the registration from the registry failed.
    #[error("reading bot {bot_id:?} from the registry failed: {source}")]
    Registry {
        /// The bot id asked for.
        bot_id: String,
        /// The registry's error.
        #[source]
        source: Arc<RegistryError>,
    },
    /// The instance factory failed (or panicked) building the instance; nothing was cached.
    #[error("creating the instance of bot {bot_id:?} from revision {revision} failed: {source}")]
    Create {
        /// The bot id.
        bot_id: String,
        /// The registry revision of the config the build used.
        revision: u64,
        /// The factory's error.
        #[source]
        source: SharedError,
    },
    /// The bot's registration kept changing while its instance was being built.
    #[error("bot {bot_id:?} changed on every one of {attempts} build attempts; giving up")]
    Unstable {
        /// The bot id.
        bot_id: String,
        /// How many builds were attempted.
        attempts: u32,
    },
    /// The manager was closed.
    #[error("the cache is closed; bot {bot_id:?} cannot be served")]
    Closed {
        /// The bot id asked for.
        bot_id: String,
    },
    /// A builder option is out of range.
    #[error("invalid cache option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl CacheError {
    /// Whether this is [`CacheError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, CacheError::NotFound { .. })
    }
}
