//! Shared helpers of the SQL backends: stored columns ↔ `Registration`, touch decisions and
//! merging a change feed from rows and tombstones.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use dynreg_registry_core::{Change, Registration, RegistryError, Result, Status};
use serde_json::{Map, Value};

/// The columns of one stored registration, as text and integers. The text columns that do not
/// end up in the registration as they are may be borrowed from the driver's row buffer.
pub(crate) struct StoredRow<'a> {
    pub bot_id: String,
    pub config: Cow<'a, str>,
    pub status: Cow<'a, str>,
    pub metadata: Cow<'a, str>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_accessed_at: i64,
    pub revision: i64,
    pub config_hash: String,
    /// The config already parsed (a [`ParsedConfigs`] hit), when the reader looked first; then
    /// `config` may be left empty.
    pub parsed_config: Option<Arc<Value>>,
}

pub(crate) fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or_default()
}

pub(crate) fn corrupt(
    backend: &'static str,
    location: String,
    reason: impl ToString,
) -> RegistryError {
    RegistryError::Corrupt {
        backend,
        location,
        reason: reason.to_string(),
    }
}

/// One shared empty metadata map (most registrations have none).
fn empty_metadata() -> Arc<Map<String, Value>> {
    static EMPTY: OnceLock<Arc<Map<String, Value>>> = OnceLock::new();
    EMPTY.get_or_init(Arc::default).clone()
}

impl StoredRow<'_> {
    /// Parses the JSON columns. `location` names the table, for errors.
    pub fn into_registration(
        self,
        backend: &'static str,
        location: &str,
        parsed: &ParsedConfigs,
    ) -> Result<Registration> {
        let at = || format!("{location} bot {:?}", self.bot_id);
        let config = match self.parsed_config {
            Some(c) => c,
            None => parsed
                .parse(&self.config_hash, &self.config)
                .map_err(|e| corrupt(backend, at(), format!("config column: {e}")))?,
        };
        let metadata: Arc<Map<String, Value>> = if self.metadata == "{}" {
            empty_metadata()
        } else {
            Arc::new(
                serde_json::from_str(&self.metadata)
                    .map_err(|e| corrupt(backend, at(), format!("metadata column: {e}")))?,
            )
        };
        Ok(Registration {
            config,
            status: Status::parse(&self.status),
            metadata,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            last_accessed_at: from_micros(self.last_accessed_at),
            revision: u64::try_from(self.revision)
                .map_err(|_| corrupt(backend, at(), "negative revision"))?,
            config_hash: self.config_hash,
            bot_id: self.bot_id,
        })
    }
}

/// The JSON text of a config and a metadata map, for storage.
pub(crate) fn json_text(config: &Value, metadata: &Map<String, Value>) -> (String, String) {
    (
        serde_json::to_string(config).expect("JSON values always serialise"),
        serde_json::to_string(metadata).expect("JSON maps always serialise"),
    )
}

/// Merges live rows (already ordered by revision) and tombstones into one ordered feed.
pub(crate) fn merge_changes(
    rows: Vec<Registration>,
    tombstones: Vec<(u64, String)>,
) -> Vec<Change> {
    let mut changes: Vec<Change> = rows
        .into_iter()
        .map(Change::Upsert)
        .chain(
            tombstones
                .into_iter()
                .map(|(revision, bot_id)| Change::Deleted { bot_id, revision }),
        )
        .collect();
    changes.sort_by_key(Change::revision);
    changes
}

/// Parsed configs shared by content hash: a row whose `config_hash` was parsed before reuses
/// the same `Arc<Value>` instead of parsing its JSON again (and identical configs share one
/// value). Bounded; least recently used hashes are dropped.
pub(crate) struct ParsedConfigs {
    cache: std::sync::Mutex<lru::LruCache<String, Arc<Value>, DigestPrefix>>,
}

/// Hashes a hex SHA-256 digest by its first 16 hex digits: they are uniformly distributed
/// already, so hashing all 64 characters again (SipHash) would only cost time. Any other key
/// (never produced here) still hashes correctly, just by its prefix.
#[derive(Clone, Copy, Default)]
pub(crate) struct DigestPrefix;

impl std::hash::BuildHasher for DigestPrefix {
    type Hasher = PrefixHasher;

    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

/// See [`DigestPrefix`].
pub(crate) struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `str` hashing writes the bytes, then a one-byte terminator; each write is folded in
        // by at most its first 16 bytes.
        for &b in bytes.iter().take(16) {
            self.0 = self.0.rotate_left(5) ^ u64::from(b);
            self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

impl std::fmt::Debug for ParsedConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedConfigs")
    }
}

impl ParsedConfigs {
    pub fn new() -> Self {
        let cap = std::num::NonZeroUsize::new(16_384).expect("non-zero");
        ParsedConfigs {
            cache: std::sync::Mutex::new(lru::LruCache::with_hasher(cap, DigestPrefix)),
        }
    }

    /// The parsed config of `hash`, if it is cached. A peek: a hit does not reorder the LRU
    /// list (relinking its nodes costs a cache miss or two per row in a 10k-row listing), so
    /// eviction is by first use; an evicted config is parsed again when next seen.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // the PostgreSQL reader parses after fetching
    pub fn cached(&self, hash: &str) -> Option<Arc<Value>> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peek(hash)
            .cloned()
    }

    fn parse(&self, hash: &str, text: &str) -> std::result::Result<Arc<Value>, serde_json::Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(hash) {
            return Ok(v.clone());
        }
        drop(cache);
        let v: Arc<Value> = Arc::new(serde_json::from_str(text)?);
        if dynreg_registry_core::config_hash(&v) == hash {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(hash.to_owned(), v.clone());
        }
        Ok(v)
    }
}

/// A revision, retention or page size as SQL's signed 64-bit integer. Values beyond
/// `i64::MAX` (which no stored revision or row count can reach) are clamped rather than cast,
/// so a huge cursor, limit or expected revision never wraps into a negative number: a cursor
/// stays in the future, a limit stays "everything", a condition stays unmet.
pub(crate) fn sql_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// [`sql_i64`] for a `usize` (limits and offsets).
pub(crate) fn sql_count(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
