//! The dedicated pub/sub connection: one task that owns it, applies (P)SUBSCRIBE changes in
//! order, routes `message` to exact subscribers and `pmessage` to the subscribers of that one
//! pattern (never both to one subscription: no duplicates, reference-spec §9.3 #25), probes
//! liveness and reconnects with back-off, then signals `Reconnected`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::Endpoint;
use crate::backoff::Backoff;
use crate::event::Event;
use crate::router::{Interest, Router};
use crate::subscription::ResyncReason;

/// What the bus asks of the listener task.
#[derive(Debug)]
pub(super) enum Command {
    Interest(Interest),
    Sync(oneshot::Sender<()>),
}

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

enum Outcome {
    Shutdown,
    Lost,
}

/// The listener task's state.
pub(super) struct Listener {
    pub(super) endpoint: Endpoint,
    pub(super) connect_timeout: Duration,
    pub(super) local_addr: Arc<Mutex<Option<String>>>,
    pub(super) prefix: String,
    pub(super) probe_interval: Duration,
    pub(super) backoff: Backoff,
    pub(super) router: Arc<Router>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Exact topics subscribed.
    pub(super) topics: HashSet<String>,
    /// Redis glob → the bus patterns that translate to it.
    pub(super) patterns: HashMap<String, HashSet<String>>,
}

impl Listener {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

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

    /// Runs until shutdown, starting with an already opened connection.
    pub(super) async fn run(mut self, first: Established) {
        let mut connection = Some(first);
        let mut reconnecting = false;
        while !self.stopping() {
            let mut est = match connection.take() {
                Some(c) => c,
                None => match open(&self.endpoint, self.connect_timeout, &self.local_addr).await {
                    Ok(c) => c,
                    Err(error) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(%error, ?delay, "redis event bus: pub/sub reconnect failed");
                        self.sleep_offline(delay).await;
                        continue;
                    }
                },
            };
            if let Err(error) = self.subscribe_all(&mut est.sink).await {
                let delay = self.backoff.next_delay();
                tracing::warn!(%error, ?delay, "redis event bus: re-subscribe failed");
                drop(est);
                self.sleep_offline(delay).await;
                continue;
            }
            self.backoff.reset();
            if reconnecting {
                tracing::warn!(
                    channels = self.topics.len(),
                    patterns = self.patterns.len(),
                    "redis event bus: re-established dropped pub/sub connection"
                );
                self.router.resync_all(ResyncReason::Reconnected);
            }
            let outcome = self.serve(&mut est).await;
            drop(est);
            match outcome {
                Outcome::Shutdown => break,
                Outcome::Lost => {
                    reconnecting = true;
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        ?delay,
                        "redis event bus: pub/sub connection lost; reconnecting"
                    );
                    self.sleep_offline(delay).await;
                }
            }
        }
    }

    async fn sleep_offline(&mut self, delay: Duration) {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                changed = self.shutdown.changed() => if changed.is_err() || *self.shutdown.borrow() { return },
                command = self.commands.recv() => match command {
                    Some(command) => {
                        let _ = self.apply(None, command).await;
                    }
                    None => return,
                },
            }
        }
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

    async fn serve(&mut self, est: &mut Established) -> Outcome {
        let mut probe = tokio::time::interval(self.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return Outcome::Shutdown;
                    }
                }
                message = est.stream.next() => match message {
                    Some(message) => self.handle(&message),
                    None => return Outcome::Lost,
                },
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if self.apply(Some(&mut est.sink), command).await.is_err() {
                            return Outcome::Lost;
                        }
                    }
                    None => return Outcome::Shutdown,
                },
                _ = probe.tick() => {
                    let alive = tokio::time::timeout(self.probe_interval.max(Duration::from_secs(1)), est.sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return Outcome::Lost;
                    }
                }
            }
        }
    }

    async fn apply(
        &mut self,
        sink: Option<&mut PubSubSink>,
        command: Command,
    ) -> redis::RedisResult<()> {
        match command {
            Command::Sync(ack) => {
                let _ = ack.send(());
            }
            Command::Interest(Interest::TopicAdded(topic)) => {
                let channel = self.channel(&topic);
                if self.topics.insert(topic)
                    && let Some(sink) = sink
                {
                    sink.subscribe(channel).await?;
                }
            }
            Command::Interest(Interest::TopicRemoved(topic)) => {
                let channel = self.channel(&topic);
                if self.topics.remove(&topic)
                    && let Some(sink) = sink
                {
                    sink.unsubscribe(channel).await?;
                }
            }
            Command::Interest(Interest::PatternAdded(glob)) => {
                let redis_pattern = self.redis_pattern(&glob);
                let originals = self.patterns.entry(redis_pattern.clone()).or_default();
                let first = originals.is_empty();
                originals.insert(glob.as_str().to_owned());
                if first && let Some(sink) = sink {
                    sink.psubscribe(redis_pattern).await?;
                }
            }
            Command::Interest(Interest::PatternRemoved(glob)) => {
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

    fn handle(&self, message: &redis::Msg) {
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
