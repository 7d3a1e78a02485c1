//! [`Instrumented`]: a registry decorator that traces and measures every operation.
//!
//! Invariant: it changes nothing a backend does — every call is forwarded once, with the same
//! arguments, and its result returned unchanged — it only adds, around each call, a `tracing`
//! span `registry` (fields `backend`, `op`, `bot_id`, and `revision` once a write reports it) and
//! two metrics through the `metrics` facade: `dynreg_registry_operations_total{backend, op,
//! outcome}` (outcome `ok` or `error`) and `dynreg_registry_operation_seconds{backend, op}`.
//! Without a subscriber or a recorder installed, both cost a few nanoseconds. No config value or
//! registration content is recorded.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::{
    ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, Result, Status,
};

/// Wraps a backend with tracing spans and metrics (see the module docs). The registry factory
/// returns its backends wrapped.
pub struct Instrumented<B: RegistryBackend + ?Sized = dyn RegistryBackend> {
    inner: Arc<B>,
}

impl<B: RegistryBackend + ?Sized> std::fmt::Debug for Instrumented<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<B: RegistryBackend + ?Sized> Instrumented<B> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<B>) -> Self {
        Instrumented { inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    async fn run<T>(
        &self,
        op: &'static str,
        bot_id: Option<&str>,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let backend = self.inner.kind();
        let span = tracing::debug_span!(
            "registry",
            backend,
            op,
            bot_id = bot_id.unwrap_or(""),
            revision = tracing::field::Empty
        );
        let start = Instant::now();
        let result = call.instrument(span).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("dynreg_registry_operations_total", "backend" => backend, "op" => op, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("dynreg_registry_operation_seconds", "backend" => backend, "op" => op)
            .record(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::debug!(backend, op, error = %e, "registry operation failed");
        }
        result
    }
}

#[async_trait]
impl<B: RegistryBackend + ?Sized> RegistryBackend for Instrumented<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn initialize(&self) -> Result<()> {
        self.run("initialize", None, self.inner.initialize()).await
    }

    async fn close(&self) -> Result<()> {
        self.run("close", None, self.inner.close()).await
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        let done = self
            .run(
                "register",
                Some(bot_id),
                self.inner.register_reporting(bot_id, config, options),
            )
            .await?;
        tracing::debug!(bot_id, revision = done.registration.revision, effect = ?done.effect, "registered");
        Ok(done)
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.run("get", Some(bot_id), self.inner.get(bot_id)).await
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.run("peek", Some(bot_id), self.inner.peek(bot_id))
            .await
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        self.run(
            "deactivate",
            Some(bot_id),
            self.inner.deactivate_reporting(bot_id),
        )
        .await
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        self.run("unregister", Some(bot_id), self.inner.unregister(bot_id))
            .await
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        self.run(
            "unregister_if",
            Some(bot_id),
            self.inner.unregister_if(bot_id, revision),
        )
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.run("list", None, self.inner.list(query)).await
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        self.run(
            "count",
            None,
            self.inner.count_where(status, filter_metadata),
        )
        .await
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.run("changes_since", None, self.inner.changes_since(revision))
            .await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.run("current_revision", None, self.inner.current_revision())
            .await
    }

    async fn clear(&self) -> Result<u64> {
        self.run("clear", None, self.inner.clear()).await
    }

    async fn get_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        self.run("get_config", Some(bot_id), self.inner.get_config(bot_id))
            .await
    }

    async fn peek_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        self.run("peek_config", Some(bot_id), self.inner.peek_config(bot_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InMemoryBackend, RegistryBackendExt};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn every_operation_is_counted_and_timed_by_backend_op_and_outcome() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let b = Instrumented::new(Arc::new(InMemoryBackend::new()));
                assert_eq!(b.kind(), "memory");
                b.register("a", serde_json::json!({"v": 1})).await.unwrap();
                b.register("a", serde_json::json!({"v": 2})).await.unwrap();
                assert!(b.get_config("a").await.unwrap().is_some());
                assert!(b.register("", serde_json::json!({})).await.is_err());
            });
        });
        let mut counts = std::collections::HashMap::new();
        let mut timed = 0;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            match (key.key().name(), value) {
                ("dynreg_registry_operations_total", DebugValue::Counter(n)) => {
                    counts.insert(labels.join(","), n);
                }
                ("dynreg_registry_operation_seconds", DebugValue::Histogram(h)) => timed += h.len(),
                _ => {}
            }
        }
        assert_eq!(
            counts.get("backend=memory,op=register,outcome=ok"),
            Some(&2),
            "{counts:?}"
        );
        assert_eq!(
            counts.get("backend=memory,op=register,outcome=error"),
            Some(&1),
            "{counts:?}"
        );
        assert_eq!(
            counts.get("backend=memory,op=get_config,outcome=ok"),
            Some(&1),
            "{counts:?}"
        );
        assert_eq!(timed, 4);
    }
}
