//! Group commit for PostgreSQL writes: the writes that arrive while one is running are sent
//! together as one statement, so they share one transaction and one WAL flush.
//!
//! Every write locks the registry's counter row until its transaction commits, so writes of
//! separate transactions can never share a flush: N concurrent durable writes cost N flushes
//! one after the other. Here they queue instead. A background task (spawned when writes queued
//! behind a running one, and ending when the queue is empty again) takes everything queued and runs
//! `<table>_write` once per write inside one statement (`unnest ... CROSS JOIN LATERAL`). Each
//! call still sees the calls before it, so the result is exactly that of running the writes one
//! after another in queue order: conditions are checked against the writes ahead of them. If
//! the batch statement fails as a whole, each of its writes is retried on its own, so one
//! write's error never becomes another's. A lone write is sent as the single-write statement.
//!
//! A write that fails because its connection was dead (the server dropped it, restarted, or
//! the network cut it) is tried once more on a live connection — after checking that it did
//! not land: a connection can die after the server committed the statement and before the
//! answer arrived, and a blind re-run would then report `Unchanged` (or a conflict) for a write
//! that happened. A write has landed when its row carries its own `updated_at` (the write's
//! microsecond timestamp), hash and status; its result is then rebuilt from the row.
//!
//! A write that finds the queue idle runs on its caller's task, so a lone writer pays for no
//! spawn or hand-off. Everything queued behind it is owned by a drain task, so a caller that
//! stops waiting (its future dropped) never leaves other writers stuck; a queued write whose
//! caller went away still commits, as it would have once its statement was sent.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dynreg_registry_core::{RegistryError, Result};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow, Postgres};
use tokio::sync::oneshot;

use sqlx::Row;

use super::sql::outcome;
use super::{KIND, WriteRow, db_err, q};

/// The most writes sent in one statement.
const MAX_BATCH: usize = 512;

/// The arguments of one `<table>_write` call.
pub(super) struct WriteArgs {
    pub bot_id: String,
    pub config: Option<String>,
    pub hash: String,
    pub status: String,
    pub metadata: Option<String>,
    pub at: i64,
    pub cond: i32,
    pub expected: Option<i64>,
}

type Reply = oneshot::Sender<Result<WriteRow>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<(WriteArgs, Reply)>,
    /// A drain task is running (it will see anything pushed before it finds the queue empty).
    draining: bool,
}

/// The write queue of one backend instance.
pub(super) struct Batcher {
    pool: PgPool,
    single: Arc<str>,
    batch: Arc<str>,
    /// `SELECT COLUMNS ... WHERE bot_id = $1`: did a write on a dead connection land?
    select_one: Arc<str>,
    queue: Mutex<Queue>,
    /// The connection writes run on, taken from the pool at the first write and kept: only one
    /// write statement runs at a time (the queue's head), so it is never contended, and a
    /// write skips the pool's acquire and its release (which sqlx does on a spawned task).
    /// Closed after any error, so a broken connection is never used twice.
    conn: tokio::sync::Mutex<Option<PoolConnection<Postgres>>>,
    /// Whether `conn` is kept between writes: only when the pool has room for readers too
    /// (`pool_size` ≥ 2); with a pool of one, each write gives the connection back.
    keep: bool,
}

