//! The PostgreSQL + pgvector store: the engine for deployments that outgrow one process. Every
//! replica shares one table; an HNSW index serves the searches; metadata is `jsonb` and the
//! filter semantics are pushed into SQL.
//!
//! Invariants:
//! - One table per store: `id text primary key, embedding vector(d), metadata jsonb`, an HNSW
//!   index with the metric's operator class and a GIN index on the metadata. Creating them is
//!   serialised by an advisory lock, so replicas starting together do not race. An existing
//!   table of another width is refused by name.
//! - A filter condition on `k` with value `v` is `metadata @> {k: v} OR metadata @> {k: [v]}`
//!   (equality, or membership in a list value; both served by the GIN index); a list value is
//!   the OR of its elements, an empty list is `false`, keys are ANDed — the semantics of the
//!   memory store, so both pass one conformance suite.
//! - Searches run with `hnsw.iterative_scan = strict_order`, so a selective filter still
//!   returns `k` rows when `k` rows match.
//! - Upserts are batched: one statement per 500 records (`unnest` of arrays).

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::{Filter, Metric, SearchHit, VectorError, VectorRecord, VectorStore};

/// The pgvector store's options.
#[derive(Clone, PartialEq)]
pub struct PgVectorConfig {
    /// `postgres://user@host:port/db`.
    pub url: String,
    /// The table (letters, digits and `_`; default `dynreg_vectors`).
    pub table: String,
    /// The width of every vector.
    pub dimensions: usize,
    /// The similarity (and the index's operator class).
    pub metric: Metric,
    /// Pool size (default 5).
    pub max_connections: u32,
    /// `hnsw.ef_search` for searches (default 100).
    pub ef_search: u32,
}

impl std::fmt::Debug for PgVectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgVectorConfig")
            .field("url", &scrub(&self.url))
            .field("table", &self.table)
            .field("dimensions", &self.dimensions)
            .field("metric", &self.metric)
            .finish_non_exhaustive()
    }
}

impl PgVectorConfig {
    /// A cosine store of `dimensions` in table `dynreg_vectors` at `url`.
    pub fn new(url: impl Into<String>, dimensions: usize) -> Self {
        PgVectorConfig {
            url: url.into(),
            table: "dynreg_vectors".into(),
            dimensions,
            metric: Metric::Cosine,
            max_connections: 5,
            ef_search: 100,
        }
    }
}

