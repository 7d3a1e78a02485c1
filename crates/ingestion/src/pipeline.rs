//! The pipeline: a knowledge base's config and listing, then every selected file read through
//! the knowledge backend and chunked, delivered as a stream of events.
//!
//! Invariants:
//! - Only the config and the listing can fail a run ([`IngestionError`]); a file that cannot be
//!   read or chunked is one [`FileError`] and every other file is still chunked.
//! - Memory is bounded: files are read one at a time as streams (`.gz` decompressed on the
//!   fly), CSV and JSONL record by record, chunks handed over in batches of `batch_size`
//!   through a channel of two; a slow consumer slows the reader down.
//! - Events of one file are contiguous and in order: its `Chunks` batches, any record-level
//!   `Error`s, then `Done` or a fatal `Error` — after which the consumer discards that file's
//!   chunks (a fatal error can only follow batches for a file larger than one batch).
//! - Parsing runs on the blocking pool, never on the async workers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use dynreg_knowledge_store::{KnowledgeBackend, KnowledgeFile};

use crate::chunk::{Chunk, Format, SourceFile};
use crate::config::{
    CONFIG_FILES, ChunkingConfig, KnowledgeBaseConfig, Limits, parse_config_bytes,
};
use crate::emit::{Emitter, Sink};
use crate::error::{FileError, IngestionError, Refusal};
use crate::formats::{chunk_csv, chunk_json, chunk_jsonl, chunk_yaml};
use crate::markdown::{chunk_markdown, chunk_text};
use crate::read::{LineLimited, open, read_document, utf8};

/// Files up to this size are fetched whole; larger ones (and every `.gz`) are streamed.
const WHOLE_READ_MAX: u64 = 1 << 20;
/// The size of the chunks a file is streamed in.
const STREAM_CHUNK: usize = 64 * 1024;

/// Decides per file whether it is chunked (after the patterns matched it).
pub type FileFilter = Arc<dyn Fn(&KnowledgeFile) -> bool + Send + Sync>;

/// Told where a run is: once when its plan is known, then after every file (see
/// [`PipelineOptions::progress`]). Called on the task that drives the run: keep it cheap.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Where a run stands, as a [`ProgressFn`] sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The files the run will chunk.
    pub files_total: u64,
    /// Their stored sizes, summed.
    pub bytes_total: u64,
    /// Files finished, stored or failed.
    pub files_done: u64,
    /// Of those, the files that failed.
    pub files_failed: u64,
    /// The stored sizes of the finished files, summed.
    pub bytes_done: u64,
    /// Chunks stored so far.
    pub chunks_stored: u64,
    /// The file that just finished (empty in the first report).
    pub last_path: String,
}

/// How a run reads and chunks; the defaults suit most knowledge bases.
#[derive(Clone, Default)]
pub struct PipelineOptions {
    /// Bounds on what one file may cost.
    pub limits: Limits,
    /// Chunks per `Chunks` event (default 256).
    pub batch_size: Option<usize>,
    /// The tenant the chunks are for: part of their ids and metadata.
    pub tenant_id: Option<String>,
    /// The index generation the chunks are written under: part of their ids and metadata.
    pub generation: Option<String>,
    /// Use this config instead of the knowledge base's own config file.
    pub config: Option<KnowledgeBaseConfig>,
    /// Only these paths (still subject to the patterns): for incremental runs.
    pub only_paths: Option<BTreeSet<String>>,
    /// A further per-file decision, after the patterns.
    pub file_filter: Option<FileFilter>,
    /// Metadata added to every chunk (system keys win over it).
    pub extra_metadata: Map<String, Value>,
    /// Told where the run stands after each file (used by ingests that store the chunks).
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("limits", &self.limits)
            .field("batch_size", &self.batch_size)
            .field("tenant_id", &self.tenant_id)
            .field("generation", &self.generation)
            .field("config", &self.config.as_ref().map(|c| &c.name))
            .field("only_paths", &self.only_paths.as_ref().map(BTreeSet::len))
            .field("file_filter", &self.file_filter.is_some())
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a listed file is not chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It is the knowledge base's own config file.
    ConfigFile,
    /// An exclude pattern matches it.
    Excluded,
    /// Its extension is not a supported file type.
    Unsupported,
    /// The file filter refused it.
    Filtered,
}

