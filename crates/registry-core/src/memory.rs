//! `InMemoryBackend`: a process-local registry for tests and development.
//!
//! Invariants: every registration is stored once, as an `Arc` shared by the id index (point
//! reads) and the ordered index (listings in id order without a sort); a listing hands out
//! those `Arc`s (a new one only for a registration touched since it was stored); the config
//! hash of a write is computed before the write lock is taken.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::backend::{plan_register, validate_write};
use crate::changes::{Change, ChangeFeed};
use crate::error::Result;
use crate::hash::config_hash;
use crate::model::{Registration, Status};
use crate::query::{ListQuery, matches_metadata};
use crate::time::{now, now_micros};
use crate::write::WriteCondition;
use crate::write::{Deactivation, RegisterOptions, Registered};
use crate::{RegistryBackend, validate_bot_id};

/// How many deletion tombstones a memory registry keeps before it compacts the oldest.
pub const DEFAULT_TOMBSTONE_RETENTION: usize = 100_000;

/// A registry held in process memory.
///
/// Clones share the same data (two clones are "two instances on the same storage").
/// `close()` keeps the data, unlike the original, which wiped it.
#[derive(Clone, Default)]
pub struct InMemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: RwLock<State>,
    tombstone_retention: Option<usize>,
    /// A touch is stored only when the stored one is at least this old (in µs).
    touch_resolution_micros: i64,
}

#[derive(Default)]
struct State {
    rows: HashMap<String, Entry>,
    /// The same registrations in id order, for listings.
    order: BTreeMap<String, Arc<Shared>>,
    /// Revision → id of the latest change of each id (live row or tombstone): at most one
    /// entry per id, so `changes_since` is a range scan over exactly the changes.
    log: BTreeMap<u64, LogEntry>,
    tombstones: HashMap<String, u64>,
    revision: u64,
    /// Cursors below this cannot be answered (tombstones were compacted).
    horizon: u64,
}

/// One stored registration. The hot read path (`get_config`) needs only `active` and
/// `config`, which sit in the hash table's bucket next to the key; the registration and its
/// touch time are shared with the ordered index.
struct Entry {
    active: bool,
    config: Arc<Value>,
    shared: Arc<Shared>,
}

/// A stored registration and its latest touch (which may be newer than the shared copy's
/// `last_accessed_at`: touching reads only store the time).
struct Shared {
    /// The registration as last handed out by a listing (refreshed when touched since).
    reg: Mutex<Arc<Registration>>,
    /// Immutable fields for filters and the log, without the lock.
    status: Status,
    revision: u64,
    last_accessed_micros: AtomicI64,
}

