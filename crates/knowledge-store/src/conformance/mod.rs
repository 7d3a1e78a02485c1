//! The conformance suite: one async function per behaviour, run by every backend's tests
//! through [`knowledge_conformance_tests!`](crate::knowledge_conformance_tests). Ported from
//! the upstream cases of reference-spec §6.9 plus the guarantees dynreg adds (no lost writes,
//! identical path rules, streaming, batch uploads, state-write events).
//!
//! The functions panic on a failed expectation, like any test. Tenant-scoped state and the key
//! layout have their own modules; every case is re-exported here. The cases that need an
//! event bus (`subscribe_to_changes`, state writes published with `also_publish_to`) live with
//! the bus bridge in `dynreg-hot-reload`, whose `knowledge_bridge` tests run them against
//! every backend; this suite takes only a glob matcher from its harness ([`Store::glob`]).

mod keys;
mod tenancy;
mod tenant_writes;

pub use keys::{classify_key_cases, key_pattern_refusals, key_patterns_match_written_keys};
pub use tenancy::{
    tenant_content_is_shared, tenant_diff_falls_back_to_shared_lineage,
    tenant_none_equals_single_tenant, tenant_snapshot_lineage_isolated,
    tenant_state_keys_byte_identity, tenant_state_requires_existing_kb, tenant_status_isolated,
    tenant_view_default_and_real_counts,
};
pub use tenant_writes::{
    delete_kb_removes_tenant_state, invalid_tenant_contexts_refused, tenant_conditional_writes,
    tenant_conditional_writes_race_one_winner, tenant_namespace_disjoint,
};

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::identity::{kb_identity, md5_hex};
use crate::paths::{HOSTILE_DOMAIN_IDS, HOSTILE_PATHS};
use crate::{
    ByteStream, FileUpload, IngestionStatus, KnowledgeBackend, KnowledgeError, KnowledgeKeyKind,
    Metadata, PutOptions, StateWrite, StatusUpdate, collect,
};

/// A store under test: a backend, a second instance on the same storage (another "process"),
/// and whatever must stay alive while they are used (a temp dir, …).
pub struct Store {
    /// The backend under test, on empty storage.
    pub backend: Arc<dyn KnowledgeBackend>,
    /// A second, independent instance on the same storage.
    pub sibling: Arc<dyn KnowledgeBackend>,
    /// Kept alive for the duration of the test.
    pub guard: Box<dyn Any + Send + Sync>,
    /// Whether a watch pattern of [`KnowledgeBackend::key_pattern`] matches a key, as the
    /// event bus that would watch the keys decides (the suite does not depend on a bus). Test
    /// crates give `|p, t| dynreg_event_bus::Glob::new(p).unwrap().matches(t)`.
    pub glob: GlobMatcher,
}

/// A glob matcher: whether `pattern` (an `fnmatch` glob in which `*` also matches `/`) matches
/// `topic`.
pub type GlobMatcher = fn(pattern: &str, topic: &str) -> bool;

fn unique(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

fn meta(v: serde_json::Value) -> Metadata {
    match v {
        serde_json::Value::Object(m) => m,
        _ => Metadata::new(),
    }
}

async fn put(b: &dyn KnowledgeBackend, d: &str, p: &str, content: &str) {
    b.put_file(d, p, Bytes::from(content.to_owned()), PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put_file({d}, {p}): {e}"));
}

/// Records every state write the store's backend reports.
fn recorder(s: &Store) -> Arc<Mutex<Vec<StateWrite>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    s.backend
        .state_events()
        .on_state_write(move |w| sink.lock().unwrap().push(w.clone()));
    seen
}

/// The recorded state writes of domain `d`.
fn writes_of(seen: &Mutex<Vec<StateWrite>>, d: &str) -> Vec<StateWrite> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|w| w.domain_id == d)
        .cloned()
        .collect()
}

/// The domain ids `list_kbs` reports, in its order.
async fn kb_ids(b: &dyn KnowledgeBackend) -> Vec<String> {
    b.list_kbs()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.domain_id)
        .collect()
}

/// Checks that `err` is the `Conflict` of a status write on `d` expecting `expected` and
/// finding `actual`; returns the key it names.
fn expect_conflict(err: &KnowledgeError, d: &str, expected: &str, actual: &str) -> String {
    match err {
        KnowledgeError::Conflict {
            domain_id,
            key,
            expected_version,
            actual_version,
        } => {
            assert_eq!(domain_id, d);
            assert_eq!(expected_version, expected);
            assert_eq!(actual_version.as_deref(), Some(actual));
            key.clone()
        }
        other => panic!("expected Conflict, got {other}"),
    }
}

async fn new_kb(b: &dyn KnowledgeBackend, tag: &str) -> String {
    let d = unique(tag);
    b.create_kb(&d, Metadata::new()).await.expect("create_kb");
    d
}

