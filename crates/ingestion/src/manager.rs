//! The ingestion manager: a knowledge backend (the source) kept indexed in a RAG knowledge base
//! (the destination), incrementally, with the original's API (`ingest`, `ingest_if_changed`,
//! `ingest_changes`, `reconcile`, `get_current_version`), statuses and lifecycle events.
//!
//! Invariants:
//! - **The index is the record.** What is indexed (path → checksum → chunks) is read from the
//!   vector store itself (`distinct(source_path, checksum)` over the committed rows), so it can
//!   never claim chunks that are not there. A file whose checksum is unchanged is never
//!   embedded again, in a full ingest too; chunks of files that left the knowledge base are
//!   removed.
//! - **`Tombstone` (the default) is atomic for readers.** New chunks are written under a new
//!   generation, marked `_pending` (invisible); the commit is one atomic store step that
//!   retires (`_stale`) the replaced files' old rows and reveals the new ones; then the stale
//!   rows are deleted. A query sees the old corpus or the new one, never an empty, half-built
//!   or mixed one. Any failure rolls back: the generation's rows are deleted and the old
//!   corpus stays as it was. An interrupted swap (status `swapping`) is undone by `reconcile`,
//!   which every ingest runs first.
//! - `ClearFirst` (the original's default) empties the domain, then re-embeds everything:
//!   readers see an empty or partial corpus meanwhile. `Append` replaces file by file.
//! - Statuses: `ingesting` → (`swapping`) → `ready` | `error`; the error text is a short
//!   readable summary. A missing knowledge base is reported as that (`ManagerError::Missing`),
//!   before any status write that could mask it.
//! - Lifecycle events (with an event bus): `ingest:domain:start` and `ingest:domain:end`
//!   (type custom, the original's payloads), and on success `knowledge:ingestion` (type
//!   updated, the end payload). A failing bus is logged, never fails the ingest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use dynreg_event_bus::{Event, EventBus, EventType, python_isoformat};
use dynreg_knowledge_store::{
    INGEST_DOMAIN_END, INGEST_DOMAIN_START, IngestionStatus, KnowledgeBackend, KnowledgeBackendExt,
    KnowledgeError, StatusUpdate, TenantContext,
};

use crate::error::{FileError, IngestionError};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::rag::{PENDING, RagError, RagKnowledgeBase, STALE};
use crate::vector::Filter;

/// The topic the seed's example subscribes to for finished ingests.
pub const KNOWLEDGE_INGESTION_TOPIC: &str = "knowledge:ingestion";

/// How new chunks replace old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapMode {
    /// Empty the domain, then embed everything (the original's default; readers see an empty
    /// corpus meanwhile).
    ClearFirst,
    /// Replace file by file (readers may see a mix while it runs).
    Append,
    /// Write a new generation invisibly, then swap atomically. The default.
    #[default]
    Tombstone,
}

impl SwapMode {
    /// `"clear_first"`, `"append"`, `"tombstone"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapMode::ClearFirst => "clear_first",
            SwapMode::Append => "append",
            SwapMode::Tombstone => "tombstone",
        }
    }

    /// The mode of the original's deprecated `clear_existing` flag.
    pub fn from_clear_existing(clear_existing: bool) -> Self {
        if clear_existing {
            SwapMode::ClearFirst
        } else {
            SwapMode::Append
        }
    }
}

impl std::str::FromStr for SwapMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "clear_first" => Ok(SwapMode::ClearFirst),
            "append" => Ok(SwapMode::Append),
            "tombstone" => Ok(SwapMode::Tombstone),
            other => Err(format!(
                "swap mode {other:?} is not one of clear_first, append, tombstone"
            )),
        }
    }
}

