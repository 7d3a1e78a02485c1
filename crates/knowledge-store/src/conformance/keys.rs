//! Conformance cases of the key layout: `test_key_layout.py`, with
//! classification relative to each backend's root. The cases of
//! `test_subscribe_to_changes.py` need an event bus and live with the bus bridge in
//! `dynreg-hot-reload` (its `knowledge_bridge` tests run them against every backend).

use std::sync::{Arc, Mutex};

use super::{Harness, fresh, new_kb, put};
use crate::{
    IngestionStatus, KnowledgeBackendExt, KnowledgeError, KnowledgeKeyKind, Metadata, StatusUpdate,
    TenantContext,
};

use KnowledgeKeyKind::{Content, Metadata as Meta, Snapshot, Unknown};

/// The original's `CLASSIFY_CASES` and segment-precedence edges, relative to the backend's
/// root. Where the original's "any `content` segment wins" rule and the positional
/// classification disagree, the fix wins: `foo/_snapshots/content/x.json` is not content (and
/// not a snapshot: snapshots are flat), it is unknown.
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
pub async fn classify_key_cases(h: &dyn Harness) {
    let backend = fresh(h, "classify_key_cases").await;
    let b = &*backend;
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
pub async fn key_patterns_match_written_keys(h: &dyn Harness) {
    let backend = fresh(h, "key_patterns_match_written_keys").await;
    let b = &*backend;
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
        b.set_ingestion_status_in(&acme, dom, StatusUpdate::new(IngestionStatus::Ready))
            .await
            .unwrap();
        b.get_checksum_in(&acme, dom).await.unwrap();
    }
    let writes = seen.lock().unwrap().clone();
    assert!(writes.iter().any(|w| w.kind == Snapshot), "{writes:?}");
    // Whether the watch pattern of `kind` in `dom` and `ctx` matches `key`, by the harness's
    // glob matcher (the event bus's).
    let pattern_matches = |kind, dom: Option<&str>, ctx: &TenantContext, key: &str| {
        h.glob_matches(&b.key_pattern(kind, dom, ctx).unwrap(), key)
    };
    for w in &writes {
        let ctx = if w.tenant_id.is_some() {
            &acme
        } else {
            &single
        };
        assert_eq!(b.classify_key(&w.key), w.kind, "{}", w.key);
        assert!(
            pattern_matches(w.kind, Some(&w.domain_id), ctx, &w.key),
            "{}",
            w.key
        );
        assert!(pattern_matches(w.kind, None, ctx, &w.key), "{}", w.key);
        assert!(
            !pattern_matches(Content, Some(&w.domain_id), ctx, &w.key),
            "{}",
            w.key
        );
        if w.tenant_id.is_some() {
            assert!(!pattern_matches(
                w.kind,
                Some(&w.domain_id),
                &single,
                &w.key
            ));
        }
    }
    for dom in ["content", d.as_str()] {
        for path in ["_metadata.json", "docs/intro.md"] {
            let key = b.key_layout().content_key(dom, path);
            assert_eq!(b.classify_key(&key), Content, "{key}");
            assert!(pattern_matches(Content, Some(dom), &single, &key));
            assert!(pattern_matches(Content, None, &acme, &key));
            assert!(!pattern_matches(Meta, Some(dom), &single, &key), "{key}");
        }
    }
    // One domain's pattern does not match another's keys.
    let other = b.key_layout().metadata_key(&d, "");
    assert!(!pattern_matches(Meta, Some("content"), &single, &other));
}

/// `Unknown` has no pattern; the wildcard is `None`, never `""`; hostile domains are refused.
pub async fn key_pattern_refusals(h: &dyn Harness) {
    let backend = fresh(h, "key_pattern_refusals").await;
    let b = &*backend;
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
