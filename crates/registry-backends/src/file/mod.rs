//! `FileBackend`: a registry in a directory of JSON documents, safe for several processes.
//!
//! Layout under the configured `path`:
//! - `bots/<name>.json`: one document per bot, the wire JSON of [`Registration::to_json`]
//!   (names from [`doc_name::doc_name`]: percent-encoded, hashed when too long);
//! - `_registry/changes.log`: the change log (see [`log`]), whose fsynced line is each write's
//!   commit point and which gives revisions and `changes_since`;
//! - `_registry/lock`: the lock file every write transaction holds exclusively.
//!
//! Writes (register, deactivate, unregister, clear, and touches) run under the exclusive lock:
//! sync the index, finish a write a crashed process left behind, decide, append the log line,
//! fsync, then replace the document atomically. Reads (`peek`, `list`, `count`) read documents
//! without locking (renames are atomic); `changes_since` and `current_revision` read the log.

mod fsio;
mod log;

use crate::doc_name;
use dynreg_registry_core::backend::shared;
use dynreg_registry_core::config_hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::backend::{matches_metadata, now, plan_register, validate_write};
use dynreg_registry_core::{
    Change, ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, RegistryError, Result, Status, WriteCondition, validate_bot_id,
};
use serde_json::{Map, Value};

use crate::config::{
    DEFAULT_TOMBSTONE_RETENTION, DEFAULT_TOUCH_RESOLUTION, FileConfig, build_from_json, invalid,
};
use fsio::{DirLock, corrupt, io_error, parse_doc, read_doc, remove, sync_dir, write_atomic};
use log::{LogIndex, Op, RecordOut, header_line, new_generation, read_record};

const KIND: &str = "file";
const LOG_FILE: &str = "changes.log";

/// A registry stored as a directory of JSON documents (feature `file`).
///
/// Several instances, in one process or many, may share one directory: writes are serialised
/// by an exclusive lock file, revisions come from the change log under that lock, and every
/// file is replaced atomically. Clones share one instance.
#[derive(Clone)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    bots: PathBuf,
    meta: PathBuf,
    log_path: PathBuf,
    lock_path: PathBuf,
    touch_resolution: Duration,
    tombstone_retention: u64,
    initialized: AtomicBool,
    index: Mutex<LogIndex>,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBackend(path={:?})", self.inner.root)
    }
}

impl FileBackend {
    /// A backend on the directory `path` with default settings.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::build(
            path.into(),
            DEFAULT_TOUCH_RESOLUTION,
            DEFAULT_TOMBSTONE_RETENTION,
        )
    }

    /// Builds a backend from its JSON config, read as [`FileConfig`]:
    /// - `path` (required): the directory (created by `initialize`);
    /// - `touch_resolution_ms` (default 1000): a touching `get` writes `last_accessed_at` only
    ///   when the stored value is at least this old;
    /// - `tombstone_retention` (default 100,000): deletions kept in the change log; cursors
    ///   before a compacted deletion get [`ChangeFeed::Expired`].
    ///
    /// See [`crate::config`] for the rules every backend config follows.
    pub fn from_config(config: &Value) -> Result<Self> {
        build_from_json(config, Self::with_config)
    }

    /// Builds a backend from its typed config.
    pub fn with_config(config: FileConfig) -> Result<Self> {
        let path = config
            .path
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| invalid(KIND, "path", "is required"))?;
        Ok(Self::build(
            path,
            Duration::from_millis(config.touch_resolution_ms),
            config.tombstone_retention,
        ))
    }

    fn build(root: PathBuf, touch_resolution: Duration, tombstone_retention: u64) -> Self {
        let meta = root.join("_registry");
        FileBackend {
            inner: Arc::new(Inner {
                bots: root.join("bots"),
                log_path: meta.join(LOG_FILE),
                lock_path: meta.join("lock"),
                meta,
                root,
                touch_resolution,
                tombstone_retention,
                initialized: AtomicBool::new(false),
                index: Mutex::new(LogIndex::default()),
            }),
        }
    }

    /// The directory this backend stores in.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking filesystem work off the async runtime.
    async fn blocking<T, F>(&self, operation: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        if !self.inner.initialized.load(Ordering::Acquire) {
            return Err(RegistryError::NotInitialized { backend: KIND });
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| RegistryError::storage(KIND, operation, None, e))?
    }
}

/// One write transaction: the directory lock, this instance's synced index, the log tail
/// repaired and the last committed write applied.
struct Txn<'a> {
    inner: &'a Inner,
    idx: MutexGuard<'a, LogIndex>,
    _lock: DirLock,
}

impl Inner {
    fn doc_path(&self, bot_id: &str) -> PathBuf {
        self.bots.join(doc_name::doc_name(bot_id))
    }

