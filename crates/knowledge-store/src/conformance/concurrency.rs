//! Conformance cases of concurrency: no lost writes among concurrent puts, and two backend
//! instances (processes) on the same storage.

use bytes::Bytes;

use super::{Harness, fresh, new_kb, pair, put};
use crate::identity::md5_hex;
use crate::{
    IngestionStatus, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions, StatusUpdate,
};

/// 200 concurrent put_file calls leave 200 index entries (the original kept 2 of 100).
pub async fn concurrent_puts_lose_nothing(h: &dyn Harness) {
    let backend = fresh(h, "concurrent_puts_lose_nothing").await;
    let b = backend.clone();
    let d = new_kb(&*b, "conc").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (b, d) = (b.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            b.put_file(
                &d,
                &format!("f/{i:03}.md"),
                Bytes::from(format!("file {i}")),
                PutOptions::default(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let files = b.list_files(&d, None).await.unwrap();
    assert_eq!(files.len(), 200);
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(info.file_count, 200);
    assert_eq!(info.version, "201");
    for f in &files {
        let body = b.get_file(&d, &f.path).await.unwrap().unwrap();
        assert_eq!(md5_hex(&body), f.checksum);
    }
}

/// Among concurrent puts, one refused for a path conflict fails alone; the others land.
pub async fn concurrent_conflict_fails_alone(h: &dyn Harness) {
    let backend = fresh(h, "concurrent_conflict_fails_alone").await;
    let b = backend.clone();
    let d = new_kb(&*b, "concconf").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (b, d) = (b.clone(), d.clone());
        let path = match i {
            7 => "x".to_owned(),
            8 => "x/inner.md".to_owned(),
            _ => format!("ok/{i:02}.md"),
        };
        tasks.push(tokio::spawn(async move {
            b.put_file(&d, &path, Bytes::from(path.clone()), PutOptions::default())
                .await
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(KnowledgeError::PathConflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(conflicts, 1, "exactly one of x and x/inner.md is refused");
    let files = b.list_files(&d, None).await.unwrap();
    assert_eq!(files.len(), 39);
    for f in &files {
        let body = b.get_file(&d, &f.path).await.unwrap().unwrap();
        assert_eq!(body.as_ref(), f.path.as_bytes());
    }
}

/// Two backend instances on the same storage, writing concurrently, lose nothing.
pub async fn two_instances_lose_nothing(h: &dyn Harness) {
    let (backend, sibling) = pair(h, "two_instances_lose_nothing").await;
    let (a, b) = (backend.clone(), sibling.clone());
    let d = new_kb(&*a, "twoinst").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (inst, d) = (if i % 2 == 0 { a.clone() } else { b.clone() }, d.clone());
        tasks.push(tokio::spawn(async move {
            inst.put_file(
                &d,
                &format!("p{i:02}.md"),
                Bytes::from(format!("{i}")),
                PutOptions::default(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for inst in [&a, &b] {
        assert_eq!(inst.list_files(&d, None).await.unwrap().len(), 60);
        assert_eq!(inst.get_info(&d).await.unwrap().unwrap().file_count, 60);
    }
    assert_eq!(
        a.get_checksum(&d).await.unwrap(),
        b.get_checksum(&d).await.unwrap()
    );
    let v = a.get_checksum(&d).await.unwrap();
    b.delete_file(&d, "p00.md").await.unwrap();
    let cs = a.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.deleted, vec!["p00.md"]);
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    assert_eq!(
        a.get_info(&d).await.unwrap().unwrap().ingestion_status,
        IngestionStatus::Ready
    );
}

/// A second instance notices a delete and a re-create of the same domain by the first.
pub async fn sibling_sees_delete_and_recreate(h: &dyn Harness) {
    let (backend, sibling) = pair(h, "sibling_sees_delete_and_recreate").await;
    let (a, b) = (backend.clone(), sibling.clone());
    let d = new_kb(&*a, "recreate").await;
    put(&*a, &d, "old.md", "old").await;
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 1);
    assert!(a.delete_kb(&d).await.unwrap());
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.list_files(&d, None).await.unwrap().is_empty());
    let err = b
        .put_file(&d, "x.md", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    a.create_kb(&d, Metadata::new()).await.unwrap();
    put(&*b, &d, "new.md", "new").await;
    let paths: Vec<_> = a
        .list_files(&d, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(paths, vec!["new.md"]);
    assert!(a.get_file(&d, "old.md").await.unwrap().is_none());
    assert_eq!(b.get_info(&d).await.unwrap().unwrap().file_count, 1);
}
