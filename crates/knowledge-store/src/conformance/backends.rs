//! Every backend, opened fresh, for the test suites of other crates that run their own cases
//! against each knowledge backend (the pipeline's, the bus bridge's) through
//! [`knowledge_backend_tests!`](crate::knowledge_backend_tests).

use std::any::Any;
use std::sync::Arc;

use crate::KnowledgeBackend;

/// A backend under test and whatever must stay alive while it is used (a temp dir).
pub struct TestBackend {
    /// The backend.
    pub backend: Arc<dyn KnowledgeBackend>,
    _guard: Box<dyn Any + Send + Sync>,
}

/// The memory backend.
pub fn memory_backend() -> TestBackend {
    TestBackend {
        backend: Arc::new(crate::MemoryKnowledgeBackend::new()),
        _guard: Box::new(()),
    }
}

/// The file backend on a fresh temp dir (no fsync: tests do not crash the machine).
#[cfg(feature = "file")]
pub async fn file_backend() -> TestBackend {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::FileConfig::new(dir.path());
    config.fsync = crate::FsyncPolicy::Never;
    let backend = crate::FileKnowledgeBackend::open(config)
        .await
        .expect("open the file backend");
    TestBackend {
        backend: Arc::new(backend),
        _guard: Box::new(dir),
    }
}

/// The S3 backend on `object_store`'s in-memory store.
#[cfg(feature = "s3")]
pub fn s3_in_memory_backend() -> TestBackend {
    let store = Arc::new(object_store::memory::InMemory::new());
    let backend = crate::S3KnowledgeBackend::with_store(store, "mem", "knowledge/", 64);
    TestBackend {
        backend: Arc::new(backend),
        _guard: Box::new(()),
    }
}

/// The S3 backend on the test server of [`super::s3_server_config`], or `None` (skipped, said)
/// when it is not configured.
#[cfg(feature = "s3")]
pub async fn s3_server_backend() -> Option<TestBackend> {
    let backend = crate::S3KnowledgeBackend::connect(super::s3_server_config()?)
        .await
        .expect("connect to the S3 test server");
    Some(TestBackend {
        backend: Arc::new(backend),
        _guard: Box::new(()),
    })
}

/// Generates, in the calling module, one module per knowledge backend (`memory`, `file`, and
/// with the caller's `s3` feature `s3_in_memory_store` and `s3_server`) with one
/// `#[tokio::test]` per case; each case is an `async fn(Arc<dyn KnowledgeBackend>)` of the
/// calling module. The caller's dev-dependency on this crate needs the `conformance` and
/// `file` features; its `s3` feature must forward this crate's.
#[macro_export]
macro_rules! knowledge_backend_tests {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = $crate::conformance::memory_backend();
                    super::$case(b.backend.clone()).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = $crate::conformance::file_backend().await;
                    super::$case(b.backend.clone()).await;
                }
            )*
        }
        #[cfg(feature = "s3")]
        mod s3_in_memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = $crate::conformance::s3_in_memory_backend();
                    super::$case(b.backend.clone()).await;
                }
            )*
        }
        #[cfg(feature = "s3")]
        mod s3_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = $crate::conformance::s3_server_backend().await {
                        super::$case(b.backend.clone()).await;
                    }
                }
            )*
        }
    };
}
