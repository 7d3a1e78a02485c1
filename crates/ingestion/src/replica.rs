//! Every replica searches the new knowledge. With a shared store (pgvector) there is nothing to
//! do: every replica reads the same table. With an in-process store, the ingesting replica
//! publishes a snapshot of the domain's index through a knowledge backend
//! ([`KnowledgeIngestionManager::with_index_publication`](crate::KnowledgeIngestionManager::with_index_publication))
//! and an [`IndexFollower`] on every other replica loads it when the end event arrives.
//!
//! Invariants:
//! - Build, then swap: the snapshot is fetched and parsed completely before it replaces the
//!   domain's rows, in one step of the store; a snapshot that cannot be fetched or parsed is
//!   logged and the replica keeps serving the index it has.
//! - A follower that starts late (or missed an event) catches up with
//!   [`IndexFollower::sync_from_status`]: the domain's status names the latest snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use dynreg_event_bus::{Delivery, EventBus, EventBusError};
use dynreg_knowledge_store::{INGEST_DOMAIN_END, KnowledgeBackend, TenantContext};

use crate::rag::RagKnowledgeBase;
use crate::vector::Filter;

/// A snapshot could not be loaded (the replica keeps its index).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The snapshot location is not `{knowledge base}/{path}`.
    #[error("snapshot location {0:?} is not {{knowledge base}}/{{path}}")]
    Location(String),
    /// The snapshot file does not exist.
    #[error("snapshot {0} does not exist")]
    Missing(String),
    /// Reading it failed.
    #[error("reading snapshot {location}: {source}")]
    Read {
        /// Where.
        location: String,
        /// Why.
        source: dynreg_knowledge_store::KnowledgeError,
    },
    /// Loading it into the store failed.
    #[error("loading snapshot {location}: {source}")]
    Load {
        /// Where.
        location: String,
        /// Why.
        source: crate::vector::VectorError,
    },
}

/// Loads published snapshots into this replica's RAG knowledge base.
#[derive(Debug)]
pub struct IndexFollower {
    kb: RagKnowledgeBase,
    snapshots: Arc<dyn KnowledgeBackend>,
    loaded: AtomicU64,
}

impl IndexFollower {
    /// A follower loading into `kb` from the knowledge backend that holds the snapshots.
    pub fn new(kb: RagKnowledgeBase, snapshots: Arc<dyn KnowledgeBackend>) -> Arc<Self> {
        Arc::new(IndexFollower {
            kb,
            snapshots,
            loaded: AtomicU64::new(0),
        })
    }

    /// Snapshots loaded so far.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Loads the snapshot at `location` (`{knowledge base}/{path}`) as `domain`'s index (for
    /// `tenant`, if any); the number of chunks loaded.
    pub async fn sync(
        &self,
        domain: &str,
        tenant: Option<&str>,
        location: &str,
    ) -> Result<u64, FollowError> {
        let (kb, path) = location
            .split_once('/')
            .ok_or_else(|| FollowError::Location(location.to_owned()))?;
        let bytes = self
            .snapshots
            .get_file(kb, path)
            .await
            .map_err(|source| FollowError::Read {
                location: location.to_owned(),
                source,
            })?
            .ok_or_else(|| FollowError::Missing(location.to_owned()))?;
        let mut scope = Filter::all().with("domain_id", domain);
        if let Some(t) = tenant {
            scope = scope.with("tenant_id", t);
        }
        let n = self
            .kb
            .store()
            .restore(&scope, &bytes)
            .await
            .map_err(|source| FollowError::Load {
                location: location.to_owned(),
                source,
            })?;
        self.loaded.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    /// Loads the snapshot `domain`'s status names in `knowledge` (if any): the catch-up of a
    /// replica that starts after an ingest. `None` if there is none.
    pub async fn sync_from_status(
        &self,
        knowledge: &dyn KnowledgeBackend,
        domain: &str,
        ctx: &TenantContext,
    ) -> Result<Option<u64>, FollowError> {
        let info =
            knowledge
                .get_info_in(ctx, domain)
                .await
                .map_err(|source| FollowError::Read {
                    location: domain.to_owned(),
                    source,
                })?;
        match info.and_then(|i| i.vector_store_path) {
            Some(location) => Ok(Some(self.sync(domain, ctx.tenant_id(), &location).await?)),
            None => Ok(None),
        }
    }

    /// Follows `ingest:domain:end` events on `bus`: each completed ingest that names a
    /// snapshot is loaded. Runs until the bus closes or the task is aborted.
    pub async fn follow(
        self: &Arc<Self>,
        bus: &dyn EventBus,
    ) -> Result<tokio::task::JoinHandle<()>, EventBusError> {
        let mut sub = bus.subscribe(INGEST_DOMAIN_END).await?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(delivery) = sub.next().await {
                let Delivery::Event { event, .. } = delivery else {
                    continue;
                };
                let p = &event.payload;
                let (Some(domain), Some(location)) = (
                    p.get("domain_id").and_then(Value::as_str),
                    p.get("vector_store_path").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if p.get("status").and_then(Value::as_str) != Some("completed") {
                    continue;
                }
                let tenant = p.get("tenant_id").and_then(Value::as_str);
                match me.sync(domain, tenant, location).await {
                    Ok(n) => {
                        tracing::info!(domain, location, chunks = n, "replica loaded a new index")
                    }
                    Err(e) => tracing::warn!(domain, error = %e, "replica keeps its index"),
                }
            }
        }))
    }
}
