//! The conformance suite against the file backend, plus what is specific to it: the
//! original's fixtures (both directions), journal compaction, recovery from a torn journal,
//! foreign index rewrites, bounded snapshots and fsync policies.

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use dynreg_knowledge_store::conformance::{Capabilities, Harness};
use dynreg_knowledge_store::identity::{kb_identity, md5_hex};
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, FsyncPolicy, IngestionStatus, KnowledgeBackend,
    KnowledgeBackendExt, Metadata, PutOptions, StatusUpdate,
};
use serde_json::Value;

/// Stores `content` at `path` of knowledge base `d` with default options.
async fn put(b: &FileKnowledgeBackend, d: &str, path: &str, content: &'static [u8]) -> Result<()> {
    b.put_file(d, path, Bytes::from_static(content), PutOptions::default())
        .await?;
    Ok(())
}

fn config(dir: &Path) -> FileConfig {
    let mut c = FileConfig::new(dir);
    c.fsync = FsyncPolicy::Never;
    c
}

/// Each store is a folder of one temp dir (kept as long as the harness); two opens of a name
/// are two backends on one folder.
struct FileHarness {
    dir: tempfile::TempDir,
    config: fn(&Path) -> FileConfig,
}

impl FileHarness {
    fn new(config: fn(&Path) -> FileConfig) -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().expect("tempdir"),
            config,
        })
    }
}

#[async_trait]
impl Harness for FileHarness {
    async fn open(&self, store: &str) -> Arc<dyn KnowledgeBackend> {
        let config = (self.config)(&self.dir.path().join(store));
        Arc::new(FileKnowledgeBackend::open(config).await.expect("open"))
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

dynreg_knowledge_store::knowledge_conformance_tests!(FileHarness::new(config));

mod fsync_always {
    use super::*;

    /// The default policy: fsync every write.
    fn config(dir: &Path) -> FileConfig {
        FileConfig::new(dir)
    }

    dynreg_knowledge_store::knowledge_conformance_tests!(@cases FileHarness::new(config);
        concurrent_puts_lose_nothing, two_instances_lose_nothing, put_stream_round_trips,
        diff_disjoint_and_correct, conditional_status_writes);
}

/// A root written by the Python original, with what its API reported (see `fixtures/README.md`).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dataknobs-file-kb"
);

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            let mut perm = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm)?;
        }
    }
    Ok(())
}

