//! `RedisEventBus`: Redis pub/sub (feature `redis`, redis 1.x on tokio).
//!
//! Channels use the original's formula `{prefix}:{topic}` and the original's event JSON, so
//! Python processes of the original and dynreg processes on one Redis read each other's events.
//! Pattern subscriptions `PSUBSCRIBE` the translated glob; a `pmessage` goes only to the
//! subscribers of its pattern and a `message` only to exact subscribers, so one subscription never
//! gets a transport duplicate. Two supervised connections: a dedicated pub/sub connection and a
//! multiplexed (pipelined) publishing connection.

mod listener;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::listener::PubSubLink;
use crate::EventBus;
use crate::config::{ConnectionOptions, known_keys, reject_unknown, string_key};
use crate::error::EventBusError;
use crate::event::Event;
use crate::router::Router;
use crate::subscription::Subscription;
use crate::supervisor::{Command, Link, Probe, Settings, supervise};
use crate::topic::validate_topic;

/// Options of the Redis bus.
#[derive(Clone)]
pub struct RedisEventBusConfig {
    /// `redis://[:password@]host:port[/db]` (default `redis://localhost:6379`).
    pub url: String,
    /// Channel prefix, joined with `:` (default `events`; not sanitised, as in the original).
    pub channel_prefix: String,
    /// The options every server bus shares: queue capacity, reconnect back-off, probe (PING)
    /// cadence of both connections, connect and response timeout, and TLS (`ssl` is also on
    /// for a `rediss://` URL).
    pub connection: ConnectionOptions,
}

impl std::fmt::Debug for RedisEventBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventBusConfig")
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl RedisEventBusConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisEventBusConfig {
            url: url.into(),
            channel_prefix: "events".into(),
            connection: ConnectionOptions::default(),
        }
    }

    /// Reads `url` (`redis://` or, for TLS, `rediss://`; or `host`/`port`/`username`/
    /// `password`/`db`/`ssl` parts, defaults `localhost`/`6379`), `channel_prefix`, and the keys
    /// of the shared [`ConnectionOptions`]: `capacity`, `reconnect_base_ms`, `reconnect_max_ms`,
    /// `probe_interval_ms`, `connect_timeout_ms`, and for TLS `ssl` (`true`/`false`) and
    /// `ca_file` (a PEM file of CA certificates).
    pub fn from_json(map: &Map<String, Value>) -> Result<Self, EventBusError> {
        let map = &crate::config::normalize("redis", map);
        reject_unknown(
            map,
            &known_keys(&["url", "host", "port", "password", "channel_prefix"]),
        )?;
        let url = string_key(map, "url")?.unwrap_or_else(|| "redis://localhost:6379".into());
        let mut config = RedisEventBusConfig::new(url);
        if let Some(prefix) = string_key(map, "channel_prefix")? {
            config.channel_prefix = prefix;
        }
        config.connection = ConnectionOptions::from_json(map)?;
        Ok(config)
    }
}

/// Escapes glob characters of a literal for a Redis pattern.
pub(crate) fn escape_redis_glob(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One publishing connection: the multiplexed connection, its server-side client id, and the
/// task driving it when the bus opened the transport itself (aborted when the last user of the
/// connection lets go).
struct PubConn {
    conn: redis::aio::MultiplexedConnection,
    id: i64,
    driver: Option<tokio::task::AbortHandle>,
}

impl Drop for PubConn {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}

/// The current publishing connection, if any.
#[derive(Default)]
struct PublisherSlot {
    current: RwLock<Option<Arc<PubConn>>>,
    broken: Notify,
}

impl PublisherSlot {
    fn get(&self) -> Option<Arc<PubConn>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn set(&self, conn: Option<Arc<PubConn>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = conn;
    }
}

async fn open_publisher(endpoint: &Endpoint, timeout: Duration) -> redis::RedisResult<PubConn> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let (mut conn, driver) = match endpoint.open_stream(timeout).await? {
        Some((stream, _)) => {
            let settings = endpoint.client.get_connection_info().redis_settings();
            let (conn, driver) =
                redis::aio::MultiplexedConnection::new_with_config(settings, stream, config)
                    .await?;
            (conn, Some(tokio::spawn(driver).abort_handle()))
        }
        None => (
            endpoint
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
            None,
        ),
    };
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await?;
    Ok(PubConn { conn, id, driver })
}

/// A transport the bus opened itself (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where the bus connects: the parsed URL (in its `redis://` form) and, for TLS, the rustls
/// connector (ring provider, `ca_file` or platform roots) and the name the certificate must
/// carry.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) client: redis::Client,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

fn io_error(kind: std::io::ErrorKind, message: String) -> redis::RedisError {
    std::io::Error::new(kind, message).into()
}

