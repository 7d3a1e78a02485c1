//! `RegistryPoller`: polls the registry's change feed from a cursor — O(changes) per poll, a full
//! relist only when the cursor expired, and no change lost between polls.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use dynreg_event_bus::Backoff;
use dynreg_registry_core::{Change, ChangeFeed, ListQuery, RegistryBackend};
use tokio::task::JoinHandle;

use crate::error::HotReloadError;

/// The longest wait between polls after repeated errors (unless the interval is longer).
pub const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// What one poll found.
#[derive(Clone, Debug, PartialEq)]
pub struct PollBatch {
    /// The changes after the cursor, in revision order (latest state per id). After a relist,
    /// an upsert for every registration.
    pub changes: Vec<Change>,
    /// The cursor had expired and everything was relisted: ids absent from `changes` are gone.
    pub relisted: bool,
    /// The cursor the poll started from.
    pub from: u64,
    /// The new cursor (the registry revision the feed was read at).
    pub revision: u64,
}

/// A callback receiving every batch (in order, one at a time).
pub type ChangeCallback = Arc<dyn Fn(&PollBatch) + Send + Sync>;

/// Counters of a poller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// Polls that succeeded.
    pub polls: u64,
    /// Polls that failed.
    pub errors: u64,
    /// Changes reported.
    pub changes: u64,
    /// Full relists after an expired cursor.
    pub relists: u64,
}

/// Polls `changes_since(cursor)` every interval and hands each batch to the callbacks.
///
/// The cursor only moves to the revision the feed itself reports, so a change committed while a
/// poll runs is reported by the next poll. Polls are serialised (a manual `poll_once` and the
/// background loop never overlap). Errors are logged and back off exponentially (with jitter),
/// up to [`MAX_ERROR_BACKOFF`].
#[derive(Clone)]
pub struct RegistryPoller {
    inner: Arc<PollerInner>,
}

struct PollerInner {
    backend: Arc<dyn RegistryBackend>,
    interval: Duration,
    cursor: tokio::sync::Mutex<Option<u64>>,
    callbacks: RwLock<Vec<(u64, ChangeCallback)>>,
    next_callback: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
    polls: AtomicU64,
    errors: AtomicU64,
    changes: AtomicU64,
    relists: AtomicU64,
}

