//! The index journal: how an S3 index write costs O(changed files), not O(files).
//!
//! `_metadata.json` stays the original's document, but it is a *base*: it says (in
//! `dynreg_journal`, [`JournalHead`]) which journal it belongs to and the last record folded
//! into it. Every index write after it is one small record,
//! `{prefix}{domain}/_dynreg/journal/{epoch}/{seq:020}.json` (`{"seq", "writer", "info",
//! "changes": [{"op": "put", "file"} | {"op": "delete", "path"}]}`), created with
//! `If-None-Match: *` at the next sequence number. Two writers (two instances) that race for
//! one number: one creates it, the other re-reads and takes the next — no write is lost, and
//! the first record of a sequence number is the only one.
//!
//! The state of a knowledge base is the base plus its records after `seq`, in order. Each
//! backend instance caches it: a read revalidates the base with a conditional GET
//! (`If-None-Match`: a 304, no body, while nothing compacted) and GETs the record after the
//! last one it applied — a 404 when nothing is new; otherwise the rest are listed
//! (`start-after`) and fetched. A write revalidates the base and simply tries the next
//! number, catching up only when another writer took it.
//!
//! **Compaction** folds the records into a new base (`If-Match` on the base's ETag) once
//! `max(64, files / 16)` records have piled up — amortised, each write carries the cost of 16
//! index entries, whatever the size of the knowledge base — and on
//! [`S3KnowledgeBackend::compact`] and `close`. In `s3_versioning` mode it runs after every
//! write, since the bucket's object versions of the base are that mode's history. A
//! compaction that lost the race to another instance's (in that mode, or on `compact`) re-reads
//! and retries until a base covers the write, so every state a writer leaves behind is an
//! object version. A failed compaction loses nothing: the records are still there.
//!
//! **Deleting records** that a base covers is delayed: a record is deleted only once a base
//! covering it was written [`JOURNAL_RETENTION`] ago (the head's `compactions` history, with
//! an entry at most every sixteenth of the retention), and a writer that read the base more
//! than [`WRITE_WINDOW`] (or a quarter of the retention) ago re-reads before it creates a
//! record. The base only moves forward (every base write is a compare-and-swap), so a record a
//! writer creates cannot be one whose number was already deleted — unless instance clocks
//! disagree by more than the retention minus the window.
//!
//! The original reads `_metadata.json` only, so it sees dynreg's writes as of the last
//! compaction. A base without `dynreg_journal` (written by the original) is rewritten whole by
//! the next dynreg write, which starts a new journal.

use super::obj_path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{ChangeDetectionMode, S3KnowledgeBackend, is_not_found, versions};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::index::FileIndex;
use crate::metadata_doc::{JournalHead, VersionEntry, metadata_json_doc, parse_metadata_doc};
use crate::model::{KnowledgeBaseInfo, KnowledgeFile};

/// How long a base must have covered a record, by default, before the record is deleted
/// ([`S3KnowledgeBackend::with_journal_retention`]).
pub const JOURNAL_RETENTION: Duration = Duration::from_secs(3600);
/// A writer whose read of the base is older than this (or than a quarter of the retention)
/// re-reads before creating a record.
pub const WRITE_WINDOW: Duration = Duration::from_secs(60);
/// Compaction is due after `max(COMPACT_MIN_RECORDS, files / COMPACT_FILES_PER_RECORD)`
/// records.
const COMPACT_MIN_RECORDS: u64 = 64;
const COMPACT_FILES_PER_RECORD: u64 = 16;
/// Records fetched concurrently while catching up.
const FETCH_CONCURRENCY: usize = 16;

/// One index write.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub seq: u64,
    /// Random id of the write, so a retried create can tell its own record from another's.
    pub writer: String,
    /// The knowledge base's info after the write (counts are recomputed from the index).
    pub info: KnowledgeBaseInfo,
    pub changes: Vec<Change>,
}

/// One change to the file index, applied in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Change {
    Put { file: KnowledgeFile },
    Delete { path: String },
}