/// create_kb: version "1", pending, counts 0, metadata kept.
pub async fn create_kb_defaults(s: Store) {
    let b = &*s.backend;
    let d = unique("create");
    let info = b
        .create_kb(&d, meta(json!({"description": "My KB"})))
        .await
        .unwrap();
    assert_eq!(info.domain_id, d);
    assert_eq!(info.version, "1");
    assert_eq!(info.ingestion_status, IngestionStatus::Pending);
    assert_eq!((info.file_count, info.total_size_bytes), (0, 0));
    assert_eq!(info.metadata["description"], "My KB");
    let read = b.get_info(&d).await.unwrap().expect("info");
    assert_eq!(read.metadata, info.metadata);
    assert_eq!(read.version, "1");
}

/// A second create_kb of the same domain fails naming it.
pub async fn create_kb_duplicate_fails(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "dup").await;
    let err = b.create_kb(&d, Metadata::new()).await.unwrap_err();
    assert!(
        matches!(err, KnowledgeError::KbAlreadyExists { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&d));
}

/// get_info of a missing KB is None; get_file and list_files of one are None / empty.
pub async fn missing_kb_reads_are_empty(s: Store) {
    let b = &*s.backend;
    let d = unique("missing");
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.get_file(&d, "a.md").await.unwrap().is_none());
    assert!(b.list_files(&d, None).await.unwrap().is_empty());
    assert!(!b.file_exists(&d, "a.md").await.unwrap());
    assert!(b.get_state_version(&d).await.unwrap().is_none());
    assert!(!b.delete_kb(&d).await.unwrap());
    assert!(!b.delete_file(&d, "a.md").await.unwrap());
    let err = b.get_checksum(&d).await.unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }));
    let err = b.list_changes_since(&d, "").await.unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }));
    assert!(b.has_changes_since(&d, "").await.is_err());
}

/// list_kbs is sorted by domain id.
pub async fn list_kbs_sorted(s: Store) {
    let b = &*s.backend;
    let base = unique("list");
    for name in ["c", "a", "b"] {
        b.create_kb(&format!("{base}-{name}"), Metadata::new())
            .await
            .unwrap();
    }
    let ids: Vec<String> = kb_ids(b)
        .await
        .into_iter()
        .filter(|d| d.starts_with(&base))
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("{base}-a"),
            format!("{base}-b"),
            format!("{base}-c")
        ]
    );
    let all = kb_ids(b).await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
}

/// delete_kb removes info, files and listing entry; a second delete returns false.
pub async fn delete_kb_removes_everything(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "delkb").await;
    put(b, &d, "a.md", "a").await;
    put(b, &d, "docs/b.md", "b").await;
    assert!(b.delete_kb(&d).await.unwrap());
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.get_file(&d, "a.md").await.unwrap().is_none());
    assert!(b.list_files(&d, None).await.unwrap().is_empty());
    assert!(!b.list_kbs().await.unwrap().iter().any(|i| i.domain_id == d));
    assert!(!b.delete_kb(&d).await.unwrap());
    // The domain can be created again, empty.
    b.create_kb(&d, Metadata::new()).await.unwrap();
    assert!(b.list_files(&d, None).await.unwrap().is_empty());
    assert_eq!(b.get_checksum(&d).await.unwrap(), "");
}

/// put_file then get_file returns the bytes; the entry has size, MD5, type and metadata.
pub async fn put_and_get_file(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "putget").await;
    let body = b"# Introduction\n\nWelcome to our knowledge base!";
    let f = b
        .put_file(
            &d,
            "content/intro.md",
            Bytes::from_static(body),
            PutOptions {
                content_type: None,
                metadata: meta(json!({"lang": "en", "n": 3})),
            },
        )
        .await
        .unwrap();
    assert_eq!(f.path, "content/intro.md");
    assert_eq!(f.size_bytes, body.len() as u64);
    assert_eq!(f.checksum, md5_hex(body));
    assert_eq!(f.content_type, "text/markdown");
    assert_eq!(f.metadata["n"], 3);
    assert_eq!(
        b.get_file(&d, "content/intro.md")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        body
    );
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(
        (info.file_count, info.total_size_bytes),
        (1, body.len() as u64)
    );
    assert_eq!(info.version, "2");
    let stored = b
        .get_file_info(&d, "content/intro.md")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, f);
    let explicit = b
        .put_file(
            &d,
            "x.bin",
            Bytes::from_static(b"x"),
            PutOptions::with_content_type("text/plain"),
        )
        .await
        .unwrap();
    assert_eq!(explicit.content_type, "text/plain");
}

/// put_file on a missing KB fails naming the domain, and writes nothing.
pub async fn put_file_without_kb_fails(s: Store) {
    let b = &*s.backend;
    let d = unique("nokb");
    let err = b
        .put_file(&d, "a.md", Bytes::from_static(b"a"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&d));
    let err = b
        .put_files(&d, vec![FileUpload::new("a.md", "a")])
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.get_file(&d, "a.md").await.unwrap().is_none());
}

