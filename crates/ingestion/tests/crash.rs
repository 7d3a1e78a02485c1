//! A crash mid-ingest: a child process re-ingests a knowledge base into a pgvector table (slowly)
//! and is killed with SIGKILL while its new generation is half written. Readers never saw the
//! half-written rows; the next run reconciles, the corpus is the old one whole, and the next
//! ingest gives the new one whole. Needs `DYNREG_TEST_PGVECTOR_URL` (skipped otherwise).

#![cfg(feature = "pgvector")]
#![allow(clippy::print_stdout)] // the skip notice the test policy asks for

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use dynreg_ingestion::vector::{PgVectorConfig, PgVectorStore};
use dynreg_ingestion::{
    EmbedError, Embedder, Filter, HashEmbedder, KnowledgeIngestionManager, PipelineOptions,
    RagKnowledgeBase, SwapMode, VectorStore,
};
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, IngestionStatus, KnowledgeBackend, KnowledgeBackendExt,
    Metadata, PutOptions,
};

const CHILD: &str = "DYNREG_CRASH_CHILD_DIR";
const FILES: usize = 8;

/// The hash embedder, slowed down (the child's, so that it can be killed mid-run).
#[derive(Debug)]
struct Slow(u64);

#[async_trait]
impl Embedder for Slow {
    fn provider(&self) -> &'static str {
        "slow-hash"
    }
    fn dimensions(&self) -> usize {
        64
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        HashEmbedder::new(64).embed(texts).await
    }
}

async fn setup(
    dir: &std::path::Path,
    url: &str,
    table: &str,
    delay: u64,
) -> (Arc<dyn KnowledgeBackend>, RagKnowledgeBase) {
    let knowledge: Arc<dyn KnowledgeBackend> = Arc::new(
        FileKnowledgeBackend::open(FileConfig::new(dir))
            .await
            .unwrap(),
    );
    let mut c = PgVectorConfig::new(url, 64);
    c.table = table.to_owned();
    let store: Arc<dyn VectorStore> = Arc::new(PgVectorStore::connect(c).await.unwrap());
    (
        knowledge,
        RagKnowledgeBase::new(Arc::new(Slow(delay)), store).unwrap(),
    )
}

async fn write_version(knowledge: &Arc<dyn KnowledgeBackend>, version: &str) {
    for i in 0..FILES {
        let text = format!("# Topic {i}\n\nThe answer for topic {i} is {version}.\n");
        knowledge
            .put_file(
                "docs",
                &format!("t{i}.md"),
                text.into(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
}

/// The versions the corpus answers with (every chunk visible to readers).
async fn versions(kb: &RagKnowledgeBase) -> Vec<String> {
    let hits = kb
        .query("the answer for topic", 50, None, -1.0)
        .await
        .unwrap();
    let mut v: Vec<String> = hits
        .iter()
        .map(|h| {
            if h.text.contains("version one") {
                "one".to_owned()
            } else {
                "two".to_owned()
            }
        })
        .collect();
    v.sort();
    v.dedup();
    assert_eq!(hits.len(), FILES, "readers see a whole corpus: {hits:?}");
    v
}

/// The child: a slow tombstone ingest, to be killed.
#[tokio::test]
async fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let url = std::env::var("DYNREG_TEST_PGVECTOR_URL").unwrap();
    let table = std::env::var("DYNREG_CRASH_TABLE").unwrap();
    let (knowledge, kb) = setup(std::path::Path::new(&dir), &url, &table, 300).await;
    let options = PipelineOptions {
        batch_size: Some(1),
        ..Default::default()
    };
    let manager = KnowledgeIngestionManager::new(knowledge, kb).with_pipeline_options(options);
    manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_leaves_the_old_corpus_and_the_next_run_reconciles() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Ok(url) = std::env::var("DYNREG_TEST_PGVECTOR_URL") else {
        println!("skipped: crash test (DYNREG_TEST_PGVECTOR_URL unset)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = format!("crash_{:016x}", rand::random::<u64>());
    let (knowledge, kb) = setup(dir.path(), &url, &table, 0).await;
    knowledge.create_kb("docs", Metadata::new()).await.unwrap();
    write_version(&knowledge, "version one").await;
    let manager = KnowledgeIngestionManager::new(knowledge.clone(), kb.clone());
    manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert_eq!(versions(&kb).await, vec!["one"]);

    write_version(&knowledge, "version two").await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_process", "--test-threads", "1"])
        .env(CHILD, dir.path())
        .env("DYNREG_TEST_PGVECTOR_URL", &url)
        .env("DYNREG_CRASH_TABLE", &table)
        .spawn()
        .unwrap();
    // Wait until the child has written part of its generation, then kill it.
    let pending = Filter::all().with("_pending", true);
    let mut written = 0;
    for _ in 0..600 {
        written = kb.store().count(&pending).await.unwrap();
        if written >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written >= 2, "the child never wrote");
    assert_eq!(
        versions(&kb).await,
        vec!["one"],
        "readers saw the half-written generation"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written = kb.store().count(&pending).await.unwrap();
    assert!(
        written > 0 && written < FILES as u64,
        "killed mid-run: {written} rows pending"
    );
    let info = knowledge.get_info("docs").await.unwrap().unwrap();
    assert_eq!(info.ingestion_status, IngestionStatus::Swapping);
    assert_eq!(versions(&kb).await, vec!["one"]);

    // The next run reconciles: the old corpus, whole; no pending rows.
    assert!(manager.reconcile("docs").await.unwrap());
    assert_eq!(kb.store().count(&pending).await.unwrap(), 0);
    assert_eq!(versions(&kb).await, vec!["one"]);
    // And the next ingest gives the new corpus, whole.
    let r = manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert_eq!(r.files_processed, FILES as u64);
    assert_eq!(versions(&kb).await, vec!["two"]);
    assert_eq!(
        kb.store().count(&Filter::all()).await.unwrap(),
        FILES as u64
    );
}
