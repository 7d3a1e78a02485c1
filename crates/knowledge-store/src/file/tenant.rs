//! Tenant state on disk, in the original's layout:
//!
//! ```text
//! {base}/_scoped/{prefix}/{domain}/_metadata.json        {"info": {...}} (no files)
//! {base}/_scoped/{prefix}/{domain}/_metadata.json.lock   the original's CAS lock sidecar
//! {base}/_scoped/{prefix}/{domain}/_snapshots/<id>.json  the tenant's snapshot lineage
//! ```
//!
//! Every operation runs while the caller holds the knowledge base's own lock (shared), so a
//! `delete_kb` (exclusive) never interleaves with one. A status write also takes the sidecar
//! `flock` exclusively — for conditional and unconditional writes alike, so no write can land
//! between a compare-and-swap's check and its rename — and writes
//! atomically. The state token is the SHA-256 hex of the document's bytes, as in the
//! original; a tenant without a document has the token of empty bytes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::atomic::{FsyncPolicy, write_atomic};
use super::layout::{not_found, read_snapshot};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::identity::Snapshot;
use crate::keys::KeyLayout;
use crate::model::{KnowledgeBaseInfo, StatusUpdate};
use crate::names::{METADATA_FILE, SCOPED_STATE_ROOT, SNAPSHOTS_DIR};
use crate::tenant_state::TenantState;

