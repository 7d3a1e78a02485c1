//! The file backend: one folder per knowledge base, layout-compatible with the Python
//! original both ways (see [`layout`]), plus a write-ahead journal that makes puts O(1), a
//! lock file that serialises writers across processes, and crash recovery.
//!
//! Writes with [`FsyncPolicy::Always`] are group-committed: each upload fsyncs its own temp
//! file and its folder entry (in parallel with the others, outside the lock), then whoever
//! takes the lock appends every waiting upload to the journal with one fsync. Reads of small files
//! that the kernel has cached happen on the calling task, without the blocking pool (see
//! `read`).
//!
//! The original reads what dynreg wrote once the journal is compacted into `_metadata.json`:
//! automatically when the journal reaches `max(compact_min_records, files at last
//! compaction)` records (amortised O(1) per put), on [`KnowledgeBackend::close`], or with
//! [`FileKnowledgeBackend::compact`].

mod atomic;
mod beneath;
mod journal;
mod kb;
mod layout;
mod read;
mod snapshots;
mod tenant;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

pub use atomic::FsyncPolicy;
use atomic::TempWriter;
use kb::{KbHandle, Staged, Tuning};
use layout::Layout;
use tenant::TenantPaths;

use crate::error::{KnowledgeError, Result};
use crate::events::{StateEvents, StateWrite};
use crate::identity;
use crate::keys::KeyLayout;
use crate::memory::file_entry;
use crate::model::{
    ChangeSet, FileUpload, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions, StatusUpdate,
};
use crate::names::SCOPED_STATE_ROOT;
use crate::paths::{validate_domain_id, validate_path, validate_version};
use crate::snapshots::DEFAULT_SNAPSHOT_RETENTION;
use crate::stream::ByteStream;
use crate::tenant::TenantContext;
use crate::{KnowledgeBackend, KnowledgeBackendExt};

/// Configuration of the file backend.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The root folder (the original's default is `./data/knowledge`).
    pub path: PathBuf,
    /// Durability of acknowledged writes.
    pub fsync: FsyncPolicy,
    /// Snapshots kept per knowledge base.
    pub snapshot_retention: usize,
    /// Journal records before the first compaction into `_metadata.json`.
    pub compact_min_records: usize,
}

impl FileConfig {
    /// Defaults for a root folder: fsync always, 64 snapshots, compaction from 1000 records.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: FsyncPolicy::Always,
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            compact_min_records: 1000,
        }
    }

    /// Reads `{"path", "fsync": "always"|"never", "snapshot_retention", "compact_min_records"}`.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        crate::factory::check_keys(
            "file",
            v,
            &["path", "fsync", "snapshot_retention", "compact_min_records"],
        )?;
        let mut cfg = Self::new(
            v.get("path")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("./data/knowledge"),
        );
        if let Some(f) = v.get("fsync") {
            let s = f
                .as_str()
                .map(str::to_owned)
                .or_else(|| f.as_bool().map(|b| b.to_string()))
                .unwrap_or_default();
            cfg.fsync = FsyncPolicy::parse(&s).ok_or_else(|| KnowledgeError::Config {
                kind: "file",
                field: "fsync",
                reason: format!("expected \"always\" or \"never\", got {f}"),
            })?;
        }
        if let Some(n) = v.get("snapshot_retention") {
            cfg.snapshot_retention =
                n.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| KnowledgeError::Config {
                        kind: "file",
                        field: "snapshot_retention",
                        reason: format!("expected a positive integer, got {n}"),
                    })? as usize;
        }
        if let Some(n) = v.get("compact_min_records") {
            cfg.compact_min_records =
                n.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| KnowledgeError::Config {
                        kind: "file",
                        field: "compact_min_records",
                        reason: format!("expected a positive integer, got {n}"),
                    })? as usize;
        }
        Ok(cfg)
    }
}

