//! The write-ahead journal (`{kb}/_dynreg/journal.jsonl`): one JSON record per line, appended
//! under the knowledge base's lock. It makes a put O(1) instead of a rewrite of the whole
//! `_metadata.json`, and it is the commit point of every write: a record names the temp file
//! holding the new content, so recovery can roll a put forward after a crash.
//!
//! The first line is a header with the journal's random id and the SHA-256 of the
//! `_metadata.json` it extends; compaction folds the journal into `_metadata.json` and starts
//! a new journal (new id).
//!
//! Besides the record format, this module holds the journal's I/O under the knowledge base's
//! lock ([`Locked`]): reading the records after the cached offset, appending records (the
//! commit point, fsynced per policy) and starting a new journal, and applying records to the
//! cached view. Invariants: the cache's `offset` is the end of the last complete record it
//! applied, and records are applied in file order; a torn last line (a writer died
//! mid-append) is never applied and is cut off only under the exclusive lock, when nobody
//! else can be appending; recovery effects (rolling an interrupted put forward, finishing an
//! interrupted delete) run once per record and instance (tracked in the lock state's
//! `effects`) and only bring disk to what the journal says; replaying a version counter never
//! moves it back.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::kb::{Cache, Locked, place, remove_content};
use super::layout::{Layout, not_found};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::model::{IngestionStatus, KnowledgeBaseInfo, KnowledgeFile};
use crate::pytime;

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

impl Locked<'_> {
    /// Reads and applies journal records after the cached offset (with recovery effects).
    pub(super) fn read_journal_tail(&mut self) -> Result<()> {
        let layout = self.handle.layout.clone();
        let offset = self.state.cache.as_ref().map_or(0, |c| c.offset);
        let mut f = match File::open(&layout.journal) {
            Ok(f) => f,
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(self.io(&layout.journal, e)),
        };
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_to_end(&mut buf))
            .map_err(|e| self.io(&layout.journal, e))?;
        let (records, consumed) =
            parse_lines(&buf).map_err(|(at, reason)| KnowledgeError::Corrupt {
                domain_id: layout.domain_id.clone(),
                what: "journal",
                path: format!("{} (byte {})", layout.journal.display(), offset + at as u64),
                reason,
            })?;
        if consumed < buf.len() && self.exclusive {
            // A writer died mid-append: nobody else can be appending while we hold the lock.
            let f = OpenOptions::new()
                .write(true)
                .open(&layout.journal)
                .map_err(|e| self.io(&layout.journal, e))?;
            f.set_len(offset + consumed as u64)
                .map_err(|e| self.io(&layout.journal, e))?;
        }
        let Some(cache) = self.state.cache.as_mut() else {
            return Ok(());
        };
        let mut body_start = 0;
        if offset == 0 {
            match records.first() {
                Some((Record::Header { journal, base }, _)) => {
                    cache.journal_id = Some(journal.clone());
                    // Someone else (the original) rewrote the index since this journal began.
                    cache.foreign = base != &cache.meta_sha && records.len() > 1;
                    body_start = 1;
                }
                Some(_) => {
                    return Err(KnowledgeError::Corrupt {
                        domain_id: layout.domain_id.clone(),
                        what: "journal",
                        path: layout.journal.display().to_string(),
                        reason: "first record is not a header".into(),
                    });
                }
                None => {}
            }
        }
        let body = &records[body_start.min(records.len())..];
        for (r, _) in body {
            apply(cache, r);
        }
        cache.records += body.len();
        cache.offset = offset + consumed as u64;
        let journal_id = cache.journal_id.clone().unwrap_or_default();
        let effects = self.state.effects.clone();
        let Some(cache) = self.state.cache.as_mut() else {
            return Ok(());
        };
        // Recovery effects run once per record: those ending after `done` are unchecked.
        let done = match &effects {
            Some((id, at)) if *id == journal_id => *at,
            _ => 0,
        };
        let start = body
            .iter()
            .position(|(_, end)| offset + *end as u64 > done)
            .unwrap_or(body.len());
        if start < body.len() {
            let plain: Vec<&Record> = body.iter().map(|(r, _)| r).collect();
            let touched = recover(&layout, &plain, start)?;
            cache.dirty_dirs.extend(touched);
        }
        self.state.effects = Some((journal_id, done.max(offset + consumed as u64)));
        Ok(())
    }

    /// Appends records to the journal (creating it if needed), applies them to the cache.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<u64> {
        let layout = self.handle.layout.clone();
        let fsync = self.handle.tuning.fsync;
        let needs_journal = self
            .state
            .cache
            .as_ref()
            .is_some_and(|c| c.journal_id.is_none());
        if needs_journal {
            self.new_journal()?;
        }
        let mut bytes = Vec::with_capacity(records.len() * 320);
        for r in records {
            bytes.extend_from_slice(&r.to_line());
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(&layout.journal)
            .map_err(|e| self.io(&layout.journal, e))?;
        f.write_all(&bytes)
            .map_err(|e| self.io(&layout.journal, e))?;
        if fsync.enabled() {
            f.sync_data().map_err(|e| self.io(&layout.journal, e))?;
        }
        let new_len = f.metadata().map_err(|e| self.io(&layout.journal, e))?.len();
        let Some(cache) = self.state.cache.as_mut() else {
            return Err(self.handle.kb_not_found());
        };
        for r in records {
            apply(cache, r);
        }
        cache.records += records.len();
        cache.offset = new_len;
        let id = cache.journal_id.clone().unwrap_or_default();
        self.state.effects = Some((id, new_len));
        self.writes.push(StateWrite {
            domain_id: layout.domain_id.clone(),
            key: layout.meta.display().to_string(),
            kind: KnowledgeKeyKind::Metadata,
            byte_size: bytes.len() as u64,
            tenant_id: None,
        });
        Ok(bytes.len() as u64)
    }

    pub(super) fn new_journal(&mut self) -> Result<()> {
        let layout = self.handle.layout.clone();
        let Some(cache) = self.state.cache.as_mut() else {
            return Err(self.handle.kb_not_found());
        };
        let id = format!("{:016x}", rand::random::<u64>());
        let header = Record::Header {
            journal: id.clone(),
            base: cache.meta_sha.clone(),
        }
        .to_line();
        fs::create_dir_all(&layout.dynreg).map_err(|e| layout.io(&layout.dynreg, e))?;
        write_atomic(&layout.journal, &header, self.handle.tuning.fsync)
            .map_err(|e| layout.io(&layout.journal, e))?;
        let md = fs::metadata(&layout.journal).map_err(|e| layout.io(&layout.journal, e))?;
        cache.journal_id = Some(id.clone());
        cache.journal_ino = Some((md.dev(), md.ino()));
        cache.offset = md.len();
        cache.records = 0;
        self.state.effects = Some((id, md.len()));
        Ok(())
    }
}

