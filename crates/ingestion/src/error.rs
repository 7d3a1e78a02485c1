//! The two kinds of failure: one that stops a run before any file is read
//! ([`IngestionError`]: the knowledge base's config, its listing) and one that concerns a single
//! file or record ([`FileError`]: the run goes on with every other file).

use serde::Serialize;

/// A failure that aborts a run: nothing was chunked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestionError {
    /// The knowledge base's `knowledge_base.yaml|yml|json` could not be read or parsed.
    #[error("failed to parse knowledge_base config {file} for domain {domain}: {message}")]
    Config {
        /// The domain whose config it is.
        domain: String,
        /// The config file's path inside the knowledge base.
        file: String,
        /// What is wrong, with the line where the format gives one.
        message: String,
    },
    /// Options given in code are invalid.
    #[error("invalid ingestion option {key}: {message}")]
    Options {
        /// The option.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The knowledge backend failed (listing the files, reading the config).
    #[error("knowledge backend: {0}")]
    Backend(#[from] dynreg_knowledge_store::KnowledgeError),
}

/// One file (or one record of it) that could not be chunked; the rest of the run is unaffected.
/// Serialises as the original's `{"file", "error"}` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    /// The file's display source (`memory://support/faq.md`).
    pub file: String,
    /// The readable message: the path, the line where there is one, and what is wrong.
    pub error: String,
    /// The file's path inside the knowledge base.
    #[serde(skip)]
    pub path: String,
    /// The 1-based line (JSONL) or record (CSV) the error concerns, if it concerns one.
    #[serde(skip)]
    pub line: Option<u64>,
    /// True if the whole file was refused: chunks of it that were already emitted must be
    /// discarded by the consumer. False for one bad record of a file whose other records were
    /// chunked.
    #[serde(skip)]
    pub fatal: bool,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// Why one file could not be processed (internal; becomes a [`FileError`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{0}")]
    Message(String),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The consumer dropped the stream: stop quietly.
    #[error("the consumer stopped reading")]
    Stopped,
}

impl Refusal {
    pub(crate) fn msg(m: impl Into<String>) -> Refusal {
        Refusal::Message(m.into())
    }
}
