//! [`Instrumented`]: a knowledge-backend decorator that traces and measures every operation.
//!
//! Invariant: it changes nothing a backend does — every call is forwarded once, with the same
//! arguments, and its result returned unchanged — it only adds, around each call, a `tracing`
//! span `knowledge` (fields `backend`, `op`, `domain_id`, `path`) and two metrics through the
//! `metrics` facade: `dynreg_knowledge_operations_total{backend, op, outcome}` (outcome `ok` or
//! `error`) and `dynreg_knowledge_operation_seconds{backend, op}`. A streamed read is measured
//! until its stream is opened, a streamed write until the whole upload is stored. No file
//! content or metadata value is recorded.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use crate::{
    ByteStream, ChangeSet, FileUpload, KeyLayout, KnowledgeBackend, KnowledgeBaseInfo,
    KnowledgeFile, Metadata, PutOptions, Result, StateEvents, StatusUpdate, TenantContext,
};

/// Wraps a knowledge backend with tracing spans and metrics (see the module docs). The factory
/// returns its backends wrapped.
pub struct Instrumented<B: KnowledgeBackend + ?Sized = dyn KnowledgeBackend> {
    inner: Arc<B>,
}

impl<B: KnowledgeBackend + ?Sized> std::fmt::Debug for Instrumented<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<B: KnowledgeBackend + ?Sized> Instrumented<B> {
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
        domain_id: &str,
        path: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let backend = self.inner.kind();
        let span = tracing::debug_span!("knowledge", backend, op, domain_id, path);
        let start = Instant::now();
        let result = call.instrument(span).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("dynreg_knowledge_operations_total", "backend" => backend, "op" => op, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("dynreg_knowledge_operation_seconds", "backend" => backend, "op" => op)
            .record(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::debug!(backend, op, domain_id, path, error = %e, "knowledge operation failed");
        }
        result
    }
}

