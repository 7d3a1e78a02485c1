//! The one error type of the crate; every variant names the input it is about.

use std::io;

/// A convenient alias for results of this crate.
pub type Result<T, E = KnowledgeError> = std::result::Result<T, E>;

/// Everything that can go wrong in a knowledge backend.
///
/// Every variant carries the domain, path, version or key it is about, so a message read in a
/// log says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnowledgeError {
    /// The knowledge base does not exist.
    #[error("knowledge base '{domain_id}' does not exist")]
    KbNotFound {
        /// The missing domain.
        domain_id: String,
    },
    /// `create_kb` on a domain that already exists.
    #[error("knowledge base '{domain_id}' already exists")]
    KbAlreadyExists {
        /// The existing domain.
        domain_id: String,
    },
    /// The file does not exist in the knowledge base.
    #[error("file '{path}' does not exist in knowledge base '{domain_id}'")]
    FileNotFound {
        /// The domain.
        domain_id: String,
        /// The missing path.
        path: String,
    },
    /// A domain id that is not one addressable segment.
    #[error("invalid domain_id {domain_id:?}: {reason}")]
    InvalidDomainId {
        /// The refused id.
        domain_id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A resource path that is not a canonical relative path.
    #[error("invalid path {path:?} in knowledge base '{domain_id}': {reason}")]
    InvalidPath {
        /// The domain.
        domain_id: String,
        /// The refused path.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A path that would be both a file and a folder (`a` and `a/b`).
    #[error(
        "path '{path}' in knowledge base '{domain_id}' conflicts with existing file '{existing}'"
    )]
    PathConflict {
        /// The domain.
        domain_id: String,
        /// The refused path.
        path: String,
        /// The file it collides with.
        existing: String,
    },
    /// A tenant context whose tenant id or state prefix cannot address tenant state.
    #[error("invalid tenant context (tenant {tenant_id:?}): {value:?}: {reason}")]
    InvalidTenantContext {
        /// The context's tenant.
        tenant_id: String,
        /// The refused value (the tenant id, the pattern or the formatted prefix).
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A key kind an operation cannot take (`key_pattern` of `unknown`, a subscription to
    /// several kinds at once).
    #[error("{operation}: {reason} (kinds given: {kinds})")]
    InvalidKeyKind {
        /// The refusing operation.
        operation: &'static str,
        /// The kinds given.
        kinds: String,
        /// What to do instead.
        reason: String,
    },
    /// A change-detection version that is malformed or no longer retained.
    #[error("version {version:?} of knowledge base '{domain_id}' is not available: {reason}")]
    InvalidVersion {
        /// The domain.
        domain_id: String,
        /// The version asked for.
        version: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// An ingestion status string that is not one of the five known values.
    #[error(
        "unknown ingestion status {value:?}; valid: [\"pending\", \"ingesting\", \"ready\", \"error\", \"swapping\"]"
    )]
    InvalidStatus {
        /// The refused value.
        value: String,
    },
    /// A conditional state write whose expected version did not match; nothing was written.
    #[error(
        "conflicting status write on knowledge base '{domain_id}' ({key}): expected version {expected_version:?}, actual {actual_version:?}"
    )]
    Conflict {
        /// The domain.
        domain_id: String,
        /// The state document the write was aimed at.
        key: String,
        /// The version the caller expected.
        expected_version: String,
        /// The version found, if the document exists.
        actual_version: Option<String>,
    },
    /// A stored document that cannot be parsed.
    #[error("corrupt {what} for knowledge base '{domain_id}' at {path}: {reason}")]
    Corrupt {
        /// The domain.
        domain_id: String,
        /// What was being read (index, journal, snapshot).
        what: &'static str,
        /// Where it lives.
        path: String,
        /// The parse failure.
        reason: String,
    },
    /// A filesystem error.
    #[error("I/O error on {path} (knowledge base '{domain_id}'): {source}")]
    Io {
        /// The domain ("" when not about one).
        domain_id: String,
        /// The file or folder.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An object-store error (S3 backend).
    #[cfg(feature = "s3")]
    #[error("object store error on key {key} (knowledge base '{domain_id}'): {source}")]
    Store {
        /// The domain ("" when not about one).
        domain_id: String,
        /// The object key.
        key: String,
        /// The cause.
        #[source]
        source: Box<object_store::Error>,
    },
    /// `create_knowledge_backend` with a kind nobody knows.
    #[error("unknown knowledge backend {kind:?}; available: {available}")]
    UnknownBackend {
        /// The requested kind.
        kind: String,
        /// The kinds built into this binary.
        available: String,
    },
    /// `create_knowledge_backend` with a kind whose feature is not built.
    #[error(
        "knowledge backend {kind:?} is not built; enable the cargo feature \"{feature}\" of dynreg-knowledge-store"
    )]
    FeatureDisabled {
        /// The requested kind.
        kind: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// A bad backend configuration value.
    #[error("invalid configuration for knowledge backend {kind:?}: {field}: {reason}")]
    Config {
        /// The backend kind.
        kind: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A background task panicked or was cancelled.
    #[error("background task for knowledge base '{domain_id}' failed: {reason}")]
    Task {
        /// The domain.
        domain_id: String,
        /// What happened.
        reason: String,
    },
}

impl KnowledgeError {
    /// True for refusals of a hostile or malformed identifier, path or version — as opposed to
    /// "not found" — so callers can tell an attack from an absence.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::InvalidDomainId { .. }
                | Self::InvalidPath { .. }
                | Self::PathConflict { .. }
                | Self::InvalidTenantContext { .. }
        )
    }

    #[cfg(feature = "file")]
    pub(crate) fn io(domain_id: &str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Self::Io {
            domain_id: domain_id.to_owned(),
            path: path.to_string(),
            source,
        }
    }

    #[cfg(feature = "file")]
    pub(crate) fn task(domain_id: &str, err: tokio::task::JoinError) -> Self {
        Self::Task {
            domain_id: domain_id.to_owned(),
            reason: err.to_string(),
        }
    }
}
