//! The ingestion manager, ported from the original's manager tests and extended with each of
//! its verified bugs: the change-set fallback that dropped the mode and metadata, the
//! clear-first partial corpus without rollback, the masked error on a missing knowledge base,
//! "unchanged" indistinguishable from "missing" — and the atomic swap, shown against
//! clear-first with a query running during the ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use dynreg_event_bus::{
    Delivery, Event, EventBus, EventBusError, EventType, InMemoryEventBus, Subscription,
};
use dynreg_ingestion::manager::KNOWLEDGE_INGESTION_TOPIC;
use dynreg_ingestion::{
    EmbedError, Embedder, Filter, HashEmbedder, IfChanged, KnowledgeIngestionManager, ManagerError,
    MemoryVectorStore, PipelineOptions, RagKnowledgeBase, SwapMode, VectorRecord, VectorStore,
};
use dynreg_knowledge_store::{
    IngestionStatus, KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata,
    PutOptions, StatusUpdate, TenantContext,
};

/// An embedder that can be slowed down and can refuse texts containing POISON.
#[derive(Debug)]
struct TestEmbedder {
    inner: HashEmbedder,
    delay_ms: AtomicUsize,
    calls: AtomicUsize,
}

impl TestEmbedder {
    fn new() -> Arc<Self> {
        Arc::new(TestEmbedder {
            inner: HashEmbedder::new(64),
            delay_ms: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Embedder for TestEmbedder {
    fn provider(&self) -> &'static str {
        "test"
    }
    fn dimensions(&self) -> usize {
        64
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(texts.len(), Ordering::SeqCst);
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d as u64)).await;
        }
        if texts.iter().any(|t| t.contains("POISON")) {
            return Err(EmbedError::Service("refused".into()));
        }
        self.inner.embed(texts).await
    }
}

struct Setup {
    source: Arc<dyn KnowledgeBackend>,
    store: Arc<MemoryVectorStore>,
    embedder: Arc<TestEmbedder>,
    kb: RagKnowledgeBase,
}

async fn setup(files: &[(&str, String)]) -> Setup {
    let source: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    source.create_kb("docs", Metadata::new()).await.unwrap();
    for (p, c) in files {
        put(&source, p, c).await;
    }
    let store = Arc::new(MemoryVectorStore::new(64).unwrap());
    let embedder = TestEmbedder::new();
    let kb = RagKnowledgeBase::new(embedder.clone(), store.clone()).unwrap();
    Setup {
        source,
        store,
        embedder,
        kb,
    }
}

async fn put(source: &Arc<dyn KnowledgeBackend>, path: &str, content: &str) {
    source
        .put_file(
            "docs",
            path,
            content.to_owned().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
}

fn corpus(version: &str, n: usize) -> Vec<(&'static str, String)> {
    const NAMES: [&str; 6] = ["a.md", "b.md", "c.md", "d.md", "e.md", "f.md"];
    NAMES[..n]
        .iter()
        .map(|p| (*p, format!("# {p}\n\nThis is {version} of {p}.\n")))
        .collect()
}

async fn visible(kb: &RagKnowledgeBase) -> u64 {
    kb.count(&Filter::all(), false).await.unwrap()
}

#[tokio::test]
async fn a_full_ingest_reaches_ready_with_the_original_result_and_events() {
    let s = setup(&corpus("version one", 3)).await;
    let bus = Arc::new(InMemoryEventBus::new());
    let mut starts = bus.subscribe("ingest:domain:start").await.unwrap();
    let mut ends = bus.subscribe("ingest:domain:end").await.unwrap();
    let mut done = bus.subscribe(KNOWLEDGE_INGESTION_TOPIC).await.unwrap();
    let m =
        KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone()).with_event_bus(bus.clone());
    let r = m.ingest("docs", SwapMode::default()).await.unwrap();
    assert_eq!(
        (r.files_processed, r.chunks_created, r.files_deleted),
        (3, 3, 0)
    );
    let dict = r.to_dict();
    let keys: Vec<&str> = dict
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "domain_id",
            "files_processed",
            "chunks_created",
            "files_skipped",
            "files_deleted",
            "errors",
            "started_at",
            "completed_at",
            "success",
            "duration_seconds"
        ],
        "the original's keys, in its order"
    );
    assert_eq!(dict["success"], json!(true));
    let info = s.source.get_info("docs").await.unwrap().unwrap();
    assert_eq!(info.ingestion_status, IngestionStatus::Ready);
    let start = next(&mut starts).await;
    assert_eq!(start.event_type, EventType::Custom);
    assert_eq!(
        start.payload.keys().collect::<Vec<_>>(),
        vec!["domain_id", "started_at"]
    );
    let end = next(&mut ends).await;
    assert_eq!(end.event_type, EventType::Custom);
    assert_eq!(end.payload["status"], json!("completed"));
    assert_eq!(end.payload["chunks_created"], json!(3));
    assert!(end.timestamp >= start.timestamp);
    let updated = next(&mut done).await;
    assert_eq!(updated.event_type, EventType::Updated);
    assert_eq!(updated.payload["domain_id"], json!("docs"));
    assert_eq!(visible(&s.kb).await, 3);
}

