//! The one error type of the crate: every variant names the input it is about.

/// A boxed error from a transport (tokio-postgres, redis) or a parser. Crate-private: the
/// workspace's one public `BoxError` is `dynreg_registry_core::BoxError` (the same type).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on an event bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventBusError {
    /// A topic passed to `publish` or `subscribe` is not a valid topic name.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The rejected topic.
        topic: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A pattern passed to `subscribe_pattern` is not a valid glob.
    #[error("invalid topic pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Event JSON could not be decoded.
    #[error("invalid event JSON ({field}): {reason}")]
    InvalidEvent {
        /// The field that was missing or wrong (`"<document>"` for a syntax error).
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The configuration names a backend this crate does not know.
    #[error("unknown event bus backend: {backend:?}. Available backends: {available}")]
    UnknownBackend {
        /// The backend named in the configuration.
        backend: String,
        /// The backends built into this binary, comma separated.
        available: String,
    },
    /// The configuration names a backend whose cargo feature was not enabled.
    #[error(
        "event bus backend {backend:?} is not built: enable the `{feature}` feature of dynreg-event-bus"
    )]
    FeatureDisabled {
        /// The backend named in the configuration.
        backend: String,
        /// The cargo feature that builds it.
        feature: String,
    },
    /// A configuration key is missing or has a bad value.
    #[error("invalid event bus configuration key {key:?}: {reason}")]
    InvalidConfig {
        /// The configuration key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bus could not connect to its server when it was created. The message includes the
    /// transport error's causes (e.g. why a TLS handshake failed).
    #[error("{backend} event bus could not connect to {target}: {}", with_causes(.source.as_ref()))]
    Connect {
        /// `postgres` or `redis`.
        backend: &'static str,
        /// The server (credentials removed).
        target: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// The bus's publishing connection is down (it reconnects by itself); the event was not sent.
    #[error("{backend} event bus is disconnected; event for topic {topic:?} was not published")]
    Disconnected {
        /// `postgres` or `redis`.
        backend: &'static str,
        /// The topic of the event that was not sent.
        topic: String,
    },
    /// The server rejected or failed a publish; the event may not have been sent.
    #[error("{backend} event bus failed to publish to topic {topic:?}: {source}")]
    Publish {
        /// `postgres` or `redis`.
        backend: &'static str,
        /// The topic of the event.
        topic: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// The encoded event is larger than the transport allows and no claim check is configured.
    #[error(
        "event for topic {topic:?} is {size} bytes, over the {limit}-byte limit of the {backend} bus"
    )]
    PayloadTooLarge {
        /// `postgres` or `redis`.
        backend: &'static str,
        /// The topic of the event.
        topic: String,
        /// The encoded size in bytes.
        size: usize,
        /// The largest size the transport accepts.
        limit: usize,
    },
    /// The bus was closed; it accepts no more publishes or subscriptions.
    #[error("event bus is closed (operation on topic {topic:?})")]
    Closed {
        /// The topic (or pattern) of the refused operation.
        topic: String,
    },
}

/// `error: cause: cause ...`, skipping a cause whose text the message already contains.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}
