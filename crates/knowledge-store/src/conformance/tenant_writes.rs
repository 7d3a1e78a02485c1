//! Conformance cases of tenant state writes: the tenant parts of
//! `test_conditional_state_writes.py` with one token rule on every backend,
//! `delete_kb` removing tenant state, `test_state_namespace_disjointness.py`, and
//! refused tenant contexts.

use super::{Harness, expect_conflict, fresh, kb_ids, new_kb, pair, put};
use crate::{
    IngestionStatus, KnowledgeBackendExt, KnowledgeError, Metadata, StatusUpdate, TenantContext,
};

fn acme() -> TenantContext {
    TenantContext::bound("acme")
}

fn status(s: IngestionStatus) -> StatusUpdate {
    StatusUpdate::new(s)
}

/// Tenant conditional writes: a token before the first write (so it can be conditional), a
/// new token per tenant write and only then (not on shared status or content writes), stale
/// tokens conflict with context and write nothing, the scopes never conflict with each other.
pub async fn tenant_conditional_writes(h: &dyn Harness) {
    let backend = fresh(h, "tenant_conditional_writes").await;
    let b = &*backend;
    let d = new_kb(b, "tcas").await;
    let t0 = b
        .get_state_version_in(&acme(), &d)
        .await
        .unwrap()
        .expect("a token before the tenant's first write");
    assert!(b.get_state_version(&d).await.unwrap().is_some());
    // Last writer wins without a token.
    b.set_ingestion_status_in(&acme(), &d, status(IngestionStatus::Ready))
        .await
        .unwrap();
    b.set_ingestion_status_in(&acme(), &d, status(IngestionStatus::Error))
        .await
        .unwrap();
    assert_eq!(
        b.get_info_in(&acme(), &d)
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Error
    );
    let t1 = b.get_state_version_in(&acme(), &d).await.unwrap().unwrap();
    assert_ne!(t1, t0, "every tenant write changes the tenant token");
    // Shared writes (status and content) neither move the tenant token nor conflict with it.
    let shared_before = b.get_state_version(&d).await.unwrap().unwrap();
    b.set_ingestion_status(&d, status(IngestionStatus::Swapping).generation("g"))
        .await
        .unwrap();
    put(b, &d, "a.md", "a").await;
    assert_eq!(
        b.get_state_version_in(&acme(), &d).await.unwrap().unwrap(),
        t1
    );
    b.set_ingestion_status_in(
        &acme(),
        &d,
        status(IngestionStatus::Ingesting).expect_version(&t1),
    )
    .await
    .unwrap();
    let t2 = b.get_state_version_in(&acme(), &d).await.unwrap().unwrap();
    assert_ne!(t2, t1);
    // A tenant write does not move the shared token beyond the shared writes above.
    let shared_after = b.get_state_version(&d).await.unwrap().unwrap();
    assert_ne!(shared_after, shared_before);
    b.set_ingestion_status_in(
        &TenantContext::bound("other"),
        &d,
        status(IngestionStatus::Ready),
    )
    .await
    .unwrap();
    assert_eq!(
        b.get_state_version(&d).await.unwrap().unwrap(),
        shared_after
    );
    assert_eq!(
        b.get_state_version_in(&acme(), &d).await.unwrap().unwrap(),
        t2
    );
    // A stale tenant token conflicts, names the domain and both tokens, writes nothing.
    let err = b
        .set_ingestion_status_in(
            &acme(),
            &d,
            status(IngestionStatus::Error).expect_version(&t1),
        )
        .await
        .unwrap_err();
    let key = expect_conflict(&err, &d, &t1, &t2);
    assert!(key.contains("_scoped/tenants/acme/_state/"), "{key}");
    let view = b.get_info_in(&acme(), &d).await.unwrap().unwrap();
    assert_eq!(
        view.ingestion_status,
        IngestionStatus::Ingesting,
        "nothing written"
    );
    let shared = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(shared.ingestion_status, IngestionStatus::Swapping);
    assert_eq!(shared.generation.as_deref(), Some("g"));
    // A shared token does not satisfy a tenant write, nor a tenant token a shared write.
    assert!(matches!(
        b.set_ingestion_status_in(
            &acme(),
            &d,
            status(IngestionStatus::Ready).expect_version(&shared_after)
        )
        .await,
        Err(KnowledgeError::Conflict { .. })
    ));
    assert!(matches!(
        b.set_ingestion_status(&d, status(IngestionStatus::Ready).expect_version(&t2))
            .await,
        Err(KnowledgeError::Conflict { .. })
    ));
    // A fresh tenant's first write can be conditional; its initial token is then stale.
    let fresh = TenantContext::bound("fresh");
    let f0 = b.get_state_version_in(&fresh, &d).await.unwrap().unwrap();
    b.set_ingestion_status_in(
        &fresh,
        &d,
        status(IngestionStatus::Ingesting).expect_version(&f0),
    )
    .await
    .unwrap();
    assert!(matches!(
        b.set_ingestion_status_in(
            &fresh,
            &d,
            status(IngestionStatus::Ready).expect_version(&f0)
        )
        .await,
        Err(KnowledgeError::Conflict { .. })
    ));
}

