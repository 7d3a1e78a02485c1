//! The dedicated pub/sub connection, as a [`Link`] of the reconnect supervisor
//! (`crate::supervisor`), which owns it in one task, applies (P)SUBSCRIBE changes in order,
//! probes liveness (PING) and reconnects with back-off, re-subscribing everything, then signals
//! `Reconnected`. This module routes `message` to exact subscribers and `pmessage` to the
//! subscribers of that one pattern (never both to one subscription: no duplicates,
//! the original).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSub, PubSubSink, PubSubStream};

use super::Endpoint;
use crate::event::Event;
use crate::router::{Interest, Router};
use crate::supervisor::Link;

/// A live pub/sub connection and the client address the server sees for it.
pub(super) struct Established {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Opens a pub/sub connection; over TCP (and TLS) the socket is opened here so its local
/// address (the server's `addr` for it) is known, which lets tests `CLIENT KILL` exactly this
/// client.
pub(super) async fn open(
    endpoint: &Endpoint,
    timeout: Duration,
    local_addr: &Mutex<Option<String>>,
) -> Result<Established, redis::RedisError> {
    let pubsub = match endpoint.open_stream(timeout).await? {
        Some((stream, local)) => {
            *local_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(local);
            let settings = endpoint.client.get_connection_info().redis_settings();
            PubSub::new(settings, stream).await?
        }
        None => {
            *local_addr.lock().unwrap_or_else(|p| p.into_inner()) = None;
            endpoint.client.get_async_pubsub().await?
        }
    };
    let (sink, stream) = pubsub.split();
    Ok(Established { sink, stream })
}

/// The pub/sub connection's [`Link`]: what it subscribes to and where messages go.
pub(super) struct PubSubLink {
    pub(super) endpoint: Endpoint,
    pub(super) connect_timeout: Duration,
    pub(super) local_addr: Arc<Mutex<Option<String>>>,
    pub(super) prefix: String,
    pub(super) router: Arc<Router>,
    /// Exact topics subscribed.
    pub(super) topics: HashSet<String>,
    /// Redis glob → the bus patterns that translate to it.
    pub(super) patterns: HashMap<String, HashSet<String>>,
}

impl Link for PubSubLink {
    type Conn = Established;
    type Message = redis::Msg;
    type Error = redis::RedisError;

    const NAME: &'static str = "redis event bus: pub/sub";

    async fn connect(&mut self) -> redis::RedisResult<Established> {
        open(&self.endpoint, self.connect_timeout, &self.local_addr).await
    }

    /// SUBSCRIBEs every recorded topic's channel and PSUBSCRIBEs every recorded pattern.
    async fn restore(&mut self, conn: &mut Established) -> redis::RedisResult<()> {
        self.subscribe_all(&mut conn.sink).await
    }

    async fn recv(&mut self, conn: &mut Established) -> Option<redis::Msg> {
        conn.stream.next().await
    }

    async fn handle(&mut self, _: &mut Established, message: redis::Msg) -> redis::RedisResult<()> {
        self.route(&message);
        Ok(())
    }

    async fn apply(
        &mut self,
        conn: Option<&mut Established>,
        interest: Interest,
    ) -> redis::RedisResult<()> {
        self.apply_interest(conn.map(|c| &mut c.sink), interest)
            .await
    }

    async fn probe(&mut self, conn: &mut Established) -> bool {
        conn.sink.ping::<redis::Value>().await.is_ok()
    }

    async fn close(&mut self, conn: Established) {
        drop(conn);
    }

    fn interest_count(&self) -> usize {
        self.topics.len() + self.patterns.len()
    }
}

impl PubSubLink {
    fn channel(&self, topic: &str) -> String {
        format!("{}:{topic}", self.prefix)
    }

    fn redis_pattern(&self, glob: &crate::topic::Glob) -> String {
        format!(
            "{}:{}",
            super::escape_redis_glob(&self.prefix),
            glob.to_redis_glob()
        )
    }

    async fn subscribe_all(&self, sink: &mut PubSubSink) -> redis::RedisResult<()> {
        let channels: Vec<String> = self.topics.iter().map(|t| self.channel(t)).collect();
        if !channels.is_empty() {
            sink.subscribe(channels).await?;
        }
        let patterns: Vec<&String> = self.patterns.keys().collect();
        if !patterns.is_empty() {
            sink.psubscribe(patterns).await?;
        }
        Ok(())
    }

    async fn apply_interest(
        &mut self,
        sink: Option<&mut PubSubSink>,
        interest: Interest,
    ) -> redis::RedisResult<()> {
        match interest {
            Interest::TopicAdded(topic) => {
                let channel = self.channel(&topic);
                if self.topics.insert(topic)
                    && let Some(sink) = sink
                {
                    sink.subscribe(channel).await?;
                }
            }
            Interest::TopicRemoved(topic) => {
                let channel = self.channel(&topic);
                if self.topics.remove(&topic)
                    && let Some(sink) = sink
                {
                    sink.unsubscribe(channel).await?;
                }
            }
            Interest::PatternAdded(glob) => {
                let redis_pattern = self.redis_pattern(&glob);
                let originals = self.patterns.entry(redis_pattern.clone()).or_default();
                let first = originals.is_empty();
                originals.insert(glob.as_str().to_owned());
                if first && let Some(sink) = sink {
                    sink.psubscribe(redis_pattern).await?;
                }
            }
            Interest::PatternRemoved(glob) => {
                let redis_pattern = self.redis_pattern(&glob);
                if let Some(originals) = self.patterns.get_mut(&redis_pattern) {
                    originals.remove(glob.as_str());
                    if originals.is_empty() {
                        self.patterns.remove(&redis_pattern);
                        if let Some(sink) = sink {
                            sink.punsubscribe(redis_pattern).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn route(&self, message: &redis::Msg) {
        let Some(topic) = message
            .get_channel_name()
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            return;
        };
        let payload: String = match message.get_payload() {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%error, "redis event bus: non-text message dropped");
                return;
            }
        };
        let event = match Event::from_json(&payload) {
            Ok(event) => Arc::new(event),
            Err(error) => {
                tracing::warn!(%error, channel = message.get_channel_name(), "redis event bus: undecodable message dropped");
                return;
            }
        };
        if message.from_pattern() {
            let Ok(redis_pattern) = message.get_pattern::<String>() else {
                return;
            };
            if let Some(originals) = self.patterns.get(&redis_pattern) {
                let topic = Arc::from(topic);
                for original in originals {
                    self.router.dispatch_pattern(original, &topic, &event);
                }
            }
        } else if self.topics.contains(topic) {
            self.router.dispatch_exact(&Arc::from(topic), &event);
        }
    }
}
