//! `SqliteBackend`: the embedded default registry (rusqlite with bundled SQLite, WAL).
//!
//! Durability: WAL with `synchronous = NORMAL` by default — a committed write survives a crash
//! of the process; a power loss may lose the last transactions (never corrupt the file). Config
//! `synchronous: full` adds an fsync per commit. Writers
//! serialise on `BEGIN IMMEDIATE` (also across processes, with a 10 s busy timeout), so
//! revisions are handed out and committed in the same order. Statements run on the calling
//! task: each takes microseconds, far less than a thread hand-off would cost.

use dynreg_registry_core::backend::shared;
use dynreg_registry_core::config_hash;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::backend::{now, plan_register, validate_write};
use dynreg_registry_core::{
    ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, RegistryError, Result, Status, WriteCondition, validate_bot_id,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};

use crate::config::{
    DEFAULT_TOMBSTONE_RETENTION, DEFAULT_TOUCH_RESOLUTION, SqliteConfig, build_from_json, invalid,
    validate_identifier,
};
use crate::rows::{
    ParsedConfigs, StoredRow, from_micros, json_text, merge_changes, micros, sql_count, sql_i64,
};
use crate::touch::TouchBuffer;

const KIND: &str = "sqlite";
const COLUMNS: &str = "bot_id, config, status, metadata, created_at, updated_at, last_accessed_at, revision, config_hash";

/// A registry in one SQLite database file.
pub struct SqliteBackend {
    path: PathBuf,
    table: String,
    touches: TouchBuffer,
    parsed: ParsedConfigs,
    tombstone_retention: u64,
    synchronous: &'static str,
    /// The connection every write goes through (and reads of an in-memory database).
    conn: Mutex<Option<Connection>>,
    /// A second connection for reads: in WAL mode a reader never waits for a writer, so reads
    /// never queue behind a long write (or its fsync) on the writer's lock.
    reader: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SqliteBackend(path={:?}, table={})",
            self.path, self.table
        )
    }
}

fn db_err(op: &'static str, bot_id: Option<&str>) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    move |e| RegistryError::storage(KIND, op, bot_id, e)
}

impl SqliteBackend {
    /// A backend on `path` using table `registrations`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteBackend {
            path: path.as_ref().to_owned(),
            table: "registrations".into(),
            touches: TouchBuffer::new(DEFAULT_TOUCH_RESOLUTION),
            parsed: ParsedConfigs::new(),
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            synchronous: "NORMAL",
            conn: Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    /// Builds a backend from its JSON config, read as [`SqliteConfig`] (keys `path` or
    /// `database`, `table`, `touch_resolution_ms`, `tombstone_retention`, `synchronous`; see
    /// there for defaults and [`crate::config`] for the rules). Call `initialize` before use.
    pub fn from_config(config: &Value) -> Result<Self> {
        build_from_json(config, Self::with_config)
    }

    /// Builds a backend from its typed config. Call `initialize` before use.
    pub fn with_config(config: SqliteConfig) -> Result<Self> {
        validate_identifier(&config.table).map_err(|reason| invalid(KIND, "table", reason))?;
        Ok(SqliteBackend {
            path: config.path,
            table: config.table,
            touches: TouchBuffer::new(Duration::from_millis(config.touch_resolution_ms)),
            parsed: ParsedConfigs::new(),
            tombstone_retention: config.tombstone_retention,
            synchronous: config.synchronous.as_pragma(),
            conn: Mutex::new(None),
            reader: Mutex::new(None),
        })
    }

    /// Sets the touch resolution.
    pub fn with_touch_resolution(mut self, d: Duration) -> Self {
        self.touches = TouchBuffer::new(d);
        self
    }

