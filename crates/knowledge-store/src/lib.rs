//! # dynreg-knowledge-store
//!
//! Raw knowledge files per knowledge base, before ingestion: the [`KnowledgeBackend`] trait
//! with its conveniences [`KnowledgeBackendExt`], its models ([`KnowledgeFile`],
//! [`KnowledgeBaseInfo`], [`IngestionStatus`], [`ChangeSet`]), the factory
//! [`create_knowledge_backend`], and three backends that share one set of rules.
//!
//! ```
//! use dynreg_knowledge_store::{KnowledgeBackendExt, PutOptions, create_knowledge_backend};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dynreg_knowledge_store::Result<()> {
//! let kb = create_knowledge_backend("memory", &serde_json::json!({})).await?;
//! kb.create_kb("support", Default::default()).await?;
//! let file = kb.put_file("support", "faq.md", "# FAQ\n".into(), PutOptions::default()).await?;
//! assert_eq!(file.checksum, "8c0d9c28839f95c1eacc82197bcbc2ac"); // MD5, as the original
//! assert_eq!(&kb.get_file("support", "faq.md").await?.unwrap()[..], b"# FAQ\n");
//! # Ok(()) }
//! ```
//!
//! ## Rules every backend shares
//! - **Identifiers.** Domain ids are one segment not starting with `_`; resource paths are
//!   canonical relative paths (no `..`, `.`, empty segments, absolute paths, backslashes, NUL or
//!   drive letters); a name cannot be both a file and a folder. See [`paths`].
//! - **Change detection** is the original's: MD5 per file and the knowledge-base identity of
//!   the original ([`identity`]), so versions compare with ones the Python original stored.
//!   Snapshots are recorded when an identity is handed out (`get_checksum`,
//!   `list_changes_since`) and retained up to a bound (default 64 per knowledge base and
//!   tenant lineage). The
//!   identity is cached until the next write, and after a write only the files from the
//!   changed path on are hashed again.
//! - **Listings share entries.** [`KnowledgeBackend::list_files`] returns
//!   `Vec<Arc<KnowledgeFile>>`: the index's own entries, so listing 10,000 files copies
//!   pointers, not entries.
//! - **No lost writes.** Concurrent puts on one knowledge base all land in the index, also from
//!   two backend instances (processes) on one directory or bucket.
//! - **State version.** [`KnowledgeBackendExt::get_state_version`] is an opaque token that changes
//!   on every write to a knowledge base (content, index or status) in every backend;
//!   [`StatusUpdate::expected_version`] makes a status write a compare-and-swap. (The file
//!   backend's token also changes when its journal is compacted, so a conditional write may
//!   conflict without a logical change in between: re-read and retry.) A tenant's token
//!   versions that tenant's status document alone — it changes on each of its status writes and
//!   on nothing else — and exists before the tenant's first write, so that write can be
//!   conditional too; the same rule on every backend.
//! - **Tenant-scoped state.** Every state operation is an `*_in` method taking a
//!   [`TenantContext`] (`SingleTenant`, `Bound`, `SharedCorpus`, `Prefixed`) first; the
//!   unsuffixed forms of [`KnowledgeBackendExt`] are the single-tenant context, byte-identical
//!   to the pre-tenancy layout. A tenant
//!   owns its status, error, generation and vector store path under
//!   `{root}_scoped/{prefix}/{domain}/`, as in the original (file:
//!   `{base}/_scoped/tenants/{t}/_state/{domain}/_metadata.json` and `_snapshots/`; S3 the
//!   same keys under its prefix); content is shared. A tenant's view ([`KnowledgeBackend::get_info_in`]) reports the
//!   real file count, size, version and metadata, not the original's zeros; a
//!   tenant that never wrote sees the default status. A tenant retains the versions it is
//!   handed in its own snapshot lineage and diffs fall back to the shared lineage.
//!   `delete_kb` removes every tenant's state on every backend, so a re-created knowledge
//!   base inherits no stale status.
//! - **Key layout.** [`KnowledgeBackendExt::key_pattern`] gives the watch glob of content,
//!   metadata or snapshot keys (the original's exact strings for file and S3; real globs over
//!   its own keys for memory, where the original's `""` could never match), and
//!   [`KnowledgeBackendExt::classify_key`] reads a key by its position under the backend's root,
//!   so a knowledge base named `content` or a prefix with a `content` segment is classified
//!   correctly (see [`KeyLayout`]). Watching keys through an event bus lives in
//!   `dynreg-hot-reload`, which bridges this crate and `dynreg-event-bus`:
//!   `dynreg_hot_reload::subscribe_to_changes` watches one kind of key through a bus on which
//!   some observer publishes keys as topics, and returns a `ChangesSubscription` guard that
//!   unsubscribes on `cancel().await` or drop. This crate does not depend on the event bus.
//! - **Streaming.** [`KnowledgeBackend::stream_file`] and [`KnowledgeBackend::put_stream`] hold
//!   at most one chunk (S3: one 8 MiB part) in memory; the memory backend necessarily keeps the
//!   whole file. Files (`.gz` included) are stored exactly as uploaded.
//! - **Observability.** Index, status and snapshot writes are reported to
//!   [`StateEvents`] observers: async [`StateWriteObserver`]s, awaited
//!   first, then callbacks. Publishing them to an event bus is the observer
//!   `dynreg_hot_reload::also_publish_to` adds: on `ingest:metadata:write` and
//!   `ingest:snapshot:write` with payload `{domain_id, key, kind, byte_size}` (plus
//!   `tenant_id` for a tenant's state), as [`StateWrite::topic`] and [`StateWrite::payload`]
//!   give them.
//!
//! ## Features
//! - `memory` backend: always built ([`MemoryKnowledgeBackend`]).
//! - `file` (default): [`FileKnowledgeBackend`], on-disk layout compatible with the original
//!   both ways, with a write-ahead journal, a lock file and crash recovery.
//! - `s3`: [`S3KnowledgeBackend`] on `object_store`: an index write is one small journal
//!   record created with `If-None-Match` (O(changed files), compacted into `_metadata.json`
//!   with `If-Match` every `max(64, files / 16)` writes and on `close`), an index cache per
//!   instance revalidated by conditional GET, and two change-detection modes ([`ChangeDetectionMode`]): `snapshot` objects, or
//!   `s3_versioning`, which writes none and resolves a version through an index of the
//!   metadata object's own S3 `VersionId`s kept in the index document (two GETs per diff
//!   instead of the original's walk over the whole version history); a version it
//!   cannot resolve (bucket versioning off, or older than the index) counts as changed.
//!   Every write records an intent first, so one that died between content and index is
//!   repaired by [`S3KnowledgeBackend::recover`] (which `connect` runs): the index is brought
//!   back to what is stored.
//! - `conformance`: exports [`conformance`], the suite every backend's tests run, and the
//!   [`knowledge_conformance_tests!`] macro.

