//! The RAG knowledge base: config keys of the original and their refusals, the echo provider
//! bit for bit, ingest → query end to end with the lexical embedder, stale rows, per-file
//! embedding failures, shrinking files, scope binding and a persisted store reopened.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use dynreg_ingestion::{
    EchoEmbedder, EmbedError, Embedder, Filter, HashEmbedder, MemoryVectorStore, PipelineOptions,
    QueryOptions, RagError, RagKnowledgeBase, VectorStore,
};
use dynreg_knowledge_store::{
    KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
};

async fn kb_with(files: &[(&str, &str)]) -> Arc<dyn KnowledgeBackend> {
    let b: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    b.create_kb("support", Metadata::new()).await.unwrap();
    for (p, c) in files {
        b.put_file("support", p, c.to_string().into(), PutOptions::default())
            .await
            .unwrap();
    }
    b
}

const FILES: &[(&str, &str)] = &[
    (
        "billing/refunds.md",
        "# Refunds\n\nRefunds are paid back to the original card within five business days.\n",
    ),
    (
        "billing/invoices.md",
        "# Invoices\n\nInvoices are emailed on the first day of every month as PDF attachments.\n",
    ),
    (
        "account/password.md",
        "# Password reset\n\nTo reset a forgotten password, open the login page and follow the reset link.\n",
    ),
    (
        "shipping.md",
        "# Shipping\n\nParcels leave the warehouse within two days and tracking numbers arrive by SMS.\n",
    ),
];

#[test]
fn echo_is_the_original_provider_bit_for_bit() {
    // Vectors of the original's echo provider, computed with Python's hashlib, as f32 bits.
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(EchoEmbedder::new(8).vector("hello")),
        vec![
            3207047080, 1063642598, 3200961227, 1055582955, 3196224131, 1052951235, 1049529999,
            3210994660
        ]
    );
    let long = EchoEmbedder::new(40).vector("");
    assert_eq!(
        bits(long[..8].to_vec()),
        vec![
            1061668808, 1052951235, 1057589642, 3203856119, 1044694213, 1064958458, 3209152456,
            3210205144
        ]
    );
    let python = [
        0.929_411_764_705_882_4_f64,
        0.756_862_745_098_039_2,
        0.772_549_019_607_843_1,
    ];
    assert_eq!(long[33..36], python.map(|x| x as f32));
    assert_eq!(
        bits(EchoEmbedder::new(3).vector("Grüße")),
        vec![1064432114, 3204678532, 3212442106]
    );
}