/// Of many concurrent conditional writers of one tenant holding the same token, one wins.
pub async fn tenant_conditional_writes_race_one_winner(h: &dyn Harness) {
    let backend = fresh(h, "tenant_conditional_writes_race_one_winner").await;
    let b = backend.clone();
    let d = new_kb(&*b, "trace").await;
    let token = b.get_state_version_in(&acme(), &d).await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (b, d, token) = (b.clone(), d.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            b.set_ingestion_status_in(
                &acme(),
                &d,
                status(IngestionStatus::Ingesting)
                    .generation(format!("g{i}"))
                    .expect_version(token),
            )
            .await
        }));
    }
    let mut wins = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(info) => wins.push(info.generation),
            Err(KnowledgeError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins.len(), 1);
    let view = b.get_info_in(&acme(), &d).await.unwrap().unwrap();
    assert_eq!(view.generation, wins[0]);
}

/// `delete_kb` removes every tenant's state, so a re-created knowledge base starts clean:
/// no stale status, generation, token or retained tenant version.
pub async fn delete_kb_removes_tenant_state(h: &dyn Harness) {
    let (backend, sibling) = pair(h, "delete_kb_removes_tenant_state").await;
    let b = &*backend;
    let d = new_kb(b, "deltenant").await;
    let prefixed = TenantContext::prefixed("beta", "clients/{tenant_id}/");
    put(b, &d, "a.md", "old").await;
    b.set_ingestion_status_in(
        &acme(),
        &d,
        status(IngestionStatus::Swapping).generation("stale-gen"),
    )
    .await
    .unwrap();
    b.set_ingestion_status_in(&prefixed, &d, status(IngestionStatus::Ready))
        .await
        .unwrap();
    let old_version = b.get_checksum_in(&acme(), &d).await.unwrap();
    assert!(b.delete_kb(&d).await.unwrap());
    assert!(b.get_info_in(&acme(), &d).await.unwrap().is_none());
    b.create_kb(&d, Metadata::new()).await.unwrap();
    let fresh_token = b
        .get_state_version_in(&TenantContext::bound("never-wrote"), &d)
        .await
        .unwrap()
        .unwrap();
    for ctx in [acme(), prefixed.clone()] {
        let view = sibling.get_info_in(&ctx, &d).await.unwrap().unwrap();
        assert_eq!(view.ingestion_status, IngestionStatus::Pending, "{ctx:?}");
        assert_eq!(view.generation, None, "{ctx:?}");
        assert_eq!(
            b.get_state_version_in(&ctx, &d).await.unwrap().unwrap(),
            fresh_token,
            "{ctx:?}"
        );
    }
    put(b, &d, "a.md", "new").await;
    let err = b
        .list_changes_since_in(&acme(), &d, &old_version)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KnowledgeError::InvalidVersion { .. }),
        "{err}"
    );
}

