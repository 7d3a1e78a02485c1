//! Tenant state in S3, in the original's layout: `{prefix}_scoped/{tenant prefix}{domain}/`
//! holds the tenant's `_metadata.json` (`{"info": {...}}`) and its `_snapshots/`.
//!
//! A tenant's state token is its document's ETag, or [`ABSENT_TOKEN`] while it has none. A
//! status write is always a conditional PUT (`If-Match` on the ETag read, or `If-None-Match: *`
//! when there was no document): a conditional write whose token is stale fails with
//! `Conflict`, an unconditional one re-reads and retries, so concurrent writers never lose the
//! other's vector store path.
//!
//! `delete_kb` removes every tenant's state of the domain after removing the index (so the
//! knowledge base is gone first). A tenant write re-checks that the knowledge base still
//! exists after its PUT and takes its document back if not, so a write racing a delete cannot
//! leave state behind for a later `create_kb` to inherit — unless the delete *and* a re-create
//! both fall between that write's existence check and its PUT.

use super::obj_path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStoreExt, PutMode, PutOptions as ObjPutOptions, PutPayload, UpdateVersion,
};

use super::{S3KnowledgeBackend, is_not_found};
use crate::error::{KnowledgeError, Result};
use crate::events::{KnowledgeKeyKind, StateWrite};
use crate::model::{KnowledgeBaseInfo, StatusUpdate};
use crate::names::SCOPED_STATE_ROOT;
use crate::tenant::TenantContext;
use crate::tenant_state::TenantState;

/// The state token of a tenant that has not written yet (never an S3 ETag, which is quoted).
pub(crate) const ABSENT_TOKEN: &str = "absent";

impl S3KnowledgeBackend {
    /// A tenant's state and its document's ETag (`None`: no document).
    async fn tenant_doc(&self, d: &str, key: &str) -> Result<(TenantState, Option<String>)> {
        match self.store.get(&obj_path(key)).await {
            Ok(g) => {
                let etag = g.meta.e_tag.clone();
                let bytes = g.bytes().await.map_err(|e| self.err(d, key, e))?;
                Ok((TenantState::from_doc(d, key, &bytes)?, etag))
            }
            Err(e) if is_not_found(&e) => Ok((TenantState::default(), None)),
            Err(e) => Err(self.err(d, key, e)),
        }
    }

    /// `ctx`'s view of `content`.
    pub(super) async fn tenant_view(
        &self,
        d: &str,
        state: &str,
        content: &KnowledgeBaseInfo,
    ) -> Result<KnowledgeBaseInfo> {
        let key = self.layout.metadata_key(d, state);
        Ok(self.tenant_doc(d, &key).await?.0.view(content))
    }

    /// The tenant's state token (the knowledge base is known to exist).
    pub(super) async fn tenant_token(&self, d: &str, state: &str) -> Result<String> {
        let key = self.layout.metadata_key(d, state);
        match self.store.head(&obj_path(key.as_str())).await {
            Ok(m) => Ok(m.e_tag.unwrap_or_default()),
            Err(e) if is_not_found(&e) => Ok(ABSENT_TOKEN.to_owned()),
            Err(e) => Err(self.err(d, &key, e)),
        }
    }

    /// Writes a tenant's status; see the module docs.
    pub(super) async fn tenant_write(
        &self,
        d: &str,
        state: &str,
        ctx: &TenantContext,
        update: &StatusUpdate,
    ) -> Result<KnowledgeBaseInfo> {
        let key = self.layout.metadata_key(d, state);
        let loc = obj_path(key.as_str());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let content = self.view_required(d, |st| st.info.clone()).await?;
            let (mut tenant, etag) = self.tenant_doc(d, &key).await?;
            let actual = etag.clone().unwrap_or_else(|| ABSENT_TOKEN.to_owned());
            if let Some(expected) = &update.expected_version
                && *expected != actual
            {
                return Err(KnowledgeError::Conflict {
                    domain_id: d.to_owned(),
                    key,
                    expected_version: expected.clone(),
                    actual_version: Some(actual),
                });
            }
            tenant.apply(update);
            let bytes = tenant.to_doc(&content);
            let size = bytes.len();
            let mode = match etag {
                Some(e_tag) => PutMode::Update(UpdateVersion {
                    e_tag: Some(e_tag),
                    version: None,
                }),
                None => PutMode::Create,
            };
            let opts = ObjPutOptions {
                mode,
                ..ObjPutOptions::default()
            };
            match self
                .store
                .put_opts(&loc, PutPayload::from(bytes), opts)
                .await
            {
                Ok(_) => {}
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::NotFound { .. },
                ) => {
                    if let Some(expected) = &update.expected_version {
                        return Err(KnowledgeError::Conflict {
                            domain_id: d.to_owned(),
                            expected_version: expected.clone(),
                            actual_version: Some(self.tenant_token(d, state).await?),
                            key,
                        });
                    }
                    if attempt < 64 {
                        let ms = rand::random::<u64>() % (5 * u64::from(attempt.min(20))) + 1;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        continue;
                    }
                    return Err(KnowledgeError::Task {
                        domain_id: d.to_owned(),
                        reason: format!("tenant status write on {key} kept conflicting"),
                    });
                }
                Err(e) => return Err(self.err(d, &key, e)),
            }
            if self.view(d, |_| ()).await?.is_none() {
                // Deleted meanwhile: take the write back rather than leave it to a re-create.
                let _ = self.store.delete(&loc).await;
                return Err(KnowledgeError::KbNotFound {
                    domain_id: d.to_owned(),
                });
            }
            self.events
                .emit(StateWrite {
                    domain_id: d.to_owned(),
                    key,
                    kind: KnowledgeKeyKind::Metadata,
                    byte_size: size as u64,
                    tenant_id: ctx.tenant_id().map(str::to_owned),
                })
                .await;
            return Ok(tenant.view(&content));
        }
    }

    /// Deletes every tenant's state (documents and snapshots) of `d`; the keys are read
    /// positionally, so another domain's state is never touched.
    pub(super) async fn remove_tenant_state(&self, d: &str) -> Result<()> {
        let root = format!("{}{SCOPED_STATE_ROOT}", self.prefix);
        let layout = self.layout.clone();
        let domain = d.to_owned();
        let locations = self
            .store
            .list(Some(&obj_path(root.as_str())))
            .try_filter(move |m| {
                let mine = layout
                    .parse_key(m.location.as_ref())
                    .is_some_and(|k| k.domain_id == domain && !k.state_prefix.is_empty());
                std::future::ready(mine)
            })
            .map_ok(|m| m.location)
            .boxed();
        let results: Vec<_> = self.store.delete_stream(locations).collect().await;
        for r in results {
            if let Err(e) = r
                && !is_not_found(&e)
            {
                return Err(self.err(d, &root, e));
            }
        }
        Ok(())
    }
}
