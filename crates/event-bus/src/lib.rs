//! # dynreg-event-bus
//!
//! The event bus that hot reload, caches and ingestion publish on: the original's `Event` /
//! `EventType` model and JSON wire format (so Python and Rust processes on one server read each
//! other's events), one small [`EventBus`] trait, and three buses with **one set of semantics**:
//!
//! | bus | feature | transport |
//! |---|---|---|
//! | [`InMemoryEventBus`] | always built | in-process |
//! | `postgres::PostgresEventBus` | `postgres` | `LISTEN`/`NOTIFY` over tokio-postgres |
//! | `redis::RedisEventBus` | `redis` | Redis pub/sub (redis 1.x, tokio) |
//!
//! The `conformance` feature exports the suite every bus's tests run.
//!
//! ## Semantics (every bus)
//! * `subscribe(topic)` receives events published to exactly that bus topic;
//!   `subscribe_pattern(glob)` receives every topic the `fnmatch`-style glob matches.
//!   Each subscription receives a matching event once — the transport never duplicates.
//! * Per-topic publish order is preserved for each subscription.
//! * Each subscription has a bounded queue: `publish` never waits for a consumer. When a queue is
//!   full, events for it are dropped and it yields [`Delivery::Resync`] with
//!   [`ResyncReason::Lagged`]; after a server reconnect every subscription yields
//!   [`ResyncReason::Reconnected`]. The transports are at-most-once: a resync means "re-read".
//! * Server connections (listening and publishing) reconnect by themselves with capped
//!   exponential back-off whose jitter survives the cap ([`Backoff`]), every one of them driven
//!   by one reconnect supervisor (probing, back-off, `Reconnected` after a listener's reconnect,
//!   prompt shutdown). Publishing while disconnected returns [`EventBusError::Disconnected`];
//!   nothing is dropped silently.
//! * Topics are validated ([`validate_topic`]). `close()` ends every background task and every
//!   subscription.
//!
//! ## Configuration (`create_event_bus`)
//! `{"backend": "memory", "capacity": 1024}` (the default when `backend` is absent);
//! `{"backend": "postgres", "url": "postgres://...", "channel_prefix": "events",
//! "channel_naming": "collision_free" | "original", "oversize": "claim_check" | "reject", ...}`;
//! `{"backend": "redis", "url": "redis://127.0.0.1:6379", "channel_prefix": "events", ...}`.
//! Unknown keys are rejected. See `postgres::PostgresEventBusConfig::from_json` and
//! `redis::RedisEventBusConfig::from_json` for every key. The options both server buses have —
//! `capacity`, `reconnect_base_ms`, `reconnect_max_ms`, `probe_interval_ms`,
//! `connect_timeout_ms`, `ssl`, `ca_file` — are one `ConnectionOptions` (the `connection` field
//! of both configs), read by one reader with one set of keys and defaults.
//!
//! ## TLS (Postgres and Redis buses)
//! | key / URL | meaning |
//! |---|---|
//! | `"ssl": true` (or `"true"`) | the connections must use TLS. Redis: also a `rediss://` URL. Postgres: also `sslmode=require` (or libpq's `verify-ca` / `verify-full`) in the URL. |
//! | `"ca_file": "/path/ca.pem"` | trust only the CA certificates in this PEM file (e.g. the RDS or a private CA bundle), like libpq's `sslrootcert`. Without it: the platform trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), else the Mozilla roots. |
//!
//! TLS is rustls with the `ring` provider chosen explicitly (this workspace builds rustls with
//! both `ring` and `aws-lc-rs`, so rustls cannot pick a process default by itself, and a library
//! must not install one). The server's certificate chain **and host name** (DNS name or IP
//! address) are always verified — there is no unverified mode; for Postgres, `host=<name in the
//! certificate> hostaddr=<ip>` connects to an address while verifying a name. A TLS failure is
//! [`EventBusError::Connect`] naming the server (`... (TLS)`) and the reason (`invalid peer
//! certificate: UnknownIssuer`, `server does not support TLS`, a handshake timeout).
//!
//! ## Performance of the in-process bus
//! A publish looks its topic up in a route cache (validated topic, matching exact and pattern
//! subscriptions; cleared by every subscribe, unsubscribe and close), then queues one
//! `Arc<Event>` per subscription; [`Delivery::Event`] carries that `Arc` and an `Arc<str>` topic,
//! so fan-out never copies an event. [`EventBus::publish`] copies the caller's event once per
//! publish; [`EventBus::publish_shared`] takes an `Arc<Event>` and copies nothing. A parked
//! consumer is woken once per batch, not once per event.
//!
//! ## Wire compatibility with the original
//! Events are the original's JSON, byte for byte (`", "`/`": "` separators, `ensure_ascii`,
//! `isoformat()` timestamps, floats as Python's `repr`: `1e-05`, `1e+16`, `100.0`). Payloads
//! pass through unchanged: the workspace builds serde_json with `arbitrary_precision` and
//! `preserve_order`, so integers of any size stay exact and keys keep their order. Redis channels are the original's `{prefix}:{topic}`. Postgres
//! channels are collision-free by default (`{prefix}:{topic}`, quoted); the original's formula
//! (`events_registry_bots`) is available for mixed fleets, with its collisions documented on
//! `postgres::ChannelNaming::Original`. Postgres events over the 8000-byte NOTIFY limit go
//! through a claim-check table (or are refused with `PayloadTooLarge`); Python processes of the
//! original cannot read claim-checked events, nor see dynreg's pattern channel.
//!
//! ## Why tokio-postgres and not sqlx (which the registry uses)
//! The Postgres bus needs one *dedicated* connection that stays in `LISTEN` and streams
//! asynchronous notifications alongside query results, and a publishing connection that
//! pipelines many concurrent `pg_notify` calls. tokio-postgres exposes exactly that
//! (`Connection::poll_message` yields `AsyncMessage::Notification`; one `Client` pipelines
//! concurrent queries). sqlx's `PgListener` owns its connection and hides reconnects (it
//! reconnects silently, so the bus could not emit its resync signal), and a sqlx pool would
//! spread publishes over several connections, losing the single-connection publish order.
//!
//! ## Example
//! ```
//! # async fn demo() -> Result<(), dynreg_event_bus::EventBusError> {
//! use dynreg_event_bus::{create_event_bus, Delivery, Event, EventType};
//! let bus = create_event_bus(&serde_json::json!({"backend": "memory"})).await?;
//! let mut sub = bus.subscribe_pattern("registry:*").await?;
//! bus.publish("registry:configs", &Event::new(EventType::Updated, "registry:configs:bot-1", Default::default())).await?;
//! if let Some(Delivery::Event { topic, event }) = sub.next().await {
//!     assert_eq!(&*topic, "registry:configs");
//!     assert_eq!(event.event_type, EventType::Updated);
//! }
//! bus.close().await?;
//! # Ok(()) }
//! ```

