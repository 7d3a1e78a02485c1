//! Ingestion-manager benchmarks (`cargo bench -p dynreg-ingestion --bench manager`), one JSON
//! line per figure, on 1,000 synthetic markdown files of ~4 KiB in the file knowledge backend,
//! the `hash` embedder (384-d) and the memory store:
//!
//! 1. a full ingest (tombstone): files/s and chunks/s;
//! 2. `ingest_if_changed` when nothing changed;
//! 3. `ingest_if_changed` after 1 of the 1,000 files changed (only that file is embedded);
//!    (`DYNREG_BENCH_CHANGES` rounds, default 7; once without and once with snapshot publication,
//!    `DYNREG_BENCH_PUBLISHED_CHANGES` rounds of the latter).
//! 4. a replica seeing the new index: from the start of the ingest that changed one file to
//!    the moment a following replica's query returns the new text (snapshot written through the
//!    knowledge backend, end event on the in-memory bus, snapshot loaded), p50 over rounds.
//! 5. with the `local` feature and the model present: a full ingest of 100 of the files with
//!    all-MiniLM-L6-v2 beside the model's own bound, and `query` k=5 over them.

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../tests/support/synth.rs"]
mod synth;

#[cfg(feature = "local")]
#[path = "../tests/support/minilm.rs"]
mod minilm;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use synth::{emit, percentile};

use dynreg_event_bus::InMemoryEventBus;
use dynreg_ingestion::{
    HashEmbedder, IfChanged, IndexFollower, KnowledgeIngestionManager, MemoryVectorStore,
    RagKnowledgeBase, SwapMode,
};
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, FileUpload, FsyncPolicy, KnowledgeBackend,
    KnowledgeBackendExt, Metadata, PutOptions,
};

/// The first 30 words of the shared vocabulary.
const WORDS: &[&str] = synth::WORDS.split_at(30).0;

fn doc(seed: u64, i: usize) -> String {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut word = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        WORDS[(x % WORDS.len() as u64) as usize]
    };
    let mut s = format!("# Document {i}\n\n");
    let mut sec = 0;
    while s.len() < 4000 {
        sec += 1;
        s.push_str(&format!("## Section {sec} {}\n\n", word()));
        for _ in 0..3 {
            let words: Vec<&str> = (0..12).map(|_| word()).collect();
            s.push_str(&words.join(" "));
            s.push_str(". ");
        }
        s.push_str("\n\n");
    }
    s
}