    fn index(&self) -> MutexGuard<'_, LogIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self) -> Result<Txn<'_>> {
        let lock = DirLock::acquire(&self.lock_path)?;
        let mut txn = Txn {
            inner: self,
            idx: self.index(),
            _lock: lock,
        };
        txn.recover()?;
        Ok(txn)
    }

    fn read_all(&self) -> Result<Vec<Registration>> {
        let entries =
            std::fs::read_dir(&self.bots).map_err(|e| io_error("list", None, &self.bots, e))?;
        let mut regs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", None, &self.bots, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if !doc_name::is_doc_name(name) {
                continue;
            }
            let path = entry.path();
            let bytes = match fsio::read_no_follow(&path) {
                Ok(b) => b,
                // Removed between listing and reading: it is gone, which is a valid state.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list", None, &path, e)),
            };
            let reg = parse_doc(&path, &bytes)?;
            if doc_name::doc_name(&reg.bot_id) != name {
                return Err(corrupt(
                    &path,
                    format!(
                        "holds bot id {:?}, which belongs in another file",
                        reg.bot_id
                    ),
                ));
            }
            regs.push(reg);
        }
        Ok(regs)
    }
}

impl Txn<'_> {
    /// Syncs the index, drops a torn last line and applies the last committed write if the
    /// process that committed it died before replacing the document.
    fn recover(&mut self) -> Result<()> {
        let inner = self.inner;
        let file = self.idx.sync(&inner.log_path)?;
        let Some(mut file) = file else {
            self.create_log()?;
            return Ok(());
        };
        let len = file
            .metadata()
            .map_err(|e| io_error("read change log", None, &inner.log_path, e))?
            .len();
        if len > self.idx.offset {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&inner.log_path)
                .map_err(|e| io_error("repair change log", None, &inner.log_path, e))?;
            f.set_len(self.idx.offset)
                .and_then(|()| f.sync_all())
                .map_err(|e| io_error("repair change log", None, &inner.log_path, e))?;
            tracing::warn!(path = %inner.log_path.display(), "file registry: dropped a torn change log line");
        }
        if self.idx.applied >= self.idx.revision {
            return Ok(());
        }
        let last = self
            .idx
            .entries
            .last_key_value()
            .map(|(r, e)| (*r, e.clone()));
        if let Some((rev, entry)) = last.filter(|(r, _)| *r == self.idx.revision) {
            let rec = read_record(&mut file, &inner.log_path, rev, &entry)?;
            let path = inner.doc_path(&rec.id);
            let doc = read_doc(&path, &rec.id)?;
            match rec.op {
                Op::Put if doc.as_ref().map(|d| d.revision) != Some(rev) => {
                    let value = rec.doc.ok_or_else(|| {
                        corrupt(&inner.log_path, format!("revision {rev} has no document"))
                    })?;
                    let bytes = serde_json::to_vec(&value).expect("a JSON value serialises");
                    write_atomic(
                        &inner.bots,
                        &doc_name::doc_name(&rec.id),
                        &bytes,
                        Some(&rec.id),
                    )?;
                    tracing::warn!(bot_id = %rec.id, revision = rev, "file registry: finished an interrupted write");
                }
                Op::Del if doc.is_some() => {
                    remove(&path, Some(&rec.id))?;
                    sync_dir(&inner.bots, Some(&rec.id))?;
                    tracing::warn!(bot_id = %rec.id, revision = rev, "file registry: finished an interrupted removal");
                }
                _ => {}
            }
        }
        self.idx.applied = self.idx.revision;
        Ok(())
    }

    fn create_log(&mut self) -> Result<()> {
        let inner = self.inner;
        write_atomic(
            &inner.meta,
            LOG_FILE,
            &header_line(new_generation(), 0, 0),
            None,
        )?;
        self.idx.sync(&inner.log_path)?;
        Ok(())
    }

    fn next_revision(&self) -> u64 {
        self.idx.revision + 1
    }

    fn append(&mut self, rev: u64, op: Op, bot_id: &str, doc: Option<Value>) -> Result<()> {
        use std::io::Write;
        let path = &self.inner.log_path;
        let mut line = serde_json::to_vec(&RecordOut {
            rev,
            op,
            id: bot_id,
            doc,
        })
        .expect("a log record serialises");
        let len = line.len() as u64;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error("append change log", Some(bot_id), path, e))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| io_error("append change log", Some(bot_id), path, e))?;
        self.idx.push(rev, bot_id, op, len);
        Ok(())
    }

    /// Commits a new state of a registration: log line, then the document.
    fn put(&mut self, reg: &Registration) -> Result<()> {
        let doc = reg.to_json();
        let bytes = serde_json::to_vec_pretty(&doc).expect("a JSON value serialises");
        self.append(reg.revision, Op::Put, &reg.bot_id, Some(doc))?;
        write_atomic(
            &self.inner.bots,
            &doc_name::doc_name(&reg.bot_id),
            &bytes,
            Some(&reg.bot_id),
        )?;
        self.idx.applied = reg.revision;
        Ok(())
    }

    /// Commits the removal of an existing registration.
    fn delete(&mut self, bot_id: &str) -> Result<()> {
        let rev = self.next_revision();
        self.append(rev, Op::Del, bot_id, None)?;
        remove(&self.inner.doc_path(bot_id), Some(bot_id))?;
        sync_dir(&self.inner.bots, Some(bot_id))?;
        self.idx.applied = rev;
        Ok(())
    }

    /// Rewrites the log when it holds mostly superseded lines or too many deletions.
    fn maybe_compact(&mut self) -> Result<()> {
        let retention = self.inner.tombstone_retention;
        let idx = &*self.idx;
        let live = idx.entries.len() as u64;
        if idx.records <= 2 * live + 1024 && idx.tombstones <= retention {
            return Ok(());
        }
        let path = &self.inner.log_path;
        let mut file =
            std::fs::File::open(path).map_err(|e| io_error("compact change log", None, path, e))?;
        let mut drop_tombstones = idx.tombstones.saturating_sub(retention);
        let mut horizon = idx.horizon;
        let mut body = Vec::new();
        for (rev, entry) in &idx.entries {
            if entry.op == Op::Del && drop_tombstones > 0 {
                drop_tombstones -= 1;
                horizon = horizon.max(*rev);
                continue;
            }
            let mut line = vec![0; entry.len as usize + 1];
            use std::io::{Read, Seek, SeekFrom};
            file.seek(SeekFrom::Start(entry.offset))
                .and_then(|_| file.read_exact(&mut line))
                .map_err(|e| io_error("compact change log", None, path, e))?;
            body.extend_from_slice(&line);
        }
        let mut out = header_line(new_generation(), idx.revision, horizon);
        out.extend_from_slice(&body);
        write_atomic(&self.inner.meta, LOG_FILE, &out, None)?;
        *self.idx = LogIndex::default();
        self.idx.sync(path)?;
        self.idx.applied = self.idx.revision;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.maybe_compact()
    }
}

