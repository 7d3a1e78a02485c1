//! Conformance cases of files: put, get, list, delete and replace files, one at a time and
//! in batches.

use bytes::Bytes;
use serde_json::json;

use super::{Harness, fresh, meta, new_kb, put, unique};
use crate::identity::md5_hex;
use crate::{FileUpload, KnowledgeBackendExt, KnowledgeError, PutOptions};

/// put_file then get_file returns the bytes; the entry has size, MD5, type and metadata.
pub async fn put_and_get_file(h: &dyn Harness) {
    let backend = fresh(h, "put_and_get_file").await;
    let b = &*backend;
    let d = new_kb(b, "putget").await;
    let body = b"# Introduction\n\nWelcome to our knowledge base!";
    let f = b
        .put_file(
            &d,
            "content/intro.md",
            Bytes::from_static(body),
            PutOptions {
                content_type: None,
                metadata: meta(json!({"lang": "en", "n": 3})),
            },
        )
        .await
        .unwrap();
    assert_eq!(f.path, "content/intro.md");
    assert_eq!(f.size_bytes, body.len() as u64);
    assert_eq!(f.checksum, md5_hex(body));
    assert_eq!(f.content_type, "text/markdown");
    assert_eq!(f.metadata["n"], 3);
    assert_eq!(
        b.get_file(&d, "content/intro.md")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        body
    );
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!(
        (info.file_count, info.total_size_bytes),
        (1, body.len() as u64)
    );
    assert_eq!(info.version, "2");
    let stored = b
        .get_file_info(&d, "content/intro.md")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, f);
    let explicit = b
        .put_file(
            &d,
            "x.bin",
            Bytes::from_static(b"x"),
            PutOptions::with_content_type("text/plain"),
        )
        .await
        .unwrap();
    assert_eq!(explicit.content_type, "text/plain");
}

/// put_file on a missing KB fails naming the domain, and writes nothing.
pub async fn put_file_without_kb_fails(h: &dyn Harness) {
    let backend = fresh(h, "put_file_without_kb_fails").await;
    let b = &*backend;
    let d = unique("nokb");
    let err = b
        .put_file(&d, "a.md", Bytes::from_static(b"a"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&d));
    let err = b
        .put_files(&d, vec![FileUpload::new("a.md", "a")])
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::KbNotFound { .. }), "{err}");
    assert!(b.get_info(&d).await.unwrap().is_none());
    assert!(b.get_file(&d, "a.md").await.unwrap().is_none());
}

/// list_files: sorted by path, prefix is a plain startswith.
pub async fn list_files_prefix_sorted(h: &dyn Harness) {
    let backend = fresh(h, "list_files_prefix_sorted").await;
    let b = &*backend;
    let d = new_kb(b, "listf").await;
    for p in [
        "z.md",
        "content/b.md",
        "content/a.md",
        "contents.md",
        "data/x.json",
    ] {
        put(b, &d, p, p).await;
    }
    let all: Vec<_> = b
        .list_files(&d, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(
        all,
        vec![
            "content/a.md",
            "content/b.md",
            "contents.md",
            "data/x.json",
            "z.md"
        ]
    );
    let content: Vec<_> = b
        .list_files(&d, Some("content/"))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(content, vec!["content/a.md", "content/b.md"]);
    let c: Vec<_> = b
        .list_files(&d, Some("content"))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(c.len(), 3);
    assert!(b.list_files(&d, Some("nothing/")).await.unwrap().is_empty());
}

/// file_exists follows puts and deletes.
pub async fn file_exists_follows_writes(h: &dyn Harness) {
    let backend = fresh(h, "file_exists_follows_writes").await;
    let b = &*backend;
    let d = new_kb(b, "exists").await;
    assert!(!b.file_exists(&d, "a/b.md").await.unwrap());
    put(b, &d, "a/b.md", "x").await;
    assert!(b.file_exists(&d, "a/b.md").await.unwrap());
    assert!(!b.file_exists(&d, "a").await.unwrap());
    assert!(b.delete_file(&d, "a/b.md").await.unwrap());
    assert!(!b.file_exists(&d, "a/b.md").await.unwrap());
}

/// get_file returns exactly the stored bytes for empty, small and large files (the file
/// backend reads small cached files inline and large ones on the blocking pool); a folder
/// is not a file.
pub async fn get_file_exact_bytes_any_size(h: &dyn Harness) {
    let backend = fresh(h, "get_file_exact_bytes_any_size").await;
    let b = &*backend;
    let d = new_kb(b, "sizes").await;
    for (i, size) in [0usize, 1, 4096, 300 * 1024].into_iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|k| (k * 31 + i) as u8).collect();
        let path = format!("sizes/f{i}.bin");
        b.put_file(&d, &path, Bytes::from(body.clone()), PutOptions::default())
            .await
            .unwrap();
        let got = b.get_file(&d, &path).await.unwrap().expect("stored file");
        assert_eq!(got.len(), size, "{path}");
        assert!(got.as_ref() == body.as_slice(), "{path}: bytes differ");
    }
    assert!(b.get_file(&d, "sizes").await.unwrap().is_none());
    assert!(b.get_file(&d, "sizes/f9.bin").await.unwrap().is_none());
    assert!(b.get_file(&d, "sizes/f0.bin/x").await.unwrap().is_none());
}

