//! Group commit of the S3 index: every index write (a put, a delete, a status update) is an
//! [`Op`] queued per knowledge base ([`DomainQueue`]); the writer that takes the queue's commit
//! lock drains it and commits every waiting op together as one journal record (or, on a base
//! without a journal, one compare-and-swap of the whole `_metadata.json`, [`super::journal`]),
//! then hands each writer its own [`OpOutcome`].
//!
//! Invariants: at most one commit per knowledge base runs in an instance at a time; the ops of
//! a batch are applied to the cached state in submission order, and undone when the record
//! loses its race (a `Conflict`, retried with back-off up to 64 attempts) — a write whose
//! outcome is unknown drops the cached state instead; a conditional status write compares with
//! the state version the batch started from and conflicts when an earlier op of the same
//! batch changed the state; a committed batch emits one metadata [`StateWrite`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::journal::{Change, KbState, Record};
use super::{ChangeDetectionMode, S3KnowledgeBackend, lock};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::index::FileIndex;
use crate::memory::file_entry;
use crate::model::{KnowledgeBaseInfo, KnowledgeFile, PutOptions, StatusUpdate};
use crate::pytime;

/// One write waiting for the next group commit of a knowledge base's index.
pub(super) enum Op {
    Put(Vec<KnowledgeFile>),
    /// Drops a path from the index (its content object is removed by the caller).
    Delete(String),
    Status(StatusUpdate),
}

/// What one [`Op`] did, handed back to its writer.
pub(super) enum OpOutcome {
    Put(Vec<KnowledgeFile>),
    Delete(bool),
    Status(KnowledgeBaseInfo),
}

/// A queued op and where its outcome goes.
type Waiter = (Op, oneshot::Sender<Result<OpOutcome>>);

/// The commit queue of one knowledge base: the ops waiting for the next commit, and the lock
/// that lets one commit run at a time.
#[derive(Default)]
pub(super) struct DomainQueue {
    pending: Mutex<Vec<Waiter>>,
    commit: tokio::sync::Mutex<()>,
}

impl S3KnowledgeBackend {
    /// The commit queue of `d`, created on first use.
    fn queue(&self, d: &str) -> Arc<DomainQueue> {
        lock(&self.queues).entry(d.to_owned()).or_default().clone()
    }

    /// Submits one index write; writers that arrive together share one compare-and-swap.
    pub(super) async fn submit(&self, d: &str, op: Op) -> Result<OpOutcome> {
        let q = self.queue(d);
        let (tx, rx) = oneshot::channel();
        lock(&q.pending).push((op, tx));
        {
            let _guard = q.commit.lock().await;
            let batch: Vec<Waiter> = std::mem::take(&mut *lock(&q.pending));
            if !batch.is_empty() {
                self.commit_batch(d, batch).await;
            }
        }
        rx.await.map_err(|_| KnowledgeError::Task {
            domain_id: d.to_owned(),
            reason: "index commit was abandoned".into(),
        })?
    }

    /// Commits a drained batch, retrying a lost race with back-off, and answers every waiter
    /// (the first with the error itself when the commit fails).
    async fn commit_batch(&self, d: &str, batch: Vec<Waiter>) {
        let (ops, senders): (Vec<Op>, Vec<_>) = batch.into_iter().unzip();
        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            match self.try_commit(d, &ops, attempt == 1).await {
                Err(KnowledgeError::Conflict { .. }) if attempt < 64 => {
                    let ms = rand::random::<u64>() % (5 * u64::from(attempt.min(20))) + 1;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                other => break other,
            }
        };
        match outcome {
            Ok((results, written)) => {
                if written > 0 {
                    self.events
                        .emit(StateWrite {
                            domain_id: d.to_owned(),
                            key: self.meta_key(d),
                            kind: KnowledgeKeyKind::Metadata,
                            byte_size: written as u64,
                            tenant_id: None,
                        })
                        .await;
                }
                for (tx, r) in senders.into_iter().zip(results) {
                    let _ = tx.send(r);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut first = Some(e);
                for tx in senders {
                    let err = first.take().unwrap_or_else(|| KnowledgeError::Task {
                        domain_id: d.to_owned(),
                        reason: msg.clone(),
                    });
                    let _ = tx.send(Err(err));
                }
            }
        }
    }

    /// One attempt to commit a batch as one journal record (or, on a base without a journal,
    /// one compare-and-swap of the whole document). `Conflict` means: retry. `optimistic`:
    /// if the cached base is unchanged, try the next record number without listing first.
    #[allow(clippy::type_complexity)]
    async fn try_commit(
        &self,
        d: &str,
        ops: &[Op],
        optimistic: bool,
    ) -> Result<(Vec<Result<OpOutcome>>, usize)> {
        let slot = self.slot(d);
        let mut guard = slot.lock().await;
        let mut read_at = self.refresh(d, &mut guard, !optimistic).await?;
        // A status write conditional on a version this instance has not seen yet (handed out
        // by another instance): catch up before comparing.
        let unseen = |st: &KbState| {
            let token = st.token();
            ops.iter().any(|o| {
                matches!(o, Op::Status(u) if u.expected_version.as_ref().is_some_and(|e| *e != token))
            })
        };
        if optimistic && guard.as_ref().is_some_and(unseen) {
            read_at = self.refresh(d, &mut guard, true).await?;
        }
        let Some(st) = guard.as_mut() else {
            return Err(KnowledgeError::KbNotFound {
                domain_id: d.to_owned(),
            });
        };
        let token = st.token();
        let (results, applied) = apply_ops(d, &self.meta_key(d), st, ops, &token);
        let Some(applied) = applied else {
            return Ok((results, 0));
        };
        let conflict = || KnowledgeError::Conflict {
            domain_id: d.to_owned(),
            key: self.meta_key(d),
            expected_version: token.clone(),
            actual_version: None,
        };
        let Some(epoch) = st.head.as_ref().map(|h| h.epoch.clone()) else {
            // The original's document: rewrite it whole, starting a journal.
            return match self.write_base(d, st).await {
                Ok(Some(written)) => Ok((results, written)),
                Ok(None) => {
                    *guard = None;
                    Err(conflict())
                }
                Err(e) => {
                    *guard = None;
                    Err(e)
                }
            };
        };
        if self.write_window().is_some_and(|w| read_at.elapsed() > w) {
            *guard = None;
            return Err(conflict());
        }
        let rec = Record {
            seq: st.applied + 1,
            writer: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            info: st.info.clone(),
            changes: applied.changes,
        };
        let written = match self.create_record(d, &epoch, &rec).await {
            Ok(Some(written)) => {
                st.applied = rec.seq;
                written
            }
            Ok(None) => {
                st.undo(applied.replaced);
                st.info = applied.info_before;
                return Err(conflict());
            }
            Err(e) => {
                // The record may or may not have landed: forget what is cached.
                *guard = None;
                return Err(e);
            }
        };
        // The record is the commit: a compaction that fails or gives up only leaves the write
        // in the journal.
        let compacted = if self.mode == ChangeDetectionMode::S3Versioning {
            self.cover_in_base(d, &mut guard, rec.seq).await
        } else if st.compaction_due() {
            // Lost to another instance's compaction: its base will do (the next one folds the rest).
            self.compact_state(d, st).await.map(|_| true)
        } else {
            Ok(true)
        };
        match compacted {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                domain_id = d,
                "the index base kept changing under compaction; the journal keeps the writes"
            ),
            Err(e) => {
                tracing::warn!(domain_id = d, error = %e, "index compaction failed; the journal keeps the writes");
            }
        }
        Ok((results, written))
    }
}

