//! Conformance cases of knowledge bases: create, read, list and delete a knowledge base.

use serde_json::json;

use super::{Harness, fresh, kb_ids, meta, new_kb, put, unique};
use crate::{IngestionStatus, KnowledgeBackendExt, KnowledgeError, Metadata};

/// create_kb: version "1", pending, counts 0, metadata kept.
pub async fn create_kb_defaults(h: &dyn Harness) {
    let backend = fresh(h, "create_kb_defaults").await;
    let b = &*backend;
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
pub async fn create_kb_duplicate_fails(h: &dyn Harness) {
    let backend = fresh(h, "create_kb_duplicate_fails").await;
    let b = &*backend;
    let d = new_kb(b, "dup").await;
    let err = b.create_kb(&d, Metadata::new()).await.unwrap_err();
    assert!(
        matches!(err, KnowledgeError::KbAlreadyExists { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&d));
}

/// get_info of a missing KB is None; get_file and list_files of one are None / empty.
pub async fn missing_kb_reads_are_empty(h: &dyn Harness) {
    let backend = fresh(h, "missing_kb_reads_are_empty").await;
    let b = &*backend;
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
pub async fn list_kbs_sorted(h: &dyn Harness) {
    let backend = fresh(h, "list_kbs_sorted").await;
    let b = &*backend;
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
pub async fn delete_kb_removes_everything(h: &dyn Harness) {
    let backend = fresh(h, "delete_kb_removes_everything").await;
    let b = &*backend;
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
