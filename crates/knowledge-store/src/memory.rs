//! The in-memory backend: for tests and single-process use. Clones share one store, so two
//! clones behave like two instances on one storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateEvents, StateWrite};
use crate::identity::{self, md5_hex};
use crate::index::FileIndex;
use crate::keys::KeyLayout;
use crate::model::{
    ChangeSet, FileUpload, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions, StatusUpdate,
};
use crate::paths::{validate_domain_id, validate_path, validate_version};
use crate::snapshots::{DEFAULT_SNAPSHOT_RETENTION, SnapshotRing};
use crate::stream::{ByteStream, bytes_stream};
use crate::tenant::TenantContext;
use crate::tenant_state::TenantState;
use crate::{KnowledgeBackend, KnowledgeBackendExt, guess_content_type, pytime};

/// Knowledge bases held in process memory.
#[derive(Debug, Clone)]
pub struct MemoryKnowledgeBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kbs: Mutex<BTreeMap<String, Arc<Mutex<MemKb>>>>,
    retention: usize,
    events: StateEvents,
    layout: KeyLayout,
}

/// Retained snapshots: the index entries at each identity, shared with the index.
type Snapshots = SnapshotRing<Vec<Arc<KnowledgeFile>>>;

#[derive(Debug)]
struct MemKb {
    info: KnowledgeBaseInfo,
    index: FileIndex,
    contents: HashMap<String, Bytes>,
    snapshots: Snapshots,
    state_seq: u64,
    /// Tenant state by state prefix (`_scoped/…/`); dropped with the knowledge base.
    tenants: HashMap<String, MemTenant>,
    deleted: bool,
}

/// One tenant's state of one knowledge base.
#[derive(Debug)]
struct MemTenant {
    state: TenantState,
    /// The tenant's state token: 0 until its first status write, +1 per write.
    seq: u64,
    snapshots: Snapshots,
}

impl MemKb {
    fn live(&self) -> Result<()> {
        if self.deleted {
            return Err(KnowledgeError::KbNotFound {
                domain_id: self.info.domain_id.clone(),
            });
        }
        Ok(())
    }

    /// The tenant entry of `state` (created empty on first use).
    fn tenant(&mut self, state: &str, retention: usize) -> &mut MemTenant {
        self.tenants
            .entry(state.to_owned())
            .or_insert_with(|| MemTenant {
                state: TenantState::default(),
                seq: 0,
                snapshots: SnapshotRing::new(retention),
            })
    }

    /// The snapshot lineage of `state` (`""`: the shared one).
    fn lineage(&mut self, state: &str, retention: usize) -> &mut Snapshots {
        if state.is_empty() {
            &mut self.snapshots
        } else {
            &mut self.tenant(state, retention).snapshots
        }
    }
}

impl Default for MemoryKnowledgeBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds the index entry of an upload.
pub(crate) fn file_entry(
    path: &str,
    size: u64,
    checksum: String,
    options: PutOptions,
) -> KnowledgeFile {
    KnowledgeFile {
        path: path.to_owned(),
        content_type: options
            .content_type
            .unwrap_or_else(|| guess_content_type(path).to_owned()),
        size_bytes: size,
        checksum,
        uploaded_at: pytime::now(),
        metadata: options.metadata,
    }
}

impl MemoryKnowledgeBackend {
    /// An empty store keeping [`DEFAULT_SNAPSHOT_RETENTION`] snapshots per knowledge base.
    pub fn new() -> Self {
        Self::with_retention(DEFAULT_SNAPSHOT_RETENTION)
    }