/// A writable copy of the fixture's `knowledge/` root, or None when the fixture is absent.
fn fixture_copy() -> Result<Option<(tempfile::TempDir, PathBuf, Value)>> {
    let src = Path::new(FIXTURE);
    if !src.join("expected.json").exists() {
        println!("skipped: fixture tests ({FIXTURE} missing)");
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("knowledge");
    copy_dir(&src.join("knowledge"), &root)?;
    let expected: Value = serde_json::from_slice(&std::fs::read(src.join("expected.json"))?)?;
    Ok(Some((dir, root, expected)))
}

#[tokio::test]
async fn reads_what_the_original_wrote() -> Result<()> {
    let Some((_dir, root, expected)) = fixture_copy()? else {
        return Ok(());
    };
    let b = FileKnowledgeBackend::open(config(&root)).await?;
    let kbs: Vec<String> = b
        .list_kbs()
        .await?
        .into_iter()
        .map(|i| i.domain_id)
        .collect();
    assert_eq!(kbs, vec!["empty-kb", "support"]);
    for (domain, exp) in expected.as_object().context("expected.json object")? {
        let info = b.get_info(domain).await?.context("info")?;
        let exp_info = &exp["info"];
        assert_eq!(info.file_count, exp_info["file_count"].as_u64().unwrap());
        assert_eq!(
            info.total_size_bytes,
            exp_info["total_size_bytes"].as_u64().unwrap()
        );
        assert_eq!(info.version, exp_info["version"].as_str().unwrap());
        assert_eq!(
            info.ingestion_status.as_str(),
            exp_info["ingestion_status"].as_str().unwrap()
        );
        assert_eq!(Value::Object(info.metadata.clone()), exp_info["metadata"]);
        assert_eq!(info.ingestion_error, None);
        // expected.json prints str(datetime) (a space); the index holds isoformat: same instant.
        let exp_t = exp_info["last_updated"].as_str().unwrap().replace(' ', "T");
        assert_eq!(
            info.last_updated,
            chrono::DateTime::parse_from_rfc3339(&exp_t)?.with_timezone(&chrono::Utc)
        );
        assert_eq!(
            b.get_checksum(domain).await?,
            exp["checksum"].as_str().unwrap()
        );
        assert_eq!(
            b.has_changes_since(domain, "").await?,
            exp["has_changes_since_empty"].as_bool().unwrap()
        );
        let files = b.list_files(domain, None).await?;
        let exp_files = exp["files"].as_array().unwrap();
        assert_eq!(files.len(), exp_files.len());
        for (f, e) in files.iter().zip(exp_files) {
            assert_eq!(f.path, e["path"].as_str().unwrap());
            assert_eq!(f.content_type, e["content_type"].as_str().unwrap());
            assert_eq!(f.size_bytes, e["size_bytes"].as_u64().unwrap());
            assert_eq!(f.checksum, e["checksum"].as_str().unwrap());
            assert_eq!(Value::Object(f.metadata.clone()), e["metadata"]);
            let body = b.get_file(domain, &f.path).await?.context("content")?;
            assert_eq!(md5_hex(&body), f.checksum, "{}", f.path);
            assert_eq!(body.len() as u64, f.size_bytes);
        }
    }
    // The .gz file is the raw gzip member, not decompressed.
    let gz = b.get_file("support", "archive/old.md.gz").await?.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    // A snapshot the original recorded (4 files) diffs against today's 8.
    let cs = b
        .list_changes_since("support", "6e3e93e3d88645242d08d66ada768428")
        .await?;
    assert_eq!(
        cs.added,
        vec![
            "archive/old.md.gz",
            "data/products.csv",
            "data/settings.yaml",
            "notes/readme.txt"
        ]
    );
    assert!(cs.modified.is_empty() && cs.deleted.is_empty());
    Ok(())
}

/// Reads a knowledge base the way the original does: `_metadata.json` only.
fn read_like_the_original(root: &Path, domain: &str) -> Result<(Value, Vec<(String, String)>)> {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(root.join(domain).join("_metadata.json"))?)?;
    let files = doc["files"].as_object().context("files")?;
    let mut pairs = Vec::new();
    for (path, f) in files {
        ensure!(
            f["path"] == Value::String(path.clone()),
            "path field of {path}"
        );
        let content = std::fs::read(root.join(domain).join("content").join(path))?;
        ensure!(
            md5_hex(&content) == f["checksum"].as_str().unwrap_or(""),
            "checksum of {path}"
        );
        ensure!(
            content.len() as u64 == f["size_bytes"].as_u64().unwrap_or(u64::MAX),
            "size of {path}"
        );
        ensure!(
            f["uploaded_at"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "uploaded_at of {path}"
        );
        pairs.push((
            path.clone(),
            f["checksum"].as_str().unwrap_or("").to_owned(),
        ));
    }
    Ok((doc, pairs))
}

#[tokio::test]
async fn the_original_reads_what_dynreg_wrote() -> Result<()> {
    let Some((_dir, root, _)) = fixture_copy()? else {
        return Ok(());
    };
    let b = FileKnowledgeBackend::open(config(&root)).await?;
    put(&b, "support", "faq.md", b"# FAQ v2\n").await?;
    put(&b, "support", "new/added.json", b"{\"a\": 1}").await?;
    assert!(b.delete_file("support", "notes/readme.txt").await?);
    b.set_ingestion_status("support", StatusUpdate::new(IngestionStatus::Ingesting))
        .await?;
    b.create_kb("fresh", Metadata::new()).await?;
    put(&b, "fresh", "a.md", b"a").await?;
    b.close().await?;

    for domain in ["support", "fresh"] {
        let (doc, pairs) = read_like_the_original(&root, domain)?;
        let info = b.get_info(domain).await?.unwrap();
        assert_eq!(doc["info"]["file_count"].as_u64(), Some(info.file_count));
        assert_eq!(
            doc["info"]["total_size_bytes"].as_u64(),
            Some(info.total_size_bytes)
        );
        assert_eq!(doc["info"]["version"], Value::String(info.version.clone()));
        assert_eq!(pairs.len() as u64, info.file_count);
        // The identity the original computes from its index equals ours.
        let id = kb_identity(pairs.iter().map(|(p, c)| (p.as_str(), c.as_str())));
        assert_eq!(id, b.get_checksum(domain).await?);
        // ...and the original finds a snapshot for it.
        let snap: Value = serde_json::from_slice(&std::fs::read(
            root.join(domain)
                .join("_snapshots")
                .join(format!("{id}.json")),
        )?)?;
        assert_eq!(snap.as_object().map(|m| m.len()), Some(pairs.len()));
    }
    let (doc, _) = read_like_the_original(&root, "support")?;
    assert_eq!(doc["info"]["ingestion_status"], "ingesting");
    assert!(doc["files"].get("notes/readme.txt").is_none());
    assert!(
        !root.join("support/content/notes").exists(),
        "emptied folders are removed"
    );
    Ok(())
}

#[tokio::test]
async fn compaction_keeps_the_index_current_for_the_original() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.compact_min_records = 10;
    let b = FileKnowledgeBackend::open(cfg).await?;
    b.create_kb("d", Metadata::new()).await?;
    for i in 0..25 {
        b.put_file(
            "d",
            &format!("f{i:02}.md"),
            Bytes::from(format!("{i}")),
            PutOptions::default(),
        )
        .await?;
    }
    let (_, pairs) = read_like_the_original(dir.path(), "d")?;
    assert!(
        pairs.len() >= 20,
        "compacted at 10 and 20 records: {}",
        pairs.len()
    );
    b.compact("d").await?;
    let (_, pairs) = read_like_the_original(dir.path(), "d")?;
    assert_eq!(pairs.len(), 25);
    // The journal restarted: one header line.
    let journal = std::fs::read_to_string(dir.path().join("d/_dynreg/journal.jsonl"))?;
    assert_eq!(journal.lines().count(), 1);
    Ok(())
}