/// Knowledge bases in folders under a root, compatible with the original's layout.
#[derive(Debug)]
pub struct FileKnowledgeBackend {
    base: PathBuf,
    tuning: Tuning,
    handles: Mutex<HashMap<String, Arc<KbHandle>>>,
    events: StateEvents,
    layout: KeyLayout,
}

async fn blocking<T: Send + 'static>(
    domain_id: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KnowledgeError::task(domain_id, e))?
}

fn not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

impl FileKnowledgeBackend {
    /// Opens (creating) the root folder.
    pub async fn open(config: FileConfig) -> Result<Self> {
        let base = config.path.clone();
        let b2 = base.clone();
        blocking("", move || {
            fs::create_dir_all(&b2).map_err(|e| KnowledgeError::io("", b2.display(), e))
        })
        .await?;
        let base = fs::canonicalize(&base).unwrap_or(base);
        let layout = KeyLayout::directory(&base.display().to_string());
        Ok(Self {
            layout,
            base,
            tuning: Tuning {
                fsync: config.fsync,
                retention: config.snapshot_retention.max(1),
                compact_min_records: config.compact_min_records.max(1),
            },
            handles: Mutex::new(HashMap::new()),
            events: StateEvents::default(),
        })
    }

    /// The root folder.
    pub fn base_path(&self) -> &Path {
        &self.base
    }

    /// The tenant state paths of `ctx`, or `None` for the single-tenant state.
    fn tenant_paths(&self, domain_id: &str, ctx: &TenantContext) -> Result<Option<TenantPaths>> {
        let state = ctx.state_prefix(domain_id)?;
        Ok((!state.is_empty())
            .then(|| TenantPaths::new(&self.layout, domain_id, &state, ctx.tenant_id())))
    }

