//! State-write observability: every metadata (index or status) write and
//! every snapshot write is reported as a [`StateWrite`]: first to every async
//! [`StateWriteObserver`] added with [`StateEvents::add_observer`], awaited in registration
//! order (the event-bus bridge `dynreg_hot_reload::also_publish_to` is one: it publishes an
//! `Event` of type `custom` on the bus topic `ingest:metadata:write` /
//! `ingest:snapshot:write`, and a failed publish is logged, never fails the write), then to
//! local callbacks registered with [`StateEvents::on_state_write`].
//!
//! Topics are the original's stable strings; the payload is `{domain_id, key, kind, byte_size}`.

use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Topic of index/status writes.
pub const INGEST_METADATA_WRITE: &str = "ingest:metadata:write";
/// Topic of snapshot writes.
pub const INGEST_SNAPSHOT_WRITE: &str = "ingest:snapshot:write";
/// Topic of ingestion start (published by the ingestion layer, declared here for reuse).
pub const INGEST_DOMAIN_START: &str = "ingest:domain:start";
/// Topic of ingestion end (published by the ingestion layer, declared here for reuse).
pub const INGEST_DOMAIN_END: &str = "ingest:domain:end";

/// What a storage key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnowledgeKeyKind {
    /// A raw knowledge file.
    Content,
    /// The index / status document (`_metadata.json`).
    Metadata,
    /// A `{path: checksum}` snapshot.
    Snapshot,
    /// Anything else.
    Unknown,
}

impl KnowledgeKeyKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Metadata => "metadata",
            Self::Snapshot => "snapshot",
            Self::Unknown => "unknown",
        }
    }
}

/// One state write a backend made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The knowledge base written.
    pub domain_id: String,
    /// The backend's key of the written document (absolute path for `file`, object key for `s3`).
    pub key: String,
    /// `Metadata` or `Snapshot`.
    pub kind: KnowledgeKeyKind,
    /// Bytes written.
    pub byte_size: u64,
    /// The tenant whose state was written; `None` for the shared (single-tenant) state.
    pub tenant_id: Option<String>,
}

impl StateWrite {
    /// The topic this write is published on.
    pub fn topic(&self) -> &'static str {
        match self.kind {
            KnowledgeKeyKind::Snapshot => INGEST_SNAPSHOT_WRITE,
            _ => INGEST_METADATA_WRITE,
        }
    }

    /// The original's payload: `{"domain_id", "key", "kind", "byte_size"}`, plus `"tenant_id"`
    /// for a tenant's state (what the original's `TenantFilteredCallback` filters on).
    pub fn payload(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("domain_id".into(), self.domain_id.clone().into());
        m.insert("key".into(), self.key.clone().into());
        m.insert("kind".into(), self.kind.as_str().into());
        m.insert("byte_size".into(), self.byte_size.into());
        if let Some(t) = &self.tenant_id {
            m.insert("tenant_id".into(), t.clone().into());
        }
        m
    }
}

/// A local state-write callback.
pub type StateWriteCallback = Arc<dyn Fn(&StateWrite) + Send + Sync>;

/// An async observer of state writes, awaited inside the write before the local callbacks run
/// (the event-bus bridge `dynreg_hot_reload::also_publish_to` is one). An observer must not
/// fail the write: it handles (logs) its own errors.
#[async_trait]
pub trait StateWriteObserver: Send + Sync + 'static {
    /// Called once per state write, in the order observers were added.
    async fn on_state_write(&self, write: &StateWrite);
}

/// The observers of one backend's state writes. Cloning shares the registrations.
#[derive(Clone, Default)]
pub struct StateEvents {
    callbacks: Arc<RwLock<Vec<StateWriteCallback>>>,
    observers: Arc<RwLock<Vec<Arc<dyn StateWriteObserver>>>>,
}

impl fmt::Debug for StateEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.callbacks.read().map(|c| c.len()).unwrap_or(0);
        let o = self.observers.read().map(|o| o.len()).unwrap_or(0);
        f.debug_struct("StateEvents")
            .field("callbacks", &n)
            .field("observers", &o)
            .finish()
    }
}

impl StateEvents {
    /// Registers a callback run (in registration order) after every state write.
    pub fn on_state_write(&self, callback: impl Fn(&StateWrite) + Send + Sync + 'static) {
        if let Ok(mut c) = self.callbacks.write() {
            c.push(Arc::new(callback));
        }
    }

    /// Adds an async observer, awaited (in registration order, before the callbacks) on every
    /// later state write.
    pub fn add_observer(&self, observer: Arc<dyn StateWriteObserver>) {
        if let Ok(mut o) = self.observers.write() {
            o.push(observer);
        }
    }

    /// Reports one write to every observer: async observers first, then callbacks.
    pub(crate) async fn emit(&self, write: StateWrite) {
        let observers: Vec<Arc<dyn StateWriteObserver>> = match self.observers.read() {
            Ok(o) => o.clone(),
            Err(_) => Vec::new(),
        };
        for observer in observers {
            observer.on_state_write(&write).await;
        }
        let callbacks: Vec<StateWriteCallback> = match self.callbacks.read() {
            Ok(c) => c.clone(),
            Err(_) => Vec::new(),
        };
        for cb in callbacks {
            cb(&write);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl StateWriteObserver for Recorder {
        async fn on_state_write(&self, write: &StateWrite) {
            tokio::task::yield_now().await;
            let line = format!("{}:{}", self.name, write.topic());
            self.log.lock().unwrap().push(line);
        }
    }

    #[tokio::test]
    async fn observers_run_in_order_before_callbacks() {
        let events = StateEvents::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        events.on_state_write(move |w| sink.lock().unwrap().push(format!("cb:{}", w.topic())));
        for name in ["first", "second"] {
            events.add_observer(Arc::new(Recorder {
                name,
                log: log.clone(),
            }));
        }
        events
            .emit(StateWrite {
                domain_id: "d".into(),
                key: "d/_snapshots/v.json".into(),
                kind: KnowledgeKeyKind::Snapshot,
                byte_size: 2,
                tenant_id: None,
            })
            .await;
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                format!("first:{INGEST_SNAPSHOT_WRITE}"),
                format!("second:{INGEST_SNAPSHOT_WRITE}"),
                format!("cb:{INGEST_SNAPSHOT_WRITE}"),
            ]
        );
        assert!(format!("{events:?}").contains("observers: 2"));
    }
}