fn kb() -> RagKnowledgeBase {
    RagKnowledgeBase::new(
        Arc::new(HashEmbedder::new(384)),
        Arc::new(MemoryVectorStore::new(384).expect("store")),
    )
    .expect("kb")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let rounds: usize = std::env::var("DYNREG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let changes: usize = std::env::var("DYNREG_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    // Rounds of the published variant (default: as many as `changes`; fewer to profile the
    // plain one).
    let published: usize = std::env::var("DYNREG_BENCH_PUBLISHED_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(changes);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FileConfig::new(dir.path());
    config.fsync = FsyncPolicy::Never;
    let source: Arc<dyn KnowledgeBackend> =
        Arc::new(FileKnowledgeBackend::open(config).await.expect("open"));
    source
        .create_kb("docs", Metadata::new())
        .await
        .expect("create_kb");
    let uploads: Vec<FileUpload> = (0..1000)
        .map(|i| FileUpload::new(format!("guide/doc-{i:04}.md"), doc(1, i).into_bytes()))
        .collect();
    source.put_files("docs", uploads).await.expect("put_files");

    // 1. Full ingests, each into a fresh store.
    let mut rates = Vec::new();
    let mut chunks = 0;
    for _ in 0..rounds {
        let manager = KnowledgeIngestionManager::new(source.clone(), kb());
        let t = Instant::now();
        let r = manager
            .ingest("docs", SwapMode::Tombstone)
            .await
            .expect("ingest");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.files_processed, 1000);
        chunks = r.chunks_created;
        rates.push(1000.0 / secs);
    }
    let files_s = percentile(rates, 0.5);
    emit(
        "manager",
        "full ingest 1,000 × 4 KiB markdown (hash, memory store, tombstone)",
        files_s,
        "files/s",
        json!({"chunks": chunks, "chunks_per_s": files_s * chunks as f64 / 1000.0, "rounds": rounds}),
    );

    // 2 and 3. ingest_if_changed on one manager.
    let bus = Arc::new(InMemoryEventBus::new());
    let writer = kb();
    let manager = KnowledgeIngestionManager::new(source.clone(), writer.clone())
        .with_event_bus(bus.clone())
        .with_index_publication(source.clone(), "indexes");
    manager
        .ingest("docs", SwapMode::Tombstone)
        .await
        .expect("ingest");
    let replica = kb();
    let follower = IndexFollower::new(replica.clone(), source.clone());
    let _follow = follower.follow(&*bus).await.expect("follow");
    let mut version = manager
        .get_current_version("docs")
        .await
        .expect("version")
        .expect("exists");
    let mut unchanged = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = manager
            .ingest_if_changed("docs", Some(&version), SwapMode::Tombstone)
            .await
            .expect("if changed");
        unchanged.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r, IfChanged::Unchanged);
    }
    emit(
        "manager",
        "ingest_if_changed, nothing changed",
        percentile(unchanged, 0.5),
        "ms p50",
        json!({"runs": 50}),
    );

    // Without a replica to publish to: the ingest alone.
    let plain = KnowledgeIngestionManager::new(source.clone(), kb());
    plain
        .ingest("docs", SwapMode::Tombstone)
        .await
        .expect("ingest");
    let mut plain_version = plain
        .get_current_version("docs")
        .await
        .expect("version")
        .expect("exists");
    let mut alone = Vec::new();
    for round in 0..changes {
        let text = format!("{}\n\n## Edited\n\nPlain edit {round}.\n", doc(1, 9));
        source
            .put_file(
                "docs",
                "guide/doc-0009.md",
                text.into(),
                PutOptions::default(),
            )
            .await
            .expect("put");
        let t = Instant::now();
        let r = plain
            .ingest_if_changed("docs", Some(&plain_version), SwapMode::Tombstone)
            .await
            .expect("if changed");
        alone.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(
            matches!(r, IfChanged::Ingested(ref r) if r.files_processed == 1),
            "{r:?}"
        );
        plain_version = plain
            .get_current_version("docs")
            .await
            .expect("version")
            .expect("exists");
    }
    emit(
        "manager",
        "ingest_if_changed after 1 of 1,000 files changed (that file embedded, no snapshot)",
        percentile(alone, 0.5),
        "ms p50",
        json!({"rounds": changes}),
    );
    // The edit above is now indexed by `manager` too.
    manager
        .ingest("docs", SwapMode::Tombstone)
        .await
        .expect("ingest");
    version = manager
        .get_current_version("docs")
        .await
        .expect("version")
        .expect("exists");

    let (mut changed, mut replica_lag) = (Vec::new(), Vec::new());
    for round in 0..published {
        let marker = format!("zebracorn{round}");
        let text = format!(
            "{}\n\n## Edited\n\nThe {marker} section was added.\n",
            doc(1, 7)
        );
        source
            .put_file(
                "docs",
                "guide/doc-0007.md",
                text.into(),
                PutOptions::default(),
            )
            .await
            .expect("put");
        let t = Instant::now();
        let r = manager
            .ingest_if_changed("docs", Some(&version), SwapMode::Tombstone)
            .await
            .expect("if changed");
        changed.push(t.elapsed().as_secs_f64() * 1e3);
        let IfChanged::Ingested(r) = r else {
            panic!("no ingest after a change")
        };
        assert_eq!((r.files_processed, r.files_unchanged), (1, 999));
        loop {
            let hits = replica.query(&marker, 1, None, 0.0).await.expect("query");
            if hits.first().is_some_and(|h| h.text.contains(&marker)) {
                break;
            }
            tokio::task::yield_now().await;
        }
        replica_lag.push(t.elapsed().as_secs_f64() * 1e3);
        version = manager
            .get_current_version("docs")
            .await
            .expect("version")
            .expect("exists");
    }
    emit(
        "manager",
        "ingest_if_changed after 1 of 1,000 files changed (that file embedded, index snapshot published)",
        percentile(changed, 0.5),
        "ms p50",
        json!({"rounds": published}),
    );
    emit(
        "manager",
        &format!(
            "replica sees the new index ({chunks} chunks): ingest start to the replica's answer"
        ),
        percentile(replica_lag, 0.5),
        "ms p50",
        json!({"rounds": published}),
    );
    #[cfg(feature = "local")]
    local_model(&source).await;
}

