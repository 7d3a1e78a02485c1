//! `PostgresBackend`: a registry in PostgreSQL through a sqlx pool (TLS through rustls).
//!
//! Writers lock the one row of `<table>_state` (`SELECT ... FOR UPDATE`) for the length of
//! their transaction and take the next revision from it. The issue sketch said "a sequence";
//! a sequence hands out numbers in `nextval` order, not commit order, so a reader of the change
//! feed could move its cursor past a revision that commits later and lose it. The counter row
//! makes revision order and commit order the same, and `changes_since` reads the counter, the
//! rows and the tombstones from one snapshot.
//!
//! Register, deactivate and unregister are one round trip each: a server-side function (see
//! [`sql`]) does the lock, the read, the condition check and the write in the statement's own
//! transaction. The lock is still held across the commit's WAL flush, so durable writes are
//! bound by the server's fsync; `synchronous_commit: false` lifts that bound.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::backend::shared;
use dynreg_registry_core::backend::{now, validate_write};
use dynreg_registry_core::{
    ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, RegistryError, Result, Status, WriteCondition, config_hash, validate_bot_id,
};
use futures::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use crate::config::{PostgresConfig, build_from_json, invalid, validate_identifier};
use crate::rows::{
    ParsedConfigs, StoredRow, from_micros, json_text, merge_changes, micros, sql_count, sql_i64,
};
use crate::touch::TouchBuffer;

mod batch;
mod sql;

use batch::{Batcher, WriteArgs};
use sql::{Sql, condition, outcome};

const KIND: &str = "postgres";

fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    // Safe: every statement is built from constant text and a table name validated by
    // `validate_identifier`; all values are bound parameters.
    AssertSqlSafe(sql.clone())
}

/// A registry in one PostgreSQL table (plus `<table>_tombstones` and `<table>_state`).
pub struct PostgresBackend {
    pool: PgPool,
    /// Register and deactivate go through this queue (group commit).
    writes: Arc<Batcher>,
    table: String,
    /// `table <name>`, for errors.
    location: String,
    sql: Sql,
    touches: TouchBuffer,
    parsed: ParsedConfigs,
    tombstone_retention: u64,
    /// What the pool connects with (kept for a first connection whose error is the real cause).
    connect: PgConnectOptions,
    /// `host:port (TLS mode)`, for errors; never the password.
    endpoint: String,
    /// The deadline of every operation (`None`: none).
    op_timeout: Option<Duration>,
}

/// The TLS mode of a connection (see [`PostgresConfig::ssl`]).
fn ssl_mode(ssl: Option<bool>, url: Option<&str>, host: &str) -> PgSslMode {
    match ssl {
        Some(true) => return PgSslMode::VerifyFull,
        Some(false) => return PgSslMode::Disable,
        None => {}
    }
    let from_url = url.and_then(|u| {
        let (_, query) = u.split_once('?')?;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix("sslmode="))
            .map(str::to_ascii_lowercase)
    });
    match from_url.as_deref() {
        Some("disable") => PgSslMode::Disable,
        Some("allow") => PgSslMode::Allow,
        Some("prefer") => PgSslMode::Prefer,
        Some(_) => PgSslMode::VerifyFull,
        None => {
            let loopback = host.starts_with('/')
                || host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                PgSslMode::Prefer
            } else {
                PgSslMode::VerifyFull
            }
        }
    }
}

fn tls_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "plaintext",
        PgSslMode::Allow | PgSslMode::Prefer => "TLS if offered, unverified",
        PgSslMode::Require | PgSslMode::VerifyCa => "TLS, unverified host name",
        PgSslMode::VerifyFull => "TLS, verified",
    }
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the connection options: they may hold a password.
        write!(f, "PostgresBackend(table={})", self.table)
    }
}

/// Whether `e` is a storage error whose cause is a dead connection.
fn failed_on_dead_connection(e: &RegistryError) -> bool {
    match e {
        RegistryError::Storage { source, .. } => source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(batch::dead_connection),
        _ => false,
    }
}

fn db_err(op: &'static str, bot_id: Option<&str>) -> impl FnOnce(sqlx::Error) -> RegistryError {
    move |e| RegistryError::storage(KIND, op, bot_id, e)
}