mod content_type;
mod error;
mod events;
mod factory;
pub mod identity;
mod index;
mod instrument;
mod keys;
mod memory;
#[cfg(any(feature = "file", feature = "s3"))]
mod metadata_doc;
mod model;
mod names;
pub mod paths;
/// Timestamps in the original's `isoformat()` form (shared with the registry and the bus).
use dynreg_wire::time as pytime;
mod snapshots;
mod stream;
mod tenant;
mod tenant_state;

#[cfg(feature = "file")]
mod file;
#[cfg(feature = "s3")]
mod s3;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use content_type::guess_content_type;
pub use error::{KnowledgeError, Result};
pub use events::{
    INGEST_DOMAIN_END, INGEST_DOMAIN_START, INGEST_METADATA_WRITE, INGEST_SNAPSHOT_WRITE,
    KnowledgeKeyKind, StateEvents, StateWrite, StateWriteCallback, StateWriteObserver,
};
pub use factory::{available_backends, create_knowledge_backend};
pub use instrument::Instrumented;
pub use keys::{KeyLayout, KeyStyle, ParsedKey};
pub use memory::MemoryKnowledgeBackend;
pub use model::{
    ChangeSet, FileUpload, IngestionStatus, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions,
    StatusUpdate,
};
pub use names::{
    CONTENT_DIR, JOURNAL_FILE, METADATA_FILE, RESERVED_DOMAIN_PREFIX, SCOPED_STATE_ROOT,
    SNAPSHOTS_DIR,
};
pub use snapshots::DEFAULT_SNAPSHOT_RETENTION;
pub use stream::{ByteStream, DEFAULT_CHUNK_SIZE, bytes_stream, collect, rechunk};
pub use tenant::TenantContext;