    /// An empty store keeping `retention` snapshots per knowledge base.
    pub fn with_retention(retention: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                kbs: Mutex::new(BTreeMap::new()),
                retention,
                events: StateEvents::default(),
                layout: KeyLayout::object(""),
            }),
        }
    }

    fn kb(&self, domain_id: &str) -> Option<Arc<Mutex<MemKb>>> {
        lock(&self.inner.kbs).get(domain_id).cloned()
    }

    fn kb_required(&self, domain_id: &str) -> Result<Arc<Mutex<MemKb>>> {
        self.kb(domain_id)
            .ok_or_else(|| KnowledgeError::KbNotFound {
                domain_id: domain_id.to_owned(),
            })
    }

    fn metadata_write(&self, domain_id: &str, byte_size: usize) -> StateWrite {
        self.tenant_metadata_write(domain_id, "", None, byte_size)
    }

    fn tenant_metadata_write(
        &self,
        domain_id: &str,
        state: &str,
        ctx: Option<&TenantContext>,
        byte_size: usize,
    ) -> StateWrite {
        StateWrite {
            domain_id: domain_id.to_owned(),
            key: self.inner.layout.metadata_key(domain_id, state),
            kind: KnowledgeKeyKind::Metadata,
            byte_size: byte_size as u64,
            tenant_id: ctx.and_then(|c| c.tenant_id()).map(str::to_owned),
        }
    }

    /// Applies validated uploads under the knowledge base's lock.
    fn apply_puts(
        &self,
        domain_id: &str,
        entries: Vec<(KnowledgeFile, Bytes)>,
    ) -> Result<(Vec<KnowledgeFile>, usize)> {
        let kb = self.kb_required(domain_id)?;
        let mut g = lock(&kb);
        if g.deleted {
            return Err(KnowledgeError::KbNotFound {
                domain_id: domain_id.to_owned(),
            });
        }
        // Check every path against the index and the batch before changing anything.
        let mut staged = FileIndex::default();
        for (f, _) in &entries {
            if g.index.get(&f.path).is_none() {
                g.index.check_conflict(domain_id, &f.path)?;
            }
            if staged.get(&f.path).is_none() {
                staged.check_conflict(domain_id, &f.path)?;
            }
            staged.insert(f.clone());
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut written = 0;
        for (f, bytes) in entries {
            written += serde_json::to_vec(&f).map(|v| v.len()).unwrap_or(0);
            g.contents.insert(f.path.clone(), bytes);
            g.index.insert(f.clone());
            g.info.increment_version();
            out.push(f);
        }
        g.info.file_count = g.index.len() as u64;
        g.info.total_size_bytes = g.index.total_size();
        g.info.last_updated = pytime::now();
        g.state_seq += 1;
        Ok((out, written))
    }

    /// Retains the current snapshot under `version` in `ctx`'s lineage; the write to report,
    /// if it was not retained yet.
    fn record_snapshot(
        &self,
        g: &mut MemKb,
        version: &str,
        state: &str,
        ctx: &TenantContext,
    ) -> Option<StateWrite> {
        if version.is_empty() || g.lineage(state, self.inner.retention).contains(version) {
            return None;
        }
        let snap = g.index.entries();
        // What the snapshot document would weigh: `{"path": "checksum", ...}`.
        let size = 2 + snap
            .iter()
            .map(|f| f.path.len() + f.checksum.len() + 8)
            .sum::<usize>()
            - if snap.is_empty() { 0 } else { 2 };
        g.lineage(state, self.inner.retention)
            .record(version.to_owned(), Arc::new(snap));
        Some(StateWrite {
            domain_id: g.info.domain_id.clone(),
            key: self
                .inner
                .layout
                .snapshot_key(&g.info.domain_id, version, state),
            kind: KnowledgeKeyKind::Snapshot,
            byte_size: size as u64,
            tenant_id: ctx.tenant_id().map(str::to_owned),
        })
    }
}

