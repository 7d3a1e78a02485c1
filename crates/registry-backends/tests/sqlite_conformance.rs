//! The registry conformance suite on `SqliteBackend`, plus what only SQLite has.
#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::{SqliteBackend, create_registry_backend};
use dynreg_registry_core::conformance::{Capabilities, Harness};
use dynreg_registry_core::{ChangeFeed, RegistryBackend, RegistryBackendExt, RegistryError};
use serde_json::json;

/// Each store is its own database file in one temporary directory; two opens of a name are two
/// connections on one file.
struct SqliteHarness {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        let b = SqliteBackend::new(self.dir.path().join(format!("{store}.sqlite3")))
            .with_touch_resolution(Duration::from_millis(50));
        b.initialize().await.unwrap();
        Arc::new(b)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: Duration::from_millis(50),
        }
    }
}

fn harness() -> Option<SqliteHarness> {
    Some(SqliteHarness {
        dir: tempfile::tempdir().unwrap(),
    })
}

dynreg_registry_core::registry_conformance_tests!(harness());

#[tokio::test]
async fn factory_builds_sqlite_and_rejects_injected_table_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/reg.sqlite3");
    let config = json!({"path": path, "table": "bot_configs"});
    // The constructor builds without touching storage; the factory returns it initialized.
    let uninitialized = SqliteBackend::from_config(&config).unwrap();
    assert!(matches!(
        uninitialized.register("x", json!({})).await,
        Err(RegistryError::NotInitialized { .. })
    ));
    assert!(!path.exists());
    let b = create_registry_backend("sqlite", &config).await.unwrap();
    assert!(path.exists());
    b.register("x", json!({})).await.unwrap();
    let err = create_registry_backend(
        "sqlite",
        &json!({"path": path, "table": "x\"; DROP TABLE y; --"}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"table\""), "{err}");
    let err = create_registry_backend("sqlite", &json!({"path": path, "tabel": "bot_configs"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"tabel\"") && err.contains("\"table\""),
        "{err}"
    );
}

#[tokio::test]
async fn compaction_expires_old_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::new(dir.path().join("c.sqlite3")).with_tombstone_retention(4);
    b.initialize().await.unwrap();
    for i in 0..70 {
        b.register(&format!("b{i}"), json!({})).await.unwrap();
    }
    for i in 0..70 {
        b.unregister(&format!("b{i}")).await.unwrap();
    }
    // Compaction runs every 64 revisions; by revision 128 it has happened.
    match b.changes_since(1).await.unwrap() {
        ChangeFeed::Expired {
            oldest_available,
            current_revision,
            ..
        } => {
            assert!(
                oldest_available > 1 && current_revision == 140,
                "{oldest_available} {current_revision}"
            );
            let ChangeFeed::Changes { changes, .. } =
                b.changes_since(oldest_available).await.unwrap()
            else {
                panic!("the horizon itself is answerable")
            };
            assert!(!changes.is_empty());
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_rows_name_the_database_table_and_bot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.sqlite3");
    let b = SqliteBackend::new(&path);
    b.initialize().await.unwrap();
    b.register("bot", json!({"a": 1})).await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE registrations SET config = '{not json' WHERE bot_id = 'bot'",
        [],
    )
    .unwrap();
    let err = b.peek("bot").await.unwrap_err().to_string();
    assert!(
        err.contains("corrupt.sqlite3") && err.contains("\"bot\"") && err.contains("config"),
        "{err}"
    );
}

/// Writes waiting on SQLite (here: on a write lock another connection holds for 1.5 s) do not
/// stall the other tasks of a 2-worker runtime, even with one waiting write per worker, and
/// reads are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_does_not_stall_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stall.sqlite3");
    let b = Arc::new(SqliteBackend::new(&path));
    b.initialize().await.unwrap();
    b.register("seed", json!({"v": 0})).await.unwrap();
    // Ticks every 10 ms on a worker for 1.2 s; a stalled runtime shows as a long gap.
    let ticker = tokio::spawn(async {
        let mut worst = Duration::ZERO;
        let mut last = std::time::Instant::now();
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(last.elapsed());
            last = std::time::Instant::now();
        }
        worst
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| {
            let b = b.clone();
            tokio::spawn(async move { b.register(id, json!({"v": 1})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A read on a worker is answered while the writes wait.
    let read = {
        let b = b.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let got = b.peek("seed").await;
            (t.elapsed(), got)
        })
    };
    let (read_took, got) = read.await.unwrap();
    assert!(got.unwrap().is_some());
    let worst = ticker.await.unwrap();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    holder.join().unwrap();
    assert!(
        worst < Duration::from_millis(700) && read_took < Duration::from_millis(700),
        "the runtime stalled for {worst:?} (a read took {read_took:?}) while two writes waited on SQLite"
    );
    assert_eq!(b.count_all().await.unwrap(), 3);
}
