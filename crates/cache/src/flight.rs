//! Single flight: at most one build per id at a time, shared by every caller that asks for
//! the id meanwhile.
//!
//! Invariants: a slot has at most one [`Flight`]; a build reads the registration and builds
//! outside every lock, then settles under the shard's write lock only if the id's generation
//! did not move meanwhile (otherwise the build is destroyed and redone, at most
//! `max_build_attempts` times); every waiter receives the same result; a panicking factory is
//! a failed build, never a poisoned cache.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dynreg_registry_core::Registration;
use futures::FutureExt;

use crate::clock;
use crate::error::{CacheError, SharedError};
use crate::manager::Inner;
use crate::stats::Counters;
use crate::store::{Flight, Map, Ready, Slot, Store};

pub(crate) enum Lookup<T> {
    Hit(Arc<T>),
    Wait(Arc<Flight<T>>),
}

pub(crate) enum Outcome<T> {
    Built(Arc<T>, Registration),
    Failed(u64, SharedError),
    NotFound,
    Backend(dynreg_registry_core::RegistryError),
}

#[derive(Debug, thiserror::Error)]
#[error("the instance factory panicked")]
struct FactoryPanicked;

pub(crate) async fn wait<T>(flight: &Arc<Flight<T>>, bot_id: &str) -> Result<Arc<T>, CacheError> {
    let mut rx = flight.tx.subscribe();
    let result = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    result.unwrap_or_else(|| {
        Err(CacheError::Closed {
            bot_id: bot_id.to_owned(),
        })
    })
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// Under the shard's write lock: a hit, or the build to wait for (joined or started).
    pub(crate) fn lookup(self: Arc<Self>, key: &str, force: bool) -> Result<Lookup<T>, CacheError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CacheError::Closed {
                bot_id: key.to_owned(),
            });
        }
        let shard = self.store.shard(key);
        let mut map = self.store.write(shard);
        if !map.contains_key(key) {
            let k: Arc<str> = Arc::from(key);
            map.insert(Arc::clone(&k), Slot::new(k));
        }
        let Some(slot) = map.get_mut(key) else {
            unreachable!("inserted above")
        };
        let now = clock::now();
        let mut expired = None;
        if let Some(ready) = &slot.ready {
            if self.expired(ready, now) {
                expired = self.store.take(slot);
            } else if !slot.stale && !force {
                Store::touch(slot);
                self.store.count_hit();
                return Ok(Lookup::Hit(Arc::clone(&ready.instance)));
            }
        }
        let (flight, start) = match &slot.flight {
            Some(f) => (Arc::clone(f), None),
            None => {
                let f = Flight::new();
                slot.flight = Some(Arc::clone(&f));
                (f, Some(Arc::clone(&slot.key)))
            }
        };
        drop(map);
        if let Some(old) = expired {
            Counters::bump(&self.counters.expirations);
            self.destroy_later(old.instance);
        }
        if let Some(k) = start {
            self.spawn_flight(k, Arc::clone(&flight));
        }
        Ok(Lookup::Wait(flight))
    }

    pub(crate) fn spawn_flight(self: &Arc<Self>, key: Arc<str>, flight: Arc<Flight<T>>) {
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            let result = AssertUnwindSafe(inner.fly(&key, &flight))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(CacheError::Closed {
                        bot_id: key.to_string(),
                    })
                });
            flight.tx.send_replace(Some(result));
        });
    }

    async fn build(&self, key: &str) -> Outcome<T> {
        match self.backend.peek(key).await {
            Err(e) => Outcome::Backend(e),
            Ok(None) => Outcome::NotFound,
            Ok(Some(reg)) if !reg.is_active() => Outcome::NotFound,
            Ok(Some(reg)) => {
                // A span per build (the factory's own spans nest in it) and the build metrics:
                // `dynreg_cache_builds_total{outcome}`, `dynreg_cache_build_seconds`.
                let span = tracing::debug_span!(
                    "cache_build",
                    bot_id = %reg.bot_id,
                    revision = reg.revision
                );
                let start = std::time::Instant::now();
                let created = tracing::Instrument::instrument(
                    AssertUnwindSafe(self.factory.create(&reg)).catch_unwind(),
                    span,
                )
                .await;
                let outcome = match &created {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(_)) => "error",
                    Err(_) => "panic",
                };
                metrics::counter!("dynreg_cache_builds_total", "outcome" => outcome).increment(1);
                metrics::histogram!("dynreg_cache_build_seconds")
                    .record(start.elapsed().as_secs_f64());
                match created {
                    Ok(Ok(instance)) => Outcome::Built(Arc::new(instance), reg),
                    Ok(Err(e)) => Outcome::Failed(reg.revision, e),
                    Err(_) => {
                        Outcome::Failed(reg.revision, Arc::new(FactoryPanicked) as SharedError)
                    }
                }
            }
        }
    }

    /// One single-flight build: read, build, and settle under the lock; redone when the id's
    /// generation moved during the build (a change or invalidation landed meanwhile).
    async fn fly(&self, key: &Arc<str>, flight: &Arc<Flight<T>>) -> Result<Arc<T>, CacheError> {
        let shard = self.store.shard(key);
        for _ in 0..self.options.max_build_attempts {
            let generation = {
                let map = self.store.read(shard);
                match map.get(&**key) {
                    Some(s) if s.owns(flight) && !self.closed.load(Ordering::Acquire) => {
                        s.generation
                    }
                    _ => {
                        drop(map);
                        self.release_flight(key, flight);
                        return Err(CacheError::Closed {
                            bot_id: key.to_string(),
                        });
                    }
                }
            };
            let outcome = self.build(key).await;
            if let Some(result) = self.settle(key, flight, generation, outcome) {
                return result;
            }
        }
        self.release_flight(key, flight);
        Err(CacheError::Unstable {
            bot_id: key.to_string(),
            attempts: self.options.max_build_attempts,
        })
    }

    /// Applies a build's outcome under the shard's write lock. `None`: the build is stale (the
    /// id's generation moved, or the cache closed) and must be redone.
    fn settle(
        &self,
        key: &Arc<str>,
        flight: &Arc<Flight<T>>,
        generation: u64,
        outcome: Outcome<T>,
    ) -> Option<Result<Arc<T>, CacheError>> {
        let shard = self.store.shard(key);
        let mut map = self.store.write(shard);
        let now = clock::now();
        let usable = map.get(&**key).is_some_and(|s| {
            s.owns(flight) && s.generation == generation && !self.closed.load(Ordering::Acquire)
        });
        if !usable {
            drop(map);
            if let Outcome::Built(instance, _) = outcome {
                Counters::bump(&self.counters.discarded_builds);
                self.destroy_later(instance);
            }
            return None;
        }
        let Some(slot) = map.get_mut(&**key) else {
            unreachable!("checked above")
        };
        let result = match outcome {
            Outcome::Built(instance, reg) => {
                Counters::bump(&self.counters.creations);
                let old = self.store.install(
                    slot,
                    Ready {
                        instance: Arc::clone(&instance),
                        revision: reg.revision,
                        config_hash: Arc::from(reg.config_hash.as_str()),
                        built: now,
                    },
                );
                slot.flight = None;
                slot.stale = false;
                slot.rejected = 0;
                drop(map);
                if let Some(old) = old {
                    Counters::bump(&self.counters.refreshes);
                    self.destroy_later(old.instance);
                }
                self.evict();
                Ok(instance)
            }
            Outcome::NotFound => {
                self.forget(map, key);
                Err(CacheError::NotFound {
                    bot_id: key.to_string(),
                })
            }
            Outcome::Backend(e) => {
                slot.flight = None;
                if slot.ready.is_none() {
                    map.remove(&**key);
                }
                Err(CacheError::Registry {
                    bot_id: key.to_string(),
                    source: Arc::new(e),
                })
            }
            Outcome::Failed(revision, source) => {
                Counters::bump(&self.counters.creation_failures);
                slot.flight = None;
                let error = CacheError::Create {
                    bot_id: key.to_string(),
                    revision,
                    source,
                };
                if self.options.keep_last_good
                    && let Some(ready) = &slot.ready
                {
                    let good = Arc::clone(&ready.instance);
                    let good_revision = ready.revision;
                    slot.stale = false;
                    slot.rejected = slot.rejected.max(revision);
                    drop(map);
                    Counters::bump(&self.counters.refresh_failures);
                    self.report_failed_rebuild(key, revision, good_revision, &error);
                    return Some(Ok(good));
                }
                self.forget(map, key);
                Err(error)
            }
        };
        Some(result)
    }

    /// Removes `key`'s slot and destroys its instance (the bot is gone, or its only build
    /// failed).
    fn forget(&self, mut map: std::sync::RwLockWriteGuard<'_, Map<T>>, key: &str) {
        let old = map.get_mut(key).and_then(|slot| self.store.take(slot));
        map.remove(key);
        drop(map);
        if let Some(old) = old {
            Counters::bump(&self.counters.invalidations);
            self.destroy_later(old.instance);
        }
    }

    /// Detaches `flight` from its slot (dropping an empty slot).
    fn release_flight(&self, key: &str, flight: &Arc<Flight<T>>) {
        let shard = self.store.shard(key);
        let mut map = self.store.write(shard);
        if let Some(slot) = map.get_mut(key)
            && slot.owns(flight)
        {
            slot.flight = None;
            if slot.ready.is_none() {
                map.remove(key);
            }
        }
    }
}
