//! # dynreg-knowledge-store
//!
//! Raw knowledge files per knowledge base, before ingestion: the [`KnowledgeBackend`] trait,
//! its models ([`KnowledgeFile`], [`KnowledgeBaseInfo`], [`IngestionStatus`], [`ChangeSet`]),
//! the factory [`create_knowledge_backend`], and three backends that share one set of rules.
//!
//! ## Rules every backend shares
//! - **Identifiers.** Domain ids are one segment not starting with `_`; resource paths are
//!   canonical relative paths (no `..`, `.`, empty segments, absolute paths, backslashes, NUL or
//!   drive letters); a name cannot be both a file and a folder. See [`paths`].
//! - **Change detection** is the original's: MD5 per file and the knowledge-base identity of
//!   reference-spec §4.4 ([`identity`]), so versions compare with ones the Python original stored.
//!   Snapshots are recorded when an identity is handed out (`get_checksum`,
//!   `list_changes_since`) and retained up to a bound (default 64 per knowledge base). The
//!   identity is cached until the next write, and after a write only the files from the
//!   changed path on are hashed again.
//! - **Listings share entries.** [`KnowledgeBackend::list_files`] returns
//!   `Vec<Arc<KnowledgeFile>>`: the index's own entries, so listing 10,000 files copies
//!   pointers, not entries.
//! - **No lost writes.** Concurrent puts on one knowledge base all land in the index, also from
//!   two backend instances (processes) on one directory or bucket.
//! - **State version.** [`KnowledgeBackend::get_state_version`] is an opaque token that changes
//!   on every write to a knowledge base (content, index or status) in every backend;
//!   [`StatusUpdate::expected_version`] makes a status write a compare-and-swap. (The file
//!   backend's token also changes when its journal is compacted, so a conditional write may
//!   conflict without a logical change in between: re-read and retry.)
//! - **Streaming.** [`KnowledgeBackend::stream_file`] and [`KnowledgeBackend::put_stream`] hold
//!   at most one chunk (S3: one 8 MiB part) in memory; the memory backend necessarily keeps the
//!   whole file. Files (`.gz` included) are stored exactly as uploaded.
//! - **Not ported.** Tenant-scoped state (`ctx`), `key_pattern`/`classify_key`/
//!   `subscribe_to_changes`, and the S3 `s3_versioning` change-detection mode.
//! - **Observability.** Index, status and snapshot writes are reported to
//!   [`StateEvents`] observers (reference-spec §4.8): callbacks, and event buses given with
//!   [`StateEvents::also_publish_to`] (`dynreg-event-bus`), on `ingest:metadata:write` and
//!   `ingest:snapshot:write` with payload `{domain_id, key, kind, byte_size}`.
//!
//! ## Features
//! - `memory` backend: always built ([`MemoryKnowledgeBackend`]).
//! - `file` (default): [`FileKnowledgeBackend`], on-disk layout compatible with the original
//!   both ways, with a write-ahead journal, a lock file and crash recovery.
//! - `s3`: [`S3KnowledgeBackend`] on `object_store`, with ETag compare-and-swap on the index.
//! - `conformance`: exports [`conformance`], the suite every backend's tests run, and the
//!   [`knowledge_conformance_tests!`] macro.

mod content_type;
mod error;
mod events;
mod factory;
pub mod identity;
mod index;
mod memory;
#[cfg(any(feature = "file", feature = "s3"))]
mod metadata_doc;
mod model;
pub mod paths;
mod pytime;
mod snapshots;
mod stream;

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
    KnowledgeKeyKind, StateEvents, StateWrite, StateWriteCallback,
};
pub use factory::{available_backends, create_knowledge_backend};
pub use memory::MemoryKnowledgeBackend;
pub use model::{
    ChangeSet, FileUpload, IngestionStatus, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions,
    StatusUpdate,
};
pub use snapshots::DEFAULT_SNAPSHOT_RETENTION;
pub use stream::{ByteStream, DEFAULT_CHUNK_SIZE, bytes_stream, collect, rechunk};

#[cfg(feature = "file")]
pub use file::{FileConfig, FileKnowledgeBackend, FsyncPolicy};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3KnowledgeBackend};

/// Storage of raw knowledge files, one knowledge base per domain id.
///
/// Every method validates its domain id and path first (see [`paths`]); a refusal is an
/// error for which [`KnowledgeError::is_refusal`] is true, never a "not found".
#[async_trait]
pub trait KnowledgeBackend: std::fmt::Debug + Send + Sync {
    /// The backend kind (`"memory"`, `"file"`, `"s3"`).
    fn kind(&self) -> &'static str;

    /// The observers of this backend's state writes.
    fn state_events(&self) -> &StateEvents;

    /// Creates an empty knowledge base; fails with `KbAlreadyExists` if it exists.
    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo>;

    /// The knowledge base's info, or `None` if it does not exist.
    async fn get_info(&self, domain_id: &str) -> Result<Option<KnowledgeBaseInfo>>;

    /// Every knowledge base, sorted by domain id.
    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>>;

    /// Deletes a knowledge base with its files, index and snapshots; false if it did not exist.
    async fn delete_kb(&self, domain_id: &str) -> Result<bool>;

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

    /// True if the file exists.
    async fn file_exists(&self, domain_id: &str, path: &str) -> Result<bool> {
        Ok(self.get_file_info(domain_id, path).await?.is_some())
    }

    /// Files whose path starts with `prefix` (a plain string prefix), sorted by path; an
    /// unknown knowledge base gives an empty list. The entries are shared with the backend's
    /// index (listing 10,000 files copies 10,000 pointers); `(*f).clone()` gives an owned one.
    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>>;

    /// Writes the ingestion status (and error, generation), optionally as a compare-and-swap.
    async fn set_ingestion_status(
        &self,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo>;

    /// The opaque state token for conditional status writes, or `None` if the knowledge base
    /// does not exist. It changes on every write to the knowledge base.
    async fn get_state_version(&self, domain_id: &str) -> Result<Option<String>>;

    /// The knowledge-base identity (reference-spec §4.4); `""` when empty. The identity is
    /// retained as a snapshot so `list_changes_since` can later diff against it.
    async fn get_checksum(&self, domain_id: &str) -> Result<String>;

    /// What was added, modified and deleted since `version` (an identity from `get_checksum`),
    /// each list sorted. `InvalidVersion` if that version is not retained.
    async fn list_changes_since(&self, domain_id: &str, version: &str) -> Result<ChangeSet>;

    /// True if anything changed since `version`; an unretained version counts as changed.
    async fn has_changes_since(&self, domain_id: &str, version: &str) -> Result<bool> {
        match self.list_changes_since(domain_id, version).await {
            Ok(cs) => Ok(!cs.is_empty()),
            Err(KnowledgeError::InvalidVersion { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Flushes pending work (the file backend compacts its journal into `_metadata.json`).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