/// A manager call failed as a whole (file failures are in [`IngestionResult::errors`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The knowledge base does not exist.
    #[error("knowledge base {domain:?} does not exist")]
    Missing {
        /// The domain asked for.
        domain: String,
    },
    /// The destination is bound to another domain.
    #[error("the destination is bound to domain {bound:?}, not {domain:?}")]
    Binding {
        /// The destination's domain.
        bound: String,
        /// The domain asked for.
        domain: String,
    },
    /// The knowledge backend failed.
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    /// Embedding or storing failed as a whole.
    #[error(transparent)]
    Rag(#[from] RagError),
    /// The pipeline could not start (the knowledge base's config file, its listing).
    #[error(transparent)]
    Ingestion(#[from] IngestionError),
}

impl From<crate::vector::VectorError> for ManagerError {
    fn from(e: crate::vector::VectorError) -> Self {
        ManagerError::Rag(RagError::Vector(e))
    }
}

/// What one ingest did, the original's `IngestionResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestionResult {
    /// The knowledge base.
    pub domain_id: String,
    /// Files embedded and stored in this run.
    pub files_processed: u64,
    /// Chunks created in this run.
    pub chunks_created: u64,
    /// Files listed but not ingestible (config files, excluded, unsupported).
    pub files_skipped: u64,
    /// Files whose chunks were removed because they left the knowledge base.
    pub files_deleted: u64,
    /// Files already indexed at their current checksum (not embedded again).
    pub files_unchanged: u64,
    /// Per-file errors, `{"file", "error"}`.
    pub errors: Vec<FileError>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// The swap mode used.
    pub swap_mode: SwapMode,
}

impl IngestionResult {
    /// The counts and the error texts as one JSON object (what the command line and the HTTP
    /// routes report): `domain_id`, `files_processed`, `files_unchanged`, `files_deleted`,
    /// `files_skipped`, `chunks_created`, `errors`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "domain_id": self.domain_id,
            "files_processed": self.files_processed,
            "files_unchanged": self.files_unchanged,
            "files_deleted": self.files_deleted,
            "files_skipped": self.files_skipped,
            "chunks_created": self.chunks_created,
            "errors": self.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    fn new(domain_id: &str, swap_mode: SwapMode) -> Self {
        IngestionResult {
            domain_id: domain_id.to_owned(),
            files_processed: 0,
            chunks_created: 0,
            files_skipped: 0,
            files_deleted: 0,
            files_unchanged: 0,
            errors: Vec::new(),
            started_at: Utc::now(),
            completed_at: None,
            swap_mode,
        }
    }

    /// No file failed.
    pub fn success(&self) -> bool {
        self.errors.is_empty()
    }

