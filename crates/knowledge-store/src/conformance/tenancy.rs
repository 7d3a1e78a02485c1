//! Conformance cases of tenant-scoped state: `test_tenant_context_adoption.py` and
//! `test_tenant_context_byte_identity.py`, plus the tenant view of the knowledge base (the
//! real content summary, where the original reported zeros).

use serde_json::json;

use super::{Harness, fresh, meta, new_kb, pair, put, recorder, writes_of};
use crate::{
    IngestionStatus, KnowledgeBackendExt, KnowledgeError, KnowledgeKeyKind, StatusUpdate,
    TenantContext,
};

fn alpha() -> TenantContext {
    TenantContext::bound("alpha")
}

fn beta() -> TenantContext {
    TenantContext::bound("beta")
}

/// `ctx = None` (the unscoped methods) and `SingleTenant` observe and write the same state.
pub async fn tenant_none_equals_single_tenant(h: &dyn Harness) {
    let backend = fresh(h, "tenant_none_equals_single_tenant").await;
    let b = &*backend;
    let single = TenantContext::SingleTenant;
    let d = new_kb(b, "single").await;
    put(b, &d, "a.md", "a").await;
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let via_none = b.get_info(&d).await.unwrap().unwrap();
    let via_single = b.get_info_in(&single, &d).await.unwrap().unwrap();
    assert_eq!(via_none, via_single);
    b.set_ingestion_status_in(
        &single,
        &d,
        StatusUpdate::new(IngestionStatus::Ingesting).generation("g"),
    )
    .await
    .unwrap();
    let refreshed = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(refreshed.ingestion_status, IngestionStatus::Ingesting);
    assert_eq!(refreshed.generation.as_deref(), Some("g"));
    assert_eq!(
        b.get_state_version(&d).await.unwrap(),
        b.get_state_version_in(&single, &d).await.unwrap()
    );
    let v = b.get_checksum_in(&single, &d).await.unwrap();
    assert_eq!(v, b.get_checksum(&d).await.unwrap());
    put(b, &d, "b.md", "b").await;
    assert_eq!(
        b.list_changes_since(&d, &v).await.unwrap(),
        b.list_changes_since_in(&single, &d, &v).await.unwrap()
    );
    assert!(b.has_changes_since_in(&single, &d, &v).await.unwrap());
}

/// Two tenants of one knowledge base keep independent status; the shared state is untouched;
/// `SharedCorpus` of a tenant shares `Bound`'s state prefix, a `Prefixed` context does not.
pub async fn tenant_status_isolated(h: &dyn Harness) {
    let (backend, sibling) = pair(h, "tenant_status_isolated").await;
    let b = &*backend;
    let d = new_kb(b, "iso").await;
    b.set_ingestion_status_in(&alpha(), &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let written = b
        .set_ingestion_status_in(
            &beta(),
            &d,
            StatusUpdate::new(IngestionStatus::Swapping).generation("beta-gen"),
        )
        .await
        .unwrap();
    assert_eq!(written.ingestion_status, IngestionStatus::Swapping);
    let a = b.get_info_in(&alpha(), &d).await.unwrap().unwrap();
    let bb = b.get_info_in(&beta(), &d).await.unwrap().unwrap();
    assert_eq!(a.ingestion_status, IngestionStatus::Ready);
    assert_eq!(a.generation, None);
    assert_eq!(bb.ingestion_status, IngestionStatus::Swapping);
    assert_eq!(bb.generation.as_deref(), Some("beta-gen"));
    let shared = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(shared.ingestion_status, IngestionStatus::Pending);
    assert_eq!(shared.generation, None);
    let corpus = TenantContext::shared_corpus("alpha", "corpus-1");
    assert_eq!(
        b.get_info_in(&corpus, &d)
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Ready
    );
    let prefixed = TenantContext::prefixed("alpha", "clients/{tenant_id}/");
    assert_eq!(
        b.get_info_in(&prefixed, &d)
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Pending
    );
    // The sibling instance reads the same tenant state.
    let from_sibling = sibling.get_info_in(&beta(), &d).await.unwrap().unwrap();
    assert_eq!(from_sibling.generation.as_deref(), Some("beta-gen"));
}

/// Knowledge-base existence stays keyed by the domain: tenant state never creates one.
pub async fn tenant_state_requires_existing_kb(h: &dyn Harness) {
    let backend = fresh(h, "tenant_state_requires_existing_kb").await;
    let b = &*backend;
    let d = super::unique("nokb");
    let err = b
        .set_ingestion_status_in(&alpha(), &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&d));
    assert!(b.get_info_in(&alpha(), &d).await.unwrap().is_none());
    assert!(
        b.get_state_version_in(&alpha(), &d)
            .await
            .unwrap()
            .is_none()
    );
    let err = b.get_checksum_in(&alpha(), &d).await.unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    let err = b.list_changes_since_in(&alpha(), &d, "").await.unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(
        b.get_info(&d).await.unwrap().is_none(),
        "nothing was created"
    );
}

