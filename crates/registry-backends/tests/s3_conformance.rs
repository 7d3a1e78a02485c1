//! The registry conformance suite on the S3 backend, against the S3-compatible server at
//! `DYNREG_TEST_S3_ENDPOINT` (bucket `DYNREG_TEST_S3_BUCKET`, default `dynreg-test`); every
//! case is skipped when the variable is unset. Each storage is the prefix
//! `conformance/<store>/`.
#![cfg(feature = "s3")]
#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::S3Backend;
use dynreg_registry_core::conformance::{Capabilities, Harness, skipped, unique_store};
use dynreg_registry_core::{ChangeFeed, RegistryBackend, RegistryBackendExt, RegistryError};
use serde_json::{Value, json};

const TOUCH_MS: u64 = 100;

struct S3Harness {
    endpoint: String,
    bucket: String,
}

fn harness() -> Option<S3Harness> {
    let Ok(endpoint) = std::env::var("DYNREG_TEST_S3_ENDPOINT") else {
        return skipped("s3", "DYNREG_TEST_S3_ENDPOINT");
    };
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    Some(S3Harness { endpoint, bucket })
}

impl S3Harness {
    fn config(&self, prefix: &str, extra: Value) -> Value {
        let mut config = json!({
            "bucket": self.bucket,
            "prefix": prefix,
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test",
            "touch_resolution_ms": TOUCH_MS,
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        config
    }

    async fn open_with(&self, prefix: &str, extra: Value) -> S3Backend {
        let b = S3Backend::from_config(&self.config(prefix, extra)).unwrap();
        b.initialize().await.unwrap();
        b
    }
}

#[async_trait]
impl Harness for S3Harness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        Arc::new(
            self.open_with(&format!("conformance/{store}/"), json!({}))
                .await,
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: Duration::from_millis(TOUCH_MS),
        }
    }
}

dynreg_registry_core::registry_conformance_tests!(harness());

#[test]
fn config_errors_name_the_key() {
    let err = S3Backend::from_config(&json!({})).unwrap_err().to_string();
    assert!(err.contains("\"bucket\""), "{err}");
    let err = S3Backend::from_config(&json!({"bucket": "b", "prefix": "a/../b"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"prefix\""), "{err}");
    let err = S3Backend::from_config(&json!({"bucket": "b", "endpoint": "127.0.0.1:5000"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"endpoint\""), "{err}");
    let err = S3Backend::from_config(&json!({"bucket": "b", "log_retention": 0}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"log_retention\""), "{err}");
}

#[tokio::test]
async fn compaction_expires_old_cursors() {
    let Some(h) = harness() else { return };
    let prefix = format!("conformance/{}/", unique_store("s3_compact"));
    let b = h.open_with(&prefix, json!({"log_retention": 10})).await;
    // Revision 64 triggers compaction of the records up to 54.
    for i in 0..64 {
        b.register(&format!("bot-{}", i % 8), json!({"i": i}))
            .await
            .unwrap();
    }
    assert_eq!(b.current_revision().await.unwrap(), 64);
    match b.changes_since(20).await.unwrap() {
        ChangeFeed::Expired {
            oldest_available,
            current_revision,
            ..
        } => {
            assert_eq!(oldest_available, 54);
            assert_eq!(current_revision, 64);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    let ChangeFeed::Changes {
        changes,
        current_revision,
    } = b.changes_since(54).await.unwrap()
    else {
        panic!("the horizon itself is answerable")
    };
    assert_eq!(current_revision, 64);
    assert_eq!(changes.len(), 8);
    // A new instance continues the revisions.
    let other = h.open_with(&prefix, json!({"log_retention": 10})).await;
    assert_eq!(
        other.register("late", json!({})).await.unwrap().revision,
        65
    );
    assert_eq!(other.count().await.unwrap(), 9);
}

#[tokio::test]
async fn a_corrupt_document_names_its_key() {
    let Some(h) = harness() else { return };
    let store = unique_store("s3_corrupt");
    let b = h
        .open_with(&format!("conformance/{store}/"), json!({}))
        .await;
    b.register("bot", json!({"a": 1})).await.unwrap();
    // Overwrite the document with a plain S3 PUT.
    use object_store::ObjectStoreExt;
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&h.bucket)
        .with_endpoint(&h.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let key =
        object_store::path::Path::parse(format!("conformance/{store}/bots/bot.json")).unwrap();
    raw.put(&key, b"{ not json".to_vec().into()).await.unwrap();
    let err = b.peek("bot").await.unwrap_err();
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("conformance/{store}/bots/bot.json")),
        "{err}"
    );
}

/// With no keys and no region in the config, the standard AWS chain supplies them (here the
/// `AWS_*` environment the test services set); the knowledge store's `aws_*` key names work,
/// and no secret shows in `Debug`.
#[tokio::test]
async fn credentials_and_region_come_from_the_aws_chain_when_unset() {
    let cfg = dynreg_registry_backends::config::S3Config::from_json(&json!({
        "bucket": "b", "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "s3cr3t-key",
        "aws_session_token": "t0ken-value", "region_name": "eu-west-1"
    }))
    .unwrap();
    assert_eq!(cfg.session_token.as_deref(), Some("t0ken-value"));
    assert_eq!(cfg.region.as_deref(), Some("eu-west-1"));
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("t0ken"),
        "{shown}"
    );
    let Some(h) = harness() else { return };
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        println!("skipped: s3 credential chain (AWS_ACCESS_KEY_ID unset)");
        return;
    }
    let b = S3Backend::from_config(&json!({
        "bucket": h.bucket, "endpoint_url": h.endpoint,
        "prefix": format!("chain_{:x}/", std::process::id()),
    }))
    .unwrap();
    b.initialize().await.unwrap();
    b.register("chain", json!({"v": 1})).await.unwrap();
    assert_eq!(b.peek_config("chain").await.unwrap().unwrap()["v"], 1);
}