async fn config_error(v: serde_json::Value) -> String {
    RagKnowledgeBase::from_config(&v)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn config_keys_and_refusals() {
    let kb = RagKnowledgeBase::from_config(&json!({
        "vector_store": {"backend": "memory", "dimensions": 384},
        "embedding_provider": "echo"
    }))
    .await
    .unwrap();
    // The vector store's width reaches the echo embedder (the original embeds 768-wide).
    assert_eq!(
        (kb.embedder().provider(), kb.embedder().dimensions()),
        ("echo", 384)
    );
    let kb = RagKnowledgeBase::from_config(
        &json!({"embedding": {"provider": "hash", "dimensions": 256}}),
    )
    .await
    .unwrap();
    assert_eq!(
        (kb.embedder().dimensions(), kb.store().dimensions()),
        (256, 256)
    );

    let e = config_error(
        json!({"vector_store": {"dimensions": 384}, "dimensions": 768, "embedding_provider": "echo"}),
    )
    .await;
    assert!(e.contains("768") && e.contains("384"), "{e}");
    let e = config_error(json!({"vectorstore": {}})).await;
    assert!(e.contains("\"vector_store\""), "{e}");
    let e = config_error(json!({"vector_store": {"backend": "memory", "dimension": 3}})).await;
    assert!(e.contains("\"dimensions\""), "{e}");
    let e = config_error(json!({"embedding_provider": "ecko"})).await;
    assert!(e.contains("\"echo\""), "{e}");
    let e = config_error(json!({"vector_store": {"backend": "chroma"}})).await;
    assert!(e.contains("memory"), "{e}");
    let e =
        config_error(json!({"embedding_provider": "hash", "api_base": "http://127.0.0.1:1"})).await;
    assert!(e.contains("api_base"), "{e}");
    let e = RagKnowledgeBase::new(
        Arc::new(HashEmbedder::new(8)),
        Arc::new(MemoryVectorStore::new(9).unwrap()),
    )
    .unwrap_err();
    assert!(
        matches!(e, RagError::Config(_)) && e.to_string().contains("8-dimensional"),
        "{e}"
    );
}

#[tokio::test]
async fn ingest_then_query_finds_the_file_that_shares_the_words() {
    let backend = kb_with(FILES).await;
    let kb =
        RagKnowledgeBase::from_config(&json!({"embedding_provider": "hash", "dimensions": 512}))
            .await
            .unwrap();
    let stats = kb
        .ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!((stats.report.total_files, stats.chunks_stored), (4, 4));
    let cases = [
        ("how do I reset my password", "account/password.md"),
        ("when are refunds paid back", "billing/refunds.md"),
        ("invoice email every month", "billing/invoices.md"),
        ("parcel tracking number", "shipping.md"),
    ];
    for (q, want) in cases {
        let hits = kb.query(q, 2, None, 0.0).await.unwrap();
        assert_eq!(
            hits[0].metadata["source_path"],
            json!(want),
            "{q}: {hits:?}"
        );
        assert_eq!(hits[0].source, format!("memory://support/{want}"));
        assert!(hits[0].similarity > hits[1].similarity);
    }
    let hit = &kb.search("reset password", 1).await.unwrap()[0];
    assert_eq!(hit.heading_path, "Password reset");
    assert!(hit.text.starts_with("To reset"));
    let dict = serde_json::to_value(hit).unwrap();
    let keys: Vec<_> = dict.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        vec!["text", "source", "heading_path", "similarity", "metadata"],
        "the original's keys, in its order"
    );
    // Filters and the similarity floor.
    let billing = Filter::all().with(
        "source_path",
        json!(["billing/refunds.md", "billing/invoices.md"]),
    );
    let hits = kb.query("password", 5, Some(&billing), 0.0).await.unwrap();
    assert!(hits.iter().all(|h| {
        h.metadata["source_path"]
            .as_str()
            .unwrap()
            .starts_with("billing/")
    }));
    assert!(
        kb.query("password", 5, None, 0.99)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn stale_rows_are_hidden_and_not_counted() {
    let backend = kb_with(FILES).await;
    let kb = RagKnowledgeBase::from_config(&json!({})).await.unwrap();
    kb.ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    let mut patch = serde_json::Map::new();
    patch.insert("_stale".into(), json!(true));
    kb.store()
        .update_metadata_where(&Filter::all().with("source_path", "shipping.md"), &patch)
        .await
        .unwrap();
    assert_eq!(kb.count(&Filter::all(), false).await.unwrap(), 3);
    assert_eq!(kb.count(&Filter::all(), true).await.unwrap(), 4);
    let hits = kb
        .query("parcel tracking warehouse", 4, None, 0.0)
        .await
        .unwrap();
    assert!(
        hits.iter()
            .all(|h| h.metadata["source_path"] != json!("shipping.md"))
    );
    let opts = QueryOptions {
        k: 1,
        include_stale: true,
        ..QueryOptions::default()
    };
    let hits = kb
        .query_with("parcel tracking warehouse", &opts)
        .await
        .unwrap();
    assert_eq!(hits[0].metadata["source_path"], json!("shipping.md"));
}

/// Fails for any text containing POISON, like an embedding service refusing one document.
#[derive(Debug)]
struct Poisoned(HashEmbedder);

#[async_trait]
impl Embedder for Poisoned {
    fn provider(&self) -> &'static str {
        "poisoned"
    }
    fn dimensions(&self) -> usize {
        self.0.dimensions()
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.iter().any(|t| t.contains("POISON")) {
            return Err(EmbedError::Config("refused a text".into()));
        }
        self.0.embed(texts).await
    }
}

#[tokio::test]
async fn an_embedding_failure_costs_one_file_only() {
    let mut files = FILES.to_vec();
    files.push(("bad.md", "# Bad\n\nThis text is POISON for the embedder.\n"));
    let backend = kb_with(&files).await;
    let store = Arc::new(MemoryVectorStore::new(64).unwrap());
    let kb =
        RagKnowledgeBase::new(Arc::new(Poisoned(HashEmbedder::new(64))), store.clone()).unwrap();
    let stats = kb
        .ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.report.total_files, 4);
    assert_eq!(stats.report.errors.len(), 1);
    assert!(
        stats.report.errors[0].error.contains("bad.md")
            && stats.report.errors[0].error.contains("refused")
    );
    assert_eq!(store.count(&Filter::all()).await.unwrap(), 4);
    assert_eq!(
        store
            .count(&Filter::all().with("source_path", "bad.md"))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_file_that_shrank_loses_its_old_tail_and_same_stem_files_coexist() {
    let long: String = (0..20)
        .map(|i| format!("## Part {i}\n\nSection body number {i}.\n\n"))
        .collect();
    let backend = kb_with(&[
        ("a/intro.md", &long),
        ("b/intro.md", "# B\n\nother intro\n"),
    ])
    .await;
    let kb = RagKnowledgeBase::from_config(&json!({})).await.unwrap();
    kb.ingest_from_backend(backend.clone(), "support", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!(
        kb.count(&Filter::all().with("source_path", "a/intro.md"), false)
            .await
            .unwrap(),
        20
    );
    assert_eq!(kb.count(&Filter::all(), false).await.unwrap(), 21);
    backend
        .put_file(
            "support",
            "a/intro.md",
            "# A\n\nnow short\n".to_owned().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    kb.ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!(
        kb.count(&Filter::all().with("source_path", "a/intro.md"), false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(kb.count(&Filter::all(), false).await.unwrap(), 2);
    assert_eq!(kb.delete_source("b/intro.md").await.unwrap(), 1);
}

#[tokio::test]
async fn a_bound_domain_scopes_reads_unless_the_filter_names_one() {
    let backend = kb_with(FILES).await;
    backend.create_kb("other", Metadata::new()).await.unwrap();
    backend
        .put_file(
            "other",
            "refunds.md",
            "# Refunds\n\nRefunds in the other domain.\n"
                .to_owned()
                .into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let shared = Arc::new(MemoryVectorStore::new(384).unwrap());
    let kb = RagKnowledgeBase::new(Arc::new(HashEmbedder::new(384)), shared.clone()).unwrap();
    kb.ingest_from_backend(backend.clone(), "support", PipelineOptions::default())
        .await
        .unwrap();
    kb.ingest_from_backend(backend, "other", PipelineOptions::default())
        .await
        .unwrap();
    let bound = kb.clone().with_domain("other");
    assert_eq!(bound.count(&Filter::all(), false).await.unwrap(), 1);
    let hits = bound.query("refunds", 5, None, 0.0).await.unwrap();
    assert!(
        hits.iter()
            .all(|h| h.metadata["domain_id"] == json!("other"))
    );
    let explicit = Filter::all().with("domain_id", "support");
    assert_eq!(bound.count(&explicit, false).await.unwrap(), 4);
}

#[tokio::test]
async fn a_persisted_store_answers_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors.bin");
    let config = json!({"embedding_provider": "hash", "vector_store": {"backend": "memory", "persist_path": path}});
    let backend = kb_with(FILES).await;
    let kb = RagKnowledgeBase::from_config(&config).await.unwrap();
    kb.ingest_from_backend(backend, "support", PipelineOptions::default())
        .await
        .unwrap();
    drop(kb);
    let reopened = RagKnowledgeBase::from_config(&config).await.unwrap();
    let hits = reopened
        .query("reset my password", 1, None, 0.0)
        .await
        .unwrap();
    assert_eq!(
        hits[0].metadata["source_path"],
        json!("account/password.md")
    );
}