impl Endpoint {
    fn new(config: &RedisEventBusConfig, target: &str) -> Result<Self, EventBusError> {
        let (url, tls) = match config.url.strip_prefix("rediss://") {
            Some(rest) => (format!("redis://{rest}"), true),
            None => (config.url.clone(), config.connection.tls.ssl),
        };
        let client =
            redis::Client::open(url.as_str()).map_err(|e| EventBusError::InvalidConfig {
                key: "url".into(),
                reason: format!("{target}: {e}"),
            })?;
        let tls = if tls {
            let redis::ConnectionAddr::Tcp(host, _) = client.get_connection_info().addr() else {
                return Err(EventBusError::InvalidConfig {
                    key: "ssl".into(),
                    reason: format!("{target}: TLS needs a TCP address (host and port)"),
                });
            };
            let name =
                ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| {
                    EventBusError::InvalidConfig {
                        key: "url".into(),
                        reason: format!("{target}: {host:?} is not a valid TLS server name: {e}"),
                    }
                })?;
            let config = crate::tls::client_config(config.connection.tls.ca_file.as_deref())?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Endpoint { client, tls })
    }

    /// Opens TCP (then TLS, if configured) to a TCP address, returning the stream and the local
    /// address the server sees; `None` for other addresses (Unix sockets), which the redis
    /// client opens itself.
    pub(crate) async fn open_stream(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<Option<(Box<dyn Io>, String)>> {
        let redis::ConnectionAddr::Tcp(host, port) = self.client.get_connection_info().addr()
        else {
            return Ok(None);
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port)))
            .await
            .map_err(|_| {
                io_error(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {host}:{port} timed out after {timeout:?}"),
                )
            })??;
        tcp.set_nodelay(true)?;
        // TCP keepalive, as on the PostgreSQL bus: a peer that vanished (a crashed host, a
        // dropped NAT entry) is noticed by the kernel too, not only by the probes.
        socket2::SockRef::from(&tcp).set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10)),
        )?;
        let local = tcp.local_addr()?.to_string();
        let Some((connector, name)) = &self.tls else {
            return Ok(Some((Box::new(tcp), local)));
        };
        let stream = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| {
                io_error(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake with {host}:{port} timed out after {timeout:?}"),
                )
            })?
            .map_err(|e| {
                io_error(
                    e.kind(),
                    format!("TLS handshake with {host}:{port} failed: {e}"),
                )
            })?;
        Ok(Some((Box::new(stream), local)))
    }
}

/// The publishing connection's [`Link`]: keeps the slot filled while a connection is up and
/// empties it when the connection breaks (publishes then fail fast with `Disconnected`). A
/// publish that fails on a dead connection empties the slot and signals `broken`, which ends the
/// link's message stream; the supervisor also PINGs the connection.
struct PublishLink {
    slot: Arc<PublisherSlot>,
    endpoint: Endpoint,
    timeout: Duration,
}

impl Link for PublishLink {
    type Conn = Arc<PubConn>;
    type Message = std::convert::Infallible;
    type Error = redis::RedisError;

    const NAME: &'static str = "redis event bus: publish";

    async fn connect(&mut self) -> redis::RedisResult<Arc<PubConn>> {
        open_publisher(&self.endpoint, self.timeout)
            .await
            .map(Arc::new)
    }

    fn up(&mut self, conn: &Arc<PubConn>) {
        self.slot.set(Some(Arc::clone(conn)));
    }

    async fn recv(&mut self, _: &mut Arc<PubConn>) -> Option<std::convert::Infallible> {
        self.slot.broken.notified().await;
        None
    }

    async fn handle(
        &mut self,
        _: &mut Arc<PubConn>,
        message: std::convert::Infallible,
    ) -> redis::RedisResult<()> {
        match message {}
    }

    /// PINGs the connection; an emptied slot (a publish found it dead) counts as a failure.
    async fn probe(&mut self, conn: &mut Arc<PubConn>) -> bool {
        if self.slot.get().is_none() {
            return false;
        }
        let mut conn = conn.conn.clone();
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        ping.is_ok()
    }

    async fn close(&mut self, conn: Arc<PubConn>) {
        self.slot.set(None);
        drop(conn);
    }
}

/// The Redis pub/sub bus.
pub struct RedisEventBus {
    router: Arc<Router>,
    commands: mpsc::UnboundedSender<Command>,
    publisher: Arc<PublisherSlot>,
    pubsub_addr: Arc<Mutex<Option<String>>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    prefix: String,
    target: String,
}

impl std::fmt::Debug for RedisEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventBus")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .field("subscriptions", &self.router.count())
            .finish_non_exhaustive()
    }
}

impl RedisEventBus {
    /// Opens the pub/sub and publishing connections (an unreachable server is an error here)
    /// and starts the tasks that keep them alive.
    pub async fn connect(config: RedisEventBusConfig) -> Result<Self, EventBusError> {
        let target = redact(&config.url);
        let endpoint = Endpoint::new(&config, &target)?;
        Self::start(endpoint, config, target).await
    }

