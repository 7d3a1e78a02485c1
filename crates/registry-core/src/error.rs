//! `RegistryError`: one error enum for every backend; each variant names what it is about.

use std::fmt;

use crate::write::WriteCondition;

/// The result type of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A boxed source error from a backend's driver (SQLite, PostgreSQL, the filesystem, S3).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The bot id breaks the id rules of [`crate::validate_bot_id`].
    #[error("invalid bot id {id}: {reason}")]
    InvalidId {
        /// The id, quoted and shortened to at most 80 characters.
        id: DisplayId,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The config, status or metadata of a write is not acceptable.
    #[error("invalid registration for bot {bot_id:?}: {reason}")]
    InvalidRegistration {
        /// The bot id of the write.
        bot_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A list/count query names an unknown sort field or is otherwise malformed.
    #[error("invalid registry query: {reason}")]
    InvalidQuery {
        /// What is wrong.
        reason: String,
    },
    /// A conditional write found another revision than the caller expected.
    #[error("conflict on bot {bot_id:?}: expected {expected}, found {}", actual.map_or_else(|| "no registration".to_owned(), |r| format!("revision {r}")))]
    Conflict {
        /// The bot id of the write.
        bot_id: String,
        /// What the caller expected.
        expected: WriteCondition,
        /// The revision found (`None`: the id does not exist).
        actual: Option<u64>,
    },
    /// `create_registry_backend` does not know this kind.
    #[error("unknown registry backend kind {kind:?}; supported kinds: {supported}")]
    UnknownBackend {
        /// The kind asked for.
        kind: String,
        /// The kinds this build supports.
        supported: String,
    },
    /// The kind exists but its cargo feature is not compiled in.
    #[error(
        "registry backend kind {kind:?} is not compiled in; enable the cargo feature `{feature}`"
    )]
    FeatureDisabled {
        /// The kind asked for.
        kind: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// A backend config value is missing or invalid.
    #[error("invalid {backend} registry config key {key:?}: {reason}")]
    InvalidBackendConfig {
        /// The backend kind.
        backend: &'static str,
        /// The config key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored document or row cannot be read back; nothing was changed.
    #[error("corrupt {backend} registry data at {location}: {reason}")]
    Corrupt {
        /// The backend kind.
        backend: &'static str,
        /// Where (file path, object key, table and id).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend was used before `initialize()` or after `close()`.
    #[error("{backend} registry backend is not initialized; call initialize() first")]
    NotInitialized {
        /// The backend kind.
        backend: &'static str,
    },
    /// The backend refuses writes (read-only mode).
    #[error("{backend} registry backend is read-only; {operation} refused")]
    ReadOnly {
        /// The backend kind.
        backend: &'static str,
        /// The refused operation.
        operation: &'static str,
    },
    /// The backend (or the server behind it) does not offer this operation; nothing was done.
    #[error("{backend} registry backend does not support {operation}: {reason}")]
    Unsupported {
        /// The backend kind.
        backend: &'static str,
        /// The operation asked for.
        operation: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The storage (database, filesystem, object store, network) failed.
    #[error("{backend} registry {operation} failed{}: {source}", bot_id.as_ref().map(|b| format!(" for bot {b:?}")).unwrap_or_default())]
    Storage {
        /// The backend kind.
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// The bot id involved, if any.
        bot_id: Option<String>,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl RegistryError {
    /// A storage error for `operation` on `backend`, optionally about one bot.
    pub fn storage(
        backend: &'static str,
        operation: &'static str,
        bot_id: Option<&str>,
        source: impl Into<BoxError>,
    ) -> Self {
        RegistryError::Storage {
            backend,
            operation,
            bot_id: bot_id.map(str::to_owned),
            source: source.into(),
        }
    }

    /// Whether this is a [`RegistryError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, RegistryError::Conflict { .. })
    }
}

/// An id as shown in errors: debug-quoted, at most 80 characters, with its length when cut.
#[derive(Clone, PartialEq, Eq)]
pub struct DisplayId(String);

impl DisplayId {
    /// Wraps an id for display.
    pub fn new(id: &str) -> Self {
        const MAX: usize = 80;
        if id.chars().count() <= MAX {
            DisplayId(format!("{id:?}"))
        } else {
            let head: String = id.chars().take(MAX).collect();
            DisplayId(format!("{head:?}… ({} bytes)", id.len()))
        }
    }
}

impl fmt::Display for DisplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
