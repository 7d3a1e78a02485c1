//! `PostgresBackend`: a registry in PostgreSQL through a sqlx pool (TLS through rustls).
//!
//! Writers lock the one row of `<table>_state` (`SELECT ... FOR UPDATE`) for the length of
//! their transaction and take the next revision from it. The issue sketch said "a sequence";
//! a sequence hands out numbers in `nextval` order, not commit order, so a reader of the change
//! feed could move its cursor past a revision that commits later and lose it. The counter row
//! makes revision order and commit order the same, and `changes_since` reads the counter, the
//! rows and the tombstones from one REPEATABLE READ snapshot.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::{
    ChangeFeed, ListQuery, RegisterOptions, Registration, RegistryBackend, RegistryError, Result,
    Status, now, plan_register, validate_bot_id, validate_write,
};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use crate::config::{BackendConfig, DEFAULT_TOMBSTONE_RETENTION, DEFAULT_TOUCH_RESOLUTION};
use crate::rows::{ParsedConfigs, StoredRow, from_micros, json_columns, merge_changes, micros};
use crate::touch::TouchBuffer;

const KIND: &str = "postgres";
const COLUMNS: &str = "bot_id, config, status, metadata, created_at, updated_at, last_accessed_at, revision, config_hash";

/// The statements of one table, built once from the validated table name.
#[derive(Debug)]
struct Sql {
    select_one: Arc<str>,
    lock_state: Arc<str>,
    upsert: Arc<str>,
    touch: Arc<str>,
    delete: Arc<str>,
    state: Arc<str>,
    rows_after: Arc<str>,
    state_and_tombstones: Arc<str>,
    compact: Arc<str>,
    list: Arc<str>,
    list_status: Arc<str>,
    count: Arc<str>,
    count_status: Arc<str>,
    all_ids: Arc<str>,
}

impl Sql {
    fn new(t: &str) -> Sql {
        let s = |q: String| -> Arc<str> { q.into() };
        Sql {
            select_one: s(format!("SELECT {COLUMNS} FROM \"{t}\" WHERE bot_id = $1")),
            lock_state: s(format!("SELECT revision FROM \"{t}_state\" WHERE id = 1 FOR UPDATE")),
            upsert: s(format!(
                "WITH st AS (UPDATE \"{t}_state\" SET revision = $8 WHERE id = 1),
                      del AS (DELETE FROM \"{t}_tombstones\" WHERE bot_id = $1)
                 INSERT INTO \"{t}\" ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (bot_id) DO UPDATE SET config = EXCLUDED.config, status = EXCLUDED.status,
                   metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at,
                   updated_at = EXCLUDED.updated_at, last_accessed_at = EXCLUDED.last_accessed_at,
                   revision = EXCLUDED.revision, config_hash = EXCLUDED.config_hash"
            )),
            touch: s(format!(
                "UPDATE \"{t}\" AS r SET last_accessed_at = GREATEST(r.last_accessed_at, b.at)
                 FROM UNNEST($1::text[], $2::bigint[]) AS b(id, at) WHERE r.bot_id = b.id"
            )),
            delete: s(format!(
                "WITH gone AS (DELETE FROM \"{t}\" WHERE bot_id = $1 RETURNING bot_id),
                      st AS (UPDATE \"{t}_state\" SET revision = $2 WHERE id = 1 AND EXISTS (SELECT 1 FROM gone))
                 INSERT INTO \"{t}_tombstones\" (revision, bot_id) SELECT $2, bot_id FROM gone
                 ON CONFLICT (bot_id) DO UPDATE SET revision = EXCLUDED.revision"
            )),
            state: s(format!("SELECT revision, horizon FROM \"{t}_state\" WHERE id = 1")),
            // ORDER BY + LIMIT keeps the planner on the revision index even without statistics.
            rows_after: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" WHERE revision > $1 ORDER BY revision LIMIT $2"
            )),
            state_and_tombstones: s(format!(
                "SELECT s.revision, s.horizon, d.revision, d.bot_id FROM \"{t}_state\" s
                 LEFT JOIN \"{t}_tombstones\" d ON d.revision > $1 WHERE s.id = 1"
            )),
            compact: s(format!(
                "WITH cut AS (SELECT revision FROM \"{t}_tombstones\" ORDER BY revision DESC OFFSET $1 LIMIT 1),
                      gone AS (DELETE FROM \"{t}_tombstones\" WHERE revision <= (SELECT revision FROM cut))
                 UPDATE \"{t}_state\" SET horizon = GREATEST(horizon, (SELECT revision FROM cut))
                 WHERE id = 1 AND EXISTS (SELECT 1 FROM cut)"
            )),
            list: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" ORDER BY bot_id COLLATE \"C\" LIMIT $1 OFFSET $2"
            )),
            list_status: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" WHERE status = $3 ORDER BY bot_id COLLATE \"C\" LIMIT $1 OFFSET $2"
            )),
            count: s(format!("SELECT COUNT(*) FROM \"{t}\"")),
            count_status: s(format!("SELECT COUNT(*) FROM \"{t}\" WHERE status = $1")),
            all_ids: s(format!("SELECT bot_id FROM \"{t}\" ORDER BY bot_id COLLATE \"C\"")),
        }
    }
}

fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    // Safe: every statement is built from constant text and a table name validated by
    // `validate_identifier`; all values are bound parameters.
    AssertSqlSafe(sql.clone())
}

/// A registry in one PostgreSQL table (plus `<table>_tombstones` and `<table>_state`).
pub struct PostgresBackend {
    pool: PgPool,
    table: String,
    sql: Sql,
    touches: TouchBuffer,
    parsed: ParsedConfigs,
    tombstone_retention: u64,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the connection options: they may hold a password.
        write!(f, "PostgresBackend(table={})", self.table)
    }
}

fn db_err(op: &'static str, bot_id: Option<&str>) -> impl FnOnce(sqlx::Error) -> RegistryError {
    move |e| RegistryError::storage(KIND, op, bot_id, e)
}

impl PostgresBackend {
    /// Config keys: `url` (or `connection_string`, `dsn`; a `postgres://` URL), or `host`
    /// (default `localhost`), `port` (5432), `database`, `user`, `password` — separate keys
    /// override the URL's parts; `ssl` (true: require TLS); `table` (default `registrations`; an
    /// identifier); `pool_size` (default 10); `touch_resolution_ms` (default 1000);
    /// `tombstone_retention` (default 100000); `synchronous_commit` (default true; false trades
    /// the last moments of writes on a server crash for throughput). Connects lazily: `initialize` opens the first
    /// connection and creates the schema.
    pub fn from_config(config: &Value) -> Result<Self> {
        let c = BackendConfig::new(KIND, config)?;
        let url = c
            .str("url")?
            .or(c.str("connection_string")?)
            .or(c.str("dsn")?);
        let mut opts = match &url {
            Some(u) => {
                PgConnectOptions::from_str(u).map_err(|e| RegistryError::InvalidBackendConfig {
                    backend: KIND,
                    key: "url".into(),
                    reason: e.to_string(),
                })?
            }
            None => PgConnectOptions::new_without_pgpass()
                .host("localhost")
                .port(5432),
        };
        if let Some(h) = c.str("host")? {
            opts = opts.host(&h);
        }
        if let Some(p) = c.u64("port")? {
            let port = u16::try_from(p).map_err(|_| RegistryError::InvalidBackendConfig {
                backend: KIND,
                key: "port".into(),
                reason: format!("{p} is not a port"),
            })?;
            opts = opts.port(port);
        }
        if let Some(d) = c.str("database")? {
            opts = opts.database(&d);
        }
        if let Some(u) = c.str("user")?.or(c.str("username")?) {
            opts = opts.username(&u);
        }
        if let Some(p) = c.str("password")? {
            opts = opts.password(&p);
        }
        if c.bool("synchronous_commit")? == Some(false) {
            // Commits return before the WAL is flushed: a server crash may lose the last
            // fraction of a second of writes (never corrupts). Off by default.
            opts = opts.options([("synchronous_commit", "off")]);
        }
        if c.bool("ssl")? == Some(true) {
            opts = opts.ssl_mode(PgSslMode::Require);
        }
        let pool_size = c.u64("pool_size")?.unwrap_or(10).clamp(1, 1000) as u32;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A failed query already surfaces a dead connection; a ping per acquire would
            // double the round trips of every read.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts);
        let table = c.identifier("table", "registrations")?;
        Ok(PostgresBackend {
            pool,
            sql: Sql::new(&table),
            table,
            touches: TouchBuffer::new(
                c.millis("touch_resolution_ms")?
                    .unwrap_or(DEFAULT_TOUCH_RESOLUTION),
            ),
            parsed: ParsedConfigs::new(),
            tombstone_retention: c
                .u64("tombstone_retention")?
                .unwrap_or(DEFAULT_TOMBSTONE_RETENTION),
        })
    }

