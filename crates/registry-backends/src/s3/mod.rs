//! `S3Backend`: a registry in an S3 bucket (or any S3-compatible store with conditional PUTs),
//! safe for many processes.
//!
//! Objects under the prefix:
//! - `bots/<name>.json`: one document per bot id, the wire JSON of a registration, or a
//!   tombstone `{"bot_id", "revision", "deleted": true}` after a removal (documents are only
//!   ever replaced by compare-and-swap, never deleted, so a slow writer can never remove a newer
//!   document);
//! - `_registry/log/<rev, 20 digits>.json`: one record per committed write, holding the full
//!   document of a put;
//! - `_registry/head.json`: `{revision, horizon}`, every record up to `revision` is applied
//!   to the documents, records up to `horizon` may have been compacted away.
//!
//! **A write** reads the head, lists the log records after it and applies them (idempotent
//! compare-and-swap on each document: only a higher revision replaces a document), reads the
//! target document, checks the write condition and plans the new state at revision
//! `latest + 1`, then commits by creating `log/<latest + 1>` with `If-None-Match: *`. Exactly
//! one writer can create a given revision, and it can only do so after seeing the record
//! before it, so revisions are unique, gap-free and become visible in revision order: a reader
//! listing the log never sees revision `n + 1` without `n`. A writer that loses the race
//! re-reads and re-checks its condition (a `Conflict` if it no longer holds). After its commit
//! the writer applies its document (`If-Match` on the ETag) and advances the head; a writer that
//! dies after committing is finished by the next one.
//!
//! **`changes_since`** lists the log after the cursor (`start-after`, so O(changes)) and
//! answers from the records. Touching reads replace the document with `If-Match`, so a touch
//! can never revert a register.

mod format;
mod keys;
mod log;

use dynreg_registry_core::backend::shared;
use dynreg_registry_core::config_hash;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::backend::{matches_metadata, now, plan_register, validate_write};
use dynreg_registry_core::{
    Change, ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, RegistryError, Result, Status, WriteCondition, validate_bot_id,
};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde_json::{Map, Value};

use crate::config::{S3Config, build_from_json, invalid};
use format::{Doc, Head, LogRecord, Op, corrupt};
use keys::Keys;

const KIND: &str = "s3";
/// Concurrent GETs when reading many objects.
const FETCH_CONCURRENCY: usize = 16;
/// Compaction is considered every this many revisions.
const COMPACT_EVERY: u64 = 64;

/// A registry stored in an S3 bucket (feature `s3`). Clones share one instance.
#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    keys: Keys,
    touch_resolution: Duration,
    log_retention: u64,
    initialized: AtomicBool,
    /// Serialises this instance's writers (they would only race each other for the same
    /// revision); holds the highest revision this instance knows to be applied.
    writer: tokio::sync::Mutex<u64>,
    txn_seed: u64,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3Backend(s3://{}/{:?})",
            self.inner.bucket, self.inner.keys
        )
    }
}

/// What a writer read before committing: the head and the target document's version.
struct Snapshot {
    head: Head,
    head_version: Option<UpdateVersion>,
    doc_version: Option<UpdateVersion>,
}

/// The outcome of a conditional PUT.
enum Put {
    Done,
    /// The precondition failed: someone else wrote first.
    Lost,
}

impl S3Backend {
    /// Builds a backend from its JSON config, read as [`S3Config`]:
    /// - `bucket` (required);
    /// - `prefix` (default `registry/`): the folder of this registry in the bucket;
    /// - `region` (or `region_name`; default `AWS_REGION`, else `us-east-1`);
    /// - `endpoint_url` or `endpoint`: an S3-compatible endpoint (path-style requests);
    /// - `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` (the knowledge
    ///   store's names; `access_key_id`, `secret_access_key` and `session_token` are accepted
    ///   too); without them, the standard AWS credential chain: environment, web identity
    ///   (IRSA), ECS task role;
    /// - `allow_http` (default true when the endpoint is `http://`);
    /// - `touch_resolution_ms` (default 1000): a touching `get` writes `last_accessed_at` only
    ///   when the stored value is at least this old;
    /// - `log_retention` (default 100,000, at least 1): log records kept; older cursors get
    ///   [`ChangeFeed::Expired`].
    ///
    /// The store must support conditional PUTs (`If-None-Match: *` and `If-Match`), as AWS S3,
    /// MinIO, R2 and moto do. See [`crate::config`] for the rules every backend config follows.
    pub fn from_config(config: &Value) -> Result<Self> {
        build_from_json(config, Self::with_config)
    }

