//! The knowledge-store ↔ event-bus bridge against every knowledge backend: the cases of
//! `test_subscribe_to_changes.py` for [`subscribe_to_changes`], and
//! state writes published on the `ingest:*:write` topics by [`also_publish_to`]. They ran in the
//! knowledge-store conformance suite until that crate stopped depending on the event bus; they
//! run here on the memory backend, the file backend (a temp dir), and with this crate's `s3`
//! feature the S3 backend on `object_store`'s in-memory store and a local S3-compatible server
//! when `DYNREG_TEST_S3_ENDPOINT` is set (skipped otherwise).

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynreg_event_bus::{
    Delivery, Event, EventBus, EventBusError, EventType, InMemoryEventBus, Subscription,
};
use dynreg_hot_reload::{KnowledgeWatchError, also_publish_to, subscribe_to_changes};
use dynreg_knowledge_store::{
    INGEST_METADATA_WRITE, INGEST_SNAPSHOT_WRITE, IngestionStatus, KnowledgeBackend,
    KnowledgeBackendExt, KnowledgeError, KnowledgeKeyKind, MemoryKnowledgeBackend, Metadata,
    PutOptions, StatusUpdate, TenantContext,
};

use KnowledgeKeyKind::{Content, Metadata as Meta};

fn unique(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

async fn new_kb(b: &dyn KnowledgeBackend, tag: &str) -> String {
    let d = unique(tag);
    b.create_kb(&d, Metadata::new()).await.expect("create_kb");
    d
}

async fn put(b: &dyn KnowledgeBackend, d: &str, p: &str, content: &str) {
    b.put_file(d, p, content.to_owned().into(), PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put_file({d}, {p}): {e}"));
}

/// Receives the next handler call, or `None` after a short wait.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .ok()
        .flatten()
}

/// `subscribe_to_changes`: content by default, metadata on request, one kind per
/// subscription, only keys of the watched kind/domain/tenant reach the handler, and the guard
/// unsubscribes (`cancel` at once, drop shortly).
async fn subscribe_to_changes_cases(backend: Arc<dyn KnowledgeBackend>) {
    let b = &*backend;
    let bus = InMemoryEventBus::new();
    let d = new_kb(b, "sub").await;
    let layout = b.key_layout().clone();
    let single = TenantContext::SingleTenant;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let handler = move |tx: tokio::sync::mpsc::UnboundedSender<String>| {
        move |delivery: Delivery| {
            let tx = tx.clone();
            async move {
                if let Delivery::Event { topic, .. } = delivery {
                    let _ = tx.send(topic.to_string());
                }
                Ok::<(), std::convert::Infallible>(())
            }
        }
    };
    let publish = |key: String| {
        let bus = &bus;
        async move {
            let event = Event::new(EventType::Custom, key.clone(), serde_json::Map::new());
            bus.publish(&key, &event).await.unwrap();
        }
    };
    let sub = subscribe_to_changes(b, &bus, &[], Some(&d), &single, handler(tx.clone()))
        .await
        .unwrap();
    assert_eq!(sub.kind(), Content);
    assert_eq!(
        sub.pattern(),
        b.key_pattern(Content, Some(&d), &single).unwrap()
    );
    assert_eq!(bus.subscription_count(), 1);
    let content_key = layout.content_key(&d, "intro.md");
    publish(content_key.clone()).await;
    publish(layout.metadata_key(&d, "")).await;
    publish(layout.content_key("other", "intro.md")).await;
    assert_eq!(next(&mut rx).await.as_deref(), Some(content_key.as_str()));
    assert_eq!(
        next(&mut rx).await,
        None,
        "only the watched domain's content"
    );
    sub.cancel().await;
    assert_eq!(bus.subscription_count(), 0);
    publish(content_key.clone()).await;
    assert_eq!(next(&mut rx).await, None, "no delivery after cancel");

    // Metadata of every domain: a content file named _metadata.json and tenant documents are
    // not the shared metadata, though the glob alone would match them.
    let sub = subscribe_to_changes(b, &bus, &[Meta], None, &single, handler(tx.clone()))
        .await
        .unwrap();
    assert_eq!(sub.pattern(), b.key_pattern(Meta, None, &single).unwrap());
    let meta_key = layout.metadata_key(&d, "");
    let acme_state = TenantContext::bound("acme").state_prefix(&d).unwrap();
    publish(layout.content_key(&d, "_metadata.json")).await;
    publish(layout.metadata_key(&d, &acme_state)).await;
    publish(meta_key.clone()).await;
    assert_eq!(next(&mut rx).await.as_deref(), Some(meta_key.as_str()));
    assert_eq!(next(&mut rx).await, None);
    drop(sub);
    let mut waited = 0;
    while bus.subscription_count() != 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(
        bus.subscription_count(),
        0,
        "dropping the guard unsubscribes"
    );

    // A tenant-scoped watch receives the key that tenant's write actually produced.
    let acme = TenantContext::bound("acme");
    let sub = subscribe_to_changes(b, &bus, &[Meta], Some(&d), &acme, handler(tx.clone()))
        .await
        .unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = written.clone();
    b.state_events()
        .on_state_write(move |w| sink.lock().unwrap().push(w.key.clone()));
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    b.set_ingestion_status_in(&acme, &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let keys = written.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in keys {
        publish(k).await;
    }
    assert_eq!(
        next(&mut rx).await,
        Some(layout.metadata_key(&d, &acme_state))
    );
    assert_eq!(
        next(&mut rx).await,
        None,
        "the shared document is not acme's"
    );
    sub.cancel().await;

    // More than one kind is refused, naming the call to make once per kind.
    let err = subscribe_to_changes(b, &bus, &[Content, Meta], None, &single, handler(tx))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KnowledgeWatchError::Knowledge(KnowledgeError::InvalidKeyKind { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("once per kind"), "{err}");
    assert_eq!(bus.subscription_count(), 0);
}

/// With an event bus given, index and snapshot writes are published on the `ingest:*:write` topics.
async fn state_write_events_reach_the_bus(backend: Arc<dyn KnowledgeBackend>) {
    let b = &*backend;
    let bus = Arc::new(InMemoryEventBus::new());
    let mut meta_sub = bus.subscribe(INGEST_METADATA_WRITE).await.unwrap();
    let mut snap_sub = bus.subscribe(INGEST_SNAPSHOT_WRITE).await.unwrap();
    also_publish_to(b.state_events(), bus.clone());
    let d = new_kb(b, "bus").await;
    put(b, &d, "a.md", "a").await;
    let v = b.get_checksum(&d).await.unwrap();
    let next = |sub: &mut Subscription| {
        let got = sub.try_next();
        match got {
            Some(Delivery::Event { topic, event }) => (topic, event),
            other => panic!("expected an event, got {other:?}"),
        }
    };
    // Publishing is awaited inside the write, so the events are already delivered.
    let mut seen_put = false;
    while let Some(d2) = meta_sub.try_next() {
        if let Delivery::Event { topic, event } = d2 {
            assert_eq!(&*topic, INGEST_METADATA_WRITE);
            assert_eq!(event.event_type, EventType::Custom);
            if event.payload["domain_id"] == d.as_str() {
                assert_eq!(event.payload["kind"], "metadata");
                assert!(event.payload["byte_size"].as_u64().unwrap() > 0);
                assert!(
                    event.payload["key"]
                        .as_str()
                        .unwrap()
                        .ends_with("_metadata.json")
                );
                seen_put = true;
            }
        }
    }
    assert!(seen_put, "no metadata write event for {d}");
    let (topic, event) = next(&mut snap_sub);
    assert_eq!(&*topic, INGEST_SNAPSHOT_WRITE);
    assert_eq!(event.payload["domain_id"], d.as_str());
    assert!(
        event.payload["key"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{v}.json"))
    );
}

dynreg_knowledge_store::knowledge_backend_tests!(
    subscribe_to_changes_cases,
    state_write_events_reach_the_bus
);

/// A bus that refuses every publish and subscription, as a closed bus does.
#[derive(Debug)]
struct ClosedBus;

#[async_trait::async_trait]
impl EventBus for ClosedBus {
    async fn publish(&self, topic: &str, _event: &Event) -> Result<(), EventBusError> {
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
}

/// A failed publish is logged and never fails the write; the local callbacks still run after
/// it, and a working bus added after the failing one still gets the event.
#[tokio::test]
async fn a_failed_publish_never_fails_the_write() {
    let b = MemoryKnowledgeBackend::new();
    let bus = Arc::new(InMemoryEventBus::new());
    let mut meta_sub = bus.subscribe(INGEST_METADATA_WRITE).await.unwrap();
    let seen = Arc::new(Mutex::new(0usize));
    let sink = seen.clone();
    b.state_events()
        .on_state_write(move |_| *sink.lock().unwrap() += 1);
    also_publish_to(b.state_events(), Arc::new(ClosedBus));
    also_publish_to(b.state_events(), bus.clone());
    let d = new_kb(&b, "closed").await;
    put(&b, &d, "a.md", "a").await;
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 1);
    assert!(*seen.lock().unwrap() >= 2, "create and put are reported");
    assert!(
        matches!(meta_sub.try_next(), Some(Delivery::Event { .. })),
        "the working bus still publishes"
    );
}

/// A failed bus subscription is a `Subscribe` error naming the pattern and the bus error.
#[tokio::test]
async fn a_failed_bus_subscription_names_the_pattern() {
    let b = MemoryKnowledgeBackend::new();
    let single = TenantContext::SingleTenant;
    let err = subscribe_to_changes(&b, &ClosedBus, &[Meta], None, &single, |_| async {
        Ok::<(), std::convert::Infallible>(())
    })
    .await
    .unwrap_err();
    let pattern = b.key_pattern(Meta, None, &single).unwrap();
    match &err {
        KnowledgeWatchError::Subscribe {
            pattern: p,
            source: EventBusError::Closed { .. },
        } => assert_eq!(*p, pattern),
        other => panic!("expected Subscribe, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "subscribe_to_changes: cannot subscribe to pattern {pattern:?}: {}",
            EventBusError::Closed {
                topic: pattern.clone()
            }
        )
    );
}