/// The paths of one tenant's state of one knowledge base.
#[derive(Debug, Clone)]
pub(crate) struct TenantPaths {
    pub(crate) domain_id: String,
    pub(crate) tenant_id: Option<String>,
    pub(crate) meta: PathBuf,
    lock: PathBuf,
    snapshots: PathBuf,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl TenantPaths {
    pub(crate) fn new(
        layout: &KeyLayout,
        domain_id: &str,
        state: &str,
        tenant_id: Option<&str>,
    ) -> Self {
        let meta = PathBuf::from(layout.metadata_key(domain_id, state));
        Self {
            domain_id: domain_id.to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            lock: PathBuf::from(format!("{}.lock", meta.display())),
            snapshots: PathBuf::from(layout.snapshots_dir(domain_id, state)),
            meta,
        }
    }

    fn io(&self, path: &Path, e: io::Error) -> KnowledgeError {
        KnowledgeError::io(&self.domain_id, path.display(), e)
    }

    /// The document's bytes; empty when there is none.
    fn read(&self) -> Result<Vec<u8>> {
        match fs::read(&self.meta) {
            Ok(b) => Ok(b),
            Err(e) if not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(self.io(&self.meta, e)),
        }
    }

    /// The tenant's state and its token.
    pub(crate) fn load(&self) -> Result<(TenantState, String)> {
        let bytes = self.read()?;
        let state =
            TenantState::from_doc(&self.domain_id, &self.meta.display().to_string(), &bytes)?;
        Ok((state, sha256_hex(&bytes)))
    }

    /// Writes a status update under the sidecar lock; returns the tenant's view and the write.
    pub(crate) fn write_status(
        &self,
        update: &StatusUpdate,
        content: &KnowledgeBaseInfo,
        fsync: FsyncPolicy,
    ) -> Result<(KnowledgeBaseInfo, StateWrite)> {
        let dir = self.meta.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .map_err(|e| self.io(&self.lock, e))?;
        lock.lock().map_err(|e| self.io(&self.lock, e))?;
        let result = self.write_locked(update, content, fsync);
        let _ = File::unlock(&lock);
        result
    }

    fn write_locked(
        &self,
        update: &StatusUpdate,
        content: &KnowledgeBaseInfo,
        fsync: FsyncPolicy,
    ) -> Result<(KnowledgeBaseInfo, StateWrite)> {
        let (mut state, actual) = self.load()?;
        if let Some(expected) = &update.expected_version
            && *expected != actual
        {
            return Err(KnowledgeError::Conflict {
                domain_id: self.domain_id.clone(),
                key: self.meta.display().to_string(),
                expected_version: expected.clone(),
                actual_version: Some(actual),
            });
        }
        state.apply(update);
        let bytes = state.to_doc(content);
        write_atomic(&self.meta, &bytes, fsync).map_err(|e| self.io(&self.meta, e))?;
        let write = StateWrite {
            domain_id: self.domain_id.clone(),
            key: self.meta.display().to_string(),
            kind: KnowledgeKeyKind::Metadata,
            byte_size: bytes.len() as u64,
            tenant_id: self.tenant_id.clone(),
        };
        Ok((state.view(content), write))
    }

    /// A snapshot of the tenant's lineage; `None` if not retained.
    pub(crate) fn load_snapshot(&self, version: &str) -> Result<Option<Snapshot>> {
        read_snapshot(
            &self.domain_id,
            &self.snapshots.join(format!("{version}.json")),
        )
    }

    /// Retains `json` as the snapshot `id` of the tenant's lineage unless it is; keeps at most
    /// `retention` (the oldest by modification time go). Returns the write, if one was made.
    pub(crate) fn record_snapshot(
        &self,
        id: &str,
        json: impl FnOnce() -> String,
        retention: usize,
    ) -> Result<Option<StateWrite>> {
        let path = self.snapshots.join(format!("{id}.json"));
        if id.is_empty() || path.exists() {
            return Ok(None);
        }
        let json = json();
        fs::create_dir_all(&self.snapshots).map_err(|e| self.io(&self.snapshots, e))?;
        // A cache for change detection, like the shared lineage's: never fsynced.
        write_atomic(&path, json.as_bytes(), FsyncPolicy::Never).map_err(|e| self.io(&path, e))?;
        self.prune(retention, &path);
        Ok(Some(StateWrite {
            domain_id: self.domain_id.clone(),
            key: path.display().to_string(),
            kind: KnowledgeKeyKind::Snapshot,
            byte_size: json.len() as u64,
            tenant_id: self.tenant_id.clone(),
        }))
    }

    fn prune(&self, retention: usize, keep: &Path) {
        let Ok(entries) = fs::read_dir(&self.snapshots) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= retention {
            return;
        }
        files.sort();
        let excess = files.len() - retention;
        for (_, p) in files.into_iter().take(excess) {
            if p != keep {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// Removes every tenant's state of `domain_id`: each `_scoped/…/{domain_id}/` folder's
/// `_metadata.json`, its lock sidecar and its `_snapshots/*.json` (never a deeper folder, which
/// may be another prefix's state), then the folders if that left them empty. Run under the
/// knowledge base's exclusive lock, before the knowledge base itself disappears.
pub(crate) fn remove_all(base: &Path, domain_id: &str) -> Result<usize> {
    let root = base.join(SCOPED_STATE_ROOT);
    let mut removed = 0;
    let mut stack = vec![(root, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(KnowledgeError::io(domain_id, dir.display(), e)),
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let path = entry.path();
            if name.to_string_lossy() == SNAPSHOTS_DIR {
                continue;
            }
            if name.to_string_lossy() == domain_id {
                removed += remove_state_in(&path, domain_id)?;
            }
            if depth < 32 {
                stack.push((path, depth + 1));
            }
        }
    }
    Ok(removed)
}

/// Removes one state folder's documents; returns how many files went.
fn remove_state_in(dir: &Path, domain_id: &str) -> Result<usize> {
    let io = |p: &Path, e| KnowledgeError::io(domain_id, p.display(), e);
    let mut removed = 0;
    let meta = dir.join(METADATA_FILE);
    let lock = dir.join(format!("{METADATA_FILE}.lock"));
    for f in [&meta, &lock] {
        match fs::remove_file(f) {
            Ok(()) => removed += 1,
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(io(f, e)),
        }
    }
    let snaps = dir.join(SNAPSHOTS_DIR);
    if let Ok(entries) = fs::read_dir(&snaps) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(io(&entry.path(), e)),
                }
            }
        }
        let _ = fs::remove_dir(&snaps);
    }
    let _ = fs::remove_dir(dir);
    Ok(removed)
}
