//! The S3 index journal: what a put costs as the knowledge base grows, compaction (what the
//! original then reads), pruning, a base written by the original, and the server's support
//! for the conditional requests the journal relies on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dynreg_knowledge_store::identity::md5_hex;
use dynreg_knowledge_store::{
    IngestionStatus, KnowledgeBackend, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions,
    S3KnowledgeBackend, StatusUpdate,
};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutOptions as ObjPutOptions};

use super::test_store::{Class, TestStore};
use super::{all_keys, server_config, versioning::raw_store};

fn backend(store: &Arc<TestStore>) -> S3KnowledgeBackend {
    S3KnowledgeBackend::with_store(store.clone(), "mem", "knowledge/", 64)
}

async fn put(b: &S3KnowledgeBackend, path: &str, content: Vec<u8>) {
    b.put_file("kb", path, Bytes::from(content), PutOptions::default())
        .await
        .unwrap();
}

/// The document the original reads: its `{path: checksum}` pairs.
async fn base_files(store: &dyn ObjectStore) -> Vec<(String, String)> {
    let bytes = store
        .get(&Path::from("knowledge/kb/_metadata.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut files: Vec<(String, String)> = doc["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, f)| (p.clone(), f["checksum"].as_str().unwrap().to_owned()))
        .collect();
    files.sort();
    files
}

fn record_count(keys: &[String]) -> usize {
    keys.iter()
        .filter(|k| k.contains("/_dynreg/journal/"))
        .count()
}

/// 2,000 puts one by one: the index bytes each put writes stay flat from the first to the
/// last file, and `_metadata.json` is rewritten rarely (the original rewrites it whole on
/// every put: 2,000 writes and ~1,000 times its final size in bytes).
#[tokio::test]
async fn index_cost_per_put_does_not_grow_with_the_files() {
    const N: usize = 2_000;
    let store = Arc::new(TestStore::default());
    let b = backend(&store);
    b.create_kb("kb", Metadata::new()).await.unwrap();
    let mut record_bytes_at = Vec::new();
    for i in 0..N {
        if i == 0 || i == N / 4 || i == N - N / 4 {
            record_bytes_at.push(store.of(Class::Record));
        }
        put(&b, &format!("docs/{i:05}.md"), vec![b'x'; 64]).await;
    }
    let end = store.of(Class::Record);
    let final_base = store.of(Class::Base);
    let base_size = {
        b.compact("kb").await.unwrap();
        store.of(Class::Base).put_bytes - final_base.put_bytes
    };
    assert_eq!(b.list_files("kb", None).await.unwrap().len(), N);

    // Journal writes: one record per put, of the same size early and late.
    let [first, early_end, late_from] = record_bytes_at[..] else {
        unreachable!("three samples")
    };
    let late_to = end;
    let span = (N / 4) as u64;
    let early_per_put = (early_end.put_bytes - first.put_bytes) / span;
    let late_per_put = (late_to.put_bytes - late_from.put_bytes) / span;
    assert!(
        late_per_put <= early_per_put + early_per_put / 4,
        "record bytes per put grew: {early_per_put} -> {late_per_put}"
    );
    assert_eq!(late_to.puts - late_from.puts, span, "one record per put");

    // Compactions: rare, and all of them together a small multiple of the final document.
    assert!(
        final_base.puts <= (N / 40) as u64,
        "{} rewrites of _metadata.json for {N} puts",
        final_base.puts
    );
    assert!(
        final_base.put_bytes <= 32 * base_size,
        "compactions wrote {} bytes; the document is {base_size}",
        final_base.put_bytes
    );
    // The writer never downloads the document again: its cache is revalidated (304s).
    assert!(
        final_base.get_bytes <= base_size,
        "read {} bytes of _metadata.json",
        final_base.get_bytes
    );
}

