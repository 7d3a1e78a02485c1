//! The registry conformance suite on `PostgresBackend` (needs `DYNREG_TEST_POSTGRES_URL`).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::PostgresBackend;
use dynreg_registry_core::RegistryBackend;
use dynreg_registry_core::conformance::{Harness, skipped};
use serde_json::json;

const VAR: &str = "DYNREG_TEST_POSTGRES_URL";

/// Each store is its own table; two opens of a name are two pools on one table.
struct PostgresHarness {
    url: String,
}

#[async_trait]
impl Harness for PostgresHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        let b = PostgresBackend::from_config(&json!({
            "url": self.url, "table": format!("t_{store}"), "touch_resolution_ms": 50, "pool_size": 4
        }))
        .unwrap();
        b.initialize().await.unwrap();
        Arc::new(b)
    }

    fn touch_resolution(&self) -> Duration {
        Duration::from_millis(50)
    }
}

fn harness() -> Option<PostgresHarness> {
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(PostgresHarness { url }),
        _ => skipped("postgres", VAR),
    }
}

dynreg_registry_core::registry_conformance_tests!(harness());

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let b = PostgresBackend::from_config(&json!({
        "host": "127.0.0.1", "user": "u", "password": "s3cret-value", "database": "x"
    }))
    .unwrap();
    assert!(!format!("{b:?}").contains("s3cret"));
}
