//! Crash-safe file writes: a temp file in the target's folder, fsync (per policy), rename.
//! A reader never sees a partial file; a crash leaves the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether writes are flushed to stable storage before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync content temp files (and their folder), journal appends and the index before a
    /// write returns, and changed folders before compaction: acknowledged writes survive power
    /// loss. (Snapshots, a cache, are never fsynced.) Concurrent writers to one knowledge base
    /// share one journal append and its fsync (group commit); each still fsyncs its own temp
    /// file and folder entry, in parallel. Bounded by the disk's flushes: ~100–700 puts/s of
    /// 4 KiB files on the benchmark machine, one writer or 32.
    #[default]
    Always,
    /// Rely on atomic renames and the page cache: survives a killed process (every write is
    /// still all-or-nothing), but the last writes may be lost on power failure. The policy
    /// for ≥ 3,000 puts/s of 4 KiB files (reached on a quiet disk; see the benchmark docs).
    Never,
}

impl FsyncPolicy {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" | "true" => Some(Self::Always),
            "never" | "false" | "os" => Some(Self::Never),
            _ => None,
        }
    }

    pub(crate) fn enabled(self) -> bool {
        self == Self::Always
    }
}

/// A unique temp file name next to `target` (`.{name}.{random}.tmp`).
pub(crate) fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = target.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

/// Writes `bytes` to `target` atomically (temp + optional fsync + rename + optional dir fsync).
pub(crate) fn write_atomic(target: &Path, bytes: &[u8], fsync: FsyncPolicy) -> io::Result<()> {
    let tmp = temp_path_for(target);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if fsync.enabled() {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, target)?;
        if fsync.enabled() {
            sync_dir(target.parent().unwrap_or_else(|| Path::new(".")))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a folder so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
