//! The S3 registry's write path over its log: reading the head and the records after it,
//! applying records to the documents, catching up, and committing a write as the next record
//! (`If-None-Match: *`), then advancing the head and compacting.
//!
//! Invariants: a revision's record is created exactly once (the conditional create is the
//! commit point); a record is applied to its document only by compare-and-swap and only when
//! its revision is higher than the document's, so applying twice, or late, changes nothing;
//! the head never moves backwards; compaction removes only records at or below the head.

use super::*;

impl Inner {
    pub(super) async fn read_head(
        &self,
        operation: &'static str,
    ) -> Result<(Head, Option<UpdateVersion>)> {
        let path = self.keys.head();
        match self.get_bytes(&path, operation, None).await? {
            None => Ok((Head::default(), None)),
            Some((bytes, version)) => {
                let head: Head = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&self.location(&path), format!("invalid head: {e}")))?;
                Ok((head, Some(version)))
            }
        }
    }

    /// Revisions of the log records after `rev`, ascending.
    pub(super) async fn list_log_after(
        &self,
        rev: u64,
        operation: &'static str,
    ) -> Result<Vec<u64>> {
        let metas: Vec<_> = self
            .store
            .list_with_offset(Some(&self.keys.log_dir()), &self.keys.log(rev))
            .try_collect()
            .await
            .map_err(|e| storage(operation, None, e))?;
        let mut revs: Vec<u64> = metas
            .iter()
            .filter_map(|m| Keys::log_rev(&m.location))
            .filter(|r| *r > rev)
            .collect();
        revs.sort_unstable();
        Ok(revs)
    }

    /// The records of `revs` (a record compacted away meanwhile is left out).
    pub(super) async fn read_records(
        &self,
        revs: &[u64],
        operation: &'static str,
    ) -> Result<Vec<LogRecord>> {
        let fetched: Vec<Option<LogRecord>> = futures::stream::iter(revs.iter().copied())
            .map(|rev| self.read_record(rev, operation))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    pub(super) async fn read_record(
        &self,
        rev: u64,
        operation: &'static str,
    ) -> Result<Option<LogRecord>> {
        let path = self.keys.log(rev);
        let Some((bytes, _)) = self.get_bytes(&path, operation, None).await? else {
            return Ok(None);
        };
        let rec: LogRecord = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&self.location(&path), format!("invalid log record: {e}")))?;
        if rec.rev != rev {
            return Err(corrupt(
                &self.location(&path),
                format!("holds revision {}", rec.rev),
            ));
        }
        Ok(Some(rec))
    }

    /// Brings the document of `rec` up to at least `rec.rev` (idempotent; only a higher
    /// revision ever replaces a document).
    pub(super) async fn apply(&self, rec: &LogRecord) -> Result<()> {
        let path = self.keys.doc(&rec.id);
        loop {
            let current = self.read_doc(&rec.id, "apply").await?;
            if current
                .as_ref()
                .is_some_and(|(d, _)| d.revision() >= rec.rev)
            {
                return Ok(());
            }
            let mode = Self::mode(current.map(|(_, v)| v));
            if let Put::Done = self
                .put(&path, rec.doc_bytes(), mode, "apply", Some(&rec.id))
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Applies every committed record after the head (and after `known`); returns the latest
    /// committed revision.
    pub(super) async fn catch_up(&self, known: u64) -> Result<(u64, Snapshot)> {
        let (head, head_version) = self.read_head("catch up").await?;
        let from = head.revision.max(known);
        let revs = self.list_log_after(from, "catch up").await?;
        for rec in self.read_records(&revs, "catch up").await? {
            self.apply(&rec).await?;
        }
        let snapshot = Snapshot {
            head,
            head_version,
            doc_version: None,
        };
        Ok((revs.last().copied().unwrap_or(from), snapshot))
    }

    /// The latest committed revision and the current state of `bot_id` as of it.
    pub(super) async fn begin(
        &self,
        known: &mut u64,
        bot_id: &str,
    ) -> Result<(u64, Option<Registration>, Snapshot)> {
        loop {
            let (latest, mut snapshot) = self.catch_up(*known).await?;
            *known = latest;
            let doc = self.read_doc(bot_id, "read").await?;
            // A document newer than what we listed: another writer committed meanwhile.
            if doc.as_ref().is_some_and(|(d, _)| d.revision() > latest) {
                continue;
            }
            let (current, doc_version) = match doc {
                Some((d, v)) => (d.live(), Some(v)),
                None => (None, None),
            };
            snapshot.doc_version = doc_version;
            return Ok((latest, current, snapshot));
        }
    }

    /// Tries to commit `rec` (at `latest + 1`); `false` when another writer took the revision.
    pub(super) async fn commit(
        &self,
        known: &mut u64,
        rec: LogRecord,
        snapshot: Snapshot,
    ) -> Result<bool> {
        let path = self.keys.log(rec.rev);
        let bytes = serde_json::to_vec(&rec).expect("a log record serialises");
        if let Put::Lost = self
            .put(&path, bytes, PutMode::Create, "commit", Some(&rec.id))
            .await?
        {
            // A retried PUT may find its own first attempt; anything else lost the race.
            let mine = self
                .read_record(rec.rev, "commit")
                .await?
                .is_some_and(|r| r.txn == rec.txn);
            if !mine {
                return Ok(false);
            }
        }
        // The document and head as read before the commit are usually still current: try them
        // first, and fall back to re-reading when someone (a touch, a helper) got there first.
        let doc_mode = Self::mode(snapshot.doc_version);
        let doc_path = self.keys.doc(&rec.id);
        if let Put::Lost = self
            .put(&doc_path, rec.doc_bytes(), doc_mode, "apply", Some(&rec.id))
            .await?
        {
            self.apply(&rec).await?;
        }
        *known = rec.rev;
        let head = Head {
            revision: rec.rev,
            horizon: snapshot.head.horizon,
        };
        let bytes = serde_json::to_vec(&head).expect("a head serialises");
        let head_mode = Self::mode(snapshot.head_version);
        if let Put::Lost = self
            .put(&self.keys.head(), bytes, head_mode, "advance head", None)
            .await?
        {
            self.advance_head(rec.rev).await?;
        }
        if rec.rev.is_multiple_of(COMPACT_EVERY) {
            self.compact(rec.rev).await?;
        }
        Ok(true)
    }

    /// Moves the head to `rev` unless it is already there or beyond.
    pub(super) async fn advance_head(&self, rev: u64) -> Result<()> {
        loop {
            let (head, version) = self.read_head("advance head").await?;
            if head.revision >= rev {
                return Ok(());
            }
            let new = Head {
                revision: rev,
                horizon: head.horizon,
            };
            let bytes = serde_json::to_vec(&new).expect("a head serialises");
            if let Put::Done = self
                .put(
                    &self.keys.head(),
                    bytes,
                    Self::mode(version),
                    "advance head",
                    None,
                )
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Deletes log records older than the retention, after moving the horizon past them (so
    /// readers that might miss them answer `Expired` instead).
    pub(super) async fn compact(&self, rev: u64) -> Result<()> {
        let target = rev.saturating_sub(self.log_retention);
        let old_horizon = loop {
            let (head, version) = self.read_head("compact").await?;
            if target <= head.horizon + COMPACT_EVERY / 2 {
                return Ok(());
            }
            let new = Head {
                revision: head.revision.max(rev),
                horizon: target,
            };
            let bytes = serde_json::to_vec(&new).expect("a head serialises");
            if let Put::Done = self
                .put(
                    &self.keys.head(),
                    bytes,
                    Self::mode(version),
                    "compact",
                    None,
                )
                .await?
            {
                break head.horizon;
            }
        };
        let doomed: Vec<Path> = self
            .list_log_after(old_horizon, "compact")
            .await?
            .into_iter()
            .take_while(|r| *r <= target)
            .map(|r| self.keys.log(r))
            .collect();
        futures::stream::iter(doomed)
            .map(|p| async move {
                match self.store.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(storage("compact", None, e)),
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The latest committed revision and the head it was computed from.
    pub(super) async fn latest(&self, operation: &'static str) -> Result<(u64, Head)> {
        let (head, _) = self.read_head(operation).await?;
        let revs = self.list_log_after(head.revision, operation).await?;
        Ok((revs.last().copied().unwrap_or(head.revision), head))
    }
}