/// list_files: sorted by path, prefix is a plain startswith.
pub async fn list_files_prefix_sorted(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "listf").await;
    for p in [
        "z.md",
        "content/b.md",
        "content/a.md",
        "contents.md",
        "data/x.json",
    ] {
        put(b, &d, p, p).await;
    }
    let all: Vec<_> = b
        .list_files(&d, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(
        all,
        vec![
            "content/a.md",
            "content/b.md",
            "contents.md",
            "data/x.json",
            "z.md"
        ]
    );
    let content: Vec<_> = b
        .list_files(&d, Some("content/"))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(content, vec!["content/a.md", "content/b.md"]);
    let c: Vec<_> = b
        .list_files(&d, Some("content"))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(c.len(), 3);
    assert!(b.list_files(&d, Some("nothing/")).await.unwrap().is_empty());
}

/// file_exists follows puts and deletes.
pub async fn file_exists_follows_writes(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "exists").await;
    assert!(!b.file_exists(&d, "a/b.md").await.unwrap());
    put(b, &d, "a/b.md", "x").await;
    assert!(b.file_exists(&d, "a/b.md").await.unwrap());
    assert!(!b.file_exists(&d, "a").await.unwrap());
    assert!(b.delete_file(&d, "a/b.md").await.unwrap());
    assert!(!b.file_exists(&d, "a/b.md").await.unwrap());
}

/// get_file returns exactly the stored bytes for empty, small and large files (the file
/// backend reads small cached files inline and large ones on the blocking pool); a folder
/// is not a file.
pub async fn get_file_exact_bytes_any_size(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "sizes").await;
    for (i, size) in [0usize, 1, 4096, 300 * 1024].into_iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|k| (k * 31 + i) as u8).collect();
        let path = format!("sizes/f{i}.bin");
        b.put_file(&d, &path, Bytes::from(body.clone()), PutOptions::default())
            .await
            .unwrap();
        let got = b.get_file(&d, &path).await.unwrap().expect("stored file");
        assert_eq!(got.len(), size, "{path}");
        assert!(got.as_ref() == body.as_slice(), "{path}: bytes differ");
    }
    assert!(b.get_file(&d, "sizes").await.unwrap().is_none());
    assert!(b.get_file(&d, "sizes/f9.bin").await.unwrap().is_none());
    assert!(b.get_file(&d, "sizes/f0.bin/x").await.unwrap().is_none());
}

/// delete_file updates file_count, size and version; a missing file gives false.
pub async fn delete_file_updates_counts(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "delf").await;
    put(b, &d, "a.md", "aaa").await;
    put(b, &d, "deep/nested/b.md", "bb").await;
    let before = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((before.file_count, before.total_size_bytes), (2, 5));
    assert!(b.delete_file(&d, "deep/nested/b.md").await.unwrap());
    let after = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((after.file_count, after.total_size_bytes), (1, 3));
    assert_eq!(after.version, "4");
    assert!(!b.delete_file(&d, "deep/nested/b.md").await.unwrap());
    assert!(b.get_file(&d, "deep/nested/b.md").await.unwrap().is_none());
    // The emptied folder does not block a file of the same name.
    put(b, &d, "deep", "now a file").await;
    assert_eq!(
        b.get_file(&d, "deep").await.unwrap().unwrap().as_ref(),
        b"now a file"
    );
}

/// Replacing a file keeps the count, updates size and checksum, bumps the version.
pub async fn overwrite_replaces_entry(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "over").await;
    put(b, &d, "a.md", "one").await;
    put(b, &d, "a.md", "three").await;
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((info.file_count, info.total_size_bytes), (1, 5));
    assert_eq!(info.version, "3");
    let f = b.get_file_info(&d, "a.md").await.unwrap().unwrap();
    assert_eq!(f.checksum, md5_hex(b"three"));
    assert_eq!(
        b.get_file(&d, "a.md").await.unwrap().unwrap().as_ref(),
        b"three"
    );
}

/// stream_file: 1000 bytes at chunk 100 is exactly 10 chunks; a missing file is None.
pub async fn stream_file_chunks(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "stream").await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    b.put_file(
        &d,
        "big.bin",
        Bytes::from(data.clone()),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let chunks: Vec<Bytes> = b
        .stream_file(&d, "big.bin", 100)
        .await
        .unwrap()
        .expect("stream")
        .map(|c| c.unwrap())
        .collect()
        .await;
    assert_eq!(chunks.len(), 10);
    assert!(chunks.iter().all(|c| c.len() == 100));
    assert_eq!(chunks.concat(), data);
    assert!(b.stream_file(&d, "nope.bin", 100).await.unwrap().is_none());
    assert!(
        b.stream_file(&unique("nokb"), "big.bin", 100)
            .await
            .unwrap()
            .is_none()
    );
}