#[tokio::test]
async fn a_torn_journal_line_is_ignored_and_cut() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let b = FileKnowledgeBackend::open(config(dir.path())).await?;
        b.create_kb("d", Metadata::new()).await?;
        put(&b, "d", "a.md", b"a").await?;
    }
    // A writer died half-way through appending a record.
    let journal = dir.path().join("d/_dynreg/journal.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&journal)?;
    std::io::Write::write_all(&mut f, br#"{"op":"put","file":{"path":"b.md","che"#)?;
    drop(f);
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    let paths: Vec<_> = b
        .list_files("d", None)
        .await?
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(paths, vec!["a.md"]);
    put(&b, "d", "c.md", b"c").await?;
    let text = std::fs::read_to_string(&journal)?;
    for line in text.lines() {
        serde_json::from_str::<Value>(line).context("torn tail was cut before appending")?;
    }
    assert_eq!(text.lines().count(), 3, "header, a.md, c.md");
    let b2 = FileKnowledgeBackend::open(config(dir.path())).await?;
    assert_eq!(b2.list_files("d", None).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_foreign_index_rewrite_keeps_journaled_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    b.create_kb("d", Metadata::new()).await?;
    put(&b, "d", "ours.md", b"ours").await?;
    // The original, not knowing the journal, adds a file by rewriting _metadata.json.
    let meta_path = dir.path().join("d/_metadata.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&meta_path)?)?;
    assert!(doc["files"].get("ours.md").is_none(), "not compacted yet");
    std::fs::write(dir.path().join("d/content/theirs.md"), b"theirs")?;
    doc["files"]["theirs.md"] = serde_json::json!({
        "path": "theirs.md", "content_type": "text/markdown", "size_bytes": 6,
        "checksum": md5_hex(b"theirs"), "uploaded_at": "2026-11-28T00:04:10.568737+00:00",
        "metadata": {}
    });
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&doc)?)?;
    let paths: Vec<_> = b
        .list_files("d", None)
        .await?
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(paths, vec!["ours.md", "theirs.md"]);
    // The next write compacts first, so the original sees both too.
    put(&b, "d", "more.md", b"m").await?;
    let (_, pairs) = read_like_the_original(dir.path(), "d")?;
    let names: Vec<_> = pairs.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        names.contains(&"ours.md") && names.contains(&"theirs.md"),
        "{names:?}"
    );
    assert_eq!(b.list_files("d", None).await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn snapshots_on_disk_are_bounded() -> Result<()> {
    let Some((_dir, root, _)) = fixture_copy()? else {
        return Ok(());
    };
    let mut cfg = config(&root);
    cfg.snapshot_retention = 3;
    let b = FileKnowledgeBackend::open(cfg).await?;
    for i in 0..6 {
        b.put_file(
            "support",
            "faq.md",
            Bytes::from(format!("v{i}")),
            PutOptions::default(),
        )
        .await?;
        b.get_checksum("support").await?;
    }
    let n = std::fs::read_dir(root.join("support/_snapshots"))?.count();
    assert!(n <= 3, "{n} snapshots kept");
    Ok(())
}

#[tokio::test]
async fn factory_builds_file_from_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = dynreg_knowledge_store::create_knowledge_backend(
        "FILE",
        &serde_json::json!({"path": dir.path(), "fsync": "never"}),
    )
    .await?;
    assert_eq!(b.kind(), "file");
    b.create_kb("d", Metadata::new()).await?;
    assert!(dir.path().join("d/_metadata.json").is_file());
    let err = dynreg_knowledge_store::create_knowledge_backend(
        "file",
        &serde_json::json!({"path": dir.path(), "fsync": "sometimes"}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("fsync"), "{err}");
    Ok(())
}

/// With fsync=always, concurrent writers share group commits (one folder fsync and one
/// journal fsync per group): every upload lands, reads back, and survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_with_fsync_always_keeps_every_put() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = FileConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Always;
    let b = Arc::new(FileKnowledgeBackend::open(cfg.clone()).await?);
    b.create_kb("group", Metadata::new()).await?;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..4 {
                b.put_file(
                    "group",
                    &format!("w{w:02}/f{i}.md"),
                    Bytes::from(format!("{w}/{i}")),
                    PutOptions::default(),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let reopened = FileKnowledgeBackend::open(cfg).await?;
    let files = reopened.list_files("group", None).await?;
    assert_eq!(files.len(), 64);
    for f in &files {
        let (w, i) = f
            .path
            .strip_prefix('w')
            .and_then(|p| p.split_once("/f"))
            .and_then(|(w, i)| Some((w.parse::<u32>().ok()?, i.strip_suffix(".md")?.to_owned())))
            .expect("path shape");
        let body = reopened.get_file("group", &f.path).await?.expect("content");
        assert_eq!(body.as_ref(), format!("{w}/{i}").as_bytes());
    }
    assert_eq!(
        reopened.get_info("group").await?.expect("kb").file_count,
        64
    );
    Ok(())
}

/// The exact glob strings of the file backend, tenant variants
/// included, rooted at the absolute base folder.
#[tokio::test]
async fn key_patterns_are_the_originals_globs() -> Result<()> {
    use dynreg_knowledge_store::{KnowledgeKeyKind as K, TenantContext};
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(&dir.path().join("kb"))).await?;
    let base = b.base_path().display().to_string();
    let single = TenantContext::SingleTenant;
    let acme = TenantContext::bound("acme");
    let cases = [
        (K::Content, None, &single, format!("{base}/*/content/**")),
        (
            K::Content,
            Some("acme"),
            &single,
            format!("{base}/acme/content/**"),
        ),
        (
            K::Content,
            Some("acme"),
            &acme,
            format!("{base}/acme/content/**"),
        ),
        (
            K::Metadata,
            None,
            &single,
            format!("{base}/*/_metadata.json"),
        ),
        (
            K::Metadata,
            Some("acme"),
            &single,
            format!("{base}/acme/_metadata.json"),
        ),
        (K::Snapshot, None, &single, format!("{base}/*/_snapshots/*")),
        (
            K::Snapshot,
            Some("acme"),
            &single,
            format!("{base}/acme/_snapshots/*"),
        ),
        (
            K::Metadata,
            Some("kb"),
            &acme,
            format!("{base}/_scoped/tenants/acme/_state/kb/_metadata.json"),
        ),
        (
            K::Snapshot,
            None,
            &acme,
            format!("{base}/_scoped/tenants/acme/_state/*/_snapshots/*"),
        ),
    ];
    for (kind, domain, ctx, expected) in cases {
        assert_eq!(b.key_pattern(kind, domain, ctx)?, expected);
    }
    ensure!(b.key_pattern(K::Unknown, None, &single).is_err());
    Ok(())
}

/// Tenant state lives where the original keeps it, as its `{"info": ...}` document with the
/// lock sidecar beside it; a document the original wrote is read (with the real counts) and
/// its token is the SHA-256 of its bytes.
#[tokio::test]
async fn tenant_state_on_disk_is_the_originals_layout() -> Result<()> {
    use dynreg_knowledge_store::TenantContext;
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    let base = b.base_path().to_path_buf();
    b.create_kb("kb", Metadata::new()).await?;
    put(&b, "kb", "a.md", b"abc").await?;
    let acme = TenantContext::bound("acme");
    b.set_ingestion_status_in(
        &acme,
        "kb",
        StatusUpdate::new(IngestionStatus::Swapping).generation("g1"),
    )
    .await?;
    let state_dir = base.join("_scoped/tenants/acme/_state/kb");
    let doc: Value = serde_json::from_slice(&std::fs::read(state_dir.join("_metadata.json"))?)?;
    assert_eq!(doc["info"]["ingestion_status"], "swapping");
    assert_eq!(doc["info"]["generation"], "g1");
    assert_eq!(doc["info"]["file_count"], 1);
    assert!(doc.get("files").is_none(), "a tenant document has no files");
    assert!(state_dir.join("_metadata.json.lock").is_file());
    let v = b.get_checksum_in(&acme, "kb").await?;
    assert!(state_dir.join(format!("_snapshots/{v}.json")).is_file());
    // A document written by the original (zero counts, its own formatting).
    let theirs = TenantContext::bound("py");
    let py_dir = base.join("_scoped/tenants/py/_state/kb");
    std::fs::create_dir_all(&py_dir)?;
    let py_doc = br#"{"info": {"domain_id": "kb", "file_count": 0, "total_size_bytes": 0, "version": "1", "ingestion_status": "ready", "ingestion_error": null, "generation": null}}"#;
    std::fs::write(py_dir.join("_metadata.json"), py_doc)?;
    let view = b.get_info_in(&theirs, "kb").await?.expect("kb");
    assert_eq!(view.ingestion_status, IngestionStatus::Ready);
    assert_eq!((view.file_count, view.total_size_bytes), (1, 3));
    let token = b.get_state_version_in(&theirs, "kb").await?.expect("token");
    assert_eq!(token, hex::encode(Sha256::digest(py_doc)));
    b.set_ingestion_status_in(
        &theirs,
        "kb",
        StatusUpdate::new(IngestionStatus::Ingesting).expect_version(&token),
    )
    .await?;
    // The shared document is untouched by tenant writes.
    let shared: Value = serde_json::from_slice(&std::fs::read(base.join("kb/_metadata.json"))?)?;
    assert_eq!(shared["info"]["ingestion_status"], "pending");
    Ok(())
}

/// `delete_kb` removes the domain's state under every tenant prefix from disk (documents,
/// sidecars, snapshots, emptied folders) and nothing of any other domain or tenant.
#[tokio::test]
async fn delete_kb_clears_tenant_state_on_disk() -> Result<()> {
    use dynreg_knowledge_store::TenantContext;
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    let base = b.base_path().to_path_buf();
    for d in ["gone", "kept"] {
        b.create_kb(d, Metadata::new()).await?;
        b.put_file(d, "a.md", Bytes::from_static(b"a"), PutOptions::default())
            .await?;
    }
    let ctxs = [
        TenantContext::bound("acme"),
        TenantContext::bound("gone"),
        TenantContext::prefixed("acme", "clients/{tenant_id}/"),
        // A prefix that ends in the deleted domain's name: its state of "kept" must stay.
        TenantContext::prefixed("acme", "x/gone/"),
    ];
    for ctx in &ctxs {
        for d in ["gone", "kept"] {
            b.set_ingestion_status_in(ctx, d, StatusUpdate::new(IngestionStatus::Ready))
                .await?;
            b.get_checksum_in(ctx, d).await?;
        }
    }
    assert!(b.delete_kb("gone").await?);
    let mut left = Vec::new();
    let mut stack = vec![base.join("_scoped")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                left.push(p.strip_prefix(&base)?.display().to_string());
            }
        }
    }
    left.sort();
    for f in &left {
        let rel = f.strip_prefix("_scoped/").unwrap_or(f);
        ensure!(rel.contains("/kept/"), "left behind: {f}");
    }
    assert_eq!(
        left.iter()
            .filter(|f| f.ends_with("_metadata.json"))
            .count(),
        ctxs.len(),
        "{left:?}"
    );
    ensure!(!base.join("_scoped/tenants/acme/_state/gone").exists());
    for ctx in &ctxs {
        let view = b.get_info_in(ctx, "kept").await?.expect("kept");
        assert_eq!(view.ingestion_status, IngestionStatus::Ready);
    }
    Ok(())
}