impl PostgresConfig {
    /// The server, database, credentials and TLS of this config as connection options: the
    /// URL (key `url`, `connection_string` or `dsn`) with `host`, `port`, `database`, `user`
    /// and `password` overriding its parts, then `ssl` and `ca_file`. Session settings
    /// (`statement_timeout_ms`, `synchronous_commit`) are the backend's and not included, so
    /// another user of the same server (such as an ingest lock) connects to it the same way.
    pub fn connect_options(&self) -> Result<PgConnectOptions> {
        let mut opts = match &self.url {
            Some(u) => {
                PgConnectOptions::from_str(u).map_err(|e| invalid(KIND, "url", e.to_string()))?
            }
            None => PgConnectOptions::new_without_pgpass()
                .host("localhost")
                .port(5432),
        };
        if let Some(h) = &self.host {
            opts = opts.host(h);
        }
        if let Some(p) = self.port {
            opts = opts.port(p);
        }
        if let Some(d) = &self.database {
            opts = opts.database(d);
        }
        if let Some(u) = &self.user {
            opts = opts.username(u);
        }
        if let Some(p) = &self.password {
            opts = opts.password(p);
        }
        let mode = ssl_mode(self.ssl, self.url.as_deref(), opts.get_host());
        opts = opts.ssl_mode(mode);
        let ca_file = self
            .ca_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from));
        if let Some(ca) = ca_file.filter(|_| !matches!(mode, PgSslMode::Disable)) {
            let pem = std::fs::read_to_string(&ca).map_err(|e| {
                invalid(
                    KIND,
                    "ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                )
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    KIND,
                    "ca_file",
                    format!("{} holds no PEM certificate", ca.display()),
                ));
            }
            opts = opts.ssl_root_cert(ca);
        }
        Ok(opts)
    }
}

impl PostgresBackend {
    /// Builds a backend from its JSON config, read as [`PostgresConfig`] (keys `url` or
    /// `connection_string` or `dsn`; `host`, `port`, `database`, `user` or `username`,
    /// `password`, which override the URL's parts; `ssl`, `table`, `pool_size`,
    /// `min_connections`, `touch_resolution_ms`, `tombstone_retention`, `synchronous_commit`;
    /// see there for defaults and [`crate::config`] for the rules). Connects lazily:
    /// `initialize` opens the first connection and creates the schema.
    pub fn from_config(config: &Value) -> Result<Self> {
        build_from_json(config, Self::with_config)
    }

    /// Builds a backend from its typed config. Connects lazily, as
    /// [`PostgresBackend::from_config`].
    pub fn with_config(config: PostgresConfig) -> Result<Self> {
        let mut opts = config.connect_options()?;
        if config.statement_timeout_ms > 0 {
            // The server cancels a statement that runs longer (the client-side deadline covers a
            // server that does not answer at all).
            let ms = config.statement_timeout_ms.to_string();
            opts = opts.options([("statement_timeout", ms.as_str())]);
        }
        if !config.synchronous_commit {
            // Commits return before the WAL is flushed: a server crash may lose the last
            // fraction of a second of writes (never corrupts). Off by default.
            opts = opts.options([("synchronous_commit", "off")]);
        }
        let pool_size = config.pool_size.clamp(1, 1000) as u32;
        let min_connections = config.min_connections.min(u64::from(pool_size)) as u32;
        validate_identifier(&config.table).map_err(|reason| invalid(KIND, "table", reason))?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(min_connections)
            // A failed query already surfaces a dead connection; a ping per acquire would
            // double the round trips of every read.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts.clone());
        Ok(Self::assemble(
            pool,
            &config.table,
            opts,
            Duration::from_millis(config.touch_resolution_ms),
            config.tombstone_retention,
            (config.statement_timeout_ms > 0)
                .then(|| Duration::from_millis(config.statement_timeout_ms)),
        ))
    }

    /// A backend on the application's own pool (its size, timeouts, TLS and credentials as the
    /// application set them), in `table` (validated as an identifier), with the default touch
    /// resolution and tombstone retention. Call `initialize` before use.
    pub fn with_pool(pool: PgPool, table: &str) -> Result<Self> {
        validate_identifier(table).map_err(|reason| invalid(KIND, "table", reason))?;
        let opts = (*pool.connect_options()).clone();
        Ok(Self::assemble(
            pool,
            table,
            opts,
            crate::config::DEFAULT_TOUCH_RESOLUTION,
            crate::config::DEFAULT_TOMBSTONE_RETENTION,
            Some(Duration::from_millis(
                crate::config::DEFAULT_STATEMENT_TIMEOUT_MS,
            )),
        ))
    }

