//! The RAG knowledge base: an embedder and a vector store, fed by the pipeline, queried by text.
//!
//! Invariants:
//! - The embedder's width and the store's width agree, or construction fails naming both (the
//!   original silently stores 768-wide echo vectors under a 384 config).
//! - Chunks are embedded in batches (one call per pipeline batch, not one per chunk) and each
//!   batch is one upsert.
//! - A file that fails (to read, chunk, embed or store) leaves none of the chunks this run wrote
//!   for it; a file that shrank loses its chunks past its new end.
//! - Reads hide rows marked `_pending: true` (written by an ingest that has not committed) and
//!   `_stale: true` (a retired generation, unless asked for), inside the store's search, so a
//!   query returns `k` visible rows whatever is hidden; a bound domain or tenant is added to
//!   every read filter that does not name it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use dynreg_knowledge_store::KnowledgeBackend;
use dynreg_resource_resolver::keys::unknown_key;

use crate::config::{ChunkingConfig, KnowledgeBaseConfig};
use crate::embed::{EchoEmbedder, EmbedError, Embedder, HashEmbedder, create_embedder};
use crate::error::{FileError, IngestionError};
use crate::pipeline::{ChunkingReport, Pipeline, PipelineEvent, PipelineOptions, Progress};
use crate::vector::{
    Filter, MemoryVectorStore, MemoryVectorStoreConfig, Metric, VectorError, VectorRecord,
    VectorStore,
};

/// The metadata flag of rows of a retired generation (hidden from reads, deleted after a swap).
pub const STALE: &str = "_stale";
/// The metadata flag of rows written by an ingest that has not committed (hidden from reads).
pub const PENDING: &str = "_pending";

/// A RAG knowledge base failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RagError {
    /// The config is invalid: the key and what is wrong.
    #[error("RAG knowledge base config: {0}")]
    Config(String),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The vector store failed.
    #[error(transparent)]
    Vector(#[from] VectorError),
    /// The pipeline could not start (config file, listing).
    #[error(transparent)]
    Ingestion(#[from] IngestionError),
}

/// Pipeline events an ingest looks ahead by: the batches among them are being embedded while
/// the first is stored.
const EMBED_AHEAD: usize = 4;

/// One event of an ingest in order, a batch with the task preparing its records.
enum Step {
    Batch {
        file: Arc<crate::SourceFile>,
        job: tokio::task::JoinHandle<Result<Vec<VectorRecord>, RagError>>,
    },
    Event(PipelineEvent),
}

/// The steps of an ingest not applied yet. Dropped early (an ingest that stops on an error),
/// it cancels the embedding tasks still running: their work would never be stored.
struct Queue(VecDeque<Step>);

impl Drop for Queue {
    fn drop(&mut self) {
        for step in &self.0 {
            if let Step::Batch { job, .. } = step {
                job.abort();
            }
        }
    }
}

/// One query result, the original's `{"text", "source", "heading_path", "similarity", "metadata"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryHit {
    /// The chunk text.
    pub text: String,
    /// Its display source.
    pub source: String,
    /// `"A > B"`.
    pub heading_path: String,
    /// Similarity to the query (cosine by default).
    pub similarity: f32,
    /// Its full metadata and provenance.
    pub metadata: Arc<Map<String, Value>>,
}

impl QueryHit {
    /// The hit as the command line and the HTTP routes show it: `source`, `heading_path`,
    /// `similarity` and `text` (not the full metadata).
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "source": self.source,
            "heading_path": self.heading_path,
            "similarity": self.similarity,
            "text": self.text,
        })
    }
}

/// What a query asks for beyond the text.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOptions {
    /// Results wanted (default 5).
    pub k: usize,
    /// A metadata filter (the vector store's semantics).
    pub filter: Filter,
    /// Results below this similarity are dropped (default 0: none).
    pub min_similarity: f32,
    /// Also return rows of a retired generation (default false).
    pub include_stale: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            k: 5,
            filter: Filter::all(),
            min_similarity: 0.0,
            include_stale: false,
        }
    }
}