    fn location(&self) -> String {
        format!("table {}", self.table)
    }

    fn stored(row: &PgRow) -> std::result::Result<StoredRow, sqlx::Error> {
        Ok(StoredRow {
            bot_id: row.try_get(0)?,
            config: row.try_get(1)?,
            status: row.try_get(2)?,
            metadata: row.try_get(3)?,
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
            last_accessed_at: row.try_get(6)?,
            revision: row.try_get(7)?,
            config_hash: row.try_get(8)?,
            parsed_config: None,
        })
    }

    fn decode(&self, rows: Vec<PgRow>, op: &'static str) -> Result<Vec<Registration>> {
        let location = self.location();
        rows.iter()
            .map(|r| {
                Self::stored(r)
                    .map_err(db_err(op, None))?
                    .into_registration(KIND, &location, &self.parsed)
            })
            .collect()
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
        Ok(self.decode(row.into_iter().collect(), "read")?.pop())
    }

    /// Begins a write on one id: locks the state row, then reads the id's registration.
    ///
    /// Two statements on purpose: a join locking only the state row (`FOR UPDATE OF s`) would,
    /// after waiting for another writer, re-check the state row but return the registration as
    /// of the statement's start — a stale revision that would let a compare-and-swap through.
    async fn begin_write_on(
        &self,
        bot_id: &str,
    ) -> Result<(Transaction<'static, Postgres>, u64, Option<Registration>)> {
        let (mut tx, revision) = self.begin_write(Some(bot_id)).await?;
        let current = self.select(&mut *tx, bot_id).await?;
        Ok((tx, revision, current))
    }