/// One put produces exactly one content file on disk; every file the backend keeps is
/// classified as what it is, and the content glob matches no state file (the feedback loop of
/// `test_feedback_loop_reproduction_file`).
#[tokio::test]
async fn feedback_loop_reproduction_file() -> Result<()> {
    use dynreg_knowledge_store::{KnowledgeKeyKind as K, TenantContext};
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    b.create_kb("acme", Metadata::new()).await?;
    put(&b, "acme", "intro.md", b"# Hello").await?;
    b.get_checksum("acme").await?;
    b.set_ingestion_status_in(
        &TenantContext::bound("t"),
        "acme",
        StatusUpdate::new(IngestionStatus::Ready),
    )
    .await?;
    b.close().await?;
    let pattern = b.key_pattern(K::Content, Some("acme"), &TenantContext::SingleTenant)?;
    let glob = dynreg_event_bus::Glob::new(&pattern)?;
    let mut keys = Vec::new();
    let mut stack = vec![b.base_path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                keys.push(p.display().to_string());
            }
        }
    }
    let of = |kind| -> Vec<&String> { keys.iter().filter(|k| b.classify_key(k) == kind).collect() };
    let content = of(K::Content);
    assert_eq!(content.len(), 1, "{keys:?}");
    ensure!(glob.matches(content[0]));
    let state: Vec<&String> = of(K::Metadata).into_iter().chain(of(K::Snapshot)).collect();
    assert!(
        state.len() >= 4,
        "index, journal, snapshot, tenant document: {keys:?}"
    );
    for k in &state {
        ensure!(!glob.matches(k), "the content glob matches state file {k}");
    }
    // What is neither is the backend's own bookkeeping (lock files), never content.
    for k in of(K::Unknown) {
        ensure!(k.ends_with(".lock"), "unexpected file {k}");
    }
    Ok(())
}

