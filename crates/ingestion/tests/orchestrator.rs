//! The ingest orchestrator, ported from the original's orchestrator tests: dispatch by payload
//! (`since_version` beats `force_full`, which beats the default), skips (no domain, a tenant
//! that is not a string, state-write keys), same-domain triggers serialised and different
//! domains in parallel, retries then a failure event (the original swallows every error),
//! the publisher never waiting for the ingest, and the PostgreSQL advisory lock across
//! connections (with `DYNREG_TEST_POSTGRES_URL`; skipped otherwise).

#![allow(clippy::print_stdout)] // the skip notice the test policy asks for

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use dynreg_event_bus::{Delivery, Event, EventBus, EventType, InMemoryEventBus};
use dynreg_ingestion::orchestrator::FAILED_TOPIC;
use dynreg_ingestion::{
    EmbedError, Embedder, Filter, HashEmbedder, IfChanged, IngestOrchestrator,
    KnowledgeIngestionManager, MemoryVectorStore, OrchestratorOptions, RagKnowledgeBase, SearchHit,
    TriggerOutcome, VectorError, VectorRecord, VectorStore,
};
use dynreg_knowledge_store::{
    KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
};

/// Slow, and counts how many embed calls run at once.
#[derive(Debug, Default)]
struct Slow {
    running: AtomicUsize,
    max_running: AtomicUsize,
}

#[async_trait]
impl Embedder for Slow {
    fn provider(&self) -> &'static str {
        "slow"
    }
    fn dimensions(&self) -> usize {
        32
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        HashEmbedder::new(32).embed(texts).await
    }
}

/// A memory store whose `distinct` fails the first `fail` times (a flaky server).
#[derive(Debug)]
struct Flaky {
    inner: MemoryVectorStore,
    fail: AtomicUsize,
}

#[async_trait]
impl VectorStore for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn upsert(&self, r: Vec<VectorRecord>) -> Result<(), VectorError> {
        self.inner.upsert(r).await
    }
    async fn delete(&self, ids: &[String]) -> Result<u64, VectorError> {
        self.inner.delete(ids).await
    }
    async fn clear(&self, f: &Filter) -> Result<u64, VectorError> {
        self.inner.clear(f).await
    }
    async fn update_metadata_where(
        &self,
        f: &Filter,
        p: &Map<String, Value>,
    ) -> Result<u64, VectorError> {
        self.inner.update_metadata_where(f, p).await
    }
    async fn update_metadata_atomically(
        &self,
        u: &[(Filter, Map<String, Value>)],
    ) -> Result<Vec<u64>, VectorError> {
        self.inner.update_metadata_atomically(u).await
    }
    async fn distinct(
        &self,
        f: &Filter,
        keys: &[&str],
    ) -> Result<Vec<(Vec<Value>, u64)>, VectorError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(VectorError::Backend("connection reset".into()));
        }
        self.inner.distinct(f, keys).await
    }
    async fn count(&self, f: &Filter) -> Result<u64, VectorError> {
        self.inner.count(f).await
    }
    async fn search(&self, v: &[f32], k: usize, f: &Filter) -> Result<Vec<SearchHit>, VectorError> {
        self.inner.search(v, k, f).await
    }
}

struct Setup {
    source: Arc<dyn KnowledgeBackend>,
    bus: Arc<InMemoryEventBus>,
    orchestrator: Arc<IngestOrchestrator>,
    outcomes: Arc<Mutex<Vec<(String, TriggerOutcome)>>>,
    embedder: Arc<Slow>,
    kb: RagKnowledgeBase,
}

