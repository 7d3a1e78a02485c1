//! The data model: `KnowledgeFile`, `KnowledgeBaseInfo`, `IngestionStatus`, `ChangeSet` and
//! the option structs of the write operations. JSON shapes match the Python original.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::KnowledgeError;
use crate::pytime;

/// Free-form JSON metadata attached to a file or a knowledge base.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Where a knowledge base is in its ingestion lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestionStatus {
    /// Awaiting ingestion (the state after `create_kb`).
    #[default]
    Pending,
    /// Currently being ingested.
    Ingesting,
    /// Ingested and ready for queries.
    Ready,
    /// Ingestion failed; `ingestion_error` says why.
    Error,
    /// A tombstone swap is in flight; `generation` holds its token.
    Swapping,
}

impl IngestionStatus {
    /// The wire string (`"pending"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ingesting => "ingesting",
            Self::Ready => "ready",
            Self::Error => "error",
            Self::Swapping => "swapping",
        }
    }
}

impl fmt::Display for IngestionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IngestionStatus {
    type Err = KnowledgeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "ingesting" => Self::Ingesting,
            "ready" => Self::Ready,
            "error" => Self::Error,
            "swapping" => Self::Swapping,
            other => {
                return Err(KnowledgeError::InvalidStatus {
                    value: other.to_owned(),
                });
            }
        })
    }
}

fn default_content_type() -> String {
    "application/octet-stream".to_owned()
}

fn default_version() -> String {
    "1".to_owned()
}

fn default_now() -> DateTime<Utc> {
    pytime::now()
}

/// One raw file of a knowledge base, as the index describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeFile {
    /// Canonical relative path inside the knowledge base (`docs/intro.md`).
    pub path: String,
    /// MIME type, given at upload or guessed from the extension.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Size of the stored bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// MD5 hex digest of the stored bytes.
    #[serde(default)]
    pub checksum: String,
    /// When the file was uploaded or last replaced.
    #[serde(default = "default_now", with = "pytime::isoformat")]
    pub uploaded_at: DateTime<Utc>,
    /// Custom metadata given at upload.
    #[serde(default)]
    pub metadata: Metadata,
}

/// Summary and ingestion state of one knowledge base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeBaseInfo {
    /// The knowledge base's id (one path segment, not starting with `_`).
    pub domain_id: String,
    /// Number of files.
    #[serde(default)]
    pub file_count: u64,
    /// Sum of the files' sizes.
    #[serde(default)]
    pub total_size_bytes: u64,
    /// When content or status last changed.
    #[serde(default = "default_now", with = "pytime::isoformat")]
    pub last_updated: DateTime<Utc>,
    /// A counter, `"1"` at creation, incremented by every put and delete.
    #[serde(default = "default_version")]
    pub version: String,
    /// Ingestion lifecycle state.
    #[serde(default)]
    pub ingestion_status: IngestionStatus,
    /// Why the last ingestion failed, if it did.
    #[serde(default)]
    pub ingestion_error: Option<String>,
    /// Where the vector store for this knowledge base lives, if recorded.
    #[serde(default)]
    pub vector_store_path: Option<String>,
    /// Custom metadata given at `create_kb`.
    #[serde(default)]
    pub metadata: Metadata,
    /// Token of an in-flight tombstone swap (with `Swapping`).
    #[serde(default)]
    pub generation: Option<String>,
}

impl KnowledgeBaseInfo {
    /// The info of a freshly created knowledge base.
    pub fn new(domain_id: &str, metadata: Metadata) -> Self {
        Self {
            domain_id: domain_id.to_owned(),
            file_count: 0,
            total_size_bytes: 0,
            last_updated: pytime::now(),
            version: default_version(),
            ingestion_status: IngestionStatus::Pending,
            ingestion_error: None,
            vector_store_path: None,
            metadata,
            generation: None,
        }
    }

    /// Increments the `version` counter (`"1"` → `"2"`); a non-numeric version restarts at 2.
    pub fn increment_version(&mut self) {
        let n = self.version.parse::<u64>().unwrap_or(1);
        self.version = (n + 1).to_string();
    }
}

/// Options of a single upload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOptions {
    /// MIME type; `None` guesses from the extension (`application/octet-stream` if unknown).
    pub content_type: Option<String>,
    /// Custom metadata stored with the file.
    pub metadata: Metadata,
}

impl PutOptions {
    /// Options with an explicit content type.
    pub fn with_content_type(content_type: impl Into<String>) -> Self {
        Self {
            content_type: Some(content_type.into()),
            metadata: Metadata::new(),
        }
    }
}