#[async_trait]
impl<B: KnowledgeBackend + ?Sized> KnowledgeBackend for Instrumented<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn state_events(&self) -> &StateEvents {
        self.inner.state_events()
    }

    fn key_layout(&self) -> &KeyLayout {
        self.inner.key_layout()
    }

    async fn create_kb(&self, domain_id: &str, metadata: Metadata) -> Result<KnowledgeBaseInfo> {
        let call = self.inner.create_kb(domain_id, metadata);
        self.run("create_kb", domain_id, "", call).await
    }

    async fn get_info_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<KnowledgeBaseInfo>> {
        let call = self.inner.get_info_in(ctx, domain_id);
        self.run("get_info", domain_id, "", call).await
    }

    async fn list_kbs(&self) -> Result<Vec<KnowledgeBaseInfo>> {
        self.run("list_kbs", "", "", self.inner.list_kbs()).await
    }

    async fn delete_kb(&self, domain_id: &str) -> Result<bool> {
        let call = self.inner.delete_kb(domain_id);
        self.run("delete_kb", domain_id, "", call).await
    }

    async fn put_stream(
        &self,
        domain_id: &str,
        path: &str,
        content: ByteStream,
        options: PutOptions,
    ) -> Result<KnowledgeFile> {
        let call = self.inner.put_stream(domain_id, path, content, options);
        self.run("put_stream", domain_id, path, call).await
    }

    async fn put_files(
        &self,
        domain_id: &str,
        uploads: Vec<FileUpload>,
    ) -> Result<Vec<KnowledgeFile>> {
        // One upload names its path; a batch names none.
        let path = match uploads.as_slice() {
            [one] => one.path.clone(),
            _ => String::new(),
        };
        let call = self.inner.put_files(domain_id, uploads);
        self.run("put_files", domain_id, &path, call).await
    }

    async fn get_file(&self, domain_id: &str, path: &str) -> Result<Option<Bytes>> {
        let call = self.inner.get_file(domain_id, path);
        self.run("get_file", domain_id, path, call).await
    }

    async fn stream_file(
        &self,
        domain_id: &str,
        path: &str,
        chunk_size: usize,
    ) -> Result<Option<ByteStream>> {
        let call = self.inner.stream_file(domain_id, path, chunk_size);
        self.run("stream_file", domain_id, path, call).await
    }

    async fn delete_file(&self, domain_id: &str, path: &str) -> Result<bool> {
        let call = self.inner.delete_file(domain_id, path);
        self.run("delete_file", domain_id, path, call).await
    }

    async fn get_file_info(&self, domain_id: &str, path: &str) -> Result<Option<KnowledgeFile>> {
        let call = self.inner.get_file_info(domain_id, path);
        self.run("get_file_info", domain_id, path, call).await
    }

    async fn list_files(
        &self,
        domain_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<Arc<KnowledgeFile>>> {
        let call = self.inner.list_files(domain_id, prefix);
        self.run("list_files", domain_id, prefix.unwrap_or(""), call)
            .await
    }

    async fn set_ingestion_status_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        update: StatusUpdate,
    ) -> Result<KnowledgeBaseInfo> {
        let call = self.inner.set_ingestion_status_in(ctx, domain_id, update);
        self.run("set_ingestion_status", domain_id, "", call).await
    }

    async fn get_state_version_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
    ) -> Result<Option<String>> {
        let call = self.inner.get_state_version_in(ctx, domain_id);
        self.run("get_state_version", domain_id, "", call).await
    }

    async fn get_checksum_in(&self, ctx: &TenantContext, domain_id: &str) -> Result<String> {
        let call = self.inner.get_checksum_in(ctx, domain_id);
        self.run("get_checksum", domain_id, "", call).await
    }

    async fn list_changes_since_in(
        &self,
        ctx: &TenantContext,
        domain_id: &str,
        version: &str,
    ) -> Result<ChangeSet> {
        let call = self.inner.list_changes_since_in(ctx, domain_id, version);
        self.run("list_changes_since", domain_id, "", call).await
    }

    async fn close(&self) -> Result<()> {
        self.run("close", "", "", self.inner.close()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KnowledgeBackendExt, MemoryKnowledgeBackend};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// Every call is forwarded unchanged, and counted and timed by backend, op and outcome.
    #[test]
    fn forwards_every_call_and_counts_it() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let inner = Arc::new(MemoryKnowledgeBackend::new());
                let b = Instrumented::new(inner.clone() as Arc<dyn KnowledgeBackend>);
                assert_eq!(b.kind(), "memory");
                b.create_kb("kb", Metadata::new()).await.unwrap();
                let f = b
                    .put_file(
                        "kb",
                        "a.md",
                        Bytes::from_static(b"# A\n"),
                        PutOptions::default(),
                    )
                    .await
                    .unwrap();
                assert_eq!(f.size_bytes, 4);
                assert_eq!(
                    b.get_file("kb", "a.md").await.unwrap().as_deref(),
                    Some(&b"# A\n"[..])
                );
                assert_eq!(
                    b.get_checksum("kb").await.unwrap(),
                    inner.get_checksum("kb").await.unwrap()
                );
                assert!(b.create_kb("kb", Metadata::new()).await.is_err());
                assert!(b.delete_file("kb", "a.md").await.unwrap());
                assert!(b.list_files("kb", None).await.unwrap().is_empty());
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
                ("dynreg_knowledge_operations_total", DebugValue::Counter(n)) => {
                    counts.insert(labels.join(","), n);
                }
                ("dynreg_knowledge_operation_seconds", DebugValue::Histogram(h)) => {
                    timed += h.len()
                }
                _ => {}
            }
        }
        for (labels, n) in [
            ("backend=memory,op=create_kb,outcome=ok", 1),
            ("backend=memory,op=create_kb,outcome=error", 1),
            ("backend=memory,op=put_files,outcome=ok", 1),
            ("backend=memory,op=get_file,outcome=ok", 1),
            ("backend=memory,op=get_checksum,outcome=ok", 1),
            ("backend=memory,op=delete_file,outcome=ok", 1),
            ("backend=memory,op=list_files,outcome=ok", 1),
        ] {
            assert_eq!(counts.get(labels), Some(&n), "{labels}: {counts:?}");
        }
        assert_eq!(timed, 7);
    }
}
