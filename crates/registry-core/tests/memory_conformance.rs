//! The registry conformance suite on `InMemoryBackend`, plus its tombstone compaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::conformance::{Capabilities, Harness};
use dynreg_registry_core::{ChangeFeed, InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::json;

/// Memory stores are named maps: opening a name twice gives two clones of one backend.
#[derive(Default)]
struct MemoryHarness {
    stores: Mutex<HashMap<String, InMemoryBackend>>,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        let b = self
            .stores
            .lock()
            .unwrap()
            .entry(store.to_owned())
            .or_default()
            .clone();
        b.initialize().await.unwrap();
        Arc::new(b)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: Duration::ZERO,
        }
    }
}

dynreg_registry_core::registry_conformance_tests!(Some(MemoryHarness::default()));

#[tokio::test]
async fn compacted_tombstones_expire_old_cursors() {
    let b = InMemoryBackend::with_tombstone_retention(2);
    for i in 0..4 {
        b.register(&format!("b{i}"), json!({})).await.unwrap();
    }
    let cursor = b.current_revision().await.unwrap();
    for i in 0..3 {
        b.unregister(&format!("b{i}")).await.unwrap();
    }
    match b.changes_since(cursor).await.unwrap() {
        ChangeFeed::Expired {
            oldest_available, ..
        } => assert!(oldest_available > cursor),
        other => panic!("expected Expired, got {other:?}"),
    }
    let ChangeFeed::Changes { changes, .. } = b.changes_since(cursor + 1).await.unwrap() else {
        panic!("the newest two deletions are still known")
    };
    assert_eq!(changes.len(), 2);
}