/// The original reads only `_metadata.json`: after `close` (or `compact`) it holds every
/// write, with the identity dynreg reports. A fresh instance reads the journal either way.
#[tokio::test]
async fn close_compacts_what_the_original_reads() {
    let store = Arc::new(TestStore::default());
    let b = backend(&store);
    b.create_kb("kb", Metadata::new()).await.unwrap();
    for (p, c) in [("a.md", "A"), ("b.md", "B"), ("c.md", "C")] {
        put(&b, p, c.as_bytes().to_vec()).await;
    }
    b.delete_file("kb", "b.md").await.unwrap();
    assert!(base_files(&*store).await.is_empty(), "not compacted yet");
    let sibling = backend(&store);
    assert_eq!(sibling.list_files("kb", None).await.unwrap().len(), 2);
    b.close().await.unwrap();
    assert_eq!(
        base_files(&*store).await,
        vec![
            ("a.md".to_owned(), md5_hex(b"A")),
            ("c.md".to_owned(), md5_hex(b"C"))
        ]
    );
    assert_eq!(
        b.get_checksum("kb").await.unwrap(),
        sibling.get_checksum("kb").await.unwrap()
    );
}

/// Compaction is not a write: the state version stays, and a status write conditional on it
/// succeeds. Every real write changes it.
#[tokio::test]
async fn compaction_keeps_the_state_version() {
    let store = Arc::new(TestStore::default());
    let b = backend(&store);
    b.create_kb("kb", Metadata::new()).await.unwrap();
    put(&b, "a.md", b"A".to_vec()).await;
    let before = b.get_state_version("kb").await.unwrap().unwrap();
    b.compact("kb").await.unwrap();
    let sibling = backend(&store);
    assert_eq!(
        sibling.get_state_version("kb").await.unwrap().as_ref(),
        Some(&before)
    );
    let ready = StatusUpdate {
        expected_version: Some(before.clone()),
        ..StatusUpdate::new(IngestionStatus::Ready)
    };
    sibling
        .set_ingestion_status("kb", ready.clone())
        .await
        .unwrap();
    let after = b.get_state_version("kb").await.unwrap().unwrap();
    assert_ne!(after, before);
    let err = b.set_ingestion_status("kb", ready).await.unwrap_err();
    assert!(matches!(err, KnowledgeError::Conflict { .. }), "{err}");
    // A version handed out by one instance is good on another whose cache has not seen the
    // write yet.
    put(&b, "b.md", b"B".to_vec()).await;
    let handed_out = b.get_state_version("kb").await.unwrap();
    let indexing = StatusUpdate {
        expected_version: handed_out,
        ..StatusUpdate::new(IngestionStatus::Ingesting)
    };
    sibling.set_ingestion_status("kb", indexing).await.unwrap();
}

/// Two instances writing in turn, each with a cache the other just made stale: every write
/// lands, in order, and each sees the other's.
#[tokio::test]
async fn instances_with_stale_caches_lose_nothing() {
    let store = Arc::new(TestStore::default());
    let (a, b) = (backend(&store), backend(&store));
    a.create_kb("kb", Metadata::new()).await.unwrap();
    for i in 0..40usize {
        let (w, other) = if i.is_multiple_of(2) {
            (&a, &b)
        } else {
            (&b, &a)
        };
        put(w, &format!("f{i:02}.md"), format!("v{i}").into_bytes()).await;
        if i.is_multiple_of(3) {
            // The same path from the other instance: the later write wins.
            put(other, &format!("f{i:02}.md"), format!("w{i}").into_bytes()).await;
        }
    }
    for who in [&a, &b] {
        let files = who.list_files("kb", None).await.unwrap();
        assert_eq!(files.len(), 40);
        for f in files {
            let i: usize = f.path[1..3].parse().unwrap();
            let want = if i.is_multiple_of(3) {
                format!("w{i}")
            } else {
                format!("v{i}")
            };
            assert_eq!(f.checksum, md5_hex(want.as_bytes()), "{}", f.path);
        }
    }
    let info = a.get_info("kb").await.unwrap().unwrap();
    assert_eq!((info.file_count, info.version.as_str()), (40, "55"));
}