async fn setup(domains: &[&str], fail: usize, max_attempts: u32) -> Setup {
    let source: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    for d in domains {
        source.create_kb(d, Metadata::new()).await.unwrap();
        source
            .put_file(
                d,
                "a.md",
                format!("# A\n\nabout {d}\n").into(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let embedder = Arc::new(Slow::default());
    let store = Arc::new(Flaky {
        inner: MemoryVectorStore::new(32).unwrap(),
        fail: AtomicUsize::new(fail),
    });
    let kb = RagKnowledgeBase::new(embedder.clone(), store).unwrap();
    let manager = Arc::new(KnowledgeIngestionManager::new(source.clone(), kb.clone()));
    let bus = Arc::new(InMemoryEventBus::new());
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let options = OrchestratorOptions {
        max_attempts,
        backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let orchestrator = Arc::new(
        IngestOrchestrator::new(manager, bus.clone())
            .with_options(options)
            .with_observer(Arc::new(move |d, o| {
                seen.lock().unwrap().push((d.to_owned(), o.clone()))
            })),
    );
    orchestrator.start().await.unwrap();
    orchestrator.start().await.unwrap();
    assert!(orchestrator.is_running());
    Setup {
        source,
        bus,
        orchestrator,
        outcomes,
        embedder,
        kb,
    }
}

async fn trigger(s: &Setup, payload: Value) {
    let event = Event::new(
        EventType::Custom,
        "knowledge:trigger",
        payload.as_object().unwrap().clone(),
    );
    s.bus.publish("knowledge:trigger", &event).await.unwrap();
}

async fn wait_for(s: &Setup, n: usize) -> Vec<(String, TriggerOutcome)> {
    for _ in 0..500 {
        if s.outcomes.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.outcomes.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_follows_the_payload() {
    let s = setup(&["docs"], 0, 3).await;
    trigger(&s, json!({"domain_id": "docs"})).await;
    let o = wait_for(&s, 1).await;
    assert!(
        matches!(&o[0].1, TriggerOutcome::IfChanged(IfChanged::Ingested(r)) if r.files_processed == 1),
        "{o:?}"
    );
    trigger(
        &s,
        json!({"domain_id": "docs", "force_full": true, "since_version": "old"}),
    )
    .await;
    let o = wait_for(&s, 2).await;
    assert!(
        matches!(&o[1].1, TriggerOutcome::Changes(_)),
        "since_version beats force_full: {o:?}"
    );
    trigger(&s, json!({"domain_id": "docs", "force_full": true})).await;
    let o = wait_for(&s, 3).await;
    assert!(
        matches!(&o[2].1, TriggerOutcome::Full(r) if r.files_processed == 1),
        "{o:?}"
    );
    s.orchestrator.stop();
    s.orchestrator.stop();
    assert!(!s.orchestrator.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_a_trigger_does_not_wait_for_the_ingest() {
    let s = setup(&["docs"], 0, 3).await;
    trigger(&s, json!({"domain_id": "docs"})).await;
    assert!(
        s.outcomes.lock().unwrap().is_empty(),
        "publish returned after the ingest"
    );
    assert_eq!(wait_for(&s, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_and_state_keys_are_skipped() {
    let s = setup(&["docs"], 0, 3).await;
    let state_key = s
        .source
        .key_pattern(
            dynreg_knowledge_store::KnowledgeKeyKind::Metadata,
            Some("docs"),
            &Default::default(),
        )
        .unwrap();
    trigger(&s, json!({"tenant_id": "t"})).await;
    trigger(&s, json!({"domain_id": "docs", "tenant_id": 7})).await;
    trigger(
        &s,
        json!({"domain_id": "docs", "key": state_key.replace('*', "x")}),
    )
    .await;
    let o = wait_for(&s, 3).await;
    assert!(
        o.iter()
            .all(|(_, o)| matches!(o, TriggerOutcome::Skipped(_))),
        "{o:?}"
    );
    let content_key = s
        .source
        .key_pattern(
            dynreg_knowledge_store::KnowledgeKeyKind::Content,
            Some("docs"),
            &Default::default(),
        )
        .unwrap();
    trigger(
        &s,
        json!({"domain_id": "docs", "key": content_key.replace('*', "a.md")}),
    )
    .await;
    let o = wait_for(&s, 4).await;
    assert!(
        matches!(&o[3].1, TriggerOutcome::IfChanged(IfChanged::Ingested(_))),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ingest_per_domain_at_a_time_and_domains_in_parallel() {
    let s = setup(&["one", "two"], 0, 3).await;
    for _ in 0..3 {
        trigger(&s, json!({"domain_id": "one", "force_full": true})).await;
    }
    let o = wait_for(&s, 3).await;
    assert_eq!(o.len(), 3);
    assert_eq!(
        s.embedder.max_running.load(Ordering::SeqCst),
        1,
        "same-domain ingests overlapped"
    );
    trigger(&s, json!({"domain_id": "one", "force_full": true})).await;
    trigger(&s, json!({"domain_id": "two", "force_full": true})).await;
    wait_for(&s, 5).await;
    assert_eq!(
        s.embedder.max_running.load(Ordering::SeqCst),
        2,
        "different domains did not run in parallel"
    );
    assert_eq!(s.kb.count(&Filter::all(), false).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_then_published() {
    // Fails twice, succeeds on the third attempt.
    let s = setup(&["docs"], 2, 3).await;
    trigger(&s, json!({"domain_id": "docs"})).await;
    let o = wait_for(&s, 1).await;
    assert!(
        matches!(&o[0].1, TriggerOutcome::IfChanged(IfChanged::Ingested(_))),
        "{o:?}"
    );

    // Fails every time: a failure event after the last attempt.
    let s = setup(&["docs"], 100, 2).await;
    let mut failed = s.bus.subscribe(FAILED_TOPIC).await.unwrap();
    trigger(&s, json!({"domain_id": "docs", "extra": 1})).await;
    let o = wait_for(&s, 1).await;
    assert!(
        matches!(&o[0].1, TriggerOutcome::Failed(e) if e.contains("connection reset")),
        "{o:?}"
    );
    let d = tokio::time::timeout(Duration::from_secs(5), failed.next())
        .await
        .unwrap()
        .unwrap();
    let Delivery::Event { event, .. } = d else {
        panic!("{d:?}")
    };
    assert_eq!(event.payload["domain_id"], json!("docs"));
    assert_eq!(event.payload["attempts"], json!(2));
    assert_eq!(event.payload["trigger"]["extra"], json!(1));
    // The subscription survives a failure.
    assert!(s.orchestrator.is_running());
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisory_lock_excludes_across_connections() {
    use dynreg_ingestion::orchestrator::{IngestLock, PgAdvisoryLock};
    let Ok(url) = std::env::var("DYNREG_TEST_POSTGRES_URL") else {
        println!("skipped: PostgreSQL advisory lock test (DYNREG_TEST_POSTGRES_URL unset)");
        return;
    };
    // Two lock objects: as two processes would hold them.
    let (a, b) = (PgAdvisoryLock::new(url.clone()), PgAdvisoryLock::new(url));
    let key = format!("ingest:-:{:x}", rand::random::<u64>());
    let held = a.acquire(&key).await.unwrap();
    let waiting = tokio::spawn(async move { b.acquire(&key).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second holder got the lock while the first held it"
    );
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A platform with a manager per tenant: the resolver picks the trigger's tenant's manager
/// (resolved once per trigger), each ingest lands in that tenant's rows only, and a tenant
/// without a manager is skipped. A single manager bound to a tenant skips another tenant's
/// trigger instead of re-indexing its own files for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_gives_each_tenant_its_manager() {
    use dynreg_ingestion::ManagerResolver;
    let source: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    source.create_kb("docs", Metadata::new()).await.unwrap();
    source
        .put_file(
            "docs",
            "a.md",
            "# A\n\nshared text\n".into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let store: Arc<dyn VectorStore> = Arc::new(MemoryVectorStore::new(32).unwrap());
    let kb = RagKnowledgeBase::new(Arc::new(HashEmbedder::new(32)), store.clone()).unwrap();
    let managers: HashMap<String, Arc<KnowledgeIngestionManager>> = ["acme", "globex"]
        .into_iter()
        .map(|t| {
            let m = KnowledgeIngestionManager::new(source.clone(), kb.clone().with_tenant(t))
                .with_tenant(t);
            (t.to_owned(), Arc::new(m))
        })
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let resolver: ManagerResolver = Arc::new(move |tenant, _domain| {
        counted.fetch_add(1, Ordering::SeqCst);
        let m = tenant.and_then(|t| managers.get(&t).cloned());
        Box::pin(async move { m })
    });
    let bus = Arc::new(InMemoryEventBus::new());
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let orchestrator = Arc::new(
        IngestOrchestrator::with_resolver(resolver, bus.clone()).with_observer(Arc::new(
            move |d, o| seen.lock().unwrap().push((d.to_owned(), o.clone())),
        )),
    );
    let outcome = |payload: Value| {
        let orchestrator = orchestrator.clone();
        async move {
            let event = Event::new(
                EventType::Custom,
                "knowledge:trigger",
                payload.as_object().unwrap().clone(),
            );
            orchestrator.handle(&event).await
        }
    };
    let content_key = source
        .key_pattern(
            dynreg_knowledge_store::KnowledgeKeyKind::Content,
            Some("docs"),
            &Default::default(),
        )
        .unwrap()
        .replace('*', "a.md");
    let o = outcome(json!({"domain_id": "docs", "tenant_id": "acme", "key": content_key})).await;
    assert!(
        matches!(&o, TriggerOutcome::IfChanged(IfChanged::Ingested(r)) if r.files_processed == 1),
        "{o:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "resolved once per trigger");
    let tenant_rows = |t: &str| {
        let store = store.clone();
        let f = Filter::all().with("tenant_id", t.to_owned());
        async move { store.count(&f).await.unwrap() }
    };
    assert!(tenant_rows("acme").await > 0);
    assert_eq!(tenant_rows("globex").await, 0);
    let o = outcome(json!({"domain_id": "docs", "tenant_id": "globex"})).await;
    assert!(
        matches!(&o, TriggerOutcome::IfChanged(IfChanged::Ingested(_))),
        "{o:?}"
    );
    assert!(tenant_rows("globex").await > 0);
    let o = outcome(json!({"domain_id": "docs", "tenant_id": "initech"})).await;
    assert!(
        matches!(&o, TriggerOutcome::Skipped(why) if why.contains("no manager") && why.contains("initech")),
        "{o:?}"
    );
    let o = outcome(json!({"domain_id": "docs"})).await;
    assert!(matches!(&o, TriggerOutcome::Skipped(_)), "{o:?}");

    let bound = Arc::new(
        KnowledgeIngestionManager::new(source.clone(), kb.clone().with_tenant("acme"))
            .with_tenant("acme"),
    );
    let single = IngestOrchestrator::new(bound, bus.clone());
    let event = Event::new(
        EventType::Custom,
        "knowledge:trigger",
        json!({"domain_id": "docs", "tenant_id": "globex"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let o = single.handle(&event).await;
    assert!(
        matches!(&o, TriggerOutcome::Skipped(why) if why.contains("acme")),
        "{o:?}"
    );
}
