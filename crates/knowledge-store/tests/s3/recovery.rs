//! A write that dies between content and index (S3): the object store below fails the index
//! write the way a process killed at that moment leaves things — content replaced, index not —
//! and a fresh backend instance's `recover` makes the index match the content again.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dynreg_knowledge_store::identity::md5_hex;
use dynreg_knowledge_store::{
    FileUpload, KnowledgeBackend, Metadata, PutOptions, S3KnowledgeBackend, bytes_stream,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions as ObjPutOptions, PutPayload, PutResult,
};

/// An in-memory store whose index writes (`_metadata.json` and journal records), writes of content objects named
/// `b.md`, or deletes of content objects fail while the matching switch is on.
#[derive(Debug, Default)]
struct Crashing {
    inner: InMemory,
    fail_index: AtomicBool,
    fail_content: AtomicBool,
    fail_delete: Arc<AtomicBool>,
}

impl fmt::Display for Crashing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crashing({})", self.inner)
    }
}

impl Crashing {
    fn refuses(&self, location: &Path) -> bool {
        let key = location.as_ref();
        (self.fail_index.load(Ordering::SeqCst)
            && (key.ends_with("/_metadata.json") || key.contains("/_dynreg/journal/")))
            || (self.fail_content.load(Ordering::SeqCst)
                && key.contains("/content/")
                && key.ends_with("b.md"))
    }
}

fn crashed(location: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "crashing",
        source: format!("the process died before writing {location}").into(),
    }
}

#[async_trait]
impl ObjectStore for Crashing {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: ObjPutOptions,
    ) -> object_store::Result<PutResult> {
        if self.refuses(location) {
            return Err(crashed(location));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let fail = self.fail_delete.clone();
        let checked = locations
            .map(move |l| match l {
                Ok(p) if fail.load(Ordering::SeqCst) && p.as_ref().contains("/content/") => {
                    Err(crashed(&p))
                }
                other => other,
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A backend on `store` whose recovery removes the intents it repairs at once (the default
/// keeps intents younger than `INTENT_GRACE`, which may belong to a writer still running).
fn backend(store: &Arc<Crashing>) -> S3KnowledgeBackend {
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
    let store = Arc::new(Crashing::default());
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
    let store = Arc::new(Crashing::default());
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