    /// A bus on the application's own `redis::Client` (its address, credentials, database and
    /// TLS settings; `config.url` and `config.connection.tls` are ignored). A `redis::Client`
    /// holds no connection: the bus opens its own two from it (a subscriber connection cannot be
    /// shared) and re-opens them from it after a failure.
    pub async fn with_client(
        client: redis::Client,
        config: RedisEventBusConfig,
    ) -> Result<Self, EventBusError> {
        let info = client.get_connection_info();
        let target = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}"),
            redis::ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            other => format!("redis://{other}"),
        };
        Self::start(Endpoint { client, tls: None }, config, target).await
    }

    async fn start(
        endpoint: Endpoint,
        config: RedisEventBusConfig,
        target: String,
    ) -> Result<Self, EventBusError> {
        let connect_error = |source: redis::RedisError| EventBusError::Connect {
            backend: "redis",
            target: target.clone(),
            source: Box::new(source),
        };
        let first_publisher = open_publisher(&endpoint, config.connection.connect_timeout)
            .await
            .map_err(connect_error)?;
        let pubsub_addr = Arc::new(Mutex::new(None));
        let first_listener =
            listener::open(&endpoint, config.connection.connect_timeout, &pubsub_addr)
                .await
                .map_err(connect_error)?;

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
        let first_publisher = Arc::new(first_publisher);
        slot.set(Some(Arc::clone(&first_publisher)));
        let pubsub = PubSubLink {
            endpoint: endpoint.clone(),
            connect_timeout: config.connection.connect_timeout,
            local_addr: Arc::clone(&pubsub_addr),
            prefix: config.channel_prefix.clone(),
            router: Arc::clone(&router),
            topics: Default::default(),
            patterns: Default::default(),
        };
        let pubsub_settings =
            Settings::listener(&config.connection, &router, command_rx, shutdown_rx.clone());
        let publish = PublishLink {
            slot: Arc::clone(&slot),
            endpoint,
            timeout: config.connection.connect_timeout,
        };
        // The publishing connection is PINGed with its response timeout, as its commands are.
        let publish_settings = Settings {
            backoff: config.connection.backoff(),
            probe: Some(Probe {
                every: config.connection.probe_interval,
                timeout: config.connection.connect_timeout,
            }),
            resync: None,
            commands: None,
            shutdown: shutdown_rx,
        };
        let tasks = vec![
            tokio::spawn(supervise(pubsub, first_listener, pubsub_settings)),
            tokio::spawn(supervise(publish, first_publisher, publish_settings)),
        ];
        Ok(RedisEventBus {
            router,
            commands,
            publisher: slot,
            pubsub_addr,
            shutdown,
            tasks: Mutex::new(tasks),
            closed: AtomicBool::new(false),
            prefix: config.channel_prefix,
            target,
        })
    }

    /// The channel `topic` is published on (the original's formula).
    pub fn channel_for(&self, topic: &str) -> Result<String, EventBusError> {
        validate_topic(topic)?;
        Ok(format!("{}:{topic}", self.prefix))
    }

    /// The address the server sees for the current pub/sub connection (TCP or TLS; not for
    /// Unix sockets), for `CLIENT KILL TYPE pubsub ADDR <addr>`.
    pub fn pubsub_client_addr(&self) -> Option<String> {
        self.pubsub_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The server-side `CLIENT ID` of the current publishing connection.
    pub fn publish_client_id(&self) -> Option<i64> {
        self.publisher.get().map(|c| c.id)
    }

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

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, topic: &str, event: &Event) -> Result<(), EventBusError> {
        validate_topic(topic)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(EventBusError::Closed {
                topic: topic.to_owned(),
            });
        }
        let Some(current) = self.publisher.get() else {
            return Err(EventBusError::Disconnected {
                backend: "redis",
                topic: topic.to_owned(),
            });
        };
        let mut conn = current.conn.clone();
        let channel = format!("{}:{topic}", self.prefix);
        let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(event.to_json())
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                if error.is_unrecoverable_error()
                    || error.is_connection_dropped()
                    || error.is_io_error()
                    || error.is_timeout()
                {
                    self.publisher.set(None);
                    self.publisher.broken.notify_one();
                }
                Err(EventBusError::Publish {
                    backend: "redis",
                    topic: topic.to_owned(),
                    source: Box::new(error),
                })
            }
        }
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, EventBusError> {
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
        self.publisher.set(None);
        Ok(())
    }

    fn subscription_count(&self) -> usize {
        self.router.count()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

impl Drop for RedisEventBus {
    fn drop(&mut self) {
        self.router.close();
        let _ = self.shutdown.send(true);
    }
}
