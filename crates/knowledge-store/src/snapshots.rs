//! Bounded in-memory retention of snapshots (identity → `{path: checksum}`), used by the
//! memory backend and as the read cache of the persistent ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How many snapshots a knowledge base keeps by default.
pub const DEFAULT_SNAPSHOT_RETENTION: usize = 64;

/// The last `capacity` snapshots (of any representation `T`), oldest evicted first;
/// re-recording refreshes recency.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRing<T> {
    capacity: usize,
    order: VecDeque<String>,
    map: HashMap<String, Arc<T>>,
}

impl<T> SnapshotRing<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, version: &str) -> Option<Arc<T>> {
        self.map.get(version).cloned()
    }

    pub(crate) fn contains(&self, version: &str) -> bool {
        self.map.contains_key(version)
    }

    /// Records a snapshot; returns the versions evicted to stay within capacity.
    pub(crate) fn record(&mut self, version: String, snapshot: Arc<T>) -> Vec<String> {
        if self.map.insert(version.clone(), snapshot).is_some() {
            self.order.retain(|v| v != &version);
        }
        self.order.push_back(version);
        let mut evicted = Vec::new();
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
                evicted.push(old);
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_n() {
        let mut ring = SnapshotRing::<Vec<u8>>::new(2);
        assert!(ring.record("a".into(), Arc::default()).is_empty());
        ring.record("b".into(), Arc::default());
        ring.record("a".into(), Arc::default());
        assert_eq!(
            ring.record("c".into(), Arc::default()),
            vec!["b".to_owned()]
        );
        assert!(ring.contains("a") && ring.contains("c") && !ring.contains("b"));
    }
}