/// delete_file updates file_count, size and version; a missing file gives false.
pub async fn delete_file_updates_counts(h: &dyn Harness) {
    let backend = fresh(h, "delete_file_updates_counts").await;
    let b = &*backend;
    let d = new_kb(b, "delf").await;
    put(b, &d, "a.md", "aaa").await;
    put(b, &d, "deep/nested/b.md", "bb").await;
    let before = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((before.file_count, before.total_size_bytes), (2, 5));
    assert!(b.delete_file(&d, "deep/nested/b.md").await.unwrap());
    let after = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((after.file_count, after.total_size_bytes), (1, 3));
    assert_eq!(after.version, "4");
    assert!(!b.delete_file(&d, "deep/nested/b.md").await.unwrap());
    assert!(b.get_file(&d, "deep/nested/b.md").await.unwrap().is_none());
    // The emptied folder does not block a file of the same name.
    put(b, &d, "deep", "now a file").await;
    assert_eq!(
        b.get_file(&d, "deep").await.unwrap().unwrap().as_ref(),
        b"now a file"
    );
}

/// Replacing a file keeps the count, updates size and checksum, bumps the version.
pub async fn overwrite_replaces_entry(h: &dyn Harness) {
    let backend = fresh(h, "overwrite_replaces_entry").await;
    let b = &*backend;
    let d = new_kb(b, "over").await;
    put(b, &d, "a.md", "one").await;
    put(b, &d, "a.md", "three").await;
    let info = b.get_info(&d).await.unwrap().unwrap();
    assert_eq!((info.file_count, info.total_size_bytes), (1, 5));
    assert_eq!(info.version, "3");
    let f = b.get_file_info(&d, "a.md").await.unwrap().unwrap();
    assert_eq!(f.checksum, md5_hex(b"three"));
    assert_eq!(
        b.get_file(&d, "a.md").await.unwrap().unwrap().as_ref(),
        b"three"
    );
}

/// put_files stores a batch in one go, in input order; the last of duplicate paths wins.
pub async fn batch_upload(h: &dyn Harness) {
    let backend = fresh(h, "batch_upload").await;
    let b = &*backend;
    let d = new_kb(b, "batch").await;
    let mut uploads: Vec<FileUpload> = (0..50)
        .map(|i| FileUpload::new(format!("batch/{i:02}.txt"), format!("body {i}")))
        .collect();
    uploads.push(FileUpload::new("batch/00.txt", "replaced"));
    let out = b.put_files(&d, uploads).await.unwrap();
    assert_eq!(out.len(), 51);
    assert_eq!(out[3].path, "batch/03.txt");
    assert_eq!(b.list_files(&d, None).await.unwrap().len(), 50);
    assert_eq!(
        b.get_file(&d, "batch/00.txt")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        b"replaced"
    );
    assert_eq!(b.get_info(&d).await.unwrap().unwrap().file_count, 50);
    assert!(b.put_files(&d, Vec::new()).await.unwrap().is_empty());
    // A conflicting batch writes nothing.
    let err = b
        .put_files(
            &d,
            vec![
                FileUpload::new("ok.md", "x"),
                FileUpload::new("batch/00.txt/x", "y"),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KnowledgeError::PathConflict { .. }), "{err}");
    assert!(!b.file_exists(&d, "ok.md").await.unwrap());
}