/// The tenant namespace is disjoint from every knowledge base: deleting a knowledge base named
/// like the tenant subtree's first segment (`tenants`), or like a tenant, or another
/// knowledge base, leaves tenant state alone; tenant state does not block creating such a
/// knowledge base; listings survive tenant writes.
pub async fn tenant_namespace_disjoint(h: &dyn Harness) {
    let backend = fresh(h, "tenant_namespace_disjoint").await;
    let b = &*backend;
    b.create_kb("proj", Metadata::new()).await.unwrap();
    b.create_kb("tenants", Metadata::new()).await.unwrap();
    b.set_ingestion_status_in(&acme(), "proj", status(IngestionStatus::Ready))
        .await
        .unwrap();
    // A tenant whose id is the name of the knowledge base about to be deleted.
    let named = TenantContext::bound("acme-kb");
    b.set_ingestion_status_in(&named, "proj", status(IngestionStatus::Error))
        .await
        .unwrap();
    b.create_kb("acme-kb", Metadata::new()).await.unwrap();
    let before = b.get_state_version_in(&acme(), "proj").await.unwrap();
    let before_named = b.get_state_version_in(&named, "proj").await.unwrap();
    assert!(before.is_some());
    let listed = kb_ids(b).await;
    assert_eq!(listed, vec!["acme-kb", "proj", "tenants"]);
    assert!(b.delete_kb("tenants").await.unwrap());
    assert!(b.delete_kb("acme-kb").await.unwrap());
    assert_eq!(
        b.get_state_version_in(&acme(), "proj").await.unwrap(),
        before
    );
    assert_eq!(
        b.get_state_version_in(&named, "proj").await.unwrap(),
        before_named
    );
    assert_eq!(
        b.get_info_in(&named, "proj")
            .await
            .unwrap()
            .unwrap()
            .ingestion_status,
        IngestionStatus::Error
    );
    // State written first does not make the colliding name look taken.
    let info = b.create_kb("tenants", Metadata::new()).await.unwrap();
    assert_eq!(info.domain_id, "tenants");
    // The layout's own root is never a domain.
    let err = b
        .create_kb(crate::SCOPED_STATE_ROOT, Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, KnowledgeError::InvalidDomainId { .. }),
        "{err}"
    );
    let listed = kb_ids(b).await;
    assert_eq!(listed, vec!["proj", "tenants"]);
}

/// A malformed tenant context is refused by every scoped operation, before anything is
/// written.
pub async fn invalid_tenant_contexts_refused(h: &dyn Harness) {
    let backend = fresh(h, "invalid_tenant_contexts_refused").await;
    let b = &*backend;
    let d = new_kb(b, "badctx").await;
    let before = b.get_state_version(&d).await.unwrap();
    for ctx in [
        TenantContext::bound("a/b"),
        TenantContext::bound(""),
        TenantContext::bound(".."),
        TenantContext::prefixed("t", "../{tenant_id}"),
        TenantContext::prefixed("t", "/abs/{tenant_id}"),
        TenantContext::prefixed("t", "{unknown}"),
        TenantContext::prefixed("t", ""),
    ] {
        let refused = |r: Result<(), KnowledgeError>, op: &str| match r {
            Err(e @ KnowledgeError::InvalidTenantContext { .. }) => {
                assert!(e.is_refusal(), "{op}");
            }
            other => panic!("{op} with {ctx:?} was not refused: {other:?}"),
        };
        refused(b.get_info_in(&ctx, &d).await.map(drop), "get_info_in");
        refused(
            b.set_ingestion_status_in(&ctx, &d, status(IngestionStatus::Ready))
                .await
                .map(drop),
            "set_ingestion_status_in",
        );
        refused(
            b.get_state_version_in(&ctx, &d).await.map(drop),
            "get_state_version_in",
        );
        refused(
            b.get_checksum_in(&ctx, &d).await.map(drop),
            "get_checksum_in",
        );
        refused(
            b.list_changes_since_in(&ctx, &d, "").await.map(drop),
            "list_changes_since_in",
        );
        refused(
            b.key_pattern(crate::KnowledgeKeyKind::Metadata, Some(&d), &ctx)
                .map(drop),
            "key_pattern",
        );
    }
    assert_eq!(b.get_state_version(&d).await.unwrap(), before);
    assert_eq!(
        b.get_info(&d).await.unwrap().unwrap().ingestion_status,
        IngestionStatus::Pending
    );
}
