//! Crash-safe file writes: a temp file in the target's folder, fsync (per policy), rename.
//! A reader never sees a partial file; a crash leaves the old file or the new one.
//!
//! Content uploads use the same idea in two steps: a [`TempWriter`] streams the bytes into a
//! fresh temp file in this instance's temp folder (`_dynreg/tmp/<owner>/`), hashing them as
//! it goes; the journal record naming that temp file is the commit, and only then is it
//! renamed into place (by the writer, or by recovery if the writer died).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::layout::Layout;
use crate::error::Result;

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

/// Writes `content` chunks to a fresh temp file in `dir`, hashing as it goes.
pub(crate) struct TempWriter {
    pub(crate) path: PathBuf,
    pub(crate) rel: String,
    file: File,
    md5: md5::Md5,
    pub(crate) size: u64,
}

impl TempWriter {
    pub(crate) fn create(layout: &Layout, owner_id: &str, dir: &Path) -> Result<Self> {
        let name = format!("{:016x}.tmp", rand::random::<u64>());
        let path = dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| layout.io(&path, e))?;
        Ok(Self {
            rel: format!("_dynreg/tmp/{owner_id}/{name}"),
            path,
            file,
            md5: md5::Md5::default(),
            size: 0,
        })
    }

    pub(crate) fn write(&mut self, layout: &Layout, chunk: &[u8]) -> Result<()> {
        md5::Digest::update(&mut self.md5, chunk);
        self.size += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .map_err(|e| layout.io(&self.path, e))
    }

    /// Flushes (per policy) and returns the MD5 hex of what was written.
    pub(crate) fn finish(
        self,
        layout: &Layout,
        fsync: FsyncPolicy,
    ) -> Result<(String, PathBuf, String, u64)> {
        if fsync.enabled() {
            self.file.sync_all().map_err(|e| layout.io(&self.path, e))?;
        }
        Ok((
            hex::encode(md5::Digest::finalize(self.md5)),
            self.path,
            self.rel,
            self.size,
        ))
    }
}