/// Applies one record to the cached view.
fn apply(cache: &mut Cache, record: &Record) {
    match record {
        Record::Header { .. } => {}
        Record::Put { file, version, .. } => {
            bump_version(&mut cache.info, version);
            cache.info.last_updated = file.uploaded_at;
            cache.index.insert(file.clone());
        }
        Record::Delete { path, version, at } => {
            bump_version(&mut cache.info, version);
            if let Some(t) = pytime::parse(at) {
                cache.info.last_updated = t;
            }
            cache.index.remove(path);
        }
        Record::Status {
            status,
            error,
            generation,
            vector_store_path,
            at,
        } => {
            cache.info.ingestion_status = *status;
            if let Some(t) = at.as_deref().and_then(pytime::parse) {
                cache.info.last_updated = t;
            }
            cache.info.ingestion_error.clone_from(error);
            cache.info.generation.clone_from(generation);
            if vector_store_path.is_some() {
                cache.info.vector_store_path.clone_from(vector_store_path);
            }
        }
    }
    cache.info.file_count = cache.index.len() as u64;
    cache.info.total_size_bytes = cache.index.total_size();
}

/// Sets the version counter to `version` if that is ahead (replays are idempotent).
fn bump_version(info: &mut KnowledgeBaseInfo, version: &str) {
    let current = info.version.parse::<u64>().unwrap_or(0);
    if version.parse::<u64>().is_ok_and(|v| v > current) {
        info.version = version.to_owned();
    }
}

/// Finishes journaled writes (from `start` on) whose writer died before completing them;
/// returns the folders it changed.
fn recover(layout: &Layout, records: &[&Record], start: usize) -> Result<Vec<PathBuf>> {
    let mut touched = Vec::new();
    for (i, r) in records.iter().enumerate().skip(start) {
        match r {
            Record::Put { file, tmp, .. } => {
                let tmp_path = layout.dir.join(tmp);
                if tmp_path.exists() {
                    let target = layout.content_path(&file.path);
                    tracing::warn!(domain_id = %layout.domain_id, path = %file.path, "rolling forward an interrupted put");
                    place(layout, &tmp_path, &target)?;
                    touched.extend(target.parent().map(Path::to_path_buf));
                }
            }
            Record::Delete { path, .. } => {
                let superseded = records[i + 1..]
                    .iter()
                    .any(|r| matches!(r, Record::Put { file, .. } if file.path == *path));
                let target = layout.content_path(path);
                if !superseded && target.is_file() {
                    tracing::warn!(domain_id = %layout.domain_id, %path, "finishing an interrupted delete");
                    remove_content(layout, &target)?;
                    touched.extend(target.parent().map(Path::to_path_buf));
                }
            }
            _ => {}
        }
    }
    Ok(touched)
}
