//! The publishing connection: prepared `pg_notify` statements on one pipelined client, swapped
//! out when the connection dies and re-established with back-off by the reconnect supervisor
//! (`crate::supervisor`), through [`PublishLink`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::batch::{self, Pending};
use super::config::OversizePolicy;
use crate::supervisor::Link;

/// One live publishing connection.
pub(super) struct PubConn {
    pub(super) client: Arc<Client>,
    /// Queue of the group-commit task that sends ordinary publishes.
    pub(super) batches: mpsc::UnboundedSender<Pending>,
    /// Claim check: insert the body, then notify both channels with the claim marker.
    pub(super) claim: Option<Statement>,
    /// Deletes expired claim rows.
    pub(super) cleanup: Option<Statement>,
    /// Ends the task driving the connection (a publish that got no answer in time), which
    /// ends the connection's link, so the supervisor reconnects.
    pub(super) driver: tokio::task::AbortHandle,
}

/// The current publishing connection, if any.
#[derive(Default)]
pub(super) struct PublisherSlot {
    current: RwLock<Option<Arc<PubConn>>>,
}

impl PublisherSlot {
    pub(super) fn get(&self) -> Option<Arc<PubConn>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set(&self, conn: Option<Arc<PubConn>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = conn;
    }
}

/// Settings the publisher needs.
#[derive(Clone)]
pub(super) struct PublisherSettings {
    pub(super) pg_config: tokio_postgres::Config,
    /// TLS connector (its `sslmode` in `pg_config` says whether it is used).
    pub(super) tls: MakeRustlsConnect,
    pub(super) oversize: OversizePolicy,
    pub(super) claim_table: String,
    pub(super) pattern_channel: String,
}

/// Opens a publishing connection, prepares its statements (creating the claim table if needed).
pub(super) async fn open(
    settings: &PublisherSettings,
) -> Result<(PubConn, JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = settings.pg_config.connect(settings.tls.clone()).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres publish connection ended");
        }
    });
    match prepare(client, settings, driver.abort_handle()).await {
        Ok(conn) => Ok((conn, driver)),
        Err(error) => {
            driver.abort();
            Err(error)
        }
    }
}

async fn prepare(
    client: Client,
    settings: &PublisherSettings,
    driver: tokio::task::AbortHandle,
) -> Result<PubConn, tokio_postgres::Error> {
    let notify = client
        .prepare_typed(
            "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)",
            &[Type::TEXT_ARRAY, Type::TEXT_ARRAY],
        )
        .await?;
    let (claim, cleanup) = match settings.oversize {
        OversizePolicy::Reject => (None, None),
        OversizePolicy::ClaimCheck => {
            let table = &settings.claim_table;
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, body text NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now()); \
                 CREATE INDEX IF NOT EXISTS {table}_created_at ON {table} (created_at)"
            );
            // Two processes creating the table at once can collide on the catalog; retry once.
            if client.batch_execute(&ddl).await.is_err() {
                client.batch_execute(&ddl).await?;
            }
            let claim = client
                .prepare_typed(
                    &format!(
                        "WITH stored AS (INSERT INTO {table} (id, body) VALUES ($1, $2)) \
                         SELECT pg_notify($3, $4), pg_notify($5, $6)"
                    ),
                    &[Type::TEXT; 6],
                )
                .await?;
            let cleanup = client
                .prepare_typed(
                    &format!(
                        "DELETE FROM {table} WHERE created_at < now() - make_interval(secs => $1)"
                    ),
                    &[Type::FLOAT8],
                )
                .await?;
            (Some(claim), Some(cleanup))
        }
    };
    let client = Arc::new(client);
    let (batches, queue) = mpsc::unbounded_channel();
    tokio::spawn(batch::run(
        Arc::clone(&client),
        notify,
        settings.pattern_channel.clone(),
        queue,
    ));
    Ok(PubConn {
        client,
        batches,
        claim,
        cleanup,
        driver,
    })
}

/// A live publishing connection as the supervisor holds it: the connection (also in the slot
/// while it is up) and the task driving it, which ends when the connection does (`None` once
/// that end was seen: a finished `JoinHandle` must not be awaited again).
pub(super) struct Live {
    pub(super) conn: Arc<PubConn>,
    pub(super) driver: Option<JoinHandle<()>>,
}

/// The publishing connection's [`Link`]: keeps `slot` filled while a connection is up and
/// empties it when the connection dies (publishes then fail fast with `Disconnected`). No probe
/// and no messages: the connection's driver task ending is the end of its message stream.
pub(super) struct PublishLink {
    pub(super) slot: Arc<PublisherSlot>,
    pub(super) settings: PublisherSettings,
}

impl Link for PublishLink {
    type Conn = Live;
    type Message = std::convert::Infallible;
    type Error = tokio_postgres::Error;

    const NAME: &'static str = "postgres event bus: publish";

    async fn connect(&mut self) -> Result<Live, tokio_postgres::Error> {
        let (conn, driver) = open(&self.settings).await?;
        Ok(Live {
            conn: Arc::new(conn),
            driver: Some(driver),
        })
    }

    fn up(&mut self, live: &Live) {
        self.slot.set(Some(Arc::clone(&live.conn)));
    }

    async fn recv(&mut self, live: &mut Live) -> Option<std::convert::Infallible> {
        if let Some(driver) = &mut live.driver {
            let _ = driver.await;
            live.driver = None;
        }
        None
    }

    async fn handle(
        &mut self,
        _: &mut Live,
        message: std::convert::Infallible,
    ) -> Result<(), tokio_postgres::Error> {
        match message {}
    }

    async fn close(&mut self, live: Live) {
        self.slot.set(None);
        if let Some(driver) = live.driver {
            driver.abort();
            let _ = driver.await;
        }
    }
}

/// Deletes claim rows older than `ttl` (best effort; failures are logged).
pub(super) async fn cleanup_claims(conn: Arc<PubConn>, ttl: Duration) {
    if let Some(cleanup) = &conn.cleanup
        && let Err(error) = conn.client.execute(cleanup, &[&ttl.as_secs_f64()]).await
    {
        tracing::warn!(%error, "postgres event bus: claim cleanup failed");
    }
}