/// Part 5, with the `local` feature and the model present (`scripts/fetch-minilm.sh`): a full
/// ingest of the first `DYNREG_BENCH_LOCAL_FILES` files (default 100) with all-MiniLM-L6-v2,
/// beside the model's own bound (the same chunk texts embedded alone, no pipeline or store),
/// then `query` k=5 over what was ingested.
#[cfg(feature = "local")]
async fn local_model(source: &Arc<dyn KnowledgeBackend>) {
    use dynreg_ingestion::embed::{LocalEmbedder, LocalEmbedderConfig};
    use dynreg_ingestion::{Embedder, Pipeline, PipelineEvent, PipelineOptions};
    use futures::StreamExt;
    let Some(dir) = minilm::model_dir("the local model rows") else {
        return;
    };
    let files: usize = std::env::var("DYNREG_BENCH_LOCAL_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let embedder = Arc::new(LocalEmbedder::new(LocalEmbedderConfig::new(&dir)).expect("model"));
    let only: std::collections::BTreeSet<String> =
        (0..files).map(|i| format!("guide/doc-{i:04}.md")).collect();
    let options = PipelineOptions {
        only_paths: Some(only),
        ..PipelineOptions::default()
    };

    // The model alone, on the chunk texts of the same files.
    let mut texts = Vec::new();
    let mut stream = Pipeline::with_options(source.clone(), options.clone())
        .stream("docs")
        .await
        .expect("stream");
    while let Some(event) = stream.next().await {
        if let PipelineEvent::Chunks(batch) = event {
            texts.extend(batch.into_iter().map(|c| c.embedding_text));
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = Instant::now();
    for block in refs.chunks(256) {
        embedder.embed(block).await.expect("embed");
    }
    let bound = texts.len() as f64 / t.elapsed().as_secs_f64();

    let kb = RagKnowledgeBase::new(
        embedder.clone(),
        Arc::new(MemoryVectorStore::new(384).expect("store")),
    )
    .expect("kb");
    let t = Instant::now();
    let stats = kb
        .ingest_from_backend(source.clone(), "docs", options)
        .await
        .expect("ingest");
    let secs = t.elapsed().as_secs_f64();
    let chunks_s = stats.chunks_stored as f64 / secs;
    emit(
        "manager",
        &format!("full ingest {files} × 4 KiB markdown (local all-MiniLM-L6-v2, memory store)"),
        files as f64 / secs,
        "files/s",
        json!({
            "chunks": stats.chunks_stored,
            "chunks_per_s": chunks_s,
            "model_bound_chunks_per_s": bound,
            "share_of_model_bound": chunks_s / bound,
        }),
    );
    let mut lat = Vec::new();
    for i in 0..50 {
        let q = format!(
            "{} {} section",
            WORDS[i % WORDS.len()],
            WORDS[(i * 7) % WORDS.len()]
        );
        let t = Instant::now();
        let hits = kb.query(&q, 5, None, 0.0).await.expect("query");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(hits.len(), 5);
    }
    emit(
        "manager",
        &format!(
            "query k=5 over {} chunks (local all-MiniLM-L6-v2, memory store)",
            stats.chunks_stored
        ),
        percentile(lat.clone(), 0.5),
        "ms p50",
        json!({"p99_ms": percentile(lat, 0.99), "queries": 50}),
    );
}
