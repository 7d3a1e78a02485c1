//! # dynreg-registry-core
//!
//! The contract of dynreg's bot registry: the [`Registration`] model (the wire shape of the
//! Python original, plus a registry-wide `revision` and a `config_hash`), the
//! [`RegistryBackend`] trait with its convenience extension [`RegistryBackendExt`], the
//! change feed ([`RegistryBackend::changes_since`]), the in-memory backend
//! ([`InMemoryBackend`]) and, behind the `conformance` feature, the conformance suite every backend runs.
//!
//! Persistent backends (SQLite, PostgreSQL, file, S3) live in `dynreg-registry-backends`,
//! each behind its own feature; the facade crate `dynreg` re-exports both as `dynreg::registry`.
//!
//! ```
//! use dynreg_registry_core::{ChangeFeed, InMemoryBackend, RegistryBackend, RegistryBackendExt};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dynreg_registry_core::Result<()> {
//! let registry = InMemoryBackend::new();
//! let first = registry.register("support-bot", serde_json::json!({"model": "m1"})).await?;
//! registry.register("support-bot", serde_json::json!({"model": "m2"})).await?;
//! // Every committed write took the next revision; the change feed reports the latest state.
//! let ChangeFeed::Changes { changes, .. } = registry.changes_since(first.revision).await? else {
//!     unreachable!("a recent cursor is never expired")
//! };
//! assert_eq!(changes.len(), 1);
//! assert_eq!(registry.list_ids().await?, ["support-bot"]);
//! # Ok(()) }
//! ```
//!
//! ## Semantics every backend shares
//! - **Revisions.** Every committed write (register that changes something, deactivate of an
//!   active registration, unregister, clear) takes the next registry-wide revision; no two
//!   writes ever get the same one, even from two processes on the same storage.
//!   Re-registering an identical config, status and metadata changes nothing and keeps the
//!   revision.
//! - **Conditional writes.** [`RegisterOptions::condition`] makes a register a create-only or
//!   compare-and-swap write that fails with [`RegistryError::Conflict`];
//!   [`RegistryBackend::unregister_if`] is the compare-and-swap delete.
//! - **Change feed.** [`RegistryBackend::changes_since`] returns the upserts and deletions
//!   after a revision in revision order, or [`ChangeFeed::Expired`] when the caller must relist.
//! - **Inactive is not servable.** [`RegistryBackend::get_config`] and
//!   [`RegistryBackend::peek_config`] return `None` for a registration that is not active,
//!   so a deactivated bot is never built from its config; [`RegistryBackend::get`] and
//!   [`RegistryBackend::peek`] still return it with its status.
//! - **Touching reads** ([`RegistryBackend::get`]) advance only `last_accessed_at`, never
//!   rewriting config or status, so a touch can never revert a concurrent register. Persistent
//!   backends write a touch only when the stored value is older than their touch resolution
//!   (default one second), so hot reads are not writes.
//! - **Shared values.** `config` and `metadata` are `Arc`s: reads hand out cheap clones and
//!   nobody can mutate what a backend stored.
//! - **Order.** Without a sort, lists are ordered by `bot_id`.
//!
//! ## Implementing a backend
//! Implement [`RegistryBackend`] (every required method, plus [`RegistryBackend::get_config`] /
//! [`RegistryBackend::peek_config`] where a faster path exists), build on the shared helpers of
//! [`backend`] (write validation, the no-op decision, timestamps, in-process query evaluation),
//! and run the conformance suite.
//!
//! ## Features
//! - `conformance`: exports [`conformance`], the suite of async test cases and the
//!   [`registry_conformance_tests!`] macro.

pub mod backend;
mod changes;
mod error;
mod hash;
mod id;
mod instrument;
mod memory;
mod model;
mod query;
mod time;
pub mod wire;
mod write;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use changes::{Change, ChangeFeed, ChangeKind, ChangeListener, ChangeNotice};
pub use error::{BoxError, DisplayId, RegistryError, Result};
pub use hash::{canonical_json, config_hash};
pub use id::{MAX_BOT_ID_BYTES, validate_bot_id};
pub use instrument::Instrumented;
pub use memory::InMemoryBackend;
pub use model::{Registration, Status};
pub use query::{ListQuery, SortOrder, SortSpec};
pub use write::{Deactivation, RegisterOptions, Registered, WriteCondition, WriteEffect};

