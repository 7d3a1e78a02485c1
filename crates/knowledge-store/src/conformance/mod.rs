//! The conformance suite: one async function per behaviour, run by every backend's tests
//! through [`knowledge_conformance_tests!`](crate::knowledge_conformance_tests). Ported from
//! the upstream cases of the original plus the guarantees dynreg adds (no lost writes,
//! identical path rules, streaming, batch uploads, state-write events).
//!
//! The shape is the same in the three suites of dynreg (registry, event bus, knowledge store):
//! a backend's test file implements [`Harness`], which opens the backend under test
//! ([`Harness::open`]) and declares what it supports ([`Harness::capabilities`], a
//! [`Capabilities`] of flags with a `Default`), and expands
//! [`knowledge_conformance_tests!`](crate::knowledge_conformance_tests) with an
//! `Option<impl Harness>`, which generates one `#[tokio::test]` per case of this module. A case
//! that needs a capability names it in the macro's case list (`case: [capability]`); on a
//! harness that does not declare it the test prints `skipped: <case> (<capability> not
//! supported by this backend)` and passes. A `None` harness (a server that is not configured)
//! skips every case after its constructor printed why. The cases that count snapshot objects
//! or tenant snapshot lineages need `snapshot_objects`; the harness also gives the suite a
//! glob matcher ([`Harness::glob_matches`]), so that the suite does not depend on an event bus.
//!
//! The functions panic on a failed expectation, like any test. The cases are grouped by topic,
//! one module each, and every case is re-exported here:
//!
//! | module | cases of |
//! |---|---|
//! | `kbs` | knowledge bases: create, read, list, delete |
//! | `files` | files: put, get, list, delete, replace, batches |
//! | `streaming` | chunked reads, streamed uploads, files stored as uploaded |
//! | `state` | single-tenant status, state versions, conditional writes, state-write events |
//! | `changes` | versions: the knowledge-base identity and diffs against retained versions |
//! | `refusals` | hostile paths and domain ids, file/folder conflicts, error messages |
//! | `concurrency` | concurrent puts and two instances on one storage |
//! | `tenancy`, `tenant_writes` | tenant-scoped state |
//! | `keys` | the key layout |
//!
//! This module keeps the harness, the helpers the cases share and the macro. The cases that
//! need an event bus (`subscribe_to_changes`, state writes published with `also_publish_to`)
//! live with the bus bridge in `dynreg-hot-reload`, whose `knowledge_bridge` tests run them
//! against every backend.

mod backends;
mod changes;
mod concurrency;
mod files;
mod kbs;
mod keys;
mod refusals;
mod state;
mod streaming;
mod tenancy;
mod tenant_writes;

pub use backends::*;
pub use changes::*;
pub use concurrency::*;
pub use files::*;
pub use kbs::*;
pub use keys::*;
pub use refusals::*;
pub use state::*;
pub use streaming::*;
pub use tenancy::*;
pub use tenant_writes::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    KnowledgeBackend, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions, StateWrite,
};

/// What a backend supports, as the cases that depend on it need to know (OpenDAL's behaviour
/// tests select cases the same way). The default declares nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Every version a knowledge base's identity takes is retained as a snapshot object under
    /// `_snapshots/` (reported as a `Snapshot` state write), in one lineage per tenant; false
    /// for the S3 backend in `s3_versioning` mode, whose versions are the bucket's object
    /// versions in one index shared by every tenant.
    pub snapshot_objects: bool,
}

/// How the suite opens backends.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A backend on the storage named `store` (a name of `[a-z0-9_]`, at most 48 characters).
    /// Two calls with the same name give two independent instances (another "process") on the
    /// same storage; a new name gives a new, empty storage. The harness keeps whatever the
    /// storage needs (a temp dir, …) alive as long as it lives.
    async fn open(&self, store: &str) -> Arc<dyn KnowledgeBackend>;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Whether a watch pattern of [`KnowledgeBackendExt::key_pattern`] (an `fnmatch` glob in
    /// which `*` also matches `/`) matches a key, as the event bus that would watch the keys
    /// decides (the suite does not depend on a bus). Test crates answer
    /// `dynreg_event_bus::Glob::new(pattern).unwrap().matches(topic)`.
    fn glob_matches(&self, pattern: &str, topic: &str) -> bool;
}

/// The S3 test server of `DYNREG_TEST_S3_ENDPOINT` (bucket `DYNREG_TEST_S3_BUCKET`, default
/// `dynreg-test`; static test keys) under a random prefix of its own, or `None` after printing
/// the skip line when the variable is unset. Every S3 suite (this crate's and the bus bridge's)
/// connects through it.
#[cfg(feature = "s3")]
#[allow(clippy::print_stdout)] // the skip line is meant for the test output
pub fn s3_server_config() -> Option<crate::S3Config> {
    let Ok(endpoint) = std::env::var("DYNREG_TEST_S3_ENDPOINT") else {
        println!("skipped: s3 tests (DYNREG_TEST_S3_ENDPOINT unset)");
        return None;
    };
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    let mut cfg = crate::S3Config::new(bucket);
    cfg.endpoint_url = Some(endpoint);
    cfg.region = Some("us-east-1".into());
    cfg.aws_access_key_id = Some("test".into());
    cfg.aws_secret_access_key = Some("test".into());
    cfg.prefix = format!("t-{:016x}/knowledge", rand::random::<u64>());
    Some(cfg)
}

/// A storage name unique to this process run: `<case>_<pid>_<n>_<nanos>`.
pub fn unique_store(case: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut case: String = case.chars().take(24).collect();
    case.retain(|c| c.is_ascii_alphanumeric() || c == '_');
    format!("{case}_{}_{n}_{nanos:x}", std::process::id())
}

