//! # dynreg-ingestion
//!
//! The document pipeline: every file of a knowledge base, read through any
//! [`KnowledgeBackend`](dynreg_knowledge_store::KnowledgeBackend) (memory, file, S3), turned into
//! [`Chunk`]s with full provenance and delivered as a stream with bounded memory.
//!
//! ```
//! use std::sync::Arc;
//! use dynreg_ingestion::Pipeline;
//! use dynreg_knowledge_store::{KnowledgeBackendExt, PutOptions, create_knowledge_backend};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kb = create_knowledge_backend("memory", &serde_json::json!({})).await?;
//! kb.create_kb("support", Default::default()).await?;
//! let faq = "# FAQ\n\n## Refunds\n\nRefunds take five days.\n";
//! kb.put_file("support", "faq.md", faq.into(), PutOptions::default()).await?;
//! kb.put_file("support", "plans.csv", "plan,price\nPro,20\n".into(), PutOptions::default()).await?;
//!
//! let (chunks, report) = Pipeline::new(Arc::from(kb)).collect("support", |_, _| {}).await?;
//! assert_eq!(report.total_files, 2);
//! assert_eq!(chunks[0].text, "Refunds take five days.");
//! assert_eq!(chunks[0].heading_path(), "FAQ > Refunds");
//! assert_eq!(chunks[0].embedding_text, "FAQ: Refunds: Refunds take five days.");
//! assert_eq!(chunks[0].id, "support\x1ffaq.md\x1f0");
//! assert_eq!(chunks[1].text, "**price**: 20");
//! # Ok(()) }
//! ```
//!
//! ## What it reads
//! - **Selection** as the original: the knowledge base's `knowledge_base.yaml|yml|json` (the
//!   root wins over `_metadata/`; see [`config`]), its enabled `patterns` (`*` stays in one
//!   folder, `**/` spans folders; default: every supported type anywhere) and
//!   `exclude_patterns`. Config files, excluded and unsupported files are skipped and counted.
//! - **Formats:** `.md .markdown .txt .yaml .yml .csv .json .jsonl .ndjson` and the `.gz` of
//!   each, decompressed as a stream from any backend.
//! - **Chunking:** markdown by structure (heading tree, code blocks, tables and lists whole
//!   where they fit, prose split at the best boundary below `max_chunk_size` characters,
//!   optional `chunk_overlap`); YAML as markdown sections; CSV one section per row, streamed;
//!   JSON one chunk per object (split, not truncated, when long); JSONL line by line.
//! - **Limits** ([`Limits`]) on file size, decompressed size and ratio, document size, line
//!   length and chunks per file, each named in the error of a file that exceeds it.
//! - **Errors per file:** a broken file (or JSONL line, CSV record) is one [`FileError`]; every
//!   other file is chunked. Only the config and the listing fail a run ([`IngestionError`]).
//!
//! [`Pipeline::stream`] gives the events ([`PipelineEvent`]) of a run as they happen;
//! [`ChunkingReport`] summarises them like the original's stats dict.
//!
//! ## Embedding and search
//! [`RagKnowledgeBase`] embeds the chunks of a run in batches ([`Embedder`]: the lexical
//! [`HashEmbedder`], the original's [`EchoEmbedder`]), stores them in a [`VectorStore`]
//! ([`MemoryVectorStore`], exact and persisted atomically) and answers
//! [`query`](RagKnowledgeBase::query)s with text, source, heading path, similarity and full
//! provenance, under the original's metadata [`Filter`] semantics.

pub mod chunk;
pub mod config;
pub mod embed;
mod emit;
pub mod error;
mod formats;
pub mod glob;
pub mod limit;
pub mod manager;
mod markdown;
pub mod orchestrator;
pub mod pipeline;
pub mod rag;
mod read;
pub mod replica;
pub mod split;
pub mod vector;

pub use chunk::{Chunk, DocumentType, Format, Heading, ID_SEPARATOR, SourceFile};
pub use config::{ChunkingConfig, HeadingInclusion, KnowledgeBaseConfig, Limits};
pub use embed::{EchoEmbedder, EmbedError, Embedder, HashEmbedder, create_embedder};
pub use error::{FileError, IngestionError};
pub use limit::{RateLimiter, TokenBucket};
pub use manager::{IfChanged, IngestionResult, KnowledgeIngestionManager, ManagerError, SwapMode};
pub use orchestrator::{
    InProcessLock, IngestLock, IngestOrchestrator, ManagerResolver, OrchestratorOptions,
    TriggerOutcome,
};
pub use pipeline::{
    ChunkStream, ChunkingReport, DocumentReport, Pipeline, PipelineEvent, PipelineOptions, Plan,
    Progress, ProgressFn, SkipReason, SkippedFile, chunk_bytes,
};
pub use rag::{IngestStats, QueryHit, QueryOptions, RagError, RagKnowledgeBase};
pub use replica::{FollowError, IndexFollower};
pub use vector::{Filter, MemoryVectorStore, SearchHit, VectorError, VectorRecord, VectorStore};