    /// The backend over `pool` (whose connections `opts` describes) in `table`.
    fn assemble(
        pool: PgPool,
        table: &str,
        opts: PgConnectOptions,
        touch_resolution: Duration,
        tombstone_retention: u64,
        op_timeout: Option<Duration>,
    ) -> Self {
        let endpoint = format!(
            "{}:{} ({})",
            opts.get_host(),
            opts.get_port(),
            tls_name(opts.get_ssl_mode())
        );
        let sql = Sql::new(table);
        PostgresBackend {
            writes: Arc::new(Batcher::new(
                pool.clone(),
                sql.write.clone(),
                sql.write_batch.clone(),
                sql.select_one.clone(),
            )),
            pool,
            sql,
            location: format!("table {table}"),
            table: table.to_owned(),
            touches: TouchBuffer::new(touch_resolution),
            parsed: ParsedConfigs::new(),
            tombstone_retention,
            connect: opts,
            endpoint,
            op_timeout,
        }
    }

    fn location(&self) -> &str {
        &self.location
    }

    /// Runs one operation with the backend's deadline: a server that stops answering (frozen,
    /// half-open connection) fails the operation after `statement_timeout_ms` instead of
    /// hanging it; the connection it was on is discarded by the pool.
    async fn deadline<T>(
        &self,
        operation: &'static str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(limit) = self.op_timeout else {
            return op.await;
        };
        match tokio::time::timeout(limit, op).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::storage(
                KIND,
                operation,
                None,
                format!(
                    "no answer from {} within {} ms (statement_timeout_ms)",
                    self.endpoint,
                    limit.as_millis()
                ),
            )),
        }
    }

    /// A read under the deadline, run again when it failed on a dead connection (the server
    /// dropped it or restarted; an idle pooled connection is not pinged before use). A read
    /// changes nothing, so running it again is always safe; each dead connection fails at once
    /// and is closed, so this tries at most one more time than the pool has connections.
    async fn read<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.deadline(operation, async {
            let mut tries = self.pool.options().get_max_connections() + 1;
            loop {
                match op().await {
                    Err(e) if tries > 1 && failed_on_dead_connection(&e) => {
                        tries -= 1;
                        tracing::debug!(operation, error = %e, "read on a dead connection: again");
                    }
                    other => return other,
                }
            }
        })
        .await
    }

    /// The columns of a `COLUMNS` row, borrowing its text; a config whose hash was parsed
    /// before is not copied out of the row at all.
    fn stored<'r>(&self, row: &'r PgRow) -> std::result::Result<StoredRow<'r>, sqlx::Error> {
        let config_hash: String = row.try_get(8)?;
        let parsed_config = self.parsed.cached(&config_hash);
        Ok(StoredRow {
            bot_id: row.try_get(0)?,
            config: if parsed_config.is_some() {
                Cow::Borrowed("")
            } else {
                Cow::Borrowed(row.try_get::<&str, _>(1)?)
            },
            status: Cow::Borrowed(row.try_get::<&str, _>(2)?),
            metadata: Cow::Borrowed(row.try_get::<&str, _>(3)?),
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
            last_accessed_at: row.try_get(6)?,
            revision: row.try_get(7)?,
            config_hash,
            parsed_config,
        })
    }

    fn registration(&self, row: &PgRow, op: &'static str) -> Result<Registration> {
        self.stored(row)
            .map_err(db_err(op, None))?
            .into_registration(KIND, self.location(), &self.parsed)
    }

    fn decode(&self, rows: Vec<PgRow>, op: &'static str) -> Result<Vec<Registration>> {
        rows.iter().map(|r| self.registration(r, op)).collect()
    }

    async fn select(
        &self,
        exec: impl sqlx::PgExecutor<'_>,
        bot_id: &str,
    ) -> Result<Option<Registration>> {
        let row = sqlx::query(q(&self.sql.select_one))
            .bind(bot_id)
            .fetch_optional(exec)
            .await
            .map_err(db_err("read", Some(bot_id)))?;
        row.map(|r| self.registration(&r, "read")).transpose()
    }

    fn bad_outcome(&self, bot_id: &str) -> RegistryError {
        crate::rows::corrupt(
            KIND,
            format!("{} bot {bot_id:?}", self.location()),
            "the write function returned an unexpected outcome; re-run initialize to update it",
        )
    }
}

