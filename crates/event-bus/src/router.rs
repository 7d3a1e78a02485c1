//! The subscriber table every bus shares: exact and pattern subscriptions, fan-out into their
//! bounded queues, and a hook that tells a transport when its server-side interest changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::EventBusError;
use crate::event::{Event, new_uuid_v4};
use crate::subscription::{ResyncReason, SubQueue, Subscription, SubscriptionKind};
use crate::topic::{Glob, validate_topic};

/// A change of what the bus needs from its server (the first subscriber of a topic or pattern
/// arrived, or the last one left). Sent while the table is locked, so changes arrive in order.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Interest {
    TopicAdded(String),
    TopicRemoved(String),
    PatternAdded(Glob),
    PatternRemoved(Glob),
}

type Hook = Box<dyn Fn(Interest) + Send + Sync>;

#[derive(Debug)]
struct PatternGroup {
    glob: Glob,
    subs: Vec<(u64, Arc<SubQueue>)>,
}

#[derive(Default, Debug)]
struct Table {
    next_key: u64,
    exact: HashMap<String, Vec<(u64, Arc<SubQueue>)>>,
    patterns: HashMap<String, PatternGroup>,
    index: HashMap<u64, (SubscriptionKind, String)>,
    closed: bool,
}

/// The subscriber table.
pub(crate) struct Router {
    table: RwLock<Table>,
    capacity: usize,
    hook: Option<Hook>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("capacity", &self.capacity)
            .field("subscriptions", &self.count())
            .finish()
    }
}

impl Router {
    pub(crate) fn new(capacity: usize, hook: Option<Hook>) -> Arc<Router> {
        Arc::new(Router {
            table: RwLock::new(Table::default()),
            capacity: capacity.max(1),
            hook,
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, interest: Interest) {
        if let Some(hook) = &self.hook {
            hook(interest);
        }
    }

    /// Adds an exact-topic subscription.
    pub(crate) fn subscribe(self: &Arc<Self>, topic: &str) -> Result<Subscription, EventBusError> {
        validate_topic(topic)?;
        let queue = Arc::new(SubQueue::new(self.capacity));
        let mut table = self.write();
        if table.closed {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        table.next_key += 1;
        let key = table.next_key;
        let subs = table.exact.entry(topic.to_owned()).or_default();
        subs.push((key, Arc::clone(&queue)));
        let first = subs.len() == 1;
        table
            .index
            .insert(key, (SubscriptionKind::Exact, topic.to_owned()));
        if first {
            self.emit(Interest::TopicAdded(topic.to_owned()));
        }
        drop(table);
        Ok(self.handle(key, topic, SubscriptionKind::Exact, queue))
    }

    /// Adds a pattern subscription.
    pub(crate) fn subscribe_pattern(
        self: &Arc<Self>,
        pattern: &str,
    ) -> Result<Subscription, EventBusError> {
        let glob = Glob::new(pattern)?;
        let queue = Arc::new(SubQueue::new(self.capacity));
        let mut table = self.write();
        if table.closed {
            return Err(EventBusError::Closed {
                topic: pattern.to_owned(),
            });
        }
        table.next_key += 1;
        let key = table.next_key;
        let group = table
            .patterns
            .entry(pattern.to_owned())
            .or_insert_with(|| PatternGroup {
                glob: glob.clone(),
                subs: Vec::new(),
            });
        group.subs.push((key, Arc::clone(&queue)));
        let first = group.subs.len() == 1;
        table
            .index
            .insert(key, (SubscriptionKind::Pattern, pattern.to_owned()));
        if first {
            self.emit(Interest::PatternAdded(glob));
        }
        drop(table);
        Ok(self.handle(key, pattern, SubscriptionKind::Pattern, queue))
    }

    fn handle(
        self: &Arc<Self>,
        key: u64,
        target: &str,
        kind: SubscriptionKind,
        queue: Arc<SubQueue>,
    ) -> Subscription {
        Subscription {
            key,
            id: new_uuid_v4(),
            target: target.to_owned(),
            kind,
            queue,
            router: Arc::downgrade(self),
            cancelled: false,
            taken: std::collections::VecDeque::new(),
        }
    }

    /// Removes a subscription (unknown keys are ignored).
    pub(crate) fn remove(&self, key: u64) {
        let mut table = self.write();
        let Some((kind, target)) = table.index.remove(&key) else {
            return;
        };
        match kind {
            SubscriptionKind::Exact => {
                if let Some(subs) = table.exact.get_mut(&target) {
                    subs.retain(|(k, _)| *k != key);
                    if subs.is_empty() {
                        table.exact.remove(&target);
                        if !table.closed {
                            self.emit(Interest::TopicRemoved(target));
                        }
                    }
                }
            }
            SubscriptionKind::Pattern => {
                if let Some(group) = table.patterns.get_mut(&target) {
                    group.subs.retain(|(k, _)| *k != key);
                    if group.subs.is_empty()
                        && let Some(group) = table.patterns.remove(&target)
                        && !table.closed
                    {
                        self.emit(Interest::PatternRemoved(group.glob));
                    }
                }
            }
        }
    }

    /// Delivers to the exact subscribers of `topic` and to every matching pattern subscriber.
    pub(crate) fn dispatch(&self, topic: &str, event: &Event) {
        let table = self.read();
        if let Some(subs) = table.exact.get(topic) {
            for (_, queue) in subs {
                queue.push_event(topic, event);
            }
        }
        for group in table.patterns.values() {
            if group.glob.matches(topic) {
                for (_, queue) in &group.subs {
                    queue.push_event(topic, event);
                }
            }
        }
    }

    /// Delivers to the exact subscribers of `topic` only.
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn dispatch_exact(&self, topic: &str, event: &Event) {
        if let Some(subs) = self.read().exact.get(topic) {
            for (_, queue) in subs {
                queue.push_event(topic, event);
            }
        }
    }

    /// Delivers to every matching pattern subscriber only.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn dispatch_patterns(&self, topic: &str, event: &Event) {
        let table = self.read();
        for group in table.patterns.values() {
            if group.glob.matches(topic) {
                for (_, queue) in &group.subs {
                    queue.push_event(topic, event);
                }
            }
        }
    }

    /// Delivers to the subscribers of one pattern (if the topic really matches it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn dispatch_pattern(&self, pattern: &str, topic: &str, event: &Event) {
        if let Some(group) = self.read().patterns.get(pattern)
            && group.glob.matches(topic)
        {
            for (_, queue) in &group.subs {
                queue.push_event(topic, event);
            }
        }
    }

    /// Tells every subscriber to resync.
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn resync_all(&self, reason: ResyncReason) {
        let table = self.read();
        for (_, queue) in table.exact.values().flatten() {
            queue.push_resync(reason.clone());
        }
        for group in table.patterns.values() {
            for (_, queue) in &group.subs {
                queue.push_resync(reason.clone());
            }
        }
    }

    /// Number of live subscriptions.
    pub(crate) fn count(&self) -> usize {
        self.read().index.len()
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.read().closed
    }

    /// Refuses new subscriptions and ends every existing one.
    pub(crate) fn close(&self) {
        let mut table = self.write();
        table.closed = true;
        for (_, queue) in table.exact.values().flatten() {
            queue.close();
        }
        for group in table.patterns.values() {
            for (_, queue) in &group.subs {
                queue.close();
            }
        }
        table.exact.clear();
        table.patterns.clear();
        table.index.clear();
    }
}
