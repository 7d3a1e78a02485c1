//! The S3 backend on `object_store`: the original's key layout under a prefix, the index in
//! `{prefix}{domain}/_metadata.json` plus a journal of small records created with
//! `If-None-Match` ([`journal`]), and in-process group commit so concurrent writers share one
//! record ([`commit`]).
//!
//! Keys: `{prefix}{domain}/content/{path}`, `{prefix}{domain}/_metadata.json`,
//! `{prefix}{domain}/_snapshots/{identity}.json`, the journal and write intents under
//! `{prefix}{domain}/_dynreg/`, and tenant state under `{prefix}_scoped/{tenant prefix}{domain}/`
//! ([`tenant`]). A knowledge base exists when its `_metadata.json` exists. Uploads larger than
//! one part use multipart upload, so memory stays bounded ([`upload`]); downloads stream. Change detection
//! resolves old versions through snapshot objects or, in `s3_versioning` mode, through the
//! bucket's object versions ([`versions`]).
//!
//! An index write costs O(changed files): one journal record; compaction into
//! `_metadata.json` is amortised over `max(64, files / 16)` writes. Each instance caches the
//! index and revalidates it with a conditional GET and a listing of new records, so a read
//! transfers only what changed.
//!
//! Content and index are two objects, so a write records an intent first and a write that
//! died between them is repaired by [`S3KnowledgeBackend::recover`], which `connect` runs: the
//! index is brought back to what is stored ([`intents`]). A batch upload of which some files
//! failed still indexes the files that did upload before it reports the failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions as ObjPutOptions, PutPayload, UpdateVersion,
};

mod commit;
mod config;
mod intents;
mod journal;
mod lineage;
mod tenant;
mod upload;
mod versions;

pub use config::{ChangeDetectionMode, S3Config};

/// The object key `key` as written, byte for byte: unicode, spaces, `%`, `#`, `~`, ... stay
/// themselves, as the original writes them (object_store's `Path::from` would percent-encode
/// them into other keys). Keys here are built from validated ids and paths, which never hold the
/// control characters or `.`/`..` segments a parsed path refuses; should one, it is encoded.
pub(crate) fn obj_path(key: impl AsRef<str>) -> ObjPath {
    let key = key.as_ref();
    ObjPath::parse(key).unwrap_or_else(|_| ObjPath::from(key))
}
pub use intents::INTENT_GRACE;
pub use journal::{JOURNAL_RETENTION, WRITE_WINDOW};

use self::commit::{DomainQueue, Op, OpOutcome, check_batch};
use self::intents::{Deleted, Intent};
use self::journal::KbState;
use crate::KnowledgeBackend;
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateEvents, StateWrite};
use crate::identity::{self, Snapshot, md5_hex};
use crate::index::FileIndex;
use crate::keys::KeyLayout;
use crate::memory::file_entry;
use crate::metadata_doc::metadata_json_doc;
use crate::model::{
    ChangeSet, FileUpload, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions, StatusUpdate,
};
use crate::paths::{validate_domain_id, validate_path, validate_version};
use crate::stream::{ByteStream, rechunk};
use crate::tenant::TenantContext;

/// The cached state of one knowledge base (`None`: not loaded, or gone).
type Slot = Arc<tokio::sync::Mutex<Option<KbState>>>;

/// Knowledge bases in an S3 bucket (or any `object_store`).
pub struct S3KnowledgeBackend {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    layout: KeyLayout,
    mode: ChangeDetectionMode,
    retention: usize,
    intent_grace: Duration,
    journal_retention: Duration,
    queues: Mutex<HashMap<String, Arc<DomainQueue>>>,
    states: Mutex<HashMap<String, Slot>>,
    events: StateEvents,
}

