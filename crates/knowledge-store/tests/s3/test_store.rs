//! The in-memory object store the S3 tests put under a backend: it counts requests and bytes
//! per class of object, and fails chosen writes while a switch is on — the way a process
//! killed at that moment, or another writer that always just changed the index, leaves
//! things.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// What kind of object a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Class {
    /// A knowledge base's `_metadata.json` (not a tenant's).
    Base,
    /// A journal record.
    Record,
    Other,
}

pub(super) fn class(location: &Path) -> Class {
    let key = location.as_ref();
    if key.ends_with("/_metadata.json") && !key.contains("/_scoped/") {
        Class::Base
    } else if key.contains("/_dynreg/journal/") {
        Class::Record
    } else {
        Class::Other
    }
}

/// Requests and bytes of one class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub puts: u64,
    pub put_bytes: u64,
    pub gets: u64,
    pub get_bytes: u64,
}

/// See the module docs. Switches: `fail_index` (writes of `_metadata.json` and journal
/// records), `fail_content` (writes of content objects named `b.md`), `fail_delete` (deletes
/// of content objects), `refuse_base_updates` (compare-and-swap updates of `_metadata.json`
/// answer `Precondition`); `base_read_delay_ms` delays every read of `_metadata.json`, like a
/// distant server.
#[derive(Debug, Default)]
pub(super) struct TestStore {
    inner: InMemory,
    tally: Mutex<HashMap<Class, Tally>>,
    pub fail_index: AtomicBool,
    pub fail_content: AtomicBool,
    pub fail_delete: Arc<AtomicBool>,
    pub refuse_base_updates: AtomicBool,
    pub base_read_delay_ms: AtomicU64,
}

impl TestStore {
    /// What was counted for `c` so far.
    pub fn of(&self, c: Class) -> Tally {
        self.tally
            .lock()
            .unwrap()
            .get(&c)
            .copied()
            .unwrap_or_default()
    }

    fn add(&self, location: &Path, f: impl FnOnce(&mut Tally)) {
        f(self
            .tally
            .lock()
            .unwrap()
            .entry(class(location))
            .or_default());
    }

    fn crashes(&self, location: &Path) -> bool {
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

impl fmt::Display for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.crashes(location) {
            return Err(crashed(location));
        }
        if self.refuse_base_updates.load(Ordering::SeqCst)
            && class(location) == Class::Base
            && matches!(opts.mode, PutMode::Update(_))
        {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: "refused by the test".into(),
            });
        }
        let n = payload.content_length() as u64;
        self.add(location, |t| {
            t.puts += 1;
            t.put_bytes += n;
        });
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
        let delay = self.base_read_delay_ms.load(Ordering::SeqCst);
        if delay > 0 && class(location) == Class::Base {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let head = options.head;
        let got = self.inner.get_opts(location, options).await;
        // A HEAD transfers no body.
        let n = match &got {
            Ok(g) if !head => g.range.end - g.range.start,
            _ => 0,
        };
        self.add(location, |t| {
            t.gets += 1;
            t.get_bytes += n;
        });
        got
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

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
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
