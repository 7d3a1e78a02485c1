//! The conformance suite against the S3 backend: on `object_store`'s in-memory store (always;
//! it honours ETag conditions, so the compare-and-swap path is exercised), and on a local
//! S3-compatible server when `DYNREG_TEST_S3_ENDPOINT` is set.

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::sync::Arc;

use dynreg_knowledge_store::conformance::Store;
use dynreg_knowledge_store::{S3Config, S3KnowledgeBackend};

mod in_memory_store {
    use super::*;

    async fn make() -> Option<Store> {
        let store = Arc::new(object_store::memory::InMemory::new());
        let a = S3KnowledgeBackend::with_store(store.clone(), "mem", "knowledge/", 64);
        let b = S3KnowledgeBackend::with_store(store, "mem", "knowledge/", 64);
        Some(Store {
            backend: Arc::new(a),
            sibling: Arc::new(b),
            guard: Box::new(()),
        })
    }

    dynreg_knowledge_store::knowledge_conformance_tests!(make);
}

fn server_config() -> Option<S3Config> {
    let Ok(endpoint) = std::env::var("DYNREG_TEST_S3_ENDPOINT") else {
        println!("skipped: s3 tests (DYNREG_TEST_S3_ENDPOINT unset)");
        return None;
    };
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint_url = Some(endpoint);
    cfg.region = Some("us-east-1".into());
    cfg.aws_access_key_id = Some("test".into());
    cfg.aws_secret_access_key = Some("test".into());
    cfg.prefix = format!("t-{:016x}/knowledge", rand::random::<u64>());
    Some(cfg)
}

mod server {
    use super::*;

    async fn make() -> Option<Store> {
        let cfg = server_config()?;
        let a = S3KnowledgeBackend::connect(cfg.clone())
            .await
            .expect("connect");
        let b = S3KnowledgeBackend::connect(cfg).await.expect("connect");
        Some(Store {
            backend: Arc::new(a),
            sibling: Arc::new(b),
            guard: Box::new(()),
        })
    }

    dynreg_knowledge_store::knowledge_conformance_tests!(make);
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