/// A listed file that is not chunked, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedFile {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: SkipReason,
}

/// What a run will do: the config in force, the files it will chunk (in path order) and the
/// ones it skips.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The knowledge base.
    pub domain_id: String,
    /// The config in force (from `config.file`, or the defaults).
    pub config: KnowledgeBaseConfig,
    /// The files to chunk.
    pub files: Vec<Arc<SourceFile>>,
    /// The files listed but not chunked.
    pub skipped: Vec<SkippedFile>,
}

/// One step of a run.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// Chunks of one file, in order.
    Chunks(Vec<Chunk>),
    /// A file was chunked completely (`chunks` in all).
    Done {
        /// The file.
        file: Arc<SourceFile>,
        /// Its chunk count.
        chunks: u64,
    },
    /// A file, or one record of it (`fatal == false`), could not be chunked.
    Error(FileError),
}

/// The pipeline over one knowledge backend.
#[derive(Clone)]
pub struct Pipeline {
    backend: Arc<dyn KnowledgeBackend>,
    options: PipelineOptions,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("backend", &self.backend.kind())
            .field("options", &self.options)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline with default options.
    pub fn new(backend: Arc<dyn KnowledgeBackend>) -> Self {
        Pipeline {
            backend,
            options: PipelineOptions::default(),
        }
    }

    /// A pipeline with `options`.
    pub fn with_options(backend: Arc<dyn KnowledgeBackend>, options: PipelineOptions) -> Self {
        Pipeline { backend, options }
    }

    /// The options.
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// The knowledge base's config: the first of [`CONFIG_FILES`] that exists (the root wins
    /// over `_metadata/`), or the defaults. A file that cannot be parsed is an error naming it.
    pub async fn config(&self, domain_id: &str) -> Result<KnowledgeBaseConfig, IngestionError> {
        if let Some(c) = &self.options.config {
            return Ok(c.clone());
        }
        for file in CONFIG_FILES {
            let Some(bytes) = self.backend.get_file(domain_id, file).await? else {
                continue;
            };
            let err = |message: String| IngestionError::Config {
                domain: domain_id.to_owned(),
                file: (*file).to_owned(),
                message,
            };
            let value = parse_config_bytes(file, &bytes).map_err(err)?;
            let mut cfg = KnowledgeBaseConfig::from_value(domain_id, &value).map_err(err)?;
            cfg.file = Some((*file).to_owned());
            return Ok(cfg);
        }
        Ok(KnowledgeBaseConfig::defaults(domain_id))
    }

    /// The config, the files to chunk and the files skipped.
    pub async fn plan(&self, domain_id: &str) -> Result<Plan, IngestionError> {
        let config = self.config(domain_id).await?;
        let globs = config.enumeration_globs();
        let prefix = common_prefix(globs.iter().map(|g| g.literal_prefix()));
        let listing = self
            .backend
            .list_files(domain_id, (!prefix.is_empty()).then_some(prefix.as_str()))
            .await?;
        let kind = self.backend.kind();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut seen = BTreeSet::new();
        for f in listing {
            if !seen.insert(f.path.clone()) || !globs.iter().any(|g| g.matches(&f.path)) {
                continue;
            }
            if let Some(only) = &self.options.only_paths
                && !only.contains(&f.path)
            {
                continue;
            }
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            let reason = if CONFIG_FILES
                .iter()
                .any(|c| c.ends_with(name) && name.starts_with("knowledge_base."))
            {
                Some(SkipReason::ConfigFile)
            } else if config.is_excluded(&f.path) {
                Some(SkipReason::Excluded)
            } else if Format::of(&f.path).is_none() {
                Some(SkipReason::Unsupported)
            } else if self
                .options
                .file_filter
                .as_ref()
                .is_some_and(|filter| !filter(&f))
            {
                Some(SkipReason::Filtered)
            } else {
                None
            };
            if let Some(reason) = reason {
                skipped.push(SkippedFile {
                    path: f.path.clone(),
                    reason,
                });
                continue;
            }
            let (format, gzip) = Format::of(&f.path).expect("checked above");
            let mut metadata = self.options.extra_metadata.clone();
            metadata.extend(config.metadata_for(&f.path));
            files.push(Arc::new(SourceFile {
                domain_id: domain_id.to_owned(),
                tenant_id: self.options.tenant_id.clone(),
                generation: self.options.generation.clone(),
                source: format!("{kind}://{domain_id}/{}", f.path),
                path: f.path.clone(),
                checksum: f.checksum.clone(),
                size_bytes: f.size_bytes,
                format,
                gzip,
                metadata,
            }));
        }
        Ok(Plan {
            domain_id: domain_id.to_owned(),
            config,
            files,
            skipped,
        })
    }