/// A knowledge base named `content`, on a base folder that itself has a `content` segment:
/// its index is metadata, its files are content.
#[tokio::test]
async fn a_kb_named_content_is_classified_by_position() -> Result<()> {
    use dynreg_knowledge_store::KnowledgeKeyKind as K;
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(&dir.path().join("content"))).await?;
    b.create_kb("content", Metadata::new()).await?;
    put(&b, "content", "content/x.md", b"x").await?;
    let v = b.get_checksum("content").await?;
    let base = b.base_path();
    assert_eq!(
        b.classify_key(&base.join("content/_metadata.json").display().to_string()),
        K::Metadata
    );
    let snap = base.join(format!("content/_snapshots/{v}.json"));
    ensure!(snap.is_file());
    assert_eq!(b.classify_key(&snap.display().to_string()), K::Snapshot);
    let file = base.join("content/content/content/x.md");
    ensure!(file.is_file());
    assert_eq!(b.classify_key(&file.display().to_string()), K::Content);
    Ok(())
}

/// A folder with an index but a name no caller can address (created before `_` was reserved)
/// is skipped by `list_kbs` and kept on disk; the layout's own `_scoped` root is skipped too.
#[tokio::test]
async fn list_kbs_skips_unaddressable_folders_and_keeps_them() -> Result<()> {
    use dynreg_knowledge_store::TenantContext;
    let dir = tempfile::tempdir()?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    b.create_kb("proj", Metadata::new()).await?;
    b.set_ingestion_status_in(
        &TenantContext::bound("acme"),
        "proj",
        StatusUpdate::new(IngestionStatus::Ready),
    )
    .await?;
    let legacy = b.base_path().join("_staging");
    std::fs::create_dir_all(&legacy)?;
    std::fs::write(
        legacy.join("_metadata.json"),
        br#"{"info": {"domain_id": "_staging"}}"#,
    )?;
    let names: Vec<String> = b
        .list_kbs()
        .await?
        .into_iter()
        .map(|i| i.domain_id)
        .collect();
    assert_eq!(names, vec!["proj"]);
    ensure!(
        legacy.join("_metadata.json").is_file(),
        "unreachable, not deleted"
    );
    Ok(())
}

