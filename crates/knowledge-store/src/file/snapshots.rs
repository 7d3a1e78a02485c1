//! Snapshots of the file backend: `{kb}/_snapshots/<identity>.json`, the `{path: checksum}` of
//! a knowledge base's content at one identity (the original's layout, which the original reads
//! too), written when an identity is handed out and at compaction so `list_changes_since` can
//! diff against it.
//!
//! Invariants: a snapshot is written once per identity and never rewritten; it is written
//! atomically but never fsynced (a snapshot lost to a power failure only makes its version
//! unretained: a full re-ingest); at most `retention` files are kept, the oldest (by
//! modification time) pruned first and never the one just recorded, and the folder is listed
//! only when this instance's count of snapshot files passes that bound.

use std::fs;
use std::path::PathBuf;

use super::atomic::{FsyncPolicy, write_atomic};
use super::kb::Locked;
use super::layout::{Layout, read_snapshot};
use crate::error::Result;
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::identity::Snapshot;

impl Locked<'_> {
    /// Writes `_snapshots/<identity>.json` for the current content unless it exists; prunes
    /// the oldest beyond the retention bound. Returns the identity.
    pub(crate) fn record_current_snapshot(&mut self) -> Result<String> {
        let layout = self.handle.layout.clone();
        let retention = self.handle.tuning.retention;
        let Some(cache) = self.state.cache.as_mut() else {
            return Err(self.handle.kb_not_found());
        };
        let id = cache.index.identity();
        if id.is_empty() || cache.known_snapshots.contains(&id) {
            return Ok(id);
        }
        let path = layout.snapshot_path(&id);
        if !path.exists() {
            let json = cache.index.snapshot_json();
            fs::create_dir_all(&layout.snapshots).map_err(|e| layout.io(&layout.snapshots, e))?;
            // Snapshots are a cache for change detection: one lost to a power failure only
            // makes that version unretained (a full re-ingest), so they are never fsynced.
            write_atomic(&path, json.as_bytes(), FsyncPolicy::Never)
                .map_err(|e| layout.io(&path, e))?;
            self.writes.push(StateWrite {
                domain_id: layout.domain_id.clone(),
                key: path.display().to_string(),
                kind: KnowledgeKeyKind::Snapshot,
                byte_size: json.len() as u64,
                tenant_id: None,
            });
            cache.snapshot_files = match cache.snapshot_files {
                Some(n) if n < retention => Some(n + 1),
                _ => Some(prune_snapshots(&layout, retention, &id)),
            };
        }
        if cache.known_snapshots.len() > 4 * retention {
            cache.known_snapshots.clear();
        }
        cache.known_snapshots.insert(id.clone());
        Ok(id)
    }

    /// Reads a retained snapshot; `None` if it is not retained.
    pub(crate) fn load_snapshot(&self, version: &str) -> Result<Option<Snapshot>> {
        let layout = self.layout();
        read_snapshot(&layout.domain_id, &layout.snapshot_path(version))
    }
}

/// Keeps at most `retention` snapshot files (newest by modification time), never `keep`;
/// returns how many are left.
fn prune_snapshots(layout: &Layout, retention: usize, keep: &str) -> usize {
    let Ok(entries) = fs::read_dir(&layout.snapshots) else {
        return 0;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= retention {
        return files.len();
    }
    files.sort();
    let mut left = files.len();
    let excess = files.len() - retention;
    let keep_name = format!("{keep}.json");
    for (_, p) in files.into_iter().take(excess) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy() == keep_name)
        {
            continue;
        }
        if fs::remove_file(p).is_ok() {
            left -= 1;
        }
    }
    left
}