/// put_stream stores a multi-chunk upload; stream_file reads it back identically.
pub async fn put_stream_round_trips(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "pstream").await;
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
    let n = 100; // 6.25 MiB, more than one S3 multipart part
    let chunk = Bytes::from(chunk);
    let mut expected = md5::Md5::default();
    for _ in 0..n {
        md5::Digest::update(&mut expected, &chunk);
    }
    let expected = hex::encode(md5::Digest::finalize(expected));
    let c2 = chunk.clone();
    let input: ByteStream = futures::stream::iter((0..n).map(move |_| Ok(c2.clone()))).boxed();
    let f = b
        .put_stream(&d, "big/blob.bin", input, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(f.size_bytes, (chunk.len() * n) as u64);
    assert_eq!(f.checksum, expected);
    let mut s2 = b
        .stream_file(&d, "big/blob.bin", 1 << 20)
        .await
        .unwrap()
        .unwrap();
    let mut h = md5::Md5::default();
    let mut total = 0usize;
    while let Some(c) = s2.next().await {
        let c = c.unwrap();
        assert!(c.len() <= 1 << 20);
        total += c.len();
        md5::Digest::update(&mut h, &c);
    }
    assert_eq!(total, chunk.len() * n);
    assert_eq!(hex::encode(md5::Digest::finalize(h)), expected);
}

/// set_ingestion_status always writes error and generation (clearing stale ones).
pub async fn set_ingestion_status_writes_error_and_generation(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "status").await;
    let info = b
        .set_ingestion_status(
            &d,
            StatusUpdate::new(IngestionStatus::Swapping).generation("g1"),
        )
        .await
        .unwrap();
    assert_eq!(info.ingestion_status, IngestionStatus::Swapping);
    assert_eq!(info.generation.as_deref(), Some("g1"));
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Error).error("boom"))
        .await
        .unwrap();
    let read = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(read.ingestion_status, IngestionStatus::Error);
    assert_eq!(read.ingestion_error.as_deref(), Some("boom"));
    assert_eq!(read.generation, None);
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let read = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(read.ingestion_status, IngestionStatus::Ready);
    assert_eq!(read.ingestion_error, None);
    let err = b
        .set_ingestion_status(&unique("nokb"), StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }));
}

/// Conditional status writes: a token after create, last-writer-wins without one, a stale
/// token conflicts (naming domain and versions) and writes nothing; the token changes on
/// every write (status and content).
pub async fn conditional_status_writes(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "cas").await;
    let t0 = b
        .get_state_version(&d)
        .await
        .unwrap()
        .expect("token after create");
    b.set_ingestion_status(
        &d,
        StatusUpdate::new(IngestionStatus::Ingesting).expect_version(&t0),
    )
    .await
    .unwrap();
    let t1 = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(t0, t1);
    let err = b
        .set_ingestion_status(
            &d,
            StatusUpdate::new(IngestionStatus::Ready).expect_version(&t0),
        )
        .await
        .unwrap_err();
    expect_conflict(&err, &d, &t0, &t1);
    assert!(err.to_string().contains(&d));
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(
        info.ingestion_status,
        IngestionStatus::Ingesting,
        "nothing written"
    );
    assert_eq!(b.get_state_version(&d).await.unwrap().unwrap(), t1);
    // Without a token: last writer wins.
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Pending))
        .await
        .unwrap();
    let t2 = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(t2, t1);
    // Same status again still changes the token.
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Pending))
        .await
        .unwrap();
    let t3 = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(t3, t2);
    put(b, &d, "a.md", "a").await;
    let t4 = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(t4, t3, "content writes change the token");
    b.delete_file(&d, "a.md").await.unwrap();
    let t5 = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(t5, t4);
    b.set_ingestion_status(
        &d,
        StatusUpdate::new(IngestionStatus::Ready).expect_version(&t5),
    )
    .await
    .unwrap();
    let err = b
        .set_ingestion_status(
            &unique("nokb"),
            StatusUpdate::new(IngestionStatus::Ready).expect_version(&t5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }));
}

