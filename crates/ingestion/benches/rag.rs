//! RAG benchmarks (`cargo bench -p dynreg-ingestion --bench rag`), one JSON line per figure:
//!
//! 1. embed + store: the 1,000-file synthetic markdown corpus of the ingestion benchmark (at
//!    `max_chunk_size` 200 it gives about 20k chunks, the size of the original's run) embedded
//!    with the `hash` embedder and stored in the memory store, through `ingest_from_backend`;
//!    chunks/s, the median of five runs, each into a fresh index (the first run, made while the
//!    process's memory is still cold, is reported beside it).
//!    The same chunks collected first, then embedding and storing alone (five runs likewise),
//!    and embedding alone.
//! 2. `query` k=5 over those chunks (hash embedder, 384 dimensions): p50 / p99 of 200 queries.
//! 3. exact search k=5 over 100,000 random 384-dimensional vectors in the memory store: p50 /
//!    p99 of 200 searches.
//! 4. save and load of that 100,000 × 384 store.
//! 5. with the `pgvector` feature and `DYNREG_TEST_PGVECTOR_URL` set: clustered 384-d vectors
//!    (`DYNREG_BENCH_PGVECTOR_N`, default 20,000) inserted into a pgvector table, then HNSW
//!    search k=10 p50 / p99 and recall@10 against exact search, at `ef_search` 40, 100, 200.

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use synth::{Rng, emit, percentile};

use dynreg_ingestion::vector::{MemoryVectorStoreConfig, Metric};
use dynreg_ingestion::{
    Embedder, Filter, HashEmbedder, KnowledgeBaseConfig, MemoryVectorStore, Pipeline,
    PipelineOptions, RagKnowledgeBase, VectorRecord, VectorStore,
};
use dynreg_knowledge_store::{FileUpload, KnowledgeBackend, MemoryKnowledgeBackend, Metadata};

/// The first 40 words of the shared vocabulary.
const WORDS: &[&str] = synth::WORDS.split_at(40).0;

fn doc(r: &mut Rng, i: usize) -> String {
    let mut s = format!("# Document {i}\n\n");
    let mut sec = 0;
    while s.len() < 4000 {
        sec += 1;
        s.push_str(&format!("## Section {sec}\n\n"));
        for _ in 0..3 {
            let n = 8 + r.next() % 10;
            let words: Vec<&str> = (0..n)
                .map(|_| WORDS[(r.next() % WORDS.len() as u64) as usize])
                .collect();
            s.push_str(&words.join(" "));
            s.push_str(". ");
        }
        s.push_str("\n\n");
    }
    s
}

/// Runs of each embed + store figure.
const RUNS: usize = 5;