/// Content is shared: every tenant has the same identity and reads the same bytes.
pub async fn tenant_content_is_shared(h: &dyn Harness) {
    let backend = fresh(h, "tenant_content_is_shared").await;
    let b = &*backend;
    let d = new_kb(b, "shared").await;
    put(b, &d, "a.md", "hello").await;
    b.set_ingestion_status_in(&alpha(), &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let base = b.get_checksum(&d).await.unwrap();
    assert_eq!(b.get_checksum_in(&alpha(), &d).await.unwrap(), base);
    assert_eq!(b.get_checksum_in(&beta(), &d).await.unwrap(), base);
    assert_eq!(
        b.get_file(&d, "a.md").await.unwrap().unwrap().as_ref(),
        b"hello"
    );
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 1);
}

/// A tenant that never wrote sees the default state (not the shared status or generation),
/// over the real content summary (files, size, version and metadata are the knowledge
/// base's, also after the tenant writes and after more content arrives).
pub async fn tenant_view_default_and_real_counts(h: &dyn Harness) {
    let backend = fresh(h, "tenant_view_default_and_real_counts").await;
    let b = &*backend;
    let d = super::unique("view");
    b.create_kb(&d, meta(json!({"description": "shared docs"})))
        .await
        .unwrap();
    put(b, &d, "a.md", "aaa").await;
    put(b, &d, "b.md", "bb").await;
    b.set_ingestion_status(
        &d,
        StatusUpdate::new(IngestionStatus::Ingesting)
            .generation("gen-1")
            .error("domain error"),
    )
    .await
    .unwrap();
    let shared = b.get_info(&d).await.unwrap().unwrap();
    let fresh = b
        .get_info_in(&TenantContext::bound("newcomer"), &d)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.domain_id, d);
    assert_eq!(fresh.ingestion_status, IngestionStatus::Pending);
    assert_eq!(
        fresh.generation, None,
        "the shared generation does not leak"
    );
    assert_eq!(fresh.ingestion_error, None);
    assert_eq!((fresh.file_count, fresh.total_size_bytes), (2, 5));
    assert_eq!(fresh.version, shared.version);
    assert_eq!(fresh.metadata["description"], "shared docs");
    let written = b
        .set_ingestion_status_in(&alpha(), &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    assert_eq!((written.file_count, written.total_size_bytes), (2, 5));
    put(b, &d, "c.md", "c").await;
    let after = b.get_info_in(&alpha(), &d).await.unwrap().unwrap();
    assert_eq!(after.ingestion_status, IngestionStatus::Ready);
    assert_eq!((after.file_count, after.total_size_bytes), (3, 6));
    assert_eq!(
        after.version,
        b.get_info(&d).await.unwrap().unwrap().version
    );
    assert!(after.last_updated >= written.last_updated);
}

/// A tenant that never retained a version still gets a minimal diff against the shared
/// lineage (the original step 3).
pub async fn tenant_diff_falls_back_to_shared_lineage(h: &dyn Harness) {
    let backend = fresh(h, "tenant_diff_falls_back_to_shared_lineage").await;
    let b = &*backend;
    let d = new_kb(b, "fallback").await;
    put(b, &d, "a.md", "hello").await;
    let v1 = b.get_checksum(&d).await.unwrap();
    put(b, &d, "b.md", "world").await;
    let cs = b.list_changes_since_in(&alpha(), &d, &v1).await.unwrap();
    assert_eq!(cs.added, vec!["b.md"]);
    assert!(cs.modified.is_empty() && cs.deleted.is_empty());
    assert!(b.has_changes_since_in(&alpha(), &d, &v1).await.unwrap());
    // The identity just handed out is retained for the tenant.
    assert!(
        !b.has_changes_since_in(&alpha(), &d, &cs.version)
            .await
            .unwrap()
    );
}

/// A version a tenant retained is in its own lineage: another tenant (and the shared lineage)
/// cannot resolve it, and no other lineage's churn evicts it.
pub async fn tenant_snapshot_lineage_isolated(h: &dyn Harness) {
    let backend = fresh(h, "tenant_snapshot_lineage_isolated").await;
    let b = &*backend;
    let d = new_kb(b, "lineage").await;
    put(b, &d, "a.md", "hello").await;
    let v = b.get_checksum_in(&alpha(), &d).await.unwrap();
    put(b, &d, "b.md", "world").await;
    let cs = b.list_changes_since_in(&alpha(), &d, &v).await.unwrap();
    assert_eq!(cs.added, vec!["b.md"]);
    for (who, ctx) in [("beta", beta()), ("shared", TenantContext::SingleTenant)] {
        let err = b.list_changes_since_in(&ctx, &d, &v).await.unwrap_err();
        assert!(
            matches!(err, KnowledgeError::InvalidVersion { .. }),
            "{who}: {err}"
        );
        assert!(b.has_changes_since_in(&ctx, &d, &v).await.unwrap());
    }
}