/// One file of a batch upload ([`crate::KnowledgeBackend::put_files`]).
#[derive(Debug, Clone)]
pub struct FileUpload {
    /// Canonical relative path.
    pub path: String,
    /// The bytes.
    pub content: Bytes,
    /// Content type and metadata.
    pub options: PutOptions,
}

impl FileUpload {
    /// An upload with guessed content type and no metadata.
    pub fn new(path: impl Into<String>, content: impl Into<Bytes>) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
            options: PutOptions::default(),
        }
    }
}

/// A status write ([`crate::KnowledgeBackend::set_ingestion_status_in`]).
///
/// `error` and `generation` are always written (a write without a generation clears a stale
/// swap token). With `expected_version` the write is a compare-and-swap against
/// [`crate::KnowledgeBackend::get_state_version_in`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusUpdate {
    /// The new status.
    pub status: IngestionStatus,
    /// The error message to record (use with `Error`).
    pub error: Option<String>,
    /// The swap generation token to record.
    pub generation: Option<String>,
    /// The vector store path to record; `None` keeps the current one.
    pub vector_store_path: Option<String>,
    /// Write only if the state version still equals this.
    pub expected_version: Option<String>,
}

impl StatusUpdate {
    /// An unconditional write of `status` that clears error and generation.
    pub fn new(status: IngestionStatus) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Records an error message.
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Records a swap generation token.
    pub fn generation(mut self, generation: impl Into<String>) -> Self {
        self.generation = Some(generation.into());
        self
    }

    /// Makes the write conditional on the state version.
    pub fn expect_version(mut self, version: impl Into<String>) -> Self {
        self.expected_version = Some(version.into());
        self
    }
}

/// What changed in a knowledge base since a version ([`crate::KnowledgeBackend::list_changes_since_in`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The current identity (what to pass next time).
    pub version: String,
    /// Paths present now but not then, sorted.
    pub added: Vec<String>,
    /// Paths whose checksum changed, sorted.
    pub modified: Vec<String>,
    /// Paths present then but not now, sorted.
    pub deleted: Vec<String>,
}

impl ChangeSet {
    /// True when nothing was added, modified or deleted.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn knowledge_file_round_trips_through_the_python_dict() {
        let v = json!({
            "path": "faq.md", "content_type": "text/markdown", "size_bytes": 74,
            "checksum": "06f98abdabc4d30a02af4ea81a1906f4",
            "uploaded_at": "2026-11-28T00:04:10.568737+00:00", "metadata": {"lang": "en"}
        });
        let f: KnowledgeFile = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(f.size_bytes, 74);
        assert_eq!(serde_json::to_value(&f).unwrap(), v);
    }

    #[test]
    fn knowledge_file_from_dict_defaults() {
        let f: KnowledgeFile = serde_json::from_value(json!({"path": "a"})).unwrap();
        assert_eq!(f.content_type, "application/octet-stream");
        assert_eq!(f.size_bytes, 0);
        assert_eq!(f.checksum, "");
        assert!(f.metadata.is_empty());
        assert!(serde_json::from_value::<KnowledgeFile>(json!({"size_bytes": 1})).is_err());
    }

    #[test]
    fn kb_info_round_trips_and_defaults() {
        let v = json!({
            "domain_id": "support", "file_count": 8, "total_size_bytes": 378,
            "last_updated": "2026-11-28T00:04:10.596849+00:00", "version": "9",
            "ingestion_status": "ready", "ingestion_error": null, "vector_store_path": null,
            "metadata": {"description": "support docs"}, "generation": null
        });
        let info: KnowledgeBaseInfo = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(info.ingestion_status, IngestionStatus::Ready);
        assert_eq!(serde_json::to_value(&info).unwrap(), v);
        let d: KnowledgeBaseInfo = serde_json::from_value(json!({"domain_id": "d"})).unwrap();
        assert_eq!(
            (d.version.as_str(), d.ingestion_status),
            ("1", IngestionStatus::Pending)
        );
        assert!(
            serde_json::from_value::<KnowledgeBaseInfo>(
                json!({"domain_id": "d", "ingestion_status": "nope"})
            )
            .is_err()
        );
    }

    #[test]
    fn increment_version_counts_up() {
        let mut info = KnowledgeBaseInfo::new("d", Metadata::new());
        assert_eq!(info.version, "1");
        info.increment_version();
        assert_eq!(info.version, "2");
        info.increment_version();
        assert_eq!(info.version, "3");
    }

    #[test]
    fn unknown_status_is_refused_with_the_valid_list() {
        let err = "done".parse::<IngestionStatus>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"done\"") && msg.contains("swapping"),
            "{msg}"
        );
        for s in ["pending", "ingesting", "ready", "error", "swapping"] {
            assert_eq!(s.parse::<IngestionStatus>().unwrap().as_str(), s);
        }
    }
}
