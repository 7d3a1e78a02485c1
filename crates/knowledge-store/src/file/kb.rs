//! One knowledge base on disk: the lock (in-process mutex + `flock` on the lock file), the
//! cached index kept in step with `_metadata.json` + journal, group commit of uploads, deletes,
//! and compaction. The journal's I/O and the application of its records (with recovery) are in
//! [`super::journal`], snapshots in [`super::snapshots`], the upload temp writer in
//! [`super::atomic`].
//!
//! Every write runs under the exclusive lock: catch up on what other instances wrote, append
//! the journal record(s) (the commit point), apply them to the cache, then rename the content
//! temp files into place. Readers take the shared lock and catch up the same way. Recovery is
//! part of catching up: a journaled put whose temp file still exists (its writer died between
//! commit and rename) is rolled forward; a journaled delete whose file still exists is
//! finished; a torn last journal line (a writer died mid-append) is cut off.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, mpsc};

use sha2::{Digest, Sha256};

use super::atomic::{FsyncPolicy, sync_dir, write_atomic};
use super::journal::Record;
use super::layout::{Layout, metadata_json, not_found, parse_metadata};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::index::FileIndex;
use crate::model::{KnowledgeBaseInfo, KnowledgeFile, StatusUpdate};
use crate::pytime;

/// Tunables shared by every knowledge base of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) retention: usize,
    pub(crate) compact_min_records: usize,
}

/// Identity of a file version on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// The in-memory view of one knowledge base, in step with disk as of `offset`.
#[derive(Debug)]
pub(crate) struct Cache {
    meta_stamp: Stamp,
    pub(super) meta_sha: String,
    pub(super) journal_id: Option<String>,
    pub(super) journal_ino: Option<(u64, u64)>,
    pub(super) offset: u64,
    pub(super) records: usize,
    compact_at: usize,
    pub(super) foreign: bool,
    pub(crate) info: KnowledgeBaseInfo,
    pub(crate) index: FileIndex,
    pub(super) known_snapshots: HashSet<String>,
    /// Snapshot files this instance knows of (counted at the last prune, plus its own writes
    /// since): the folder is listed and pruned only when this passes the retention bound.
    pub(super) snapshot_files: Option<usize>,
    /// Folders whose entries changed (renames, unlinks) since the last compaction; with
    /// fsync=always they are fsynced before compaction drops the journal records that could
    /// otherwise redo those changes after a power failure.
    pub(super) dirty_dirs: HashSet<PathBuf>,
}

impl Cache {
    /// The state token: changes with every journal append and every index rewrite.
    pub(crate) fn token(&self) -> String {
        format!(
            "{}.{}.{}",
            &self.meta_sha[..16],
            self.journal_id.as_deref().unwrap_or("-"),
            self.offset
        )
    }
}

/// The temp-file folder of this backend instance, kept alive by an exclusive lock so other
/// instances can tell it from a dead instance's leftovers.
#[derive(Debug)]
struct Owner {
    id: String,
    dir: PathBuf,
    _lock: File,
}

/// What one knowledge base's lock guards: the lock file, this instance's temp folder, the
/// cached view, and how far recovery effects have run (journal id, offset).
#[derive(Debug, Default)]
pub(super) struct State {
    lock_file: Option<File>,
    owner: Option<Owner>,
    pub(super) cache: Option<Cache>,
    pub(super) effects: Option<(String, u64)>,
}

/// One upload waiting for the next journal commit of its knowledge base.
#[derive(Debug)]
pub(crate) struct PendingPut {
    staged: Vec<Staged>,
    reply: mpsc::Sender<Result<Vec<StateWrite>>>,
}

/// Answers every waiting upload with an error (the first gets `err` itself); removes their
/// temp files unless they were already committed.
fn fail_all(layout: &Layout, batch: Vec<PendingPut>, err: KnowledgeError, cleanup: bool) {
    let message = err.to_string();
    let not_found = matches!(err, KnowledgeError::KbNotFound { .. });
    let mut first = Some(err);
    for p in batch {
        if cleanup {
            for s in &p.staged {
                let _ = fs::remove_file(&s.tmp_path);
            }
        }
        let e = first.take().unwrap_or_else(|| {
            if not_found {
                KnowledgeError::KbNotFound {
                    domain_id: layout.domain_id.clone(),
                }
            } else {
                KnowledgeError::Task {
                    domain_id: layout.domain_id.clone(),
                    reason: message.clone(),
                }
            }
        });
        let _ = p.reply.send(Err(e));
    }
}

