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