    /// Builds a backend from its typed config.
    pub fn with_config(config: S3Config) -> Result<Self> {
        let bucket = config
            .bucket
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid(KIND, "bucket", "is required"))?;
        let keys = Keys::new(&config.prefix).map_err(|r| invalid(KIND, "prefix", r))?;
        // The standard AWS chain: environment (`AWS_ACCESS_KEY_ID`, `AWS_SESSION_TOKEN`,
        // `AWS_REGION`, ...), web identity (IRSA) and the ECS task role, unless the config
        // names keys.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if let Some(region) = config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint_url {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(invalid(
                    KIND,
                    "endpoint_url",
                    format!("{endpoint:?} must start with http:// or https://"),
                ));
            }
            let allow_http = config.allow_http.unwrap_or(endpoint.starts_with("http://"));
            builder = builder.with_endpoint(endpoint).with_allow_http(allow_http);
        } else if let Some(allow_http) = config.allow_http {
            builder = builder.with_allow_http(allow_http);
        }
        if let Some(k) = config.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = config.secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        if let Some(t) = config.session_token {
            builder = builder.with_token(t);
        }
        if config.log_retention == 0 {
            return Err(invalid(KIND, "log_retention", "must be at least 1"));
        }
        // Deadlines: a frozen or unreachable S3 fails a request within `timeout_ms` per
        // attempt and `retry_timeout_ms` in all (set key by key: replacing the client options
        // would drop `allow_http` and what the environment set).
        use object_store::ClientConfigKey as Client;
        use object_store::aws::AmazonS3ConfigKey as Key;
        builder = builder
            .with_config(
                Key::Client(Client::Timeout),
                format!("{}ms", config.timeout_ms.max(1)),
            )
            .with_config(
                Key::Client(Client::ConnectTimeout),
                format!("{}ms", config.connect_timeout_ms.max(1)),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: usize::try_from(config.max_retries).unwrap_or(usize::MAX),
                retry_timeout: Duration::from_millis(config.retry_timeout_ms),
                ..Default::default()
            });
        let store = builder.build().map_err(|e| {
            invalid(
                KIND,
                "endpoint_url",
                format!("cannot build the S3 client: {e}"),
            )
        })?;
        Ok(Self::with_store(
            Arc::new(store),
            bucket,
            keys,
            Duration::from_millis(config.touch_resolution_ms),
            config.log_retention,
        ))
    }

    /// A backend on the application's own object store (any `ObjectStore` that honours
    /// conditional PUTs: `If-None-Match: *` and `If-Match`), under `prefix` of `bucket` (the
    /// bucket name is used in errors). Default touch resolution and log retention. Call
    /// `initialize` before use.
    pub fn from_store(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str) -> Result<Self> {
        let keys = Keys::new(prefix).map_err(|r| invalid(KIND, "prefix", r))?;
        Ok(Self::with_store(
            store,
            bucket.to_owned(),
            keys,
            crate::config::DEFAULT_TOUCH_RESOLUTION,
            crate::config::DEFAULT_TOMBSTONE_RETENTION,
        ))
    }

    fn with_store(
        store: Arc<dyn ObjectStore>,
        bucket: String,
        keys: Keys,
        touch_resolution: Duration,
        log_retention: u64,
    ) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let txn_seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        S3Backend {
            inner: Arc::new(Inner {
                store,
                bucket,
                keys,
                touch_resolution,
                log_retention,
                initialized: AtomicBool::new(false),
                writer: tokio::sync::Mutex::new(0),
                txn_seed,
            }),
        }
    }

    fn inner(&self) -> Result<&Inner> {
        if self.inner.initialized.load(Ordering::Acquire) {
            Ok(&self.inner)
        } else {
            Err(RegistryError::NotInitialized { backend: KIND })
        }
    }
}

fn storage(operation: &'static str, bot_id: Option<&str>, e: object_store::Error) -> RegistryError {
    RegistryError::storage(KIND, operation, bot_id, e)
}

impl Inner {
    fn location(&self, path: &Path) -> String {
        format!("s3://{}/{}", self.bucket, path)
    }

