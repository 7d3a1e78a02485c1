//! The `local` embedder (all-MiniLM-L6-v2 on candle) against the reference vectors of an
//! independent numpy implementation (`scripts/minilm_reference.py`, fixture
//! `tests/fixtures/minilm_reference.json`): the same token ids, vectors within float
//! rounding, one by one and batched together.
//!
//! Needs the model: `scripts/fetch-minilm.sh` puts it in `target/models/all-minilm-l6-v2`
//! (or set `DYNREG_MINILM_DIR`). Without it each test says so and passes, unless
//! `DYNREG_REQUIRE_ALL_BACKENDS=1` (CI), where a missing model fails.
#![cfg(feature = "local")]

#[allow(dead_code)] // each test file uses part of the support module
mod support;

use std::path::PathBuf;

use serde_json::Value;

use dynreg_ingestion::Embedder;
use dynreg_ingestion::embed::{LocalEmbedder, LocalEmbedderConfig};

fn model_dir() -> Option<PathBuf> {
    support::minilm::model_dir("the local embedder's tests")
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cases(f: &Value) -> Vec<(String, Vec<u32>, Vec<f32>)> {
    f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["token_ids"].as_array().unwrap();
            let vector = c["vector"].as_array().unwrap();
            (
                c["text"].as_str().unwrap().to_owned(),
                ids.iter().map(|x| x.as_u64().unwrap() as u32).collect(),
                vector.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            )
        })
        .collect()
}

fn assert_close(text: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{text}");
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let cos: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
    assert!(
        max < 1e-4 && cos > 0.9999,
        "{text}: max |diff| {max}, cos {cos}"
    );
}

#[tokio::test]
async fn vectors_match_the_numpy_reference() {
    let Some(dir) = model_dir() else { return };
    let f = fixture();
    let cases = cases(&f);
    let mut config = LocalEmbedderConfig::new(dir);
    config.batch_size = 3; // several batches, each padded differently
    config.dimensions = Some(f["dimensions"].as_u64().unwrap() as usize);
    let e = LocalEmbedder::new(config).unwrap();
    assert_eq!(e.provider(), "local");
    assert_eq!(e.dimensions(), 384);

    for (text, ids, _) in &cases {
        assert_eq!(&e.token_ids(text).unwrap(), ids, "{text}");
    }
    // All at once (batched, padded, reordered by length) ...
    let texts: Vec<&str> = cases.iter().map(|(t, _, _)| t.as_str()).collect();
    let all = e.embed(&texts).await.unwrap();
    assert_eq!(all.len(), cases.len());
    for ((text, _, want), got) in cases.iter().zip(&all) {
        assert_close(text, got, want);
    }
    // ... and one at a time.
    for (text, _, want) in &cases {
        let one = e.embed(&[text.as_str()]).await.unwrap();
        assert_close(text, &one[0], want);
    }
    assert!(e.embed(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn paraphrases_are_near_and_unrelated_texts_far() {
    let Some(dir) = model_dir() else { return };
    let e = LocalEmbedder::new(LocalEmbedderConfig::new(dir)).unwrap();
    let v = e
        .embed(&[
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "The invoice is due at the end of the month.",
        ])
        .await
        .unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&v[0], &v[1]) > 0.6, "{}", cos(&v[0], &v[1]));
    assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.3);
}

#[test]
fn a_wrong_width_is_an_error_naming_both() {
    let Some(dir) = model_dir() else { return };
    let mut config = LocalEmbedderConfig::new(dir);
    config.dimensions = Some(768);
    let err = LocalEmbedder::new(config).unwrap_err().to_string();
    assert!(err.contains("384") && err.contains("768"), "{err}");
}

/// Through the RAG knowledge base's config (`embedding.provider: local`): a question that
/// shares no word with its answer finds it, which the lexical `hash` embedder cannot do.
#[tokio::test]
async fn the_rag_config_runs_the_model_and_finds_meaning_not_words() {
    use dynreg_ingestion::RagKnowledgeBase;
    use dynreg_knowledge_store::{
        KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
    };
    use std::sync::Arc;

    let Some(dir) = model_dir() else { return };
    let config = serde_json::json!({
        "embedding": {"provider": "local", "model_dir": dir.display().to_string()},
        "vector_store": {"backend": "memory", "dimensions": 384},
    });
    let kb = RagKnowledgeBase::from_config(&config).await.unwrap();
    assert_eq!(kb.embedder().provider(), "local");
    let source: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    source.create_kb("help", Metadata::new()).await.unwrap();
    for (path, text) in [
        (
            "account.md",
            "# Signing in\n\nIf you cannot remember your credentials, choose \"Forgot login\" on \
             the start page and follow the e-mail we send you.\n",
        ),
        (
            "billing.md",
            "# Invoices\n\nInvoices are issued on the first day of each month and are payable \
             within thirty days.\n",
        ),
        (
            "shipping.md",
            "# Delivery\n\nParcels leave our warehouse within two working days and arrive by \
             courier.\n",
        ),
    ] {
        source
            .put_file(
                "help",
                path,
                text.as_bytes().to_vec().into(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    kb.ingest_from_backend(source.clone(), "help", Default::default())
        .await
        .unwrap();
    let hits = kb.query("I lost my password", 1, None, 0.0).await.unwrap();
    assert_eq!(hits[0].metadata["source_path"], "account.md", "{hits:?}");
    let hits = kb
        .query("when do I have to pay?", 1, None, 0.0)
        .await
        .unwrap();
    assert_eq!(hits[0].metadata["source_path"], "billing.md", "{hits:?}");

    // A width that disagrees with the model is refused, naming both.
    let bad = serde_json::json!({
        "embedding": {"provider": "local", "model_dir": dir.display().to_string()},
        "vector_store": {"backend": "memory", "dimensions": 768},
    });
    let err = RagKnowledgeBase::from_config(&bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("384") && err.contains("768"), "{err}");
}