/// The URL without its password.
fn scrub(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The store.
pub struct PgVectorStore {
    pool: PgPool,
    config: PgVectorConfig,
    table: String,
}

impl std::fmt::Debug for PgVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgVectorStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn db(config: &PgVectorConfig, e: impl std::fmt::Display) -> VectorError {
    VectorError::Backend(format!(
        "pgvector {} table {}: {e}",
        scrub(&config.url),
        config.table
    ))
}

fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// The SQL of one condition (`key` = `value` by the filter semantics), its parameters appended.
fn condition(key: &str, value: &Value, args: &mut Vec<String>) -> String {
    let values: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    if values.is_empty() {
        return "false".to_owned();
    }
    let mut alts = Vec::new();
    for v in values {
        let k = args.len() + 1;
        args.push(key.to_owned());
        args.push(v.to_string());
        alts.push(format!(
            "(metadata @> jsonb_build_object(${k}::text, ${v}::jsonb) OR metadata @> jsonb_build_object(${k}::text, jsonb_build_array(${v}::jsonb)))",
            v = k + 1
        ));
    }
    format!("({})", alts.join(" OR "))
}

/// A WHERE clause for `filter`; its parameters (all text) are appended to `args`, numbered
/// after the ones already there.
fn where_clause(filter: &Filter, args: &mut Vec<String>) -> String {
    if filter.is_empty() {
        return "true".into();
    }
    let mut parts = Vec::new();
    for (key, value) in filter.conditions() {
        parts.push(condition(key, value, args));
    }
    for (key, value) in filter.exclusions() {
        parts.push(format!("NOT {}", condition(key, value, args)));
    }
    parts.join(" AND ")
}

impl PgVectorStore {
    /// Connects, creating the extension, the table and its indexes if they do not exist.
    pub async fn connect(config: PgVectorConfig) -> Result<Self, VectorError> {
        let valid = !config.table.is_empty()
            && config.table.len() <= 63
            && config
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !config.table.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(VectorError::Config(format!(
                "table {:?}: use letters, digits and _ (at most 63, not starting with a digit)",
                config.table
            )));
        }
        if config.dimensions == 0 {
            return Err(VectorError::Config("dimensions must be positive".into()));
        }
        let ef = config.ef_search;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::query(AssertSqlSafe(format!("SET hnsw.ef_search = {ef}")))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("SET hnsw.iterative_scan = strict_order")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy(&config.url)
            .map_err(|e| db(&config, e))?;
        let table = format!("\"{}\"", config.table);
        let ops = match config.metric {
            Metric::Cosine => "vector_cosine_ops",
            Metric::DotProduct => "vector_ip_ops",
            Metric::Euclidean => "vector_l2_ops",
        };
        let d = config.dimensions;
        let mut tx = pool.begin().await.map_err(|e| db(&config, e))?;
        for stmt in [
            "SELECT pg_advisory_xact_lock(hashtext('dynreg-pgvector-ddl'))".to_owned(),
            "CREATE EXTENSION IF NOT EXISTS vector".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, embedding vector({d}) NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}')"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{}_hnsw\" ON {table} USING hnsw (embedding {ops})",
                config.table
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{}_meta\" ON {table} USING gin (metadata jsonb_path_ops)",
                config.table
            ),
        ] {
            sqlx::query(AssertSqlSafe(stmt))
                .execute(&mut *tx)
                .await
                .map_err(|e| db(&config, e))?;
        }
        let width: i32 = sqlx::query_scalar(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'embedding'",
        )
        .bind(&table)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db(&config, e))?;
        tx.commit().await.map_err(|e| db(&config, e))?;
        if width as usize != d {
            return Err(VectorError::Config(format!(
                "table {} holds {width}-dimensional vectors; the store is configured for {d}",
                config.table
            )));
        }
        Ok(PgVectorStore {
            pool,
            config,
            table,
        })
    }

    /// The options.
    pub fn config(&self) -> &PgVectorConfig {
        &self.config
    }

    fn check(&self, id: &str, v: &[f32]) -> Result<(), VectorError> {
        super::check_width(id, v, self.config.dimensions)
    }

    fn err(&self, e: impl std::fmt::Display) -> VectorError {
        db(&self.config, e)
    }

    async fn execute_filtered(
        &self,
        head: &str,
        filter: &Filter,
        leading: Vec<String>,
    ) -> Result<u64, VectorError> {
        let mut args = leading;
        let clause = where_clause(filter, &mut args);
        let sql = format!("{head} WHERE {clause}");
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
        for a in &args {
            q = q.bind(a);
        }
        Ok(q.execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected())
    }
}

#[async_trait]
impl VectorStore for PgVectorStore {
    fn kind(&self) -> &'static str {
        "pgvector"
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError> {
        for r in &records {
            self.check(&r.id, &r.vector)?;
        }
        let sql = format!(
            "INSERT INTO {t} (id, embedding, metadata) SELECT u.id, u.v::vector, u.m::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, v, m) ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata",
            t = self.table
        );
        // An id twice in the batch: the last one wins, as in every store (one statement may
        // not update a row twice).
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert(r.id.as_str(), i);
        }
        let records: Vec<&VectorRecord> = records
            .iter()
            .enumerate()
            .filter(|(i, r)| last.get(r.id.as_str()) == Some(i))
            .map(|(_, r)| r)
            .collect();
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for batch in records.chunks(500) {
            let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
            let vectors: Vec<String> = batch.iter().map(|r| vector_text(&r.vector)).collect();
            let metas: Vec<String> = batch
                .iter()
                .map(|r| Value::Object(r.metadata.clone()).to_string())
                .collect();
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&ids)
                .bind(&vectors)
                .bind(&metas)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, VectorError> {
        let sql = format!("DELETE FROM {} WHERE id = ANY($1::text[])", self.table);
        let done = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    async fn clear(&self, filter: &Filter) -> Result<u64, VectorError> {
        self.execute_filtered(&format!("DELETE FROM {}", self.table), filter, Vec::new())
            .await
    }

    async fn update_metadata_where(
        &self,
        filter: &Filter,
        patch: &Map<String, Value>,
    ) -> Result<u64, VectorError> {
        let head = format!("UPDATE {} SET metadata = metadata || $1::jsonb", self.table);
        self.execute_filtered(
            &head,
            filter,
            vec![Value::Object(patch.clone()).to_string()],
        )
        .await
    }

    async fn update_metadata_atomically(
        &self,
        updates: &[(Filter, Map<String, Value>)],
    ) -> Result<Vec<u64>, VectorError> {
        // One transaction; each row's new metadata is decided from the rows as they were
        // before it (the updates run on a snapshot of the ids each selects first).
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let mut selected: Vec<Vec<String>> = Vec::with_capacity(updates.len());
        for (filter, _) in updates {
            let mut args = Vec::new();
            let clause = where_clause(filter, &mut args);
            let sql = format!("SELECT id FROM {} WHERE {clause} FOR UPDATE", self.table);
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str()));
            for a in &args {
                q = q.bind(a);
            }
            selected.push(q.fetch_all(&mut *tx).await.map_err(|e| self.err(e))?);
        }
        let mut counts = Vec::with_capacity(updates.len());
        for ((_, patch), ids) in updates.iter().zip(&selected) {
            let sql = format!(
                "UPDATE {} SET metadata = metadata || $1::jsonb WHERE id = ANY($2::text[])",
                self.table
            );
            let done = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(Value::Object(patch.clone()).to_string())
                .bind(ids)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            counts.push(done.rows_affected());
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(counts)
    }