    /// Chunks the knowledge base as a stream of events. Config and listing errors come here;
    /// everything else is an event.
    pub async fn stream(&self, domain_id: &str) -> Result<ChunkStream, IngestionError> {
        let plan = self.plan(domain_id).await?;
        let (tx, rx) = mpsc::channel(8);
        let backend = self.backend.clone();
        let options = self.options.clone();
        let worker_plan = plan.clone();
        let task = tokio::spawn(async move { produce(backend, options, worker_plan, tx).await });
        Ok(ChunkStream {
            rx,
            plan,
            _task: AbortOnDrop(task),
        })
    }

    /// Chunks the whole knowledge base into memory, with the run's report; the chunks of a file
    /// that failed are left out. `progress(source, chunks)` runs after each chunked file.
    pub async fn collect(
        &self,
        domain_id: &str,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<(Vec<Chunk>, ChunkingReport), IngestionError> {
        let mut stream = self.stream(domain_id).await?;
        let mut report = ChunkingReport::new(stream.plan());
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut file_start = 0;
        while let Some(event) = stream.next().await {
            report.record(&event);
            match event {
                PipelineEvent::Chunks(batch) => chunks.extend(batch),
                PipelineEvent::Done { file, chunks: n } => {
                    file_start = chunks.len();
                    progress(&file.source, n);
                }
                PipelineEvent::Error(e) if e.fatal => chunks.truncate(file_start),
                PipelineEvent::Error(_) => {}
            }
        }
        Ok((chunks, report))
    }
}

fn common_prefix(prefixes: impl Iterator<Item = String>) -> String {
    let mut common: Option<String> = None;
    for p in prefixes {
        common = Some(match common {
            None => p,
            Some(c) => {
                let n = c.bytes().zip(p.bytes()).take_while(|(a, b)| a == b).count();
                c[..n].to_owned()
            }
        });
    }
    let common = common.unwrap_or_default();
    match common.rfind('/') {
        Some(i) => common[..=i].to_owned(),
        None => String::new(),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The events of a run; ends when every file was handled. Dropping it stops the run.
pub struct ChunkStream {
    rx: mpsc::Receiver<PipelineEvent>,
    plan: Plan,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl ChunkStream {
    /// What the run does.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

impl Stream for ChunkStream {
    type Item = PipelineEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PipelineEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// A chunked file, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentReport {
    /// Its display source.
    pub source: String,
    /// Its document type.
    #[serde(rename = "type")]
    pub document_type: String,
    /// Chunks it gave.
    pub chunks: u64,
    /// Its errors.
    pub errors: Vec<String>,
}

/// The summary of a run, the original's stats dict (`total_files`, `total_chunks`,
/// `files_skipped`, `files_by_type`, `errors`, `documents`) plus the skipped files by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChunkingReport {
    /// Files chunked without a fatal error (also those that gave no chunk).
    pub total_files: u64,
    /// Chunks of those files.
    pub total_chunks: u64,
    /// Files listed but not chunked.
    pub files_skipped: u64,
    /// Chunked files by document type.
    pub files_by_type: BTreeMap<String, u64>,
    /// Every file and record error, `{"file", "error"}`.
    pub errors: Vec<FileError>,
    /// Every file processed, in order.
    pub documents: Vec<DocumentReport>,
    /// The skipped files and why.
    pub skipped: Vec<SkippedFile>,
    #[serde(skip)]
    pending: u64,
    #[serde(skip)]
    pending_errors: Vec<String>,
}

impl ChunkingReport {
    /// An empty report for `plan`'s run (its skipped files counted).
    pub fn new(plan: &Plan) -> Self {
        ChunkingReport {
            files_skipped: plan.skipped.len() as u64,
            skipped: plan.skipped.clone(),
            ..Default::default()
        }
    }

    /// Takes one event into account.
    pub fn record(&mut self, event: &PipelineEvent) {
        match event {
            PipelineEvent::Chunks(batch) => self.pending += batch.len() as u64,
            PipelineEvent::Done { file, chunks } => {
                self.total_files += 1;
                self.total_chunks += chunks;
                *self
                    .files_by_type
                    .entry(file.document_type().as_str().to_owned())
                    .or_default() += 1;
                self.documents.push(DocumentReport {
                    source: file.source.clone(),
                    document_type: file.document_type().as_str().to_owned(),
                    chunks: *chunks,
                    errors: std::mem::take(&mut self.pending_errors),
                });
                self.pending = 0;
            }
            PipelineEvent::Error(e) => {
                self.errors.push(e.clone());
                if e.fatal {
                    let mut errors = std::mem::take(&mut self.pending_errors);
                    errors.push(e.error.clone());
                    self.documents.push(DocumentReport {
                        source: e.file.clone(),
                        document_type: Format::of(&e.path)
                            .map_or("unknown", |(f, _)| f.document_type().as_str())
                            .to_owned(),
                        chunks: 0,
                        errors,
                    });
                    self.pending = 0;
                } else {
                    self.pending_errors.push(e.error.clone());
                }
            }
        }
    }
}

/// Sends a file's chunks in batches from the blocking thread.
struct BatchSink {
    batch: Vec<Chunk>,
    size: usize,
    tx: mpsc::Sender<PipelineEvent>,
}

impl BatchSink {
    fn flush(&mut self) -> Result<(), Refusal> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.size.min(1024)));
        self.tx
            .blocking_send(PipelineEvent::Chunks(batch))
            .map_err(|_| Refusal::Stopped)
    }
}

impl Sink for BatchSink {
    fn chunk(&mut self, chunk: Chunk) -> Result<(), Refusal> {
        self.batch.push(chunk);
        if self.batch.len() >= self.size {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn record_error(&mut self, error: FileError) -> Result<(), Refusal> {
        self.flush()?;
        self.tx
            .blocking_send(PipelineEvent::Error(error))
            .map_err(|_| Refusal::Stopped)
    }
}

fn fatal(file: &SourceFile, message: impl std::fmt::Display) -> PipelineEvent {
    PipelineEvent::Error(FileError {
        file: file.source.clone(),
        error: format!("{}: {message}", file.path),
        path: file.path.clone(),
        line: None,
        fatal: true,
    })
}

async fn produce(
    backend: Arc<dyn KnowledgeBackend>,
    options: PipelineOptions,
    plan: Plan,
    tx: mpsc::Sender<PipelineEvent>,
) {
    let batch_size = options.batch_size.unwrap_or(256).max(1);
    for file in plan.files {
        let limits = options.limits.clone();
        if file.size_bytes > limits.max_file_bytes {
            let e = fatal(
                &file,
                format!(
                    "larger than max_file_bytes ({} bytes)",
                    limits.max_file_bytes
                ),
            );
            if tx.send(e).await.is_err() {
                return;
            }
            continue;
        }
        let stored: Box<dyn Read + Send> = match open_stored(&*backend, &file).await {
            Ok(r) => r,
            Err(message) => {
                if tx.send(fatal(&file, message)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let cfg = plan.config.chunking_for(&file.path).clone();
        let tx_file = tx.clone();
        let job_file = file.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut sink = BatchSink {
                batch: Vec::new(),
                size: batch_size,
                tx: tx_file,
            };
            let outcome = chunk_file(job_file.clone(), stored, &cfg, &limits, &mut sink);
            let last = match outcome {
                Ok(n) => sink.flush().map(|()| PipelineEvent::Done {
                    file: job_file.clone(),
                    chunks: n,
                }),
                Err(Refusal::Stopped) => Err(Refusal::Stopped),
                Err(e) => Ok(fatal(&job_file, e)),
            };
            match last {
                Ok(event) => sink.tx.blocking_send(event).is_ok(),
                Err(_) => false,
            }
        });
        match job.await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let e = fatal(&file, format!("the chunker failed: {e}"));
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The stored bytes of a file: fetched whole when small, else a blocking reader over the
/// backend's stream.
async fn open_stored(
    backend: &dyn KnowledgeBackend,
    file: &SourceFile,
) -> Result<Box<dyn Read + Send>, String> {
    if !file.gzip && file.size_bytes <= WHOLE_READ_MAX {
        return match backend.get_file(&file.domain_id, &file.path).await {
            Ok(Some(bytes)) => Ok(Box::new(Cursor::new(bytes))),
            Ok(None) => Err("the file disappeared before it was read".into()),
            Err(e) => Err(format!("read failed: {e}")),
        };
    }
    match backend
        .stream_file(&file.domain_id, &file.path, STREAM_CHUNK)
        .await
    {
        Ok(Some(stream)) => {
            let stream = stream.map_err(std::io::Error::other);
            Ok(Box::new(SyncIoBridge::new(StreamReader::new(stream))))
        }
        Ok(None) => Err("the file disappeared before it was read".into()),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Chunks one file (on a blocking thread); the chunk count.
pub(crate) fn chunk_file(
    file: Arc<SourceFile>,
    stored: Box<dyn Read + Send>,
    cfg: &ChunkingConfig,
    limits: &Limits,
    sink: &mut dyn Sink,
) -> Result<u64, Refusal> {
    let mut reader = open(stored, file.gzip, limits);
    let format = file.format;
    let mut em = Emitter::new(file, cfg, limits, sink);
    match format {
        Format::Csv => chunk_csv(LineLimited::new(reader, limits.max_line_bytes), &mut em)?,
        Format::Jsonl => chunk_jsonl(LineLimited::new(reader, limits.max_line_bytes), &mut em)?,
        Format::Markdown | Format::Text | Format::Yaml | Format::Json => {
            let bytes = read_document(&mut reader, limits)?;
            let (text, base) = utf8(&bytes).map_err(Refusal::msg)?;
            match format {
                Format::Markdown => chunk_markdown(text, base, None, &mut em)?,
                Format::Text => chunk_text(text, base, &mut em)?,
                Format::Yaml => chunk_yaml(text, bytes.len() as u64, &mut em)?,
                _ => chunk_json(text, base, &mut em)?,
            }
        }
    }
    Ok(em.chunks_emitted())
}

/// Chunks `content` as if it were the file `path` (no knowledge backend): the chunks or the
/// first error. For tests, previews and tools.
pub fn chunk_bytes(
    file: SourceFile,
    content: &[u8],
    cfg: &ChunkingConfig,
    limits: &Limits,
) -> Result<Vec<Chunk>, String> {
    let mut out: Vec<Chunk> = Vec::new();
    let reader: Box<dyn Read + Send> = Box::new(Cursor::new(content.to_vec()));
    let file = Arc::new(file);
    chunk_file(file.clone(), reader, cfg, limits, &mut out)
        .map(|_| out)
        .map_err(|e| format!("{}: {e}", file.path))
}