mod backoff;
mod config;
mod error;
mod event;
mod factory;
mod handler;
mod memory;
mod python_json;
mod router;
mod subscription;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod supervisor;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod tls;
mod topic;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

pub use backoff::Backoff;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub use config::{ConnectionOptions, TlsOptions};
pub use error::EventBusError;
pub use event::{Event, EventType, new_uuid_v4, parse_timestamp, python_isoformat};
pub use factory::{available_backends, create_event_bus};
pub use handler::spawn_handler;
pub use memory::InMemoryEventBus;
pub use subscription::{DEFAULT_CAPACITY, Delivery, ResyncReason, Subscription, SubscriptionKind};
pub use topic::{Glob, MAX_TOPIC_LEN, validate_topic};

use std::sync::Arc;

/// A publish/subscribe bus. Implementations: [`InMemoryEventBus`], `postgres::PostgresEventBus`,
/// `redis::RedisEventBus`; build one from configuration with [`create_event_bus`].
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `event` on bus topic `topic` (routing uses this topic, not `event.topic`).
    /// Returns once the transport accepted the event; an error means it was not (or may not have
    /// been) sent — never a silent drop.
    async fn publish(&self, topic: &str, event: &Event) -> Result<(), EventBusError>;

    /// Like [`EventBus::publish`], for an event the caller already holds in an `Arc`: the
    /// in-process bus hands this very `Arc` to every subscription (no copy at all); server buses
    /// serialise it as `publish` does (the default).
    async fn publish_shared(&self, topic: &str, event: Arc<Event>) -> Result<(), EventBusError> {
        self.publish(topic, &event).await
    }

    /// Subscribes to exactly `topic`. Events published after this returns are delivered.
    async fn subscribe(&self, topic: &str) -> Result<Subscription, EventBusError>;

    /// Subscribes to every topic matching the `fnmatch`-style glob `pattern` (e.g. `registry:*`).
    async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription, EventBusError>;

    /// Ends every subscription and background task; later publishes and subscribes fail with
    /// [`EventBusError::Closed`]. Idempotent.
    async fn close(&self) -> Result<(), EventBusError>;

    /// Number of live subscriptions on this bus handle.
    fn subscription_count(&self) -> usize {
        0
    }

    /// The backend's name: `memory`, `postgres` or `redis`.
    fn kind(&self) -> &'static str {
        "custom"
    }
}