    /// Begins a write: locks the state row and returns the transaction and current revision.
    async fn begin_write(
        &self,
        bot_id: Option<&str>,
    ) -> Result<(Transaction<'static, Postgres>, u64)> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("begin write", bot_id))?;
        let rev: i64 = sqlx::query_scalar(q(&self.sql.lock_state))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("lock revision", bot_id))?;
        Ok((tx, rev as u64))
    }

    async fn upsert(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        reg: &Registration,
    ) -> Result<()> {
        let (config, metadata) = json_columns(reg);
        sqlx::query(q(&self.sql.upsert))
            .bind(&reg.bot_id)
            .bind(config)
            .bind(reg.status.as_str())
            .bind(metadata)
            .bind(micros(&reg.created_at))
            .bind(micros(&reg.updated_at))
            .bind(micros(&reg.last_accessed_at))
            .bind(reg.revision as i64)
            .bind(&reg.config_hash)
            .execute(&mut **tx)
            .await
            .map_err(db_err("write", Some(&reg.bot_id)))?;
        Ok(())
    }

    async fn delete(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        bot_id: &str,
        revision: u64,
    ) -> Result<bool> {
        let done = sqlx::query(q(&self.sql.delete))
            .bind(bot_id)
            .bind(revision as i64)
            .execute(&mut **tx)
            .await
            .map_err(db_err("delete", Some(bot_id)))?;
        if done.rows_affected() > 0 && revision.is_multiple_of(64) {
            sqlx::query(q(&self.sql.compact))
                .bind(self.tombstone_retention as i64)
                .execute(&mut **tx)
                .await
                .map_err(db_err("compact tombstones", None))?;
        }
        Ok(done.rows_affected() > 0)
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
        let mut tx = self.pool.begin().await.map_err(db_err("connect", None))?;
        // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; serialise them.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dynreg-registry-schema'))")
            .execute(&mut *tx)
            .await
            .map_err(db_err("create schema", None))?;
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}\" (bot_id TEXT PRIMARY KEY, config TEXT NOT NULL,
                 status TEXT NOT NULL, metadata TEXT NOT NULL, created_at BIGINT NOT NULL,
                 updated_at BIGINT NOT NULL, last_accessed_at BIGINT NOT NULL,
                 revision BIGINT NOT NULL, config_hash TEXT NOT NULL)"
            ),
            format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{t}_by_revision\" ON \"{t}\" (revision)"),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{t}_by_status\" ON \"{t}\" (status, bot_id COLLATE \"C\")"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}_tombstones\" (revision BIGINT PRIMARY KEY, bot_id TEXT NOT NULL UNIQUE)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}_state\" (id INT PRIMARY KEY CHECK (id = 1),
                 revision BIGINT NOT NULL, horizon BIGINT NOT NULL)"
            ),
            format!(
                "INSERT INTO \"{t}_state\" (id, revision, horizon) VALUES (1, 0, 0) ON CONFLICT DO NOTHING"
            ),
        ] {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await
                .map_err(db_err("create schema", None))?;
        }
        commit(tx, None).await
    }

    async fn close(&self) -> Result<()> {
        let pending = self.touches.drain();
        if !pending.is_empty() {
            self.write_touches(pending).await?;
        }
        self.pool.close().await;
        Ok(())
    }

    async fn register_with(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registration> {
        validate_write(bot_id, &config, &options)?;
        let (mut tx, revision, current) = self.begin_write_on(bot_id).await?;
        options
            .condition
            .check(bot_id, current.as_ref().map(|c| c.revision))?;
        let Some(reg) = plan_register(bot_id, config, &options, current.as_ref(), revision + 1)
        else {
            return Ok(current.expect("no-op plans only exist for present ids"));
        };
        self.upsert(&mut tx, &reg).await?;
        commit(tx, Some(bot_id)).await?;
        Ok(reg)
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let Some(mut reg) = self.select(&self.pool, bot_id).await? else {
            return Ok(None);
        };
        let t = now();
        if let Some(batch) = self
            .touches
            .touch(bot_id, micros(&reg.last_accessed_at), micros(&t))
        {
            self.write_touches(batch).await?;
        }
        reg.last_accessed_at = t;
        Ok(Some(reg))
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let mut reg = self.select(&self.pool, bot_id).await?;
        if let (Some(r), Some(t)) = (reg.as_mut(), self.touches.pending(bot_id)) {
            r.last_accessed_at = r.last_accessed_at.max(from_micros(t));
        }
        Ok(reg)
    }

    async fn deactivate(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        let (mut tx, revision, current) = self.begin_write_on(bot_id).await?;
        let Some(mut reg) = current else {
            return Ok(false);
        };
        if reg.status == Status::Inactive {
            return Ok(true);
        }
        reg.status = Status::Inactive;
        reg.updated_at = now();
        reg.revision = revision + 1;
        self.upsert(&mut tx, &reg).await?;
        commit(tx, Some(bot_id)).await?;
        Ok(true)
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        let (mut tx, revision) = self.begin_write(Some(bot_id)).await?;
        let existed = self.delete(&mut tx, bot_id, revision + 1).await?;
        commit(tx, Some(bot_id)).await?;
        Ok(existed)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Registration>> {
        query.validate()?;
        let pushdown = query.is_plain();
        let (limit, offset) = if pushdown {
            (
                query.limit.map(|l| l as i64),
                query.offset.unwrap_or(0) as i64,
            )
        } else {
            (None, 0)
        };
        let rows = match &query.status {
            Some(s) => sqlx::query(q(&self.sql.list_status))
                .bind(limit)
                .bind(offset)
                .bind(s.as_str()),
            None => sqlx::query(q(&self.sql.list)).bind(limit).bind(offset),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list", None))?;
        let regs = self.decode(rows, "list")?;
        if pushdown {
            Ok(regs)
        } else {
            query.apply(regs)
        }
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
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
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        // One snapshot for the counter, the tombstones and the rows.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_err("begin read", None))?;
        // The counter and the tombstones after the cursor in one round trip.
        let head: Vec<(i64, i64, Option<i64>, Option<String>)> =
            sqlx::query_as(q(&self.sql.state_and_tombstones))
                .bind(revision as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err("read changes", None))?;
        let Some(&(current, horizon, ..)) = head.first() else {
            return Err(crate::rows::corrupt(
                KIND,
                self.location(),
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
        const PAGE: i64 = 5_000;
        let mut rows = Vec::new();
        let mut after = revision as i64;
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
    }

    async fn current_revision(&self) -> Result<u64> {
        let (current, _): (i64, i64) = sqlx::query_as(q(&self.sql.state))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("read state", None))?;
        Ok(current as u64)
    }

    async fn clear(&self) -> Result<u64> {
        let (mut tx, mut revision) = self.begin_write(None).await?;
        let ids: Vec<String> = sqlx::query_scalar(q(&self.sql.all_ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("clear", None))?;
        for id in &ids {
            revision += 1;
            self.delete(&mut tx, id, revision).await?;
        }
        commit(tx, None).await?;
        Ok(ids.len() as u64)
    }
}