/// Handle on one knowledge base folder.
#[derive(Debug)]
pub(crate) struct KbHandle {
    pub(crate) layout: Layout,
    pub(super) tuning: Tuning,
    state: Mutex<State>,
    pending: Mutex<Vec<PendingPut>>,
}

/// The lock held for one operation; releases the `flock` when dropped.
pub(crate) struct Locked<'a> {
    pub(super) handle: &'a KbHandle,
    pub(super) state: MutexGuard<'a, State>,
    pub(super) exclusive: bool,
    /// State writes made under this lock, to report after it is released.
    pub(crate) writes: Vec<StateWrite>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(f) = &self.state.lock_file {
            let _ = f.unlock();
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl KbHandle {
    pub(crate) fn new(layout: Layout, tuning: Tuning) -> Self {
        Self {
            layout,
            tuning,
            state: Mutex::new(State::default()),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Commits staged uploads (group commit): the upload joins the waiting group, and whoever
    /// gets the lock commits the whole group with one journal append and fsync. Returns the
    /// state writes to report. On error the upload's temp files are gone.
    pub(crate) fn commit_grouped(&self, staged: Vec<Staged>) -> Result<Vec<StateWrite>> {
        let (reply, answer) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(PendingPut { staged, reply });
        let locked = self.lock(true);
        let batch = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match locked {
            Ok(mut l) => {
                if !batch.is_empty() {
                    l.commit_batch(batch);
                }
            }
            Err(e) => fail_all(&self.layout, batch, e, true),
        }
        answer.recv().unwrap_or_else(|_| {
            Err(KnowledgeError::Task {
                domain_id: self.layout.domain_id.clone(),
                reason: "group commit was abandoned".into(),
            })
        })
    }

    pub(super) fn kb_not_found(&self) -> KnowledgeError {
        KnowledgeError::KbNotFound {
            domain_id: self.layout.domain_id.clone(),
        }
    }

    /// Takes the lock (shared or exclusive) on the knowledge base; `KbNotFound` if its folder
    /// does not exist.
    pub(crate) fn lock(&self, exclusive: bool) -> Result<Locked<'_>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if state.lock_file.is_none() {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.layout.lock)
                {
                    Ok(f) => state.lock_file = Some(f),
                    Err(e) if not_found(&e) => {
                        state.cache = None;
                        return Err(self.kb_not_found());
                    }
                    Err(e) => return Err(self.layout.io(&self.layout.lock, e)),
                }
            }
            let Some(f) = state.lock_file.as_ref() else {
                continue;
            };
            let r = if exclusive { f.lock() } else { f.lock_shared() };
            r.map_err(|e| self.layout.io(&self.layout.lock, e))?;
            // The folder may have been deleted (and re-created) while we waited.
            let fd_ino = f.metadata().map(|m| (m.dev(), m.ino()));
            let path_ino = fs::metadata(&self.layout.lock).map(|m| (m.dev(), m.ino()));
            match (fd_ino, path_ino) {
                (Ok(a), Ok(b)) if a == b => break,
                _ => {
                    let _ = f.unlock();
                    state.lock_file = None;
                    state.cache = None;
                    state.owner = None;
                    state.effects = None;
                }
            }
        }
        Ok(Locked {
            handle: self,
            state,
            exclusive,
            writes: Vec::new(),
        })
    }

    /// The folder this instance writes temp files into (created on first use).
    pub(crate) fn temp_dir(&self) -> Result<(String, PathBuf)> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(o) = &state.owner
            && o.dir.is_dir()
        {
            return Ok((o.id.clone(), o.dir.clone()));
        }
        if !self.layout.meta.exists() {
            return Err(self.kb_not_found());
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let dir = self.layout.tmp_root.join(&id);
        fs::create_dir_all(&dir).map_err(|e| self.layout.io(&dir, e))?;
        let lock_path = self.layout.tmp_root.join(format!("{id}.lock"));
        let lock = File::create(&lock_path).map_err(|e| self.layout.io(&lock_path, e))?;
        lock.lock().map_err(|e| self.layout.io(&lock_path, e))?;
        state.owner = Some(Owner {
            id: id.clone(),
            dir: dir.clone(),
            _lock: lock,
        });
        Ok((id, dir))
    }

    /// Drops the cached view (after the folder was deleted or replaced).
    pub(crate) fn forget(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = State::default();
    }
}