/// What a backend instance knows of one knowledge base: its base and the records applied.
pub(super) struct KbState {
    /// The base's ETag (for `If-None-Match`).
    pub etag: Option<String>,
    /// The base's ETag and VersionId (for `If-Match`, and the `s3_versioning` index).
    pub base_version: UpdateVersion,
    /// `None`: a base without a journal (the original's), rewritten whole by the next write.
    pub head: Option<JournalHead>,
    /// The last record applied (`head.seq` when none is).
    pub applied: u64,
    pub info: KnowledgeBaseInfo,
    pub index: FileIndex,
    /// `s3_versioning`: the base's index of its earlier object versions.
    pub versions: Vec<VersionEntry>,
    /// `s3_versioning`: the identity of the base's own files.
    pub base_identity: Option<String>,
    /// When the last complete revalidation (base and journal) began: a reader that arrived
    /// before then may use the state without revalidating again.
    pub validated_at: Option<Instant>,
}

impl KbState {
    /// The state version token: changes with every write, not with compaction (a base
    /// without a journal: its ETag).
    pub fn token(&self) -> String {
        match &self.head {
            Some(h) => format!("j:{}:{}", h.epoch, self.applied),
            None => self.etag.clone().unwrap_or_default(),
        }
    }

    /// Applies the changes of one record (or of one write being made), returning what each
    /// replaced, for [`KbState::undo`].
    pub fn apply(&mut self, changes: &[Change]) -> Vec<(String, Option<KnowledgeFile>)> {
        changes
            .iter()
            .map(|c| match c {
                Change::Put { file } => (file.path.clone(), self.index.insert(file.clone())),
                Change::Delete { path } => (path.clone(), self.index.remove(path)),
            })
            .collect()
    }

    /// Reverts [`KbState::apply`].
    pub fn undo(&mut self, replaced: Vec<(String, Option<KnowledgeFile>)>) {
        for (path, old) in replaced.into_iter().rev() {
            match old {
                Some(f) => {
                    self.index.insert(f);
                }
                None => {
                    self.index.remove(&path);
                }
            }
        }
    }

    /// Sets `info` and recomputes its counts from the index.
    pub fn set_info(&mut self, mut info: KnowledgeBaseInfo) {
        info.domain_id.clone_from(&self.info.domain_id);
        info.file_count = self.index.len() as u64;
        info.total_size_bytes = self.index.total_size();
        self.info = info;
    }

    /// Whether enough records have piled up to fold them into the base.
    pub fn compaction_due(&self) -> bool {
        self.head.as_ref().is_some_and(|h| {
            let files = self.index.len() as u64;
            self.applied.saturating_sub(h.seq)
                >= COMPACT_MIN_RECORDS.max(files / COMPACT_FILES_PER_RECORD)
        })
    }
}