/// Of many concurrent conditional writers holding the same token, exactly one wins.
pub async fn conditional_writes_race_one_winner(s: Store) {
    let b = s.backend.clone();
    let d = new_kb(&*b, "casrace").await;
    let token = b.get_state_version(&d).await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (b, d, token) = (b.clone(), d.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            b.set_ingestion_status(
                &d,
                StatusUpdate::new(IngestionStatus::Ingesting)
                    .generation(format!("g{i}"))
                    .expect_version(token),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(KnowledgeError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
}

/// A state version handed out by one instance is good on another that has read the
/// knowledge base before the write that version follows (its cached view is behind), and a
/// stale one is refused there.
pub async fn conditional_writes_across_instances(s: Store) {
    let (a, b) = (s.backend.clone(), s.sibling.clone());
    let d = new_kb(&*a, "casinst").await;
    put(&*a, &d, "a.md", "a").await;
    let stale = b.get_state_version(&d).await.unwrap().unwrap();
    put(&*a, &d, "b.md", "b").await;
    let current = a.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(current, stale);
    b.set_ingestion_status(
        &d,
        StatusUpdate::new(IngestionStatus::Ingesting).expect_version(current),
    )
    .await
    .unwrap();
    let err = b
        .set_ingestion_status(
            &d,
            StatusUpdate::new(IngestionStatus::Ready).expect_version(stale),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::Conflict { .. }), "{err}");
    assert_eq!(
        a.get_info(&d).await.unwrap().unwrap().ingestion_status,
        IngestionStatus::Ingesting
    );
}

/// Checksums: empty KB is "", the identity is the original's formula over list_files.
pub async fn checksum_is_the_original_identity(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "cksum").await;
    assert_eq!(b.get_checksum(&d).await.unwrap(), "");
    put(b, &d, "b.md", "bee").await;
    put(b, &d, "a.md", "ay").await;
    put(b, &d, "a.md:x", "colon").await;
    let files = b.list_files(&d, None).await.unwrap();
    let expected = kb_identity(files.iter().map(|f| (f.path.as_str(), f.checksum.as_str())));
    assert_eq!(b.get_checksum(&d).await.unwrap(), expected);
    assert_eq!(expected.len(), 32);
    assert!(b.has_changes_since(&d, "").await.unwrap());
}

/// rc1: an unchanged KB reports no changes; a changed one does.
pub async fn unchanged_then_changed(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "rc1").await;
    put(b, &d, "a.md", "a").await;
    let v = b.get_checksum(&d).await.unwrap();
    assert!(!b.has_changes_since(&d, &v).await.unwrap());
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert!(cs.is_empty());
    assert_eq!(cs.version, v);
    put(b, &d, "a.md", "changed").await;
    assert!(b.has_changes_since(&d, &v).await.unwrap());
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.modified, vec!["a.md"]);
    assert_ne!(cs.version, v);
}

/// The empty baseline "" diffs as "everything added", and an emptied KB returns to "".
pub async fn empty_baseline_round_trips(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "empty").await;
    let v0 = b.get_checksum(&d).await.unwrap();
    assert_eq!(v0, "");
    assert!(!b.has_changes_since(&d, &v0).await.unwrap());
    put(b, &d, "x.md", "x").await;
    put(b, &d, "y.md", "y").await;
    let cs = b.list_changes_since(&d, "").await.unwrap();
    assert_eq!(cs.added, vec!["x.md", "y.md"]);
    assert!(cs.modified.is_empty() && cs.deleted.is_empty());
    let v1 = cs.version.clone();
    b.delete_file(&d, "x.md").await.unwrap();
    b.delete_file(&d, "y.md").await.unwrap();
    let cs = b.list_changes_since(&d, &v1).await.unwrap();
    assert_eq!(cs.deleted, vec!["x.md", "y.md"]);
    assert_eq!(cs.version, "");
    assert!(!b.has_changes_since(&d, "").await.unwrap());
}

/// A diff is minimal, disjoint and sorted: added, modified, deleted.
pub async fn diff_disjoint_and_correct(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "diff").await;
    for p in ["keep.md", "mod.md", "del2.md", "del1.md"] {
        put(b, &d, p, p).await;
    }
    let v = b.get_checksum(&d).await.unwrap();
    put(b, &d, "mod.md", "modified").await;
    put(b, &d, "keep.md", "keep.md").await; // same bytes: not a change
    b.delete_file(&d, "del2.md").await.unwrap();
    b.delete_file(&d, "del1.md").await.unwrap();
    put(b, &d, "new/b.md", "b").await;
    put(b, &d, "new/a.md", "a").await;
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.added, vec!["new/a.md", "new/b.md"]);
    assert_eq!(cs.modified, vec!["mod.md"]);
    assert_eq!(cs.deleted, vec!["del1.md", "del2.md"]);
    let all: BTreeSet<_> = cs
        .added
        .iter()
        .chain(&cs.modified)
        .chain(&cs.deleted)
        .collect();
    assert_eq!(all.len(), 5, "disjoint");
    assert_eq!(cs.version, b.get_checksum(&d).await.unwrap());
    // The version just handed out is itself retained.
    assert!(
        b.list_changes_since(&d, &cs.version)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An unretained version is InvalidVersion from list_changes_since and "changed" from
/// has_changes_since; a malformed version is refused the same way.
pub async fn unretained_version(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "unret").await;
    put(b, &d, "a.md", "a").await;
    let never = "0123456789abcdef0123456789abcdef";
    let err = b.list_changes_since(&d, never).await.unwrap_err();
    assert!(
        matches!(err, KnowledgeError::InvalidVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&d) && err.to_string().contains(never));
    assert!(b.has_changes_since(&d, never).await.unwrap());
    for bad in ["../../etc/passwd", "a/b", ".."] {
        let err = b.list_changes_since(&d, bad).await.unwrap_err();
        assert!(
            matches!(err, KnowledgeError::InvalidVersion { .. }),
            "{bad}"
        );
    }
}