impl std::fmt::Debug for S3KnowledgeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3KnowledgeBackend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("change_detection_mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3KnowledgeBackend {
    /// Connects to S3 (or an S3-compatible endpoint) and checks that the bucket answers.
    pub async fn connect(config: S3Config) -> Result<Self> {
        // The standard AWS chain: environment (`AWS_ACCESS_KEY_ID`, `AWS_SESSION_TOKEN`,
        // `AWS_REGION`, ...), web identity (IRSA) and the ECS task role, unless the config
        // names keys; the region defaults to `AWS_REGION`, else `us-east-1`.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            b = b.with_region(region);
        }
        if let Some(ep) = &config.endpoint_url {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"));
        }
        if let Some(k) = &config.aws_access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &config.aws_secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(k) = &config.aws_session_token {
            b = b.with_token(k);
        }
        // Deadlines: a frozen or unreachable S3 fails a request within `timeout_ms` per
        // attempt and `retry_timeout_ms` in all (set key by key: replacing the client options
        // would drop `allow_http` and what the environment set).
        use object_store::ClientConfigKey as Client;
        use object_store::aws::AmazonS3ConfigKey as Key;
        let ms = |v: Option<u64>, default: u64| v.unwrap_or(default).max(1);
        b = b
            .with_config(
                Key::Client(Client::Timeout),
                format!("{}ms", ms(config.timeout_ms, 30_000)),
            )
            .with_config(
                Key::Client(Client::ConnectTimeout),
                format!("{}ms", ms(config.connect_timeout_ms, 5_000)),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: config
                    .max_retries
                    .map_or(10, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                retry_timeout: Duration::from_millis(ms(config.retry_timeout_ms, 180_000)),
                ..Default::default()
            });
        let store = b.build().map_err(|e| KnowledgeError::Store {
            domain_id: String::new(),
            key: format!("s3://{}", config.bucket),
            source: Box::new(e),
        })?;
        let backend = Self::with_store(
            Arc::new(store),
            &config.bucket,
            &config.prefix,
            config.snapshot_retention,
        )
        .with_change_detection_mode(config.change_detection_mode);
        let probe = obj_path(backend.prefix.trim_end_matches('/'));
        backend
            .store
            .list_with_delimiter(Some(&probe))
            .await
            .map_err(|e| {
                backend.err("", &format!("s3://{}/{}", config.bucket, backend.prefix), e)
            })?;
        backend.recover().await?;
        Ok(backend)
    }

    /// Uses any object store (for example `object_store::memory::InMemory` in tests). Unlike
    /// [`S3KnowledgeBackend::connect`] it does no I/O, so it does not run
    /// [`S3KnowledgeBackend::recover`]: call that before serving.
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        bucket: &str,
        prefix: &str,
        retention: usize,
    ) -> Self {
        let layout = KeyLayout::object(prefix);
        Self {
            store,
            bucket: bucket.to_owned(),
            prefix: layout.root().to_owned(),
            layout,
            mode: ChangeDetectionMode::Snapshot,
            retention: retention.max(1),
            intent_grace: intents::INTENT_GRACE,
            journal_retention: journal::JOURNAL_RETENTION,
            queues: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            events: StateEvents::default(),
        }
    }

    /// Sets how old versions are resolved (default [`ChangeDetectionMode::Snapshot`]).
    pub fn with_change_detection_mode(mut self, mode: ChangeDetectionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets how old a write intent must be before [`S3KnowledgeBackend::recover`] removes it
    /// after repairing (default [`INTENT_GRACE`]; younger ones may belong to a writer that is
    /// still running, and are repaired but kept).
    pub fn with_intent_grace(mut self, grace: Duration) -> Self {
        self.intent_grace = grace;
        self
    }

    /// Sets how long a compacted journal record is kept (default [`JOURNAL_RETENTION`]). It
    /// must exceed the clock difference between the instances writing one bucket; `ZERO`
    /// deletes records at the next compaction and is safe only with a single writing
    /// instance.
    pub fn with_journal_retention(mut self, retention: Duration) -> Self {
        self.journal_retention = retention;
        self
    }

    /// How old versions are resolved.
    pub fn change_detection_mode(&self) -> ChangeDetectionMode {
        self.mode
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The normalised key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn err(&self, domain_id: &str, key: &str, e: object_store::Error) -> KnowledgeError {
        KnowledgeError::Store {
            domain_id: domain_id.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        }
    }

    fn meta_key(&self, d: &str) -> String {
        self.layout.metadata_key(d, "")
    }

    fn content_key(&self, d: &str, path: &str) -> String {
        self.layout.content_key(d, path)
    }

    fn slot(&self, d: &str) -> Slot {
        lock(&self.states).entry(d.to_owned()).or_default().clone()
    }

    /// Runs `f` on the up-to-date state of `d`; `None` if the knowledge base does not exist.
    async fn view<R>(&self, d: &str, f: impl FnOnce(&mut KbState) -> R) -> Result<Option<R>> {
        let mut guard = self.fresh(d).await?;
        Ok(guard.as_mut().map(f))
    }

    /// The up-to-date state of `d`, locked (`None` inside if the knowledge base is gone).
    /// Readers that queued while another revalidated share the revalidation that began after
    /// they arrived, so concurrent reads of one knowledge base cost one round of requests.
    async fn fresh(&self, d: &str) -> Result<tokio::sync::OwnedMutexGuard<Option<KbState>>> {
        let arrived = std::time::Instant::now();
        let mut guard = self.slot(d).lock_owned().await;
        let current = guard
            .as_ref()
            .and_then(|st| st.validated_at)
            .is_some_and(|at| at >= arrived);
        if !current {
            self.refresh(d, &mut guard, true).await?;
        }
        Ok(guard)
    }

    /// [`S3KnowledgeBackend::view`], `KbNotFound` when missing.
    async fn view_required<R>(&self, d: &str, f: impl FnOnce(&mut KbState) -> R) -> Result<R> {
        self.view(d, f)
            .await?
            .ok_or_else(|| KnowledgeError::KbNotFound {
                domain_id: d.to_owned(),
            })
    }

    /// The addressable domain names under the prefix, sorted (one listing with a delimiter).
    async fn domain_names(&self) -> Result<Vec<String>> {
        let prefix = self.prefix.trim_end_matches('/');
        let prefix_path = (!prefix.is_empty()).then(|| obj_path(prefix));
        let listing = self
            .store
            .list_with_delimiter(prefix_path.as_ref())
            .await
            .map_err(|e| self.err("", &self.prefix, e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| {
                let ok = validate_domain_id(n).is_ok();
                // The layout's own tenant root is expected; anything else is reported.
                if !ok && n != crate::names::SCOPED_STATE_ROOT {
                    tracing::warn!(name = %n, "skipping a prefix whose name is not an addressable domain_id (its objects are kept)");
                }
                ok
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn require_kb(&self, d: &str) -> Result<()> {
        let key = self.meta_key(d);
        match self.store.head(&obj_path(key.as_str())).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(KnowledgeError::KbNotFound {
                domain_id: d.to_owned(),
            }),
            Err(e) => Err(self.err(d, &key, e)),
        }
    }
}

#[async_trait]
impl KnowledgeBackend for S3KnowledgeBackend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn state_events(&self) -> &StateEvents {
        &self.events
    }

    fn key_layout(&self) -> &KeyLayout {
        &self.layout
    }

    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo> {
        validate_domain_id(domain_id)?;
        let info = KnowledgeBaseInfo::new(domain_id, metadata);
        let key = self.meta_key(domain_id);
        let head = journal::new_head();
        let index = FileIndex::default();
        let bytes = metadata_json_doc(&info, &index, &[], Some(&head));
        let size = bytes.len();
        let opts = ObjPutOptions {
            mode: PutMode::Create,
            ..ObjPutOptions::default()
        };
        match self
            .store
            .put_opts(&obj_path(key.as_str()), PutPayload::from(bytes), opts)
            .await
        {
            Ok(done) => {
                // This instance now knows the new knowledge base exactly.
                let base_identity =
                    (self.mode == ChangeDetectionMode::S3Versioning).then(String::new);
                *self.slot(domain_id).lock().await = Some(KbState {
                    etag: done.e_tag.clone(),
                    base_version: UpdateVersion {
                        e_tag: done.e_tag,
                        version: done.version,
                    },
                    head: Some(head),
                    applied: 0,
                    info: info.clone(),
                    index,
                    versions: Vec::new(),
                    base_identity,
                    validated_at: None,
                });
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                return Err(KnowledgeError::KbAlreadyExists {
                    domain_id: domain_id.to_owned(),
                });
            }
            Err(e) => return Err(self.err(domain_id, &key, e)),
        }
        self.events
            .emit(StateWrite {
                domain_id: domain_id.to_owned(),
                key,
                kind: KnowledgeKeyKind::Metadata,
                byte_size: size as u64,
                tenant_id: None,
            })
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
        let Some(info) = self.view(domain_id, |st| st.info.clone()).await? else {
            return Ok(None);
        };
        if state.is_empty() {
            return Ok(Some(info));
        }
        self.tenant_view(domain_id, &state, &info).await.map(Some)
    }

    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>> {
        let mut out = Vec::new();
        for n in self.domain_names().await? {
            if let Some(info) = self.view(&n, |st| st.info.clone()).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn delete_kb(&self, domain_id: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        let key = self.meta_key(domain_id);
        // The index goes first: the knowledge base disappears at once for every reader.
        match self.store.head(&obj_path(key.as_str())).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(self.err(domain_id, &key, e)),
        }
        let deleted = self.store.delete(&obj_path(key.as_str())).await;
        *self.slot(domain_id).lock().await = None;
        match deleted {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(self.err(domain_id, &key, e)),
        }
        // Every tenant's state goes too, so a re-created knowledge base starts clean.
        self.remove_tenant_state(domain_id).await?;
        let dir = format!("{}{domain_id}", self.prefix);
        let locations = self
            .store
            .list(Some(&obj_path(dir.as_str())))
            .map_ok(|m| m.location)
            .boxed();
        let deleted: Vec<_> = self
            .store
            .delete_stream(locations)
            .collect::<Vec<_>>()
            .await;
        for r in deleted {
            if let Err(e) = r
                && !is_not_found(&e)
            {
                return Err(self.err(domain_id, &dir, e));
            }
        }
        Ok(true)
    }

    async fn put_stream(
        &self,
        domain_id: &str,
        path: &str,
        content: ByteStream,
        options: PutOptions,
    ) -> Result<KnowledgeFile> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        self.require_kb(domain_id).await?;
        let key = self.content_key(domain_id, path);
        let loc = obj_path(key.as_str());
        // The checksum is known only once the stream has been read: recovery recomputes it.
        let planned = file_entry(path, 0, String::new(), options.clone());
        let intent = self
            .record_intent(
                domain_id,
                &Intent {
                    puts: vec![planned],
                    deletes: Vec::new(),
                },
            )
            .await?;
        let (size, checksum) = match self.upload_stream(domain_id, &key, &loc, content).await {
            Ok(done) => done,
            Err(e) => {
                // A failed PUT or an aborted multipart upload replaced nothing.
                self.intent_done(domain_id, intent).await;
                return Err(e);
            }
        };
        let entry = file_entry(path, size, checksum, options);
        let outcome = self.submit(domain_id, Op::Put(vec![entry])).await?;
        self.intent_done(domain_id, intent).await;
        match outcome {
            OpOutcome::Put(mut v) => v.pop().ok_or_else(|| KnowledgeError::FileNotFound {
                domain_id: domain_id.to_owned(),
                path: path.to_owned(),
            }),
            _ => Err(KnowledgeError::Task {
                domain_id: domain_id.to_owned(),
                reason: "unexpected commit outcome".into(),
            }),
        }
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
        // Check that the knowledge base exists, and conflicts, before uploading anything, so a
        // refused batch writes nothing.
        self.view_required(domain_id, |st| {
            check_batch(
                domain_id,
                &st.index,
                uploads.iter().map(|u| u.path.as_str()),
            )
        })
        .await??;
        // Duplicate paths: only the last upload of a path is sent.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, u) in uploads.iter().enumerate() {
            last.insert(u.path.clone(), i);
        }
        let mut entries = Vec::with_capacity(uploads.len());
        let mut sends = Vec::new();
        for (i, u) in uploads.into_iter().enumerate() {
            let size = u.content.len() as u64;
            let entry = file_entry(&u.path, size, md5_hex(&u.content), u.options);
            if last.get(&entry.path) == Some(&i) {
                sends.push((entries.len(), u.content));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Ok(entries);
        }
        let planned: Vec<KnowledgeFile> = sends.iter().map(|(i, _)| entries[*i].clone()).collect();
        let intent = self
            .record_intent(
                domain_id,
                &Intent {
                    puts: planned,
                    deletes: Vec::new(),
                },
            )
            .await?;
        let jobs = sends.into_iter().map(|(i, content)| {
            let path = &entries[i].path;
            async move { (i, self.upload_small(domain_id, path, content).await) }
        });
        let done: Vec<(usize, Result<()>)> = futures::stream::iter(jobs)
            .buffer_unordered(8)
            .collect()
            .await;
        let mut failed = None;
        let mut uploaded = Vec::new();
        for (i, r) in done {
            match r {
                Ok(()) => uploaded.push(i),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            // What did upload replaced its objects: index it, so the index keeps matching the
            // content, then report the failure.
            uploaded.sort_unstable();
            let landed: Vec<KnowledgeFile> = uploaded.iter().map(|i| entries[*i].clone()).collect();
            if !landed.is_empty() {
                self.submit(domain_id, Op::Put(landed)).await?;
            }
            self.intent_done(domain_id, intent).await;
            return Err(e);
        }
        let outcome = self.submit(domain_id, Op::Put(entries)).await?;
        self.intent_done(domain_id, intent).await;
        match outcome {
            OpOutcome::Put(v) => Ok(v),
            _ => Err(KnowledgeError::Task {
                domain_id: domain_id.to_owned(),
                reason: "unexpected commit outcome".into(),
            }),
        }
    }

    async fn get_file(&self, domain_id: &str, path: &str) -> Result<Option<Bytes>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let key = self.content_key(domain_id, path);
        match self.store.get(&obj_path(key.as_str())).await {
            Ok(g) => Ok(Some(
                g.bytes().await.map_err(|e| self.err(domain_id, &key, e))?,
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err(domain_id, &key, e)),
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
        let key = self.content_key(domain_id, path);
        let got = match self.store.get(&obj_path(key.as_str())).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.err(domain_id, &key, e)),
        };
        let d = domain_id.to_owned();
        let raw: ByteStream = got
            .into_stream()
            .map_err(move |e| KnowledgeError::Store {
                domain_id: d.clone(),
                key: key.clone(),
                source: Box::new(e),
            })
            .boxed();
        Ok(Some(rechunk(raw, chunk_size)))
    }

    async fn delete_file(&self, domain_id: &str, path: &str) -> Result<bool> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        let Some(checksum) = self
            .view(domain_id, |st| {
                st.index.get(path).map(|f| f.checksum.clone())
            })
            .await?
            .flatten()
        else {
            return Ok(false);
        };
        let intent = self
            .record_intent(
                domain_id,
                &Intent {
                    puts: Vec::new(),
                    deletes: vec![Deleted {
                        path: path.to_owned(),
                        checksum,
                    }],
                },
            )
            .await?;
        // The index first (the file disappears for every reader at once), then the content.
        // The intent stays unless both happened: a commit that failed may have landed unseen,
        // and a content object left behind is recovery's to delete.
        let outcome = self.submit(domain_id, Op::Delete(path.to_owned())).await;
        if let Ok(OpOutcome::Delete(false)) = outcome {
            self.intent_done(domain_id, intent).await; // deleted by someone else meanwhile
        } else if let Ok(OpOutcome::Delete(true)) = outcome {
            let key = self.content_key(domain_id, path);
            match self.store.delete(&obj_path(key.as_str())).await {
                Err(e) if !is_not_found(&e) => {
                    tracing::warn!(domain_id, key = %key, error = %e, "content delete failed after the index commit; recovery will retry it");
                }
                _ => self.intent_done(domain_id, intent).await,
            }
        }
        match outcome {
            Ok(OpOutcome::Delete(b)) => Ok(b),
            Ok(_) => Err(KnowledgeError::Task {
                domain_id: domain_id.to_owned(),
                reason: "unexpected commit outcome".into(),
            }),
            Err(KnowledgeError::KbNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get_file_info(&self, domain_id: &str, path: &str) -> Result<Option<KnowledgeFile>> {
        validate_domain_id(domain_id)?;
        validate_path(domain_id, path)?;
        Ok(self
            .view(domain_id, |st| st.index.get(path).cloned())
            .await?
            .flatten())
    }

    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>> {
        validate_domain_id(domain_id)?;
        Ok(self
            .view(domain_id, |st| st.index.list(prefix))
            .await?
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
        if !state.is_empty() {
            return self.tenant_write(domain_id, &state, ctx, &update).await;
        }
        match self.submit(domain_id, Op::Status(update)).await? {
            OpOutcome::Status(info) => Ok(info),
            _ => Err(KnowledgeError::Task {
                domain_id: domain_id.to_owned(),
                reason: "unexpected commit outcome".into(),
            }),
        }
    }

    async fn get_state_version_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<String>> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        let Some(token) = self.view(domain_id, |st| st.token()).await? else {
            return Ok(None);
        };
        if state.is_empty() {
            return Ok(Some(token));
        }
        self.tenant_token(domain_id, &state).await.map(Some)
    }

    async fn get_checksum_in(&self, ctx: &TenantContext, domain_id: &str) -> Result<String> {
        validate_domain_id(domain_id)?;
        let state = ctx.state_prefix(domain_id)?;
        let mut guard = self.fresh(domain_id).await?;
        let st = required(domain_id, &mut guard)?;
        let id = st.index.identity();
        self.retain(domain_id, &id, &st.index, &state, ctx).await?;
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
        let mut guard = self.fresh(domain_id).await?;
        let st = required(domain_id, &mut guard)?;
        let current_id = st.index.identity();
        if current_id == version {
            return Ok(ChangeSet {
                version: current_id,
                ..ChangeSet::default()
            });
        }
        let old: Snapshot = if version.is_empty() {
            Snapshot::new()
        } else {
            self.resolve(domain_id, version, &state, &st.versions)
                .await?
        };
        self.retain(domain_id, &current_id, &st.index, &state, ctx)
            .await?;
        Ok(identity::diff_sorted(
            st.index.pairs(),
            old.iter().map(|(p, c)| (p.as_str(), c.as_str())),
            current_id,
        ))
    }

    /// Compacts the journal of every knowledge base this instance has touched, so the
    /// original (which reads only `_metadata.json`) sees every write.
    async fn close(&self) -> Result<()> {
        let mut domains: Vec<String> = lock(&self.states).keys().cloned().collect();
        domains.sort();
        for d in domains {
            match self.compact(&d).await {
                Ok(()) | Err(KnowledgeError::KbNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The state in `guard`, `KbNotFound` if there is none.
fn required<'g>(d: &str, guard: &'g mut Option<KbState>) -> Result<&'g mut KbState> {
    guard.as_mut().ok_or_else(|| KnowledgeError::KbNotFound {
        domain_id: d.to_owned(),
    })
}

/// Collects a stream into memory (used only by tests of this module).
#[cfg(test)]
async fn collect_all(mut s: ByteStream) -> Result<Bytes> {
    let mut b = bytes::BytesMut::new();
    while let Some(c) = s.next().await {
        b.extend_from_slice(&c?);
    }
    Ok(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KnowledgeBackendExt;

    #[test]
    fn prefix_is_normalised_like_the_original() {
        let p = |s: &str| KeyLayout::object(s).root().to_owned();
        assert_eq!(p("knowledge"), "knowledge/");
        assert_eq!(p("kb///"), "kb/");
        assert_eq!(p(""), "");
        assert_eq!(p("/"), "");
    }

    #[tokio::test]
    async fn keys_follow_the_original_layout() {
        let b = S3KnowledgeBackend::with_store(
            Arc::new(object_store::memory::InMemory::new()),
            "bucket",
            "kb",
            4,
        );
        assert_eq!(
            b.content_key("acme", "docs/a.md"),
            "kb/acme/content/docs/a.md"
        );
        assert_eq!(b.meta_key("acme"), "kb/acme/_metadata.json");
        assert_eq!(
            b.layout.snapshot_key("acme", "v", ""),
            "kb/acme/_snapshots/v.json"
        );
        b.create_kb("acme", Metadata::new()).await.unwrap();
        b.put_file(
            "acme",
            "a.md",
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let raw = b
            .store
            .get(&obj_path("kb/acme/content/a.md"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(raw.as_ref(), b"x");
        let s = b.stream_file("acme", "a.md", 1).await.unwrap().unwrap();
        assert_eq!(collect_all(s).await.unwrap().as_ref(), b"x");
    }
}
