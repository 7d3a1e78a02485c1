//! Conformance cases of refusals: hostile paths and domain ids at every entry point, the
//! file/folder conflict, and errors that name what they are about.

use bytes::Bytes;

use super::{Harness, fresh, new_kb, put, unique};
use crate::paths::{HOSTILE_DOMAIN_IDS, HOSTILE_PATHS};
use crate::{
    FileUpload, IngestionStatus, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions,
    StatusUpdate,
};

/// Every hostile path is refused, as a refusal, by every entry point.
pub async fn hostile_paths_refused(h: &dyn Harness) {
    let backend = fresh(h, "hostile_paths_refused").await;
    let b = &*backend;
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
pub async fn hostile_domain_ids_refused(h: &dyn Harness) {
    let backend = fresh(h, "hostile_domain_ids_refused").await;
    let b = &*backend;
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
pub async fn file_folder_conflict_refused(h: &dyn Harness) {
    let backend = fresh(h, "file_folder_conflict_refused").await;
    let b = &*backend;
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

/// Errors name what they are about.
pub async fn errors_name_domain_and_path(h: &dyn Harness) {
    let backend = fresh(h, "errors_name_domain_and_path").await;
    let b = &*backend;
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
