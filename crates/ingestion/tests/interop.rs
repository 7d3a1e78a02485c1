//! Interop with the Python original, for real: the original's event bus subscribed over Redis
//! to the ingestion lifecycle topics sees the events of dynreg's ingestion manager with the
//! payloads, types and timestamps the original's subscribers expect
//! (`tests/interop/ingest_events.py` checks them). Needs `DYNREG_INTEROP_PYTHON` (a Python with
//! the original installed; `cargo xtask interop`) and `DYNREG_TEST_REDIS_URL`; skipped, saying
//! so, when one is unset.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynreg_event_bus::create_event_bus;
use dynreg_ingestion::{
    HashEmbedder, KnowledgeIngestionManager, MemoryVectorStore, RagKnowledgeBase, SwapMode,
};
use dynreg_knowledge_store::{
    KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_subscriber_sees_dynregs_ingestion_events() {
    let python = std::env::var("DYNREG_INTEROP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let url = std::env::var("DYNREG_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let (Some(python), Some(url)) = (python, url) else {
        println!(
            "skipped: ingestion events interop with the Python original (DYNREG_INTEROP_PYTHON or DYNREG_TEST_REDIS_URL unset)"
        );
        return;
    };
    // A channel prefix of this run only, on both sides.
    let prefix = format!("ingestinterop{}", std::process::id());
    let domain = "support";
    let dir = tempfile::tempdir().unwrap();
    let (out, ready) = (dir.path().join("events.json"), dir.path().join("ready"));
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/ingest_events.py");
    let child = tokio::process::Command::new(&python)
        .arg(script)
        .args([url.as_str(), &prefix, domain])
        .arg(&out)
        .arg(&ready)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready.exists(), "the original's subscriber did not start");

    let bus = create_event_bus(&json!({"backend": "redis", "url": url, "channel_prefix": prefix}))
        .await
        .unwrap();
    let source: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    source.create_kb(domain, Metadata::new()).await.unwrap();
    for (path, text) in [
        (
            "billing.md",
            "# Billing\n\n## Refunds\n\nRefunds take 14 days.\n",
        ),
        (
            "shipping.md",
            "# Shipping\n\nParcels ship from Rotterdam.\n",
        ),
    ] {
        source
            .put_file(domain, path, text.into(), PutOptions::default())
            .await
            .unwrap();
    }
    let kb = RagKnowledgeBase::new(
        Arc::new(HashEmbedder::new(64)),
        Arc::new(MemoryVectorStore::new(64).unwrap()),
    )
    .unwrap();
    let manager = KnowledgeIngestionManager::new(source, kb).with_event_bus(bus.clone());
    let result = manager.ingest(domain, SwapMode::Tombstone).await.unwrap();
    assert!(result.success());

    let status = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the original's subscriber finished")
        .unwrap();
    assert!(
        status.status.success(),
        "the original's subscriber refused dynreg's events: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let end = &seen["ingest:domain:end"]["payload"];
    assert_eq!(end["files_processed"], json!(result.files_processed));
    assert_eq!(end["chunks_created"], json!(result.chunks_created));
    assert_eq!(
        seen["knowledge:ingestion"]["payload"]["chunks_created"],
        json!(result.chunks_created)
    );
    bus.close().await.unwrap();
}
