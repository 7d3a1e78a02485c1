//! The dedicated LISTEN connection, as a [`Link`] of the reconnect supervisor
//! (`crate::supervisor`), which owns it in one task, applies subscription changes in order,
//! probes liveness (`SELECT 1`) and reconnects with back-off, re-LISTENing every channel, then
//! signalling `Reconnected` to every subscription. This module knows LISTEN/UNLISTEN and how
//! notifications (and claim-checked events) are routed into the subscriber table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::channel::{ChannelNaming, quote_ident, topic_channel};
use super::{CLAIM_PREFIX, split_pattern_payload};
use crate::event::Event;
use crate::router::{Interest, Router};
use crate::subscription::ResyncReason;

/// Notifications waiting between the connection and the routing task. Invariant: the queue a
/// remote publisher can fill is bounded; when routing falls this far behind, further
/// notifications are dropped and counted (the socket keeps being read, so the connection's own
/// queries — claim-check fetches, probes — still get their answers), and every subscriber is
/// told to resync (`Lagged`) before the next notification is routed.
pub(super) const FORWARD_CAPACITY: usize = 16_384;
use crate::supervisor::Link;

/// A live LISTEN connection.
pub(super) struct Established {
    client: Client,
    notifications: mpsc::Receiver<Notification>,
    /// Notifications dropped because the queue was full (since the last resync).
    dropped: Arc<AtomicU64>,
    forwarder: JoinHandle<()>,
}

/// Opens a connection and starts the task that forwards its notifications.
pub(super) async fn open(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    capacity: usize,
) -> Result<Established, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (tx, notifications) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&dropped);
    let forwarder = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => match tx.try_send(n) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                },
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
        dropped,
        forwarder,
    })
}

/// The LISTEN connection's [`Link`]: what it listens to and where notifications go.
pub(super) struct ListenLink {
    pub(super) pg_config: tokio_postgres::Config,
    /// TLS connector (its `sslmode` in `pg_config` says whether it is used).
    pub(super) tls: MakeRustlsConnect,
    pub(super) naming: ChannelNaming,
    pub(super) prefix: String,
    pub(super) pattern_channel: String,
    pub(super) claim_table: String,
    pub(super) router: Arc<Router>,
    /// channel → the topics of this bus that map to it (several only with the original formula).
    pub(super) routes: HashMap<String, HashSet<String>>,
    pub(super) patterns: usize,
    /// The capacity of the forwarding queue ([`FORWARD_CAPACITY`] unless configured).
    pub(super) forward_capacity: usize,
}

impl Link for ListenLink {
    type Conn = Established;
    type Message = Notification;
    type Error = tokio_postgres::Error;

    const NAME: &'static str = "postgres event bus: LISTEN";

    async fn connect(&mut self) -> Result<Established, tokio_postgres::Error> {
        open(&self.pg_config, &self.tls, self.forward_capacity).await
    }

    /// LISTENs on every recorded channel (and the pattern channel if a pattern is subscribed).
    async fn restore(&mut self, conn: &mut Established) -> Result<(), tokio_postgres::Error> {
        self.listen_all(&conn.client).await
    }

    async fn recv(&mut self, conn: &mut Established) -> Option<Notification> {
        let next = conn.notifications.recv().await;
        let missed = conn.dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            tracing::warn!(
                missed,
                "postgres event bus: notifications arrived faster than they could be routed; subscribers resync"
            );
            self.router.resync_all(ResyncReason::Lagged { missed });
        }
        next
    }

    async fn handle(
        &mut self,
        conn: &mut Established,
        notification: Notification,
    ) -> Result<(), tokio_postgres::Error> {
        self.route(&conn.client, notification).await
    }

    async fn apply(
        &mut self,
        conn: Option<&mut Established>,
        interest: Interest,
    ) -> Result<(), tokio_postgres::Error> {
        self.apply_interest(conn.map(|c| &c.client), interest).await
    }

    async fn probe(&mut self, conn: &mut Established) -> bool {
        conn.client.simple_query("SELECT 1").await.is_ok()
    }

    async fn close(&mut self, conn: Established) {
        close(conn).await;
    }

    fn interest_count(&self) -> usize {
        self.routes.len() + usize::from(self.patterns > 0)
    }
}

impl ListenLink {
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

    async fn apply_interest(
        &mut self,
        client: Option<&Client>,
        interest: Interest,
    ) -> Result<(), tokio_postgres::Error> {
        match interest {
            Interest::TopicAdded(topic) => {
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
            Interest::TopicRemoved(topic) => {
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
            Interest::PatternAdded(_) => {
                self.patterns += 1;
                if self.patterns == 1
                    && let Some(client) = client
                {
                    client
                        .batch_execute(&format!("LISTEN {}", quote_ident(&self.pattern_channel)))
                        .await?;
                }
            }
            Interest::PatternRemoved(_) => {
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
    async fn route(&self, client: &Client, n: Notification) -> Result<(), tokio_postgres::Error> {
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
        ..
    } = established;
    drop(client);
    drop(notifications);
    forwarder.abort();
    let _ = forwarder.await;
}
