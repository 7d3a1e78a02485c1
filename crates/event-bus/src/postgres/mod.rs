//! `PostgresEventBus`: LISTEN/NOTIFY over tokio-postgres (feature `postgres`).
//!
//! Two connections per bus, as in the original, but both supervised: a dedicated LISTEN
//! connection owned by one task, and a pipelined publishing connection. Every publish sends the
//! original's event JSON to the topic's channel (exact subscribers everywhere, including Python
//! processes when [`ChannelNaming::Original`] is chosen) and `topic\n<json>` to one pattern
//! channel per prefix (dynreg pattern subscribers; the original's pattern subscriptions were
//! broken). An exact subscription reads only topic channels and a
//! pattern subscription only the pattern channel, so no event is delivered twice to one
//! subscription. Events too big for NOTIFY (8000 bytes) go through a claim-check table.

mod batch;
mod channel;
mod config;
mod listener;
mod publisher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use channel::{
    ChannelNaming, MAX_CHANNEL_LEN, original_channel, pattern_channel, sanitize_prefix,
    topic_channel,
};
pub use config::{OversizePolicy, PostgresEventBusConfig};

use self::listener::ListenLink;
use self::publisher::{Live, PublishLink, PublisherSettings, PublisherSlot};
use crate::EventBus;
use crate::error::{BoxError, EventBusError};
use crate::event::{Event, new_uuid_v4};
use crate::router::Router;
use crate::subscription::Subscription;
use crate::supervisor::{Command, Settings, supervise};
use crate::topic::validate_topic;

/// Postgres rejects NOTIFY payloads of 8000 bytes or more.
pub const NOTIFY_PAYLOAD_LIMIT: usize = 7999;

/// Marks a notification whose event is in the claim table: `dynreg-claim:<uuid>`.
pub(crate) const CLAIM_PREFIX: &str = "dynreg-claim:";

/// Run a claim-table cleanup every this many claim-checked publishes.
const CLEANUP_EVERY: u64 = 64;

fn split_pattern_payload(payload: &str) -> Option<(&str, &str)> {
    payload.split_once('\n')
}

/// The Postgres LISTEN/NOTIFY bus.
pub struct PostgresEventBus {
    router: Arc<Router>,
    commands: mpsc::UnboundedSender<Command>,
    publisher: Arc<PublisherSlot>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    naming: ChannelNaming,
    prefix: String,
    pattern_channel: String,
    oversize: OversizePolicy,
    claim_ttl: std::time::Duration,
    claims: AtomicU64,
    /// The deadline of a publish (`connect_timeout`).
    publish_timeout: std::time::Duration,
    listen_name: String,
    publish_name: String,
    target: String,
}

impl std::fmt::Debug for PostgresEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEventBus")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .field("naming", &self.naming)
            .field("subscriptions", &self.router.count())
            .finish_non_exhaustive()
    }
}

impl PostgresEventBus {
    /// Opens the LISTEN and publishing connections (an unreachable server is an error here) and
    /// starts the tasks that keep them alive.
    pub async fn connect(config: PostgresEventBusConfig) -> Result<Self, EventBusError> {
        config.validate()?;
        let (base, tls) = config.pg_config()?;
        Self::start(config, base, tls).await
    }