#[cfg(feature = "file")]
pub use file::{FileConfig, FileKnowledgeBackend, FsyncPolicy};
#[cfg(feature = "s3")]
pub use s3::{
    ChangeDetectionMode, INTENT_GRACE, JOURNAL_RETENTION, S3Config, S3KnowledgeBackend,
    WRITE_WINDOW,
};

/// Storage of raw knowledge files, one knowledge base per domain id.
///
/// Every method validates its domain id and path first (see [`paths`]); a refusal is an
/// error for which [`KnowledgeError::is_refusal`] is true, never a "not found".
///
/// ## The small trait and its extension
/// This trait holds only what a backend implements: every method here is required, except
/// [`KnowledgeBackend::close`], which has a default a backend specialises. Everything built
/// on these methods — the single-tenant forms of the state operations, [`put_file`],
/// [`file_exists`], [`has_changes_since`], [`key_pattern`], [`classify_key`] — lives in
/// [`KnowledgeBackendExt`], implemented for every backend (bring it into scope with
/// `use dynreg_knowledge_store::KnowledgeBackendExt`, or `dynreg::knowledge::*`), so no
/// backend can make a convenience disagree with the method it is built on.
///
/// ## Naming: `op_in(ctx, …)` and `op(…)`
/// A state operation (status, error, generation, state version, snapshot lineage) is
/// tenant-scoped, and is required in one form only, `op_in`, which takes the
/// [`TenantContext`] as its first argument: the operation *in* that context, e.g.
/// `get_info_in(&ctx, domain_id)`, `set_ingestion_status_in(&ctx, domain_id, update)`.
/// [`KnowledgeBackendExt`] has, for each, `op` without the context (`get_info(domain_id)`),
/// which is `op_in(&TenantContext::SingleTenant, …)`: the domain-keyed state, byte-identical
/// to the pre-tenancy layout. Content operations (files, listings, knowledge bases) are
/// never tenant-scoped and take no context.
///
/// [`put_file`]: KnowledgeBackendExt::put_file
/// [`file_exists`]: KnowledgeBackendExt::file_exists
/// [`has_changes_since`]: KnowledgeBackendExt::has_changes_since
/// [`key_pattern`]: KnowledgeBackendExt::key_pattern
/// [`classify_key`]: KnowledgeBackendExt::classify_key
#[async_trait]
pub trait KnowledgeBackend: std::fmt::Debug + Send + Sync {
    /// The backend kind (`"memory"`, `"file"`, `"s3"`).
    fn kind(&self) -> &'static str;

    /// The observers of this backend's state writes.
    fn state_events(&self) -> &StateEvents;

    /// Where this backend's keys live: the basis of [`KnowledgeBackendExt::key_pattern`] and
    /// [`KnowledgeBackendExt::classify_key`].
    fn key_layout(&self) -> &KeyLayout;

    /// Creates an empty knowledge base; fails with `KbAlreadyExists` if it exists.
    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo>;

    /// The knowledge base as `ctx` sees it, or `None` if it does not exist: for a tenant, its
    /// own status, error, generation and vector store path over the real content summary
    /// (files, size, version, metadata); a tenant that never wrote sees the default state.
    /// [`KnowledgeBackendExt::get_info`] is the single-tenant view.
    async fn get_info_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<KnowledgeBaseInfo>>;

    /// Every knowledge base, sorted by domain id.
    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>>;

    /// Deletes a knowledge base with its files, index and snapshots, and every tenant's state
    /// of it (so a re-created knowledge base starts clean); false if it did not exist.
    async fn delete_kb(&self, domain_id: &str) -> Result<bool>;

    /// Stores (or replaces) one file from a stream, holding at most one chunk in memory.
    async fn put_stream(
        &self,
        domain_id: &str,
        path: &str,
        content: ByteStream,
        options: PutOptions,
    ) -> Result<KnowledgeFile>;