/// A symbolic link planted inside `content/` (to a folder outside, or to a file outside) is
/// never followed: reads, streams, writes and deletes through it are refused with an error
/// naming the path, and nothing outside the knowledge base is read, written or removed.
#[tokio::test]
async fn links_planted_in_content_are_never_followed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("secret.txt"), b"top secret")?;
    let b = FileKnowledgeBackend::open(config(dir.path())).await?;
    b.create_kb("kb", Metadata::default()).await?;
    put(&b, "kb", "docs/readme.md", b"# fine").await?;
    let content = dir.path().join("kb/content");
    std::os::unix::fs::symlink(outside.path(), content.join("evil"))?;
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), content.join("leak.txt"))?;
    std::os::unix::fs::symlink(outside.path(), content.join("docs/deeper"))?;

    for path in ["evil/secret.txt", "leak.txt", "docs/deeper/secret.txt"] {
        let err = b.get_file("kb", path).await.expect_err(path).to_string();
        assert!(err.contains("symbolic link"), "{path}: {err}");
        assert!(b.stream_file("kb", path, 4).await.is_err(), "{path}");
    }
    for path in ["evil/planted.md", "docs/deeper/planted.md"] {
        let err = b
            .put_file("kb", path, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect_err(path)
            .to_string();
        assert!(err.contains("symbolic link"), "{path}: {err}");
    }
    assert!(!outside.path().join("planted.md").exists());
    for path in ["evil/secret.txt", "docs/deeper/secret.txt"] {
        assert!(b.delete_file("kb", path).await.is_err() || !b.file_exists("kb", path).await?);
    }
    assert_eq!(
        std::fs::read(outside.path().join("secret.txt"))?,
        b"top secret",
        "nothing outside was changed"
    );
    // The knowledge base still works.
    put(&b, "kb", "docs/next.md", b"# next").await?;
    assert_eq!(
        &b.get_file("kb", "docs/readme.md")
            .await?
            .context("readme")?[..],
        b"# fine"
    );
    Ok(())
}
