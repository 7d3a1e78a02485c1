//! Vector stores: one small trait ([`VectorStore`]), the original's metadata filter semantics
//! ([`Filter`]), the in-process store ([`MemoryVectorStore`]) and, with the `pgvector`
//! feature, PostgreSQL with pgvector (`PgVectorStore`).
//!
//! Filter semantics, the same in every store (and pushed into the engine where a store has
//! one): scalar against scalar is equality (numbers compare by value, `1 == 1.0`); a list
//! filter value means IN; a list metadata value means membership; list against list is a
//! non-empty intersection; an empty list is unsatisfiable; a missing (or null) key fails; keys
//! are ANDed; the empty filter matches everything.

mod memory;
#[cfg(feature = "pgvector")]
mod pgvector;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use memory::{MemoryVectorStore, MemoryVectorStoreConfig, Metric};
#[cfg(feature = "pgvector")]
pub use pgvector::{PgVectorConfig, PgVectorStore};

/// A vector store failed or refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VectorError {
    /// A vector of the wrong width.
    #[error("vector {id:?} has {got} dimensions; the store has {expected}")]
    Dimensions {
        /// The record (or `"<query>"`).
        id: String,
        /// The store's width.
        expected: usize,
        /// The vector's width.
        got: usize,
    },
    /// The store's config is invalid.
    #[error("vector_store config: {0}")]
    Config(String),
    /// The store's server failed (connection, statement); the server (password scrubbed) and
    /// the table are named.
    #[error("{0}")]
    Backend(String),
    /// Reading or writing the persisted store failed; the file is named.
    #[error("vector store file {path}: {message}")]
    Persist {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// `Ok` if `vector` has `dimensions` entries; else the error naming the record.
pub(crate) fn check_width(id: &str, vector: &[f32], dimensions: usize) -> Result<(), VectorError> {
    if vector.len() != dimensions {
        return Err(VectorError::Dimensions {
            id: id.to_owned(),
            expected: dimensions,
            got: vector.len(),
        });
    }
    Ok(())
}

/// One stored vector with its id and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    /// Unique in the store; upserting an existing id replaces it.
    pub id: String,
    /// Exactly the store's width.
    pub vector: Vec<f32>,
    /// Metadata, filtered on by [`Filter`].
    pub metadata: Map<String, Value>,
}

impl VectorRecord {
    /// The record of `chunk` with its `vector`: the chunk's id and its full metadata
    /// ([`crate::Chunk::metadata`]), as an ingest stores it.
    pub fn from_chunk(chunk: &crate::Chunk, vector: Vec<f32>) -> Self {
        VectorRecord {
            id: chunk.id.clone(),
            vector,
            metadata: chunk.metadata(),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The record's id.
    pub id: String,
    /// Its similarity to the query (cosine by default; higher is nearer).
    pub score: f32,
    /// Its metadata.
    pub metadata: Arc<Map<String, Value>>,
}

/// A metadata filter: conditions ANDed, each with the semantics of the module docs, and
/// exclusions: a row matching any exclusion (by the same semantics) is left out. The
/// original's filters are conditions only; dynreg's reads exclude retired (`_stale`) and
/// not-yet-committed (`_pending`) rows with exclusions, inside the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    conditions: Map<String, Value>,
    exclusions: Map<String, Value>,
}

impl Filter {
    /// The filter that matches everything.
    pub fn all() -> Self {
        Filter::default()
    }

    /// A filter of conditions from a JSON object (the original's form); `None` for any other
    /// value.
    pub fn from_value(v: &Value) -> Option<Self> {
        v.as_object().map(|m| Filter {
            conditions: m.clone(),
            exclusions: Map::new(),
        })
    }

    /// This filter with the condition `key` = `value` (replacing one on `key`).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.conditions.insert(key.into(), value.into());
        self
    }

    /// This filter with the condition `key` = `value` unless it has one on `key` already.
    pub fn with_default(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.conditions
            .entry(key.into())
            .or_insert_with(|| value.into());
        self
    }

    /// This filter excluding rows where `key` = `value` (replacing an exclusion on `key`).
    pub fn without(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.exclusions.insert(key.into(), value.into());
        self
    }

    /// The conditions.
    pub fn conditions(&self) -> &Map<String, Value> {
        &self.conditions
    }

    /// The exclusions.
    pub fn exclusions(&self) -> &Map<String, Value> {
        &self.exclusions
    }

    /// True if it has no condition and no exclusion.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.exclusions.is_empty()
    }

    /// True if `metadata` satisfies every condition and no exclusion.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        let holds = |(k, f): (&String, &Value)| match metadata.get(k) {
            None | Some(Value::Null) => false,
            Some(m) => value_matches(f, m),
        };
        self.conditions.iter().all(holds) && !self.exclusions.iter().any(holds)
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