/// Compacted records are deleted once their retention has passed (zero here), so the
/// journal stays bounded; a fresh instance still reads every file.
#[tokio::test]
async fn compacted_records_are_pruned() {
    let store = Arc::new(TestStore::default());
    let b = backend(&store).with_journal_retention(Duration::ZERO);
    b.create_kb("kb", Metadata::new()).await.unwrap();
    for i in 0..300usize {
        put(&b, &format!("{i:03}.md"), vec![b'p'; 8]).await;
        // Distinct compaction times, so each compaction can prune the one before.
        if i.is_multiple_of(64) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let records = record_count(&all_keys(&*store).await);
    assert!(records <= 128, "{records} journal records kept");
    let fresh = backend(&store);
    assert_eq!(fresh.list_files("kb", None).await.unwrap().len(), 300);
}

/// A knowledge base the original wrote (no journal in its document): dynreg reads it, and
/// its first write rewrites the document with a journal, keeping the original's files.
#[tokio::test]
async fn a_base_written_by_the_original_is_taken_over() {
    let store = Arc::new(TestStore::default());
    let doc = serde_json::json!({
        "info": {"domain_id": "kb", "file_count": 1, "total_size_bytes": 6,
                 "last_updated": "2026-11-28T00:04:10.568737+00:00", "version": "2",
                 "ingestion_status": "ready", "metadata": {}},
        "files": {"theirs.md": {"path": "theirs.md", "content_type": "text/markdown",
                  "size_bytes": 6, "checksum": md5_hex(b"theirs"),
                  "uploaded_at": "2026-11-28T00:04:10.568737+00:00", "metadata": {}}}
    });
    store
        .put(
            &Path::from("knowledge/kb/_metadata.json"),
            serde_json::to_vec_pretty(&doc).unwrap().into(),
        )
        .await
        .unwrap();
    store
        .put(
            &Path::from("knowledge/kb/content/theirs.md"),
            Bytes::from_static(b"theirs").into(),
        )
        .await
        .unwrap();
    let b = backend(&store);
    let token = b.get_state_version("kb").await.unwrap().unwrap();
    put(&b, "ours.md", b"ours".to_vec()).await;
    assert_ne!(b.get_state_version("kb").await.unwrap().unwrap(), token);
    let names =
        |files: Vec<(String, String)>| files.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    // The takeover wrote the whole document, so the original sees both files at once.
    assert_eq!(
        names(base_files(&*store).await),
        vec!["ours.md", "theirs.md"]
    );
    put(&b, "more.md", b"more".to_vec()).await;
    let sibling = backend(&store);
    assert_eq!(sibling.list_files("kb", None).await.unwrap().len(), 3);
    let info = sibling.get_info("kb").await.unwrap().unwrap();
    assert_eq!((info.version.as_str(), info.file_count), ("4", 3));
}

/// The S3 server honours what the journal relies on: `If-None-Match` on reads (a 304 keeps
/// a cached index without downloading it), `If-None-Match: *` on writes (one record per
/// sequence number) and listing after an offset.
#[tokio::test]
async fn the_server_supports_the_journal_requests() {
    let Some(cfg) = server_config() else {
        return;
    };
    let store = raw_store(&cfg);
    let dir = format!("{}/probe", cfg.prefix);
    let key = Path::from(format!("{dir}/00000000000000000001.json"));
    let done = store
        .put(&key, Bytes::from_static(b"{}").into())
        .await
        .unwrap();
    let cached = GetOptions {
        if_none_match: done.e_tag.clone(),
        ..GetOptions::default()
    };
    let err = store.get_opts(&key, cached).await.unwrap_err();
    assert!(
        matches!(err, object_store::Error::NotModified { .. }),
        "{err}"
    );
    let create = ObjPutOptions {
        mode: object_store::PutMode::Create,
        ..ObjPutOptions::default()
    };
    let err = store
        .put_opts(&key, Bytes::from_static(b"{}").into(), create)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        ),
        "{err}"
    );
    for n in 2..=3 {
        let k = Path::from(format!("{dir}/{n:020}.json"));
        store
            .put(&k, Bytes::from_static(b"{}").into())
            .await
            .unwrap();
    }
    let after: Vec<String> = store
        .list_with_offset(Some(&Path::from(dir.as_str())), &key)
        .map_ok(|m| m.location.filename().unwrap_or_default().to_owned())
        .try_collect()
        .await
        .unwrap();
    let mut after = after;
    after.sort();
    assert_eq!(
        after,
        vec!["00000000000000000002.json", "00000000000000000003.json"]
    );
    let all: Vec<_> = store
        .list(Some(&Path::from(dir.as_str())))
        .map_ok(|m| m.location)
        .boxed()
        .try_collect()
        .await
        .unwrap();
    for k in all {
        store.delete(&k).await.unwrap();
    }
}

