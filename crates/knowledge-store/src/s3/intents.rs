//! Write intents: how the S3 backend repairs a write that died between its content and its
//! index.
//!
//! Content objects live at the original's keys and the index is one document, so a write
//! touches two objects and S3 cannot change them together. Before it touches either, a write
//! records what it is about to do in a small intent object,
//! `{prefix}{domain}/_dynreg/intents/{id}.json` (`{"puts": [index entries], "deletes":
//! [paths]}`), and removes it once the index is committed (and, for a delete, the content is
//! gone). A process that dies in between leaves its intent behind, and
//! [`S3KnowledgeBackend::recover`] (run by [`S3KnowledgeBackend::connect`]) makes the index
//! match the content again: an uploaded file whose index entry is missing or stale gets the
//! entry of its bytes (MD5 and size recomputed from the object), a deleted file whose index
//! entry is gone loses its content object (if it still holds the deleted bytes), and an entry
//! whose object is missing is dropped from the index. Repairing
//! only ever moves the index to what is stored, so running it while the writer is still alive
//! is harmless; an intent younger than [`INTENT_GRACE`] (or the backend's
//! [`S3KnowledgeBackend::with_intent_grace`]) is repaired but kept, so a live writer's own
//! intent stays until that writer removes it.

use super::obj_path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::commit::Op;
use super::{S3KnowledgeBackend, is_not_found};
use crate::error::{KnowledgeError, Result};
use crate::model::KnowledgeFile;

/// How old an intent must be, by default, before recovery removes it (it is repaired at any
/// age).
pub const INTENT_GRACE: Duration = Duration::from_secs(600);

/// What one write is about to do.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Intent {
    /// Index entries about to be written (a streamed upload's checksum is empty: unknown until
    /// the upload ends).
    #[serde(default)]
    pub puts: Vec<KnowledgeFile>,
    /// Files about to be deleted, with the checksum their index entry had.
    #[serde(default)]
    pub deletes: Vec<Deleted>,
}

/// A file a write is about to delete.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Deleted {
    pub path: String,
    pub checksum: String,
}

/// A recorded intent, removed with [`S3KnowledgeBackend::intent_done`] once the write is complete.
pub(super) struct Recorded {
    key: String,
}

impl S3KnowledgeBackend {
    fn intents_dir(&self, d: &str) -> String {
        format!("{}_dynreg/intents", self.layout.domain_root(d))
    }