/// A backend on a fresh storage for `case`.
pub async fn fresh(h: &dyn Harness, case: &str) -> Arc<dyn KnowledgeBackend> {
    h.open(&unique_store(case)).await
}

/// Two independent instances on one fresh storage for `case`.
pub async fn pair(
    h: &dyn Harness,
    case: &str,
) -> (Arc<dyn KnowledgeBackend>, Arc<dyn KnowledgeBackend>) {
    let store = unique_store(case);
    let a = h.open(&store).await;
    let b = h.open(&store).await;
    (a, b)
}

/// Prints the skip line of a case whose capability the harness does not declare (called by
/// [`knowledge_conformance_tests!`](crate::knowledge_conformance_tests)).
#[doc(hidden)]
#[allow(clippy::print_stdout)] // the skip line is meant for the test output
pub fn unsupported(case: &str, capability: &str) {
    println!("skipped: {case} ({capability} not supported by this backend)");
}

fn unique(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

fn meta(v: serde_json::Value) -> Metadata {
    match v {
        serde_json::Value::Object(m) => m,
        _ => Metadata::new(),
    }
}

async fn put(b: &dyn KnowledgeBackend, d: &str, p: &str, content: &str) {
    b.put_file(d, p, Bytes::from(content.to_owned()), PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put_file({d}, {p}): {e}"));
}

/// Records every state write the backend reports.
fn recorder(b: &dyn KnowledgeBackend) -> Arc<Mutex<Vec<StateWrite>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.state_events()
        .on_state_write(move |w| sink.lock().unwrap().push(w.clone()));
    seen
}

/// The recorded state writes of domain `d`.
fn writes_of(seen: &Mutex<Vec<StateWrite>>, d: &str) -> Vec<StateWrite> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|w| w.domain_id == d)
        .cloned()
        .collect()
}

/// The domain ids `list_kbs` reports, in its order.
async fn kb_ids(b: &dyn KnowledgeBackend) -> Vec<String> {
    b.list_kbs()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.domain_id)
        .collect()
}

/// Checks that `err` is the `Conflict` of a status write on `d` expecting `expected` and
/// finding `actual`; returns the key it names.
fn expect_conflict(err: &KnowledgeError, d: &str, expected: &str, actual: &str) -> String {
    match err {
        KnowledgeError::Conflict {
            domain_id,
            key,
            expected_version,
            actual_version,
        } => {
            assert_eq!(domain_id, d);
            assert_eq!(expected_version, expected);
            assert_eq!(actual_version.as_deref(), Some(actual));
            key.clone()
        }
        other => panic!("expected Conflict, got {other}"),
    }
}

async fn new_kb(b: &dyn KnowledgeBackend, tag: &str) -> String {
    let d = unique(tag);
    b.create_kb(&d, Metadata::new()).await.expect("create_kb");
    d
}

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// `$harness` is an expression of type `Option<impl Harness>`, evaluated once per test; `None`
/// skips every case (the harness constructor prints why, e.g. when a server's environment
/// variable is unset). The `@cases` form takes an explicit case list in which a case may name
/// the capabilities it needs, `case: [capability, …]`; the test then prints a skip line and
/// passes when the harness's [`Capabilities`] lack one.
#[macro_export]
macro_rules! knowledge_conformance_tests {
    ($harness:expr) => {
        $crate::knowledge_conformance_tests!(@cases $harness;
            create_kb_defaults, create_kb_duplicate_fails, missing_kb_reads_are_empty,
            list_kbs_sorted, delete_kb_removes_everything, put_and_get_file,
            put_file_without_kb_fails, list_files_prefix_sorted, file_exists_follows_writes,
            delete_file_updates_counts, get_file_exact_bytes_any_size, overwrite_replaces_entry, stream_file_chunks,
            put_stream_round_trips, set_ingestion_status_writes_error_and_generation,
            conditional_status_writes, conditional_writes_race_one_winner,
            conditional_writes_across_instances,
            checksum_is_the_original_identity, unchanged_then_changed,
            empty_baseline_round_trips, diff_disjoint_and_correct, unretained_version,
            no_spurious_reingest_then_detects, hostile_paths_refused, hostile_domain_ids_refused,
            file_folder_conflict_refused, concurrent_puts_lose_nothing, concurrent_conflict_fails_alone,
            two_instances_lose_nothing, sibling_sees_delete_and_recreate, batch_upload, gz_stored_as_uploaded,
            state_write_events: [snapshot_objects],
            errors_name_domain_and_path,
            tenant_none_equals_single_tenant, tenant_status_isolated,
            tenant_state_requires_existing_kb, tenant_content_is_shared,
            tenant_view_default_and_real_counts, tenant_diff_falls_back_to_shared_lineage,
            tenant_snapshot_lineage_isolated: [snapshot_objects],
            tenant_state_keys_byte_identity: [snapshot_objects],
            tenant_conditional_writes, tenant_conditional_writes_race_one_winner,
            delete_kb_removes_tenant_state, tenant_namespace_disjoint,
            invalid_tenant_contexts_refused, classify_key_cases,
            key_patterns_match_written_keys: [snapshot_objects],
            key_pattern_refusals);
    };
    (@cases $harness:expr; $($case:ident $(: [$($capability:ident),* $(,)?])?),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(h) = $harness else { return };
                let _capabilities = $crate::conformance::Harness::capabilities(&h);
                $($(
                    if !_capabilities.$capability {
                        $crate::conformance::unsupported(stringify!($case), stringify!($capability));
                        return;
                    }
                )*)?
                $crate::conformance::$case(&h).await;
            }
        )*
    };
}
