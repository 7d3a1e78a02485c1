//! Where the S3 backend keeps the versions it hands out, and how it finds them again.
//!
//! * `snapshot` mode: one `{path: checksum}` object per handed-out identity, in the lineage of
//!   the asking tenant (`{prefix}{state}{domain}/_snapshots/{id}.json`), at most `retention`
//!   per lineage. A version is looked up in the asking tenant's lineage, then in the shared one.
//! * `s3_versioning` mode: no snapshot objects at all; see [`super::versions`]. The version
//!   index belongs to the shared index document, so every tenant resolves the same versions.

use super::obj_path;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions as ObjPutOptions, PutPayload};

use super::{ChangeDetectionMode, S3KnowledgeBackend, is_not_found};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::identity::Snapshot;
use crate::index::FileIndex;
use crate::metadata_doc::VersionEntry;
use crate::tenant::TenantContext;

impl S3KnowledgeBackend {
    /// Retains the current identity `id` of `index` in `ctx`'s lineage (`snapshot` mode; in
    /// `s3_versioning` mode there is nothing to write).
    pub(super) async fn retain(
        &self,
        d: &str,
        id: &str,
        index: &FileIndex,
        state: &str,
        ctx: &TenantContext,
    ) -> Result<()> {
        if id.is_empty() || self.mode == ChangeDetectionMode::S3Versioning {
            return Ok(());
        }
        let key = self.layout.snapshot_key(d, id, state);
        // Another instance may have deleted it (with its knowledge base): ask, don't cache.
        match self.store.head(&obj_path(key.as_str())).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.err(d, &key, e)),
        }
        let json = index.snapshot_json();
        let size = json.len();
        let opts = ObjPutOptions {
            mode: PutMode::Create,
            ..ObjPutOptions::default()
        };
        match self
            .store
            .put_opts(&obj_path(key.as_str()), PutPayload::from(json), opts)
            .await
        {
            Ok(_) => {
                self.events
                    .emit(StateWrite {
                        domain_id: d.to_owned(),
                        key: key.clone(),
                        kind: KnowledgeKeyKind::Snapshot,
                        byte_size: size as u64,
                        tenant_id: ctx.tenant_id().map(str::to_owned),
                    })
                    .await;
                self.prune(d, id, state).await?;
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(self.err(d, &key, e)),
        }
        Ok(())
    }

    /// Keeps at most `retention` snapshots in one lineage (the oldest go), never `keep`.
    async fn prune(&self, d: &str, keep: &str, state: &str) -> Result<()> {
        let dir = self.layout.snapshots_dir(d, state);
        let mut metas: Vec<_> = self
            .store
            .list(Some(&obj_path(dir.as_str())))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.err(d, &dir, e))?;
        if metas.len() <= self.retention {
            return Ok(());
        }
        metas.sort_by_key(|m| m.last_modified);
        let excess = metas.len() - self.retention;
        let keep_name = format!("{keep}.json");
        for m in metas.into_iter().take(excess) {
            if m.location.filename() == Some(keep_name.as_str()) {
                continue;
            }
            if let Err(e) = self.store.delete(&m.location).await
                && !is_not_found(&e)
            {
                return Err(self.err(d, m.location.as_ref(), e));
            }
        }
        Ok(())
    }

    /// A snapshot object of one lineage; `None` if not retained.
    async fn snapshot_object(
        &self,
        d: &str,
        version: &str,
        state: &str,
    ) -> Result<Option<Snapshot>> {
        let key = self.layout.snapshot_key(d, version, state);
        match self.store.get(&obj_path(key.as_str())).await {
            Ok(g) => {
                let bytes = g.bytes().await.map_err(|e| self.err(d, &key, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| KnowledgeError::Corrupt {
                        domain_id: d.to_owned(),
                        what: "snapshot",
                        path: key.clone(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err(d, &key, e)),
        }
    }

    /// The `{path: checksum}` map of `version` (not the current identity, not `""`), or
    /// `InvalidVersion`.
    pub(super) async fn resolve(
        &self,
        d: &str,
        version: &str,
        state: &str,
        versions: &[VersionEntry],
    ) -> Result<Snapshot> {
        let found = match self.mode {
            ChangeDetectionMode::S3Versioning => {
                return self.resolve_object_version(d, version, versions).await;
            }
            ChangeDetectionMode::Snapshot => match self.snapshot_object(d, version, state).await? {
                Some(s) => Some(s),
                None if !state.is_empty() => self.snapshot_object(d, version, "").await?,
                None => None,
            },
        };
        found.ok_or_else(|| KnowledgeError::InvalidVersion {
            domain_id: d.to_owned(),
            version: version.to_owned(),
            reason: "no snapshot of this version is retained",
        })
    }
}