/// The path formulas: the shared state keeps the pre-tenancy keys; a tenant's state is at
/// `{root}_scoped/tenants/{t}/_state/{domain}/…`, a prefixed one at `{root}_scoped/{prefix}/…`
/// (with the separator restored), content never moves; events name the tenant; and the
/// tenant-scoped watch pattern matches the key that was actually written.
pub async fn tenant_state_keys_byte_identity(h: &dyn Harness) {
    let backend = fresh(h, "tenant_state_keys_byte_identity").await;
    let b = &*backend;
    let seen = recorder(&*backend);
    let root = b.key_layout().root().to_owned();
    let d = new_kb(b, "keys").await;
    put(b, &d, "intro.md", "x").await;
    let acme = TenantContext::bound("acme");
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    b.set_ingestion_status_in(&acme, &d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    let v = b.get_checksum_in(&acme, &d).await.unwrap();
    let prefixed = TenantContext::prefixed("a", "t-{tenant_id}");
    b.set_ingestion_status_in(&prefixed, &d, StatusUpdate::new(IngestionStatus::Error))
        .await
        .unwrap();
    let writes = writes_of(&seen, &d);
    let key_of = |kind, tenant: Option<&str>| -> Vec<String> {
        writes
            .iter()
            .filter(|w| w.kind == kind && w.tenant_id.as_deref() == tenant)
            .map(|w| w.key.clone())
            .collect()
    };
    let shared_meta = format!("{root}{d}/_metadata.json");
    assert!(
        key_of(KnowledgeKeyKind::Metadata, None)
            .iter()
            .all(|k| *k == shared_meta),
        "{writes:?}"
    );
    let acme_meta = format!("{root}_scoped/tenants/acme/_state/{d}/_metadata.json");
    assert_eq!(
        key_of(KnowledgeKeyKind::Metadata, Some("acme")),
        vec![acme_meta.clone()]
    );
    assert_eq!(
        key_of(KnowledgeKeyKind::Snapshot, Some("acme")),
        vec![format!(
            "{root}_scoped/tenants/acme/_state/{d}/_snapshots/{v}.json"
        )]
    );
    assert_eq!(
        key_of(KnowledgeKeyKind::Metadata, Some("a")),
        vec![format!("{root}_scoped/t-a/{d}/_metadata.json")]
    );
    let tenant_write = writes
        .iter()
        .find(|w| w.key == acme_meta)
        .expect("tenant write");
    assert_eq!(tenant_write.payload()["tenant_id"], "acme");
    assert!(!writes[0].payload().contains_key("tenant_id"));
    // The watch a tenant would set up matches exactly what was written.
    for (kind, key) in [
        (KnowledgeKeyKind::Metadata, acme_meta.clone()),
        (
            KnowledgeKeyKind::Snapshot,
            format!("{root}_scoped/tenants/acme/_state/{d}/_snapshots/{v}.json"),
        ),
    ] {
        for domain in [Some(d.as_str()), None] {
            let pattern = b.key_pattern(kind, domain, &acme).unwrap();
            assert!(h.glob_matches(&pattern, &key), "{pattern} vs {key}");
            let other = b.key_pattern(kind, domain, &beta()).unwrap();
            assert!(!h.glob_matches(&other, &key), "{other} vs {key}");
        }
        assert_eq!(b.classify_key(&key), kind);
        let parsed = b.key_layout().parse_key(&key).unwrap();
        assert_eq!(parsed.domain_id, d);
        assert_eq!(parsed.state_prefix, "_scoped/tenants/acme/_state/");
    }
    // Content is never tenant-scoped: the tenant's content pattern is the shared one.
    assert_eq!(
        b.key_pattern(KnowledgeKeyKind::Content, Some(&d), &acme)
            .unwrap(),
        b.key_pattern(
            KnowledgeKeyKind::Content,
            Some(&d),
            &TenantContext::SingleTenant
        )
        .unwrap()
    );
    let content_key = b.key_layout().content_key(&d, "intro.md");
    assert_eq!(content_key, format!("{root}{d}/content/intro.md"));
    assert_eq!(b.classify_key(&content_key), KnowledgeKeyKind::Content);
}