#[async_trait]
impl KnowledgeBackend for MemoryKnowledgeBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn state_events(&self) -> &StateEvents {
        &self.inner.events
    }

    fn key_layout(&self) -> &KeyLayout {
        &self.inner.layout
    }

    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo> {
        validate_domain_id(domain_id)?;
        let info = KnowledgeBaseInfo::new(domain_id, metadata);
        {
            let mut kbs = lock(&self.inner.kbs);
            if kbs.contains_key(domain_id) {
                return Err(KnowledgeError::KbAlreadyExists {
                    domain_id: domain_id.to_owned(),
                });
            }
            kbs.insert(
                domain_id.to_owned(),
                Arc::new(Mutex::new(MemKb {
                    info: info.clone(),
                    index: FileIndex::default(),
                    contents: HashMap::new(),
                    snapshots: SnapshotRing::new(self.inner.retention),
                    state_seq: 0,
                    tenants: HashMap::new(),
                    deleted: false,
                })),
            );
        }
        let size = serde_json::to_vec(&info).map(|v| v.len()).unwrap_or(0);
        self.inner
            .events
            .emit(self.metadata_write(domain_id, size))
            .await;
        Ok(info)
    }

    async fn get_info_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<KnowledgeBaseInfo>> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        Ok(self.kb(domain_id).map(|kb| {
            let g = lock(&kb);
            if state.is_empty() {
                return g.info.clone();
            }
            match g.tenants.get(&state) {
                Some(t) => t.state.view(&g.info),
                None => TenantState::default().view(&g.info),
            }
        }))
    }

    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>> {
        let kbs: Vec<_> = lock(&self.inner.kbs).values().cloned().collect();
        Ok(kbs.iter().map(|kb| lock(kb).info.clone()).collect())
    }

    async fn delete_kb(&self, domain_id: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        let removed = lock(&self.inner.kbs).remove(domain_id);
        match removed {
            Some(kb) => {
                lock(&kb).deleted = true;
                Ok(true)
            }
            None => Ok(false),
        }
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
        self.kb_required(domain_id)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = content.next().await {
            buf.extend_from_slice(&chunk?);
        }
        self.put_file(domain_id, path, buf.freeze(), options).await
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
        let entries: Vec<_> = uploads
            .into_iter()
            .map(|u| {
                let checksum = md5_hex(&u.content);
                let f = file_entry(&u.path, u.content.len() as u64, checksum, u.options);
                (f, u.content)
            })
            .collect();
        let (out, written) = self.apply_puts(domain_id, entries)?;
        self.inner
            .events
            .emit(self.metadata_write(domain_id, written))
            .await;
        Ok(out)
    }

    async fn get_file(&self, domain_id: &str, path: &str) -> Result<Option<Bytes>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        Ok(self
            .kb(domain_id)
            .and_then(|kb| lock(&kb).contents.get(path).cloned()))
    }

    async fn stream_file(
        &self,
        domain_id: &str,
        path: &str,
        chunk_size: usize,
    ) -> Result<Option<ByteStream>> {
        Ok(self
            .get_file(domain_id, path)
            .await?
            .map(|b| bytes_stream(b, chunk_size)))
    }

    async fn delete_file(&self, domain_id: &str, path: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let Some(kb) = self.kb(domain_id) else {
            return Ok(false);
        };
        let size = {
            let mut g = lock(&kb);
            if g.deleted || g.index.remove(path).is_none() {
                return Ok(false);
            }
            g.contents.remove(path);
            g.info.file_count = g.index.len() as u64;
            g.info.total_size_bytes = g.index.total_size();
            g.info.last_updated = pytime::now();
            g.info.increment_version();
            g.state_seq += 1;
            path.len() + 32
        };
        self.inner
            .events
            .emit(self.metadata_write(domain_id, size))
            .await;
        Ok(true)
    }

    async fn get_file_info(&self, domain_id: &str, path: &str) -> Result<Option<KnowledgeFile>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        Ok(self
            .kb(domain_id)
            .and_then(|kb| lock(&kb).index.get(path).cloned()))
    }

    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>> {
        validate_domain_id(domain_id)?;
        Ok(self
            .kb(domain_id)
            .map(|kb| lock(&kb).index.list(prefix))
            .unwrap_or_default())
    }

    async fn set_ingestion_status_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        let kb = self.kb_required(domain_id)?;
        let retention = self.inner.retention;
        let (info, size) = {
            let mut g = lock(&kb);
            g.live()?;
            let actual = if state.is_empty() {
                g.state_seq
            } else {
                g.tenants.get(&state).map_or(0, |t| t.seq)
            };
            if let Some(expected) = &update.expected_version
                && &actual.to_string() != expected
            {
                return Err(KnowledgeError::Conflict {
                    domain_id: domain_id.to_owned(),
                    key: self.inner.layout.metadata_key(domain_id, &state),
                    expected_version: expected.clone(),
                    actual_version: Some(actual.to_string()),
                });
            }
            if state.is_empty() {
                g.info.ingestion_status = update.status;
                g.info.last_updated = pytime::now();
                g.info.ingestion_error = update.error;
                g.info.generation = update.generation;
                if update.vector_store_path.is_some() {
                    g.info.vector_store_path = update.vector_store_path;
                }
                g.state_seq += 1;
                let info = g.info.clone();
                let size = serde_json::to_vec(&info).map(|v| v.len()).unwrap_or(0);
                (info, size)
            } else {
                let content = g.info.clone();
                let t = g.tenant(&state, retention);
                t.state.apply(&update);
                t.seq += 1;
                (t.state.view(&content), t.state.to_doc(&content).len())
            }
        };
        let write = self.tenant_metadata_write(domain_id, &state, Some(ctx), size);
        self.inner.events.emit(write).await;
        Ok(info)
    }

    async fn get_state_version_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<String>> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        Ok(self.kb(domain_id).map(|kb| {
            let g = lock(&kb);
            let seq = if state.is_empty() {
                g.state_seq
            } else {
                g.tenants.get(&state).map_or(0, |t| t.seq)
            };
            seq.to_string()
        }))
    }

    async fn get_checksum_in(&self, ctx: &TenantContext, domain_id: &str) -> Result<String> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        let kb = self.kb_required(domain_id)?;
        let (id, write) = {
            let mut g = lock(&kb);
            let id = g.index.identity();
            let write = self.record_snapshot(&mut g, &id, &state, ctx);
            (id, write)
        };
        if let Some(w) = write {
            self.inner.events.emit(w).await;
        }
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
        let state = ctx.state_prefix(domain_id)?;
        let kb = self.kb_required(domain_id)?;
        let retention = self.inner.retention;
        let (cs, write) = {
            let mut g = lock(&kb);
            let current_id = g.index.identity();
            if current_id == version {
                return Ok(ChangeSet {
                    version: current_id,
                    ..ChangeSet::default()
                });
            }
            let old: Arc<Vec<Arc<KnowledgeFile>>> = if version.is_empty() {
                Arc::default()
            } else {
                // The tenant's lineage first, then the shared one.
                let own = g.lineage(&state, retention).get(version);
                own.or_else(|| g.snapshots.get(version)).ok_or_else(|| {
                    KnowledgeError::InvalidVersion {
                        domain_id: domain_id.to_owned(),
                        version: version.to_owned(),
                        reason: "no snapshot of this version is retained",
                    }
                })?
            };
            let cs = identity::diff_sorted(
                g.index.pairs(),
                old.iter().map(|f| (f.path.as_str(), f.checksum.as_str())),
                current_id.clone(),
            );
            let write = self.record_snapshot(&mut g, &current_id, &state, ctx);
            (cs, write)
        };
        if let Some(w) = write {
            self.inner.events.emit(w).await;
        }
        Ok(cs)
    }
}
