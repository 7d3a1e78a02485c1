//! The ingest orchestrator: ingests when a trigger arrives on the bus (`knowledge:trigger`),
//! one ingest per knowledge base at a time, retried, and never on the publisher's task.
//!
//! Invariants:
//! - Dispatch is the original's: a `since_version` runs `ingest_changes`, else a `force_full`
//!   re-embeds everything, else `ingest_if_changed(last_version)`. A payload without a string
//!   `domain_id`, with a `tenant_id` that is not a string, or with a `key` that is not a content
//!   key (the knowledge store's own state writes: the feedback loop) is skipped.
//! - One ingest per knowledge base (and tenant) at a time through an [`IngestLock`] on
//!   `ingest:{tenant or -}:{domain}`: [`InProcessLock`] within a process, [`PgAdvisoryLock`]
//!   (feature `postgres`) across processes sharing a PostgreSQL server. Different knowledge
//!   bases run in parallel.
//! - The manager of a trigger is the orchestrator's one manager, or — for a platform with a
//!   manager per tenant — the one its [`ManagerResolver`] returns for the trigger's tenant and
//!   knowledge base, resolved once per trigger (`None`: skipped). A trigger naming another
//!   tenant than the one manager's is skipped: that manager's store would index the wrong
//!   tenant's files.
//! - Each trigger is handled on its own task: publishing a trigger never waits for the ingest.
//! - An ingest that fails as a whole is retried with exponential back-off up to
//!   `max_attempts`, then published as a failure event on `knowledge:ingestion:failed`
//!   (the original logs and swallows every exception). File errors are part of a result and
//!   are not retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use dynreg_event_bus::{Delivery, Event, EventBus, EventBusError, EventType};
use dynreg_knowledge_store::{KnowledgeBackendExt, KnowledgeKeyKind};

use crate::manager::{
    IfChanged, IngestionResult, KnowledgeIngestionManager, ManagerError, SwapMode,
};

/// The topic triggers arrive on.
pub const TRIGGER_TOPIC: &str = "knowledge:trigger";
/// The topic a trigger whose ingest failed after every retry is reported on.
pub const FAILED_TOPIC: &str = "knowledge:ingestion:failed";

/// Finds the manager of a trigger: called with the trigger's tenant (if any) and knowledge
/// base; `None` when no manager serves them.
pub type ManagerResolver = Arc<
    dyn Fn(
            Option<String>,
            String,
        ) -> futures::future::BoxFuture<'static, Option<Arc<KnowledgeIngestionManager>>>
        + Send
        + Sync,
>;

/// Where the orchestrator's managers come from.
#[derive(Clone)]
enum Managers {
    One(Arc<KnowledgeIngestionManager>),
    Resolved(ManagerResolver),
}

/// A held lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Send>;

/// Mutual exclusion of ingests by key.
#[async_trait]
pub trait IngestLock: std::fmt::Debug + Send + Sync {
    /// Waits until `key` is free and holds it until the guard is dropped.
    async fn acquire(&self, key: &str) -> Result<LockGuard, String>;
}

/// A lock within this process.
#[derive(Debug, Default)]
pub struct InProcessLock {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[async_trait]
impl IngestLock for InProcessLock {
    async fn acquire(&self, key: &str) -> Result<LockGuard, String> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(key.to_owned()).or_default().clone()
        };
        Ok(Box::new(lock.lock_owned().await))
    }
}

#[cfg(feature = "postgres")]
pub use pg_lock::PgAdvisoryLock;

#[cfg(feature = "postgres")]
mod pg_lock {
    use super::{IngestLock, LockGuard};
    use async_trait::async_trait;
    use sqlx::Connection;

    /// A lock across processes: a PostgreSQL session advisory lock on a connection of its own,
    /// held as long as the guard (dropping the guard closes the connection, which releases
    /// the lock — also when the process dies).
    #[derive(Clone)]
    pub struct PgAdvisoryLock {
        server: Server,
    }