    /// Records `intent` for domain `d` before any of its objects is touched.
    pub(super) async fn record_intent(&self, d: &str, intent: &Intent) -> Result<Recorded> {
        let key = format!(
            "{}/{:016x}{:016x}.json",
            self.intents_dir(d),
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let bytes = serde_json::to_vec(intent).expect("an intent serialises");
        self.store
            .put(&obj_path(key.as_str()), bytes.into())
            .await
            .map_err(|e| self.err(d, &key, e))?;
        Ok(Recorded { key })
    }

    /// Removes a completed write's intent. A failure is only logged: the intent then stays
    /// until a recovery finds the index already matching and removes it.
    pub(super) async fn intent_done(&self, d: &str, recorded: Recorded) {
        if let Err(e) = self.store.delete(&obj_path(recorded.key.as_str())).await
            && !is_not_found(&e)
        {
            tracing::warn!(domain_id = d, key = %recorded.key, error = %e, "could not remove a completed write intent");
        }
    }

    /// Repairs every knowledge base after writes that died between content and index (see the
    /// module docs). Returns how many intents were found. [`S3KnowledgeBackend::connect`] runs
    /// it; call it yourself after [`S3KnowledgeBackend::with_store`].
    pub async fn recover(&self) -> Result<usize> {
        let mut found = 0;
        for d in self.domain_names().await? {
            found += self.recover_domain(&d).await?;
        }
        Ok(found)
    }

    /// Repairs one knowledge base; returns how many intents it had.
    pub(super) async fn recover_domain(&self, d: &str) -> Result<usize> {
        let dir = self.intents_dir(d);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&obj_path(dir.as_str())))
            .try_collect()
            .await
            .map_err(|e| self.err(d, &dir, e))?;
        for meta in &listed {
            let key = meta.location.to_string();
            let bytes = match self.store.get(&meta.location).await {
                Ok(g) => g.bytes().await.map_err(|e| self.err(d, &key, e))?,
                Err(e) if is_not_found(&e) => continue, // removed by its writer meanwhile
                Err(e) => return Err(self.err(d, &key, e)),
            };
            let intent: Intent =
                serde_json::from_slice(&bytes).map_err(|e| KnowledgeError::Corrupt {
                    domain_id: d.to_owned(),
                    what: "write intent",
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
            self.repair(d, &intent).await?;
            let age = chrono::Utc::now().signed_duration_since(meta.last_modified);
            if age.to_std().unwrap_or_default() >= self.intent_grace {
                self.intent_done(d, Recorded { key }).await;
            }
        }
        Ok(listed.len())
    }

    /// Moves the index of `d` to what is stored for the paths `intent` names.
    async fn repair(&self, d: &str, intent: &Intent) -> Result<()> {
        let indexed_now = |st: &mut super::KbState| {
            let puts: Vec<Option<KnowledgeFile>> = intent
                .puts
                .iter()
                .map(|p| st.index.get(&p.path).cloned())
                .collect();
            let deletes: Vec<bool> = intent
                .deletes
                .iter()
                .map(|g| st.index.get(&g.path).is_some())
                .collect();
            (puts, deletes)
        };
        let Some((indexed_puts, indexed_deletes)) = self.view(d, indexed_now).await? else {
            return Ok(()); // the knowledge base is gone, and its objects with it
        };
        let mut fixes = Vec::new();
        let mut stale = Vec::new();
        for (planned, indexed) in intent.puts.iter().zip(&indexed_puts) {
            let indexed = indexed.as_ref();
            match self.stored_digest(d, &planned.path).await? {
                None if indexed.is_some() => stale.push(planned.path.clone()),
                None => {}
                Some((checksum, size)) => {
                    if indexed.is_some_and(|f| f.checksum == checksum && f.size_bytes == size) {
                        continue;
                    }
                    // The planned entry's type and metadata if these are its bytes, else what
                    // the index had (or the planned entry's, for a new path).
                    let base = match indexed {
                        Some(f) if !planned.checksum.is_empty() && planned.checksum != checksum => {
                            f.clone()
                        }
                        _ => planned.clone(),
                    };
                    fixes.push(KnowledgeFile {
                        checksum,
                        size_bytes: size,
                        ..base
                    });
                }
            }
        }
        for (gone, still_indexed) in intent.deletes.iter().zip(indexed_deletes) {
            // Only the bytes that were deleted go: a later upload to the path is left alone.
            if !still_indexed
                && self
                    .stored_digest(d, &gone.path)
                    .await?
                    .is_some_and(|(checksum, _)| checksum == gone.checksum)
            {
                let key = self.content_key(d, &gone.path);
                match self.store.delete(&obj_path(key.as_str())).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(self.err(d, &key, e)),
                }
            }
        }
        if !fixes.is_empty() {
            tracing::warn!(
                domain_id = d,
                files = fixes.len(),
                "repairing index entries of a write that did not finish"
            );
            self.submit(d, Op::Put(fixes)).await?;
        }
        for path in stale {
            tracing::warn!(domain_id = d, path = %path, "dropping the index entry of a file whose content is gone");
            self.submit(d, Op::Delete(path)).await?;
        }
        Ok(())
    }

    /// MD5 and size of the stored content of `path`, or `None` if there is no object.
    async fn stored_digest(&self, d: &str, path: &str) -> Result<Option<(String, u64)>> {
        let key = self.content_key(d, path);
        let got = match self.store.get(&obj_path(key.as_str())).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.err(d, &key, e)),
        };
        let mut md5 = md5::Md5::default();
        let mut size = 0u64;
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.err(d, &key, e))?;
            md5::Digest::update(&mut md5, &chunk);
            size += chunk.len() as u64;
        }
        Ok(Some((hex::encode(md5::Digest::finalize(md5)), size)))
    }
}
