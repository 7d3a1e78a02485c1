//! The conformance suite against the S3 backend: on `object_store`'s in-memory store (always;
//! it honours ETag conditions, so the compare-and-swap path is exercised), and on a local
//! S3-compatible server when `DYNREG_TEST_S3_ENDPOINT` is set.

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use dynreg_knowledge_store::conformance::{Capabilities, Harness};
use dynreg_knowledge_store::{
    ChangeDetectionMode, IngestionStatus, KnowledgeBackend, KnowledgeBackendExt,
    KnowledgeKeyKind as K, Metadata, PutOptions, S3Config, S3KnowledgeBackend, StatusUpdate,
    TenantContext,
};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

#[path = "s3/versioning.rs"]
mod versioning;

#[path = "s3/recovery.rs"]
mod recovery;

#[path = "s3/journal.rs"]
mod journal;

#[path = "s3/test_store.rs"]
mod test_store;

/// The glob matcher the suite is given: the event bus's.
fn bus_glob_matches(pattern: &str, topic: &str) -> bool {
    dynreg_event_bus::Glob::new(pattern).unwrap().matches(topic)
}

mod in_memory_store {
    use super::*;

    /// Each store is an `object_store` in-memory store; two opens of a name are two backends
    /// on one store.
    #[derive(Default)]
    struct InMemoryHarness {
        stores: Mutex<HashMap<String, Arc<InMemory>>>,
    }

    #[async_trait]
    impl Harness for InMemoryHarness {
        async fn open(&self, store: &str) -> Arc<dyn KnowledgeBackend> {
            let object_store = Arc::clone(
                self.stores
                    .lock()
                    .unwrap()
                    .entry(store.to_owned())
                    .or_default(),
            );
            Arc::new(S3KnowledgeBackend::with_store(
                object_store,
                "mem",
                "knowledge/",
                64,
            ))
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities {
                snapshot_objects: true,
            }
        }

        fn glob_matches(&self, pattern: &str, topic: &str) -> bool {
            bus_glob_matches(pattern, topic)
        }
    }

    dynreg_knowledge_store::knowledge_conformance_tests!(Some(InMemoryHarness::default()));
}

fn server_config() -> Option<S3Config> {
    dynreg_knowledge_store::conformance::s3_server_config()
}

/// Each store is a prefix of the server's bucket, made from `cfg` with a random prefix of its
/// own (as [`server_config`] makes one); two opens of a name are two backends on one prefix.
struct ServerHarness {
    cfg: S3Config,
    prefixes: Mutex<HashMap<String, String>>,
}

impl ServerHarness {
    fn new(cfg: Option<S3Config>) -> Option<Self> {
        Some(Self {
            cfg: cfg?,
            prefixes: Mutex::default(),
        })
    }
}

#[async_trait]
impl Harness for ServerHarness {
    async fn open(&self, store: &str) -> Arc<dyn KnowledgeBackend> {
        let mut cfg = self.cfg.clone();
        cfg.prefix = self
            .prefixes
            .lock()
            .unwrap()
            .entry(store.to_owned())
            .or_insert_with(|| format!("t-{:016x}/knowledge", rand::random::<u64>()))
            .clone();
        Arc::new(S3KnowledgeBackend::connect(cfg).await.expect("connect"))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshot_objects: self.cfg.change_detection_mode != ChangeDetectionMode::S3Versioning,
        }
    }

    fn glob_matches(&self, pattern: &str, topic: &str) -> bool {
        bus_glob_matches(pattern, topic)
    }
}

mod server {
    use super::*;

    dynreg_knowledge_store::knowledge_conformance_tests!(ServerHarness::new(server_config()));
}

