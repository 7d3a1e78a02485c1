//! The `_metadata.json` document of the original (`{"info": {...}, "files": {path: {...}}}`),
//! shared by the file and S3 backends: parse it leniently, write it like `json.dump(indent=2)`.
//!
//! In the S3 backend's `s3_versioning` mode the document also carries `dynreg_versions`, the
//! index of its own earlier object versions (`[{"identity", "version_id"}]`, oldest first);
//! the original ignores the extra key (and drops it when it rewrites the document, which only
//! makes older versions unresolvable: a full re-ingest, never a wrong diff).
//!
//! The S3 backend also keeps `dynreg_journal` there: where its index journal stands
//! ([`JournalHead`]; see `s3::journal`).

use serde::{Deserialize, Serialize};

use crate::error::{KnowledgeError, Result};
use crate::index::FileIndex;
use crate::model::{KnowledgeBaseInfo, KnowledgeFile};
use crate::paths::validate_path;

#[derive(Serialize)]
struct MetaOut<'a> {
    info: &'a KnowledgeBaseInfo,
    files: FilesOut<'a>,
    #[serde(skip_serializing_if = "<[VersionEntry]>::is_empty")]
    dynreg_versions: &'a [VersionEntry],
    #[serde(skip_serializing_if = "Option::is_none")]
    dynreg_journal: Option<&'a JournalHead>,
}

/// Where the S3 index journal of a knowledge base stands, as of this document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) struct JournalHead {
    /// Random id of this knowledge base's journal (new with every `create_kb`); records live
    /// under `_dynreg/journal/{epoch}/`.
    pub(crate) epoch: String,
    /// The last journal record folded into this document.
    pub(crate) seq: u64,
    /// Records up to this one have been deleted.
    #[serde(default)]
    pub(crate) pruned: u64,
    /// `[seq, unix ms]`: by that time (the compacting writer's clock) a document covering
    /// `seq` had been written; records are deleted only once covered long enough ago.
    #[serde(default)]
    pub(crate) compactions: Vec<(u64, i64)>,
}

/// A parsed `_metadata.json`.
pub(crate) struct ParsedDoc {
    pub(crate) info: KnowledgeBaseInfo,
    pub(crate) index: FileIndex,
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) versions: Vec<VersionEntry>,
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) journal: Option<JournalHead>,
}

/// One earlier object version of the document: the identity its files had, and its S3
/// `VersionId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) struct VersionEntry {
    pub(crate) identity: String,
    pub(crate) version_id: String,
}

/// The `files` map of an index, serialised without copying its shared entries.
struct FilesOut<'a>(&'a FileIndex);

impl Serialize for FilesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

#[derive(Deserialize)]
struct MetaIn {
    #[serde(default)]
    info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    files: Option<std::collections::BTreeMap<String, FileIn>>,
    #[serde(default)]
    dynreg_versions: Option<Vec<VersionEntry>>,
    #[serde(default)]
    dynreg_journal: Option<JournalHead>,
}

/// An index entry as stored: the key is the path; every field may be missing.
#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    uploaded_at: Option<String>,
    #[serde(default)]
    metadata: Option<crate::model::Metadata>,
}

/// Serialises `_metadata.json` like the original (`json.dump(indent=2)`).
#[cfg(feature = "file")]
pub(crate) fn metadata_json(info: &KnowledgeBaseInfo, index: &FileIndex) -> Vec<u8> {
    metadata_json_doc(info, index, &[], None)
}

/// [`metadata_json`] with a version index (omitted when empty) and a journal head.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn metadata_json_doc(
    info: &KnowledgeBaseInfo,
    index: &FileIndex,
    versions: &[VersionEntry],
    journal: Option<&JournalHead>,
) -> Vec<u8> {
    serde_json::to_vec_pretty(&MetaOut {
        info,
        files: FilesOut(index),
        dynreg_versions: versions,
        dynreg_journal: journal,
    })
    .unwrap_or_default()
}

/// Parses `_metadata.json` (the original's or ours). Entries whose key is not a canonical
/// path (which the original allowed) are skipped with a warning: no backend can address them.
pub(crate) fn parse_metadata(
    domain_id: &str,
    location: &str,
    bytes: &[u8],
) -> Result<(KnowledgeBaseInfo, FileIndex)> {
    parse_metadata_doc(domain_id, location, bytes).map(|p| (p.info, p.index))
}

/// [`parse_metadata`] plus the version index (empty when absent) and the journal head.
pub(crate) fn parse_metadata_doc(
    domain_id: &str,
    location: &str,
    bytes: &[u8],
) -> Result<ParsedDoc> {
    let corrupt = |reason: String| KnowledgeError::Corrupt {
        domain_id: domain_id.to_owned(),
        what: "index (_metadata.json)",
        path: location.to_owned(),
        reason,
    };
    let doc: MetaIn = if bytes.iter().all(u8::is_ascii_whitespace) {
        MetaIn {
            info: None,
            files: None,
            dynreg_versions: None,
            dynreg_journal: None,
        }
    } else {
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?
    };
    let mut info_map = doc.info.unwrap_or_default();
    info_map
        .entry("domain_id")
        .or_insert_with(|| domain_id.to_owned().into());
    let mut info: KnowledgeBaseInfo =
        serde_json::from_value(info_map.into()).map_err(|e| corrupt(format!("info: {e}")))?;
    info.domain_id = domain_id.to_owned();
    let mut index = FileIndex::default();
    for (key, f) in doc.files.unwrap_or_default() {
        if let Err(e) = validate_path(domain_id, &key) {
            tracing::warn!(domain_id = %domain_id, path = %key, error = %e, "skipping non-canonical index entry");
            continue;
        }
        let uploaded_at = match f.uploaded_at.as_deref() {
            None => crate::pytime::now(),
            Some(t) => crate::pytime::parse(t)
                .ok_or_else(|| corrupt(format!("files[{key:?}].uploaded_at {t:?}")))?,
        };
        index.insert(KnowledgeFile {
            path: key,
            content_type: f
                .content_type
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            size_bytes: f.size_bytes.unwrap_or(0),
            checksum: f.checksum.unwrap_or_default(),
            uploaded_at,
            metadata: f.metadata.unwrap_or_default(),
        });
    }
    info.file_count = index.len() as u64;
    info.total_size_bytes = index.total_size();
    Ok(ParsedDoc {
        info,
        index,
        versions: doc.dynreg_versions.unwrap_or_default(),
        journal: doc.dynreg_journal,
    })
}
