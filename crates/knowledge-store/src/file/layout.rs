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

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{KnowledgeError, Result};
use crate::identity::Snapshot;
use crate::index::FileIndex;
use crate::model::KnowledgeBaseInfo;

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

/// [`Layout::content_path`] without building the whole layout (the read path's one
/// allocation).
pub(crate) fn content_path(base: &Path, domain_id: &str, path: &str) -> PathBuf {
    let mut p = PathBuf::with_capacity(base.as_os_str().len() + domain_id.len() + path.len() + 10);
    p.push(base);
    p.push(domain_id);
    p.push("content");
    for seg in path.split('/') {
        p.push(seg);
    }
    p
}

/// Parses this knowledge base's `_metadata.json` bytes.
pub(crate) fn parse_metadata(
    layout: &Layout,
    bytes: &[u8],
) -> Result<(KnowledgeBaseInfo, FileIndex)> {
    crate::metadata_doc::parse_metadata(
        &layout.domain_id,
        &layout.meta.display().to_string(),
        bytes,
    )
}

pub(crate) use crate::metadata_doc::metadata_json;

/// Whether an I/O error means "there is nothing at that path".
pub(crate) fn not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads the snapshot at `path` (of `domain_id`'s shared or a tenant's lineage); `None` if it is
/// not retained.
pub(crate) fn read_snapshot(domain_id: &str, path: &Path) -> Result<Option<Snapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KnowledgeError::Corrupt {
                    domain_id: domain_id.to_owned(),
                    what: "snapshot",
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
        }
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(KnowledgeError::io(domain_id, path.display(), e)),
    }
}
