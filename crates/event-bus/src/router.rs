//! The subscriber table every bus shares: exact and pattern subscriptions, fan-out into their
//! bounded queues, and a hook that tells a transport when its server-side interest changes.
//!
//! This module depends on `crate::subscription` (it builds [`Subscription`]s and pushes into
//! their queues), never the other way round: a subscription leaves the table through the
//! [`Unsubscribe`] trait, which [`Router`] implements.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::EventBusError;
use crate::event::{Event, new_uuid_v4};
use crate::subscription::{ResyncReason, SubQueue, Subscription, SubscriptionKind, Unsubscribe};
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

/// Most topics whose routes are cached; past it the cache starts over (publishers of
/// unboundedly many distinct topics cannot grow it without bound).
const ROUTE_CACHE_LIMIT: usize = 4096;

/// Where events published on one topic go: the topic (shared by every delivery) and the queues
/// of its exact subscribers and of every pattern subscriber that matches it.
#[derive(Debug)]
pub(crate) struct Route {
    topic: Arc<str>,
    queues: Box<[Arc<SubQueue>]>,
}

impl Route {
    /// Whether nobody receives events on this topic.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues `event` for every subscriber of the route.
    pub(crate) fn deliver(&self, event: &Arc<Event>) {
        for queue in &self.queues {
            queue.push_event(&self.topic, event);
        }
    }
}

/// The subscriber table, and a cache of per-topic routes over it (validated topic, matching
/// subscriptions) that every subscribe, unsubscribe and close clears.
pub(crate) struct Router {
    table: RwLock<Table>,
    routes: RwLock<HashMap<Arc<str>, Arc<Route>>>,
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

impl Unsubscribe for Router {
    fn unsubscribe(&self, key: u64) {
        self.remove(key);
    }
}

impl Router {
    pub(crate) fn new(capacity: usize, hook: Option<Hook>) -> Arc<Router> {
        Arc::new(Router {
            table: RwLock::new(Table::default()),
            routes: RwLock::new(HashMap::new()),
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
        self.invalidate_routes();
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
        self.invalidate_routes();
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
        let router: std::sync::Weak<Router> = Arc::downgrade(self);
        Subscription {
            key,
            id: new_uuid_v4(),
            target: target.to_owned(),
            kind,
            queue,
            router,
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
        self.invalidate_routes();
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

    /// The route of `topic` (its exact and matching pattern subscribers), from the route cache
    /// or computed — validating the topic — and cached. Errors: an invalid topic, a closed bus.
    pub(crate) fn route(&self, topic: &str) -> Result<Arc<Route>, EventBusError> {
        if let Some(route) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(Arc::clone(route));
        }
        validate_topic(topic)?;
        // Computed and cached under the table's read lock: no subscribe or unsubscribe (which
        // take the write lock, then clear the cache) can slip in between, so a cached route is
        // never stale.
        let table = self.read();
        if table.closed {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        let mut queues: Vec<Arc<SubQueue>> = Vec::new();
        if let Some(subs) = table.exact.get(topic) {
            queues.extend(subs.iter().map(|(_, q)| Arc::clone(q)));
        }
        for group in table.patterns.values() {
            if group.glob.matches(topic) {
                queues.extend(group.subs.iter().map(|(_, q)| Arc::clone(q)));
            }
        }
        let topic: Arc<str> = Arc::from(topic);
        let route = Arc::new(Route {
            topic: Arc::clone(&topic),
            queues: queues.into_boxed_slice(),
        });
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if routes.len() >= ROUTE_CACHE_LIMIT {
            routes.clear();
        }
        routes.insert(topic, Arc::clone(&route));
        Ok(route)
    }

    /// Forgets every cached route (the table changed). Called with the table's write lock held.
    fn invalidate_routes(&self) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Delivers to the exact subscribers of `topic` only.
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn dispatch_exact(&self, topic: &Arc<str>, event: &Arc<Event>) {
        if let Some(subs) = self.read().exact.get(&**topic) {
            for (_, queue) in subs {
                queue.push_event(topic, event);
            }
        }
    }

    /// Delivers to every matching pattern subscriber only.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn dispatch_patterns(&self, topic: &Arc<str>, event: &Arc<Event>) {
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
    pub(crate) fn dispatch_pattern(&self, pattern: &str, topic: &Arc<str>, event: &Arc<Event>) {
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
        let kind = match reason {
            ResyncReason::Lagged { .. } => "lagged",
            ResyncReason::Reconnected => "reconnected",
        };
        metrics::counter!("dynreg_bus_resyncs_total", "reason" => kind).increment(1);
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
        self.invalidate_routes();
    }
}
