//! The dedicated LISTEN connection: one task that owns it, applies subscription changes in order,
//! routes notifications into the subscriber table, probes liveness, and reconnects with back-off
//! (re-LISTENing every channel, then signalling `Reconnected` to every subscription).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::channel::{ChannelNaming, quote_ident, topic_channel};
use super::{CLAIM_PREFIX, split_pattern_payload};
use crate::backoff::Backoff;
use crate::event::Event;
use crate::router::{Interest, Router};
use crate::subscription::ResyncReason;

/// What the bus asks of the listener task.
#[derive(Debug)]
pub(super) enum Command {
    /// The subscriber table's server-side interest changed.
    Interest(Interest),
    /// Acknowledge once every earlier command has been applied.
    Sync(oneshot::Sender<()>),
}

/// A live LISTEN connection.
pub(super) struct Established {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    forwarder: JoinHandle<()>,
}

/// Opens a connection and starts the task that forwards its notifications.
pub(super) async fn open(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<Established, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (tx, notifications) = mpsc::unbounded_channel();
    let forwarder = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "postgres LISTEN connection ended");
                    break;
                }
            }
        }
    });
    Ok(Established {
        client,
        notifications,
        forwarder,
    })
}

enum Outcome {
    Shutdown,
    Lost,
}

/// The listener task's state.
pub(super) struct Listener {
    pub(super) pg_config: tokio_postgres::Config,
    /// TLS connector (its `sslmode` in `pg_config` says whether it is used).
    pub(super) tls: MakeRustlsConnect,
    pub(super) naming: ChannelNaming,
    pub(super) prefix: String,
    pub(super) pattern_channel: String,
    pub(super) claim_table: String,
    pub(super) probe_interval: Duration,
    pub(super) backoff: Backoff,
    pub(super) router: Arc<Router>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// channel → the topics of this bus that map to it (several only with the original formula).
    pub(super) routes: HashMap<String, HashSet<String>>,
    pub(super) patterns: usize,
}

