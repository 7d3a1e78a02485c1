//! The conformance suite against the in-memory backend, plus its backend-specific checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dynreg_knowledge_store::conformance::{Capabilities, Harness};
use dynreg_knowledge_store::{
    KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
};

/// Memory stores are named backends: opening a name twice gives two clones of one backend.
#[derive(Default)]
struct MemoryHarness {
    stores: Mutex<HashMap<String, MemoryKnowledgeBackend>>,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn open(&self, store: &str) -> Arc<dyn KnowledgeBackend> {
        let mut stores = self.stores.lock().unwrap();
        Arc::new(stores.entry(store.to_owned()).or_default().clone())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshot_objects: true,
        }
    }

    fn glob_matches(&self, pattern: &str, topic: &str) -> bool {
        dynreg_event_bus::Glob::new(pattern).unwrap().matches(topic)
    }
}

dynreg_knowledge_store::knowledge_conformance_tests!(Some(MemoryHarness::default()));

#[tokio::test]
async fn snapshots_are_bounded_by_retention() {
    let b = MemoryKnowledgeBackend::with_retention(3);
    b.create_kb("d", Metadata::new()).await.unwrap();
    let mut versions = Vec::new();
    for i in 0..5 {
        b.put_file("d", "a.md", format!("v{i}").into(), PutOptions::default())
            .await
            .unwrap();
        versions.push(b.get_checksum("d").await.unwrap());
    }
    // The two oldest were evicted; the last three still diff.
    assert!(b.list_changes_since("d", &versions[0]).await.is_err());
    assert!(b.list_changes_since("d", &versions[1]).await.is_err());
    let cs = b.list_changes_since("d", &versions[2]).await.unwrap();
    assert_eq!(cs.modified, vec!["a.md"]);
    assert!(b.has_changes_since("d", &versions[0]).await.unwrap());
}

#[tokio::test]
async fn factory_builds_memory_case_insensitively_and_refuses_unknown_kinds() {
    let b = dynreg_knowledge_store::create_knowledge_backend("Memory", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(b.kind(), "memory");
    let err = dynreg_knowledge_store::create_knowledge_backend("ftp", &serde_json::json!({}))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"ftp\"") && msg.contains("memory"), "{msg}");
}

#[cfg(not(feature = "file"))]
#[tokio::test]
async fn a_kind_whose_feature_is_off_names_the_feature() {
    let err = dynreg_knowledge_store::create_knowledge_backend("file", &serde_json::json!({}))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"file\"") && msg.contains("feature"), "{msg}");
}

#[cfg(not(feature = "s3"))]
#[tokio::test]
async fn s3_without_its_feature_names_the_feature() {
    let err =
        dynreg_knowledge_store::create_knowledge_backend("s3", &serde_json::json!({"bucket": "b"}))
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"s3\"") && msg.contains("\"s3\" of dynreg-knowledge-store"),
        "{msg}"
    );
}

/// The memory backend's keys are the object layout with an empty root — the same keys its
/// state-write events carry — so its patterns are real globs, not the original's `""` (which
/// made `subscribe_to_changes` subscribe to a topic nothing is ever published on).
#[test]
fn key_patterns_are_real_globs_over_the_memory_keys() {
    use dynreg_knowledge_store::{KnowledgeKeyKind as K, TenantContext};
    let b = MemoryKnowledgeBackend::new();
    let single = TenantContext::SingleTenant;
    let acme = TenantContext::bound("acme");
    let cases = [
        (K::Content, None, &single, "*/content/*"),
        (K::Content, Some("acme"), &acme, "acme/content/*"),
        (K::Metadata, None, &single, "*/_metadata.json"),
        (K::Metadata, Some("acme"), &single, "acme/_metadata.json"),
        (K::Snapshot, Some("acme"), &single, "acme/_snapshots/*"),
        (
            K::Metadata,
            Some("kb"),
            &acme,
            "_scoped/tenants/acme/_state/kb/_metadata.json",
        ),
        (
            K::Snapshot,
            None,
            &acme,
            "_scoped/tenants/acme/_state/*/_snapshots/*",
        ),
    ];
    for (kind, domain, ctx, expected) in cases {
        assert_eq!(b.key_pattern(kind, domain, ctx).unwrap(), expected);
    }
    assert!(b.key_pattern(K::Unknown, None, &single).is_err());
}
