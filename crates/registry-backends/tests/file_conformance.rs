//! The registry conformance suite on the file backend, plus what is specific to files:
//! corrupt documents name their path, atomic replace leaves no temporary files, a crashed
//! write is finished by the next writer, compaction expires old cursors, and two OS processes
//! writing one directory never share a revision.
#![cfg(feature = "file")]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::FileBackend;
use dynreg_registry_core::conformance::{Capabilities, Harness, unique_store};
use dynreg_registry_core::{
    Change, ChangeFeed, RegistryBackend, RegistryBackendExt, RegistryError,
};
use serde_json::json;

const TOUCH_MS: u64 = 100;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-registry")
}

async fn open_dir(dir: &std::path::Path, extra: serde_json::Value) -> FileBackend {
    let mut config = json!({"path": dir, "touch_resolution_ms": TOUCH_MS});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let b = FileBackend::from_config(&config).unwrap();
    b.initialize().await.unwrap();
    b
}

struct FileHarness;

#[async_trait]
impl Harness for FileHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        Arc::new(open_dir(&root().join(store), json!({})).await)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: Duration::from_millis(TOUCH_MS),
        }
    }
}

dynreg_registry_core::registry_conformance_tests!(Some(FileHarness));

fn fresh_dir(case: &str) -> PathBuf {
    root().join(unique_store(case))
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let err = FileBackend::from_config(&json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"path\""), "{err}");
    let err = FileBackend::from_config(&json!({"path": "/x", "touch_resolution_ms": "soon"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("touch_resolution_ms"), "{err}");
    let b = FileBackend::from_config(&json!({"path": "/nonexistent"})).unwrap();
    assert!(matches!(
        b.peek("x").await,
        Err(RegistryError::NotInitialized { .. })
    ));
}

#[tokio::test]
async fn a_corrupt_document_names_its_path() {
    let dir = fresh_dir("corrupt");
    let b = open_dir(&dir, json!({})).await;
    b.register("bot", json!({"a": 1})).await.unwrap();
    let doc = dir.join("bots").join("bot.json");
    std::fs::write(&doc, b"{ not json").unwrap();
    let err = b.peek("bot").await.unwrap_err();
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&doc.display().to_string()),
        "{err}"
    );
    let err = b.list_all().await.unwrap_err().to_string();
    assert!(err.contains(&doc.display().to_string()), "{err}");
    // A document holding another id is refused too.
    std::fs::write(
        &doc,
        serde_json::to_vec(&json!({"bot_id": "other", "config": {}})).unwrap(),
    )
    .unwrap();
    let err = b.peek("bot").await.unwrap_err().to_string();
    assert!(
        err.contains("\"other\"") && err.contains("bot.json"),
        "{err}"
    );
}

#[tokio::test]
async fn atomic_replace_leaves_no_temporary_files_and_plain_documents() {
    let dir = fresh_dir("no_temp");
    let b = open_dir(&dir, json!({})).await;
    for i in 0..20 {
        b.register("bot", json!({"n": i})).await.unwrap();
        b.register(&format!("other/{i}"), json!({"n": i}))
            .await
            .unwrap();
    }
    b.unregister("other/3").await.unwrap();
    for sub in ["bots", "_registry"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.starts_with(".tmp"),
                "temporary file left behind: {sub}/{name}"
            );
        }
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bots").join("other%2F7.json")).unwrap())
            .unwrap();
    assert_eq!(doc["bot_id"], "other/7");
    assert_eq!(doc["config"], json!({"n": 7}));
    // A stale temporary file from a dead process is swept by initialize.
    std::fs::write(dir.join("bots").join(".tmp-1-1"), b"partial").unwrap();
    let again = open_dir(&dir, json!({})).await;
    assert!(!dir.join("bots").join(".tmp-1-1").exists());
    assert_eq!(again.count().await.unwrap(), 20);
}

#[tokio::test]
async fn a_write_interrupted_after_its_commit_is_finished_by_the_next_writer() {
    let dir = fresh_dir("crash");
    let b = open_dir(&dir, json!({})).await;
    let r1 = b.register("bot", json!({"v": 1})).await.unwrap();
    // Simulate a process that appended its log line (the commit) and died before replacing
    // the document, leaving a torn half line after it as well.
    let mut committed = r1.clone();
    committed.config = Arc::new(json!({"v": 2}));
    committed.revision = r1.revision + 1;
    let line =
        json!({"rev": committed.revision, "op": "put", "id": "bot", "doc": committed.to_json()});
    let log = dir.join("_registry").join("changes.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(line.to_string().as_bytes());
    bytes.extend_from_slice(b"\n{\"rev\":99,\"op\":\"pu");
    std::fs::write(&log, bytes).unwrap();

    let other = open_dir(&dir, json!({})).await;
    assert_eq!(other.current_revision().await.unwrap(), committed.revision);
    // The next write transaction (here: another id) finishes the interrupted one.
    let r3 = other.register("next", json!({})).await.unwrap();
    assert_eq!(
        r3.revision,
        committed.revision + 1,
        "no revision is handed out twice"
    );
    assert_eq!(
        *b.peek_config("bot").await.unwrap().unwrap(),
        json!({"v": 2})
    );
    let ChangeFeed::Changes { changes, .. } = b.changes_since(r1.revision).await.unwrap() else {
        panic!("expected changes")
    };
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("\"rev\":99"),
        "torn line dropped"
    );
}