impl Listener {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs until shutdown, starting with an already opened connection.
    pub(super) async fn run(mut self, first: Established) {
        let mut connection = Some(first);
        let mut reconnecting = false;
        while !self.stopping() {
            let established = match connection.take() {
                Some(c) => c,
                None => match open(&self.pg_config, &self.tls).await {
                    Ok(c) => c,
                    Err(error) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(%error, ?delay, "postgres event bus: LISTEN reconnect failed");
                        self.sleep_offline(delay).await;
                        continue;
                    }
                },
            };
            if let Err(error) = self.listen_all(&established.client).await {
                let delay = self.backoff.next_delay();
                tracing::warn!(%error, ?delay, "postgres event bus: re-LISTEN failed");
                close(established).await;
                self.sleep_offline(delay).await;
                continue;
            }
            self.backoff.reset();
            if reconnecting {
                tracing::warn!(
                    channels = self.routes.len(),
                    "postgres event bus: re-established dropped LISTEN connection"
                );
                self.router.resync_all(ResyncReason::Reconnected);
            }
            let mut established = established;
            let outcome = self.serve(&mut established).await;
            close(established).await;
            match outcome {
                Outcome::Shutdown => break,
                Outcome::Lost => {
                    reconnecting = true;
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        ?delay,
                        "postgres event bus: LISTEN connection lost; reconnecting"
                    );
                    self.sleep_offline(delay).await;
                }
            }
        }
    }

    /// Waits `delay`, applying commands meanwhile (there is no connection to LISTEN on: the
    /// channels are recorded and LISTENed after the reconnect).
    async fn sleep_offline(&mut self, delay: Duration) {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                changed = self.shutdown.changed() => if changed.is_err() || *self.shutdown.borrow() { return },
                command = self.commands.recv() => match command {
                    Some(command) => {
                        // Without a client nothing can fail.
                        let _ = self.apply(None, command).await;
                    }
                    None => return,
                },
            }
        }
    }

    async fn listen_all(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let mut sql = String::new();
        for channel in self.routes.keys() {
            sql.push_str(&format!("LISTEN {};", quote_ident(channel)));
        }
        if self.patterns > 0 {
            sql.push_str(&format!("LISTEN {};", quote_ident(&self.pattern_channel)));
        }
        if sql.is_empty() {
            Ok(())
        } else {
            client.batch_execute(&sql).await
        }
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
                notification = est.notifications.recv() => match notification {
                    Some(n) => {
                        if self.handle(&est.client, n).await.is_err() {
                            return Outcome::Lost;
                        }
                    }
                    None => return Outcome::Lost,
                },
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if self.apply(Some(&est.client), command).await.is_err() {
                            return Outcome::Lost;
                        }
                    }
                    None => return Outcome::Shutdown,
                },
                _ = probe.tick() => {
                    let alive = tokio::time::timeout(self.probe_interval.max(Duration::from_secs(1)), est.client.simple_query("SELECT 1")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return Outcome::Lost;
                    }
                }
            }
        }
    }

    async fn apply(
        &mut self,
        client: Option<&Client>,
        command: Command,
    ) -> Result<(), tokio_postgres::Error> {
        match command {
            Command::Sync(ack) => {
                let _ = ack.send(());
            }
            Command::Interest(Interest::TopicAdded(topic)) => {
                // The bus validated the topic's channel before subscribing.
                let Ok(channel) = topic_channel(self.naming, &self.prefix, &topic) else {
                    return Ok(());
                };
                let topics = self.routes.entry(channel.clone()).or_default();
                let first = topics.is_empty();
                topics.insert(topic);
                if first && let Some(client) = client {
                    client
                        .batch_execute(&format!("LISTEN {}", quote_ident(&channel)))
                        .await?;
                }
            }
            Command::Interest(Interest::TopicRemoved(topic)) => {
                let Ok(channel) = topic_channel(self.naming, &self.prefix, &topic) else {
                    return Ok(());
                };
                if let Some(topics) = self.routes.get_mut(&channel) {
                    topics.remove(&topic);
                    if topics.is_empty() {
                        self.routes.remove(&channel);
                        if let Some(client) = client {
                            client
                                .batch_execute(&format!("UNLISTEN {}", quote_ident(&channel)))
                                .await?;
                        }
                    }
                }
            }
            Command::Interest(Interest::PatternAdded(_)) => {
                self.patterns += 1;
                if self.patterns == 1
                    && let Some(client) = client
                {
                    client
                        .batch_execute(&format!("LISTEN {}", quote_ident(&self.pattern_channel)))
                        .await?;
                }
            }
            Command::Interest(Interest::PatternRemoved(_)) => {
                self.patterns = self.patterns.saturating_sub(1);
                if self.patterns == 0
                    && let Some(client) = client
                {
                    client
                        .batch_execute(&format!("UNLISTEN {}", quote_ident(&self.pattern_channel)))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Routes one notification. `Err` only when the connection failed while fetching a claim.
    async fn handle(&self, client: &Client, n: Notification) -> Result<(), tokio_postgres::Error> {
        if n.channel() == self.pattern_channel {
            if self.patterns == 0 {
                return Ok(());
            }
            let Some((topic, body)) = split_pattern_payload(n.payload()) else {
                tracing::warn!(
                    channel = n.channel(),
                    "postgres event bus: malformed pattern notification dropped"
                );
                return Ok(());
            };
            if let Some(event) = self.decode(client, body).await? {
                self.router
                    .dispatch_patterns(&Arc::from(topic), &Arc::new(event));
            }
        } else if let Some(topics) = self.routes.get(n.channel())
            && let Some(event) = self.decode(client, n.payload()).await?
        {
            let event = Arc::new(event);
            for topic in topics {
                self.router
                    .dispatch_exact(&Arc::from(topic.as_str()), &event);
            }
        }
        Ok(())
    }

    async fn decode(
        &self,
        client: &Client,
        body: &str,
    ) -> Result<Option<Event>, tokio_postgres::Error> {
        let owned;
        let json = match body.strip_prefix(CLAIM_PREFIX) {
            None => body,
            Some(id) => {
                let sql = format!("SELECT body FROM {} WHERE id = $1", self.claim_table);
                match client.query_opt(&sql, &[&id]).await {
                    Ok(Some(row)) => {
                        owned = row.get::<_, String>(0);
                        owned.as_str()
                    }
                    Ok(None) => {
                        tracing::error!(
                            claim = id,
                            "postgres event bus: claim-check row missing (expired?); signalling resync"
                        );
                        self.router.resync_all(ResyncReason::Lagged { missed: 1 });
                        return Ok(None);
                    }
                    Err(error) if client.is_closed() => return Err(error),
                    Err(error) => {
                        tracing::error!(claim = id, %error, "postgres event bus: claim-check fetch failed; signalling resync");
                        self.router.resync_all(ResyncReason::Lagged { missed: 1 });
                        return Ok(None);
                    }
                }
            }
        };
        match Event::from_json(json) {
            Ok(event) => Ok(Some(event)),
            Err(error) => {
                tracing::warn!(%error, "postgres event bus: undecodable notification dropped");
                Ok(None)
            }
        }
    }
}

async fn close(established: Established) {
    let Established {
        client,
        notifications,
        forwarder,
    } = established;
    drop(client);
    drop(notifications);
    forwarder.abort();
    let _ = forwarder.await;
}