    /// Sets the table name (validated as an identifier).
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        validate_identifier(table).map_err(|reason| invalid(KIND, "table", reason))?;
        self.table = table.to_owned();
        Ok(self)
    }

    /// Sets how many deletion tombstones are kept.
    pub fn with_tombstone_retention(mut self, n: u64) -> Self {
        self.tombstone_retention = n;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a write on the writer connection, off the async worker: SQLite blocks (on its
    /// write lock, on an fsync), so on a multi-thread runtime the worker hands its other tasks
    /// to another thread first (`block_in_place`); a current-thread runtime has no other worker
    /// to hand them to, so there it runs in place.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let run = || {
            let mut guard = self.lock();
            let conn = guard
                .as_mut()
                .ok_or(RegistryError::NotInitialized { backend: KIND })?;
            f(conn)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// Runs a read on the reader connection (the writer's, for an in-memory database). Reads
    /// take microseconds and never wait for a writer in WAL mode, so they run in place.
    fn with_reader<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(conn) => f(conn),
            None => {
                drop(guard);
                self.with_conn(f)
            }
        }
    }

    fn location(&self) -> String {
        format!("{} table {}", self.path.display(), self.table)
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow<'static>> {
        // Look the hash up first: an unchanged config is neither copied nor parsed again.
        let config_hash: String = r.get(8)?;
        let parsed_config = self.parsed.cached(&config_hash);
        Ok(StoredRow {
            bot_id: r.get(0)?,
            config: if parsed_config.is_some() {
                Cow::Borrowed("")
            } else {
                Cow::Owned(r.get(1)?)
            },
            status: Cow::Owned(r.get(2)?),
            metadata: Cow::Owned(r.get(3)?),
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
            last_accessed_at: r.get(6)?,
            revision: r.get(7)?,
            config_hash,
            parsed_config,
        })
    }

    fn select(&self, conn: &Connection, bot_id: &str) -> Result<Option<Registration>> {
        let t = &self.table;
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM \"{t}\" WHERE bot_id = ?1"))
            .and_then(|mut s| s.query_row([bot_id], |r| self.row(r)).optional())
            .map_err(db_err("read", Some(bot_id)))?
            .map(|row| row.into_registration(KIND, &self.location(), &self.parsed))
            .transpose()
    }

    fn state(&self, conn: &Connection) -> Result<(u64, u64)> {
        let t = &self.table;
        conn.prepare_cached(&format!(
            "SELECT revision, horizon FROM \"{t}_state\" WHERE id = 1"
        ))
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
        })
        .map_err(db_err("read state", None))
    }

    fn bump(&self, tx: &Transaction<'_>) -> Result<u64> {
        let t = &self.table;
        tx.prepare_cached(&format!(
            "UPDATE \"{t}_state\" SET revision = revision + 1 WHERE id = 1 RETURNING revision"
        ))
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(|r| r as u64)
        .map_err(db_err("take revision", None))
    }

    fn put(&self, tx: &Transaction<'_>, reg: &Registration) -> Result<()> {
        let t = &self.table;
        let (config, metadata) = json_text(&reg.config, &reg.metadata);
        tx.prepare_cached(&format!(
            // An upsert rather than INSERT OR REPLACE: an update then touches only the indexes
            // whose columns changed (the status index stays as it is).
            "INSERT INTO \"{t}\" ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (bot_id) DO UPDATE SET config = excluded.config, status = excluded.status,
               metadata = excluded.metadata, created_at = excluded.created_at,
               updated_at = excluded.updated_at, last_accessed_at = excluded.last_accessed_at,
               revision = excluded.revision, config_hash = excluded.config_hash"
        ))
        .and_then(|mut s| {
            s.execute(params![
                reg.bot_id,
                config,
                reg.status.as_str(),
                metadata,
                micros(&reg.created_at),
                micros(&reg.updated_at),
                micros(&reg.last_accessed_at),
                sql_i64(reg.revision),
                reg.config_hash
            ])
        })
        .and_then(|_| {
            tx.prepare_cached(&format!("DELETE FROM \"{t}_tombstones\" WHERE bot_id = ?1"))?
                .execute([&reg.bot_id])
        })
        .map(drop)
        .map_err(db_err("write", Some(&reg.bot_id)))
    }

    /// Deletes a row inside a write transaction, leaving a tombstone. `false` if absent.
    fn delete(&self, tx: &Transaction<'_>, bot_id: &str) -> Result<bool> {
        let t = &self.table;
        let gone = tx
            .prepare_cached(&format!("DELETE FROM \"{t}\" WHERE bot_id = ?1"))
            .and_then(|mut s| s.execute([bot_id]))
            .map_err(db_err("delete", Some(bot_id)))?;
        if gone == 0 {
            return Ok(false);
        }
        let rev = self.bump(tx)?;
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO \"{t}_tombstones\" (revision, bot_id) VALUES (?1, ?2)"
        ))
        .and_then(|mut s| s.execute(params![sql_i64(rev), bot_id]))
        .map_err(db_err("delete", Some(bot_id)))?;
        if rev.is_multiple_of(64) {
            self.compact(tx)?;
        }
        Ok(true)
    }

    /// Drops the oldest tombstones beyond the retention and raises the horizon.
    fn compact(&self, tx: &Transaction<'_>) -> Result<()> {
        let t = &self.table;
        let cutoff: Option<i64> = tx
            .query_row(
                &format!(
                    "SELECT revision FROM \"{t}_tombstones\" ORDER BY revision DESC LIMIT 1 OFFSET ?1"
                ),
                [sql_i64(self.tombstone_retention)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("compact tombstones", None))?;
        if let Some(cutoff) = cutoff {
            tx.execute(
                &format!("DELETE FROM \"{t}_tombstones\" WHERE revision <= ?1"),
                [cutoff],
            )
            .and_then(|_| {
                tx.execute(
                    &format!("UPDATE \"{t}_state\" SET horizon = max(horizon, ?1) WHERE id = 1"),
                    [cutoff],
                )
            })
            .map_err(db_err("compact tombstones", None))?;
        }
        Ok(())
    }

    /// Writes a batch of buffered touches in one transaction; on failure they stay buffered.
    fn write_touches(&self, conn: &mut Connection, batch: Vec<(String, i64)>) -> Result<()> {
        let t = &self.table;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE \"{t}\" SET last_accessed_at = max(last_accessed_at, ?1) WHERE bot_id = ?2"
                ))?;
                for (id, at) in &batch {
                    stmt.execute(params![at, id])?;
                }
            }
            tx.commit()
        })();
        result.map_err(|e| {
            self.touches.restore(batch);
            RegistryError::storage(KIND, "touch", None, e)
        })
    }

    fn write_tx<'c>(
        &self,
        conn: &'c mut Connection,
        bot_id: Option<&str>,
    ) -> Result<Transaction<'c>> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("begin write", bot_id))
    }
}

