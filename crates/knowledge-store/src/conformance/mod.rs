//! The conformance suite: one async function per behaviour, run by every backend's tests
//! through [`knowledge_conformance_tests!`](crate::knowledge_conformance_tests). Ported from
//! the upstream cases of reference-spec §6.9 plus the guarantees dynreg adds (no lost writes,
//! identical path rules, streaming, batch uploads, state-write events).
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
//! This module keeps the harness ([`Store`]), the helpers the cases share and the macro. The
//! cases that need an event bus (`subscribe_to_changes`, state writes published with
//! `also_publish_to`) live with the bus bridge in `dynreg-hot-reload`, whose
//! `knowledge_bridge` tests run them against every backend; this suite takes only a glob
//! matcher from its harness ([`Store::glob`]).

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

use std::any::Any;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::{
    KnowledgeBackend, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions, StateWrite,
};

/// A store under test: a backend, a second instance on the same storage (another "process"),
/// and whatever must stay alive while they are used (a temp dir, …).
pub struct Store {
    /// The backend under test, on empty storage.
    pub backend: Arc<dyn KnowledgeBackend>,
    /// A second, independent instance on the same storage.
    pub sibling: Arc<dyn KnowledgeBackend>,
    /// Kept alive for the duration of the test.
    pub guard: Box<dyn Any + Send + Sync>,
    /// Whether a watch pattern of [`KnowledgeBackendExt::key_pattern`] matches a key, as the
    /// event bus that would watch the keys decides (the suite does not depend on a bus). Test
    /// crates give `|p, t| dynreg_event_bus::Glob::new(p).unwrap().matches(t)`.
    pub glob: GlobMatcher,
}

/// A glob matcher: whether `pattern` (an `fnmatch` glob in which `*` also matches `/`) matches
/// `topic`.
pub type GlobMatcher = fn(pattern: &str, topic: &str) -> bool;

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

/// Records every state write the store's backend reports.
fn recorder(s: &Store) -> Arc<Mutex<Vec<StateWrite>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    s.backend
        .state_events()
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
/// `$make` is an async function returning `Option<Store>` (`None` skips, e.g. when a server's
/// environment variable is unset).
#[macro_export]
macro_rules! knowledge_conformance_tests {
    ($make:path) => {
        $crate::knowledge_conformance_tests!(@cases $make;
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
            two_instances_lose_nothing, sibling_sees_delete_and_recreate, batch_upload, gz_stored_as_uploaded, state_write_events,
            errors_name_domain_and_path,
            tenant_none_equals_single_tenant, tenant_status_isolated,
            tenant_state_requires_existing_kb, tenant_content_is_shared,
            tenant_view_default_and_real_counts, tenant_diff_falls_back_to_shared_lineage,
            tenant_snapshot_lineage_isolated, tenant_state_keys_byte_identity,
            tenant_conditional_writes, tenant_conditional_writes_race_one_winner,
            delete_kb_removes_tenant_state, tenant_namespace_disjoint,
            invalid_tenant_contexts_refused, classify_key_cases, key_patterns_match_written_keys,
            key_pattern_refusals);
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $make().await {
                    $crate::conformance::$case(store).await;
                }
            }
        )*
    };
}