/// An application's own object store can carry the registry (here `object_store`'s in-memory
/// store, which honours conditional PUTs).
#[tokio::test]
async fn a_registry_on_the_applications_own_store() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let b = S3Backend::from_store(store.clone(), "app-bucket", "apps/registry/").unwrap();
    b.initialize().await.unwrap();
    b.register("own", json!({"v": 1})).await.unwrap();
    let other = S3Backend::from_store(store, "app-bucket", "apps/registry/").unwrap();
    other.initialize().await.unwrap();
    assert_eq!(other.peek_config("own").await.unwrap().unwrap()["v"], 1);
    assert!(
        S3Backend::from_store(Arc::new(object_store::memory::InMemory::new()), "b", "../x")
            .is_err()
    );
}

/// A server that stops answering (frozen: connections stay up, nothing comes back) fails an
/// operation within `timeout_ms` per attempt and `retry_timeout_ms` in all instead of hanging
/// it, and the registry works again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_operations_within_the_deadline_and_recovers() {
    let Some(h) = harness() else { return };
    let hostport = h
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let target: std::net::SocketAddr = hostport.parse().unwrap();
    assert!(target.ip().is_loopback());
    let proxy = dynreg_event_bus::conformance::FreezableProxy::start(target).await;
    let proxied = S3Harness {
        endpoint: format!("http://127.0.0.1:{}", proxy.port),
        bucket: h.bucket.clone(),
    };
    let b = proxied
        .open_with(
            &format!("conformance/{}/", unique_store("frozen")),
            json!({"timeout_ms": 500, "max_retries": 1, "retry_timeout_ms": 3000}),
        )
        .await;
    b.register("f", json!({"v": 1})).await.unwrap();
    proxy.freeze(true);
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), b.register("f", json!({"v": 2})))
        .await
        .expect("the write returned instead of hanging")
        .unwrap_err();
    eprintln!(
        "a write to a frozen S3 failed after {:?}: {err}",
        t.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(30), b.peek("f"))
        .await
        .expect("the read returned instead of hanging")
        .unwrap_err();
    proxy.freeze(false);
    // The write that timed out may still have landed: its bytes were held, not lost. Either
    // way the registry answers again and takes a new write.
    let mut ok = false;
    for _ in 0..5 {
        if b.register("f", json!({"v": 3})).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(
        ok,
        "the registry did not recover after the server answered again"
    );
    assert_eq!(b.peek_config("f").await.unwrap().unwrap()["v"], 3);
}