/// One figure from several runs: the median, with the first run, the fastest and the slowest.
fn emit_runs(name: &str, runs: &[f64], mut extra: serde_json::Value) {
    if let Some(e) = extra.as_object_mut() {
        e.insert("runs".into(), json!(runs.len()));
        e.insert("first_run".into(), json!(runs[0].round()));
        let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = runs.iter().copied().fold(0.0, f64::max);
        e.insert("min".into(), json!(lo.round()));
        e.insert("max".into(), json!(hi.round()));
    }
    emit(
        "rag",
        name,
        percentile(runs.to_vec(), 0.5),
        "chunks/s",
        extra,
    );
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
    let mut r = Rng(0x1234_5678_9ABC_DEF1);
    // 1. Embed + store.
    let backend: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    backend
        .create_kb("docs", Metadata::new())
        .await
        .expect("create_kb");
    let uploads: Vec<FileUpload> = (0..1000)
        .map(|i| FileUpload::new(format!("guide/doc-{i:04}.md"), doc(&mut r, i).into_bytes()))
        .collect();
    backend.put_files("docs", uploads).await.expect("put_files");
    let cfg = KnowledgeBaseConfig::from_value(
        "docs",
        &json!({"default_chunking": {"max_chunk_size": 200}}),
    )
    .expect("cfg");
    // Each run into a fresh index; the one before is dropped untimed (as a replica replaces
    // its index). The median of the runs is the figure; the first run (the process's memory
    // still cold) is reported beside it.
    let mut runs = Vec::new();
    let mut kept = None;
    let mut stored = 0;
    for _ in 0..RUNS {
        drop(kept.take());
        let kb = RagKnowledgeBase::from_config(
            &json!({"embedding_provider": "hash", "dimensions": 384}),
        )
        .await
        .expect("kb");
        let options = PipelineOptions {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let t = Instant::now();
        let stats = kb
            .ingest_from_backend(Arc::clone(&backend), "docs", options)
            .await
            .expect("ingest");
        runs.push(stats.chunks_stored as f64 / t.elapsed().as_secs_f64());
        stored = stats.chunks_stored;
        kept = Some(kb);
    }
    let kb = kept.expect("one run");
    emit_runs(
        "embed + store (hash, 384-d, memory store)",
        &runs,
        json!({"chunks": stored, "files": 1000}),
    );

    // 1b. Embedding and storing alone, over chunks collected first (batches of 256).
    let chunk_backend: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    chunk_backend
        .create_kb("docs", Metadata::new())
        .await
        .expect("create_kb");
    let mut r2 = Rng(0x1234_5678_9ABC_DEF1);
    let uploads: Vec<FileUpload> = (0..1000)
        .map(|i| FileUpload::new(format!("guide/doc-{i:04}.md"), doc(&mut r2, i).into_bytes()))
        .collect();
    chunk_backend
        .put_files("docs", uploads)
        .await
        .expect("put_files");
    let cfg = KnowledgeBaseConfig::from_value(
        "docs",
        &json!({"default_chunking": {"max_chunk_size": 200}}),
    )
    .expect("cfg");
    let pipeline = Pipeline::with_options(
        chunk_backend,
        PipelineOptions {
            config: Some(cfg),
            ..Default::default()
        },
    );
    let (chunks, _) = pipeline.collect("docs", |_, _| {}).await.expect("chunks");
    let embedder = HashEmbedder::new(384);
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let store2 = MemoryVectorStore::new(384).expect("store");
        let t = Instant::now();
        for batch in chunks.chunks(256) {
            let texts: Vec<&str> = batch.iter().map(|c| c.embedding_text.as_str()).collect();
            let vectors = embedder.embed(&texts).await.expect("embed");
            let records = batch
                .iter()
                .zip(vectors)
                .map(|(c, vector)| VectorRecord::from_chunk(c, vector))
                .collect();
            store2.upsert(records).await.expect("upsert");
        }
        runs.push(chunks.len() as f64 / t.elapsed().as_secs_f64());
    }
    emit_runs(
        "embed + store alone (hash, 384-d, memory store)",
        &runs,
        json!({"chunks": chunks.len()}),
    );
    let t = Instant::now();
    for batch in chunks.chunks(256) {
        let texts: Vec<&str> = batch.iter().map(|c| c.embedding_text.as_str()).collect();
        std::hint::black_box(embedder.embed(&texts).await.expect("embed"));
    }
    let secs = t.elapsed().as_secs_f64();
    emit(
        "rag",
        "embed alone (hash, 384-d)",
        chunks.len() as f64 / secs,
        "chunks/s",
        json!({"chunks": chunks.len(), "seconds": secs}),
    );

    // 2. Query over them.
    let mut lat = Vec::new();
    for i in 0..200 {
        let q = format!(
            "{} {} {}",
            WORDS[i % WORDS.len()],
            WORDS[(i * 7) % WORDS.len()],
            WORDS[(i * 13) % WORDS.len()]
        );
        let t = Instant::now();
        let hits = kb.query(&q, 5, None, 0.0).await.expect("query");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(hits.len(), 5);
    }
    emit(
        "rag",
        &format!("query k=5 over {stored} chunks (hash, memory store)"),
        percentile(lat.clone(), 0.5),
        "ms p50",
        json!({"p99_ms": percentile(lat, 0.99), "queries": 200}),
    );

    // 3. Exact search over 100k × 384.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vectors.bin");
    let config = MemoryVectorStoreConfig {
        dimensions: 384,
        metric: Metric::Cosine,
        persist_path: Some(path.clone()),
    };
    let store = MemoryVectorStore::open(config.clone()).expect("store");
    for block in 0..100 {
        let records = (0..1000)
            .map(|i| VectorRecord {
                id: format!("v{}", block * 1000 + i),
                vector: (0..384).map(|_| r.unit()).collect(),
                metadata: json!({"n": block * 1000 + i, "domain_id": "d"})
                    .as_object()
                    .expect("object")
                    .clone(),
            })
            .collect();
        store.upsert(records).await.expect("upsert");
    }
    let mut lat = Vec::new();
    for _ in 0..200 {
        let q: Vec<f32> = (0..384).map(|_| r.unit()).collect();
        let t = Instant::now();
        let hits = store.search(&q, 5, &Filter::all()).await.expect("search");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(hits.len(), 5);
    }
    emit(
        "rag",
        "exact search k=5 over 100,000 × 384 (memory store)",
        percentile(lat.clone(), 0.5),
        "ms p50",
        json!({"p99_ms": percentile(lat, 0.99)}),
    );

    // 4. Save and load.
    let t = Instant::now();
    store.save().expect("save");
    let save = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let loaded = MemoryVectorStore::open(config).expect("load");
    let load = t.elapsed().as_secs_f64();
    assert_eq!(loaded.len(), 100_000);
    emit(
        "rag",
        "save 100,000 × 384 (memory store)",
        save,
        "s",
        json!({"bytes": size}),
    );
    emit(
        "rag",
        "load 100,000 × 384 (memory store)",
        load,
        "s",
        json!({"bytes": size}),
    );
    drop((loaded, store));
    #[cfg(feature = "pgvector")]
    pgvector(&mut r).await;
}