/// A new journal head (for `create_kb`, and for the first write to a base without one).
pub(super) fn new_head() -> JournalHead {
    JournalHead {
        epoch: format!("{:016x}", rand::random::<u64>()),
        seq: 0,
        pruned: 0,
        compactions: vec![(0, now_ms())],
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The sequence number in a record key's file name.
fn seq_of(location: &ObjPath) -> Option<u64> {
    location.filename()?.strip_suffix(".json")?.parse().ok()
}

/// How a refresh left the cached state.
pub(super) enum Fresh {
    /// The base had not changed since it was cached.
    BaseUnchanged,
    /// The base was (re)loaded, or the knowledge base is gone (`None`).
    BaseLoaded,
}

impl S3KnowledgeBackend {
    /// How old a read of the base may be when a writer creates a record (`None`: no limit,
    /// with a zero retention).
    pub(super) fn write_window(&self) -> Option<Duration> {
        (!self.journal_retention.is_zero()).then(|| (self.journal_retention / 4).min(WRITE_WINDOW))
    }

    fn journal_dir(&self, d: &str, epoch: &str) -> String {
        format!("{}_dynreg/journal/{epoch}", self.layout.domain_root(d))
    }

    pub(super) fn record_key(&self, d: &str, epoch: &str, seq: u64) -> String {
        format!("{}/{seq:020}.json", self.journal_dir(d, epoch))
    }

    /// The state of `d` from a base document just read.
    fn state_from_base(
        &self,
        d: &str,
        key: &str,
        bytes: &[u8],
        version: UpdateVersion,
    ) -> Result<KbState> {
        let doc = parse_metadata_doc(d, key, bytes)?;
        let mut index = doc.index;
        let base_identity = match self.mode {
            ChangeDetectionMode::S3Versioning => Some(index.identity()),
            ChangeDetectionMode::Snapshot => None,
        };
        Ok(KbState {
            etag: version.e_tag.clone(),
            base_version: version,
            applied: doc.journal.as_ref().map_or(0, |h| h.seq),
            head: doc.journal,
            info: doc.info,
            index,
            versions: doc.versions,
            base_identity,
            validated_at: None,
        })
    }

    /// Revalidates the cached base of `d` (a conditional GET); `slot` becomes `None` when the
    /// knowledge base is gone.
    async fn refresh_base(&self, d: &str, slot: &mut Option<KbState>) -> Result<Fresh> {
        let key = self.meta_key(d);
        let opts = GetOptions {
            if_none_match: slot.as_ref().and_then(|s| s.etag.clone()),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&obj_path(key.as_str()), opts).await {
            Ok(g) => g,
            Err(object_store::Error::NotModified { .. }) => return Ok(Fresh::BaseUnchanged),
            Err(e) if is_not_found(&e) => {
                *slot = None;
                return Ok(Fresh::BaseLoaded);
            }
            Err(e) => return Err(self.err(d, &key, e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(d, &key, e))?;
        *slot = Some(self.state_from_base(d, &key, &bytes, version)?);
        Ok(Fresh::BaseLoaded)
    }

    /// Brings the cached state of `d` up to date: the base, and (with `tail`, or when the
    /// base changed) the records after the last one applied. Returns when the base was read.
    pub(super) async fn refresh(
        &self,
        d: &str,
        slot: &mut Option<KbState>,
        tail: bool,
    ) -> Result<Instant> {
        for _ in 0..8 {
            let read_at = Instant::now();
            let fresh = self.refresh_base(d, slot).await?;
            let Some(st) = slot.as_mut() else {
                return Ok(read_at);
            };
            if st.head.is_none() {
                st.validated_at = Some(read_at);
                return Ok(read_at);
            }
            if !tail && matches!(fresh, Fresh::BaseUnchanged) {
                return Ok(read_at);
            }
            if self.apply_tail(d, st).await? {
                st.validated_at = Some(read_at);
                return Ok(read_at);
            }
            // A record was deleted under us: a newer base covers it. Start over from that.
            *slot = None;
        }
        Err(KnowledgeError::Conflict {
            domain_id: d.to_owned(),
            key: self.meta_key(d),
            expected_version: String::new(),
            actual_version: None,
        })
    }

    /// Applies the records after `st.applied`; `false` if one vanished while being read.
    ///
    /// The next record is probed with one GET: usually there is none (nothing was written
    /// since), and a record exists only once its predecessor does, so that ends it. Only when
    /// there is one are the rest listed (`start-after`) and fetched concurrently.
    async fn apply_tail(&self, d: &str, st: &mut KbState) -> Result<bool> {
        let Some(epoch) = st.head.as_ref().map(|h| h.epoch.clone()) else {
            return Ok(true);
        };
        let next = self.record_key(d, &epoch, st.applied + 1);
        let bytes = match self.store.get(&obj_path(next.as_str())).await {
            Ok(g) => g.bytes().await.map_err(|e| self.err(d, &next, e))?,
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(e) => return Err(self.err(d, &next, e)),
        };
        self.apply_record(d, st, &next, &bytes)?;
        let dir = self.journal_dir(d, &epoch);
        let offset = obj_path(self.record_key(d, &epoch, st.applied).as_str());
        let mut found: Vec<(u64, ObjPath)> = self
            .store
            .list_with_offset(Some(&obj_path(dir.as_str())), &offset)
            .map_ok(|m| (seq_of(&m.location), m.location))
            .try_filter_map(|(s, l)| futures::future::ready(Ok(s.map(|s| (s, l)))))
            .try_collect()
            .await
            .map_err(|e| self.err(d, &dir, e))?;
        found.sort_unstable_by_key(|(s, _)| *s);
        let next: Vec<ObjPath> = found
            .into_iter()
            .filter(|(s, _)| *s > st.applied)
            .zip(st.applied + 1..)
            .take_while(|((s, _), want)| s == want)
            .map(|((_, l), _)| l)
            .collect();
        let mut fetched = futures::stream::iter(next)
            .map(|loc| async move {
                match self.store.get(&loc).await {
                    Ok(g) => g.bytes().await.map(|b| Some((loc, b))),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(FETCH_CONCURRENCY);
        while let Some(got) = fetched.next().await {
            let Some((loc, bytes)) = got.map_err(|e| self.err(d, &dir, e))? else {
                return Ok(false);
            };
            self.apply_record(d, st, loc.as_ref(), &bytes)?;
        }
        Ok(true)
    }

    /// Applies one record read from `key`.
    fn apply_record(&self, d: &str, st: &mut KbState, key: &str, bytes: &[u8]) -> Result<()> {
        let corrupt = |reason: String| KnowledgeError::Corrupt {
            domain_id: d.to_owned(),
            what: "index journal record",
            path: key.to_owned(),
            reason,
        };
        let rec: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if rec.seq != st.applied + 1 {
            return Err(corrupt(format!(
                "holds record {} where {} was expected",
                rec.seq,
                st.applied + 1
            )));
        }
        st.apply(&rec.changes);
        st.set_info(rec.info);
        st.applied = rec.seq;
        Ok(())
    }

    /// Creates record `seq` and returns its size; `None` if another writer's record has that
    /// number.
    pub(super) async fn create_record(
        &self,
        d: &str,
        epoch: &str,
        rec: &Record,
    ) -> Result<Option<usize>> {
        let key = self.record_key(d, epoch, rec.seq);
        let loc = obj_path(key.as_str());
        let bytes = serde_json::to_vec(rec).expect("a journal record serialises");
        let size = bytes.len();
        let opts = object_store::PutOptions {
            mode: PutMode::Create,
            ..object_store::PutOptions::default()
        };
        match self
            .store
            .put_opts(&loc, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Some(size)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // A retried request may have created it already: is it ours?
                match self.store.get(&loc).await {
                    Ok(g) => {
                        let b = g.bytes().await.map_err(|e| self.err(d, &key, e))?;
                        let ours = serde_json::from_slice::<Record>(&b)
                            .is_ok_and(|r| r.writer == rec.writer);
                        Ok(ours.then_some(size))
                    }
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(self.err(d, &key, e)),
                }
            }
            Err(e) => Err(self.err(d, &key, e)),
        }
    }

    /// Writes the whole state as the new base (`If-Match` on the cached base): compaction of
    /// a journal, or the first write to a base without one (which starts a journal). Returns
    /// the bytes written, or `None` when the base changed meanwhile.
    pub(super) async fn write_base(&self, d: &str, st: &mut KbState) -> Result<Option<usize>> {
        let key = self.meta_key(d);
        let mut head = st.head.clone().unwrap_or_else(new_head);
        let now = now_ms();
        // Only what the current base's history vouches for is pruned, never what this write
        // is about to cover (its compare-and-swap may yet fail).
        self.prune_records(d, &mut head, now).await;
        head.seq = st.applied;
        if head
            .compactions
            .last()
            .is_none_or(|&(_, t)| now - t >= ms(self.journal_retention / 16))
        {
            head.compactions.push((st.applied, now));
        }
        let current = match self.mode {
            ChangeDetectionMode::S3Versioning => Some(st.index.identity()),
            ChangeDetectionMode::Snapshot => None,
        };
        let versions = match (&st.base_identity, &current) {
            (Some(old), Some(new)) if old != new => versions::next_index(
                st.versions.clone(),
                old,
                st.base_version.version.as_deref(),
                self.retention,
            ),
            (_, Some(_)) => st.versions.clone(),
            _ => Vec::new(),
        };
        let bytes = metadata_json_doc(&st.info, &st.index, &versions, Some(&head));
        let size = bytes.len();
        let opts = object_store::PutOptions {
            mode: PutMode::Update(st.base_version.clone()),
            ..object_store::PutOptions::default()
        };
        match self
            .store
            .put_opts(&obj_path(key.as_str()), PutPayload::from(bytes), opts)
            .await
        {
            Ok(done) => {
                st.etag.clone_from(&done.e_tag);
                st.base_version = UpdateVersion {
                    e_tag: done.e_tag,
                    version: done.version,
                };
                st.head = Some(head);
                st.versions = versions;
                st.base_identity = current;
                Ok(Some(size))
            }
            Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) if is_not_found(&e) => Err(KnowledgeError::KbNotFound {
                domain_id: d.to_owned(),
            }),
            Err(e) => Err(self.err(d, &key, e)),
        }
    }

    /// Folds the records of `st` into a new base, if there are any. A base that changed
    /// meanwhile (another instance compacted) is left as it is: the records stay valid.
    /// Returns whether the base now covers every record of `st` (`false`: the compaction lost
    /// that race).
    pub(super) async fn compact_state(&self, d: &str, st: &mut KbState) -> Result<bool> {
        if st.head.as_ref().is_none_or(|h| h.seq == st.applied) {
            return Ok(true);
        }
        match self.write_base(d, st).await? {
            Some(size) => {
                self.events
                    .emit(StateWrite {
                        domain_id: d.to_owned(),
                        key: self.meta_key(d),
                        kind: KnowledgeKeyKind::Metadata,
                        byte_size: size as u64,
                        tenant_id: None,
                    })
                    .await;
                Ok(true)
            }
            None => {
                tracing::debug!(
                    domain_id = d,
                    "compaction skipped: the base changed meanwhile"
                );
                Ok(false)
            }
        }
    }

    /// Makes sure a base covers record `seq`: compacts, and after a compaction that lost the
    /// race to another instance's, re-reads and tries again (the other instance's base may
    /// already cover `seq`). `Ok(false)`: the base kept changing, and `seq` is still only in
    /// the journal. In `s3_versioning` mode every write ends here, since the bucket's object
    /// versions of the base are that mode's history: a state that never became a base could
    /// not be diffed from. A cached state this cannot vouch for after an error is dropped.
    pub(super) async fn cover_in_base(
        &self,
        d: &str,
        slot: &mut Option<KbState>,
        seq: u64,
    ) -> Result<bool> {
        for _ in 0..8 {
            let Some(st) = slot.as_mut() else {
                return Err(KnowledgeError::KbNotFound {
                    domain_id: d.to_owned(),
                });
            };
            if st.head.as_ref().is_none_or(|h| h.seq >= seq) || self.compact_state(d, st).await? {
                return Ok(true);
            }
            if let Err(e) = self.refresh(d, slot, true).await {
                *slot = None;
                return Err(e);
            }
        }
        Ok(false)
    }

    /// Deletes the records that a base has covered for [`JOURNAL_RETENTION`], and the history
    /// entries no longer needed. A failure only leaves records for a later compaction.
    async fn prune_records(&self, d: &str, head: &mut JournalHead, now: i64) {
        let cutoff = now - ms(self.journal_retention);
        let Some(last_old) = head
            .compactions
            .iter()
            .rposition(|&(_, t)| t < cutoff || self.journal_retention.is_zero())
        else {
            return;
        };
        let upto = head.compactions[last_old].0;
        if upto > head.pruned {
            let dir = self.journal_dir(d, &head.epoch);
            let offset = obj_path(self.record_key(d, &head.epoch, head.pruned).as_str());
            let doomed = self
                .store
                .list_with_offset(Some(&obj_path(dir.as_str())), &offset)
                .try_filter(move |m| {
                    futures::future::ready(seq_of(&m.location).is_some_and(|s| s <= upto))
                })
                .map_ok(|m| m.location)
                .boxed();
            let failed = self
                .store
                .delete_stream(doomed)
                .filter(|r| futures::future::ready(matches!(r, Err(e) if !is_not_found(e))))
                .count()
                .await;
            if failed > 0 {
                tracing::warn!(
                    domain_id = d,
                    failed,
                    "could not delete some compacted journal records; a later compaction retries"
                );
                return;
            }
            head.pruned = upto;
        }
        head.compactions.drain(..last_old);
    }

    /// Folds the journal of `domain_id` into `_metadata.json` now (so the original, which
    /// reads only that document, sees every write). `close` does it for every knowledge base
    /// this instance has touched.
    pub async fn compact(&self, domain_id: &str) -> Result<()> {
        crate::paths::validate_domain_id(domain_id)?;
        let slot = self.slot(domain_id);
        let mut guard = slot.lock().await;
        self.refresh(domain_id, &mut guard, true).await?;
        let Some(applied) = guard.as_ref().map(|st| st.applied) else {
            return Err(KnowledgeError::KbNotFound {
                domain_id: domain_id.to_owned(),
            });
        };
        if !self.cover_in_base(domain_id, &mut guard, applied).await? {
            tracing::warn!(
                domain_id,
                "the index base kept changing under compaction; the journal keeps the writes"
            );
        }
        Ok(())
    }
}