#[tokio::test]
async fn factory_builds_s3_and_refuses_a_missing_bucket_name() {
    let err = dynreg_knowledge_store::create_knowledge_backend("s3", &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bucket"), "{err}");
    let Some(cfg) = server_config() else {
        return;
    };
    let b = dynreg_knowledge_store::create_knowledge_backend(
        "S3",
        &serde_json::json!({
            "bucket": cfg.bucket, "prefix": cfg.prefix, "region": "us-east-1",
            "endpoint_url": cfg.endpoint_url, "aws_access_key_id": "test",
            "aws_secret_access_key": "test"
        }),
    )
    .await
    .unwrap();
    assert_eq!(b.kind(), "s3");
    let missing = dynreg_knowledge_store::create_knowledge_backend(
        "s3",
        &serde_json::json!({
            "bucket": format!("no-such-bucket-{:08x}", rand::random::<u32>()),
            "endpoint_url": cfg.endpoint_url, "aws_access_key_id": "test",
            "aws_secret_access_key": "test"
        }),
    )
    .await
    .unwrap_err();
    assert!(missing.to_string().contains("no-such-bucket"), "{missing}");
}

fn in_memory(prefix: &str) -> (Arc<InMemory>, S3KnowledgeBackend) {
    let store = Arc::new(InMemory::new());
    let b = S3KnowledgeBackend::with_store(store.clone(), "mem", prefix, 64);
    (store, b)
}

async fn all_keys(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// The exact S3 / EventBridge wildcard strings, tenant variants included.
#[test]
fn key_patterns_are_the_originals_wildcards() {
    let (_, b) = in_memory("kb/");
    let single = TenantContext::SingleTenant;
    let acme = TenantContext::bound("acme");
    let cases = [
        (K::Content, None, &single, "kb/*/content/*"),
        (K::Content, Some("acme"), &single, "kb/acme/content/*"),
        (K::Content, Some("acme"), &acme, "kb/acme/content/*"),
        (K::Metadata, None, &single, "kb/*/_metadata.json"),
        (K::Metadata, Some("acme"), &single, "kb/acme/_metadata.json"),
        (K::Snapshot, None, &single, "kb/*/_snapshots/*"),
        (K::Snapshot, Some("acme"), &single, "kb/acme/_snapshots/*"),
        (
            K::Metadata,
            Some("kb"),
            &acme,
            "kb/_scoped/tenants/acme/_state/kb/_metadata.json",
        ),
        (
            K::Snapshot,
            None,
            &acme,
            "kb/_scoped/tenants/acme/_state/*/_snapshots/*",
        ),
    ];
    for (kind, domain, ctx, expected) in cases {
        assert_eq!(b.key_pattern(kind, domain, ctx).unwrap(), expected);
    }
    let err = b.key_pattern(K::Unknown, None, &single).unwrap_err();
    assert!(err.to_string().contains("UNKNOWN"), "{err}");
    let (_, bare) = in_memory("");
    assert_eq!(
        bare.key_pattern(K::Content, None, &single).unwrap(),
        "*/content/*"
    );
}

/// A prefix with a `content` segment no longer makes every key content.
#[test]
fn a_prefix_with_a_content_segment_classifies_by_position() {
    let (_, b) = in_memory("data/content/kb");
    assert_eq!(
        b.classify_key("data/content/kb/acme/_metadata.json"),
        K::Metadata
    );
    assert_eq!(
        b.classify_key("data/content/kb/acme/_snapshots/v.json"),
        K::Snapshot
    );
    assert_eq!(
        b.classify_key("data/content/kb/acme/content/a.md"),
        K::Content
    );
    assert_eq!(
        b.classify_key("data/content/kb/_scoped/tenants/t/_state/acme/_metadata.json"),
        K::Metadata
    );
    assert_eq!(b.classify_key("data/content/other/a.md"), K::Unknown);
}

/// Every object one ingest cycle leaves in the bucket is classified as what it is; exactly
/// one is content and the content pattern matches no state object (the feedback loop).
async fn feedback_loop(store: &dyn ObjectStore, b: &S3KnowledgeBackend, d: &str) {
    b.create_kb(d, Metadata::new()).await.unwrap();
    b.put_file(
        d,
        "intro.md",
        Bytes::from_static(b"# Hello"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    b.get_checksum(d).await.unwrap();
    let t = TenantContext::bound("t");
    b.set_ingestion_status_in(&t, d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    b.get_checksum_in(&t, d).await.unwrap();
    let keys: Vec<String> = all_keys(store)
        .await
        .into_iter()
        .filter(|k| k.starts_with(b.prefix()))
        .collect();
    let glob = dynreg_event_bus::Glob::new(
        &b.key_pattern(K::Content, Some(d), &TenantContext::SingleTenant)
            .unwrap(),
    )
    .unwrap();
    let content: Vec<_> = keys
        .iter()
        .filter(|k| b.classify_key(k) == K::Content)
        .collect();
    assert_eq!(content.len(), 1, "{keys:?}");
    assert!(glob.matches(content[0]));
    let state: Vec<_> = keys
        .iter()
        .filter(|k| b.classify_key(k) != K::Content)
        .collect();
    assert_eq!(
        state.len(),
        5,
        "index, its journal record, snapshot, tenant document, tenant snapshot: {keys:?}"
    );
    for k in state {
        assert_ne!(b.classify_key(k), K::Unknown, "{k}");
        assert!(!glob.matches(k), "{k}");
    }
}

#[tokio::test]
async fn feedback_loop_reproduction_in_memory_store() {
    let (store, b) = in_memory("rag/content");
    feedback_loop(&*store, &b, "acme").await;
}

/// Tenant documents are at the original's keys; `delete_kb` removes the domain's tenant
/// objects under every prefix and nothing of another domain.
#[tokio::test]
async fn tenant_objects_and_delete_kb() {
    let (store, b) = in_memory("kb/");
    let acme = TenantContext::bound("acme");
    let pref = TenantContext::prefixed("acme", "x/gone/");
    for d in ["gone", "kept"] {
        b.create_kb(d, Metadata::new()).await.unwrap();
        b.put_file(d, "a.md", Bytes::from_static(b"a"), PutOptions::default())
            .await
            .unwrap();
        for ctx in [&acme, &pref] {
            b.set_ingestion_status_in(ctx, d, StatusUpdate::new(IngestionStatus::Ready))
                .await
                .unwrap();
            b.get_checksum_in(ctx, d).await.unwrap();
        }
    }
    let doc = store
        .get(&"kb/_scoped/tenants/acme/_state/gone/_metadata.json".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["info"]["ingestion_status"], "ready");
    assert!(doc.get("files").is_none());
    assert!(b.delete_kb("gone").await.unwrap());
    let keys = all_keys(&*store).await;
    assert!(
        keys.iter()
            .all(|k| !k.contains("/gone/_") && !k.starts_with("kb/gone/")),
        "{keys:?}"
    );
    let kept_tenant: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with("kb/_scoped/") && k.ends_with("kept/_metadata.json"))
        .collect();
    assert_eq!(kept_tenant.len(), 2, "{keys:?}");
}

/// `change_detection_mode`: unknown values are refused naming the value (in code and from
/// configuration, before anything connects); the configured mode reaches the backend.
#[tokio::test]
async fn change_detection_mode_is_checked_and_threaded() {
    let err = "bogus".parse::<ChangeDetectionMode>().unwrap_err();
    assert!(err.to_string().contains("\"bogus\""), "{err}");
    let err = dynreg_knowledge_store::create_knowledge_backend(
        "s3",
        &serde_json::json!({"bucket": "b", "change_detection_mode": "bogus"}),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bogus") && msg.contains("change_detection_mode"),
        "{msg}"
    );
    let cfg = S3Config::from_json(
        &serde_json::json!({"bucket": "b", "change_detection_mode": "s3_versioning"}),
    )
    .unwrap();
    assert_eq!(cfg.change_detection_mode, ChangeDetectionMode::S3Versioning);
    let (_, b) = in_memory("kb/");
    assert_eq!(b.change_detection_mode(), ChangeDetectionMode::Snapshot);
    let Some(mut cfg) = server_config() else {
        return;
    };
    cfg.change_detection_mode = ChangeDetectionMode::S3Versioning;
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    assert_eq!(b.change_detection_mode(), ChangeDetectionMode::S3Versioning);
}

/// `s3_versioning` on a store that returns no version ids (object_store's in-memory store,
/// like a bucket with versioning off): no snapshot objects, an old version is InvalidVersion
/// and therefore "changed" — the safe full re-ingest, never a wrong diff.
#[tokio::test]
async fn s3_versioning_without_version_ids_falls_back_safely() {
    let store = Arc::new(InMemory::new());
    let b = S3KnowledgeBackend::with_store(store.clone(), "mem", "kb/", 64)
        .with_change_detection_mode(ChangeDetectionMode::S3Versioning);
    versioning::falls_back_safely(&*store, &b).await;
}

#[tokio::test]
async fn feedback_loop_reproduction_s3_server() {
    let Some(cfg) = server_config() else {
        return;
    };
    let store = versioning::raw_store(&cfg);
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    feedback_loop(&*store, &b, "acme").await;
}

#[tokio::test]
async fn s3_versioning_on_an_unversioned_bucket_falls_back_safely() {
    let Some(mut cfg) = server_config() else {
        return;
    };
    cfg.change_detection_mode = ChangeDetectionMode::S3Versioning;
    let store = versioning::raw_store(&cfg);
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    versioning::falls_back_safely(&*store, &b).await;
}

#[tokio::test]
async fn s3_versioning_minimal_diff_on_a_versioned_bucket() {
    let Some(cfg) = versioning::versioned_config(ChangeDetectionMode::S3Versioning) else {
        return;
    };
    let store = versioning::raw_store(&cfg);
    let a = S3KnowledgeBackend::connect(cfg.clone()).await.unwrap();
    let sibling = S3KnowledgeBackend::connect(cfg).await.unwrap();
    versioning::minimal_diff(&*store, &a, &sibling).await;
}

#[tokio::test]
async fn s3_versioning_keeps_a_bounded_index() {
    let Some(mut cfg) = versioning::versioned_config(ChangeDetectionMode::S3Versioning) else {
        return;
    };
    cfg.snapshot_retention = 3;
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    versioning::bounded_index(&b).await;
}

#[tokio::test]
async fn snapshot_mode_minimal_diff_on_the_server() {
    let Some(cfg) = server_config() else {
        return;
    };
    let store = versioning::raw_store(&cfg);
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    let d = "d";
    b.create_kb(d, Metadata::new()).await.unwrap();
    for (p, c) in [("a.md", "A1"), ("b.md", "B1")] {
        b.put_file(d, p, Bytes::from(c), PutOptions::default())
            .await
            .unwrap();
    }
    let v = b.get_checksum(d).await.unwrap();
    b.put_file(d, "a.md", Bytes::from("A2"), PutOptions::default())
        .await
        .unwrap();
    b.put_file(d, "c.md", Bytes::from("C1"), PutOptions::default())
        .await
        .unwrap();
    b.delete_file(d, "b.md").await.unwrap();
    let cs = b.list_changes_since(d, &v).await.unwrap();
    assert_eq!(
        (cs.added, cs.modified, cs.deleted),
        (
            vec!["c.md".to_owned()],
            vec!["a.md".to_owned()],
            vec!["b.md".to_owned()]
        )
    );
    let snaps = all_keys(&*store)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{}d/_snapshots/", b.prefix())))
        .count();
    assert!(snaps >= 2, "snapshot mode writes snapshot objects");
}

/// The conformance suite in `s3_versioning` mode against a versioned bucket, on the cases of
/// change detection, state and concurrency. Its harness declares no `snapshot_objects` (this
/// mode writes no snapshot objects; its version index is shared by every tenant), so the cases
/// that count them or tenant snapshot lineages are left out.
mod versioned_server {
    use super::*;

    dynreg_knowledge_store::knowledge_conformance_tests!(@cases
        ServerHarness::new(versioning::versioned_config(ChangeDetectionMode::S3Versioning));
        create_kb_defaults, delete_kb_removes_everything, put_and_get_file,
        conditional_status_writes, conditional_writes_race_one_winner,
        checksum_is_the_original_identity, unchanged_then_changed, empty_baseline_round_trips,
        diff_disjoint_and_correct, unretained_version, no_spurious_reingest_then_detects,
        concurrent_puts_lose_nothing, two_instances_lose_nothing, sibling_sees_delete_and_recreate,
        batch_upload, tenant_none_equals_single_tenant, tenant_status_isolated,
        tenant_view_default_and_real_counts, tenant_diff_falls_back_to_shared_lineage,
        tenant_conditional_writes, delete_kb_removes_tenant_state, tenant_namespace_disjoint);
}

/// With no keys and no region in the config, the standard AWS chain supplies them (here the
/// `AWS_*` environment the test services set); the registry's key spellings are accepted and
/// no secret shows in `Debug`.
#[tokio::test]
async fn credentials_and_region_come_from_the_aws_chain_when_unset() {
    let cfg = S3Config::from_json(&serde_json::json!({
        "bucket": "b", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t-key",
        "session_token": "t0ken-value", "endpoint": "http://127.0.0.1:9"
    }))
    .unwrap();
    assert_eq!(cfg.aws_access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(cfg.aws_session_token.as_deref(), Some("t0ken-value"));
    assert_eq!(cfg.endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("t0ken"),
        "{shown}"
    );
    let (Ok(endpoint), Ok(_)) = (
        std::env::var("DYNREG_TEST_S3_ENDPOINT"),
        std::env::var("AWS_ACCESS_KEY_ID"),
    ) else {
        println!(
            "skipped: s3 credential chain (DYNREG_TEST_S3_ENDPOINT or AWS_ACCESS_KEY_ID unset)"
        );
        return;
    };
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    let cfg = S3Config::from_json(&serde_json::json!({
        "bucket": bucket, "endpoint_url": endpoint,
        "prefix": format!("chain-{:016x}/knowledge", rand::random::<u64>()),
    }))
    .unwrap();
    assert!(cfg.aws_access_key_id.is_none() && cfg.region.is_none());
    let b = S3KnowledgeBackend::connect(cfg).await.unwrap();
    b.create_kb("kb", Metadata::default()).await.unwrap();
    b.put_file(
        "kb",
        "a.md",
        Bytes::from_static(b"# a"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        &b.get_file("kb", "a.md").await.unwrap().unwrap()[..],
        b"# a"
    );
}

/// Object keys are the paths as written — unicode, spaces, `%`, `#`, `~` — as the original
/// writes them, not percent-encoded into other keys (which the original could not find).
#[tokio::test]
async fn object_keys_are_the_paths_as_written() {
    let store = Arc::new(InMemory::new());
    let b = S3KnowledgeBackend::with_store(store.clone(), "bucket", "knowledge/", 10);
    b.create_kb("kb", Metadata::default()).await.unwrap();
    let path = "docs/日本語 guide #1 ~100%.md";
    b.put_file("kb", path, Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        keys.iter()
            .any(|k| k == "knowledge/kb/content/docs/日本語 guide #1 ~100%.md"),
        "{keys:?}"
    );
    assert_eq!(&b.get_file("kb", path).await.unwrap().unwrap()[..], b"x");
}