/// Two instances writing concurrently through several compactions (each racing the other's
/// compare-and-swap on the base): every file lands, in the journal and, after `close`, in
/// `_metadata.json`.
#[tokio::test]
async fn concurrent_instances_across_compactions_lose_nothing() {
    const N: usize = 400;
    let store = Arc::new(TestStore::default());
    let (a, b) = (Arc::new(backend(&store)), Arc::new(backend(&store)));
    a.create_kb("kb", Metadata::new()).await.unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let w = if i.is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            tokio::spawn(async move { put(&w, &format!("c{i:03}.md"), vec![b'c'; 16]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(store.of(Class::Base).puts >= 3, "compactions ran");
    let fresh = backend(&store);
    assert_eq!(fresh.list_files("kb", None).await.unwrap().len(), N);
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_eq!(base_files(&*store).await.len(), N);
    assert_eq!(
        a.get_checksum("kb").await.unwrap(),
        fresh.get_checksum("kb").await.unwrap()
    );
}

/// A compaction whose compare-and-swap fails deletes no record the base does not cover yet:
/// with a zero retention and every base update refused, a fresh instance still reads every
/// file from the journal.
#[tokio::test]
async fn a_failed_compaction_prunes_nothing_uncovered() {
    let store = Arc::new(TestStore::default());
    let b = backend(&store).with_journal_retention(Duration::ZERO);
    b.create_kb("kb", Metadata::new()).await.unwrap();
    store.refuse_base_updates.store(true, Ordering::SeqCst);
    for i in 0..200usize {
        put(&b, &format!("{i:03}.md"), vec![b'q'; 8]).await;
    }
    assert_eq!(
        store.of(Class::Base).puts,
        1,
        "only create_kb's write landed"
    );
    let fresh = backend(&store);
    assert_eq!(fresh.list_files("kb", None).await.unwrap().len(), 200);
    assert_eq!(record_count(&all_keys(&*store).await), 200);
}

/// Concurrent reads of one knowledge base on one instance share revalidations: 16 readers
/// queued behind a slow one cost a couple of conditional GETs, not 16, and a read that
/// starts after a sibling's write still sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_share_a_revalidation() {
    let store = Arc::new(TestStore::default());
    let b = Arc::new(backend(&store));
    b.create_kb("kb", Metadata::new()).await.unwrap();
    put(&b, "a.md", b"A".to_vec()).await;
    store.base_read_delay_ms.store(20, Ordering::SeqCst);
    let before = store.of(Class::Base).gets;
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.get_file_info("kb", "a.md").await })
        })
        .collect();
    for r in readers {
        let f = r.await.unwrap().unwrap().expect("a.md is indexed");
        assert_eq!(f.checksum, md5_hex(b"A"));
    }
    let revalidations = store.of(Class::Base).gets - before;
    assert!(
        revalidations <= 4,
        "{revalidations} base reads for 16 readers"
    );
    store.base_read_delay_ms.store(0, Ordering::SeqCst);
    let sibling = backend(&store);
    put(&sibling, "b.md", b"B".to_vec()).await;
    assert!(b.get_file_info("kb", "b.md").await.unwrap().is_some());
}