async fn next(sub: &mut Subscription) -> Event {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("an event")
            .expect("open");
        if let Delivery::Event { event, .. } = d {
            return (*event).clone();
        }
    }
}

#[tokio::test]
async fn unchanged_files_are_never_embedded_again_and_deleted_files_leave() {
    let s = setup(&corpus("version one", 4)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    for mode in [SwapMode::Tombstone, SwapMode::Append] {
        m.ingest("docs", mode).await.unwrap();
        let before = s.embedder.calls.load(Ordering::SeqCst);
        let r = m.ingest("docs", mode).await.unwrap();
        assert_eq!(
            (r.files_processed, r.files_unchanged, r.chunks_created),
            (0, 4, 0),
            "{mode:?}"
        );
        assert_eq!(
            s.embedder.calls.load(Ordering::SeqCst),
            before,
            "{mode:?}: nothing embedded"
        );
    }
    put(&s.source, "b.md", "# b\n\nBrand new text of b.\n").await;
    put(&s.source, "z.md", "# z\n\nA new file.\n").await;
    s.source.delete_file("docs", "d.md").await.unwrap();
    let r = m.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert_eq!(
        (r.files_processed, r.files_unchanged, r.files_deleted),
        (2, 2, 1)
    );
    assert_eq!(visible(&s.kb).await, 4);
    assert_eq!(s.store.len(), 4, "no stale or pending rows remain");
    let hits = s.kb.query("brand new text", 1, None, 0.0).await.unwrap();
    assert_eq!(hits[0].metadata["source_path"], json!("b.md"));
    assert_eq!(
        s.kb.count(&Filter::all().with("source_path", "d.md"), true)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn progress_is_reported_once_planned_and_after_every_file() {
    let mut files = corpus("version one", 3);
    files.push(("bad.md", "# bad\n\nPOISON here.\n".to_owned()));
    let s = setup(&files).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone())
        .with_progress(move |p| log.lock().unwrap().push(p.clone()));
    let r = m.ingest("docs", SwapMode::Append).await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let total_bytes: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    // The plan first, then one report per file, in path order, the failed one counted.
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        (seen[0].files_total, seen[0].files_done, seen[0].bytes_total),
        (4, 0, total_bytes)
    );
    let paths: Vec<&str> = seen[1..].iter().map(|p| p.last_path.as_str()).collect();
    assert_eq!(paths, ["a.md", "b.md", "bad.md", "c.md"]);
    let last = seen.last().unwrap();
    assert_eq!(
        (
            last.files_done,
            last.files_failed,
            last.bytes_done,
            last.chunks_stored
        ),
        (4, 1, total_bytes, r.chunks_created)
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].files_done + 1 == w[1].files_done)
    );
    // An incremental run reports only the files it embeds.
    put(&s.source, "b.md", "# b\n\nNew text.\n").await;
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone())
        .with_progress(move |p| l.lock().unwrap().push(p.clone()));
    m.ingest("docs", SwapMode::Append).await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(
        log.last().map(|p| (p.files_total, p.files_done)),
        Some((2, 2)),
        "{log:?}"
    );
}