impl Locked<'_> {
    pub(super) fn layout(&self) -> &Layout {
        &self.handle.layout
    }

    pub(super) fn io(&self, path: &Path, e: io::Error) -> KnowledgeError {
        self.handle.layout.io(path, e)
    }

    /// Brings the cache in step with disk and returns it; `KbNotFound` if there is no index.
    pub(crate) fn sync(&mut self) -> Result<&mut Cache> {
        let layout = self.handle.layout.clone();
        let meta_md = match fs::metadata(&layout.meta) {
            Ok(m) => m,
            Err(e) if not_found(&e) => {
                self.state.cache = None;
                return Err(self.handle.kb_not_found());
            }
            Err(e) => return Err(self.io(&layout.meta, e)),
        };
        let stamp = Stamp::of(&meta_md);
        let journal_md = match fs::metadata(&layout.journal) {
            Ok(m) => Some(m),
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(self.io(&layout.journal, e)),
        };
        let journal_ino = journal_md.as_ref().map(|m| (m.dev(), m.ino()));
        let journal_len = journal_md.as_ref().map_or(0, fs::Metadata::len);
        let full = match &self.state.cache {
            None => true,
            Some(c) => {
                c.meta_stamp != stamp || c.journal_ino != journal_ino || journal_len < c.offset
            }
        };
        if full {
            self.full_load(stamp, journal_ino)?;
        } else if journal_len > self.state.cache.as_ref().map_or(0, |c| c.offset) {
            self.read_journal_tail()?;
        }
        if self.state.cache.as_ref().is_some_and(|c| c.foreign) && self.exclusive {
            self.compact()?;
        }
        self.state
            .cache
            .as_mut()
            .ok_or_else(|| self.handle.kb_not_found())
    }

    fn full_load(&mut self, stamp: Stamp, journal_ino: Option<(u64, u64)>) -> Result<()> {
        let layout = self.handle.layout.clone();
        let bytes = match fs::read(&layout.meta) {
            Ok(b) => b,
            Err(e) if not_found(&e) => {
                self.state.cache = None;
                return Err(self.handle.kb_not_found());
            }
            Err(e) => return Err(self.io(&layout.meta, e)),
        };
        let meta_sha = sha256_hex(&bytes);
        let (info, index) = parse_metadata(&layout, &bytes)?;
        let compact_at = self.handle.tuning.compact_min_records.max(index.len());
        self.state.cache = Some(Cache {
            meta_stamp: stamp,
            meta_sha,
            journal_id: None,
            journal_ino,
            offset: 0,
            records: 0,
            compact_at,
            foreign: false,
            info,
            index,
            known_snapshots: HashSet::new(),
            snapshot_files: None,
            dirty_dirs: HashSet::new(),
        });
        if journal_ino.is_some() {
            self.read_journal_tail()?;
        }
        Ok(())
    }

    /// True when the journal has grown enough that folding it into `_metadata.json` is due.
    pub(crate) fn compaction_due(&self) -> bool {
        self.state
            .cache
            .as_ref()
            .is_some_and(|c| c.records >= c.compact_at)
    }

    /// True when the journal holds records not yet in `_metadata.json`.
    pub(crate) fn has_journal_records(&self) -> bool {
        self.state
            .cache
            .as_ref()
            .is_some_and(|c| c.records > 0 || c.foreign)
    }

    /// Folds the journal into `_metadata.json` (atomically) and starts a new journal. Records
    /// a snapshot of the compacted state so the original can diff against what it reads.
    pub(crate) fn compact(&mut self) -> Result<()> {
        let layout = self.handle.layout.clone();
        let fsync = self.handle.tuning.fsync;
        let Some(cache) = self.state.cache.as_mut() else {
            return Err(self.handle.kb_not_found());
        };
        if fsync.enabled() {
            cache.dirty_dirs.insert(layout.content.clone());
            for dir in cache.dirty_dirs.drain() {
                // A folder removed since (emptied by a delete) needs nothing.
                match sync_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(layout.io(&dir, e)),
                }
            }
        } else {
            cache.dirty_dirs.clear();
        }
        let bytes = metadata_json(&cache.info, &cache.index);
        write_atomic(&layout.meta, &bytes, fsync).map_err(|e| layout.io(&layout.meta, e))?;
        let md = fs::metadata(&layout.meta).map_err(|e| layout.io(&layout.meta, e))?;
        cache.meta_stamp = Stamp::of(&md);
        cache.meta_sha = sha256_hex(&bytes);
        cache.foreign = false;
        cache.compact_at = self
            .handle
            .tuning
            .compact_min_records
            .max(cache.index.len());
        cache.journal_id = None;
        self.writes.push(StateWrite {
            domain_id: layout.domain_id.clone(),
            key: layout.meta.display().to_string(),
            kind: KnowledgeKeyKind::Metadata,
            byte_size: bytes.len() as u64,
            tenant_id: None,
        });
        self.new_journal()?;
        self.record_current_snapshot()?;
        remove_dead_owners(&layout);
        Ok(())
    }

    /// Writes the first index and an empty journal of a new knowledge base.
    pub(crate) fn initialise(&mut self, info: &KnowledgeBaseInfo) -> Result<()> {
        let layout = self.handle.layout.clone();
        let bytes = metadata_json(info, &FileIndex::default());
        write_atomic(&layout.meta, &bytes, self.handle.tuning.fsync)
            .map_err(|e| layout.io(&layout.meta, e))?;
        self.writes.push(StateWrite {
            domain_id: layout.domain_id.clone(),
            key: layout.meta.display().to_string(),
            kind: KnowledgeKeyKind::Metadata,
            byte_size: bytes.len() as u64,
            tenant_id: None,
        });
        let _ = fs::remove_file(&layout.journal);
        self.state.cache = None;
        self.state.effects = None;
        self.sync()?;
        self.new_journal()
    }

    /// Builds the status record of an update, checking its expected version.
    pub(crate) fn status_record(&mut self, update: StatusUpdate) -> Result<Record> {
        let layout = self.handle.layout.clone();
        let cache = self.sync()?;
        if let Some(expected) = &update.expected_version {
            let actual = cache.token();
            if &actual != expected {
                return Err(KnowledgeError::Conflict {
                    domain_id: layout.domain_id.clone(),
                    key: layout.meta.display().to_string(),
                    expected_version: expected.clone(),
                    actual_version: Some(actual),
                });
            }
        }
        Ok(Record::Status {
            status: update.status,
            error: update.error,
            generation: update.generation,
            vector_store_path: update.vector_store_path,
            at: Some(pytime::format(&pytime::now())),
        })
    }

    pub(crate) fn cache(&self) -> Option<&Cache> {
        self.state.cache.as_ref()
    }
}