    /// Reads from a knowledge base's synced state under a shared lock; `None` when the
    /// knowledge base does not exist.
    async fn read_synced<T: Send + 'static>(
        &self,
        domain_id: &str,
        read: impl FnOnce(&kb::Cache) -> T + Send + 'static,
    ) -> Result<Option<T>> {
        let h = self.handle(domain_id);
        blocking(domain_id, move || {
            let mut l = match h.lock(false) {
                Ok(l) => l,
                Err(KnowledgeError::KbNotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            match l.sync() {
                Ok(c) => Ok(Some(read(c))),
                Err(KnowledgeError::KbNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    fn handle(&self, domain_id: &str) -> Arc<KbHandle> {
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        handles
            .entry(domain_id.to_owned())
            .or_insert_with(|| {
                Arc::new(KbHandle::new(
                    Layout::new(&self.base, domain_id),
                    self.tuning.clone(),
                ))
            })
            .clone()
    }

    async fn emit(&self, writes: Vec<StateWrite>) {
        for w in writes {
            self.events.emit(w).await;
        }
    }

    /// Folds the journal of one knowledge base into `_metadata.json` now, so the original
    /// (or any reader of `_metadata.json`) sees every write.
    pub async fn compact(&self, domain_id: &str) -> Result<()> {
        validate_domain_id(domain_id)?;
        let h = self.handle(domain_id);
        let writes = blocking(domain_id, move || {
            let mut l = h.lock(true)?;
            l.sync()?;
            if l.has_journal_records() {
                l.compact()?;
            } else {
                kb::remove_dead_owners(&h.layout);
            }
            Ok(std::mem::take(&mut l.writes))
        })
        .await?;
        self.emit(writes).await;
        Ok(())
    }

    /// Writes staged temp files' entries to the index and renames them into place.
    async fn commit(&self, domain_id: &str, staged: Vec<Staged>) -> Result<Vec<KnowledgeFile>> {
        let h = self.handle(domain_id);
        let files: Vec<KnowledgeFile> = staged.iter().map(|s| s.file.clone()).collect();
        let writes = blocking(domain_id, move || h.commit_grouped(staged)).await?;
        self.emit(writes).await;
        Ok(files)
    }
}

#[async_trait]
impl KnowledgeBackend for FileKnowledgeBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn state_events(&self) -> &StateEvents {
        &self.events
    }

    fn key_layout(&self) -> &KeyLayout {
        &self.layout
    }

    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo> {
        validate_domain_id(domain_id)?;
        let h = self.handle(domain_id);
        let d = domain_id.to_owned();
        let (info, writes) = blocking(domain_id, move || {
            let layout = &h.layout;
            match fs::create_dir(&layout.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if layout.meta.exists() {
                        return Err(KnowledgeError::KbAlreadyExists { domain_id: d });
                    }
                }
                Err(e) => return Err(layout.io(&layout.dir, e)),
            }
            fs::create_dir_all(&layout.content).map_err(|e| layout.io(&layout.content, e))?;
            let mut l = h.lock(true)?;
            if layout.meta.exists() {
                return Err(KnowledgeError::KbAlreadyExists { domain_id: d });
            }
            let info = KnowledgeBaseInfo::new(&d, metadata);
            l.initialise(&info)?;
            Ok((info, std::mem::take(&mut l.writes)))
        })
        .await?;
        self.emit(writes).await;
        Ok(info)
    }

    async fn get_info_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<KnowledgeBaseInfo>> {
        validate_domain_id(domain_id)?;
        let Some(paths) = self.tenant_paths(domain_id, ctx)? else {
            return self.read_synced(domain_id, |c| c.info.clone()).await;
        };
        let view = self
            .read_synced(domain_id, move |c| {
                paths.load().map(|(state, _)| state.view(&c.info))
            })
            .await?;
        view.transpose()
    }

    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>> {
        let base = self.base.clone();
        let names = blocking("", move || {
            let entries = match fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(KnowledgeError::io("", base.display(), e)),
            };
            let mut names = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // The layout's own names (tenant state, graves of deleted knowledge bases,
                // hidden files) are expected here; anything else unaddressable is reported.
                if name == SCOPED_STATE_ROOT || name.starts_with("_deleted.") || name.starts_with('.') {
                    continue;
                }
                if validate_domain_id(&name).is_err() {
                    if entry.path().join("_metadata.json").is_file() {
                        tracing::warn!(name = %name, "skipping a knowledge base folder whose name is not an addressable domain_id (its data is kept)");
                    }
                    continue;
                }
                if entry.path().join("_metadata.json").is_file() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(info) = self.get_info(&name).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn delete_kb(&self, domain_id: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        let h = self.handle(domain_id);
        let base = self.base.clone();
        let deleted = blocking(domain_id, move || {
            let l = match h.lock(true) {
                Ok(l) => l,
                Err(KnowledgeError::KbNotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            let layout = h.layout.clone();
            if !layout.meta.exists() {
                return Ok(false);
            }
            // Tenant state first, while the knowledge base still exists and nobody can write
            // tenant state of it (tenant writes hold its shared lock): a re-created knowledge
            // base must not inherit a stale status.
            tenant::remove_all(&base, &layout.domain_id)?;
            // Make the whole folder disappear at once, then remove it at leisure.
            let grave = base.join(format!(
                "_deleted.{}.{:016x}",
                layout.domain_id,
                rand::random::<u64>()
            ));
            fs::rename(&layout.dir, &grave).map_err(|e| layout.io(&layout.dir, e))?;
            drop(l);
            h.forget();
            fs::remove_dir_all(&grave).map_err(|e| layout.io(&grave, e))?;
            Ok(true)
        })
        .await?;
        Ok(deleted)
    }

    async fn put_stream(
        &self,
        domain_id: &str,
        path: &str,
        mut content: ByteStream,
        options: PutOptions,
    ) -> Result<KnowledgeFile> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let h = self.handle(domain_id);
        let h2 = h.clone();
        let (owner, dir) = blocking(domain_id, move || h2.temp_dir()).await?;
        let layout = h.layout.clone();
        let fsync = self.tuning.fsync;
        let l2 = layout.clone();
        let mut writer = blocking(domain_id, move || TempWriter::create(&l2, &owner, &dir)).await?;
        let tmp_path = writer.path.clone();
        // Write chunk by chunk on the blocking pool: at most one chunk in memory.
        let written: Result<TempWriter> = async {
            while let Some(chunk) = content.next().await {
                let chunk = chunk?;
                let l3 = layout.clone();
                writer = blocking(domain_id, move || {
                    writer.write(&l3, &chunk)?;
                    Ok(writer)
                })
                .await?;
            }
            Ok(writer)
        }
        .await;
        let writer = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        let l4 = layout.clone();
        let (checksum, tmp_path, tmp_rel, size) = blocking(domain_id, move || {
            let done = writer.finish(&l4, fsync)?;
            if fsync.enabled()
                && let Some(dir) = done.1.parent()
            {
                atomic::sync_dir(dir).map_err(|e| l4.io(dir, e))?;
            }
            Ok(done)
        })
        .await?;
        let staged = Staged {
            file: file_entry(path, size, checksum, options),
            tmp_path,
            tmp_rel,
        };
        let mut out = self.commit(domain_id, vec![staged]).await?;
        out.pop().ok_or_else(|| KnowledgeError::FileNotFound {
            domain_id: domain_id.to_owned(),
            path: path.to_owned(),
        })
    }

    async fn put_files(
        &self,
        domain_id: &str,
        uploads: Vec<FileUpload>,
    ) -> Result<Vec<KnowledgeFile>> {
        validate_domain_id(domain_id)?;
        for u in &uploads {
            validate_path(domain_id, &u.path)?;
        }
        let h = self.handle(domain_id);
        let fsync = self.tuning.fsync;
        let (files, writes) = blocking(domain_id, move || {
            let (owner, dir) = h.temp_dir()?;
            let layout = h.layout.clone();
            let mut staged: Vec<Staged> = Vec::with_capacity(uploads.len());
            let stage = |staged: &mut Vec<Staged>| -> Result<()> {
                for u in uploads {
                    let mut w = TempWriter::create(&layout, &owner, &dir)?;
                    let tmp_path = w.path.clone();
                    let done = w
                        .write(&layout, &u.content)
                        .and_then(|()| w.finish(&layout, fsync));
                    match done {
                        Ok((checksum, tmp_path, tmp_rel, size)) => staged.push(Staged {
                            file: file_entry(&u.path, size, checksum, u.options),
                            tmp_path,
                            tmp_rel,
                        }),
                        Err(e) => {
                            let _ = fs::remove_file(&tmp_path);
                            return Err(e);
                        }
                    }
                }
                Ok(())
            };
            if let Err(e) = stage(&mut staged).and_then(|()| {
                // The temp files' names must be durable before the journal refers to them.
                // (Here, by each writer in parallel, not by the group committer under the
                // lock: that would put a second fsync in the critical section.)
                if fsync.enabled() {
                    atomic::sync_dir(&dir).map_err(|e| layout.io(&dir, e))?;
                }
                Ok(())
            }) {
                for s in &staged {
                    let _ = fs::remove_file(&s.tmp_path);
                }
                return Err(e);
            }
            let files: Vec<KnowledgeFile> = staged.iter().map(|s| s.file.clone()).collect();
            let writes = h.commit_grouped(staged)?;
            Ok((files, writes))
        })
        .await?;
        self.emit(writes).await;
        Ok(files)
    }

    async fn get_file(&self, domain_id: &str, path: &str) -> Result<Option<Bytes>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let target = layout::content_path(&self.base, domain_id, path);
        let root = self.base.join(domain_id).join("content");
        let io_err = |target: &Path, e| KnowledgeError::io(domain_id, target.display(), e);
        // A cached small file is read right here; see `read`.
        match read::read_cached(&root, Path::new(path)) {
            Ok(read::Cached::Bytes(b)) => return Ok(Some(Bytes::from(b))),
            Ok(read::Cached::Missing) => return Ok(None),
            Ok(read::Cached::WouldBlock) => {}
            Err(e) => return Err(io_err(&target, e)),
        }
        let rel = path.to_owned();
        let read = blocking(domain_id, move || {
            Ok(
                beneath::open_read(&root, Path::new(&rel)).and_then(|mut f| {
                    if f.metadata()?.is_dir() {
                        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
                    }
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut f, &mut buf)?;
                    Ok(buf)
                }),
            )
        })
        .await?;
        match read {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(io_err(&target, e)),
        }
    }

    async fn stream_file(
        &self,
        domain_id: &str,
        path: &str,
        chunk_size: usize,
    ) -> Result<Option<ByteStream>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let layout = Layout::new(&self.base, domain_id);
        let target = layout.content_path(path);
        let (root, rel) = (layout.content.clone(), path.to_owned());
        let opened = blocking(domain_id, move || {
            Ok(beneath::open_read(&root, Path::new(&rel)))
        })
        .await?;
        let file = match opened.map(tokio::fs::File::from_std) {
            Ok(f) => f,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(layout.io(&target, e)),
        };
        if file.metadata().await.map(|m| m.is_dir()).unwrap_or(false) {
            return Ok(None);
        }
        let chunk_size = chunk_size.max(1);
        let stream = futures::stream::try_unfold(
            (file, layout, target, false),
            move |(mut file, layout, target, done)| async move {
                if done {
                    return Ok(None);
                }
                let mut buf = vec![0u8; chunk_size];
                let mut filled = 0;
                while filled < chunk_size {
                    let n = file
                        .read(&mut buf[filled..])
                        .await
                        .map_err(|e| layout.io(&target, e))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(None);
                }
                buf.truncate(filled);
                let eof = filled < chunk_size;
                Ok(Some((Bytes::from(buf), (file, layout, target, eof))))
            },
        );
        Ok(Some(stream.boxed()))
    }

    async fn delete_file(&self, domain_id: &str, path: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let h = self.handle(domain_id);
        let p = path.to_owned();
        let (deleted, writes) = blocking(domain_id, move || {
            let mut l = match h.lock(true) {
                Ok(l) => l,
                Err(KnowledgeError::KbNotFound { .. }) => return Ok((false, Vec::new())),
                Err(e) => return Err(e),
            };
            let deleted = match l.commit_delete(&p) {
                Err(KnowledgeError::KbNotFound { .. }) => false,
                other => other?,
            };
            Ok((deleted, std::mem::take(&mut l.writes)))
        })
        .await?;
        self.emit(writes).await;
        Ok(deleted)
    }

    async fn get_file_info(&self, domain_id: &str, path: &str) -> Result<Option<KnowledgeFile>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let p = path.to_owned();
        Ok(self
            .read_synced(domain_id, move |c| c.index.get(&p).cloned())
            .await?
            .flatten())
    }

    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>> {
        validate_domain_id(domain_id)?;
        let h = self.handle(domain_id);
        let prefix = prefix.map(str::to_owned);
        blocking(domain_id, move || {
            let mut l = match h.lock(false) {
                Ok(l) => l,
                Err(KnowledgeError::KbNotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            match l.sync() {
                Ok(c) => Ok(c.index.list(prefix.as_deref())),
                Err(KnowledgeError::KbNotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn set_ingestion_status_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo> {
        validate_domain_id(domain_id)?;
        let paths = self.tenant_paths(domain_id, ctx)?;
        let h = self.handle(domain_id);
        let fsync = self.tuning.fsync;
        let (info, writes) = blocking(domain_id, move || {
            if let Some(paths) = paths {
                let mut l = h.lock(false)?;
                let content = l.sync()?.info.clone();
                let (view, write) = paths.write_status(&update, &content, fsync)?;
                return Ok((view, vec![write]));
            }
            let mut l = h.lock(true)?;
            let record = l.status_record(update)?;
            l.append(std::slice::from_ref(&record))?;
            let info =
                l.cache()
                    .map(|c| c.info.clone())
                    .ok_or_else(|| KnowledgeError::KbNotFound {
                        domain_id: h.layout.domain_id.clone(),
                    })?;
            if l.compaction_due() {
                l.compact()?;
            }
            Ok((info, std::mem::take(&mut l.writes)))
        })
        .await?;
        self.emit(writes).await;
        Ok(info)
    }

    async fn get_state_version_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<String>> {
        validate_domain_id(domain_id)?;
        let Some(paths) = self.tenant_paths(domain_id, ctx)? else {
            return self.read_synced(domain_id, |c| c.token()).await;
        };
        self.read_synced(domain_id, move |_| paths.load().map(|(_, token)| token))
            .await?
            .transpose()
    }

    async fn get_checksum_in(&self, ctx: &TenantContext, domain_id: &str) -> Result<String> {
        validate_domain_id(domain_id)?;
        let paths = self.tenant_paths(domain_id, ctx)?;
        let retention = self.tuning.retention;
        let h = self.handle(domain_id);
        let (id, writes) = blocking(domain_id, move || {
            let mut l = h.lock(false)?;
            let cache = l.sync()?;
            let Some(paths) = paths else {
                let id = l.record_current_snapshot()?;
                return Ok((id, std::mem::take(&mut l.writes)));
            };
            let id = cache.index.identity();
            let write = paths.record_snapshot(&id, || cache.index.snapshot_json(), retention)?;
            Ok((id, write.into_iter().collect()))
        })
        .await?;
        self.emit(writes).await;
        Ok(id)
    }

    async fn list_changes_since_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        version: &str,
    ) -> Result<ChangeSet> {
        validate_domain_id(domain_id)?;
        validate_version(domain_id, version)?;
        let paths = self.tenant_paths(domain_id, ctx)?;
        let retention = self.tuning.retention;
        let h = self.handle(domain_id);
        let v = version.to_owned();
        let d = domain_id.to_owned();
        let (cs, writes) = blocking(domain_id, move || {
            let mut l = h.lock(false)?;
            let cache = l.sync()?;
            let current_id = cache.index.identity();
            if current_id == v {
                return Ok((
                    ChangeSet {
                        version: current_id,
                        ..ChangeSet::default()
                    },
                    Vec::new(),
                ));
            }
            let old = if v.is_empty() {
                Some(identity::Snapshot::new())
            } else {
                // The tenant's lineage first, then the shared one.
                let own = match &paths {
                    Some(p) => p.load_snapshot(&v)?,
                    None => None,
                };
                match own {
                    Some(s) => Some(s),
                    None => l.load_snapshot(&v)?,
                }
            };
            let old = old.ok_or_else(|| KnowledgeError::InvalidVersion {
                domain_id: d.clone(),
                version: v.clone(),
                reason: "no snapshot of this version is retained",
            })?;
            let cache = l.sync()?;
            let cs = identity::diff_sorted(
                cache.index.pairs(),
                old.iter().map(|(p, c)| (p.as_str(), c.as_str())),
                current_id.clone(),
            );
            let writes = match &paths {
                Some(p) => p
                    .record_snapshot(&current_id, || cache.index.snapshot_json(), retention)?
                    .into_iter()
                    .collect(),
                None => {
                    l.record_current_snapshot()?;
                    std::mem::take(&mut l.writes)
                }
            };
            Ok((cs, writes))
        })
        .await?;
        self.emit(writes).await;
        Ok(cs)
    }

    async fn close(&self) -> Result<()> {
        let domains: Vec<String> = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for d in domains {
            match self.compact(&d).await {
                Ok(()) | Err(KnowledgeError::KbNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
