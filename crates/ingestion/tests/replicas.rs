//! Every replica searches the new knowledge: three replicas in one process (one ingests and
//! publishes its index, two follow), a broken snapshot that a follower refuses while it keeps
//! serving, a late replica catching up from the status, and — with this crate's `redis`
//! feature and `DYNREG_TEST_REDIS_URL` — a second process that follows over Redis.

#![allow(clippy::print_stdout)] // the child process reports on stdout; skip notices

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};

use dynreg_event_bus::{Event, EventBus, EventType, InMemoryEventBus};
use dynreg_ingestion::{
    HashEmbedder, IndexFollower, KnowledgeIngestionManager, MemoryVectorStore, RagKnowledgeBase,
    SwapMode,
};
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, KnowledgeBackend, KnowledgeBackendExt, Metadata, PutOptions,
    TenantContext,
};

fn replica_kb() -> RagKnowledgeBase {
    RagKnowledgeBase::new(
        Arc::new(HashEmbedder::new(128)),
        Arc::new(MemoryVectorStore::new(128).unwrap()),
    )
    .unwrap()
}

async fn file_backend(dir: &std::path::Path) -> Arc<dyn KnowledgeBackend> {
    Arc::new(
        FileKnowledgeBackend::open(FileConfig::new(dir))
            .await
            .unwrap(),
    )
}

async fn put(b: &Arc<dyn KnowledgeBackend>, path: &str, content: &str) {
    b.put_file(
        "docs",
        path,
        content.to_owned().into(),
        PutOptions::default(),
    )
    .await
    .unwrap();
}

/// The first hit's text for `q`, waiting up to 10 s for it to contain `want`.
async fn eventually(kb: &RagKnowledgeBase, q: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..500 {
        if let Some(h) = kb.query(q, 1, None, -1.0).await.unwrap().into_iter().next() {
            last = h.text;
            if last.contains(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{want:?} never arrived; last answer {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_one_process_search_the_new_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let knowledge = file_backend(dir.path()).await;
    knowledge.create_kb("docs", Metadata::new()).await.unwrap();
    put(
        &knowledge,
        "refunds.md",
        "# Refunds\n\nRefunds take five days (policy one).\n",
    )
    .await;
    let bus = Arc::new(InMemoryEventBus::new());

    let writer = replica_kb();
    let manager = KnowledgeIngestionManager::new(knowledge.clone(), writer.clone())
        .with_event_bus(bus.clone())
        .with_index_publication(knowledge.clone(), "indexes");
    let (b, c) = (replica_kb(), replica_kb());
    let fb = IndexFollower::new(b.clone(), knowledge.clone());
    let fc = IndexFollower::new(c.clone(), knowledge.clone());
    let _tb = fb.follow(&*bus).await.unwrap();
    let _tc = fc.follow(&*bus).await.unwrap();

    manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
    for kb in [&writer, &b, &c] {
        eventually(kb, "how long do refunds take", "policy one").await;
    }
    put(
        &knowledge,
        "refunds.md",
        "# Refunds\n\nRefunds take two days (policy two).\n",
    )
    .await;
    manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
    for kb in [&writer, &b, &c] {
        eventually(kb, "how long do refunds take", "policy two").await;
    }
    assert_eq!((fb.loaded(), fc.loaded()), (2, 2));
    // One snapshot file is kept per domain: the previous one is deleted.
    assert_eq!(
        knowledge.list_files("indexes", None).await.unwrap().len(),
        1
    );

    // A snapshot that does not parse: the followers keep serving what they have.
    knowledge.create_kb("junk", Metadata::new()).await.unwrap();
    knowledge
        .put_file(
            "junk",
            "bad.dvec",
            b"not a snapshot".to_vec().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let mut payload = Map::new();
    payload.insert("domain_id".into(), json!("docs"));
    payload.insert("status".into(), json!("completed"));
    payload.insert("vector_store_path".into(), json!("junk/bad.dvec"));
    bus.publish(
        "ingest:domain:end",
        &Event::new(EventType::Custom, "ingest:domain:end", payload),
    )
    .await
    .unwrap();
    let e = fb.sync("docs", None, "junk/bad.dvec").await.unwrap_err();
    assert!(e.to_string().contains("junk/bad.dvec"), "{e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for kb in [&b, &c] {
        eventually(kb, "how long do refunds take", "policy two").await;
    }

    // A replica that starts later catches up from the status.
    let late = replica_kb();
    let fl = IndexFollower::new(late.clone(), knowledge.clone());
    assert!(
        fl.sync_from_status(&*knowledge, "docs", &TenantContext::SingleTenant)
            .await
            .unwrap()
            .is_some()
    );
    eventually(&late, "how long do refunds take", "policy two").await;
}

#[cfg(feature = "redis")]
mod over_redis {
    use super::*;
    use std::process::Command;

    const CHILD: &str = "DYNREG_REPLICA_CHILD_DIR";

    async fn redis_bus(url: &str, prefix: &str) -> Arc<dyn EventBus> {
        dynreg_event_bus::create_event_bus(
            &json!({"backend": "redis", "url": url, "channel_prefix": prefix}),
        )
        .await
        .unwrap()
    }

    /// The follower process: loads what the other process publishes and reports through files
    /// in the shared directory (`ready`, then `found` with the answer).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn child_replica_process() {
        let Ok(dir) = std::env::var(CHILD) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let url = std::env::var("DYNREG_TEST_REDIS_URL").unwrap();
        let prefix = std::env::var("DYNREG_REPLICA_PREFIX").unwrap();
        let knowledge = file_backend(&dir.join("kb")).await;
        let bus = redis_bus(&url, &prefix).await;
        let kb = replica_kb();
        let follower = IndexFollower::new(kb.clone(), knowledge);
        let _task = follower.follow(&*bus).await.unwrap();
        std::fs::write(dir.join("ready"), b"").unwrap();
        let text = eventually(&kb, "how long do refunds take", "policy one").await;
        std::fs::write(dir.join("found"), text).unwrap();
    }

    async fn wait_for_file(path: &std::path::Path) -> String {
        for _ in 0..1500 {
            if let Ok(s) = std::fs::read_to_string(path) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} never appeared", path.display());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_process_searches_what_the_first_ingested() {
        if std::env::var(CHILD).is_ok() {
            return;
        }
        let Ok(url) = std::env::var("DYNREG_TEST_REDIS_URL") else {
            println!("skipped: two-process replica test (DYNREG_TEST_REDIS_URL unset)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let knowledge = file_backend(&dir.path().join("kb")).await;
        knowledge.create_kb("docs", Metadata::new()).await.unwrap();
        let prefix = format!("replicas{:x}", rand::random::<u32>());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "over_redis::child_replica_process",
                "--test-threads",
                "1",
            ])
            .env(CHILD, dir.path())
            .env("DYNREG_TEST_REDIS_URL", &url)
            .env("DYNREG_REPLICA_PREFIX", &prefix)
            .spawn()
            .unwrap();
        wait_for_file(&dir.path().join("ready")).await;

        put(
            &knowledge,
            "refunds.md",
            "# Refunds\n\nRefunds take five days (policy one).\n",
        )
        .await;
        let bus = redis_bus(&url, &prefix).await;
        let manager = KnowledgeIngestionManager::new(knowledge.clone(), replica_kb())
            .with_event_bus(bus.clone())
            .with_index_publication(knowledge.clone(), "indexes");
        manager.ingest("docs", SwapMode::Tombstone).await.unwrap();
        let found = wait_for_file(&dir.path().join("found")).await;
        assert!(found.contains("policy one"), "{found}");
        assert!(child.wait().unwrap().success());
    }
}
