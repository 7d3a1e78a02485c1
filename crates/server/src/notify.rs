//! [`ChangeNotifier`]: wakes the server's waiting watches. Invariant: a watch subscribes before
//! it reads the change feed, so a write announced after the read always wakes it; a write that
//! is never announced (another process, no bus wired) is still seen within the server's
//! `watch_poll_interval`.

use std::sync::{Arc, Weak};

use dynreg_registry_core::{ChangeListener, ChangeNotice};
use tokio::sync::watch;

/// A handle that tells the server's watches the registry changed. The server announces its own
/// writes; give [`ChangeNotifier::listener`] to the registry decorator that other writers in
/// this process go through (the hot-reload crate's `EventedRegistry::add_listener`) so that
/// their writes wake watches at once too. Writes made by other processes are seen by the
/// watch's poll of the change feed.
#[derive(Clone, Debug)]
pub struct ChangeNotifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    changes: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl ChangeNotifier {
    pub(crate) fn new() -> Self {
        ChangeNotifier {
            inner: Arc::new(Inner {
                changes: watch::Sender::new(0),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// Wakes every waiting watch (they re-read the change feed).
    pub fn notify(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This notifier as a change listener (held weakly by whoever it is given to).
    pub fn listener(&self) -> Weak<dyn ChangeListener> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        weak
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Ends every waiting watch now (each answers with what it has), as a graceful shutdown
    /// begins.
    pub(crate) fn shut_down(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl ChangeListener for Inner {
    fn on_change(&self, _notice: &ChangeNotice) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