/// No spurious re-ingest: repeated checks of an unchanged KB are quiet, a real change shows.
pub async fn no_spurious_reingest_then_detects(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "spur").await;
    put(b, &d, "a.md", "a").await;
    put(b, &d, "b.md", "b").await;
    let v = b.get_checksum(&d).await.unwrap();
    for _ in 0..3 {
        assert!(!b.has_changes_since(&d, &v).await.unwrap());
    }
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    assert!(
        !b.has_changes_since(&d, &v).await.unwrap(),
        "status is not content"
    );
    put(b, &d, "c.md", "c").await;
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.added, vec!["c.md"]);
}

/// Every hostile path is refused, as a refusal, by every entry point.
pub async fn hostile_paths_refused(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "hostile").await;
    for p in HOSTILE_PATHS {
        let refused = |r: Result<(), KnowledgeError>, op: &str| match r {
            Err(e) if e.is_refusal() => {
                assert!(e.to_string().contains(&d), "{op} {p:?}: {e}");
            }
            other => panic!("{op} {p:?} was not refused: {other:?}"),
        };
        refused(
            b.put_file(&d, p, Bytes::from_static(b"x"), PutOptions::default())
                .await
                .map(drop),
            "put_file",
        );
        refused(
            b.put_files(
                &d,
                vec![FileUpload::new("ok.md", "ok"), FileUpload::new(*p, "x")],
            )
            .await
            .map(drop),
            "put_files",
        );
        refused(
            b.put_stream(
                &d,
                p,
                crate::bytes_stream(Bytes::from_static(b"x"), 8),
                PutOptions::default(),
            )
            .await
            .map(drop),
            "put_stream",
        );
        refused(b.get_file(&d, p).await.map(drop), "get_file");
        refused(b.stream_file(&d, p, 10).await.map(drop), "stream_file");
        refused(b.delete_file(&d, p).await.map(drop), "delete_file");
        refused(b.file_exists(&d, p).await.map(drop), "file_exists");
        refused(b.get_file_info(&d, p).await.map(drop), "get_file_info");
    }
    assert!(
        b.list_files(&d, None).await.unwrap().is_empty(),
        "a refused batch writes nothing"
    );
}

/// Every hostile domain id is refused by every entry point.
pub async fn hostile_domain_ids_refused(s: Store) {
    let b = &*s.backend;
    for d in HOSTILE_DOMAIN_IDS {
        let refused = |r: Result<(), KnowledgeError>, op: &str| match r {
            Err(e @ KnowledgeError::InvalidDomainId { .. }) => {
                assert!(e.to_string().contains("domain_id"), "{op}");
            }
            other => panic!("{op} {d:?} was not refused: {other:?}"),
        };
        refused(b.create_kb(d, Metadata::new()).await.map(drop), "create_kb");
        refused(b.get_info(d).await.map(drop), "get_info");
        refused(b.delete_kb(d).await.map(drop), "delete_kb");
        refused(
            b.put_file(d, "a.md", Bytes::from_static(b"x"), PutOptions::default())
                .await
                .map(drop),
            "put_file",
        );
        refused(b.get_file(d, "a.md").await.map(drop), "get_file");
        refused(b.stream_file(d, "a.md", 10).await.map(drop), "stream_file");
        refused(b.delete_file(d, "a.md").await.map(drop), "delete_file");
        refused(b.list_files(d, None).await.map(drop), "list_files");
        refused(
            b.set_ingestion_status(d, StatusUpdate::new(IngestionStatus::Ready))
                .await
                .map(drop),
            "set_ingestion_status",
        );
        refused(b.get_state_version(d).await.map(drop), "get_state_version");
        refused(b.get_checksum(d).await.map(drop), "get_checksum");
        refused(
            b.list_changes_since(d, "").await.map(drop),
            "list_changes_since",
        );
    }
    // A KB named like a reserved folder is fine and does not leak into others.
    let named_content = format!("content-{}", unique("x"));
    b.create_kb(&named_content, Metadata::new()).await.unwrap();
    assert!(
        b.list_kbs()
            .await
            .unwrap()
            .iter()
            .all(|i| !i.domain_id.starts_with('_'))
    );
}

/// A name cannot be both a file and a folder.
pub async fn file_folder_conflict_refused(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "conflict").await;
    put(b, &d, "docs/a.md", "a").await;
    let err = b
        .put_file(&d, "docs", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::PathConflict { .. }), "{err}");
    put(b, &d, "file.md", "f").await;
    let err = b
        .put_file(
            &d,
            "file.md/inner.md",
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::PathConflict { .. }), "{err}");
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 2);
}