impl std::fmt::Debug for RegistryPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryPoller")
            .field("backend", &self.inner.backend.kind())
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl RegistryPoller {
    /// A poller over `backend` polling every `interval` (zero is rejected).
    pub fn new(
        backend: Arc<dyn RegistryBackend>,
        interval: Duration,
    ) -> Result<Self, HotReloadError> {
        if interval.is_zero() {
            return Err(HotReloadError::InvalidPollInterval {
                interval: format!("{interval:?}"),
            });
        }
        Ok(RegistryPoller {
            inner: Arc::new(PollerInner {
                backend,
                interval,
                cursor: tokio::sync::Mutex::new(None),
                callbacks: RwLock::new(Vec::new()),
                next_callback: AtomicU64::new(1),
                task: Mutex::new(None),
                polls: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                changes: AtomicU64::new(0),
                relists: AtomicU64::new(0),
            }),
        })
    }

    /// A poller with the interval in seconds, as the original takes it; ≤ 0, NaN and infinity
    /// are rejected.
    pub fn from_secs_f64(
        backend: Arc<dyn RegistryBackend>,
        seconds: f64,
    ) -> Result<Self, HotReloadError> {
        match Duration::try_from_secs_f64(seconds) {
            Ok(d) if seconds > 0.0 && !d.is_zero() => Self::new(backend, d),
            _ => Err(HotReloadError::InvalidPollInterval {
                interval: format!("{seconds} s"),
            }),
        }
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Sets the cursor: the next poll reports changes after `revision`.
    pub async fn set_cursor(&self, revision: u64) {
        *self.inner.cursor.lock().await = Some(revision);
    }

    /// The cursor (`None` before the first poll or `set_cursor`).
    pub async fn cursor(&self) -> Option<u64> {
        *self.inner.cursor.lock().await
    }

    /// Adds a callback; returns its id for [`RegistryPoller::remove_change_callback`].
    pub fn add_change_callback(
        &self,
        callback: impl Fn(&PollBatch) + Send + Sync + 'static,
    ) -> u64 {
        let id = self.inner.next_callback.fetch_add(1, Ordering::Relaxed);
        self.inner
            .callbacks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Arc::new(callback)));
        id
    }

    /// Removes a callback; `false` if the id is unknown.
    pub fn remove_change_callback(&self, id: u64) -> bool {
        let mut cbs = self
            .inner
            .callbacks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let before = cbs.len();
        cbs.retain(|(i, _)| *i != id);
        cbs.len() != before
    }

    /// Polls once: the changes after the cursor (the first poll without a cursor only reads the
    /// current revision). Callbacks run before this returns; the cursor then advances.
    pub async fn poll_once(&self) -> Result<PollBatch, HotReloadError> {
        let result = self.poll_inner().await;
        match &result {
            Ok(batch) => {
                self.inner.polls.fetch_add(1, Ordering::Relaxed);
                // How far behind the registry this poll found the poller, in revisions.
                metrics::gauge!("dynreg_poller_lag_revisions")
                    .set(batch.revision.saturating_sub(batch.from) as f64);
                metrics::counter!("dynreg_poller_polls_total", "outcome" => "ok").increment(1);
                if batch.relisted {
                    metrics::counter!("dynreg_poller_relists_total").increment(1);
                }
            }
            Err(_) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dynreg_poller_polls_total", "outcome" => "error").increment(1);
            }
        };
        result
    }

    async fn poll_inner(&self) -> Result<PollBatch, HotReloadError> {
        let inner = &self.inner;
        let mut cursor = inner.cursor.lock().await;
        let Some(from) = *cursor else {
            let revision = inner
                .backend
                .current_revision()
                .await
                .map_err(|e| HotReloadError::registry("current_revision", e))?;
            *cursor = Some(revision);
            return Ok(PollBatch {
                changes: Vec::new(),
                relisted: false,
                from: revision,
                revision,
            });
        };
        let feed = inner
            .backend
            .changes_since(from)
            .await
            .map_err(|e| HotReloadError::registry("changes_since", e))?;
        let batch = match feed {
            ChangeFeed::Changes {
                changes,
                current_revision,
            } => PollBatch {
                changes,
                relisted: false,
                from,
                revision: current_revision,
            },
            ChangeFeed::Expired {
                current_revision, ..
            } => {
                tracing::warn!(
                    cursor = from,
                    current_revision,
                    "registry change feed expired for the poller's cursor; relisting"
                );
                let all = inner
                    .backend
                    .list(&ListQuery::all())
                    .await
                    .map_err(|e| HotReloadError::registry("list", e))?;
                inner.relists.fetch_add(1, Ordering::Relaxed);
                PollBatch {
                    changes: all
                        .into_iter()
                        .map(|r| Change::Upsert(Arc::unwrap_or_clone(r)))
                        .collect(),
                    relisted: true,
                    from,
                    revision: current_revision,
                }
            }
        };
        inner
            .changes
            .fetch_add(batch.changes.len() as u64, Ordering::Relaxed);
        if !batch.changes.is_empty() || batch.relisted {
            let callbacks: Vec<ChangeCallback> = inner
                .callbacks
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(_, c)| Arc::clone(c))
                .collect();
            for cb in callbacks {
                if std::panic::catch_unwind(AssertUnwindSafe(|| cb(&batch))).is_err() {
                    tracing::error!("a registry poller callback panicked; polling continues");
                }
            }
        }
        *cursor = Some(batch.revision.max(from));
        Ok(batch)
    }

    /// Starts the background loop (`false` if it is already running).
    pub fn start(&self) -> bool {
        let mut task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            tracing::warn!("registry poller already running");
            return false;
        }
        let poller = self.clone();
        *task = Some(tokio::spawn(async move { poller.run().await }));
        true
    }

    async fn run(self) {
        let interval = self.inner.interval;
        let mut backoff = Backoff::new(interval, MAX_ERROR_BACKOFF.max(interval));
        let mut delay = interval;
        loop {
            tokio::time::sleep(delay).await;
            match self.poll_once().await {
                Ok(_) => {
                    backoff.reset();
                    delay = interval;
                }
                Err(error) => {
                    delay = backoff.next_delay().max(interval);
                    tracing::error!(%error, retry_in = ?delay, "registry poll failed");
                }
            }
        }
    }

    /// Stops the background loop.
    pub fn stop(&self) {
        if let Some(t) = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }

    /// Whether the background loop runs.
    pub fn is_running(&self) -> bool {
        self.inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// The counters.
    pub fn stats(&self) -> PollerStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PollerStats {
            polls: r(&self.inner.polls),
            errors: r(&self.inner.errors),
            changes: r(&self.inner.changes),
            relists: r(&self.inner.relists),
        }
    }
}