impl Batcher {
    pub fn new(pool: PgPool, single: Arc<str>, batch: Arc<str>, select_one: Arc<str>) -> Self {
        Batcher {
            keep: pool.options().get_max_connections() > 1,
            pool,
            single,
            batch,
            select_one,
            queue: Mutex::default(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Gives the write connection back to the pool (before the pool closes, which waits for
    /// every connection to come back).
    pub async fn release_connection(&self) {
        self.conn.lock().await.take();
    }

    /// The write connection, acquired from the pool if there is none.
    async fn connection(&self) -> std::result::Result<WriteConnection<'_>, sqlx::Error> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(self.pool.acquire().await?);
        }
        Ok(WriteConnection {
            slot,
            keep: self.keep,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one write, or queues it behind the one running, and waits for its result.
    ///
    /// A write that finds the queue idle runs on the caller's task (no spawn, no hand-off: the
    /// common case of one writer costs nothing extra); writes that arrive meanwhile queue, and
    /// when it finishes (or its caller stops waiting) a drain task takes them over as batches.
    pub async fn write(self: &Arc<Self>, args: WriteArgs) -> Result<WriteRow> {
        let (tx, rx) = oneshot::channel();
        // Decided and queued under one lock, so a release in between cannot strand the write.
        let turn = {
            let mut q = self.lock();
            if std::mem::replace(&mut q.draining, true) {
                let bot_id = args.bot_id.clone();
                q.waiting.push((args, tx));
                Err(bot_id)
            } else {
                Ok(args)
            }
        };
        let bot_id = match turn {
            Ok(args) => {
                let _hand_off = HandOff(self);
                return self.run_one(&args).await;
            }
            Err(queued) => queued,
        };
        rx.await.unwrap_or_else(|_| {
            Err(RegistryError::storage(
                KIND,
                "write",
                Some(&bot_id),
                "the write task ended without an answer",
            ))
        })
    }

    /// Ends a turn at the head of the queue: hands what queued meanwhile to a drain task, or
    /// marks the queue idle.
    fn release(self: &Arc<Self>) {
        let mut q = self.lock();
        if q.waiting.is_empty() {
            q.draining = false;
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            drop(q);
            rt.spawn(Arc::clone(self).drain());
        } else {
            // No runtime left to run them (shutdown): their writers get an error.
            q.draining = false;
            q.waiting.clear();
        }
    }

    async fn drain(self: Arc<Self>) {
        // If this task panics, the guard clears `draining` and drops the queued replies, so
        // their writers get an error instead of waiting forever.
        let guard = DrainGuard(&self);
        loop {
            let work = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    q.draining = false;
                    break;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect::<Vec<_>>()
            };
            self.run(work).await;
        }
        std::mem::forget(guard);
    }

    async fn run(&self, work: Vec<(WriteArgs, Reply)>) {
        let mut suspect = false;
        if work.len() > 1 {
            match self.run_batch(&work).await {
                Ok(rows) if rows.len() == work.len() => {
                    for ((args, reply), row) in work.into_iter().zip(rows) {
                        let _ = reply.send(
                            WriteRow::decode(&row).map_err(db_err("write", Some(&args.bot_id))),
                        );
                    }
                    return;
                }
                // Retry one by one below: one write's error must not become the others'. If
                // the connection died, the batch may have committed: check each write first.
                Ok(_) => {}
                Err(e) => suspect = dead_connection(&e),
            }
        }
        for (args, reply) in work {
            let result = if suspect {
                self.recover(&args).await
            } else {
                self.run_one(&args).await
            };
            let _ = reply.send(result);
        }
    }

    async fn run_one(&self, a: &WriteArgs) -> Result<WriteRow> {
        match self.try_one(a).await {
            Err(e) if dead_connection(&e) => {
                tracing::debug!(bot_id = %a.bot_id, error = %e, "write on a dead connection: checking whether it landed");
                self.recover(a).await
            }
            other => other.map_err(db_err("write", Some(&a.bot_id))),
        }
    }

    /// After a write failed on a dead connection: its result if it landed, else the result of
    /// running it once more (on a connection that answered a ping).
    async fn recover(&self, a: &WriteArgs) -> Result<WriteRow> {
        let landed = async {
            let mut conn = self.live_connection().await?;
            let row = sqlx::query(q(&self.select_one))
                .bind(&a.bot_id)
                .fetch_optional(conn.get())
                .await;
            conn.settle(row)
        }
        .await
        .map_err(db_err("write", Some(&a.bot_id)))?;
        if let Some(row) = landed
            && let Some(found) = landed_write(&row, a).map_err(db_err("write", Some(&a.bot_id)))?
        {
            return Ok(found);
        }
        self.try_one(a)
            .await
            .map_err(db_err("write", Some(&a.bot_id)))
    }

    /// The write connection, pinged first when it was kept: after a dead connection the pool
    /// may hold more dead ones (every connection of a restarted server is), so each is tried
    /// and closed until one answers, at most one per pool slot.
    async fn live_connection(&self) -> std::result::Result<WriteConnection<'_>, sqlx::Error> {
        use sqlx::Connection;
        let attempts = self.pool.options().get_max_connections() + 1;
        let mut last = None;
        for _ in 0..attempts {
            let mut conn = self.connection().await?;
            match conn.get().ping().await {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    let _ = conn.settle::<()>(Err(sqlx::Error::PoolClosed));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(sqlx::Error::PoolTimedOut))
    }

    async fn try_one(&self, a: &WriteArgs) -> std::result::Result<WriteRow, sqlx::Error> {
        let mut conn = self.connection().await?;
        let row = sqlx::query(q(&self.single))
            .bind(&a.bot_id)
            .bind(&a.config)
            .bind(&a.hash)
            .bind(&a.status)
            .bind(&a.metadata)
            .bind(a.at)
            .bind(a.cond)
            .bind(a.expected)
            .fetch_one(conn.get())
            .await;
        conn.settle(row.and_then(|row| WriteRow::decode(&row)))
    }

    async fn run_batch(
        &self,
        work: &[(WriteArgs, Reply)],
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        // The arrays borrow the queued arguments: no copy of any config text.
        let text = |f: fn(&WriteArgs) -> &str| work.iter().map(|(a, _)| f(a)).collect::<Vec<_>>();
        let nullable =
            |f: fn(&WriteArgs) -> Option<&str>| work.iter().map(|(a, _)| f(a)).collect::<Vec<_>>();
        let query = sqlx::query(q(&self.batch))
            .bind(text(|a| &a.bot_id))
            .bind(nullable(|a| a.config.as_deref()))
            .bind(text(|a| &a.hash))
            .bind(text(|a| &a.status))
            .bind(nullable(|a| a.metadata.as_deref()))
            .bind(work.iter().map(|(a, _)| a.at).collect::<Vec<_>>())
            .bind(work.iter().map(|(a, _)| a.cond).collect::<Vec<_>>())
            .bind(work.iter().map(|(a, _)| a.expected).collect::<Vec<_>>());
        let mut conn = self.connection().await?;
        let rows = query.fetch_all(conn.get()).await;
        conn.settle(rows)
    }
}

/// Whether `e` says the connection was unusable (closed by the server, reset, or the server
/// shutting down), as opposed to an answer about the statement.
pub(super) fn dead_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        // 57P01 admin_shutdown (pg_terminate_backend, a fast shutdown), 57P02 crash_shutdown,
        // 57P03 cannot_connect_now, class 08: connection exceptions.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| matches!(&*c, "57P01" | "57P02" | "57P03") || c.starts_with("08")),
        _ => false,
    }
}

/// The result of write `a` if `row` (the id's row now) shows that it landed: it carries the
/// write's own timestamp as `updated_at`, its status and (for a register) its config hash.
fn landed_write(row: &PgRow, a: &WriteArgs) -> std::result::Result<Option<WriteRow>, sqlx::Error> {
    let status: &str = row.try_get(2)?;
    let created_at: i64 = row.try_get(4)?;
    let updated_at: i64 = row.try_get(5)?;
    let revision: i64 = row.try_get(7)?;
    let hash: &str = row.try_get(8)?;
    let ours = updated_at == a.at && status == a.status && (a.config.is_none() || hash == a.hash);
    Ok(ours.then_some(WriteRow {
        outcome: outcome::WRITTEN,
        revision: Some(revision),
        created_at: Some(created_at),
        existed: created_at != a.at,
        stored: None,
    }))
}

/// The write connection, locked for one statement.
struct WriteConnection<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<PoolConnection<Postgres>>>,
    keep: bool,
}

impl WriteConnection<'_> {
    fn get(&mut self) -> &mut PgConnection {
        self.slot
            .as_mut()
            .expect("Batcher::connection fills the slot before handing it out")
    }

    /// Passes the statement's result through. After an error the connection is closed instead
    /// of reused, since the error may have left it broken; otherwise it is kept, or given back
    /// to the pool when the pool is too small to keep one for writes.
    fn settle<T>(
        mut self,
        result: std::result::Result<T, sqlx::Error>,
    ) -> std::result::Result<T, sqlx::Error> {
        if result.is_err() {
            if let Some(mut broken) = self.slot.take() {
                broken.close_on_drop();
            }
        } else if !self.keep {
            self.slot.take();
        }
        result
    }
}

/// Held by a write running on its caller's task: releases the queue however that ends.
struct HandOff<'a>(&'a Arc<Batcher>);

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

struct DrainGuard<'a>(&'a Batcher);

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.draining = false;
        q.waiting.clear();
    }
}
