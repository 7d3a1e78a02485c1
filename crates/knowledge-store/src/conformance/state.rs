//! Conformance cases of the single-tenant ingestion state: status writes, the state version
//! and conditional (compare-and-swap) status writes, and the state-write events. Tenant state has its own modules.

use super::{Harness, expect_conflict, fresh, new_kb, pair, put, recorder, unique, writes_of};
use crate::{IngestionStatus, KnowledgeBackendExt, KnowledgeError, KnowledgeKeyKind, StatusUpdate};

/// set_ingestion_status always writes error and generation (clearing stale ones).
pub async fn set_ingestion_status_writes_error_and_generation(h: &dyn Harness) {
    let backend = fresh(h, "set_ingestion_status_writes_error_and_generation").await;
    let b = &*backend;
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
pub async fn conditional_status_writes(h: &dyn Harness) {
    let backend = fresh(h, "conditional_status_writes").await;
    let b = &*backend;
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
pub async fn conditional_writes_race_one_winner(h: &dyn Harness) {
    let backend = fresh(h, "conditional_writes_race_one_winner").await;
    let b = backend.clone();
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
pub async fn conditional_writes_across_instances(h: &dyn Harness) {
    let (backend, sibling) = pair(h, "conditional_writes_across_instances").await;
    let (a, b) = (backend.clone(), sibling.clone());
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

/// Index, status and snapshot writes are reported to state-write observers.
pub async fn state_write_events(h: &dyn Harness) {
    let backend = fresh(h, "state_write_events").await;
    let b = &*backend;
    let seen = recorder(&*backend);
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
