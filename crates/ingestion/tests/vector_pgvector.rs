//! The PostgreSQL + pgvector store: the conformance suite every store runs, and what is
//! specific to it — two stores on one table (two replicas) see each other's writes, an
//! existing table of another width is refused, and HNSW search agrees with exact search.
//! Needs `DYNREG_TEST_PGVECTOR_URL` (PostgreSQL with the pgvector extension; `cargo xtask
//! test-matrix` starts one on 127.0.0.1:5433); every case says it was skipped when unset.

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_ingestion::vector::conformance::Harness;
use dynreg_ingestion::vector::{PgVectorConfig, PgVectorStore};
use dynreg_ingestion::{Filter, VectorError, VectorRecord, VectorStore};
use serde_json::json;

fn url() -> Option<String> {
    let url = std::env::var("DYNREG_TEST_PGVECTOR_URL").ok();
    if url.is_none() {
        println!("skipped: pgvector tests (DYNREG_TEST_PGVECTOR_URL unset)");
    }
    url
}

fn table() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

struct Pg(String);

#[async_trait]
impl Harness for Pg {
    async fn open(&self) -> Arc<dyn VectorStore> {
        let mut c = PgVectorConfig::new(self.0.clone(), 4);
        c.table = table();
        Arc::new(PgVectorStore::connect(c).await.expect("connect"))
    }
}

dynreg_ingestion::vector_store_conformance_tests!(url().map(Pg));

fn random(n: usize, dims: usize, seed: u64) -> Vec<VectorRecord> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            let vector = (0..dims)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            VectorRecord {
                id: format!("v{i}"),
                vector,
                metadata: json!({"i": i}).as_object().unwrap().clone(),
            }
        })
        .collect()
}

#[tokio::test]
async fn two_stores_on_one_table_share_it_and_a_wrong_width_is_refused() {
    let Some(url) = url() else { return };
    let name = table();
    let mut c = PgVectorConfig::new(url.clone(), 8);
    c.table = name.clone();
    let a = PgVectorStore::connect(c.clone()).await.unwrap();
    let b = PgVectorStore::connect(c.clone()).await.unwrap();
    a.upsert(random(20, 8, 7)).await.unwrap();
    assert_eq!(b.count(&Filter::all()).await.unwrap(), 20);
    let q = random(1, 8, 99).remove(0).vector;
    assert_eq!(
        a.search(&q, 3, &Filter::all()).await.unwrap(),
        b.search(&q, 3, &Filter::all()).await.unwrap()
    );
    c.dimensions = 16;
    let e = PgVectorStore::connect(c).await.unwrap_err();
    assert!(
        matches!(e, VectorError::Config(_)) && e.to_string().contains("8-dimensional"),
        "{e}"
    );
}

#[tokio::test]
async fn hnsw_search_agrees_with_exact_search() {
    let Some(url) = url() else { return };
    let mut c = PgVectorConfig::new(url, 32);
    c.table = table();
    let store = PgVectorStore::connect(c).await.unwrap();
    let records = random(3000, 32, 11);
    let exact = dynreg_ingestion::MemoryVectorStore::new(32).unwrap();
    exact.upsert(records.clone()).await.unwrap();
    store.upsert(records).await.unwrap();
    let (mut found, mut total) = (0usize, 0usize);
    for q in random(30, 32, 12345) {
        let want: Vec<String> = exact
            .search(&q.vector, 10, &Filter::all())
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let got = store.search(&q.vector, 10, &Filter::all()).await.unwrap();
        assert_eq!(got.len(), 10);
        found += got.iter().filter(|h| want.contains(&h.id)).count();
        total += 10;
    }
    let recall = found as f64 / total as f64;
    println!("pgvector HNSW recall@10 vs exact over 3,000 × 32: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall:.3}");
    // A selective filter still returns k rows (iterative index scans).
    let few = Filter::all().with("i", json!([5, 500, 1500, 2999]));
    assert_eq!(
        store
            .search(&random(1, 32, 1).remove(0).vector, 4, &few)
            .await
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn a_rag_knowledge_base_on_pgvector_from_the_original_keys() {
    use dynreg_ingestion::{PipelineOptions, RagKnowledgeBase};
    use dynreg_knowledge_store::{
        KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
    };
    let Some(url) = url() else { return };
    let backend: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    backend.create_kb("support", Metadata::new()).await.unwrap();
    for (p, c) in [
        (
            "refunds.md",
            "# Refunds\n\nRefunds reach the original card within five business days.\n",
        ),
        (
            "password.md",
            "# Password\n\nReset a forgotten password from the login page.\n",
        ),
    ] {
        backend
            .put_file("support", p, c.to_owned().into(), PutOptions::default())
            .await
            .unwrap();
    }
    let config = json!({
        "vector_store": {"backend": "pgvector", "url": url, "table": table(), "dimensions": 256},
        "embedding_provider": "hash"
    });
    let kb = RagKnowledgeBase::from_config(&config).await.unwrap();
    let stats = kb
        .ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.chunks_stored, 2);
    // A second replica on the same table answers without ingesting.
    let replica = RagKnowledgeBase::from_config(&config).await.unwrap();
    let hits = replica
        .query("forgot my password", 1, None, 0.0)
        .await
        .unwrap();
    assert_eq!(hits[0].metadata["source_path"], json!("password.md"));
    assert_eq!(hits[0].source, "memory://support/password.md");
}