impl PostgresBackend {
    /// Writes a batch of buffered touches in one statement; on failure they stay buffered.
    async fn write_touches(&self, batch: Vec<(String, i64)>) -> Result<()> {
        let (ids, ats): (Vec<String>, Vec<i64>) = batch.iter().cloned().unzip();
        let done = sqlx::query(q(&self.sql.touch))
            .bind(&ids)
            .bind(&ats)
            .execute(&self.pool)
            .await;
        done.map(drop).map_err(|e| {
            self.touches.restore(batch);
            RegistryError::storage(KIND, "touch", None, e)
        })
    }
}

/// Rows of the change feed per page.
const PAGE: i64 = 5_000;

impl PostgresBackend {
    /// The change feed after `revision` in one statement (one snapshot, one round trip);
    /// `None` when there are a page of rows or more, which the caller pages through instead.
    async fn feed_in_one_statement(&self, revision: u64) -> Result<Option<ChangeFeed>> {
        let op = "read changes";
        let rows = sqlx::query(q(&self.sql.feed))
            .bind(sql_i64(revision))
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err(op, None))?;
        let mut state = None;
        let mut tombstones = Vec::new();
        let mut regs = Vec::new();
        for row in &rows {
            let kind: i32 = row.try_get(0).map_err(db_err(op, None))?;
            let rev: i64 = row.try_get(1).map_err(db_err(op, None))?;
            match kind {
                0 => {
                    let horizon: i64 = row.try_get(2).map_err(db_err(op, None))?;
                    state = Some((rev as u64, horizon as u64));
                }
                1 => tombstones.push((rev as u64, row.try_get(3).map_err(db_err(op, None))?)),
                _ => regs.push(Self::feed_row(row, rev).map_err(db_err(op, None))?),
            }
        }
        let Some((current, horizon)) = state else {
            return Err(crate::rows::corrupt(
                KIND,
                self.location().to_owned(),
                "the state row is missing",
            ));
        };
        if revision < horizon || revision > current {
            return Ok(Some(ChangeFeed::Expired {
                cursor: revision,
                oldest_available: horizon,
                current_revision: current,
            }));
        }
        if regs.len() as i64 >= PAGE {
            return Ok(None);
        }
        let location = self.location();
        let regs = regs
            .into_iter()
            .map(|r| r.into_registration(KIND, location, &self.parsed))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(ChangeFeed::Changes {
            changes: merge_changes(regs, tombstones),
            current_revision: current,
        }))
    }

    fn feed_row(row: &PgRow, revision: i64) -> std::result::Result<StoredRow<'_>, sqlx::Error> {
        Ok(StoredRow {
            bot_id: row.try_get(3)?,
            config: Cow::Borrowed(row.try_get::<&str, _>(4)?),
            status: Cow::Borrowed(row.try_get::<&str, _>(5)?),
            metadata: Cow::Borrowed(row.try_get::<&str, _>(6)?),
            created_at: row.try_get(7)?,
            updated_at: row.try_get(8)?,
            last_accessed_at: row.try_get(9)?,
            revision,
            config_hash: row.try_get(10)?,
            parsed_config: None,
        })
    }
}

/// What `<table>_write` returned.
struct WriteRow {
    outcome: i32,
    revision: Option<i64>,
    created_at: Option<i64>,
    /// For `WRITTEN`: whether the id existed before the write.
    existed: bool,
    /// The stored row, for `UNCHANGED`.
    stored: Option<StoredRow<'static>>,
}