pub(crate) fn value_matches(filter: &Value, meta: &Value) -> bool {
    match (filter, meta) {
        (Value::Array(fs), Value::Array(ms)) => {
            fs.iter().any(|f| ms.iter().any(|m| scalar_eq(f, m)))
        }
        (Value::Array(fs), m) => fs.iter().any(|f| scalar_eq(f, m)),
        (f, Value::Array(ms)) => ms.iter().any(|m| scalar_eq(f, m)),
        (f, m) => scalar_eq(f, m),
    }
}

/// A store of vectors with metadata.
#[async_trait]
pub trait VectorStore: std::fmt::Debug + Send + Sync {
    /// The backend name (`"memory"`).
    fn kind(&self) -> &'static str;

    /// The width of every vector.
    fn dimensions(&self) -> usize;

    /// Inserts or replaces records by id. All are checked before any is written.
    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError>;

    /// Deletes records by id; the number deleted.
    async fn delete(&self, ids: &[String]) -> Result<u64, VectorError>;

    /// Deletes every record matching `filter` ([`Filter::all`]: every record); the number deleted.
    async fn clear(&self, filter: &Filter) -> Result<u64, VectorError>;

    /// Merges `patch` into the metadata of every record matching `filter`; the number changed.
    async fn update_metadata_where(
        &self,
        filter: &Filter,
        patch: &Map<String, Value>,
    ) -> Result<u64, VectorError>;

    /// Applies several metadata patches as one step: a concurrent search sees all of them or
    /// none. The number of records each changed, in order. (The atomic swap of a generation:
    /// retire the old rows, reveal the new ones.)
    async fn update_metadata_atomically(
        &self,
        updates: &[(Filter, Map<String, Value>)],
    ) -> Result<Vec<u64>, VectorError>;

    /// The distinct combinations of `keys` among records matching `filter` (a missing key is
    /// `null`), with how many records have each.
    async fn distinct(
        &self,
        filter: &Filter,
        keys: &[&str],
    ) -> Result<Vec<(Vec<Value>, u64)>, VectorError>;

    /// Records matching `filter`.
    async fn count(&self, filter: &Filter) -> Result<u64, VectorError>;

    /// The `k` records nearest `vector` among those matching `filter`, nearest first.
    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<SearchHit>, VectorError>;

    /// The records matching `filter` as one self-contained snapshot, for stores whose index
    /// lives in the process (so that other replicas can load it); `None` for stores that
    /// replicas share directly (pgvector).
    async fn snapshot(&self, filter: &Filter) -> Result<Option<Vec<u8>>, VectorError> {
        let _ = filter;
        Ok(None)
    }

    /// Replaces the records matching `filter` with a snapshot's records in one step (a search
    /// sees the old records or the new ones); a snapshot that does not parse changes nothing.
    /// The number of records loaded.
    async fn restore(&self, filter: &Filter, snapshot: &[u8]) -> Result<u64, VectorError> {
        let _ = (filter, snapshot);
        Err(VectorError::Config(format!(
            "the {} store is shared by replicas and has no snapshots",
            self.kind()
        )))
    }

    /// Makes every write so far durable (a no-op for stores that are durable per write).
    async fn flush(&self) -> Result<(), VectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::from_value(&v).unwrap()
    }

    #[test]
    fn the_original_filter_semantics() {
        let m = json!({"kind": "faq", "tags": ["a", "b"], "n": 1, "none": null});
        let m = m.as_object().unwrap();
        assert!(f(json!({})).matches(m));
        assert!(f(json!({"kind": "faq"})).matches(m));
        assert!(!f(json!({"kind": "doc"})).matches(m));
        assert!(f(json!({"kind": ["doc", "faq"]})).matches(m));
        assert!(f(json!({"tags": "a"})).matches(m));
        assert!(f(json!({"tags": ["x", "b"]})).matches(m));
        assert!(!f(json!({"tags": ["x", "y"]})).matches(m));
        assert!(!f(json!({"kind": []})).matches(m));
        assert!(!f(json!({"missing": "x"})).matches(m));
        assert!(!f(json!({"none": "x"})).matches(m));
        assert!(f(json!({"n": 1.0})).matches(m));
        assert!(!f(json!({"kind": "faq", "n": 2})).matches(m));
        assert!(!f(json!({})).without("tags", "a").matches(m));
        assert!(
            f(json!({}))
                .without("tags", "z")
                .without("missing", 1)
                .matches(m)
        );
        assert!(!f(json!({"kind": "faq"})).without("n", [1, 2]).matches(m));
    }
}