/// The outcome of [`RagKnowledgeBase::ingest_from_backend`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestStats {
    /// The pipeline's report; its `errors` also hold embedding and storing failures.
    #[serde(flatten)]
    pub report: ChunkingReport,
    /// Chunks embedded and stored.
    pub chunks_stored: u64,
}

/// Embedder + vector store + the pipeline.
#[derive(Debug, Clone)]
pub struct RagKnowledgeBase {
    limiter: Option<Arc<dyn crate::limit::RateLimiter>>,
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunking: Option<ChunkingConfig>,
    domain_id: Option<String>,
    tenant_id: Option<String>,
}

const TOP_KEYS: &[&str] = &[
    "vector_store",
    "embedding",
    "embedding_provider",
    "embedding_model",
    "dimensions",
    "api_base",
    "embedding_base_url",
    "api_key",
    "chunking",
    "merger",
    "formatter",
    "documents_path",
    "document_pattern",
    "tenant_id",
    "domain_id",
];
const STORE_KEYS: &[&str] = &[
    "backend",
    "dimensions",
    "metric",
    "persist_path",
    "vector_store_path",
    "batch_size",
    "domain_id",
    "url",
    "connection_string",
    "table",
    "table_name",
    "ef_search",
    "max_connections",
];
/// The vector-store backends this build has.
const BACKENDS: &[&str] = &[
    "memory",
    #[cfg(feature = "pgvector")]
    "pgvector",
];
const EMBEDDING_KEYS: &[&str] = &[
    "provider",
    "model",
    "dimensions",
    "api_base",
    "api_key",
    "model_dir",
    "max_seq_length",
    "batch_size",
];

fn obj<'a>(v: &'a Value, key: &str) -> Result<Option<&'a Map<String, Value>>, RagError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        other => Err(RagError::Config(format!(
            "{key}: expected a mapping, got {other}"
        ))),
    }
}

fn dims(v: Option<&Value>, key: &str) -> Result<Option<usize>, RagError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(RagError::Config(format!(
                "{key}: expected a positive integer, got {v}"
            ))),
        },
    }
}

fn string<'a>(v: Option<&'a Value>, key: &str) -> Result<Option<&'a str>, RagError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(RagError::Config(format!(
            "{key}: expected a string, got {v}"
        ))),
    }
}

impl RagKnowledgeBase {
    /// A knowledge base over `embedder` and `store`; their widths must agree.
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Result<Self, RagError> {
        if embedder.dimensions() != store.dimensions() {
            return Err(RagError::Config(format!(
                "the {} embedder gives {}-dimensional vectors but the {} vector store holds {}",
                embedder.provider(),
                embedder.dimensions(),
                store.kind(),
                store.dimensions()
            )));
        }
        Ok(RagKnowledgeBase {
            limiter: None,
            embedder,
            store,
            chunking: None,
            domain_id: None,
            tenant_id: None,
        })
    }

    /// Binds reads to a domain (and its ingests' chunks carry it, as they always do).
    pub fn with_domain(mut self, domain_id: impl Into<String>) -> Self {
        self.domain_id = Some(domain_id.into());
        self
    }

    /// Binds reads and ingests to a tenant.
    pub fn with_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Asks `limiter` for one `"embed"` permit per chunk before each batch is embedded.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn crate::limit::RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The chunking used for knowledge bases without their own config file.
    pub fn with_chunking(mut self, chunking: ChunkingConfig) -> Self {
        self.chunking = Some(chunking);
        self
    }