impl WriteRow {
    fn decode(row: &PgRow) -> std::result::Result<WriteRow, sqlx::Error> {
        let outcome: i32 = row.try_get(0)?;
        let stored = if outcome == outcome::UNCHANGED {
            Some(StoredRow {
                bot_id: row.try_get(1)?,
                config: Cow::Owned(row.try_get(2)?),
                status: Cow::Owned(row.try_get(3)?),
                metadata: Cow::Owned(row.try_get(4)?),
                created_at: row.try_get(5)?,
                updated_at: row.try_get(6)?,
                last_accessed_at: row.try_get(7)?,
                revision: row.try_get(8)?,
                config_hash: row.try_get(9)?,
                parsed_config: None,
            })
        } else {
            None
        };
        let existed = outcome == outcome::WRITTEN && row.try_get::<Option<&str>, _>(9)?.is_some();
        Ok(WriteRow {
            outcome,
            revision: row.try_get(8)?,
            created_at: row.try_get(5)?,
            existed,
            stored,
        })
    }
}

async fn commit(tx: Transaction<'static, Postgres>, bot_id: Option<&str>) -> Result<()> {
    tx.commit().await.map_err(db_err("commit", bot_id))
}

#[async_trait]
impl RegistryBackend for PostgresBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn initialize(&self) -> Result<()> {
        let t = &self.table;
        // One connection first, outside the pool: its error is the real cause (refused, TLS,
        // authentication), where the pool would only say that it timed out.
        use sqlx::Connection;
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect_with(&self.connect),
        )
        .await;
        let cause = match first {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 10 s".to_owned()),
        };
        if let Some(cause) = cause {
            return Err(RegistryError::storage(
                KIND,
                "connect",
                None,
                format!("cannot connect to {}: {cause}", self.endpoint),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db_err("connect", None))?;
        // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; serialise them.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dynreg-registry-schema'))")
            .execute(&mut *tx)
            .await
            .map_err(db_err("create schema", None))?;
        for ddl in sql::schema(t) {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(db_err("create schema", None))?;
        }
        commit(tx, None).await?;
        // Open the minimum number of connections now rather than on the first busy moment.
        let warm = (0..self.pool.options().get_min_connections()).map(|_| self.pool.acquire());
        let conns = futures::future::try_join_all(warm)
            .await
            .map_err(db_err("connect", None))?;
        drop(conns);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let pending = self.touches.drain();
        if !pending.is_empty() {
            self.write_touches(pending).await?;
        }
        self.writes.release_connection().await;
        self.pool.close().await;
        Ok(())
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        self.deadline("register_reporting", async move {
            validate_write(bot_id, &config, &options)?;
            let t = now();
            let hash = config_hash(&config);
            let (config_text, metadata_text) = json_text(&config, &options.metadata);
            let (cond, expected) = match options.condition {
                WriteCondition::Any => (condition::ANY, None),
                WriteCondition::MustNotExist => (condition::MUST_NOT_EXIST, None),
                WriteCondition::Revision(r) => (condition::REVISION, Some(sql_i64(r))),
            };
            // One round trip of `<table>_write` (see [`sql`]), shared with the writes queued at
            // the same time (see [`batch`]).
            let row = self
                .writes
                .write(WriteArgs {
                    bot_id: bot_id.to_owned(),
                    config: Some(config_text),
                    hash: hash.clone(),
                    status: options.status.as_str().to_owned(),
                    metadata: Some(metadata_text),
                    at: micros(&t),
                    cond,
                    expected,
                })
                .await?;
            match row.outcome {
                outcome::CONFLICT => Err(RegistryError::Conflict {
                    bot_id: bot_id.to_owned(),
                    expected: options.condition,
                    actual: row.revision.map(|r| r as u64),
                }),
                outcome::UNCHANGED => {
                    let stored = row.stored.ok_or_else(|| self.bad_outcome(bot_id))?;
                    Ok(Registered::unchanged(stored.into_registration(
                        KIND,
                        self.location(),
                        &self.parsed,
                    )?))
                }
                outcome::WRITTEN => Ok(Registered::written(
                    Registration {
                        bot_id: bot_id.to_owned(),
                        config,
                        status: options.status,
                        metadata: options.metadata,
                        created_at: row.created_at.map_or(t, from_micros),
                        updated_at: t,
                        last_accessed_at: t,
                        revision: row.revision.ok_or_else(|| self.bad_outcome(bot_id))? as u64,
                        config_hash: hash,
                    },
                    row.existed,
                )),
                _ => Err(self.bad_outcome(bot_id)),
            }
        })
        .await
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.read("get", || async move {
            validate_bot_id(bot_id)?;
            let Some(mut reg) = self.select(&self.pool, bot_id).await? else {
                return Ok(None);
            };
            let t = now();
            if let Some(batch) =
                self.touches
                    .touch(bot_id, micros(&reg.last_accessed_at), micros(&t))
            {
                self.write_touches(batch).await?;
            }
            reg.last_accessed_at = t;
            Ok(Some(reg))
        })
        .await
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.read("peek", || async move {
            validate_bot_id(bot_id)?;
            let mut reg = self.select(&self.pool, bot_id).await?;
            if let (Some(r), Some(t)) = (reg.as_mut(), self.touches.pending(bot_id)) {
                r.last_accessed_at = r.last_accessed_at.max(from_micros(t));
            }
            Ok(reg)
        })
        .await
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        self.deadline("deactivate_reporting", async move {
            validate_bot_id(bot_id)?;
            let row = self
                .writes
                .write(WriteArgs {
                    bot_id: bot_id.to_owned(),
                    config: None, // keep the stored config: a status change
                    hash: String::new(),
                    status: Status::Inactive.as_str().to_owned(),
                    metadata: None,
                    at: micros(&now()),
                    cond: condition::ANY,
                    expected: None,
                })
                .await?;
            match (row.outcome, row.revision) {
                (outcome::ABSENT, _) => Ok(Deactivation::ABSENT),
                (outcome::UNCHANGED, _) => Ok(Deactivation::UNCHANGED),
                (outcome::WRITTEN, Some(revision)) => Ok(Deactivation::at(revision as u64)),
                _ => Err(self.bad_outcome(bot_id)),
            }
        })
        .await
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        self.deadline("unregister", async move {
            validate_bot_id(bot_id)?;
            // 0: deleted; NULL: no such row (an unconditional delete never meets a revision).
            let outcome: Option<i64> = sqlx::query_scalar(q(&self.sql.unregister))
                .bind(bot_id)
                .bind(sql_i64(self.tombstone_retention))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("unregister", Some(bot_id)))?;
            Ok(outcome.is_some())
        })
        .await
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        self.deadline("unregister_if", async move {
            validate_bot_id(bot_id)?;
            let outcome: Option<i64> = sqlx::query_scalar(q(&self.sql.unregister_if))
                .bind(bot_id)
                .bind(sql_i64(revision))
                .bind(sql_i64(self.tombstone_retention))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("unregister", Some(bot_id)))?;
            match outcome {
                Some(0) => Ok(()),
                actual => {
                    WriteCondition::Revision(revision).check(bot_id, actual.map(|r| r as u64))
                }
            }
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.read(
            "list",
            || async move { self.list_rows(query).await.map(shared) },
        )
        .await
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        self.read("count_where", || async move {
            if let Some(query) = ListQuery::counting(status, filter_metadata) {
                return Ok(self.list(&query).await?.len() as u64);
            }
            let n: i64 = match status {
                Some(s) => sqlx::query_scalar(q(&self.sql.count_status)).bind(s.as_str()),
                None => sqlx::query_scalar(q(&self.sql.count)),
            }
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("count", None))?;
            Ok(n as u64)
        })
        .await
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.read("changes_since", || async move {
            if let Some(feed) = self.feed_in_one_statement(revision).await? {
                return Ok(feed);
            }
            // More rows than one page: page through them in one REPEATABLE READ snapshot.
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(db_err("begin read", None))?;
            // The counter and the tombstones after the cursor in one round trip.
            let head: Vec<(i64, i64, Option<i64>, Option<String>)> =
                sqlx::query_as(q(&self.sql.state_and_tombstones))
                    .bind(sql_i64(revision))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err("read changes", None))?;
            let Some(&(current, horizon, ..)) = head.first() else {
                return Err(crate::rows::corrupt(
                    KIND,
                    self.location().to_owned(),
                    "the state row is missing",
                ));
            };
            let (current, horizon) = (current as u64, horizon as u64);
            let tombstones: Vec<(u64, String)> = head
                .into_iter()
                .filter_map(|(_, _, r, id)| Some((r? as u64, id?)))
                .collect();
            if revision < horizon || revision > current {
                return Ok(ChangeFeed::Expired {
                    cursor: revision,
                    oldest_available: horizon,
                    current_revision: current,
                });
            }
            let mut rows = Vec::new();
            let mut after = sql_i64(revision);
            loop {
                let page = sqlx::query(q(&self.sql.rows_after))
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err("read changes", None))?;
                let full = page.len() as i64 == PAGE;
                if let Some(last) = page.last() {
                    after = last.try_get(7).map_err(db_err("read changes", None))?;
                }
                rows.extend(page);
                if !full {
                    break;
                }
            }
            commit(tx, None).await?;
            let regs = self.decode(rows, "read changes")?;
            Ok(ChangeFeed::Changes {
                changes: merge_changes(regs, tombstones),
                current_revision: current,
            })
        })
        .await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.read("current_revision", || async move {
            let (current, _): (i64, i64) = sqlx::query_as(q(&self.sql.state))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("read state", None))?;
            Ok(current as u64)
        })
        .await
    }

    async fn clear(&self) -> Result<u64> {
        self.deadline("clear", async move {
            let n: i64 = sqlx::query_scalar(q(&self.sql.clear))
                .bind(sql_i64(self.tombstone_retention))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("clear", None))?;
            Ok(n as u64)
        })
        .await
    }
}

