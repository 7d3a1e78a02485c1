//! `s3_versioning` change detection against an S3 server (`test_s3_snapshot_diff.py`): a
//! bucket with versioning enabled (created by the test with plain HTTP requests to
//! 127.0.0.1, the way the CI harness creates its bucket), and the fallback without versions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynreg_knowledge_store::{
    ChangeDetectionMode, IngestionStatus, KnowledgeBackend, KnowledgeBackendExt, KnowledgeError,
    Metadata, PutOptions, S3Config, S3KnowledgeBackend, StatusUpdate, TenantContext,
};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{all_keys, server_config};

const VERSIONED_BUCKET: &str = "dynreg-test-versioned";

/// A plain HTTP request to the local server; the status code.
fn http(host_port: &str, method: &str, path: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host_port).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The server config on a bucket with versioning enabled (created if needed), or `None` when
/// no server is configured or it is not on 127.0.0.1.
pub(super) fn versioned_config(mode: ChangeDetectionMode) -> Option<S3Config> {
    let mut cfg = server_config()?;
    let endpoint = cfg.endpoint_url.clone()?;
    let host_port = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    if !(host_port.starts_with("127.0.0.1:") || host_port.starts_with("localhost:")) {
        println!("skipped: versioned-bucket tests (the S3 endpoint {endpoint} is not local)");
        return None;
    }
    let created = http(host_port, "PUT", &format!("/{VERSIONED_BUCKET}"), "");
    assert!(
        matches!(created, Some(200 | 409)),
        "creating bucket {VERSIONED_BUCKET} answered {created:?}"
    );
    let body = concat!(
        r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
        "<Status>Enabled</Status></VersioningConfiguration>"
    );
    let enabled = http(
        host_port,
        "PUT",
        &format!("/{VERSIONED_BUCKET}?versioning"),
        body,
    );
    assert_eq!(
        enabled,
        Some(200),
        "enabling versioning on {VERSIONED_BUCKET}"
    );
    cfg.bucket = VERSIONED_BUCKET.into();
    cfg.change_detection_mode = mode;
    Some(cfg)
}

/// A plain object-store client on the test bucket, to look at what the backend wrote.
pub(super) fn raw_store(cfg: &S3Config) -> Arc<dyn ObjectStore> {
    let endpoint = cfg.endpoint_url.clone().unwrap_or_default();
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("object store client"),
    )
}

async fn put(b: &S3KnowledgeBackend, d: &str, p: &str, c: &'static str) {
    b.put_file(
        d,
        p,
        Bytes::from_static(c.as_bytes()),
        PutOptions::default(),
    )
    .await
    .unwrap();
}

