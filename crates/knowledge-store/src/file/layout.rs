//! Where things live on disk, per knowledge base (compatible with the original's layout):
//!
//! ```text
//! {base}/{domain}/_metadata.json        index + info (the original's format)
//! {base}/{domain}/_metadata.json.lock   lock file (the original's CAS sidecar name)
//! {base}/{domain}/content/<path>        raw files, stored as uploaded
//! {base}/{domain}/_snapshots/<id>.json  {path: checksum} per identity, bounded
//! {base}/{domain}/_dynreg/journal.jsonl write-ahead journal (dynreg only; ignored by the original)
//! {base}/{domain}/_dynreg/tmp/<owner>/  temp files of one live backend instance
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{KnowledgeError, Result};
use crate::index::FileIndex;
use crate::model::{KnowledgeBaseInfo, KnowledgeFile};
use crate::paths::validate_path;

/// The paths of one knowledge base.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) domain_id: String,
    pub(crate) dir: PathBuf,
    pub(crate) meta: PathBuf,
    pub(crate) lock: PathBuf,
    pub(crate) content: PathBuf,
    pub(crate) snapshots: PathBuf,
    pub(crate) dynreg: PathBuf,
    pub(crate) journal: PathBuf,
    pub(crate) tmp_root: PathBuf,
}

impl Layout {
    pub(crate) fn new(base: &Path, domain_id: &str) -> Self {
        let dir = base.join(domain_id);
        let dynreg = dir.join("_dynreg");
        Self {
            domain_id: domain_id.to_owned(),
            meta: dir.join("_metadata.json"),
            lock: dir.join("_metadata.json.lock"),
            content: dir.join("content"),
            snapshots: dir.join("_snapshots"),
            journal: dynreg.join("journal.jsonl"),
            tmp_root: dynreg.join("tmp"),
            dynreg,
            dir,
        }
    }

    /// The on-disk location of a (validated, canonical) resource path.
    pub(crate) fn content_path(&self, path: &str) -> PathBuf {
        let mut p = self.content.clone();
        for seg in path.split('/') {
            p.push(seg);
        }
        p
    }

    pub(crate) fn snapshot_path(&self, version: &str) -> PathBuf {
        self.snapshots.join(format!("{version}.json"))
    }

    pub(crate) fn io(&self, path: &Path, e: std::io::Error) -> KnowledgeError {
        KnowledgeError::io(&self.domain_id, path.display(), e)
    }
}

#[derive(Serialize)]
struct MetaOut<'a> {
    info: &'a KnowledgeBaseInfo,
    files: &'a std::collections::BTreeMap<String, KnowledgeFile>,
}

#[derive(Deserialize)]
struct MetaIn {
    #[serde(default)]
    info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    files: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Serialises `_metadata.json` like the original (`json.dump(indent=2)`).
pub(crate) fn metadata_json(info: &KnowledgeBaseInfo, index: &FileIndex) -> Vec<u8> {
    serde_json::to_vec_pretty(&MetaOut {
        info,
        files: index.files(),
    })
    .unwrap_or_default()
}

/// Parses `_metadata.json` (the original's or ours). Entries whose key is not a canonical
/// path (which the original allowed) are skipped with a warning: no backend can address them.
pub(crate) fn parse_metadata(layout: &Layout, bytes: &[u8]) -> Result<(KnowledgeBaseInfo, FileIndex)> {
    let corrupt = |reason: String| KnowledgeError::Corrupt {
        domain_id: layout.domain_id.clone(),
        what: "index (_metadata.json)",
        path: layout.meta.display().to_string(),
        reason,
    };
    let doc: MetaIn = if bytes.iter().all(u8::is_ascii_whitespace) {
        MetaIn {
            info: None,
            files: None,
        }
    } else {
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?
    };
    let mut info_map = doc.info.unwrap_or_default();
    info_map
        .entry("domain_id")
        .or_insert_with(|| layout.domain_id.clone().into());
    let mut info: KnowledgeBaseInfo =
        serde_json::from_value(info_map.into()).map_err(|e| corrupt(format!("info: {e}")))?;
    info.domain_id = layout.domain_id.clone();
    let mut index = FileIndex::default();
    for (key, value) in doc.files.unwrap_or_default() {
        if let Err(e) = validate_path(&layout.domain_id, &key) {
            tracing::warn!(domain_id = %layout.domain_id, path = %key, error = %e, "skipping non-canonical index entry");
            continue;
        }
        let mut map = match value {
            serde_json::Value::Object(m) => m,
            _ => return Err(corrupt(format!("files[{key:?}] is not an object"))),
        };
        map.insert("path".into(), key.clone().into());
        let file: KnowledgeFile = serde_json::from_value(map.into())
            .map_err(|e| corrupt(format!("files[{key:?}]: {e}")))?;
        index.insert(file);
    }
    info.file_count = index.len() as u64;
    info.total_size_bytes = index.total_size();
    Ok((info, index))
}