fn commit(tx: Transaction<'_>, bot_id: Option<&str>) -> Result<()> {
    tx.commit().map_err(db_err("commit", bot_id))
}

#[async_trait]
impl RegistryBackend for SqliteBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn initialize(&self) -> Result<()> {
        let mut guard = self.lock();
        if guard.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                RegistryError::storage(
                    KIND,
                    "create directory",
                    None,
                    format!("{}: {e}", dir.display()),
                )
            })?;
        }
        let conn = Connection::open(&self.path).map_err(|e| {
            RegistryError::storage(KIND, "open", None, format!("{}: {e}", self.path.display()))
        })?;
        let t = &self.table;
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| conn.pragma_update(None, "synchronous", self.synchronous))
            // Checkpoint (copy the WAL back, with an fsync) every ~40 MB rather than ~4 MB.
            .and_then(|_| conn.pragma_update(None, "wal_autocheckpoint", 10_000))
            // Read database pages through a shared mapping instead of a read() copy each, and
            // keep up to 32 MiB of pages in this connection's cache.
            .and_then(|_| conn.pragma_update(None, "mmap_size", 256_i64 << 20))
            .and_then(|_| conn.pragma_update(None, "cache_size", -32_768))
            .and_then(|_| {
                conn.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS \"{t}\" (
                        bot_id TEXT PRIMARY KEY NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
                        metadata TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                        last_accessed_at INTEGER NOT NULL, revision INTEGER NOT NULL, config_hash TEXT NOT NULL)
                        WITHOUT ROWID;
                     CREATE UNIQUE INDEX IF NOT EXISTS \"{t}_by_revision\" ON \"{t}\" (revision);
                     CREATE INDEX IF NOT EXISTS \"{t}_by_status\" ON \"{t}\" (status, bot_id);
                     CREATE TABLE IF NOT EXISTS \"{t}_tombstones\" (
                        revision INTEGER PRIMARY KEY, bot_id TEXT NOT NULL UNIQUE);
                     CREATE TABLE IF NOT EXISTS \"{t}_state\" (
                        id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, horizon INTEGER NOT NULL);
                     INSERT OR IGNORE INTO \"{t}_state\" (id, revision, horizon) VALUES (1, 0, 0);"
                ))
            })
            .map_err(|e| {
                RegistryError::storage(KIND, "create schema", None, format!("{}: {e}", self.path.display()))
            })?;
        *guard = Some(conn);
        drop(guard);
        let in_memory = self.path.as_os_str().is_empty() || self.path == Path::new(":memory:");
        if !in_memory {
            let reader = Connection::open(&self.path)
                .and_then(|r| {
                    r.busy_timeout(Duration::from_secs(10))?;
                    r.pragma_update(None, "mmap_size", 256_i64 << 20)?;
                    r.pragma_update(None, "cache_size", -32_768)?;
                    r.pragma_update(None, "query_only", true)?;
                    Ok(r)
                })
                .map_err(|e| {
                    RegistryError::storage(
                        KIND,
                        "open",
                        None,
                        format!("{}: {e}", self.path.display()),
                    )
                })?;
            *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let pending = self.touches.drain();
        if !pending.is_empty() {
            self.with_conn(|conn| self.write_touches(conn, pending))?;
        }
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader
                .close()
                .map_err(|(_, e)| RegistryError::storage(KIND, "close", None, e))?;
        }
        if let Some(conn) = self.lock().take() {
            conn.close()
                .map_err(|(_, e)| RegistryError::storage(KIND, "close", None, e))?;
        }
        Ok(())
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        validate_write(bot_id, &config, &options)?;
        let hash = config_hash(&config);
        self.with_conn(|conn| {
            let tx = self.write_tx(conn, Some(bot_id))?;
            let current = self.select(&tx, bot_id)?;
            options
                .condition
                .check(bot_id, current.as_ref().map(|c| c.revision))?;
            // The revision is taken only once the write is known not to be a no-op.
            let Some(mut reg) = plan_register(bot_id, config, hash, &options, current.as_ref(), 0)
            else {
                return Ok(Registered::unchanged(
                    current.expect("no-op plans only exist for present ids"),
                ));
            };
            reg.revision = self.bump(&tx)?;
            self.put(&tx, &reg)?;
            commit(tx, Some(bot_id))?;
            Ok(Registered::written(reg, current.is_some()))
        })
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let Some(mut reg) = self.with_reader(|conn| self.select(conn, bot_id))? else {
            return Ok(None);
        };
        let t = now();
        if let Some(batch) = self
            .touches
            .touch(bot_id, micros(&reg.last_accessed_at), micros(&t))
        {
            self.with_conn(|conn| self.write_touches(conn, batch))?;
        }
        reg.last_accessed_at = t;
        Ok(Some(reg))
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        validate_bot_id(bot_id)?;
        let mut reg = self.with_reader(|conn| self.select(conn, bot_id))?;
        if let (Some(r), Some(t)) = (reg.as_mut(), self.touches.pending(bot_id)) {
            r.last_accessed_at = r.last_accessed_at.max(from_micros(t));
        }
        Ok(reg)
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        validate_bot_id(bot_id)?;
        self.with_conn(|conn| {
            let tx = self.write_tx(conn, Some(bot_id))?;
            let Some(mut reg) = self.select(&tx, bot_id)? else {
                return Ok(Deactivation::ABSENT);
            };
            if reg.status == Status::Inactive {
                return Ok(Deactivation::UNCHANGED);
            }
            reg.status = Status::Inactive;
            reg.updated_at = now();
            reg.revision = self.bump(&tx)?;
            self.put(&tx, &reg)?;
            commit(tx, Some(bot_id))?;
            Ok(Deactivation::at(reg.revision))
        })
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        validate_bot_id(bot_id)?;
        self.with_conn(|conn| {
            let tx = self.write_tx(conn, Some(bot_id))?;
            let existed = self.delete(&tx, bot_id)?;
            commit(tx, Some(bot_id))?;
            Ok(existed)
        })
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        validate_bot_id(bot_id)?;
        self.with_conn(|conn| {
            let tx = self.write_tx(conn, Some(bot_id))?;
            let actual = self.select(&tx, bot_id)?.map(|r| r.revision);
            WriteCondition::Revision(revision).check(bot_id, actual)?;
            self.delete(&tx, bot_id)?;
            commit(tx, Some(bot_id))?;
            Ok(())
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        self.list_rows(query).await.map(shared)
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        if let Some(query) = ListQuery::counting(status, filter_metadata) {
            return Ok(self.list(&query).await?.len() as u64);
        }
        self.with_reader(|conn| {
            let t = &self.table;
            let n: i64 = match status {
                Some(s) => conn
                    .prepare_cached(&format!("SELECT COUNT(*) FROM \"{t}\" WHERE status = ?1"))
                    .and_then(|mut st| st.query_row([s.as_str()], |r| r.get(0))),
                None => conn
                    .prepare_cached(&format!("SELECT COUNT(*) FROM \"{t}\""))
                    .and_then(|mut st| st.query_row([], |r| r.get(0))),
            }
            .map_err(db_err("count", None))?;
            Ok(n as u64)
        })
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.with_reader(|conn| {
            // One read transaction: rows, tombstones and the revision from one snapshot.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(db_err("begin read", None))?;
            let (current, horizon) = self.state(&tx)?;
            if revision < horizon || revision > current {
                return Ok(ChangeFeed::Expired {
                    cursor: revision,
                    oldest_available: horizon,
                    current_revision: current,
                });
            }
            let t = &self.table;
            let location = self.location();
            let rows: Vec<StoredRow> = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM \"{t}\" WHERE revision > ?1 ORDER BY revision"
                ))
                .and_then(|mut s| s.query_map([sql_i64(revision)], |r| self.row(r))?.collect())
                .map_err(db_err("read changes", None))?;
            let tombstones: Vec<(u64, String)> = tx
                .prepare_cached(&format!(
                    "SELECT revision, bot_id FROM \"{t}_tombstones\" WHERE revision > ?1"
                ))
                .and_then(|mut s| {
                    s.query_map([sql_i64(revision)], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(db_err("read changes", None))?;
            let regs = rows
                .into_iter()
                .map(|r| r.into_registration(KIND, &location, &self.parsed))
                .collect::<Result<Vec<_>>>()?;
            Ok(ChangeFeed::Changes {
                changes: merge_changes(regs, tombstones),
                current_revision: current,
            })
        })
    }

    async fn current_revision(&self) -> Result<u64> {
        self.with_reader(|conn| Ok(self.state(conn)?.0))
    }

    async fn clear(&self) -> Result<u64> {
        self.with_conn(|conn| {
            let tx = self.write_tx(conn, None)?;
            let t = &self.table;
            let ids: Vec<String> = tx
                .prepare(&format!("SELECT bot_id FROM \"{t}\" ORDER BY bot_id"))
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(db_err("clear", None))?;
            for id in &ids {
                self.delete(&tx, id)?;
            }
            commit(tx, None)?;
            Ok(ids.len() as u64)
        })
    }
}

impl SqliteBackend {
    /// The rows of a listing, as [`RegistryBackend::list`] returns them (before sharing).
    async fn list_rows(&self, query: &ListQuery) -> Result<Vec<Registration>> {
        query.validate()?;
        // Without a metadata filter or sort, the database pages by bot_id itself.
        let pushdown = query.is_plain();
        self.with_reader(|conn| {
            let t = &self.table;
            let mut sql = format!("SELECT {COLUMNS} FROM \"{t}\" WHERE 1");
            if query.status.is_some() {
                // `+status`: scan the table in primary-key (bot_id) order and filter, instead of
                // walking the status index and looking every row up again.
                sql.push_str(" AND +status = ?1");
            }
            // A metadata filter is narrowed by SQLite's JSON functions rather than by loading
            // every row: `IS` on the extracted values is a superset of the filter's equality
            // (1 = 1.0, true = 1, a missing key IS a null), and `apply` below is exact. Keys a
            // JSON path cannot quote are left to `apply`.
            let mut filter_params: Vec<String> = Vec::new();
            for (k, v) in query.filter_metadata.iter().flatten() {
                if k.contains('"') || k.contains('\\') {
                    continue;
                }
                let n = 4 + filter_params.len();
                sql.push_str(&format!(
                    " AND json_extract(metadata, ?{n}) IS json_extract(?{}, '$')",
                    n + 1
                ));
                filter_params.push(format!("$.\"{k}\""));
                filter_params.push(v.to_string());
            }
            if pushdown {
                sql.push_str(" ORDER BY bot_id LIMIT ?2 OFFSET ?3");
            }
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err("list", None))?;
            let status = query.status.as_ref().map(|s| s.as_str().to_owned());
            let limit = query.limit.map_or(-1, sql_count);
            let offset = sql_count(query.offset.unwrap_or(0));
            let location = self.location();
            let map = |r: &rusqlite::Row<'_>| self.row(r);
            // Parameters by position: ?1 status, ?2 limit, ?3 offset, then the filter's pairs.
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            use rusqlite::types::Value as Sql;
            values.push(status.map_or(Sql::Null, Sql::Text));
            values.push(Sql::Integer(limit));
            values.push(Sql::Integer(offset));
            values.extend(filter_params.into_iter().map(Sql::Text));
            // Bind only the numbered parameters the statement has.
            let count = stmt.parameter_count();
            let bound: Vec<&dyn rusqlite::ToSql> = values
                .iter()
                .take(count)
                .map(|v| v as &dyn rusqlite::ToSql)
                .collect();
            let rows: Vec<StoredRow> = stmt
                .query_map(bound.as_slice(), map)
                .and_then(|rows| rows.collect())
                .map_err(db_err("list", None))?;
            let regs = rows
                .into_iter()
                .map(|r| r.into_registration(KIND, &location, &self.parsed))
                .collect::<Result<Vec<_>>>()?;
            if pushdown {
                Ok(regs)
            } else {
                query.apply(regs)
            }
        })
    }
}