    /// Stores many files with one index update. All paths are validated before anything is
    /// written; the result is in input order. A path given twice keeps the last upload.
    /// [`KnowledgeBackendExt::put_file`] is a batch of one.
    async fn put_files(
        &self,
        domain_id: &str,
        uploads: Vec<FileUpload>,
    ) -> Result<Vec<KnowledgeFile>>;

    /// The file's bytes, or `None` if the file (or the knowledge base) does not exist.
    async fn get_file(&self, domain_id: &str, path: &str) -> Result<Option<Bytes>>;

    /// The file as a stream of chunks of exactly `chunk_size` bytes (the last may be shorter),
    /// or `None` if it does not exist.
    async fn stream_file(
        &self,
        domain_id: &str,
        path: &str,
        chunk_size: usize,
    ) -> Result<Option<ByteStream>>;

    /// Deletes a file; false if it did not exist.
    async fn delete_file(&self, domain_id: &str, path: &str) -> Result<bool>;

    /// The index entry of one file, or `None`.
    async fn get_file_info(&self, domain_id: &str, path: &str) -> Result<Option<KnowledgeFile>>;

    /// Files whose path starts with `prefix` (a plain string prefix), sorted by path; an
    /// unknown knowledge base gives an empty list. The entries are shared with the backend's
    /// index (listing 10,000 files copies 10,000 pointers); `(*f).clone()` gives an owned one.
    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>>;

    /// Writes `ctx`'s ingestion status (and error, generation) and returns its view.
    /// `KbNotFound` if the knowledge base does not exist (tenant state never creates one).
    /// With [`StatusUpdate::expected_version`] the write is a compare-and-swap against
    /// [`KnowledgeBackend::get_state_version_in`] of the same `ctx`.
    async fn set_ingestion_status_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo>;

    /// The opaque state token of `ctx`'s status document for conditional status writes, or
    /// `None` if the knowledge base does not exist. The single-tenant token changes on every
    /// write to the knowledge base (content, index or status); a tenant's token changes on
    /// every status write of that tenant (and nothing else), and exists before its first
    /// write, so that write can be conditional too.
    async fn get_state_version_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<String>>;

    /// The knowledge-base identity (the original; `""` when empty), the same for every
    /// tenant (content is shared), retained as a snapshot in `ctx`'s lineage so
    /// [`KnowledgeBackend::list_changes_since_in`] can later diff against it and another
    /// tenant's churn cannot evict it.
    async fn get_checksum_in(&self, ctx: &TenantContext, domain_id: &str) -> Result<String>;

    /// What was added, modified and deleted since `version` (an identity from
    /// [`KnowledgeBackend::get_checksum_in`]), each list sorted; `version` is resolved in
    /// `ctx`'s lineage first, then in the shared (single-tenant) one (the original
    /// step 3), and the current identity is retained in `ctx`'s lineage. `InvalidVersion` if
    /// that version is not retained.
    async fn list_changes_since_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        version: &str,
    ) -> Result<ChangeSet>;

    /// Flushes pending work (the file backend compacts its journal into `_metadata.json`).
    ///
    /// Provided (doing nothing) but part of the trait because a backend specialises it.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Conveniences over [`KnowledgeBackend`], implemented for every backend.
///
/// These are not part of [`KnowledgeBackend`] so that a backend cannot override them (and so
/// cannot make them disagree with the methods they are built on); bring the trait into scope
/// with `use dynreg_knowledge_store::KnowledgeBackendExt` to call them. Each unsuffixed state
/// operation `op(…)` is [`KnowledgeBackend`]'s `op_in(&TenantContext::SingleTenant, …)`.
#[async_trait]
pub trait KnowledgeBackendExt: KnowledgeBackend {
    /// The watch pattern of one kind of key ([`KeyLayout::key_pattern`] of
    /// [`KnowledgeBackend::key_layout`]): `domain_id` or every domain (`None`), tenant-scoped
    /// by `ctx` (content never is). `Unknown` is refused.
    fn key_pattern(
        &self,
        kind: KnowledgeKeyKind,
        domain_id: Option<&str>,
        ctx: &TenantContext,
    ) -> Result<String> {
        self.key_layout().key_pattern(kind, domain_id, ctx)
    }

