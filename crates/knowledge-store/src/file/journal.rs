//! The write-ahead journal (`{kb}/_dynreg/journal.jsonl`): one JSON record per line, appended
//! under the knowledge base's lock. It makes a put O(1) instead of a rewrite of the whole
//! `_metadata.json`, and it is the commit point of every write: a record names the temp file
//! holding the new content, so recovery can roll a put forward after a crash.
//!
//! The first line is a header with the journal's random id and the SHA-256 of the
//! `_metadata.json` it extends; compaction folds the journal into `_metadata.json` and starts
//! a new journal (new id).

use serde::{Deserialize, Serialize};

use crate::model::{IngestionStatus, KnowledgeFile};

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Record {
    /// First line: which journal this is and which index it extends.
    Header {
        /// Random id of this journal generation.
        journal: String,
        /// SHA-256 hex of the `_metadata.json` bytes this journal extends.
        base: String,
    },
    /// A file was stored (or replaced).
    Put {
        /// The new index entry.
        file: KnowledgeFile,
        /// The temp file (relative to the KB folder) renamed into place after this record.
        tmp: String,
        /// The KB version counter after this write.
        version: String,
    },
    /// A file was deleted.
    Delete {
        /// The deleted path.
        path: String,
        /// The KB version counter after this write.
        version: String,
        /// When.
        at: String,
    },
    /// The ingestion status was written.
    Status {
        /// New status.
        status: IngestionStatus,
        /// New error (always written).
        error: Option<String>,
        /// New generation (always written).
        generation: Option<String>,
        /// New vector store path, if given.
        vector_store_path: Option<String>,
        /// When.
        #[serde(default)]
        at: Option<String>,
    },
}

impl Record {
    /// Serialises as one line (with the trailing newline).
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Records with the offset just past each, and the bytes consumed.
pub(crate) type Parsed = (Vec<(Record, usize)>, usize);

/// Splits complete lines off `buf`; returns each record with the offset just past its line,
/// and the bytes consumed (a torn last line without its newline is not consumed).
pub(crate) fn parse_lines(buf: &[u8]) -> Result<Parsed, (usize, String)> {
    let mut records = Vec::new();
    let mut consumed = 0;
    while let Some(nl) = buf[consumed..].iter().position(|&b| b == b'\n') {
        let line = &buf[consumed..consumed + nl];
        if !line.is_empty() {
            let rec: Record =
                serde_json::from_slice(line).map_err(|e| (consumed, e.to_string()))?;
            records.push((rec, consumed + nl + 1));
        }
        consumed += nl + 1;
    }
    Ok((records, consumed))
}
