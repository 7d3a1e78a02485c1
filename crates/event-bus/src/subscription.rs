//! `Subscription`, the bounded per-subscription queue behind it, and what it yields (`Delivery`).
//!
//! Dependencies point one way: the subscriber table (`crate::router`) builds subscriptions and
//! fills their queues; a subscription reaches back only through the [`Unsubscribe`] trait
//! defined here (held weakly, so a subscription never keeps a bus's table alive), so this module
//! does not depend on the router.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use crate::event::Event;

/// The default number of events a subscription buffers before it starts dropping (and signals
/// [`ResyncReason::Lagged`]).
pub const DEFAULT_CAPACITY: usize = 1024;

/// Why a subscriber must assume it missed events and re-read whatever state it caches.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncReason {
    /// The subscriber's queue was full; `missed` events for it were dropped at this point.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// The bus lost its server connection and re-established it; events published in between
    /// were not delivered (the transports are at-most-once).
    Reconnected,
}

/// One item taken from a [`Subscription`].
///
/// Events are shared, not copied: every subscription that receives one event holds the same
/// `Arc<Event>` (and the same `Arc<str>` topic), so fan-out costs two reference-count
/// increments per subscription. `Arc<Event>` derefs to [`Event`]; call `Arc::unwrap_or_clone`
/// for an owned copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An event published on `topic` (the bus topic, which routing used; `event.topic` is the
    /// event's own, independent topic).
    Event {
        /// The bus topic the event was published to.
        topic: Arc<str>,
        /// The event, shared with every other subscription that received it.
        event: Arc<Event>,
    },
    /// Events may have been missed here; re-read any cached state.
    Resync {
        /// Why.
        reason: ResyncReason,
    },
}

/// Whether a subscription matches one exact topic or a glob pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// `subscribe(topic)`.
    Exact,
    /// `subscribe_pattern(pattern)`.
    Pattern,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Delivery>,
    events: usize,
    closed: bool,
    /// The consumer found the queue empty and is (about to be) parked on `notify`: the next
    /// producer wakes it. While the consumer is busy, producers only queue — no wake-up per event.
    waiting: bool,
}

/// The bounded queue between a bus (producer) and one [`Subscription`] (consumer). At most
/// `capacity` events wait in it; the consumer takes everything queued in one step, so up to
/// another `capacity` events can be in the consumer's hands, not yet returned by `next`.
#[derive(Debug)]
pub(crate) struct SubQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    capacity: usize,
}

impl SubQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        SubQueue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an event; when the queue is full the event is dropped and a `Lagged` marker is
    /// queued (or the pending one counts one more). Never blocks; wakes the consumer only if it
    /// is parked.
    pub(crate) fn push_event(&self, topic: &Arc<str>, event: &Arc<Event>) {
        let wake = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if state.events >= self.capacity {
                match state.items.back_mut() {
                    Some(Delivery::Resync {
                        reason: ResyncReason::Lagged { missed },
                    }) => *missed += 1,
                    _ => state.items.push_back(Delivery::Resync {
                        reason: ResyncReason::Lagged { missed: 1 },
                    }),
                }
            } else {
                state.items.push_back(Delivery::Event {
                    topic: Arc::clone(topic),
                    event: Arc::clone(event),
                });
                state.events += 1;
            }
            std::mem::take(&mut state.waiting)
        };
        if wake {
            self.notify.notify_one();
        }
    }

    /// Queues a resync marker (not counted against the capacity; not repeated back to back).
    pub(crate) fn push_resync(&self, reason: ResyncReason) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if let Some(Delivery::Resync { reason: last }) = state.items.back()
                && *last == reason
            {
                return;
            }
            state.items.push_back(Delivery::Resync { reason });
            state.waiting = false;
        }
        self.notify.notify_one();
    }

    /// Ends the queue: already queued items are still handed out, then `None`.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.waiting = false;
        }
        self.notify.notify_one();
    }

    /// Moves every queued item into `into` (which is empty) in one step, so the consumer takes
    /// the lock once per batch rather than once per event. `Err(closed)` when nothing is queued;
    /// then, with `park`, the consumer is marked waiting so the next producer wakes it.
    fn take_all(&self, into: &mut VecDeque<Delivery>, park: bool) -> Result<(), bool> {
        let mut state = self.lock();
        if state.items.is_empty() {
            if park && !state.closed {
                state.waiting = true;
            }
            return Err(state.closed);
        }
        std::mem::swap(&mut state.items, into);
        state.events = 0;
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

/// What a subscription needs of the table that made it: leaving it. Implemented by the
/// subscriber table (`crate::router::Router`).
pub(crate) trait Unsubscribe: Send + Sync {
    /// Removes the subscription with this key (unknown keys are ignored).
    fn unsubscribe(&self, key: u64);
}

/// A live subscription: a receiver of [`Delivery`] items. Dropping it (or [`Subscription::cancel`])
/// unsubscribes; other subscriptions are not disturbed.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) key: u64,
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) kind: SubscriptionKind,
    pub(crate) queue: Arc<SubQueue>,
    /// The table to leave on cancel (the bus's router).
    pub(crate) router: Weak<dyn Unsubscribe>,
    pub(crate) cancelled: bool,
    /// Items already taken from the shared queue in one batch, handed out one by one.
    pub(crate) taken: VecDeque<Delivery>,
}

impl Subscription {
    /// Waits for the next item. `None` once the subscription is cancelled or the bus is closed
    /// (after anything already queued has been handed out).
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(item) = self.taken.pop_front() {
                return Some(item);
            }
            match self.queue.take_all(&mut self.taken, true) {
                Ok(()) => {}
                Err(true) => return None,
                Err(false) => self.queue.notify.notified().await,
            }
        }
    }

    /// The next item if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        if self.taken.is_empty() {
            let _ = self.queue.take_all(&mut self.taken, false);
        }
        self.taken.pop_front()
    }

    /// Number of queued items (events and resync markers).
    pub fn pending(&self) -> usize {
        self.taken.len() + self.queue.len()
    }

    /// Unsubscribes now (idempotent). Queued items can still be read; then `next` returns `None`.
    pub fn cancel(&mut self) {
        if !self.cancelled {
            self.cancelled = true;
            if let Some(router) = self.router.upgrade() {
                router.unsubscribe(self.key);
            }
            self.queue.close();
        }
    }

    /// The subscription's uuid4 id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The exact topic or the pattern subscribed to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Exact topic or pattern.
    pub fn kind(&self) -> SubscriptionKind {
        self.kind
    }

    /// Turns the subscription into a `Stream` of deliveries (dropping the stream unsubscribes).
    pub fn into_stream(self) -> impl futures::Stream<Item = Delivery> + Send + 'static {
        futures::stream::unfold(self, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}
