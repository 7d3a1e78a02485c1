//! The registry conformance suite: one contract, run by every backend. The cases port the
//! upstream tests of the original and add revisions, change feeds, conditional
//! writes, hostile ids and concurrency across tasks and across instances.
//!
//! The shape is the same in the three suites of dynreg (registry, event bus, knowledge store):
//! a backend's test file implements [`Harness`], which opens the backend under test
//! ([`Harness::open`]) and declares what it supports ([`Harness::capabilities`], a
//! [`Capabilities`] of flags and parameters with a `Default`), and expands
//! [`registry_conformance_tests!`](crate::registry_conformance_tests) with an
//! `Option<impl Harness>`, which generates one `#[tokio::test]` per case of this module. A case
//! that needs a capability names it in the macro's case list (`case: [capability]`); on a
//! harness that does not declare it the test prints `skipped: <case> (<capability> not
//! supported by this backend)` and passes. A `None` harness (a server that is not configured)
//! skips every case after [`skipped`] printed why. The registry's only capability is a
//! parameter, the touch resolution, so every case runs on every backend.

mod basic;
mod concurrency;
mod listing;
mod revisions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::RegistryBackend;

pub use basic::*;
pub use concurrency::*;
pub use listing::*;
pub use revisions::*;

/// What a backend supports, as the cases that depend on it need to know (OpenDAL's behaviour
/// tests select cases the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's touch resolution: `get` advances `last_accessed_at` only when the stored
    /// value is at least this old.
    pub touch_resolution: Duration,
}

impl Default for Capabilities {
    /// A touch resolution of one second (the backends' default).
    fn default() -> Self {
        Self {
            touch_resolution: Duration::from_secs(1),
        }
    }
}

/// How the suite opens backends.
#[async_trait]
pub trait Harness: Send + Sync {
    /// An initialized backend on the storage named `store` (a name of `[a-z0-9_]`, at most 48
    /// characters). Two calls with the same name give two independent instances (their own
    /// connections and handles) on the same storage; a new name gives a new, empty storage.
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend>;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;
}

/// A storage name unique to this process run: `<case>_<pid>_<n>`.
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

/// Opens a fresh storage for `case`.
pub async fn fresh(h: &dyn Harness, case: &str) -> Arc<dyn RegistryBackend> {
    h.open(&unique_store(case)).await
}

/// Prints the skip line for a backend whose server is not configured and returns `None`.
#[allow(clippy::print_stdout)] // the skip line is meant for the test output
pub fn skipped<T>(backend: &str, var: &str) -> Option<T> {
    println!("skipped: {backend} registry conformance tests ({var} unset)");
    None
}

/// Prints the skip line of a case whose capability the harness does not declare (called by
/// [`registry_conformance_tests!`](crate::registry_conformance_tests)).
#[doc(hidden)]
#[allow(clippy::print_stdout)] // the skip line is meant for the test output
pub fn unsupported(case: &str, capability: &str) {
    println!("skipped: {case} ({capability} not supported by this backend)");
}

/// Generates one `#[tokio::test]` per conformance case.
///
/// `$harness` is an expression of type `Option<impl Harness>`, evaluated once per test; `None`
/// skips every case (the harness constructor prints why, see [`skipped`]). The `@cases` form
/// takes an explicit case list in which a case may name the capabilities it needs,
/// `case: [capability, …]`; the test then prints a skip line and passes when the harness's
/// [`Capabilities`] lack one (every capability named must be a `bool` field).
#[macro_export]
macro_rules! registry_conformance_tests {
    ($harness:expr) => {
        $crate::registry_conformance_tests!(@cases $harness;
            register_new, register_update_keeps_created_at, register_with_status,
            get_existing_and_missing, get_touches_and_peek_does_not, configs_are_served_only_when_active,
            exists_means_present_and_active, unregister_is_a_hard_delete, deactivate_is_a_soft_delete,
            list_and_count, clear_removes_everything, metadata_is_stored_copied_and_replaced,
            filter_metadata_semantics, metadata_filters_of_every_json_type, sort_limit_offset, reactivate_by_registering,
            special_character_ids_round_trip, hostile_ids_are_rejected_and_store_nothing,
            config_must_be_an_object, timestamps_are_utc_and_wire_round_trips,
            revisions_are_monotonic_and_skip_no_ops, changes_since_reports_upserts_and_tombstones,
            changes_since_a_future_cursor_is_expired, conditional_writes_conflict, conditional_unregister, extreme_cursors_and_limits,
            stored_values_are_immutable, close_keeps_data,
            concurrent_registers_all_land, concurrent_read_write, no_lost_update_under_contention,
            touch_never_reverts_a_register, two_instances_share_storage_and_revisions,
            unusual_text_round_trips_and_re_registers_as_a_no_op, numbers_and_key_order_survive_storage,
            writes_report_what_they_did);
    };
    (@cases $harness:expr; $($case:ident $(: [$($capability:ident),* $(,)?])?),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

pub(crate) fn cfg(n: i64) -> serde_json::Value {
    serde_json::json!({"llm": {"provider": "anthropic", "model": "claude-3-sonnet"}, "n": n})
}