async fn metadata_doc(
    store: &dyn ObjectStore,
    b: &S3KnowledgeBackend,
    d: &str,
) -> serde_json::Value {
    let key = format!("{}{d}/_metadata.json", b.prefix());
    let bytes = store
        .get(&key.as_str().into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn snapshot_objects(keys: &[String], b: &S3KnowledgeBackend) -> usize {
    keys.iter()
        .filter(|k| k.starts_with(b.prefix()) && k.contains("/_snapshots/"))
        .count()
}

/// Without version ids nothing is indexed: an old version is InvalidVersion, hence "changed";
/// the current identity and the empty baseline still diff; no snapshot object is written.
pub(super) async fn falls_back_safely(store: &dyn ObjectStore, b: &S3KnowledgeBackend) {
    assert_eq!(b.change_detection_mode(), ChangeDetectionMode::S3Versioning);
    let d = "d";
    b.create_kb(d, Metadata::new()).await.unwrap();
    put(b, d, "a.md", "A1").await;
    let stale = b.get_checksum(d).await.unwrap();
    put(b, d, "b.md", "B1").await;
    let err = b.list_changes_since(d, &stale).await.unwrap_err();
    assert!(
        matches!(err, KnowledgeError::InvalidVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("s3_versioning"), "{err}");
    assert!(b.has_changes_since(d, &stale).await.unwrap());
    let current = b.get_checksum(d).await.unwrap();
    assert!(b.list_changes_since(d, &current).await.unwrap().is_empty());
    assert_eq!(
        b.list_changes_since(d, "").await.unwrap().added,
        vec!["a.md", "b.md"]
    );
    assert_eq!(snapshot_objects(&all_keys(store).await, b), 0);
    let doc = metadata_doc(store, b, d).await;
    assert!(
        doc.get("dynreg_versions").is_none(),
        "no version ids, no index: {doc}"
    );
}

/// Versioning on: the minimal, disjoint diff from the object version history, for the writing
/// instance, a second instance and a tenant alike; no snapshot objects; the index lives in
/// the document.
pub(super) async fn minimal_diff(
    store: &dyn ObjectStore,
    a: &S3KnowledgeBackend,
    sibling: &S3KnowledgeBackend,
) {
    let d = "d";
    a.create_kb(d, Metadata::new()).await.unwrap();
    put(a, d, "a.md", "A1").await;
    put(a, d, "b.md", "B1").await;
    let v = a.get_checksum(d).await.unwrap();
    put(a, d, "a.md", "A2").await;
    let v2 = a.get_checksum(d).await.unwrap();
    put(a, d, "c.md", "C1").await;
    a.delete_file(d, "b.md").await.unwrap();
    // Status writes make object versions too, without disturbing the index.
    a.set_ingestion_status(d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let current = a.get_checksum(d).await.unwrap();
    for (who, b) in [("writer", a), ("sibling", sibling)] {
        let cs = b.list_changes_since(d, &v).await.unwrap();
        assert_eq!(cs.added, vec!["c.md"], "{who}");
        assert_eq!(cs.modified, vec!["a.md"], "{who}");
        assert_eq!(cs.deleted, vec!["b.md"], "{who}");
        assert_eq!(cs.version, current, "{who}");
        let cs = b.list_changes_since(d, &v2).await.unwrap();
        assert_eq!((cs.added.len(), cs.modified.len()), (1, 0), "{who}");
        assert_eq!(cs.deleted, vec!["b.md"], "{who}");
        assert!(b.has_changes_since(d, &v).await.unwrap());
        assert!(!b.has_changes_since(d, &current).await.unwrap());
    }
    let tenant = sibling
        .list_changes_since_in(&TenantContext::bound("t"), d, &v)
        .await
        .unwrap();
    assert_eq!(tenant.added, vec!["c.md"]);
    assert_eq!(
        snapshot_objects(&all_keys(store).await, a),
        0,
        "no snapshot objects"
    );
    let doc = metadata_doc(store, a, d).await;
    let indexed: Vec<&str> = doc["dynreg_versions"]
        .as_array()
        .expect("a version index in the document")
        .iter()
        .filter_map(|e| e["identity"].as_str())
        .collect();
    assert!(
        indexed.contains(&v.as_str()) && indexed.contains(&v2.as_str()),
        "{indexed:?}"
    );
    assert!(
        !indexed.contains(&current.as_str()),
        "the current identity needs no entry"
    );
}

/// The index keeps the last `retention` replaced identities: older ones become unresolvable
/// (a full re-ingest), the retained ones diff minimally.
pub(super) async fn bounded_index(b: &S3KnowledgeBackend) {
    let d = "d";
    b.create_kb(d, Metadata::new()).await.unwrap();
    let mut versions = Vec::new();
    for c in ["v0", "v1", "v2", "v3", "v4", "v5"] {
        put(b, d, "a.md", c).await;
        versions.push(b.get_checksum(d).await.unwrap());
    }
    for old in &versions[..2] {
        let err = b.list_changes_since(d, old).await.unwrap_err();
        assert!(
            matches!(err, KnowledgeError::InvalidVersion { .. }),
            "{err}"
        );
    }
    for kept in &versions[2..5] {
        assert_eq!(
            b.list_changes_since(d, kept).await.unwrap().modified,
            vec!["a.md"]
        );
    }
    assert!(
        b.list_changes_since(d, &versions[5])
            .await
            .unwrap()
            .is_empty()
    );
}