impl PostgresBackend {
    /// The rows of a listing, as [`RegistryBackend::list`] returns them (before sharing).
    async fn list_rows(&self, query: &ListQuery) -> Result<Vec<Registration>> {
        query.validate()?;
        let pushdown = query.is_plain();
        let (limit, offset) = if pushdown {
            (
                query.limit.map(sql_count),
                sql_count(query.offset.unwrap_or(0)),
            )
        } else {
            (None, 0)
        };
        let filter = query.filter_metadata.as_ref().filter(|f| !f.is_empty());
        let rows = match (&query.status, filter) {
            // A metadata filter is narrowed in the database, not by loading every row.
            (status, Some(f)) => sqlx::query(q(&self.sql.list_filtered))
                .bind(status.as_ref().map(|s| s.as_str().to_owned()))
                .bind(Value::Object(f.clone()).to_string()),
            (Some(s), None) => sqlx::query(q(&self.sql.list_status))
                .bind(limit)
                .bind(offset)
                .bind(s.as_str()),
            (None, None) => sqlx::query(q(&self.sql.list)).bind(limit).bind(offset),
        };
        // Each row is decoded as it arrives and its buffer dropped: no second copy of the
        // whole result set.
        let mut stream = rows.fetch(&self.pool);
        let mut regs = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(db_err("list", None))? {
            regs.push(self.registration(&row, "list")?);
        }
        if pushdown {
            Ok(regs)
        } else {
            query.apply(regs)
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn tls_is_verified_unless_local_or_opted_out() {
        fn m(ssl: Option<bool>, url: Option<&str>, host: &str) -> &'static str {
            tls_name(ssl_mode(ssl, url, host))
        }
        assert_eq!(
            m(Some(true), None, "127.0.0.1"),
            tls_name(PgSslMode::VerifyFull)
        );
        assert_eq!(
            m(Some(false), Some("postgres://h/d?sslmode=require"), "h"),
            tls_name(PgSslMode::Disable)
        );
        assert_eq!(
            m(None, None, "db.example.com"),
            tls_name(PgSslMode::VerifyFull)
        );
        assert_eq!(m(None, None, "10.0.0.5"), tls_name(PgSslMode::VerifyFull));
        assert_eq!(m(None, None, "127.0.0.1"), tls_name(PgSslMode::Prefer));
        assert_eq!(m(None, None, "localhost"), tls_name(PgSslMode::Prefer));
        assert_eq!(m(None, None, "::1"), tls_name(PgSslMode::Prefer));
        assert_eq!(
            m(None, None, "/var/run/postgresql"),
            tls_name(PgSslMode::Prefer)
        );
        for mode in ["require", "verify-ca", "verify-full", "REQUIRE"] {
            let url = format!("postgres://h/d?x=1&sslmode={mode}");
            assert_eq!(
                m(None, Some(&url), "127.0.0.1"),
                tls_name(PgSslMode::VerifyFull),
                "{mode}"
            );
        }
        assert_eq!(
            m(None, Some("postgres://h/d?sslmode=disable"), "h"),
            tls_name(PgSslMode::Disable)
        );
        assert_eq!(
            m(None, Some("postgres://h/d?sslmode=prefer"), "h"),
            tls_name(PgSslMode::Prefer)
        );
    }
}