#[async_trait]
impl RegistryBackend for FileBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn initialize(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            for dir in [&inner.bots, &inner.meta] {
                std::fs::create_dir_all(dir).map_err(|e| io_error("initialize", None, dir, e))?;
            }
            let txn = inner.begin()?;
            // Under the exclusive lock no writer is mid-way, so every temporary file left
            // here belongs to a process that died.
            for dir in [&inner.bots, &inner.meta] {
                let entries =
                    std::fs::read_dir(dir).map_err(|e| io_error("initialize", None, dir, e))?;
                for entry in entries.flatten() {
                    if entry
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(".tmp-"))
                    {
                        remove(&entry.path(), None)?;
                    }
                }
            }
            txn.finish()
        })
        .await
        .map_err(|e| RegistryError::storage(KIND, "initialize", None, e))??;
        self.inner.initialized.store(true, Ordering::Release);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.inner.initialized.store(false, Ordering::Release);
        Ok(())
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        validate_write(bot_id, &config, &options)?;
        let hash = config_hash(&config);
        let bot_id = bot_id.to_owned();
        self.blocking("register", move |inner| {
            let mut txn = inner.begin()?;
            let current = read_doc(&inner.doc_path(&bot_id), &bot_id)?;
            options
                .condition
                .check(&bot_id, current.as_ref().map(|c| c.revision))?;
            let next = txn.next_revision();
            match plan_register(&bot_id, config, hash, &options, current.as_ref(), next) {
                None => Ok(Registered::unchanged(
                    current.expect("no-op plans only exist for present ids"),
                )),
                Some(reg) => {
                    txn.put(&reg)?;
                    txn.finish()?;
                    Ok(Registered::written(reg, current.is_some()))
                }
            }
        })
        .await
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let bot_id = bot_id.to_owned();
        self.blocking("get", move |inner| {
            let path = inner.doc_path(&bot_id);
            let fresh = |r: &Registration| {
                now()
                    .signed_duration_since(r.last_accessed_at)
                    .to_std()
                    .unwrap_or_default()
                    < inner.touch_resolution
            };
            match read_doc(&path, &bot_id)? {
                None => return Ok(None),
                Some(reg) if fresh(&reg) => return Ok(Some(reg)),
                Some(_) => {}
            }
            // The touch rewrites the document under the lock, from its current state, so it
            // can never bring back an older config; it takes no revision.
            let _txn = inner.begin()?;
            let Some(mut reg) = read_doc(&path, &bot_id)? else {
                return Ok(None);
            };
            if !fresh(&reg) {
                reg.last_accessed_at = now();
                let bytes =
                    serde_json::to_vec_pretty(&reg.to_json()).expect("a JSON value serialises");
                write_atomic(
                    &inner.bots,
                    &doc_name::doc_name(&bot_id),
                    &bytes,
                    Some(&bot_id),
                )?;
            }
            Ok(Some(reg))
        })
        .await
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let bot_id = bot_id.to_owned();
        self.blocking("peek", move |inner| {
            read_doc(&inner.doc_path(&bot_id), &bot_id)
        })
        .await
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        validate_bot_id(bot_id)?;
        let bot_id = bot_id.to_owned();
        self.blocking("deactivate", move |inner| {
            let mut txn = inner.begin()?;
            let Some(mut reg) = read_doc(&inner.doc_path(&bot_id), &bot_id)? else {
                return Ok(Deactivation::ABSENT);
            };
            if reg.status == Status::Inactive {
                return Ok(Deactivation::UNCHANGED);
            }
            reg.status = Status::Inactive;
            reg.updated_at = now();
            reg.revision = txn.next_revision();
            txn.put(&reg)?;
            txn.finish()?;
            Ok(Deactivation::at(reg.revision))
        })
        .await
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        let bot_id = bot_id.to_owned();
        self.blocking("unregister", move |inner| {
            let mut txn = inner.begin()?;
            if read_doc(&inner.doc_path(&bot_id), &bot_id)?.is_none() {
                return Ok(false);
            }
            txn.delete(&bot_id)?;
            txn.finish()?;
            Ok(true)
        })
        .await
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        validate_bot_id(bot_id)?;
        let bot_id = bot_id.to_owned();
        self.blocking("unregister", move |inner| {
            let mut txn = inner.begin()?;
            let actual = read_doc(&inner.doc_path(&bot_id), &bot_id)?.map(|r| r.revision);
            WriteCondition::Revision(revision).check(&bot_id, actual)?;
            txn.delete(&bot_id)?;
            txn.finish()?;
            Ok(())
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.list_rows(query).await.map(shared)
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        let status = status.cloned();
        let filter = filter_metadata.cloned();
        self.blocking("count", move |inner| {
            Ok(inner
                .read_all()?
                .iter()
                .filter(|r| status.as_ref().is_none_or(|s| &r.status == s))
                .filter(|r| matches_metadata(r, filter.as_ref()))
                .count() as u64)
        })
        .await
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.blocking("changes_since", move |inner| {
            let mut idx = inner.index();
            let file = idx.sync(&inner.log_path)?;
            if revision < idx.horizon || revision > idx.revision {
                return Ok(ChangeFeed::Expired {
                    cursor: revision,
                    oldest_available: idx.horizon,
                    current_revision: idx.revision,
                });
            }
            let mut changes = Vec::new();
            if let Some(mut file) = file {
                for (rev, entry) in idx.entries.range(revision + 1..) {
                    changes.push(match entry.op {
                        Op::Del => Change::Deleted {
                            bot_id: entry.id.clone(),
                            revision: *rev,
                        },
                        Op::Put => {
                            let rec = read_record(&mut file, &inner.log_path, *rev, entry)?;
                            let doc = rec.doc.ok_or_else(|| {
                                corrupt(&inner.log_path, format!("revision {rev} has no document"))
                            })?;
                            let reg = Registration::from_json(&doc).map_err(|e| {
                                corrupt(&inner.log_path, format!("revision {rev}: {e}"))
                            })?;
                            Change::Upsert(reg)
                        }
                    });
                }
            }
            Ok(ChangeFeed::Changes {
                changes,
                current_revision: idx.revision,
            })
        })
        .await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.blocking("current_revision", |inner| {
            let mut idx = inner.index();
            idx.sync(&inner.log_path)?;
            Ok(idx.revision)
        })
        .await
    }

    async fn clear(&self) -> Result<u64> {
        self.blocking("clear", |inner| {
            let mut txn = inner.begin()?;
            let mut ids: Vec<String> = inner.read_all()?.into_iter().map(|r| r.bot_id).collect();
            ids.sort();
            for id in &ids {
                txn.delete(id)?;
            }
            txn.finish()?;
            Ok(ids.len() as u64)
        })
        .await
    }
}

impl FileBackend {
    /// The rows of a listing, as [`RegistryBackend::list`] returns them (before sharing).
    async fn list_rows(&self, query: &ListQuery) -> Result<Vec<Registration>> {
        query.validate()?;
        let query = query.clone();
        self.blocking("list", move |inner| query.apply(inner.read_all()?))
            .await
    }
}
