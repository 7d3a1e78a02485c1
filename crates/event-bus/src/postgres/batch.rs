//! Group commit for NOTIFY: concurrent publishes on one connection are sent as one
//! `SELECT pg_notify(c, p) FROM unnest(...)` statement — one transaction, notifications in array
//! order — with up to 8 batches pipelined, sent in order. Postgres collapses identical (channel, payload)
//! pairs inside a transaction, so a batch is cut before any repeat: publishing the same event
//! twice still delivers it twice.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

/// Largest number of events in one statement.
const MAX_BATCH: usize = 256;

/// One publish waiting to be sent: (topic channel, body, pattern channel payload).
pub(super) struct Pending {
    pub(super) channel: String,
    pub(super) body: String,
    pub(super) pattern_payload: String,
    pub(super) done: oneshot::Sender<Result<(), Arc<tokio_postgres::Error>>>,
}

fn key(p: &Pending) -> u64 {
    let mut h = DefaultHasher::new();
    p.channel.hash(&mut h);
    p.body.hash(&mut h);
    h.finish()
}

/// Batches in flight at once (pipelined on the one connection, sent in order).
const MAX_IN_FLIGHT: usize = 8;

type Outcome = Result<(), Arc<tokio_postgres::Error>>;

async fn next_first(
    carry: &mut Option<Pending>,
    queue: &mut mpsc::UnboundedReceiver<Pending>,
) -> Option<Pending> {
    match carry.take() {
        Some(p) => Some(p),
        None => queue.recv().await,
    }
}

/// Sends queued publishes in batches until the queue's senders are gone or the connection fails.
pub(super) async fn run(
    client: Arc<Client>,
    statement: Statement,
    pattern_channel: String,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let mut carry: Option<Pending> = None;
    let mut in_flight = FuturesOrdered::new();
    let mut queue_open = true;
    loop {
        if !queue_open && carry.is_none() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some((batch, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let result: Outcome = result;
                let failed = result.is_err();
                for p in batch {
                    let p: Pending = p;
                    let _ = p.done.send(result.clone());
                }
                if failed && client.is_closed() {
                    // Fail everything still queued; the supervisor replaces the connection.
                    while let Some((batch, _)) = in_flight.next().await {
                        for p in batch {
                            let p: Pending = p;
                            let _ = p.done.send(result.clone());
                        }
                    }
                    if let Some(p) = carry.take() {
                        let _ = p.done.send(result.clone());
                    }
                    queue.close();
                    while let Some(p) = queue.recv().await {
                        let _ = p.done.send(result.clone());
                    }
                    return;
                }
            }
            first = next_first(&mut carry, &mut queue), if queue_open && in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else {
                    queue_open = false;
                    continue;
                };
                let batch = collect(first, &mut carry, &mut queue);
                let client = Arc::clone(&client);
                let statement = statement.clone();
                let pattern_channel = pattern_channel.clone();
                let mut send = Box::pin(async move {
                    let mut channels = Vec::with_capacity(batch.len() * 2);
                    let mut payloads = Vec::with_capacity(batch.len() * 2);
                    for p in &batch {
                        channels.push(p.channel.as_str());
                        payloads.push(p.body.as_str());
                        channels.push(pattern_channel.as_str());
                        payloads.push(p.pattern_payload.as_str());
                    }
                    let result = client.execute(&statement, &[&channels, &payloads]).await.map(drop).map_err(Arc::new);
                    drop((channels, payloads));
                    (batch, result)
                });
                // The first poll puts the request on the connection, so batches go out in order.
                if let std::task::Poll::Ready(done) = futures::poll!(send.as_mut()) {
                    in_flight.push_back(Box::pin(futures::future::ready(done)) as BoxedSend);
                } else {
                    in_flight.push_back(send as BoxedSend);
                }
            }
        }
    }
}

type BoxedSend =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<Pending>, Outcome)> + Send>>;

/// Takes `first` and whatever else is queued (up to [`MAX_BATCH`]), stopping before a repeat.
fn collect(
    first: Pending,
    carry: &mut Option<Pending>,
    queue: &mut mpsc::UnboundedReceiver<Pending>,
) -> Vec<Pending> {
    let mut seen = HashSet::new();
    seen.insert(key(&first));
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(p) => {
                if !seen.insert(key(&p)) {
                    *carry = Some(p);
                    break;
                }
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    batch
}