    /// Shows the server without its credentials.
    impl std::fmt::Debug for PgAdvisoryLock {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let server = match &self.server {
                Server::Url(url) => match url.split_once("://") {
                    Some((scheme, rest)) => match rest.rsplit_once('@') {
                        Some((_, host)) => format!("{scheme}://***@{host}"),
                        None => url.clone(),
                    },
                    None => "<connection string>".to_owned(),
                },
                Server::Options(o) => format!("{}:{}", o.get_host(), o.get_port()),
            };
            f.debug_struct("PgAdvisoryLock")
                .field("server", &server)
                .finish()
        }
    }

    #[derive(Clone)]
    enum Server {
        Url(String),
        Options(Box<sqlx::postgres::PgConnectOptions>),
    }

    impl PgAdvisoryLock {
        /// Locks on the server at `url`.
        pub fn new(url: impl Into<String>) -> Self {
            PgAdvisoryLock {
                server: Server::Url(url.into()),
            }
        }

        /// Locks on the server of `options` (e.g. the registry's, from
        /// `PostgresConfig::connect_options`).
        pub fn with_options(options: sqlx::postgres::PgConnectOptions) -> Self {
            PgAdvisoryLock {
                server: Server::Options(Box::new(options)),
            }
        }
    }

    #[async_trait]
    impl IngestLock for PgAdvisoryLock {
        async fn acquire(&self, key: &str) -> Result<LockGuard, String> {
            let conn = match &self.server {
                Server::Url(url) => sqlx::PgConnection::connect(url).await,
                Server::Options(o) => sqlx::PgConnection::connect_with(o).await,
            };
            let mut conn = conn.map_err(|e| format!("advisory lock connection: {e}"))?;
            sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("advisory lock {key:?}: {e}"))?;
            Ok(Box::new(conn))
        }
    }
}

/// What the orchestrator did with one trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOutcome {
    /// Skipped, and why.
    Skipped(String),
    /// `ingest_changes` ran.
    Changes(IngestionResult),
    /// `force_full`: everything was embedded again.
    Full(IngestionResult),
    /// `ingest_if_changed` ran.
    IfChanged(IfChanged),
    /// Every attempt failed (the last error).
    Failed(String),
}

/// Called with the domain and outcome of every trigger handled.
pub type OutcomeObserver = Arc<dyn Fn(&str, &TriggerOutcome) + Send + Sync>;

/// The orchestrator's options.
#[derive(Clone)]
pub struct OrchestratorOptions {
    /// The trigger topic (default `knowledge:trigger`).
    pub topic: String,
    /// The swap mode of its ingests (default `Tombstone`).
    pub mode: SwapMode,
    /// Attempts per trigger (default 3).
    pub max_attempts: u32,
    /// The first back-off (default 500 ms), doubled per attempt.
    pub backoff: Duration,
}