#[tokio::test]
async fn compaction_keeps_recent_changes_and_expires_old_cursors() {
    let dir = fresh_dir("compact");
    let b = open_dir(&dir, json!({"tombstone_retention": 2})).await;
    for i in 0..5 {
        b.register(&format!("bot-{i}"), json!({"i": i}))
            .await
            .unwrap();
    }
    let before_deletes = b.current_revision().await.unwrap();
    for i in 0..4 {
        b.unregister(&format!("bot-{i}")).await.unwrap();
    }
    // Two deletions were compacted away: old cursors must relist.
    let other = open_dir(&dir, json!({"tombstone_retention": 2})).await;
    for backend in [&b, &other] {
        match backend.changes_since(before_deletes).await.unwrap() {
            ChangeFeed::Expired {
                oldest_available,
                current_revision,
                ..
            } => {
                assert!(oldest_available > before_deletes);
                assert_eq!(current_revision, before_deletes + 4);
            }
            other => panic!("expected Expired, got {other:?}"),
        }
    }
    let horizon = before_deletes + 2;
    let ChangeFeed::Changes { changes, .. } = other.changes_since(horizon).await.unwrap() else {
        panic!("a cursor at the horizon is answerable")
    };
    assert_eq!(
        changes.iter().map(Change::bot_id).collect::<Vec<_>>(),
        ["bot-2", "bot-3"]
    );
    assert_eq!(other.list_ids().await.unwrap(), ["bot-4"]);
    let next = other.register("bot-9", json!({})).await.unwrap();
    assert_eq!(next.revision, before_deletes + 5);
}

const CHILD_DIR: &str = "DYNREG_FILE_TEST_CHILD_DIR";
const CHILD_PREFIX: &str = "DYNREG_FILE_TEST_CHILD_PREFIX";

/// The child half of `two_processes_share_a_directory`: run only by that test, in its own OS
/// process, with the directory and an id prefix in the environment.
#[tokio::test]
#[ignore = "run as a child process by two_processes_share_a_directory"]
async fn child_writer() {
    let dir =
        PathBuf::from(std::env::var(CHILD_DIR).expect("run by two_processes_share_a_directory"));
    let prefix = std::env::var(CHILD_PREFIX).unwrap();
    let b = open_dir(&dir, json!({})).await;
    for i in 0..30 {
        let r = b
            .register(&format!("{prefix}-{i}"), json!({"i": i}))
            .await
            .unwrap();
        writeln!(std::io::stdout(), "REV {}", r.revision).unwrap();
        let s = b
            .register("shared", json!({"by": prefix, "i": i}))
            .await
            .unwrap();
        writeln!(std::io::stdout(), "REV {}", s.revision).unwrap();
    }
}

#[tokio::test]
async fn two_processes_share_a_directory() {
    let dir = fresh_dir("processes");
    let b = open_dir(&dir, json!({})).await;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["p", "q"]
        .iter()
        .map(|prefix| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_writer",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, &dir)
                .env(CHILD_PREFIX, prefix)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut revs = Vec::new();
    for i in 0..30 {
        revs.push(
            b.register(&format!("parent-{i}"), json!({"i": i}))
                .await
                .unwrap()
                .revision,
        );
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let child_revs: Vec<u64> = stdout
            .lines()
            .filter_map(|l| l.rfind("REV ").map(|i| &l[i + 4..]))
            .map(|r| r.trim().parse().unwrap())
            .collect();
        assert_eq!(child_revs.len(), 60, "{stdout}");
        revs.extend(child_revs);
    }
    let mut unique = revs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), revs.len(), "a revision was handed out twice");
    assert_eq!(b.count().await.unwrap(), 91);
    let cur = b.current_revision().await.unwrap();
    assert_eq!(cur, *unique.last().unwrap());
    let ChangeFeed::Changes {
        changes,
        current_revision,
    } = b.changes_since(0).await.unwrap()
    else {
        panic!("expected changes")
    };
    assert_eq!(current_revision, cur);
    assert_eq!(changes.len(), 91);
}

/// A registration document replaced by a symbolic link (to a file outside that even holds a
/// valid document) is refused on every read, naming the path; nothing outside is read.
#[tokio::test]
async fn a_document_replaced_by_a_link_is_refused() {
    let dir = fresh_dir("linked_doc");
    let b = open_dir(&dir, json!({})).await;
    b.register("victim", json!({"v": 1})).await.unwrap();
    let doc = std::fs::read_dir(dir.join("bots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let outside = tempfile::tempdir().unwrap();
    let forged = outside.path().join("forged.json");
    let mut text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    text["config"] = json!({"v": "forged"});
    std::fs::write(&forged, serde_json::to_vec(&text).unwrap()).unwrap();
    std::fs::remove_file(&doc).unwrap();
    std::os::unix::fs::symlink(&forged, &doc).unwrap();
    let err = b.peek("victim").await.unwrap_err().to_string();
    assert!(
        err.contains("symbolic link") && err.contains(&doc.display().to_string()),
        "{err}"
    );
    let err = b.list_all().await.unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
}