    /// Seconds from start to finish, once finished.
    pub fn duration_seconds(&self) -> Option<f64> {
        self.completed_at
            .map(|c| (c - self.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6)
    }

    /// Marks the result finished (idempotent).
    pub fn finish(&mut self) -> &mut Self {
        if self.completed_at.is_none() {
            self.completed_at = Some(Utc::now());
        }
        self
    }

    /// The original's `to_dict()`: the same keys in the same order.
    pub fn to_dict(&self) -> Value {
        json!({
            "domain_id": self.domain_id,
            "files_processed": self.files_processed,
            "chunks_created": self.chunks_created,
            "files_skipped": self.files_skipped,
            "files_deleted": self.files_deleted,
            "errors": self.errors,
            "started_at": python_isoformat(&self.started_at),
            "completed_at": self.completed_at.as_ref().map(python_isoformat),
            "success": self.success(),
            "duration_seconds": self.duration_seconds(),
        })
    }

    /// A short readable summary of the errors, for the status record.
    pub fn error_summary(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .errors
            .iter()
            .take(3)
            .map(|e| truncate(&e.error, 200))
            .collect();
        let more = self.errors.len().saturating_sub(3);
        let mut s = format!("{} file error(s): {}", self.errors.len(), shown.join("; "));
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        Some(s)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The outcome of [`KnowledgeIngestionManager::ingest_if_changed`]: "missing" and "unchanged"
/// are different answers (the original returns `None` for both).
#[derive(Debug, Clone, PartialEq)]
pub enum IfChanged {
    /// The knowledge base does not exist.
    Missing,
    /// Nothing changed since the version given.
    Unchanged,
    /// It changed, and this is the ingest that followed.
    Ingested(IngestionResult),
}

/// Which files a run looks at.
enum Scope {
    /// Every file of the knowledge base; unchanged ones are kept.
    Full,
    /// Every file of the knowledge base, all embedded again.
    Everything,
    /// Only these paths (added or modified) and deletions.
    Changes {
        changed: BTreeSet<String>,
        deleted: BTreeSet<String>,
    },
}

/// The manager.
#[derive(Debug, Clone)]
pub struct KnowledgeIngestionManager {
    source: Arc<dyn KnowledgeBackend>,
    destination: RagKnowledgeBase,
    bus: Option<Arc<dyn EventBus>>,
    ctx: TenantContext,
    options: PipelineOptions,
    publication: Option<(Arc<dyn KnowledgeBackend>, String)>,
}

impl KnowledgeIngestionManager {
    /// A manager of `source` into `destination`, without events, single-tenant.
    pub fn new(source: Arc<dyn KnowledgeBackend>, destination: RagKnowledgeBase) -> Self {
        KnowledgeIngestionManager {
            source,
            destination,
            bus: None,
            ctx: TenantContext::SingleTenant,
            options: PipelineOptions::default(),
            publication: None,
        }
    }

    /// Limits embedding: one `"embed"` permit per chunk, asked before each batch.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn crate::limit::RateLimiter>) -> Self {
        self.destination = self.destination.with_rate_limiter(limiter);
        self
    }

    /// Publishes lifecycle events on `bus`.
    pub fn with_event_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Ingests for one tenant: its chunks carry `tenant_id`, its state is its own
    /// (`TenantContext::Bound`).
    pub fn with_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        let t = tenant_id.into();
        self.destination = self.destination.with_tenant(t.clone());
        self.ctx = TenantContext::bound(t);
        self
    }

    /// The pipeline options every run starts from (limits, batch size, metadata).
    pub fn with_pipeline_options(mut self, options: PipelineOptions) -> Self {
        self.options = options;
        self
    }

    /// Tells `progress` where each run stands: once when its files are known, then after every
    /// file (a shorthand for [`PipelineOptions::progress`]).
    pub fn with_progress(
        mut self,
        progress: impl Fn(&crate::Progress) + Send + Sync + 'static,
    ) -> Self {
        self.options.progress = Some(Arc::new(progress));
        self
    }

    /// After each successful ingest, saves the domain's index as a snapshot file in knowledge
    /// base `index_kb` of `backend` (created if missing), records its location
    /// (`{index_kb}/{path}`) as the domain's `vector_store_path` and in the end event, so that
    /// replicas with their own in-process store load it ([`crate::replica::IndexFollower`]).
    /// Stores that replicas share (pgvector) publish nothing.
    pub fn with_index_publication(
        mut self,
        backend: Arc<dyn KnowledgeBackend>,
        index_kb: impl Into<String>,
    ) -> Self {
        self.publication = Some((backend, index_kb.into()));
        self
    }

    async fn publish_snapshot(&self, domain: &str) -> Result<Option<String>, ManagerError> {
        let Some((backend, kb)) = &self.publication else {
            return Ok(None);
        };
        let committed = self
            .scope(domain)
            .without(PENDING, true)
            .without(STALE, true);
        let Some(bytes) = self.destination.store().snapshot(&committed).await? else {
            return Ok(None);
        };
        match backend.create_kb(kb, Map::new()).await {
            Ok(_) | Err(KnowledgeError::KbAlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let tenant = self.ctx.tenant_id().unwrap_or("-");
        let file = format!("{domain}/{tenant}/{:032x}.dvec", rand::random::<u128>());
        backend
            .put_file(
                kb,
                &file,
                bytes.into(),
                dynreg_knowledge_store::PutOptions::default(),
            )
            .await?;
        // The previous snapshot is no longer referenced once the status names the new one.
        let previous = self
            .source
            .get_info_in(&self.ctx, domain)
            .await?
            .and_then(|i| i.vector_store_path);
        if let Some(old) = previous
            .as_deref()
            .and_then(|p| p.strip_prefix(&format!("{kb}/")))
            && old != file
            && old.starts_with(&format!("{domain}/{tenant}/"))
        {
            let _ = backend.delete_file(kb, old).await;
        }
        Ok(Some(format!("{kb}/{file}")))
    }

    /// The tenant the manager ingests for (`None`: single tenant).
    pub fn tenant_id(&self) -> Option<&str> {
        self.ctx.tenant_id()
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn KnowledgeBackend> {
        &self.source
    }

    /// The destination.
    pub fn destination(&self) -> &RagKnowledgeBase {
        &self.destination
    }

    fn guard(&self, domain: &str) -> Result<(), ManagerError> {
        match self.destination.domain_id() {
            Some(bound) if bound != domain => Err(ManagerError::Binding {
                bound: bound.to_owned(),
                domain: domain.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The rows of `domain` (and tenant) in the store.
    fn scope(&self, domain: &str) -> Filter {
        let f = Filter::all().with("domain_id", domain);
        match self.ctx.tenant_id() {
            Some(t) => f.with("tenant_id", t),
            None => f,
        }
    }

    /// The identity to pass later as `last_version` / `since_version`; `None` if the knowledge
    /// base does not exist.
    pub async fn get_current_version(&self, domain: &str) -> Result<Option<String>, ManagerError> {
        if self.source.get_info_in(&self.ctx, domain).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.source.get_checksum_in(&self.ctx, domain).await?))
    }

    /// Undoes an interrupted swap (status `swapping`): the pending generation's rows are
    /// deleted, retired rows revived, the status set to `ready`. True if there was one.
    pub async fn reconcile(&self, domain: &str) -> Result<bool, ManagerError> {
        self.guard(domain)?;
        let info = self
            .source
            .get_info_in(&self.ctx, domain)
            .await?
            .ok_or_else(|| ManagerError::Missing {
                domain: domain.to_owned(),
            })?;
        if info.ingestion_status != IngestionStatus::Swapping {
            return Ok(false);
        }
        let store = self.destination.store();
        let scope = self.scope(domain);
        if let Some(g) = info.generation.as_deref().filter(|g| !g.is_empty()) {
            store
                .clear(&scope.clone().with("_generation", g).with(PENDING, true))
                .await?;
        }
        let mut revive = Map::new();
        revive.insert(STALE.into(), Value::Bool(false));
        store
            .update_metadata_where(&scope.clone().with(STALE, true), &revive)
            .await?;
        // Rows an interrupted run left pending under any generation are never committed.
        store.clear(&scope.with(PENDING, true)).await?;
        self.source
            .set_ingestion_status_in(&self.ctx, domain, StatusUpdate::new(IngestionStatus::Ready))
            .await?;
        tracing::warn!(domain, "reconciled an interrupted swap");
        Ok(true)
    }

    /// Ingests the whole knowledge base: files whose checksum is already indexed are kept,
    /// changed and new files are embedded, chunks of files that are gone are removed.
    pub async fn ingest(
        &self,
        domain: &str,
        mode: SwapMode,
    ) -> Result<IngestionResult, ManagerError> {
        self.run(domain, mode, Scope::Full, Map::new()).await
    }

    /// Ingests the whole knowledge base embedding **every** file again, unchanged ones too (a
    /// new embedder or chunking); with `Tombstone` readers keep the old corpus until the swap.
    pub async fn reingest_all(
        &self,
        domain: &str,
        mode: SwapMode,
    ) -> Result<IngestionResult, ManagerError> {
        self.run(domain, mode, Scope::Everything, Map::new()).await
    }

    /// [`ingest`](Self::ingest) with metadata added to every chunk (identity keys win).
    pub async fn ingest_with_metadata(
        &self,
        domain: &str,
        mode: SwapMode,
        extra_metadata: Map<String, Value>,
    ) -> Result<IngestionResult, ManagerError> {
        self.run(domain, mode, Scope::Full, extra_metadata).await
    }

    /// Ingests if the knowledge base changed since `last_version` (always when `None`).
    pub async fn ingest_if_changed(
        &self,
        domain: &str,
        last_version: Option<&str>,
        mode: SwapMode,
    ) -> Result<IfChanged, ManagerError> {
        self.guard(domain)?;
        if self.source.get_info_in(&self.ctx, domain).await?.is_none() {
            return Ok(IfChanged::Missing);
        }
        if let Some(v) = last_version
            && !self
                .source
                .has_changes_since_in(&self.ctx, domain, v)
                .await?
        {
            return Ok(IfChanged::Unchanged);
        }
        Ok(IfChanged::Ingested(self.ingest(domain, mode).await?))
    }

    /// Ingests what changed since `since_version` by the knowledge store's change set; a
    /// version that is no longer retained falls back to a full ingest **with the same mode and
    /// metadata**.
    pub async fn ingest_changes(
        &self,
        domain: &str,
        since_version: &str,
        mode: SwapMode,
        extra_metadata: Map<String, Value>,
    ) -> Result<IngestionResult, ManagerError> {
        self.guard(domain)?;
        if self.source.get_info_in(&self.ctx, domain).await?.is_none() {
            return Err(ManagerError::Missing {
                domain: domain.to_owned(),
            });
        }
        let scope = match self
            .source
            .list_changes_since_in(&self.ctx, domain, since_version)
            .await
        {
            Ok(c) => Scope::Changes {
                changed: c.added.into_iter().chain(c.modified).collect(),
                deleted: c.deleted.into_iter().collect(),
            },
            Err(KnowledgeError::InvalidVersion { .. }) => {
                tracing::warn!(
                    domain,
                    since_version,
                    "version no longer retained: full ingest"
                );
                Scope::Full
            }
            Err(e) => return Err(e.into()),
        };
        self.run(domain, mode, scope, extra_metadata).await
    }

    async fn publish(&self, topic: &str, event_type: EventType, payload: Map<String, Value>) {
        let Some(bus) = &self.bus else { return };
        let event = Event::new(event_type, topic, payload).with_source("dynreg-ingestion");
        if let Err(e) = bus.publish(topic, &event).await {
            tracing::warn!(topic, error = %e, "lifecycle event not published");
        }
    }

    fn payload(&self, domain: &str) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("domain_id".into(), Value::String(domain.to_owned()));
        if let Some(t) = self.ctx.tenant_id() {
            p.insert("tenant_id".into(), Value::String(t.to_owned()));
        }
        p
    }

    async fn run(
        &self,
        domain: &str,
        mode: SwapMode,
        scope: Scope,
        extra_metadata: Map<String, Value>,
    ) -> Result<IngestionResult, ManagerError> {
        self.guard(domain)?;
        if self.source.get_info_in(&self.ctx, domain).await?.is_none() {
            return Err(ManagerError::Missing {
                domain: domain.to_owned(),
            });
        }
        let mut result = IngestionResult::new(domain, mode);
        let mut start = self.payload(domain);
        start.insert(
            "started_at".into(),
            Value::String(python_isoformat(&result.started_at)),
        );
        self.publish(INGEST_DOMAIN_START, EventType::Custom, start)
            .await;

        let mut outcome = self
            .run_inner(domain, mode, scope, extra_metadata, &mut result)
            .await;
        // Publish the index for replicas that hold their own copy (memory stores).
        let mut snapshot_path = None;
        if outcome.is_ok() && result.success() {
            match self.publish_snapshot(domain).await {
                Ok(path) => snapshot_path = path,
                Err(e) => outcome = Err(e),
            }
        }
        let status = match (&outcome, result.success()) {
            (Ok(()), true) => {
                let mut s = StatusUpdate::new(IngestionStatus::Ready);
                s.vector_store_path = snapshot_path.clone();
                s
            }
            (Ok(()), false) => StatusUpdate::new(IngestionStatus::Error)
                .error(result.error_summary().unwrap_or_default()),
            (Err(e), _) => {
                StatusUpdate::new(IngestionStatus::Error).error(truncate(&e.to_string(), 500))
            }
        };
        if let Err(e) = self
            .source
            .set_ingestion_status_in(&self.ctx, domain, status)
            .await
        {
            tracing::warn!(domain, error = %e, "final status not written");
        }
        result.finish();
        let completed = outcome.is_ok() && result.success();
        let mut end = self.payload(domain);
        end.insert("files_processed".into(), json!(result.files_processed));
        end.insert("chunks_created".into(), json!(result.chunks_created));
        end.insert("files_deleted".into(), json!(result.files_deleted));
        end.insert(
            "status".into(),
            json!(if completed { "completed" } else { "failed" }),
        );
        end.insert(
            "completed_at".into(),
            json!(result.completed_at.as_ref().map(python_isoformat)),
        );
        if let Some(path) = &snapshot_path {
            end.insert("vector_store_path".into(), json!(path));
        }
        self.publish(INGEST_DOMAIN_END, EventType::Custom, end.clone())
            .await;
        if completed {
            self.publish(KNOWLEDGE_INGESTION_TOPIC, EventType::Updated, end)
                .await;
        }
        outcome.map(|()| result)
    }

    async fn run_inner(
        &self,
        domain: &str,
        mode: SwapMode,
        scope: Scope,
        extra_metadata: Map<String, Value>,
        result: &mut IngestionResult,
    ) -> Result<(), ManagerError> {
        self.reconcile(domain).await?;
        self.source
            .set_ingestion_status_in(
                &self.ctx,
                domain,
                StatusUpdate::new(IngestionStatus::Ingesting),
            )
            .await?;
        let store = self.destination.store().clone();
        let rows = self.scope(domain);
        let committed = rows.clone().without(PENDING, true).without(STALE, true);

        // What is indexed now: path → checksum, read from the store itself.
        let mut indexed: BTreeMap<String, String> = BTreeMap::new();
        for (tuple, _) in store
            .distinct(&committed, &["source_path", "checksum"])
            .await?
        {
            if let (Some(Value::String(p)), Some(c)) = (tuple.first(), tuple.get(1)) {
                indexed.insert(p.clone(), c.as_str().unwrap_or_default().to_owned());
            }
        }
        let mut options = self.options.clone();
        options.tenant_id = self.ctx.tenant_id().map(str::to_owned);
        // The config is read once, for this plan and the embedding run's.
        options.config = Some(
            self.destination
                .resolve_config(&self.source, domain, &options)
                .await?,
        );
        let plan = Pipeline::with_options(self.source.clone(), options.clone())
            .plan(domain)
            .await?;
        result.files_skipped = plan.skipped.len() as u64;
        let present: BTreeMap<&str, &str> = plan
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.checksum.as_str()))
            .collect();

        let reembed_all = mode == SwapMode::ClearFirst || matches!(scope, Scope::Everything);
        let (to_embed, gone): (BTreeSet<String>, BTreeSet<String>) = match &scope {
            Scope::Full | Scope::Everything => (
                present
                    .iter()
                    .filter(|(p, c)| {
                        reembed_all || indexed.get(**p).map(String::as_str) != Some(**c)
                    })
                    .map(|(p, _)| (*p).to_owned())
                    .collect(),
                indexed
                    .keys()
                    .filter(|p| !present.contains_key(p.as_str()))
                    .cloned()
                    .collect(),
            ),
            Scope::Changes { changed, deleted } if !reembed_all => (
                changed
                    .iter()
                    .filter(|p| {
                        present
                            .get(p.as_str())
                            .is_some_and(|c| indexed.get(*p).map(String::as_str) != Some(*c))
                    })
                    .cloned()
                    .collect(),
                deleted
                    .iter()
                    .chain(changed.iter().filter(|p| !present.contains_key(p.as_str())))
                    .filter(|p| indexed.contains_key(*p))
                    .cloned()
                    .collect(),
            ),
            Scope::Changes { .. } => (
                present.keys().map(|p| (*p).to_owned()).collect(),
                indexed
                    .keys()
                    .filter(|p| !present.contains_key(p.as_str()))
                    .cloned()
                    .collect(),
            ),
        };
        result.files_unchanged = (present.len() - to_embed.len()) as u64;
        result.files_deleted = gone.len() as u64;
        let paths =
            |set: &BTreeSet<String>| Value::Array(set.iter().cloned().map(Value::String).collect());

        options.only_paths = Some(to_embed.clone());
        options.extra_metadata = extra_metadata;
        match mode {
            SwapMode::ClearFirst => {
                store.clear(&rows).await?;
                self.embed(domain, options, result).await?;
            }
            SwapMode::Append => {
                let replaced: BTreeSet<String> = to_embed.union(&gone).cloned().collect();
                if !replaced.is_empty() {
                    store
                        .clear(&rows.clone().with("source_path", paths(&replaced)))
                        .await?;
                }
                self.embed(domain, options, result).await?;
            }
            SwapMode::Tombstone => {
                if to_embed.is_empty() && gone.is_empty() {
                    return Ok(());
                }
                let generation = format!("{:032x}", rand::random::<u128>());
                self.source
                    .set_ingestion_status_in(
                        &self.ctx,
                        domain,
                        StatusUpdate::new(IngestionStatus::Swapping).generation(generation.clone()),
                    )
                    .await?;
                options.generation = Some(generation.clone());
                options
                    .extra_metadata
                    .insert(PENDING.into(), Value::Bool(true));
                let mine = rows.clone().with("_generation", generation.clone());
                let embedded = self.embed(domain, options, result).await;
                if embedded.is_err() || !result.success() {
                    // Roll back: the old corpus was never touched.
                    store.clear(&mine).await?;
                    result.files_processed = 0;
                    result.chunks_created = 0;
                    return embedded;
                }
                // Retire the committed rows of the files replaced or gone: by path, or — when
                // that is every indexed file — the whole scope (no per-row path test).
                let retired: BTreeSet<&String> = to_embed
                    .union(&gone)
                    .filter(|p| indexed.contains_key(*p))
                    .collect();
                let mut retire = Map::new();
                retire.insert(STALE.into(), Value::Bool(true));
                let mut reveal = Map::new();
                reveal.insert(PENDING.into(), Value::Bool(false));
                let mut updates = Vec::with_capacity(2);
                if !retired.is_empty() {
                    let old = rows.clone().without("_generation", generation.clone());
                    let old = if retired.len() == indexed.len() {
                        old
                    } else {
                        old.with(
                            "source_path",
                            Value::Array(
                                retired
                                    .iter()
                                    .map(|p| Value::String((*p).clone()))
                                    .collect(),
                            ),
                        )
                    };
                    updates.push((old, retire));
                }
                updates.push((mine, reveal));
                store.update_metadata_atomically(&updates).await?;
                if !retired.is_empty() {
                    store.clear(&rows.with(STALE, true)).await?;
                }
            }
        }
        self.destination.flush().await?;
        Ok(())
    }

    async fn embed(
        &self,
        domain: &str,
        options: PipelineOptions,
        result: &mut IngestionResult,
    ) -> Result<(), ManagerError> {
        if options.only_paths.as_ref().is_some_and(BTreeSet::is_empty) {
            return Ok(());
        }
        let stats = self
            .destination
            .ingest_from_backend(self.source.clone(), domain, options)
            .await?;
        result.files_processed = stats.report.total_files;
        result.chunks_created = stats.chunks_stored;
        result.errors = stats.report.errors;
        Ok(())
    }
}