/// `target` relative to `content/` (content paths are always built below it).
fn below_content<'a>(layout: &Layout, target: &'a Path) -> Result<&'a Path> {
    target.strip_prefix(&layout.content).map_err(|_| {
        layout.io(
            target,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "outside the content folder",
            ),
        )
    })
}

/// Renames a temp file to its content location, creating parent folders — beneath `content/`,
/// following no link (see [`super::beneath`]).
pub(crate) fn place(layout: &Layout, tmp: &Path, target: &Path) -> Result<()> {
    let rel = below_content(layout, target)?;
    super::beneath::place(&layout.content, rel, tmp).map_err(|e| layout.io(target, e))
}

/// Deletes a content file and the folders it leaves empty (up to `content/`), following no
/// link.
pub(crate) fn remove_content(layout: &Layout, target: &Path) -> Result<()> {
    let rel = below_content(layout, target)?;
    super::beneath::remove(&layout.content, rel)
        .map(drop)
        .map_err(|e| layout.io(target, e))
}

/// Removes temp folders of backend instances that no longer hold their owner lock.
pub(crate) fn remove_dead_owners(layout: &Layout) {
    let Ok(entries) = fs::read_dir(&layout.tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".lock") else {
            continue;
        };
        let Ok(f) = File::open(entry.path()) else {
            continue;
        };
        if f.try_lock().is_ok() {
            let _ = fs::remove_dir_all(layout.tmp_root.join(id));
            let _ = fs::remove_file(entry.path());
            let _ = f.unlock();
        }
    }
}

