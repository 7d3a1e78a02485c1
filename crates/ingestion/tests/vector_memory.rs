//! The memory vector store: the conformance suite, and what is specific to it — persistence
//! (atomic save, reload, refusal of torn, foreign or mismatched files).

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_ingestion::vector::conformance::Harness;
use dynreg_ingestion::vector::{MemoryVectorStoreConfig, Metric};
use dynreg_ingestion::{Filter, MemoryVectorStore, VectorError, VectorRecord, VectorStore};
use serde_json::json;

struct Memory;

#[async_trait]
impl Harness for Memory {
    async fn open(&self) -> Arc<dyn VectorStore> {
        Arc::new(MemoryVectorStore::new(4).expect("open"))
    }
}

dynreg_ingestion::vector_store_conformance_tests!(Some(Memory));

fn rec(i: usize, dims: usize) -> VectorRecord {
    let mut v = vec![0.0; dims];
    v[i % dims] = 1.0;
    v[(i * 7 + 1) % dims] += 0.5;
    VectorRecord {
        id: format!("r{i}"),
        vector: v,
        metadata: json!({"i": i, "even": i.is_multiple_of(2)})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn config(path: &std::path::Path, dims: usize) -> MemoryVectorStoreConfig {
    MemoryVectorStoreConfig {
        dimensions: dims,
        metric: Metric::Cosine,
        persist_path: Some(path.to_path_buf()),
    }
}

#[tokio::test]
async fn a_flushed_store_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/store.bin");
    let a = MemoryVectorStore::open(config(&path, 16)).unwrap();
    a.upsert((0..500).map(|i| rec(i, 16)).collect())
        .await
        .unwrap();
    a.delete(&["r3".into(), "r250".into()]).await.unwrap();
    a.flush().await.unwrap();
    let b = MemoryVectorStore::open(config(&path, 16)).unwrap();
    assert_eq!(b.len(), 498);
    let q = rec(42, 16).vector;
    let (ha, hb) = (
        a.search(&q, 10, &Filter::all()).await.unwrap(),
        b.search(&q, 10, &Filter::all()).await.unwrap(),
    );
    assert_eq!(ha, hb);
    assert_eq!(
        b.count(&Filter::all().with("even", true)).await.unwrap(),
        249
    );
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("store.bin")]);
}

#[tokio::test]
async fn torn_foreign_and_mismatched_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bin");
    let a = MemoryVectorStore::open(config(&path, 8)).unwrap();
    a.upsert((0..50).map(|i| rec(i, 8)).collect())
        .await
        .unwrap();
    a.flush().await.unwrap();
    let good = std::fs::read(&path).unwrap();

    let check = |bytes: &[u8], dims: usize, needle: &str| {
        std::fs::write(&path, bytes).unwrap();
        let e = MemoryVectorStore::open(config(&path, dims)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, VectorError::Persist { .. }), "{e:?}");
        assert!(msg.contains("store.bin") && msg.contains(needle), "{msg}");
    };
    check(&good[..good.len() / 2], 8, "checksum");
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    check(&flipped, 8, "checksum");
    check(b"{\"vectors\": []}", 8, "not a dynreg vector store file");
    check(&good, 16, "8-dimensional");
}