    fn txn_token(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "{:016x}-{:x}",
            self.txn_seed,
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn get_bytes(
        &self,
        path: &Path,
        operation: &'static str,
        bot_id: Option<&str>,
    ) -> Result<Option<(bytes::Bytes, UpdateVersion)>> {
        let result = match self.store.get(path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage(operation, bot_id, e)),
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        match result.bytes().await {
            Ok(b) => Ok(Some((b, version))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage(operation, bot_id, e)),
        }
    }

    async fn put(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        mode: PutMode,
        operation: &'static str,
        bot_id: Option<&str>,
    ) -> Result<Put> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Put::Done),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(Put::Lost),
            Err(e) => Err(storage(operation, bot_id, e)),
        }
    }

    fn mode(version: Option<UpdateVersion>) -> PutMode {
        version.map_or(PutMode::Create, PutMode::Update)
    }

    async fn read_doc(
        &self,
        bot_id: &str,
        operation: &'static str,
    ) -> Result<Option<(Doc, UpdateVersion)>> {
        let path = self.keys.doc(bot_id);
        let Some((bytes, version)) = self.get_bytes(&path, operation, Some(bot_id)).await? else {
            return Ok(None);
        };
        Ok(Some((
            Doc::parse(&self.location(&path), &bytes, Some(bot_id))?,
            version,
        )))
    }

    /// Every live registration.
    async fn read_all(&self, operation: &'static str) -> Result<Vec<Registration>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.keys.bots()))
            .try_collect()
            .await
            .map_err(|e| storage(operation, None, e))?;
        let docs: Vec<Option<Registration>> = futures::stream::iter(metas)
            .map(|m| async move {
                let Some((bytes, _)) = self.get_bytes(&m.location, operation, None).await? else {
                    return Ok(None);
                };
                let location = self.location(&m.location);
                let doc = Doc::parse(&location, &bytes, None)?;
                if let Doc::Live(reg) = &doc
                    && Some(keys::doc_name(&reg.bot_id).as_str()) != m.location.filename()
                {
                    return Err(corrupt(
                        &location,
                        format!(
                            "holds bot id {:?}, which belongs in another object",
                            reg.bot_id
                        ),
                    ));
                }
                Ok(doc.live())
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(docs.into_iter().flatten().collect())
    }

    /// Removes `bot_id`; `false` if it does not exist.
    /// Deletes `bot_id` (only at `expected`, when given: else a conflict).
    async fn remove(&self, known: &mut u64, bot_id: &str, expected: Option<u64>) -> Result<bool> {
        loop {
            let (latest, current, snapshot) = self.begin(known, bot_id).await?;
            if let Some(expected) = expected {
                WriteCondition::Revision(expected)
                    .check(bot_id, current.as_ref().map(|r| r.revision))?;
            }
            if current.is_none() {
                return Ok(false);
            }
            let rec = LogRecord {
                rev: latest + 1,
                op: Op::Del,
                id: bot_id.to_owned(),
                txn: self.txn_token(),
                doc: None,
            };
            if self.commit(known, rec, snapshot).await? {
                return Ok(true);
            }
        }
    }

    fn put_record(&self, reg: &Registration) -> LogRecord {
        LogRecord {
            rev: reg.revision,
            op: Op::Put,
            id: reg.bot_id.clone(),
            txn: self.txn_token(),
            doc: Some(reg.to_json()),
        }
    }
}

#[async_trait]
impl RegistryBackend for S3Backend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn initialize(&self) -> Result<()> {
        // Reaches the bucket (a missing bucket or bad credentials fail here) and finishes any
        // write a dead process left committed but unapplied.
        let mut known = self.inner.writer.lock().await;
        *known = self.inner.catch_up(*known).await?.0;
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
        let inner = self.inner()?;
        if options.condition != WriteCondition::Any {
            // A committed state that fails the condition is a valid moment to fail at: check
            // the document first, so a doomed compare-and-swap costs one GET and no queueing.
            let current = inner
                .read_doc(bot_id, "register")
                .await?
                .and_then(|(d, _)| d.live());
            options
                .condition
                .check(bot_id, current.map(|c| c.revision))?;
        }
        let mut known = inner.writer.lock().await;
        loop {
            let (latest, current, snapshot) = inner.begin(&mut known, bot_id).await?;
            options
                .condition
                .check(bot_id, current.as_ref().map(|c| c.revision))?;
            let Some(reg) = plan_register(
                bot_id,
                config.clone(),
                hash.clone(),
                &options,
                current.as_ref(),
                latest + 1,
            ) else {
                return Ok(Registered::unchanged(
                    current.expect("no-op plans only exist for present ids"),
                ));
            };
            if inner
                .commit(&mut known, inner.put_record(&reg), snapshot)
                .await?
            {
                return Ok(Registered::written(reg, current.is_some()));
            }
        }
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let inner = self.inner()?;
        let path = inner.keys.doc(bot_id);
        let mut last = None;
        // A touch replaces the document only if it is unchanged since read (If-Match), so it can
        // never revert a register; a lost race re-reads, a few times at most.
        for _ in 0..3 {
            let Some((Doc::Live(reg), version)) = inner.read_doc(bot_id, "get").await? else {
                return Ok(None);
            };
            let age = now()
                .signed_duration_since(reg.last_accessed_at)
                .to_std()
                .unwrap_or_default();
            if age < inner.touch_resolution {
                return Ok(Some(reg));
            }
            let mut touched = reg.clone();
            touched.last_accessed_at = now();
            let bytes = serde_json::to_vec(&touched.to_json()).expect("a registration serialises");
            if let Put::Done = inner
                .put(
                    &path,
                    bytes,
                    PutMode::Update(version),
                    "touch",
                    Some(bot_id),
                )
                .await?
            {
                return Ok(Some(touched));
            }
            last = Some(reg);
        }
        Ok(last)
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let inner = self.inner()?;
        Ok(inner
            .read_doc(bot_id, "peek")
            .await?
            .and_then(|(d, _)| d.live()))
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        validate_bot_id(bot_id)?;
        let inner = self.inner()?;
        let mut known = inner.writer.lock().await;
        loop {
            let (latest, current, snapshot) = inner.begin(&mut known, bot_id).await?;
            let Some(mut reg) = current else {
                return Ok(Deactivation::ABSENT);
            };
            if reg.status == Status::Inactive {
                return Ok(Deactivation::UNCHANGED);
            }
            reg.status = Status::Inactive;
            reg.updated_at = now();
            reg.revision = latest + 1;
            if inner
                .commit(&mut known, inner.put_record(&reg), snapshot)
                .await?
            {
                return Ok(Deactivation::at(reg.revision));
            }
        }
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        let inner = self.inner()?;
        let mut known = inner.writer.lock().await;
        inner.remove(&mut known, bot_id, None).await
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        validate_bot_id(bot_id)?;
        let inner = self.inner()?;
        let mut known = inner.writer.lock().await;
        inner
            .remove(&mut known, bot_id, Some(revision))
            .await
            .map(drop)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.list_rows(query).await.map(shared)
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        let inner = self.inner()?;
        Ok(inner
            .read_all("count")
            .await?
            .iter()
            .filter(|r| status.is_none_or(|s| &r.status == s))
            .filter(|r| matches_metadata(r, filter_metadata))
            .count() as u64)
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        let inner = self.inner()?;
        let (head, _) = inner.read_head("changes_since").await?;
        let expired = |oldest_available: u64, current_revision: u64| ChangeFeed::Expired {
            cursor: revision,
            oldest_available,
            current_revision,
        };
        if revision < head.horizon {
            let (latest, head) = inner.latest("changes_since").await?;
            return Ok(expired(head.horizon, latest));
        }
        // List from just before the cursor, so the cursor's own record proves it exists even
        // when the head lags behind it.
        let revs = inner
            .list_log_after(revision.saturating_sub(1), "changes_since")
            .await?;
        let latest = revs.last().copied().unwrap_or(0).max(head.revision);
        if revision > latest {
            return Ok(expired(head.horizon, latest));
        }
        let after: Vec<u64> = revs.into_iter().filter(|r| *r > revision).collect();
        let records = inner.read_records(&after, "changes_since").await?;
        // Compaction moves the horizon before deleting records: if it passed the cursor while
        // we read, some records may be missing.
        let (head2, _) = inner.read_head("changes_since").await?;
        if revision < head2.horizon {
            return Ok(expired(head2.horizon, latest));
        }
        if records.len() != after.len() {
            return Err(corrupt(
                &inner.location(&inner.keys.log_dir()),
                "log records after the horizon are missing",
            ));
        }
        let mut last_of: HashMap<&str, u64> = HashMap::new();
        for rec in &records {
            last_of.insert(&rec.id, rec.rev);
        }
        let mut changes = Vec::new();
        for rec in records.iter().filter(|r| last_of[r.id.as_str()] == r.rev) {
            changes.push(match rec.op {
                Op::Del => Change::Deleted {
                    bot_id: rec.id.clone(),
                    revision: rec.rev,
                },
                Op::Put => {
                    Change::Upsert(rec.registration(&inner.location(&inner.keys.log(rec.rev)))?)
                }
            });
        }
        Ok(ChangeFeed::Changes {
            changes,
            current_revision: latest,
        })
    }

    async fn current_revision(&self) -> Result<u64> {
        let inner = self.inner()?;
        Ok(inner.latest("current_revision").await?.0)
    }

    async fn clear(&self) -> Result<u64> {
        let inner = self.inner()?;
        let mut known = inner.writer.lock().await;
        let mut ids: Vec<String> = inner
            .read_all("clear")
            .await?
            .into_iter()
            .map(|r| r.bot_id)
            .collect();
        ids.sort();
        let mut removed = 0;
        for id in &ids {
            if inner.remove(&mut known, id, None).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl S3Backend {
    /// The rows of a listing, as [`RegistryBackend::list`] returns them (before sharing).
    async fn list_rows(&self, query: &ListQuery) -> Result<Vec<Registration>> {
        query.validate()?;
        let inner = self.inner()?;
        query.apply(inner.read_all("list").await?)
    }
}
