//! Test factory: counts creations, records every destroy, flags double destroys.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_cache::InstanceFactory;
use dynreg_registry_core::Registration;
use serde_json::Value;

#[derive(Debug)]
pub struct Bot {
    pub serial: u64,
    pub bot_id: String,
    pub config: Arc<Value>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("bad config for {0}")]
pub struct BadConfig(pub String);

#[derive(Default)]
pub struct Tracker {
    pub next: AtomicU64,
    pub creates: AtomicU64,
    pub live: Mutex<HashSet<u64>>,
    pub destroyed: Mutex<HashSet<u64>>,
    pub double_destroys: AtomicU64,
    pub in_create: AtomicU64,
    pub max_in_create: AtomicU64,
}

impl Tracker {
    pub fn live(&self) -> usize {
        self.live.lock().unwrap().len()
    }
    pub fn destroyed(&self) -> usize {
        self.destroyed.lock().unwrap().len()
    }
}

#[derive(Clone, Default)]
pub struct TestFactory {
    pub tracker: Arc<Tracker>,
    pub delay: Duration,
    /// When set, creation of these ids waits for the gate.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl TestFactory {
    pub fn new() -> Self {
        Self::default()
    }
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