impl Default for OrchestratorOptions {
    fn default() -> Self {
        OrchestratorOptions {
            topic: TRIGGER_TOPIC.into(),
            mode: SwapMode::Tombstone,
            max_attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The orchestrator.
pub struct IngestOrchestrator {
    managers: Managers,
    bus: Arc<dyn EventBus>,
    lock: Arc<dyn IngestLock>,
    options: OrchestratorOptions,
    observer: Option<OutcomeObserver>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for IngestOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOrchestrator")
            .field("topic", &self.options.topic)
            .field("lock", &self.lock)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl IngestOrchestrator {
    /// An orchestrator of `manager` on `bus`, with an in-process lock.
    pub fn new(manager: Arc<KnowledgeIngestionManager>, bus: Arc<dyn EventBus>) -> Self {
        Self::with_managers(Managers::One(manager), bus)
    }

    /// An orchestrator whose managers `resolver` finds per trigger (a manager per tenant, or
    /// per knowledge base), on `bus`, with an in-process lock.
    pub fn with_resolver(resolver: ManagerResolver, bus: Arc<dyn EventBus>) -> Self {
        Self::with_managers(Managers::Resolved(resolver), bus)
    }

    fn with_managers(managers: Managers, bus: Arc<dyn EventBus>) -> Self {
        IngestOrchestrator {
            managers,
            bus,
            lock: Arc::new(InProcessLock::default()),
            options: OrchestratorOptions::default(),
            observer: None,
            task: Mutex::new(None),
        }
    }

    /// Uses `lock` (e.g. [`PgAdvisoryLock`] across processes).
    pub fn with_lock(mut self, lock: Arc<dyn IngestLock>) -> Self {
        self.lock = lock;
        self
    }

    /// Uses `options`.
    pub fn with_options(mut self, options: OrchestratorOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls `observer` after every trigger.
    pub fn with_observer(mut self, observer: OutcomeObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// True between `start` and `stop`.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Subscribes to the trigger topic (idempotent).
    pub async fn start(self: &Arc<Self>) -> Result<(), EventBusError> {
        if self.is_running() {
            return Ok(());
        }
        let mut sub = self.bus.subscribe(&self.options.topic).await?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Some(delivery) = sub.next().await {
                if let Delivery::Event { event, .. } = delivery {
                    let me = me.clone();
                    tokio::spawn(async move { me.handle(&event).await });
                }
            }
        });
        *self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(())
    }

    /// Unsubscribes (idempotent); ingests already running finish.
    pub fn stop(&self) {
        if let Some(t) = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }

    fn report(&self, domain: &str, outcome: &TriggerOutcome) {
        if let Some(o) = &self.observer {
            o(domain, outcome);
        }
    }

    /// Handles one trigger event (what the subscription does for each; public for callers
    /// with their own transport).
    pub async fn handle(&self, event: &Event) -> TriggerOutcome {
        let p = &event.payload;
        let Some(domain) = p
            .get("domain_id")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            tracing::warn!("ingest trigger without a domain_id: skipped");
            let outcome = TriggerOutcome::Skipped("no domain_id".into());
            self.report("", &outcome);
            return outcome;
        };
        let tenant = match p.get("tenant_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(other) => {
                let outcome = TriggerOutcome::Skipped(format!("tenant_id {other} is not a string"));
                self.report(domain, &outcome);
                return outcome;
            }
        };
        let manager = match &self.managers {
            Managers::One(m) => match (m.tenant_id(), tenant) {
                (Some(mine), Some(theirs)) if mine != theirs => {
                    let outcome = TriggerOutcome::Skipped(format!(
                        "tenant {theirs:?}: this orchestrator's manager serves tenant {mine:?}"
                    ));
                    self.report(domain, &outcome);
                    return outcome;
                }
                _ => m.clone(),
            },
            Managers::Resolved(resolve) => {
                match resolve(tenant.map(str::to_owned), domain.to_owned()).await {
                    Some(m) => m,
                    None => {
                        let outcome = TriggerOutcome::Skipped(format!(
                            "no manager for tenant {} and knowledge base {domain:?}",
                            tenant.map_or("-".to_owned(), |t| format!("{t:?}"))
                        ));
                        self.report(domain, &outcome);
                        return outcome;
                    }
                }
            }
        };
        if let Some(key) = p.get("key").and_then(Value::as_str) {
            let kind = manager.source().classify_key(key);
            if kind != KnowledgeKeyKind::Content {
                let outcome =
                    TriggerOutcome::Skipped(format!("key {key:?} is not content ({kind:?})"));
                self.report(domain, &outcome);
                return outcome;
            }
        }
        let lock_key = format!("ingest:{}:{domain}", tenant.unwrap_or("-"));
        let _guard = match self.lock.acquire(&lock_key).await {
            Ok(g) => g,
            Err(e) => {
                let outcome = TriggerOutcome::Failed(e);
                self.report(domain, &outcome);
                return outcome;
            }
        };
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.dispatch(&manager, domain, p).await {
                Ok(outcome) => break outcome,
                Err(e) if attempt < self.options.max_attempts => {
                    tracing::warn!(domain, attempt, error = %e, "ingest failed; retrying");
                    tokio::time::sleep(
                        self.options
                            .backoff
                            .saturating_mul(1 << (attempt - 1).min(10)),
                    )
                    .await;
                }
                Err(e) => {
                    let mut payload: Map<String, Value> = Map::new();
                    payload.insert("domain_id".into(), json!(domain));
                    if let Some(t) = tenant {
                        payload.insert("tenant_id".into(), json!(t));
                    }
                    payload.insert("error".into(), json!(e.to_string()));
                    payload.insert("attempts".into(), json!(attempt));
                    payload.insert("trigger".into(), Value::Object(p.clone()));
                    let failure = Event::new(EventType::Custom, FAILED_TOPIC, payload)
                        .with_source("dynreg-ingestion");
                    if let Err(pe) = self.bus.publish(FAILED_TOPIC, &failure).await {
                        tracing::warn!(domain, error = %pe, "failure event not published");
                    }
                    break TriggerOutcome::Failed(e.to_string());
                }
            }
        };
        self.report(domain, &outcome);
        outcome
    }

    async fn dispatch(
        &self,
        manager: &KnowledgeIngestionManager,
        domain: &str,
        p: &Map<String, Value>,
    ) -> Result<TriggerOutcome, ManagerError> {
        let truthy = |v: Option<&Value>| match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        let mode = self.options.mode;
        if truthy(p.get("since_version")) {
            let since = p["since_version"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| p["since_version"].to_string());
            return Ok(TriggerOutcome::Changes(
                manager
                    .ingest_changes(domain, &since, mode, Map::new())
                    .await?,
            ));
        }
        if truthy(p.get("force_full")) {
            return Ok(TriggerOutcome::Full(
                manager.reingest_all(domain, mode).await?,
            ));
        }
        let last = p.get("last_version").and_then(Value::as_str);
        Ok(TriggerOutcome::IfChanged(
            manager.ingest_if_changed(domain, last, mode).await?,
        ))
    }
}

impl Drop for IngestOrchestrator {
    fn drop(&mut self) {
        self.stop();
    }
}