/// Refuses a batch of paths of which one is a file where another (in `index` or in the batch)
/// is a folder, or the other way round.
pub(super) fn check_batch<'p>(
    d: &str,
    index: &FileIndex,
    paths: impl IntoIterator<Item = &'p str>,
) -> Result<()> {
    let mut batch = FileIndex::default();
    for p in paths {
        if index.get(p).is_none() {
            index.check_conflict(d, p)?;
        }
        if batch.get(p).is_none() {
            batch.check_conflict(d, p)?;
        }
        batch.insert(file_entry(p, 0, String::new(), PutOptions::default()));
    }
    Ok(())
}

/// What a batch changed in a cached state: the record's changes, what they replaced and the
/// info before, so a lost race can be undone.
struct Applied {
    changes: Vec<Change>,
    replaced: Vec<(String, Option<KnowledgeFile>)>,
    info_before: KnowledgeBaseInfo,
}

/// Applies a batch to `st` in order. Returns each op's outcome and, if anything changed,
/// [`Applied`]. `token` is the state version the batch started from (status compare-and-swap).
fn apply_ops(
    d: &str,
    key: &str,
    st: &mut KbState,
    ops: &[Op],
    token: &str,
) -> (Vec<Result<OpOutcome>>, Option<Applied>) {
    let info_before = st.info.clone();
    let mut info = st.info.clone();
    let mut results = Vec::with_capacity(ops.len());
    let mut changes = Vec::new();
    let mut replaced = Vec::new();
    let mut dirty = false;
    for op in ops {
        match op {
            Op::Put(files) => {
                match check_batch(d, &st.index, files.iter().map(|f| f.path.as_str())) {
                    Ok(()) => {
                        for f in files {
                            let c = Change::Put { file: f.clone() };
                            replaced.extend(st.apply(std::slice::from_ref(&c)));
                            changes.push(c);
                            info.increment_version();
                        }
                        info.last_updated = pytime::now();
                        dirty = true;
                        results.push(Ok(OpOutcome::Put(files.clone())));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            Op::Delete(path) => {
                if st.index.get(path).is_some() {
                    let c = Change::Delete { path: path.clone() };
                    replaced.extend(st.apply(std::slice::from_ref(&c)));
                    changes.push(c);
                    info.increment_version();
                    info.last_updated = pytime::now();
                    dirty = true;
                    results.push(Ok(OpOutcome::Delete(true)));
                } else {
                    results.push(Ok(OpOutcome::Delete(false)));
                }
            }
            Op::Status(u) => {
                if let Some(expected) = &u.expected_version
                    && (dirty || token != expected)
                {
                    results.push(Err(KnowledgeError::Conflict {
                        domain_id: d.to_owned(),
                        key: key.to_owned(),
                        expected_version: expected.clone(),
                        actual_version: Some(token.to_owned()),
                    }));
                    continue;
                }
                info.ingestion_status = u.status;
                info.last_updated = pytime::now();
                info.ingestion_error.clone_from(&u.error);
                info.generation.clone_from(&u.generation);
                if u.vector_store_path.is_some() {
                    info.vector_store_path.clone_from(&u.vector_store_path);
                }
                dirty = true;
                results.push(Ok(OpOutcome::Status(info.clone())));
            }
        }
    }
    if !dirty {
        return (results, None);
    }
    st.set_info(info);
    // Status outcomes report the final info of the batch.
    for r in &mut results {
        if let Ok(OpOutcome::Status(i)) = r {
            *i = st.info.clone();
        }
    }
    let applied = Applied {
        changes,
        replaced,
        info_before,
    };
    (results, Some(applied))
}
