//! Conformance cases of the key layout and change subscriptions: `test_key_layout.py` and
//! `test_subscribe_to_changes.py` (reference-spec §6.9), with classification relative to each
//! backend's root (§9.4 #35).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynreg_event_bus::{Delivery, Event, EventBus, EventType, Glob, InMemoryEventBus};

use super::{Store, new_kb, put};
use crate::{
    IngestionStatus, KnowledgeError, KnowledgeKeyKind, Metadata, StatusUpdate, TenantContext,
    subscribe_to_changes,
};

use KnowledgeKeyKind::{Content, Metadata as Meta, Snapshot, Unknown};

/// The original's `CLASSIFY_CASES` and segment-precedence edges, relative to the backend's
/// root. Where the original's "any `content` segment wins" rule and the positional fix of
/// §9.4 #35 disagree, the fix wins: `foo/_snapshots/content/x.json` is not content (and not
/// a snapshot: snapshots are flat), it is unknown.
const CLASSIFY_CASES: &[(&str, KnowledgeKeyKind)] = &[
    ("foo/content/bar.md", Content),
    ("foo/content/sub/deep.md", Content),
    ("foo/content/_metadata.json", Content),
    ("foo/_metadata.json", Meta),
    ("foo/_snapshots/abc123.json", Snapshot),
    ("other/junk.txt", Unknown),
    ("foo/content/bar/_snapshots/x.json", Content),
    ("foo/_snapshots/content/x.json", Unknown),
    ("foo/_metadata.json/extra", Unknown),
    // A knowledge base named `content` (a legal name) is classified by position.
    ("content/_metadata.json", Meta),
    ("content/_snapshots/abc.json", Snapshot),
    ("content/content/content/_metadata.json", Content),
    // Tenant state.
    ("_scoped/tenants/t/_state/foo/_metadata.json", Meta),
    ("_scoped/tenants/t/_state/content/_metadata.json", Meta),
    ("_scoped/tenants/t/_state/foo/_snapshots/v.json", Snapshot),
    ("_scoped/foo/content/a.md", Unknown),
    ("_scoped/_metadata.json", Unknown),
    // Not addressable, not canonical.
    ("_x/_metadata.json", Unknown),
    ("foo//_metadata.json", Unknown),
    ("foo/content/", Unknown),
    ("foo/content", Unknown),
    ("foo", Unknown),
];

/// `classify_key` is positional under the backend's root; `""` and `"/"` are unknown, and so
/// is a key outside the root.
pub async fn classify_key_cases(s: Store) {
    let b = &*s.backend;
    let root = b.key_layout().root().to_owned();
    for (rel, expected) in CLASSIFY_CASES {
        let key = format!("{root}{rel}");
        assert_eq!(b.classify_key(&key), *expected, "{key}");
        assert_eq!(b.key_layout().classify_key(&key), *expected, "{key}");
    }
    assert_eq!(b.classify_key(""), Unknown);
    assert_eq!(b.classify_key("/"), Unknown);
    if !root.is_empty() {
        assert_eq!(
            b.classify_key("foo/content/bar.md"),
            Unknown,
            "outside the root"
        );
        assert_eq!(
            b.classify_key(&format!("elsewhere/{root}foo/_metadata.json")),
            Unknown
        );
    }
}

/// Every key a backend reports writing is classified as what it is and matched by the
/// pattern of its kind — and the content pattern matches no state key (the feedback loop).
pub async fn key_patterns_match_written_keys(s: Store) {
    let b = &*s.backend;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.state_events()
        .on_state_write(move |w| sink.lock().unwrap().push(w.clone()));
    let single = TenantContext::SingleTenant;
    let acme = TenantContext::bound("acme");
    b.create_kb("content", Metadata::new()).await.unwrap();
    let d = new_kb(b, "pat").await;
    for dom in ["content", d.as_str()] {
        put(b, dom, "_metadata.json", "a content file with that name").await;
        put(b, dom, "docs/intro.md", "hello").await;
        b.get_checksum(dom).await.unwrap();
        b.set_ingestion_status_scoped(dom, StatusUpdate::new(IngestionStatus::Ready), &acme)
            .await
            .unwrap();
        b.get_checksum_scoped(dom, &acme).await.unwrap();
    }
    let writes = seen.lock().unwrap().clone();
    assert!(writes.iter().any(|w| w.kind == Snapshot), "{writes:?}");
    let glob = |kind, dom: Option<&str>, ctx: &TenantContext| {
        Glob::new(&b.key_pattern(kind, dom, ctx).unwrap()).unwrap()
    };
    for w in &writes {
        let ctx = if w.tenant_id.is_some() {
            &acme
        } else {
            &single
        };
        assert_eq!(b.classify_key(&w.key), w.kind, "{}", w.key);
        assert!(
            glob(w.kind, Some(&w.domain_id), ctx).matches(&w.key),
            "{}",
            w.key
        );
        assert!(glob(w.kind, None, ctx).matches(&w.key), "{}", w.key);
        assert!(
            !glob(Content, Some(&w.domain_id), ctx).matches(&w.key),
            "{}",
            w.key
        );
        if w.tenant_id.is_some() {
            assert!(!glob(w.kind, Some(&w.domain_id), &single).matches(&w.key));
        }
    }
    for dom in ["content", d.as_str()] {
        for path in ["_metadata.json", "docs/intro.md"] {
            let key = b.key_layout().content_key(dom, path);
            assert_eq!(b.classify_key(&key), Content, "{key}");
            assert!(glob(Content, Some(dom), &single).matches(&key));
            assert!(glob(Content, None, &acme).matches(&key));
            assert!(!glob(Meta, Some(dom), &single).matches(&key), "{key}");
        }
    }
    // One domain's pattern does not match another's keys.
    let other = b.key_layout().metadata_key(&d, "");
    assert!(!glob(Meta, Some("content"), &single).matches(&other));
}

/// `Unknown` has no pattern; the wildcard is `None`, never `""`; hostile domains are refused.
pub async fn key_pattern_refusals(s: Store) {
    let b = &*s.backend;
    let single = TenantContext::SingleTenant;
    for domain in [None, Some("acme")] {
        let err = b.key_pattern(Unknown, domain, &single).unwrap_err();
        assert!(
            matches!(err, KnowledgeError::InvalidKeyKind { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("UNKNOWN"), "{err}");
    }
    for d in ["", "acme/content", "_scoped", ".."] {
        for kind in [Content, Meta, Snapshot] {
            let err = b.key_pattern(kind, Some(d), &single).unwrap_err();
            assert!(
                matches!(err, KnowledgeError::InvalidDomainId { .. }),
                "{d:?}: {err}"
            );
        }
    }
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
pub async fn subscribe_to_changes_cases(s: Store) {
    let b = &*s.backend;
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
    b.set_ingestion_status_scoped(&d, StatusUpdate::new(IngestionStatus::Ready), &acme)
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
        matches!(err, KnowledgeError::InvalidKeyKind { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("once per kind"), "{err}");
    assert_eq!(bus.subscription_count(), 0);
}