    async fn distinct(
        &self,
        filter: &Filter,
        keys: &[&str],
    ) -> Result<Vec<(Vec<Value>, u64)>, VectorError> {
        let mut args = Vec::new();
        let clause = where_clause(filter, &mut args);
        let first = args.len() + 1;
        let cols: Vec<String> = (0..keys.len())
            .map(|i| format!("metadata -> ${}::text", first + i))
            .collect();
        let sql = format!(
            "SELECT jsonb_build_array({cols})::text AS k, count(*) AS n FROM {t} WHERE {clause} GROUP BY 1",
            cols = cols.join(", "),
            t = self.table
        );
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
        for a in &args {
            q = q.bind(a);
        }
        for k in keys {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|row| {
                let k: String = row.try_get("k").map_err(|e| self.err(e))?;
                let n: i64 = row.try_get("n").map_err(|e| self.err(e))?;
                let tuple: Vec<Value> = serde_json::from_str(&k).map_err(|e| self.err(e))?;
                Ok((tuple, n as u64))
            })
            .collect()
    }

    async fn count(&self, filter: &Filter) -> Result<u64, VectorError> {
        let mut args = Vec::new();
        let clause = where_clause(filter, &mut args);
        let sql = format!("SELECT count(*) FROM {} WHERE {clause}", self.table);
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.as_str()));
        for a in &args {
            q = q.bind(a);
        }
        Ok(q.fetch_one(&self.pool).await.map_err(|e| self.err(e))? as u64)
    }

    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<SearchHit>, VectorError> {
        self.check("<query>", vector)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let op = match self.config.metric {
            Metric::Cosine => "<=>",
            Metric::DotProduct => "<#>",
            Metric::Euclidean => "<->",
        };
        let mut args = vec![vector_text(vector)];
        let clause = where_clause(filter, &mut args);
        let sql = format!(
            "SELECT id, (embedding {op} $1::vector)::float8 AS d, metadata::text AS m FROM {t} WHERE {clause} ORDER BY embedding {op} $1::vector LIMIT {k}",
            t = self.table
        );
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(|e| self.err(e))?;
                let d: f64 = row.try_get("d").map_err(|e| self.err(e))?;
                let m: String = row.try_get("m").map_err(|e| self.err(e))?;
                let metadata: Map<String, Value> =
                    serde_json::from_str(&m).map_err(|e| self.err(e))?;
                let score = match self.config.metric {
                    Metric::Cosine => 1.0 - d,
                    Metric::DotProduct => -d,
                    Metric::Euclidean => 1.0 / (1.0 + d),
                } as f32;
                Ok(SearchHit {
                    id,
                    score,
                    metadata: std::sync::Arc::new(metadata),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed() {
        assert_eq!(
            scrub("postgres://u:secret@h:5433/db"),
            "postgres://u:***@h:5433/db"
        );
        assert_eq!(scrub("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn filters_become_parameterised_sql() {
        let f = Filter::from_value(&serde_json::json!({"a": 1, "b": ["x", "y"], "c": []})).unwrap();
        let mut args = vec!["[1,2]".to_owned()];
        let sql = where_clause(&f, &mut args);
        assert_eq!(args, vec!["[1,2]", "a", "1", "b", "\"x\"", "b", "\"y\""]);
        assert!(
            sql.contains("$2::text") && sql.contains("$7::jsonb") && sql.ends_with("AND false"),
            "{sql}"
        );
    }
}