#[tokio::test]
async fn if_changed_tells_missing_from_unchanged_and_changes_keep_mode_and_metadata() {
    let s = setup(&corpus("version one", 2)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    assert_eq!(
        m.ingest_if_changed("nope", Some("v"), SwapMode::default())
            .await
            .unwrap(),
        IfChanged::Missing
    );
    let IfChanged::Ingested(first) = m
        .ingest_if_changed("docs", None, SwapMode::default())
        .await
        .unwrap()
    else {
        panic!("no ingest")
    };
    assert_eq!(first.files_processed, 2);
    let v = m.get_current_version("docs").await.unwrap().unwrap();
    assert_eq!(
        m.ingest_if_changed("docs", Some(&v), SwapMode::default())
            .await
            .unwrap(),
        IfChanged::Unchanged
    );
    put(&s.source, "a.md", "# a\n\nchanged a\n").await;
    let IfChanged::Ingested(r) = m
        .ingest_if_changed("docs", Some(&v), SwapMode::default())
        .await
        .unwrap()
    else {
        panic!("no ingest after a change")
    };
    assert_eq!((r.files_processed, r.files_unchanged), (1, 1));
    assert!(m.get_current_version("nope").await.unwrap().is_none());

    // A version that is not retained: a full ingest with the caller's mode and metadata.
    let mut extra = Map::new();
    extra.insert("batch".into(), json!("nightly"));
    put(&s.source, "b.md", "# b\n\nchanged b\n").await;
    let r = m
        .ingest_changes("docs", "not-a-version", SwapMode::Tombstone, extra.clone())
        .await
        .unwrap();
    assert_eq!(r.swap_mode, SwapMode::Tombstone);
    assert_eq!(r.files_processed, 1);
    assert_eq!(
        s.kb.count(&Filter::all().with("batch", "nightly"), false)
            .await
            .unwrap(),
        1
    );
    // A retained version: only the change set.
    let v = m.get_current_version("docs").await.unwrap().unwrap();
    put(&s.source, "c.md", "# c\n\nnew c\n").await;
    let r = m
        .ingest_changes("docs", &v, SwapMode::Append, extra)
        .await
        .unwrap();
    assert_eq!((r.files_processed, r.swap_mode), (1, SwapMode::Append));
    assert_eq!(visible(&s.kb).await, 3);
}

#[tokio::test]
async fn a_failed_tombstone_ingest_rolls_back_to_the_old_corpus() {
    let s = setup(&corpus("version one", 3)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    m.ingest("docs", SwapMode::Tombstone).await.unwrap();
    for (p, c) in corpus("version two", 3) {
        put(&s.source, p, &c).await;
    }
    for i in 0..5 {
        put(
            &s.source,
            &format!("bad{i}.md"),
            &format!("# bad\n\nPOISON {i}\n"),
        )
        .await;
    }
    let r = m.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert!(!r.success());
    assert_eq!((r.files_processed, r.chunks_created), (0, 0));
    assert_eq!(visible(&s.kb).await, 3);
    assert_eq!(s.store.len(), 3, "the new generation was removed");
    let hits = s.kb.query("version", 3, None, 0.0).await.unwrap();
    assert!(
        hits.iter().all(|h| h.text.contains("version one")),
        "{hits:?}"
    );
    let info = s.source.get_info("docs").await.unwrap().unwrap();
    assert_eq!(info.ingestion_status, IngestionStatus::Error);
    let summary = info.ingestion_error.unwrap_or_default();
    assert!(
        summary.starts_with("5 file error(s)")
            && summary.contains("and 2 more")
            && summary.len() < 1000,
        "{summary}"
    );
}

#[tokio::test]
async fn a_missing_knowledge_base_is_reported_as_missing_and_bindings_are_checked() {
    let s = setup(&corpus("v", 1)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    let e = m.ingest("ghost", SwapMode::default()).await.unwrap_err();
    assert!(
        matches!(e, ManagerError::Missing { .. }) && e.to_string().contains("ghost"),
        "{e}"
    );
    let bound = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone().with_domain("other"));
    for e in [
        bound.ingest("docs", SwapMode::default()).await.unwrap_err(),
        bound
            .ingest_changes("docs", "v", SwapMode::Append, Map::new())
            .await
            .unwrap_err(),
        bound.reconcile("docs").await.unwrap_err(),
    ] {
        assert!(matches!(e, ManagerError::Binding { .. }), "{e}");
    }
}

#[tokio::test]
async fn reconcile_undoes_an_interrupted_swap() {
    let s = setup(&corpus("version one", 2)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    m.ingest("docs", SwapMode::Tombstone).await.unwrap();
    // A crash mid-swap: old rows retired, new rows pending, status swapping.
    let mut stale = Map::new();
    stale.insert("_stale".into(), json!(true));
    s.store
        .update_metadata_where(&Filter::all().with("source_path", "a.md"), &stale)
        .await
        .unwrap();
    let pending =
        json!({"domain_id": "docs", "_generation": "g9", "_pending": true, "source_path": "a.md"});
    s.store
        .upsert(vec![VectorRecord {
            id: "half".into(),
            vector: vec![0.5; 64],
            metadata: pending.as_object().unwrap().clone(),
        }])
        .await
        .unwrap();
    s.source
        .set_ingestion_status(
            "docs",
            StatusUpdate::new(IngestionStatus::Swapping).generation("g9"),
        )
        .await
        .unwrap();
    assert_eq!(visible(&s.kb).await, 1);
    assert!(m.reconcile("docs").await.unwrap());
    assert_eq!(visible(&s.kb).await, 2);
    assert_eq!(s.store.len(), 2);
    assert_eq!(
        s.source
            .get_info("docs")
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Ready
    );
    assert!(!m.reconcile("docs").await.unwrap());
}

#[tokio::test]
async fn reingesting_one_domain_preserves_the_others() {
    let s = setup(&corpus("one", 2)).await;
    s.source.create_kb("other", Metadata::new()).await.unwrap();
    s.source
        .put_file(
            "other",
            "x.md",
            "# x\n\nother domain\n".to_owned().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone());
    m.ingest("docs", SwapMode::default()).await.unwrap();
    m.ingest("other", SwapMode::default()).await.unwrap();
    s.source.delete_file("docs", "a.md").await.unwrap();
    m.ingest("docs", SwapMode::ClearFirst).await.unwrap();
    m.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert_eq!(
        s.kb.count(&Filter::all().with("domain_id", "other"), false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.kb.count(&Filter::all().with("domain_id", "docs"), false)
            .await
            .unwrap(),
        1
    );
}

/// A bus that refuses every publish.
#[derive(Debug)]
struct BrokenBus;

#[async_trait]
impl EventBus for BrokenBus {
    async fn publish(&self, topic: &str, _: &Event) -> Result<(), EventBusError> {
        Err(EventBusError::Closed {
            topic: topic.to_owned(),
        })
    }
    async fn subscribe(&self, topic: &str) -> Result<Subscription, EventBusError> {
        Err(EventBusError::Closed {
            topic: topic.to_owned(),
        })
    }
    async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription, EventBusError> {
        Err(EventBusError::Closed {
            topic: pattern.to_owned(),
        })
    }
    async fn close(&self) -> Result<(), EventBusError> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "broken"
    }
}

#[tokio::test]
async fn a_failing_bus_neither_aborts_nor_masks_the_ingest() {
    let s = setup(&corpus("one", 2)).await;
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone())
        .with_event_bus(Arc::new(BrokenBus));
    let r = m.ingest("docs", SwapMode::default()).await.unwrap();
    assert!(r.success());
    assert_eq!(visible(&s.kb).await, 2);
}

/// Queries run continuously during a re-ingest of every file (slowed down so that it takes a
/// while). With `Tombstone` every answer is complete and all old or all new; with
/// `ClearFirst` — the original's default — queries see an empty or partial corpus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_an_ingest_see_old_or_new_never_empty_or_mixed() {
    for mode in [SwapMode::Tombstone, SwapMode::ClearFirst] {
        let s = setup(&corpus("version one", 6)).await;
        let options = PipelineOptions {
            batch_size: Some(1),
            ..Default::default()
        };
        let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone())
            .with_pipeline_options(options);
        m.ingest("docs", SwapMode::Tombstone).await.unwrap();
        for (p, c) in corpus("version two", 6) {
            put(&s.source, p, &c).await;
        }
        s.embedder.delay_ms.store(15, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        // The reader embeds its queries without the ingest's delay (same vectors, same store).
        let reader_kb =
            RagKnowledgeBase::new(Arc::new(HashEmbedder::new(64)), s.store.clone()).unwrap();
        let reader = {
            let (kb, stop) = (reader_kb, stop.clone());
            tokio::spawn(async move {
                let (mut empty_or_partial, mut mixed, mut queries) = (0, 0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let hits = kb.query("version of md", 10, None, -1.0).await.unwrap();
                    queries += 1;
                    let ones = hits
                        .iter()
                        .filter(|h| h.text.contains("version one"))
                        .count();
                    if hits.len() < 6 {
                        empty_or_partial += 1;
                    } else if ones != 0 && ones != hits.len() {
                        mixed += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (empty_or_partial, mixed, queries)
            })
        };
        let r = m.ingest("docs", mode).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let (empty_or_partial, mixed, queries) = reader.await.unwrap();
        assert_eq!(r.files_processed, 6);
        assert!(queries > 10, "{queries} queries");
        match mode {
            SwapMode::Tombstone => assert_eq!(
                (empty_or_partial, mixed),
                (0, 0),
                "{mode:?}: {queries} queries"
            ),
            _ => assert!(
                empty_or_partial > 0,
                "{mode:?}: {queries} queries never saw the empty window"
            ),
        }
        let hits = s.kb.query("version of md", 10, None, -1.0).await.unwrap();
        assert!(hits.len() == 6 && hits.iter().all(|h| h.text.contains("version two")));
    }
}

#[test]
fn swap_modes_parse_and_the_deprecated_flag_maps() {
    assert_eq!(
        "tombstone".parse::<SwapMode>().unwrap(),
        SwapMode::Tombstone
    );
    assert!(
        "clear"
            .parse::<SwapMode>()
            .unwrap_err()
            .contains("clear_first")
    );
    assert_eq!(SwapMode::from_clear_existing(true), SwapMode::ClearFirst);
    assert_eq!(SwapMode::from_clear_existing(false), SwapMode::Append);
    assert_eq!(SwapMode::default().as_str(), "tombstone");
    let _ = Value::Null;
}

/// Counts the permits asked for.
#[derive(Debug, Default)]
struct Counting(AtomicUsize);

#[async_trait]
impl dynreg_ingestion::RateLimiter for Counting {
    async fn acquire(&self, resource: &str, permits: u32) {
        assert_eq!(resource, "embed");
        self.0.fetch_add(permits as usize, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_rate_limiter_is_asked_once_per_embedded_chunk() {
    let s = setup(&corpus("one", 4)).await;
    let limiter = Arc::new(Counting::default());
    let m = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone())
        .with_rate_limiter(limiter.clone());
    let r = m.ingest("docs", SwapMode::default()).await.unwrap();
    assert_eq!(limiter.0.load(Ordering::SeqCst) as u64, r.chunks_created);
    assert_eq!(
        s.embedder.calls.load(Ordering::SeqCst) as u64,
        r.chunks_created
    );
}

#[tokio::test]
async fn tenants_have_their_own_chunks_and_state() {
    let s = setup(&corpus("one", 3)).await;
    let acme = KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone()).with_tenant("acme");
    let globex =
        KnowledgeIngestionManager::new(s.source.clone(), s.kb.clone()).with_tenant("globex");
    acme.ingest("docs", SwapMode::default()).await.unwrap();
    globex.ingest("docs", SwapMode::default()).await.unwrap();
    // Each tenant's chunks carry its id; reads of a tenant-bound knowledge base see its own.
    assert_eq!(
        s.kb.count(&Filter::all().with("tenant_id", "acme"), false)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        s.kb.clone()
            .with_tenant("globex")
            .count(&Filter::all(), false)
            .await
            .unwrap(),
        3
    );
    // Re-ingesting one tenant after a deletion leaves the other's chunks alone.
    s.source.delete_file("docs", "a.md").await.unwrap();
    let r = acme.ingest("docs", SwapMode::Tombstone).await.unwrap();
    assert_eq!(r.files_deleted, 1);
    assert_eq!(
        s.kb.count(&Filter::all().with("tenant_id", "acme"), false)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.kb.count(&Filter::all().with("tenant_id", "globex"), false)
            .await
            .unwrap(),
        3
    );
    // Status is per tenant: the single-tenant view never ingested.
    let ctx = TenantContext::bound("acme");
    assert_eq!(
        s.source
            .get_info_in(&ctx, "docs")
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Ready
    );
    assert_eq!(
        s.source
            .get_info("docs")
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Pending
    );
    // files_skipped counts what the pipeline skips.
    s.source
        .put_file(
            "docs",
            "notes.pdf",
            b"%PDF".to_vec().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        acme.ingest("docs", SwapMode::default())
            .await
            .unwrap()
            .files_skipped,
        1
    );
}