    /// What a key of this backend holds, read positionally ([`KeyLayout::classify_key`] of
    /// [`KnowledgeBackend::key_layout`]).
    fn classify_key(&self, key: &str) -> KnowledgeKeyKind {
        self.key_layout().classify_key(key)
    }

    /// The single-tenant view of the knowledge base, or `None` if it does not exist
    /// ([`KnowledgeBackend::get_info_in`]).
    async fn get_info(&self, domain_id: &str) -> Result<Option<KnowledgeBaseInfo>> {
        self.get_info_in(&TenantContext::SingleTenant, domain_id)
            .await
    }

    /// Stores (or replaces) one file from memory: a [`KnowledgeBackend::put_files`] of one.
    async fn put_file(
        &self,
        domain_id: &str,
        path: &str,
        content: Bytes,
        options: PutOptions,
    ) -> Result<KnowledgeFile> {
        let mut out = self
            .put_files(
                domain_id,
                vec![FileUpload {
                    path: path.to_owned(),
                    content,
                    options,
                }],
            )
            .await?;
        out.pop().ok_or_else(|| KnowledgeError::FileNotFound {
            domain_id: domain_id.to_owned(),
            path: path.to_owned(),
        })
    }

    /// True if the file exists ([`KnowledgeBackend::get_file_info`] found it).
    async fn file_exists(&self, domain_id: &str, path: &str) -> Result<bool> {
        Ok(self.get_file_info(domain_id, path).await?.is_some())
    }

    /// Writes the single-tenant ingestion status (and error, generation), optionally as a
    /// compare-and-swap ([`KnowledgeBackend::set_ingestion_status_in`]).
    async fn set_ingestion_status(
        &self,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo> {
        self.set_ingestion_status_in(&TenantContext::SingleTenant, domain_id, update)
            .await
    }

    /// The opaque single-tenant state token for conditional status writes, or `None` if the
    /// knowledge base does not exist. It changes on every write to the knowledge base
    /// ([`KnowledgeBackend::get_state_version_in`]).
    async fn get_state_version(&self, domain_id: &str) -> Result<Option<String>> {
        self.get_state_version_in(&TenantContext::SingleTenant, domain_id)
            .await
    }

    /// The knowledge-base identity; `""` when empty. The identity is
    /// retained as a snapshot in the shared lineage so `list_changes_since` can later diff
    /// against it ([`KnowledgeBackend::get_checksum_in`]).
    async fn get_checksum(&self, domain_id: &str) -> Result<String> {
        self.get_checksum_in(&TenantContext::SingleTenant, domain_id)
            .await
    }

    /// What was added, modified and deleted since `version` (an identity from `get_checksum`),
    /// each list sorted, in the shared lineage. `InvalidVersion` if that version is not
    /// retained ([`KnowledgeBackend::list_changes_since_in`]).
    async fn list_changes_since(&self, domain_id: &str, version: &str) -> Result<ChangeSet> {
        self.list_changes_since_in(&TenantContext::SingleTenant, domain_id, version)
            .await
    }

    /// True if anything changed since `version` in `ctx`'s lineage; an unretained version
    /// counts as changed. The identity is a hash of every (path, checksum) pair, so equal
    /// identities are equal contents: this compares `version` with the current identity
    /// ([`KnowledgeBackend::get_checksum_in`]) and never loads or diffs the old version's file
    /// list (what [`KnowledgeBackend::list_changes_since_in`] does to say *what* changed).
    async fn has_changes_since_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        version: &str,
    ) -> Result<bool> {
        paths::validate_version(domain_id, version)?;
        Ok(self.get_checksum_in(ctx, domain_id).await? != version)
    }

    /// True if anything changed since `version` in the shared lineage; an unretained version
    /// counts as changed ([`KnowledgeBackendExt::has_changes_since_in`]).
    async fn has_changes_since(&self, domain_id: &str, version: &str) -> Result<bool> {
        self.has_changes_since_in(&TenantContext::SingleTenant, domain_id, version)
            .await
    }
}

impl<T: KnowledgeBackend + ?Sized> KnowledgeBackendExt for T {}
