//! The registry conformance suite on `HttpBackend` → dynreg server → a local backend (memory
//! and SQLite), in process, on a real TCP port; plus the client-against-server round trips of
//! the original's tests.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::SqliteBackend;
use dynreg_registry_core::conformance::{Capabilities, Harness};
use dynreg_registry_core::{InMemoryBackend, RegistryBackend};
use dynreg_server::ServerConfig;

/// One server per store name (over a fresh inner backend); two opens of a name are two
/// clients of the same server.
struct HttpHarness {
    inner: Inner,
    servers: Mutex<HashMap<String, Arc<support::Running>>>,
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
enum Inner {
    Memory,
    Sqlite,
}

const TOUCH: Duration = Duration::from_millis(50);

#[async_trait]
impl Harness for HttpHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        let existing = self.servers.lock().unwrap().get(store).cloned();
        let running = match existing {
            Some(r) => r,
            None => {
                let inner: Arc<dyn RegistryBackend> = match self.inner {
                    Inner::Memory => Arc::new(InMemoryBackend::with_touch_resolution(TOUCH)),
                    Inner::Sqlite => Arc::new(
                        SqliteBackend::new(self.dir.path().join(format!("{store}.sqlite3")))
                            .with_touch_resolution(TOUCH),
                    ),
                };
                inner.initialize().await.unwrap();
                let r = Arc::new(
                    support::serve(inner, ServerConfig::default().allow_clear(true)).await,
                );
                self.servers
                    .lock()
                    .unwrap()
                    .insert(store.to_owned(), r.clone());
                r
            }
        };
        Arc::new(support::client(&running.base(), None).await)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: TOUCH,
        }
    }
}

fn harness(inner: Inner) -> Option<HttpHarness> {
    Some(HttpHarness {
        inner,
        servers: Mutex::default(),
        dir: tempfile::tempdir().unwrap(),
    })
}

mod over_memory {
    use super::*;
    dynreg_registry_core::registry_conformance_tests!(harness(Inner::Memory));
}

mod over_sqlite {
    use super::*;
    dynreg_registry_core::registry_conformance_tests!(harness(Inner::Sqlite));
}