/// 200 concurrent put_file calls leave 200 index entries (the original kept 2 of 100).
pub async fn concurrent_puts_lose_nothing(s: Store) {
    let b = s.backend.clone();
    let d = new_kb(&*b, "conc").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (b, d) = (b.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            b.put_file(
                &d,
                &format!("f/{i:03}.md"),
                Bytes::from(format!("file {i}")),
                PutOptions::default(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let files = b.list_files(&d, None).await.unwrap();
    assert_eq!(files.len(), 200);
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(info.file_count, 200);
    assert_eq!(info.version, "201");
    for f in &files {
        let body = b.get_file(&d, &f.path).await.unwrap().unwrap();
        assert_eq!(md5_hex(&body), f.checksum);
    }
}

/// Among concurrent puts, one refused for a path conflict fails alone; the others land.
pub async fn concurrent_conflict_fails_alone(s: Store) {
    let b = s.backend.clone();
    let d = new_kb(&*b, "concconf").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (b, d) = (b.clone(), d.clone());
        let path = match i {
            7 => "x".to_owned(),
            8 => "x/inner.md".to_owned(),
            _ => format!("ok/{i:02}.md"),
        };
        tasks.push(tokio::spawn(async move {
            b.put_file(&d, &path, Bytes::from(path.clone()), PutOptions::default())
                .await
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(KnowledgeError::PathConflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(conflicts, 1, "exactly one of x and x/inner.md is refused");
    let files = b.list_files(&d, None).await.unwrap();
    assert_eq!(files.len(), 39);
    for f in &files {
        let body = b.get_file(&d, &f.path).await.unwrap().unwrap();
        assert_eq!(body.as_ref(), f.path.as_bytes());
    }
}

/// Two backend instances on the same storage, writing concurrently, lose nothing.
pub async fn two_instances_lose_nothing(s: Store) {
    let (a, b) = (s.backend.clone(), s.sibling.clone());
    let d = new_kb(&*a, "twoinst").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (inst, d) = (if i % 2 == 0 { a.clone() } else { b.clone() }, d.clone());
        tasks.push(tokio::spawn(async move {
            inst.put_file(
                &d,
                &format!("p{i:02}.md"),
                Bytes::from(format!("{i}")),
                PutOptions::default(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for inst in [&a, &b] {
        assert_eq!(inst.list_files(&d, None).await.unwrap().len(), 60);
        assert_eq!(inst.get_info(&d).await.unwrap().unwrap().file_count, 60);
    }
    assert_eq!(
        a.get_checksum(&d).await.unwrap(),
        b.get_checksum(&d).await.unwrap()
    );
    let v = a.get_checksum(&d).await.unwrap();
    b.delete_file(&d, "p00.md").await.unwrap();
    let cs = a.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.deleted, vec!["p00.md"]);
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    assert_eq!(
        a.get_info(&d).await.unwrap().unwrap().ingestion_status,
        IngestionStatus::Ready
    );
}

/// A second instance notices a delete and a re-create of the same domain by the first.
pub async fn sibling_sees_delete_and_recreate(s: Store) {
    let (a, b) = (s.backend.clone(), s.sibling.clone());
    let d = new_kb(&*a, "recreate").await;
    put(&*a, &d, "old.md", "old").await;
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 1);
    assert!(a.delete_kb(&d).await.unwrap());
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.list_files(&d, None).await.unwrap().is_empty());
    let err = b
        .put_file(&d, "x.md", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    a.create_kb(&d, Metadata::new()).await.unwrap();
    put(&*b, &d, "new.md", "new").await;
    let paths: Vec<_> = a
        .list_files(&d, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(paths, vec!["new.md"]);
    assert!(a.get_file(&d, "old.md").await.unwrap().is_none());
    assert_eq!(b.get_info(&d).await.unwrap().unwrap().file_count, 1);
}

/// put_files stores a batch in one go, in input order; the last of duplicate paths wins.
pub async fn batch_upload(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "batch").await;
    let mut uploads: Vec<FileUpload> = (0..50)
        .map(|i| FileUpload::new(format!("batch/{i:02}.txt"), format!("body {i}")))
        .collect();
    uploads.push(FileUpload::new("batch/00.txt", "replaced"));
    let out = b.put_files(&d, uploads).await.unwrap();
    assert_eq!(out.len(), 51);
    assert_eq!(out[3].path, "batch/03.txt");
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 50);
    assert_eq!(
        b.get_file(&d, "batch/00.txt")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        b"replaced"
    );
    assert_eq!(b.get_info(&d).await.unwrap().unwrap().file_count, 50);
    assert!(b.put_files(&d, Vec::new()).await.unwrap().is_empty());
    // A conflicting batch writes nothing.
    let err = b
        .put_files(
            &d,
            vec![
                FileUpload::new("ok.md", "x"),
                FileUpload::new("batch/00.txt/x", "y"),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::PathConflict { .. }), "{err}");
    assert!(!b.file_exists(&d, "ok.md").await.unwrap());
}

/// .gz files are stored exactly as uploaded, typed application/gzip.
pub async fn gz_stored_as_uploaded(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "gz").await;
    // A real gzip member header followed by arbitrary bytes: must not be decompressed.
    let raw: Vec<u8> = [
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 1, 2, 3, 4, 5,
    ]
    .to_vec();
    let f = b
        .put_file(
            &d,
            "archive/old.md.gz",
            Bytes::from(raw.clone()),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(f.content_type, "application/gzip");
    assert_eq!(f.size_bytes, raw.len() as u64);
    assert_eq!(
        b.get_file(&d, "archive/old.md.gz")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        &raw[..]
    );
    let streamed = collect(
        b.stream_file(&d, "archive/old.md.gz", 4)
            .await
            .unwrap()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(streamed.as_ref(), &raw[..]);
}

/// Index, status and snapshot writes are reported to state-write observers.
pub async fn state_write_events(s: Store) {
    let b = &*s.backend;
    let seen = recorder(&s);
    let d = new_kb(b, "events").await;
    put(b, &d, "a.md", "a").await;
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let v = b.get_checksum(&d).await.unwrap();
    let got = writes_of(&seen, &d);
    let metadata: Vec<_> = got
        .iter()
        .filter(|w| w.kind == KnowledgeKeyKind::Metadata)
        .collect();
    assert!(metadata.len() >= 3, "create, put, status: {got:?}");
    assert!(
        metadata
            .iter()
            .all(|w| w.key.ends_with("_metadata.json") && w.byte_size > 0)
    );
    assert!(
        metadata
            .iter()
            .all(|w| w.topic() == crate::INGEST_METADATA_WRITE)
    );
    let snaps: Vec<_> = got
        .iter()
        .filter(|w| w.kind == KnowledgeKeyKind::Snapshot)
        .collect();
    assert_eq!(snaps.len(), 1, "{got:?}");
    assert!(snaps[0].key.ends_with(&format!("_snapshots/{v}.json")));
    assert_eq!(snaps[0].topic(), crate::INGEST_SNAPSHOT_WRITE);
    let payload = snaps[0].payload();
    assert_eq!(payload["domain_id"], d.as_str());
    assert_eq!(payload["kind"], "snapshot");
    // Asking again for the same identity writes nothing new.
    b.get_checksum(&d).await.unwrap();
    let again = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.domain_id == d && w.kind == KnowledgeKeyKind::Snapshot)
        .count();
    assert_eq!(again, 1);
}

/// Errors name what they are about.
pub async fn errors_name_domain_and_path(s: Store) {
    let b = &*s.backend;
    let d = new_kb(b, "errs").await;
    let err = b.get_file(&d, "../secret").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&d) && msg.contains("../secret"), "{msg}");
    let missing = unique("gone");
    let msg = b
        .put_file(&missing, "x/y.md", Bytes::new(), PutOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&missing), "{msg}");
}

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// `$make` is an async function returning `Option<Store>` (`None` skips, e.g. when a server's
/// environment variable is unset).
#[macro_export]
macro_rules! knowledge_conformance_tests {
    ($make:path) => {
        $crate::knowledge_conformance_tests!(@cases $make;
            create_kb_defaults, create_kb_duplicate_fails, missing_kb_reads_are_empty,
            list_kbs_sorted, delete_kb_removes_everything, put_and_get_file,
            put_file_without_kb_fails, list_files_prefix_sorted, file_exists_follows_writes,
            delete_file_updates_counts, get_file_exact_bytes_any_size, overwrite_replaces_entry, stream_file_chunks,
            put_stream_round_trips, set_ingestion_status_writes_error_and_generation,
            conditional_status_writes, conditional_writes_race_one_winner,
            conditional_writes_across_instances,
            checksum_is_the_original_identity, unchanged_then_changed,
            empty_baseline_round_trips, diff_disjoint_and_correct, unretained_version,
            no_spurious_reingest_then_detects, hostile_paths_refused, hostile_domain_ids_refused,
            file_folder_conflict_refused, concurrent_puts_lose_nothing, concurrent_conflict_fails_alone,
            two_instances_lose_nothing, sibling_sees_delete_and_recreate, batch_upload, gz_stored_as_uploaded, state_write_events,
            errors_name_domain_and_path,
            tenant_none_equals_single_tenant, tenant_status_isolated,
            tenant_state_requires_existing_kb, tenant_content_is_shared,
            tenant_view_default_and_real_counts, tenant_diff_falls_back_to_shared_lineage,
            tenant_snapshot_lineage_isolated, tenant_state_keys_byte_identity,
            tenant_conditional_writes, tenant_conditional_writes_race_one_winner,
            delete_kb_removes_tenant_state, tenant_namespace_disjoint,
            invalid_tenant_contexts_refused, classify_key_cases, key_patterns_match_written_keys,
            key_pattern_refusals);
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $make().await {
                    $crate::conformance::$case(store).await;
                }
            }
        )*
    };
}