    /// A bus on the application's own `tokio_postgres::Config` (host, port, user, password,
    /// database, ...; `config.url` is ignored). The bus opens its own two connections from it —
    /// a LISTEN connection cannot be shared, and both are re-opened after a failure — with
    /// `config.connection`'s connect timeout, and TLS when the config's `sslmode` is `require`
    /// or `ssl` is set (the certificate verified against `ca_file` or the platform roots;
    /// `prefer` is not TLS, since a bus never falls back from TLS silently).
    pub async fn with_pg_config(
        pg: tokio_postgres::Config,
        config: PostgresEventBusConfig,
    ) -> Result<Self, EventBusError> {
        config.validate()?;
        let mut base = pg;
        use tokio_postgres::config::SslMode;
        let tls = config.connection.tls.ssl || base.get_ssl_mode() == SslMode::Require;
        base.ssl_mode(if tls {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        if base.get_connect_timeout().is_none() {
            base.connect_timeout(config.connection.connect_timeout);
        }
        base.keepalives(true);
        Self::start(config, base, tls).await
    }

    async fn start(
        config: PostgresEventBusConfig,
        base: tokio_postgres::Config,
        tls: bool,
    ) -> Result<Self, EventBusError> {
        let prefix = sanitize_prefix(&config.channel_prefix)?;
        let target = if tls {
            format!("{} (TLS)", describe(&base))
        } else {
            describe(&base)
        };
        let client_config = if tls {
            crate::tls::client_config(config.connection.tls.ca_file.as_deref())?
        } else {
            crate::tls::unused_config()?
        };
        let connector = MakeRustlsConnect::new((*client_config).clone());
        let bus_id = &new_uuid_v4()[..8];
        let listen_name = format!("dynreg-event-bus-{bus_id}-listen");
        let publish_name = format!("dynreg-event-bus-{bus_id}-publish");
        let mut listen_config = base.clone();
        listen_config.application_name(&listen_name);
        let mut publish_config = base;
        publish_config.application_name(&publish_name);
        let connect_error = |source: tokio_postgres::Error| EventBusError::Connect {
            backend: "postgres",
            target: target.clone(),
            source: Box::new(source),
        };
        let settings = PublisherSettings {
            pg_config: publish_config,
            tls: connector.clone(),
            oversize: config.oversize,
            claim_table: config.claim_table.clone(),
            pattern_channel: pattern_channel(&prefix),
        };
        let first_publisher = publisher::open(&settings).await.map_err(connect_error)?;
        let forward_capacity = config.forward_capacity.max(1);
        let first_listener =
            match listener::open(&listen_config, &connector, forward_capacity).await {
                Ok(l) => l,
                Err(e) => {
                    first_publisher.1.abort();
                    return Err(connect_error(e));
                }
            };

        let (commands, command_rx) = mpsc::unbounded_channel();
        let hook_tx = commands.clone();
        let router = Router::new(
            config.connection.capacity,
            Some(Box::new(move |interest| {
                let _ = hook_tx.send(Command::Interest(interest));
            })),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let slot = Arc::new(PublisherSlot::default());
        let (first_conn, first_driver) = first_publisher;
        let first_publisher = Live {
            conn: Arc::new(first_conn),
            driver: Some(first_driver),
        };
        slot.set(Some(Arc::clone(&first_publisher.conn)));
        let listen = ListenLink {
            pg_config: listen_config,
            tls: connector,
            naming: config.channel_naming,
            prefix: prefix.clone(),
            pattern_channel: pattern_channel(&prefix),
            claim_table: config.claim_table.clone(),
            router: Arc::clone(&router),
            routes: HashMap::new(),
            patterns: 0,
            forward_capacity,
        };
        let listen_settings =
            Settings::listener(&config.connection, &router, command_rx, shutdown_rx.clone());
        let publish = PublishLink {
            slot: Arc::clone(&slot),
            settings,
        };
        // No probe: the publishing connection's driver task ends when the connection does.
        let publish_settings = Settings {
            backoff: config.connection.backoff(),
            probe: None,
            resync: None,
            commands: None,
            shutdown: shutdown_rx,
        };
        let tasks = vec![
            tokio::spawn(supervise(listen, first_listener, listen_settings)),
            tokio::spawn(supervise(publish, first_publisher, publish_settings)),
        ];
        Ok(PostgresEventBus {
            router,
            commands,
            publisher: slot,
            shutdown,
            tasks: Mutex::new(tasks),
            closed: AtomicBool::new(false),
            naming: config.channel_naming,
            pattern_channel: pattern_channel(&prefix),
            prefix,
            oversize: config.oversize,
            claim_ttl: config.claim_ttl,
            claims: AtomicU64::new(0),
            publish_timeout: config.connection.connect_timeout,
            listen_name,
            publish_name,
            target,
        })
    }

    /// The `application_name` of this bus's LISTEN connection (visible in `pg_stat_activity`).
    pub fn listen_application_name(&self) -> &str {
        &self.listen_name
    }

    /// The `application_name` of this bus's publishing connection.
    pub fn publish_application_name(&self) -> &str {
        &self.publish_name
    }

    /// The channel `topic` is published on.
    pub fn channel_for(&self, topic: &str) -> Result<String, EventBusError> {
        validate_topic(topic)?;
        topic_channel(self.naming, &self.prefix, topic)
    }

    /// Whether the publishing connection is currently up.
    pub fn is_publish_connected(&self) -> bool {
        self.publisher.get().is_some_and(|c| !c.client.is_closed())
    }

    /// Waits until the listener has applied every subscription change made so far.
    async fn sync(&self, topic: &str) -> Result<(), EventBusError> {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Command::Sync(ack)).is_err() || done.await.is_err() {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        Ok(())
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    match config.get_hostaddrs().first() {
        Some(addr) => format!("{host}:{port}/{db} (at {addr})"),
        None => format!("{host}:{port}/{db}"),
    }
}

impl PostgresEventBus {
    /// A publish got no answer within the deadline: the server is frozen or the path to it is
    /// dead (TCP keepalive cannot tell a stopped server from an idle one). The connection is
    /// dropped — its driver aborted, so the reconnect supervisor replaces it — and the publish
    /// fails.
    fn stuck(&self, conn: &publisher::PubConn, topic: &str) -> EventBusError {
        conn.driver.abort();
        tracing::warn!(
            target = %self.target,
            topic,
            timeout_ms = self.publish_timeout.as_millis() as u64,
            "postgres event bus: no answer to a publish; reconnecting"
        );
        EventBusError::Publish {
            backend: "postgres",
            topic: topic.to_owned(),
            source: format!(
                "no answer from {} within {} ms (connect_timeout_ms)",
                self.target,
                self.publish_timeout.as_millis()
            )
            .into(),
        }
    }
}

#[async_trait]
impl EventBus for PostgresEventBus {
    async fn publish(&self, topic: &str, event: &Event) -> Result<(), EventBusError> {
        validate_topic(topic)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        let channel = topic_channel(self.naming, &self.prefix, topic)?;
        let body = event.to_json();
        let pattern_payload = format!("{topic}\n{body}");
        let Some(conn) = self.publisher.get() else {
            return Err(EventBusError::Disconnected {
                backend: "postgres",
                topic: topic.to_owned(),
            });
        };
        let disconnected = || EventBusError::Disconnected {
            backend: "postgres",
            topic: topic.to_owned(),
        };
        let failed = |source: BoxError| EventBusError::Publish {
            backend: "postgres",
            topic: topic.to_owned(),
            source,
        };
        if pattern_payload.len() <= NOTIFY_PAYLOAD_LIMIT {
            let (done, outcome) = oneshot::channel();
            let pending = batch::Pending {
                channel,
                body,
                pattern_payload,
                done,
            };
            if conn.batches.send(pending).is_err() {
                return Err(disconnected());
            }
            let Ok(outcome) = tokio::time::timeout(self.publish_timeout, outcome).await else {
                return Err(self.stuck(&conn, topic));
            };
            return match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) if conn.client.is_closed() => Err(disconnected()),
                Ok(Err(error)) => Err(failed(Box::new(error))),
                Err(_) => Err(disconnected()),
            };
        }
        let (OversizePolicy::ClaimCheck, Some(claim)) = (self.oversize, &conn.claim) else {
            return Err(EventBusError::PayloadTooLarge {
                backend: "postgres",
                topic: topic.to_owned(),
                size: pattern_payload.len(),
                limit: NOTIFY_PAYLOAD_LIMIT,
            });
        };
        let id = new_uuid_v4();
        let marker = format!("{CLAIM_PREFIX}{id}");
        let pattern_marker = format!("{topic}\n{marker}");
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &id,
            &body,
            &channel,
            &marker,
            &self.pattern_channel,
            &pattern_marker,
        ];
        let query = conn.client.query(claim, &params);
        let Ok(result) = tokio::time::timeout(self.publish_timeout, query).await else {
            return Err(self.stuck(&conn, topic));
        };
        if self
            .claims
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CLEANUP_EVERY)
        {
            tokio::spawn(publisher::cleanup_claims(Arc::clone(&conn), self.claim_ttl));
        }
        match result {
            Ok(_) => Ok(()),
            Err(_) if conn.client.is_closed() => Err(disconnected()),
            Err(error) => Err(failed(Box::new(error))),
        }
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, EventBusError> {
        validate_topic(topic)?;
        topic_channel(self.naming, &self.prefix, topic)?;
        let subscription = self.router.subscribe(topic)?;
        self.sync(topic).await?;
        Ok(subscription)
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription, EventBusError> {
        let subscription = self.router.subscribe_pattern(pattern)?;
        self.sync(pattern).await?;
        Ok(subscription)
    }

    async fn close(&self) -> Result<(), EventBusError> {
        self.closed.store(true, Ordering::Release);
        self.router.close();
        let _ = self.shutdown.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    fn subscription_count(&self) -> usize {
        self.router.count()
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

impl Drop for PostgresEventBus {
    fn drop(&mut self) {
        // Dropping without close() still stops the background tasks.
        self.router.close();
        let _ = self.shutdown.send(true);
    }
}
