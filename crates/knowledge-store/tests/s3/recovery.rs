//! A write that dies between content and index (S3): the object store below fails the index
//! write the way a process killed at that moment leaves things — content replaced, index not —
//! and a fresh backend instance's `recover` makes the index match the content again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dynreg_knowledge_store::identity::md5_hex;
use dynreg_knowledge_store::{
    FileUpload, KnowledgeBackend, KnowledgeBackendExt, Metadata, PutOptions, S3KnowledgeBackend,
    bytes_stream,
};

use super::test_store::TestStore;

/// A backend on `store` whose recovery removes the intents it repairs at once (the default
/// keeps intents younger than `INTENT_GRACE`, which may belong to a writer still running).
fn backend(store: &Arc<TestStore>) -> S3KnowledgeBackend {
    S3KnowledgeBackend::with_store(store.clone(), "mem", "knowledge/", 64)
        .with_intent_grace(Duration::ZERO)
}

async fn put(b: &S3KnowledgeBackend, path: &str, content: &'static [u8]) -> anyhow::Result<()> {
    b.put_file(
        "kb",
        path,
        Bytes::from_static(content),
        PutOptions::default(),
    )
    .await?;
    Ok(())
}

/// The index entry's checksum of `path`, `None` if it has none.
async fn indexed(b: &S3KnowledgeBackend, path: &str) -> Option<String> {
    b.get_file_info("kb", path)
        .await
        .unwrap()
        .map(|f| f.checksum)
}

#[tokio::test]
async fn an_index_write_that_died_is_repaired_on_recovery() -> anyhow::Result<()> {
    let store = Arc::new(TestStore::default());
    let writer = backend(&store);
    writer.create_kb("kb", Metadata::new()).await?;
    put(&writer, "a.md", b"old a").await?;
    put(&writer, "gone.md", b"to be deleted").await?;
    let before = writer.get_checksum("kb").await?;

    store.fail_index.store(true, Ordering::SeqCst);
    // A replace, a new file, a streamed replace and a delete, each dying before its index
    // write: the content is what the caller sent, the index is not.
    assert!(put(&writer, "a.md", b"new a").await.is_err());
    assert!(put(&writer, "new.md", b"brand new").await.is_err());
    let streamed = writer
        .put_stream(
            "kb",
            "big.md",
            bytes_stream(Bytes::from_static(b"streamed "), 4),
            PutOptions::default(),
        )
        .await;
    assert!(streamed.is_err());
    assert!(writer.delete_file("kb", "gone.md").await.is_err());
    store.fail_index.store(false, Ordering::SeqCst);
    assert_eq!(indexed(&writer, "a.md").await, Some(md5_hex(b"old a")));
    assert_eq!(indexed(&writer, "new.md").await, None);
    assert_eq!(
        writer.get_file("kb", "a.md").await?.as_deref(),
        Some(&b"new a"[..])
    );

    // The next instance to open the bucket repairs the index from what is stored. With the
    // default grace it keeps the (young) intents, since their writers might still be running;
    // repairing them again is harmless.
    let cautious = S3KnowledgeBackend::with_store(store.clone(), "mem", "knowledge/", 64);
    assert_eq!(
        cautious.recover().await?,
        4,
        "one intent per unfinished write"
    );
    assert_eq!(indexed(&cautious, "a.md").await, Some(md5_hex(b"new a")));
    let repaired = cautious.get_checksum("kb").await?;
    assert_eq!(cautious.recover().await?, 4, "young intents are kept");
    assert_eq!(cautious.get_checksum("kb").await?, repaired);
    let reopened = backend(&store);
    assert_eq!(reopened.recover().await?, 4);
    assert_eq!(indexed(&reopened, "a.md").await, Some(md5_hex(b"new a")));
    assert_eq!(
        indexed(&reopened, "new.md").await,
        Some(md5_hex(b"brand new"))
    );
    assert_eq!(
        indexed(&reopened, "big.md").await,
        Some(md5_hex(b"streamed "))
    );
    let big = reopened
        .get_file_info("kb", "big.md")
        .await?
        .expect("indexed");
    assert_eq!(big.size_bytes, 9);
    assert_eq!(big.content_type, "text/markdown");
    // The delete never reached the index, so the file stays, consistently.
    assert_eq!(
        indexed(&reopened, "gone.md").await,
        Some(md5_hex(b"to be deleted"))
    );
    assert!(reopened.get_file("kb", "gone.md").await?.is_some());

    // Change detection sees the writes that landed.
    let changes = reopened.list_changes_since("kb", &before).await?;
    let added: Vec<&str> = changes.added.iter().map(String::as_str).collect();
    let modified: Vec<&str> = changes.modified.iter().map(String::as_str).collect();
    assert_eq!(added, ["big.md", "new.md"]);
    assert_eq!(modified, ["a.md"]);
    // A delete whose index commit landed but whose content delete did not: the file is gone
    // from the index but its bytes are still served, until recovery removes them.
    store.fail_delete.store(true, Ordering::SeqCst);
    assert!(reopened.delete_file("kb", "gone.md").await?);
    store.fail_delete.store(false, Ordering::SeqCst);
    assert_eq!(indexed(&reopened, "gone.md").await, None);
    assert!(reopened.get_file("kb", "gone.md").await?.is_some());
    assert_eq!(backend(&store).recover().await?, 1);
    assert!(reopened.get_file("kb", "gone.md").await?.is_none());
    // Repairing again finds nothing and changes nothing.
    let id = reopened.get_checksum("kb").await?;
    assert_eq!(reopened.recover().await?, 0);
    assert_eq!(reopened.get_checksum("kb").await?, id);
    Ok(())
}

#[tokio::test]
async fn a_batch_with_a_failed_upload_still_indexes_what_uploaded() -> anyhow::Result<()> {
    let store = Arc::new(TestStore::default());
    let b = backend(&store);
    b.create_kb("kb", Metadata::new()).await?;
    store.fail_content.store(true, Ordering::SeqCst);
    let uploads = ["a.md", "b.md", "c.md"].map(|p| FileUpload {
        path: p.to_owned(),
        content: Bytes::from(format!("content of {p}")),
        options: PutOptions::default(),
    });
    let err = b.put_files("kb", Vec::from(uploads)).await.unwrap_err();
    assert!(err.to_string().contains("b.md"), "{err}");
    store.fail_content.store(false, Ordering::SeqCst);
    // a.md and c.md replaced their objects, so the index has them; b.md has neither.
    for p in ["a.md", "c.md"] {
        assert_eq!(
            indexed(&b, p).await,
            Some(md5_hex(format!("content of {p}").as_bytes())),
            "{p}"
        );
    }
    assert_eq!(indexed(&b, "b.md").await, None);
    assert!(b.get_file("kb", "b.md").await?.is_none());
    assert_eq!(b.recover().await?, 0, "a finished batch leaves no intent");
    Ok(())
}
