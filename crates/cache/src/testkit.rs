//! Test support shared by this crate's tests and `dynreg-hot-reload`'s (feature `testkit`): an
//! [`InstanceFactory`] that counts creations, records every destroy and flags double destroys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::InstanceFactory;
use async_trait::async_trait;
use dynreg_registry_core::Registration;
use serde_json::Value;

/// The instance the test factory builds.
#[derive(Debug)]
pub struct Bot {
    /// A process-unique serial number of this instance.
    pub serial: u64,
    /// The bot it was built for.
    pub bot_id: String,
    /// The config it was built from.
    pub config: Arc<Value>,
    /// The registry revision it was built from (0 when built without a registration).
    pub revision: u64,
}

/// The factory's refusal of a config that has `"bad": true`; names the bot.
#[derive(Debug, thiserror::Error)]
#[error("bad config for {0}")]
pub struct BadConfig(pub String);

/// What the factory saw: creations, live and destroyed instances, concurrency.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The next serial number.
    pub next: AtomicU64,
    /// Creations attempted.
    pub creates: AtomicU64,
    /// Serials built and not yet destroyed.
    pub live: Mutex<HashSet<u64>>,
    /// Serials destroyed.
    pub destroyed: Mutex<HashSet<u64>>,
    /// Destroys of an already destroyed serial (must stay 0).
    pub double_destroys: AtomicU64,
    /// Creations running now.
    pub in_create: AtomicU64,
    /// The most creations that ever ran at once.
    pub max_in_create: AtomicU64,
}

impl Tracker {
    /// How many instances are alive.
    pub fn live(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many instances were destroyed.
    pub fn destroyed(&self) -> usize {
        self.destroyed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// A tracking [`InstanceFactory`] of [`Bot`]s.
#[derive(Debug, Clone, Default)]
pub struct TestFactory {
    /// What it saw.
    pub tracker: Arc<Tracker>,
    /// How long each creation takes.
    pub delay: Duration,
    /// When set, creation of these ids waits for the gate.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl TestFactory {
    /// A factory without delay or gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory whose creations take `delay`.
    pub fn with_delay(delay: Duration) -> Self {
        TestFactory {
            delay,
            ..Self::default()
        }
    }
}

#[async_trait]
impl InstanceFactory<Bot> for TestFactory {
    type Error = BadConfig;

    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<Bot, BadConfig> {
        let mut reg = Registration::new(bot_id, (*config).clone());
        reg.revision = 0;
        self.create_from(&reg).await
    }

    async fn create_from(&self, reg: &Registration) -> Result<Bot, BadConfig> {
        let t = &self.tracker;
        let now = t.in_create.fetch_add(1, Ordering::SeqCst) + 1;
        t.max_in_create.fetch_max(now, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        t.in_create.fetch_sub(1, Ordering::SeqCst);
        t.creates.fetch_add(1, Ordering::SeqCst);
        if reg.config.get("bad").and_then(Value::as_bool) == Some(true) {
            return Err(BadConfig(reg.bot_id.clone()));
        }
        let serial = t.next.fetch_add(1, Ordering::SeqCst);
        t.live.lock().unwrap().insert(serial);
        Ok(Bot {
            serial,
            bot_id: reg.bot_id.clone(),
            config: Arc::clone(&reg.config),
            revision: reg.revision,
        })
    }

    async fn destroy(&self, instance: Arc<Bot>) {
        let t = &self.tracker;
        if !t.destroyed.lock().unwrap().insert(instance.serial) {
            t.double_destroys.fetch_add(1, Ordering::SeqCst);
        }
        t.live.lock().unwrap().remove(&instance.serial);
    }
}

/// Polls `f` until it holds (deadlock guard: panics after 10 s; not a timing assertion).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}