impl Shared {
    fn new(reg: Registration) -> Self {
        Shared {
            last_accessed_micros: AtomicI64::new(reg.last_accessed_at.timestamp_micros()),
            status: reg.status.clone(),
            revision: reg.revision,
            reg: Mutex::new(Arc::new(reg)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Registration>> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registration as it is now: the shared `Arc`, replaced once by a copy with the
    /// newer touch time when it was touched since it was last handed out.
    fn current(&self) -> Arc<Registration> {
        let touched = self.last_accessed_micros.load(Ordering::Relaxed);
        let mut reg = self.lock();
        if touched != reg.last_accessed_at.timestamp_micros() {
            let mut fresh = Registration::clone(&reg);
            fresh.last_accessed_at = micros_to_time(touched);
            *reg = Arc::new(fresh);
        }
        Arc::clone(&reg)
    }

    fn snapshot(&self) -> Registration {
        Registration::clone(&self.current())
    }
}

impl Entry {
    fn snapshot(&self) -> Registration {
        self.shared.snapshot()
    }
}

enum LogEntry {
    Live(String),
    Deleted(String),
}

fn micros_to_time(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or_default()
}

impl InMemoryBackend {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that keeps at most `retention` deletion tombstones; older deletions
    /// make `changes_since` answer [`ChangeFeed::Expired`] for cursors before them.
    pub fn with_tombstone_retention(retention: usize) -> Self {
        InMemoryBackend {
            inner: Arc::new(Inner {
                state: RwLock::default(),
                tombstone_retention: Some(retention),
                touch_resolution_micros: 0,
            }),
        }
    }

    /// An empty registry whose touching reads store `last_accessed_at` only when the stored
    /// value is at least `resolution` old (default: every touch is stored). A coarser
    /// resolution keeps hot reads from writing to shared memory.
    pub fn with_touch_resolution(resolution: std::time::Duration) -> Self {
        InMemoryBackend {
            inner: Arc::new(Inner {
                state: RwLock::default(),
                tombstone_retention: None,
                touch_resolution_micros: i64::try_from(resolution.as_micros()).unwrap_or(i64::MAX),
            }),
        }
    }

    /// Stores a touch at `t` (µs) unless the stored one is recent enough.
    fn touch(&self, e: &Entry, t: i64) {
        let stored = e.shared.last_accessed_micros.load(Ordering::Relaxed);
        if t.saturating_sub(stored) >= self.inner.touch_resolution_micros.max(1) {
            e.shared
                .last_accessed_micros
                .fetch_max(t, Ordering::Relaxed);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn retention(&self) -> usize {
        self.inner
            .tombstone_retention
            .unwrap_or(DEFAULT_TOMBSTONE_RETENTION)
    }
}

impl State {
    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn store(&mut self, reg: Registration) {
        if let Some(old) = self.rows.get(&reg.bot_id) {
            self.log.remove(&old.shared.revision);
        }
        if let Some(rev) = self.tombstones.remove(&reg.bot_id) {
            self.log.remove(&rev);
        }
        self.log
            .insert(reg.revision, LogEntry::Live(reg.bot_id.clone()));
        let id = reg.bot_id.clone();
        let entry = Entry {
            active: reg.is_active(),
            config: reg.config.clone(),
            shared: Arc::new(Shared::new(reg)),
        };
        self.order.insert(id.clone(), Arc::clone(&entry.shared));
        self.rows.insert(id, entry);
    }

    fn delete(&mut self, bot_id: &str, retention: usize) -> bool {
        let Some(old) = self.rows.remove(bot_id) else {
            return false;
        };
        self.order.remove(bot_id);
        self.log.remove(&old.shared.revision);
        let rev = self.next_revision();
        self.log.insert(rev, LogEntry::Deleted(bot_id.to_owned()));
        self.tombstones.insert(bot_id.to_owned(), rev);
        while self.tombstones.len() > retention {
            let oldest = self
                .log
                .iter()
                .find_map(|(r, e)| matches!(e, LogEntry::Deleted(_)).then_some(*r))
                .expect("a tombstone count above zero means a tombstone in the log");
            if let Some(LogEntry::Deleted(id)) = self.log.remove(&oldest) {
                self.tombstones.remove(&id);
            }
            self.horizon = self.horizon.max(oldest);
        }
        true
    }
}

impl std::fmt::Debug for InMemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.read();
        write!(
            f,
            "InMemoryBackend(count={}, revision={})",
            s.rows.len(),
            s.revision
        )
    }
}

#[async_trait]
impl RegistryBackend for InMemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn initialize(&self) -> Result<()> {
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        validate_write(bot_id, &config, &options)?;
        let hash = config_hash(&config);
        let mut s = self.write();
        let current = s.rows.get(bot_id).map(Entry::snapshot);
        options
            .condition
            .check(bot_id, current.as_ref().map(|c| c.revision))?;
        let next = s.revision + 1;
        match plan_register(bot_id, config, hash, &options, current.as_ref(), next) {
            None => Ok(Registered::unchanged(
                current.expect("no-op plans only exist for present ids"),
            )),
            Some(reg) => {
                s.next_revision();
                s.store(reg.clone());
                Ok(Registered::written(reg, current.is_some()))
            }
        }
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let s = self.read();
        Ok(s.rows.get(bot_id).map(|e| {
            let mut reg = Registration::clone(&e.shared.lock());
            let t = now();
            self.touch(e, t.timestamp_micros());
            reg.last_accessed_at = t;
            reg
        }))
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        Ok(self.read().rows.get(bot_id).map(Entry::snapshot))
    }

    async fn get_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        validate_bot_id(bot_id)?;
        let s = self.read();
        Ok(s.rows.get(bot_id).filter(|e| e.active).map(|e| {
            self.touch(e, now_micros());
            e.config.clone()
        }))
    }

    async fn peek_config(&self, bot_id: &str) -> Result<Option<Arc<Value>>> {
        validate_bot_id(bot_id)?;
        let s = self.read();
        Ok(s.rows
            .get(bot_id)
            .filter(|e| e.active)
            .map(|e| e.config.clone()))
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        validate_bot_id(bot_id)?;
        let mut s = self.write();
        let Some(entry) = s.rows.get(bot_id) else {
            return Ok(Deactivation::ABSENT);
        };
        if entry.shared.status == Status::Inactive {
            return Ok(Deactivation::UNCHANGED);
        }
        let mut reg = entry.snapshot();
        reg.status = Status::Inactive;
        reg.updated_at = now();
        let revision = s.next_revision();
        reg.revision = revision;
        s.store(reg);
        Ok(Deactivation::at(revision))
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        let retention = self.retention();
        Ok(self.write().delete(bot_id, retention))
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        validate_bot_id(bot_id)?;
        let retention = self.retention();
        let mut s = self.write();
        let actual = s.rows.get(bot_id).map(|e| e.shared.revision);
        WriteCondition::Revision(revision).check(bot_id, actual)?;
        s.delete(bot_id, retention);
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        query.validate()?;
        let s = self.read();
        let matching = s.order.values().filter(|e| {
            query.status.as_ref().is_none_or(|st| &e.status == st)
                && (query.filter_metadata.is_none() || query.matches(&e.lock()))
        });
        if query.sort.is_empty() {
            // Already in id order: paginate while collecting, no sort and no copy.
            let skip = query.offset.unwrap_or(0);
            let take = query.limit.unwrap_or(usize::MAX);
            return Ok(matching
                .skip(skip)
                .take(take)
                .map(|e| e.current())
                .collect());
        }
        let rows: Vec<Arc<Registration>> = matching.map(|e| e.current()).collect();
        drop(s);
        query.sort_and_paginate(rows)
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        let s = self.read();
        Ok(s.rows
            .values()
            .filter(|e| status.is_none_or(|st| &e.shared.status == st))
            .filter(|e| {
                filter_metadata.is_none() || matches_metadata(&e.shared.lock(), filter_metadata)
            })
            .count() as u64)
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        let s = self.read();
        if revision < s.horizon || revision > s.revision {
            return Ok(ChangeFeed::Expired {
                cursor: revision,
                oldest_available: s.horizon,
                current_revision: s.revision,
            });
        }
        let changes = s
            .log
            .range(revision + 1..)
            .map(|(rev, e)| match e {
                LogEntry::Live(id) => Change::Upsert(s.rows[id].snapshot()),
                LogEntry::Deleted(id) => Change::Deleted {
                    bot_id: id.clone(),
                    revision: *rev,
                },
            })
            .collect();
        Ok(ChangeFeed::Changes {
            changes,
            current_revision: s.revision,
        })
    }

    async fn current_revision(&self) -> Result<u64> {
        Ok(self.read().revision)
    }

    async fn clear(&self) -> Result<u64> {
        let retention = self.retention();
        let mut s = self.write();
        let mut ids: Vec<String> = s.rows.keys().cloned().collect();
        ids.sort();
        for id in &ids {
            s.delete(id, retention);
        }
        Ok(ids.len() as u64)
    }
}