/// A staged upload: the entry to index and the temp file holding its bytes.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) file: KnowledgeFile,
    pub(crate) tmp_path: PathBuf,
    pub(crate) tmp_rel: String,
}

impl Locked<'_> {
    /// Commits a group of waiting uploads: each is checked for conflicts on its own (a refused
    /// one does not fail the others), then all accepted ones share one journal append (and
    /// one fsync), then their temp files are renamed into place.
    fn commit_batch(&mut self, batch: Vec<PendingPut>) {
        let layout = self.handle.layout.clone();
        let cache = match self.sync() {
            Ok(c) => c,
            Err(e) => return fail_all(&layout, batch, e, true),
        };
        let mut overlay = FileIndex::default();
        let mut accepted = Vec::with_capacity(batch.len());
        for p in batch {
            let mut mine = FileIndex::default();
            let checked = p.staged.iter().try_for_each(|s| {
                let path = &s.file.path;
                if cache.index.get(path).is_none() && overlay.get(path).is_none() {
                    cache.index.check_conflict(&layout.domain_id, path)?;
                    overlay.check_conflict(&layout.domain_id, path)?;
                }
                if mine.get(path).is_none() {
                    mine.check_conflict(&layout.domain_id, path)?;
                }
                // A link planted below content/ refuses the put before it is journaled.
                super::beneath::check(&layout.content, Path::new(path))
                    .map_err(|e| layout.io(&layout.content_path(path), e))?;
                mine.insert(s.file.clone());
                Ok::<(), KnowledgeError>(())
            });
            match checked {
                Ok(()) => {
                    for s in &p.staged {
                        overlay.insert(s.file.clone());
                    }
                    accepted.push(p);
                }
                Err(e) => fail_all(&layout, vec![p], e, true),
            }
        }
        if accepted.is_empty() {
            return;
        }
        let mut version = cache.info.version.parse::<u64>().unwrap_or(1);
        let records: Vec<Record> = accepted
            .iter()
            .flat_map(|p| p.staged.iter())
            .map(|s| {
                version += 1;
                Record::Put {
                    file: s.file.clone(),
                    tmp: s.tmp_rel.clone(),
                    version: version.to_string(),
                }
            })
            .collect();
        if let Err(e) = self.append(&records) {
            return fail_all(&layout, accepted, e, true);
        }
        // The journal is the commit: a rename lost to a crash or power failure is redone from
        // it, so the folders are fsynced at compaction, not per put.
        let mut touched = Vec::with_capacity(records.len());
        for s in accepted.iter().flat_map(|p| p.staged.iter()) {
            let target = layout.content_path(&s.file.path);
            if let Err(e) = place(&layout, &s.tmp_path, &target) {
                // Committed: recovery renames it on the next catch-up, so keep the temp file.
                return fail_all(&layout, accepted, e, false);
            }
            touched.extend(target.parent().map(Path::to_path_buf));
        }
        if let Some(cache) = self.state.cache.as_mut() {
            cache.dirty_dirs.extend(touched);
        }
        if self.compaction_due()
            && let Err(e) = self.compact()
        {
            tracing::warn!(domain_id = %layout.domain_id, error = %e, "compaction failed; will retry");
        }
        let mut writes = std::mem::take(&mut self.writes);
        for p in accepted {
            let _ = p.reply.send(Ok(std::mem::take(&mut writes)));
        }
    }

    /// Deletes one file: journal first (the commit), then the content.
    pub(crate) fn commit_delete(&mut self, path: &str) -> Result<bool> {
        let layout = self.handle.layout.clone();
        let cache = self.sync()?;
        if cache.index.get(path).is_none() {
            return Ok(false);
        }
        let mut info = cache.info.clone();
        info.increment_version();
        let record = Record::Delete {
            path: path.to_owned(),
            version: info.version,
            at: pytime::format(&pytime::now()),
        };
        self.append(std::slice::from_ref(&record))?;
        let target = layout.content_path(path);
        remove_content(&layout, &target)?;
        if let Some(cache) = self.state.cache.as_mut() {
            let mut dir = target.parent();
            while let Some(d) = dir {
                cache.dirty_dirs.insert(d.to_path_buf());
                if d == layout.content {
                    break;
                }
                dir = d.parent();
            }
        }
        if self.compaction_due() {
            self.compact()?;
        }
        Ok(true)
    }
}