#[cfg(feature = "pgvector")]
async fn pgvector(r: &mut Rng) {
    use dynreg_ingestion::vector::{PgVectorConfig, PgVectorStore};
    let Ok(url) = std::env::var("DYNREG_TEST_PGVECTOR_URL") else {
        println!(
            "{}",
            json!({"bench": "rag", "skipped": "pgvector (DYNREG_TEST_PGVECTOR_URL unset)"})
        );
        return;
    };
    let n: usize = std::env::var("DYNREG_BENCH_PGVECTOR_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // Clustered vectors, as embeddings of real text are (uniform random vectors in 384
    // dimensions have no neighbourhood structure for a graph index to follow).
    let centers: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..384).map(|_| r.unit()).collect())
        .collect();
    let sample = |r: &mut Rng| -> Vec<f32> {
        let c = &centers[(r.next() % 64) as usize];
        c.iter().map(|x| x + 0.35 * r.unit()).collect()
    };
    let table = format!("bench_{:08x}", r.next() as u32);
    let mut c = PgVectorConfig::new(url, 384);
    c.table = table;
    let store = PgVectorStore::connect(c.clone()).await.expect("pgvector");
    let mirror = MemoryVectorStore::new(384).expect("mirror");
    let t = Instant::now();
    let mut inserted = 0usize;
    while inserted < n {
        let m = (n - inserted).min(5000);
        let records: Vec<VectorRecord> = (inserted..inserted + m)
            .map(|i| VectorRecord {
                id: format!("v{i}"),
                vector: sample(r),
                metadata: json!({"n": i}).as_object().expect("object").clone(),
            })
            .collect();
        mirror.upsert(records.clone()).await.expect("mirror");
        store.upsert(records).await.expect("upsert");
        inserted += m;
    }
    let insert = t.elapsed().as_secs_f64();
    emit(
        "rag",
        &format!("pgvector insert {n} × 384 (HNSW maintained)"),
        n as f64 / insert,
        "vectors/s",
        json!({"seconds": insert}),
    );
    let queries: Vec<Vec<f32>> = (0..200).map(|_| sample(r)).collect();
    let mut exact = Vec::new();
    for q in &queries {
        exact.push(
            mirror
                .search(q, 10, &Filter::all())
                .await
                .expect("exact")
                .into_iter()
                .map(|h| h.id)
                .collect::<Vec<_>>(),
        );
    }
    for ef in [40u32, 100, 200] {
        let mut c = c.clone();
        c.ef_search = ef;
        let store = PgVectorStore::connect(c).await.expect("pgvector");
        let (mut lat, mut found) = (Vec::new(), 0usize);
        for (q, want) in queries.iter().zip(&exact) {
            let t = Instant::now();
            let got = store.search(q, 10, &Filter::all()).await.expect("search");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            found += got.iter().filter(|h| want.contains(&h.id)).count();
        }
        emit(
            "rag",
            &format!("pgvector HNSW search k=10 over {n} × 384 (clustered), ef_search {ef}"),
            percentile(lat.clone(), 0.5),
            "ms p50",
            json!({"p99_ms": percentile(lat, 0.99), "recall_at_10_vs_exact": found as f64 / 2000.0}),
        );
    }
}