    /// Builds one from the original's config keys, e.g.
    /// `{"vector_store": {"backend": "memory", "dimensions": 384}, "embedding_provider": "hash"}`.
    pub async fn from_config(config: &Value) -> Result<Self, RagError> {
        let Some(top) = obj(config, "config")? else {
            return Err(RagError::Config("expected a mapping".into()));
        };
        for k in top.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(RagError::Config(unknown_key(k, TOP_KEYS)));
            }
        }
        for k in ["merger", "formatter", "documents_path"] {
            if top.get(k).is_some_and(|v| !v.is_null()) {
                return Err(RagError::Config(format!(
                    "{k} is not supported by dynreg's RAG knowledge base"
                )));
            }
        }
        let store_cfg = match top.get("vector_store") {
            Some(v) => obj(v, "vector_store")?.cloned().unwrap_or_default(),
            None => Map::new(),
        };
        for k in store_cfg.keys() {
            if !STORE_KEYS.contains(&k.as_str()) {
                return Err(RagError::Config(format!(
                    "vector_store: {}",
                    unknown_key(k, STORE_KEYS)
                )));
            }
        }
        let embedding = match top.get("embedding") {
            Some(v) => obj(v, "embedding")?.cloned().unwrap_or_default(),
            None => Map::new(),
        };
        for k in embedding.keys() {
            if !EMBEDDING_KEYS.contains(&k.as_str()) {
                return Err(RagError::Config(format!(
                    "embedding: {}",
                    unknown_key(k, EMBEDDING_KEYS)
                )));
            }
        }
        let provider = string(embedding.get("provider"), "embedding.provider")?
            .or(string(top.get("embedding_provider"), "embedding_provider")?)
            .unwrap_or("hash");
        let api_base = string(top.get("api_base"), "api_base")?
            .or(string(top.get("embedding_base_url"), "embedding_base_url")?)
            .or(string(embedding.get("api_base"), "embedding.api_base")?);
        // The model and key name a service: the offline embedders accept and ignore them.
        #[cfg_attr(not(feature = "http"), allow(unused_variables))]
        let api_key = string(top.get("api_key"), "api_key")?
            .or(string(embedding.get("api_key"), "embedding.api_key")?);
        #[cfg_attr(not(feature = "http"), allow(unused_variables))]
        let model = string(embedding.get("model"), "embedding.model")?
            .or(string(top.get("embedding_model"), "embedding_model")?);
        let embed_dims = dims(embedding.get("dimensions"), "embedding.dimensions")?
            .or(dims(top.get("dimensions"), "dimensions")?);
        let store_dims = dims(store_cfg.get("dimensions"), "vector_store.dimensions")?;
        if let (Some(e), Some(s)) = (embed_dims, store_dims)
            && e != s
        {
            return Err(RagError::Config(format!(
                "dimensions: the embedding is {e}-dimensional but vector_store.dimensions is {s}"
            )));
        }
        let embedder: Arc<dyn Embedder> = match provider {
            "echo" | "hash" => {
                if let Some(base) = api_base {
                    return Err(RagError::Config(format!(
                        "api_base {base:?}: the {provider} embedder runs in process and takes no endpoint"
                    )));
                }
                let default = if provider == "echo" {
                    EchoEmbedder::DEFAULT_DIMENSIONS
                } else {
                    HashEmbedder::DEFAULT_DIMENSIONS
                };
                create_embedder(provider, Some(embed_dims.or(store_dims).unwrap_or(default)))?
            }
            #[cfg(feature = "http")]
            "openai" | "ollama" => {
                use crate::embed::{HttpApi, HttpEmbedder, HttpEmbedderConfig};
                let (api, default_base) = if provider == "openai" {
                    (HttpApi::OpenAi, "https://api.openai.com/v1")
                } else {
                    (HttpApi::Ollama, "http://127.0.0.1:11434")
                };
                let model = model.ok_or_else(|| {
                    RagError::Config(format!(
                        "embedding_model: the {provider} embedder needs a model name"
                    ))
                })?;
                let width = embed_dims.or(store_dims).ok_or_else(|| {
                    RagError::Config(format!(
                        "dimensions: the {provider} embedder needs the model's width"
                    ))
                })?;
                let mut c =
                    HttpEmbedderConfig::new(api, api_base.unwrap_or(default_base), model, width);
                c.api_key = api_key.map(str::to_owned);
                Arc::new(HttpEmbedder::new(c)?)
            }
            #[cfg(feature = "local")]
            "local" => {
                use crate::embed::{LocalEmbedder, LocalEmbedderConfig};
                if let Some(base) = api_base {
                    return Err(RagError::Config(format!(
                        "api_base {base:?}: the local embedder runs in process and takes no endpoint"
                    )));
                }
                let dir = string(embedding.get("model_dir"), "embedding.model_dir")?.ok_or_else(
                    || {
                        RagError::Config(
                            "embedding.model_dir: the local embedder needs the model's directory \
                             (config.json, tokenizer.json, model.safetensors)"
                                .into(),
                        )
                    },
                )?;
                let mut c = LocalEmbedderConfig::new(dir);
                c.dimensions = embed_dims.or(store_dims);
                if let Some(n) = dims(embedding.get("max_seq_length"), "embedding.max_seq_length")?
                {
                    c.max_seq_length = n;
                }
                if let Some(n) = dims(embedding.get("batch_size"), "embedding.batch_size")? {
                    c.batch_size = n;
                }
                // Loading reads the weights (~90 MB): off the async threads.
                let embedder = tokio::task::spawn_blocking(move || LocalEmbedder::new(c))
                    .await
                    .map_err(|e| RagError::Config(format!("loading the local model: {e}")))??;
                Arc::new(embedder)
            }
            other => {
                let providers: &[&str] = &[
                    "echo",
                    "hash",
                    #[cfg(feature = "http")]
                    "openai",
                    #[cfg(feature = "http")]
                    "ollama",
                    #[cfg(feature = "local")]
                    "local",
                ];
                let hint = if matches!(other, "openai" | "ollama") {
                    " (built without the http feature)"
                } else if other == "local" {
                    " (built without the local feature)"
                } else {
                    ""
                };
                return Err(RagError::Config(format!(
                    "embedding_provider: {}{hint}",
                    unknown_key(other, providers)
                )));
            }
        };
        let width = embedder.dimensions();
        let backend = string(store_cfg.get("backend"), "vector_store.backend")?.unwrap_or("memory");
        if !BACKENDS.contains(&backend) {
            let hint = if backend == "pgvector" {
                " (built without the pgvector feature)"
            } else {
                ""
            };
            return Err(RagError::Config(format!(
                "vector_store.backend: {}{hint}",
                unknown_key(backend, BACKENDS)
            )));
        }
        let metric = match string(store_cfg.get("metric"), "vector_store.metric")? {
            None => Metric::Cosine,
            Some(m) => Metric::parse(m).ok_or_else(|| {
                RagError::Config(format!(
                    "vector_store.metric: {m:?} is not one of cosine, dot_product, euclidean"
                ))
            })?,
        };
        let store: Arc<dyn VectorStore> = if backend == "memory" {
            let persist_path = string(store_cfg.get("persist_path"), "vector_store.persist_path")?
                .or(string(
                    store_cfg.get("vector_store_path"),
                    "vector_store.vector_store_path",
                )?)
                .map(PathBuf::from);
            Arc::new(MemoryVectorStore::open(MemoryVectorStoreConfig {
                dimensions: width,
                metric,
                persist_path,
            })?)
        } else {
            Self::server_store(&store_cfg, width, metric).await?
        };
        let mut kb = RagKnowledgeBase::new(embedder, store)?;
        if let Some(c) = top.get("chunking").filter(|v| !v.is_null()) {
            let m = obj(c, "chunking")?.cloned().unwrap_or_default();
            if !m.is_empty() {
                kb.chunking = Some(
                    ChunkingConfig::from_map(&m)
                        .map_err(|e| RagError::Config(format!("chunking: {e}")))?,
                );
            }
        }
        if let Some(d) = string(top.get("domain_id"), "domain_id")?.or(string(
            store_cfg.get("domain_id"),
            "vector_store.domain_id",
        )?) {
            kb.domain_id = Some(d.to_owned());
        }
        if let Some(t) = string(top.get("tenant_id"), "tenant_id")? {
            kb.tenant_id = Some(t.to_owned());
        }
        Ok(kb)
    }

    #[cfg(feature = "pgvector")]
    async fn server_store(
        cfg: &Map<String, Value>,
        width: usize,
        metric: Metric,
    ) -> Result<Arc<dyn VectorStore>, RagError> {
        use crate::vector::{PgVectorConfig, PgVectorStore};
        let url = string(cfg.get("url"), "vector_store.url")?
            .or(string(
                cfg.get("connection_string"),
                "vector_store.connection_string",
            )?)
            .ok_or_else(|| {
                RagError::Config(
                    "vector_store.url: the pgvector backend needs a PostgreSQL URL".into(),
                )
            })?;
        let mut c = PgVectorConfig::new(url, width);
        c.metric = metric;
        if let Some(t) = string(cfg.get("table"), "vector_store.table")?
            .or(string(cfg.get("table_name"), "vector_store.table_name")?)
        {
            c.table = t.to_owned();
        }
        if let Some(n) = dims(cfg.get("ef_search"), "vector_store.ef_search")? {
            c.ef_search = n as u32;
        }
        if let Some(n) = dims(cfg.get("max_connections"), "vector_store.max_connections")? {
            c.max_connections = n as u32;
        }
        Ok(Arc::new(PgVectorStore::connect(c).await?))
    }

    #[cfg(not(feature = "pgvector"))]
    async fn server_store(
        _: &Map<String, Value>,
        _: usize,
        _: Metric,
    ) -> Result<Arc<dyn VectorStore>, RagError> {
        Err(RagError::Config(
            "vector_store.backend: no server backend in this build".into(),
        ))
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The vector store.
    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// The bound domain, if any.
    pub fn domain_id(&self) -> Option<&str> {
        self.domain_id.as_deref()
    }

    /// The bound tenant, if any.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// `filter` with the bound domain and tenant added where it does not name them.
    fn read_filter(&self, filter: &Filter) -> Filter {
        let mut f = filter.clone();
        if let Some(d) = &self.domain_id {
            f = f.with_default("domain_id", d.clone());
        }
        if let Some(t) = &self.tenant_id {
            f = f.with_default("tenant_id", t.clone());
        }
        f
    }

    /// The config an ingest of `domain_id` from `backend` runs with: `options.config` if set;
    /// else the knowledge base's config file; else the defaults with this knowledge base's
    /// chunking (if it has its own). Resolving it once and passing it as `options.config`
    /// spares every later plan the config file lookups.
    pub async fn resolve_config(
        &self,
        backend: &Arc<dyn KnowledgeBackend>,
        domain_id: &str,
        options: &PipelineOptions,
    ) -> Result<KnowledgeBaseConfig, RagError> {
        if let Some(c) = &options.config {
            return Ok(c.clone());
        }
        let cfg = Pipeline::with_options(backend.clone(), options.clone())
            .config(domain_id)
            .await?;
        Ok(match (&self.chunking, cfg.file.is_none()) {
            (Some(chunking), true) => {
                let mut cfg = KnowledgeBaseConfig::defaults(domain_id);
                cfg.chunking = chunking.clone();
                cfg
            }
            _ => cfg,
        })
    }

    /// Chunks, embeds and stores a knowledge base from `backend`. Only the config file and the
    /// listing fail the call; every file failure is an entry of `report.errors`.
    pub async fn ingest_from_backend(
        &self,
        backend: Arc<dyn KnowledgeBackend>,
        domain_id: &str,
        mut options: PipelineOptions,
    ) -> Result<IngestStats, RagError> {
        if options.tenant_id.is_none() {
            options.tenant_id = self.tenant_id.clone();
        }
        if options.config.is_none() && self.chunking.is_some() {
            options.config = Some(self.resolve_config(&backend, domain_id, &options).await?);
        }
        let progress_fn = options.progress.clone();
        let pipeline = Pipeline::with_options(backend, options);
        let mut stream = pipeline.stream(domain_id).await?;
        let mut stats = IngestStats {
            report: ChunkingReport::new(stream.plan()),
            chunks_stored: 0,
        };
        let mut progress = Progress {
            files_total: stream.plan().files.len() as u64,
            bytes_total: stream.plan().files.iter().map(|f| f.size_bytes).sum(),
            ..Progress::default()
        };
        // Sizes by path, for the byte count of each report: only built when someone listens.
        let sizes: HashMap<String, u64> = match &progress_fn {
            Some(_) => stream
                .plan()
                .files
                .iter()
                .map(|f| (f.path.clone(), f.size_bytes))
                .collect(),
            None => HashMap::new(),
        };
        let report = |progress: &mut Progress, path: &str, failed: bool, chunks: u64| {
            if let Some(f) = &progress_fn {
                progress.files_done += 1;
                progress.files_failed += u64::from(failed);
                progress.bytes_done += sizes.get(path).copied().unwrap_or(0);
                progress.chunks_stored += chunks;
                progress.last_path.clear();
                progress.last_path.push_str(path);
                f(progress);
            }
        };
        if let Some(f) = &progress_fn {
            f(&progress);
        }
        // Ids written for the file in progress, and files that failed while being stored.
        let mut written: Vec<String> = Vec::new();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        // Embedding runs ahead of storing: each batch's vectors and records are prepared by a
        // task of its own as soon as the batch arrives, up to `EMBED_AHEAD` events ahead, while
        // events are applied to the store strictly in order (a file's `Done` after its batches).
        let mut queue = Queue(VecDeque::new());
        let mut exhausted = false;
        loop {
            while !exhausted && queue.0.len() < EMBED_AHEAD {
                match stream.next().await {
                    Some(PipelineEvent::Chunks(batch)) => {
                        let Some(first) = batch.first() else { continue };
                        let file = first.file.clone();
                        let job = tokio::spawn(self.prepare(batch));
                        queue.0.push_back(Step::Batch { file, job });
                    }
                    Some(event) => queue.0.push_back(Step::Event(event)),
                    None => exhausted = true,
                }
            }
            let Some(step) = queue.0.pop_front() else {
                break;
            };
            match step {
                Step::Batch { file, job } => {
                    if failed.contains(&file.path) {
                        continue;
                    }
                    let prepared = match job.await {
                        Ok(r) => r,
                        Err(e) => Err(RagError::Config(format!(
                            "embedding {} failed: {e}",
                            file.path
                        ))),
                    };
                    let stored = match prepared {
                        Ok(records) => {
                            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
                            self.store
                                .upsert(records)
                                .await
                                .map(|()| ids)
                                .map_err(RagError::from)
                        }
                        Err(e) => Err(e),
                    };
                    match stored {
                        Ok(ids) => written.extend(ids),
                        Err(e) => {
                            self.store.delete(&std::mem::take(&mut written)).await?;
                            failed.insert(file.path.clone());
                            let err = FileError {
                                file: file.source.clone(),
                                error: format!("{}: {e}", file.path),
                                path: file.path.clone(),
                                line: None,
                                fatal: true,
                            };
                            stats.report.record(&PipelineEvent::Error(err));
                            report(&mut progress, &file.path, true, 0);
                        }
                    }
                }
                Step::Event(PipelineEvent::Done { file, chunks }) => {
                    if failed.contains(&file.path) {
                        continue;
                    }
                    stats.report.record(&PipelineEvent::Done {
                        file: file.clone(),
                        chunks,
                    });
                    stats.chunks_stored += written.len() as u64;
                    report(&mut progress, &file.path, false, written.len() as u64);
                    written.clear();
                    self.trim_file(&file, chunks).await?;
                }
                Step::Event(PipelineEvent::Error(e)) => {
                    if e.fatal {
                        self.store.delete(&std::mem::take(&mut written)).await?;
                        if !failed.contains(&e.path) {
                            report(&mut progress, &e.path, true, 0);
                        }
                    }
                    stats.report.record(&PipelineEvent::Error(e));
                }
                Step::Event(PipelineEvent::Chunks(_)) => {
                    unreachable!("batches are queued as Batch")
                }
            }
        }
        self.store.flush().await?;
        Ok(stats)
    }

    /// The vectors and store records of one batch, made without the store (so that batches can
    /// be prepared ahead of the one being stored).
    fn prepare(
        &self,
        batch: Vec<crate::Chunk>,
    ) -> impl std::future::Future<Output = Result<Vec<VectorRecord>, RagError>> + Send + 'static
    {
        let embedder = self.embedder.clone();
        let limiter = self.limiter.clone();
        async move {
            let texts: Vec<&str> = batch.iter().map(|c| c.embedding_text.as_str()).collect();
            if let Some(limiter) = &limiter {
                limiter
                    .acquire("embed", u32::try_from(texts.len()).unwrap_or(u32::MAX))
                    .await;
            }
            let vectors = embedder.embed(&texts).await?;
            if vectors.len() != batch.len() {
                return Err(RagError::Config(format!(
                    "the {} embedder returned {} vectors for {} texts",
                    embedder.provider(),
                    vectors.len(),
                    batch.len()
                )));
            }
            Ok(batch
                .iter()
                .zip(vectors)
                .map(|(c, vector)| VectorRecord::from_chunk(c, vector))
                .collect())
        }
    }

    /// Deletes chunks of `file` past its new chunk count (left from a longer earlier version).
    /// Ids are dense per file (a failed file's chunks are all removed), so the tail is the ids
    /// from `chunks` on: deleted in blocks until a block finds fewer than it asked for.
    async fn trim_file(&self, file: &crate::SourceFile, chunks: u64) -> Result<(), RagError> {
        const BLOCK: u64 = 64;
        let mut from = chunks;
        loop {
            let ids: Vec<String> = (from..from + BLOCK).map(|i| file.chunk_id(i)).collect();
            if self.store.delete(&ids).await? < BLOCK {
                return Ok(());
            }
            from += BLOCK;
        }
    }

    /// The `k` chunks most similar to `text` (hiding stale rows), above `min_similarity`.
    pub async fn query(
        &self,
        text: &str,
        k: usize,
        filter: Option<&Filter>,
        min_similarity: f32,
    ) -> Result<Vec<QueryHit>, RagError> {
        let options = QueryOptions {
            k,
            filter: filter.cloned().unwrap_or_default(),
            min_similarity,
            include_stale: false,
        };
        self.query_with(text, &options).await
    }

    /// [`query`](Self::query) under the name some of the original's docs use.
    pub async fn search(&self, text: &str, k: usize) -> Result<Vec<QueryHit>, RagError> {
        self.query(text, k, None, 0.0).await
    }

    /// A query with every option.
    pub async fn query_with(
        &self,
        text: &str,
        options: &QueryOptions,
    ) -> Result<Vec<QueryHit>, RagError> {
        let vector = self
            .embedder
            .embed(&[text])
            .await?
            .pop()
            .unwrap_or_default();
        let filter = self.visible(self.read_filter(&options.filter), options.include_stale);
        let hits = self.store.search(&vector, options.k, &filter).await?;
        Ok(hits
            .into_iter()
            .filter(|h| h.score >= options.min_similarity)
            .map(|h| {
                let s = |k: &str| {
                    h.metadata
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                QueryHit {
                    text: s("text"),
                    source: s("source"),
                    heading_path: s("heading_path"),
                    similarity: h.score,
                    metadata: h.metadata,
                }
            })
            .collect())
    }

    /// Chunks matching `filter` (with the bound scope), stale rows excluded unless asked for.
    pub async fn count(&self, filter: &Filter, include_stale: bool) -> Result<u64, RagError> {
        let f = self.visible(self.read_filter(filter), include_stale);
        Ok(self.store.count(&f).await?)
    }

    /// `filter` without rows not yet committed (`_pending`) and, unless `include_stale`,
    /// without retired ones (`_stale`).
    fn visible(&self, filter: Filter, include_stale: bool) -> Filter {
        let f = filter.without(PENDING, true);
        if include_stale {
            f
        } else {
            f.without(STALE, true)
        }
    }

    /// Deletes the chunks of one source file (in the bound scope); the number deleted.
    pub async fn delete_source(&self, path: &str) -> Result<u64, RagError> {
        let f = self.read_filter(&Filter::all().with("source_path", path));
        Ok(self.store.clear(&f).await?)
    }

    /// Persists the store (for stores that persist on demand).
    pub async fn flush(&self) -> Result<(), RagError> {
        Ok(self.store.flush().await?)
    }
}
