//! Interop with the Python original's file knowledge backend, for real, both ways: a knowledge
//! base the original writes (unicode and space paths, deep nesting, a deleted file, an ERROR
//! status with a message, typed metadata) reads the same in dynreg — identity, files, checksums,
//! bytes, info — and the original reads what dynreg writes the same way. Needs
//! `DYNREG_INTEROP_PYTHON` (`cargo xtask interop`); skipped, saying so, when unset.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use dynreg_knowledge_store::identity::md5_hex;
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, IngestionStatus, KnowledgeBackend, KnowledgeBackendExt,
    Metadata, PutOptions, StatusUpdate,
};
use serde_json::{Value, json};

fn python() -> Option<String> {
    let p = std::env::var("DYNREG_INTEROP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if p.is_none() {
        println!(
            "skipped: knowledge-file interop with the Python original (DYNREG_INTEROP_PYTHON unset)"
        );
    }
    p
}

async fn original(python: &str, mode: &str, base: &Path, domain: &str) -> Value {
    original_on(python, mode, base.as_os_str(), domain).await
}

async fn original_on(python: &str, mode: &str, store: &std::ffi::OsStr, domain: &str) -> Value {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/knowledge_files.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(mode)
        .arg(store)
        .arg(domain)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the original failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What dynreg reads, in the shape the script prints.
async fn describe(b: &dyn KnowledgeBackend, domain: &str) -> Value {
    let info = b.get_info(domain).await.unwrap().unwrap();
    let mut files = serde_json::Map::new();
    for f in b.list_files(domain, None).await.unwrap() {
        let body = b.get_file(domain, &f.path).await.unwrap().unwrap();
        files.insert(
            f.path.clone(),
            json!({
                "checksum": f.checksum, "size_bytes": f.size_bytes, "content_type": f.content_type,
                "md5": md5_hex(&body), "metadata": f.metadata,
            }),
        );
    }
    json!({
        "checksum": b.get_checksum(domain).await.unwrap(),
        "files": files,
        "info": {
            "file_count": info.file_count, "total_size_bytes": info.total_size_bytes,
            "version": info.version, "ingestion_status": info.ingestion_status,
            "ingestion_error": info.ingestion_error, "metadata": info.metadata,
        },
    })
}

async fn open(base: &Path) -> FileKnowledgeBackend {
    FileKnowledgeBackend::open(FileConfig::new(base))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynreg_reads_what_the_original_wrote() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let theirs = original(&python, "write", dir.path(), "py-kb").await;
    let b = open(dir.path()).await;
    let ours = describe(&b, "py-kb").await;
    assert_eq!(ours, theirs);
    assert_eq!(ours["info"]["ingestion_status"], "error");
    assert_eq!(ours["files"].as_object().unwrap().len(), 3);
    // Change detection agrees after dynreg changes one file.
    b.put_file(
        "py-kb",
        "space name.json",
        Bytes::from_static(b"{}"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    b.close().await.unwrap();
    let theirs = original(&python, "read", dir.path(), "py-kb").await;
    let b = open(dir.path()).await;
    assert_eq!(describe(&b, "py-kb").await["checksum"], theirs["checksum"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_reads_what_dynreg_wrote() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let meta: Metadata = serde_json::from_value(json!({"n": 1, "f": 2.5, "tags": ["a"]})).unwrap();
    b.create_kb("rs-kb", meta).await.unwrap();
    for (path, body) in [
        ("docs/日本語 guide.md", "# ガイド\n".as_bytes()),
        ("deep/a/b/c/d/e/f.txt", b"deep\n"),
        ("space name.json", b"{\"a\": 1}"),
        ("to-delete.md", b"x"),
    ] {
        let opts = PutOptions {
            metadata: serde_json::from_value(json!({"origin": "rust", "n": 7})).unwrap(),
            ..PutOptions::default()
        };
        b.put_file("rs-kb", path, Bytes::copy_from_slice(body), opts)
            .await
            .unwrap();
    }
    assert!(b.delete_file("rs-kb", "to-delete.md").await.unwrap());
    b.set_ingestion_status(
        "rs-kb",
        StatusUpdate::new(IngestionStatus::Error).error("embedding failed: 503"),
    )
    .await
    .unwrap();
    let ours = describe(&b, "rs-kb").await;
    b.close().await.unwrap();
    let theirs = original(&python, "read", dir.path(), "rs-kb").await;
    assert_eq!(theirs, ours);
}

/// The same both ways on the S3 layout, against the local S3 server, with the original's
/// `S3KnowledgeBackend` (aioboto3).
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_layout_both_ways() {
    use dynreg_knowledge_store::{S3Config, S3KnowledgeBackend};
    let Some(python) = python() else { return };
    let Ok(endpoint) = std::env::var("DYNREG_TEST_S3_ENDPOINT") else {
        println!("skipped: S3 knowledge interop (DYNREG_TEST_S3_ENDPOINT unset)");
        return;
    };
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    let prefix = format!("interop-{:08x}/knowledge/", rand_u32());
    let spec = json!({
        "bucket": bucket, "prefix": prefix, "endpoint_url": endpoint, "region": "us-east-1",
        "aws_access_key_id": "test", "aws_secret_access_key": "test",
    });
    let ours = || async {
        let mut c = S3Config::new(bucket.clone());
        c.prefix = prefix.clone();
        c.endpoint_url = Some(endpoint.clone());
        c.region = Some("us-east-1".into());
        c.aws_access_key_id = Some("test".into());
        c.aws_secret_access_key = Some("test".into());
        S3KnowledgeBackend::connect(c).await.unwrap()
    };
    let store = std::ffi::OsString::from(spec.to_string());
    // The original writes; dynreg reads the same.
    let theirs = original_on(&python, "write", &store, "py-kb").await;
    let b = ours().await;
    assert_eq!(describe(&b, "py-kb").await, theirs);
    // dynreg writes; the original reads the same.
    let meta: Metadata = serde_json::from_value(json!({"n": 1})).unwrap();
    b.create_kb("rs-kb", meta).await.unwrap();
    for (path, body) in [
        ("docs/日本語 guide.md", "# ガイド\n".as_bytes()),
        ("a/b/c.txt", b"deep\n"),
    ] {
        b.put_file(
            "rs-kb",
            path,
            Bytes::copy_from_slice(body),
            PutOptions::default(),
        )
        .await
        .unwrap();
    }
    b.set_ingestion_status(
        "rs-kb",
        StatusUpdate::new(IngestionStatus::Error).error("boom"),
    )
    .await
    .unwrap();
    let ours_view = describe(&b, "rs-kb").await;
    // Closing folds dynreg's journal into the index the original reads.
    b.close().await.unwrap();
    let theirs = original_on(&python, "read", &store, "rs-kb").await;
    assert_eq!(theirs, ours_view);
}

#[cfg(feature = "s3")]
fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id()
}