/// A store of bot registrations.
///
/// Implementations are cheap to share (`Arc<dyn RegistryBackend>`) and safe to call from many
/// tasks at once. See the crate docs for the semantics every implementation must have; the
/// `conformance` feature holds the suite that proves them.
#[async_trait]
pub trait RegistryBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The backend kind (`memory`, `sqlite`, `postgres`, `file`, `s3`, `http`).
    fn kind(&self) -> &'static str;

    /// Idempotent setup (create schema, directories...).
    async fn initialize(&self) -> Result<()>;

    /// Releases resources. Never deletes data.
    async fn close(&self) -> Result<()>;

    /// Creates or replaces a registration (config, status and metadata wholesale), keeping
    /// `created_at` of an existing id, and says what the write did. Identical content is a
    /// no-op ([`WriteEffect::Unchanged`]) that keeps the revision.
    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered>;

    /// A touching read: the registration in any status, with `last_accessed_at` advanced.
    async fn get(&self, bot_id: &str) -> Result<Option<Registration>>;

    /// A non-touching read: the registration in any status; changes nothing.
    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>>;

    /// Soft delete: sets the status to `inactive`, and says what the write did
    /// ([`WriteEffect::Absent`] if the id does not exist; deactivating an inactive registration
    /// is [`WriteEffect::Unchanged`]).
    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation>;

    /// Hard delete. `false` if the id does not exist.
    async fn unregister(&self, bot_id: &str) -> Result<bool>;

    /// Compare-and-swap hard delete: removes the registration only if it is at `revision`.
    /// When it is at another revision, or absent, nothing is deleted and the error is
    /// [`RegistryError::Conflict`] (with the revision found). One atomic step, so a
    /// registration written after the caller read `revision` is never deleted.
    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()>;

    /// Lists registrations (see [`ListQuery`] for the semantics).
    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>>;

    /// Counts registrations of `status` (every status when `None`) matching `filter_metadata`.
    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64>;

    /// The changes after `revision` (see [`ChangeFeed`]).
    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed>;

    /// The registry's current revision (0 for a registry that has never been written).
    async fn current_revision(&self) -> Result<u64>;

    /// Removes every registration (each removal is a change with its own revision).
    /// Returns how many were removed.
    async fn clear(&self) -> Result<u64>;

    /// The config of an **active** registration, with a touch; `None` if absent or not active.
    ///
    /// Provided (through [`RegistryBackend::get`]) but part of the trait rather than of
    /// [`RegistryBackendExt`] because it is the hot read path: a backend may override it to
    /// read and touch only what it needs (as [`InMemoryBackend`] does, without cloning the
    /// whole registration). An override must keep the semantics: `None` unless the
    /// registration exists and is active, and a touch (as `get` makes) of every config it
    /// returns.
    async fn get_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        Ok(self
            .get(bot_id)
            .await?
            .filter(Registration::is_active)
            .map(|r| r.config))
    }

    /// The config of an **active** registration, without a touch; `None` if absent or not
    /// active.
    ///
    /// Provided (through [`RegistryBackend::peek`]) but part of the trait, like
    /// [`RegistryBackend::get_config`], so that a backend can specialise it; an override must
    /// return `None` unless the registration exists and is active, and must change nothing.
    async fn peek_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        Ok(self
            .peek(bot_id)
            .await?
            .filter(Registration::is_active)
            .map(|r| r.config))
    }
}

/// Conveniences over [`RegistryBackend`], implemented for every backend.
///
/// These are not part of [`RegistryBackend`] so that a backend cannot override them (and so
/// cannot make them disagree with the methods they are built on); bring the trait into scope
/// with `use dynreg_registry_core::RegistryBackendExt` to call them.
#[async_trait]
pub trait RegistryBackendExt: RegistryBackend {
    /// [`RegistryBackend::register_reporting`] without the report: the registration stored.
    async fn register_with(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registration> {
        Ok(self
            .register_reporting(bot_id, config, options)
            .await?
            .registration)
    }

    /// Soft delete ([`RegistryBackend::deactivate_reporting`] without the report): sets the
    /// status to `inactive`. `false` if the id does not exist. Deactivating an inactive
    /// registration returns `true` and changes nothing.
    async fn deactivate(&self, bot_id: &str) -> Result<bool> {
        Ok(self.deactivate_reporting(bot_id).await?.effect != WriteEffect::Absent)
    }

    /// Unconditional register with status active and empty metadata.
    async fn register(&self, bot_id: &str, config: Value) -> Result<Registration> {
        self.register_with(bot_id, Arc::new(config), RegisterOptions::default())
            .await
    }

    /// Whether the id exists **and** is active.
    async fn exists(&self, bot_id: &str) -> Result<bool> {
        Ok(self.peek(bot_id).await?.is_some_and(|r| r.is_active()))
    }

    /// Every registration, every status, ordered by `bot_id`.
    async fn list_all(&self) -> Result<Vec<Arc<Registration>>> {
        self.list(&ListQuery::all()).await
    }

    /// Active registrations, ordered by `bot_id`.
    async fn list_active(&self) -> Result<Vec<Arc<Registration>>> {
        self.list(&ListQuery::with_status(Status::Active)).await
    }

    /// Inactive registrations, ordered by `bot_id`.
    async fn list_inactive(&self) -> Result<Vec<Arc<Registration>>> {
        self.list(&ListQuery::with_status(Status::Inactive)).await
    }

    /// Ids of the active registrations, sorted.
    async fn list_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .list_active()
            .await?
            .iter()
            .map(|r| r.bot_id.clone())
            .collect())
    }

    /// Number of active registrations.
    async fn count(&self) -> Result<u64> {
        self.count_where(Some(&Status::Active), None).await
    }

    /// Number of registrations of every status.
    async fn count_all(&self) -> Result<u64> {
        self.count_where(None, None).await
    }

    /// Number of inactive registrations.
    async fn count_inactive(&self) -> Result<u64> {
        self.count_where(Some(&Status::Inactive), None).await
    }
}

impl<T: RegistryBackend + ?Sized> RegistryBackendExt for T {}
