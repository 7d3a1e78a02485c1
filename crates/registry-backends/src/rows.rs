//! Shared helpers of the SQL backends: stored columns ↔ `Registration`, touch decisions and
//! merging a change feed from rows and tombstones.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dynreg_registry_core::{Change, Registration, RegistryError, Result, Status};
use serde_json::{Map, Value};

/// The columns of one stored registration, as text and integers.
pub(crate) struct StoredRow {
    pub bot_id: String,
    pub config: String,
    pub status: String,
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_accessed_at: i64,
    pub revision: i64,
    pub config_hash: String,
}

pub(crate) fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or_default()
}

pub(crate) fn corrupt(backend: &'static str, location: String, reason: impl ToString) -> RegistryError {
    RegistryError::Corrupt {
        backend,
        location,
        reason: reason.to_string(),
    }
}

impl StoredRow {
    /// Parses the JSON columns. `location` names the table, for errors.
    pub fn into_registration(self, backend: &'static str, location: &str) -> Result<Registration> {
        let at = || format!("{location} bot {:?}", self.bot_id);
        let config: Value = serde_json::from_str(&self.config)
            .map_err(|e| corrupt(backend, at(), format!("config column: {e}")))?;
        let metadata: Map<String, Value> = serde_json::from_str(&self.metadata)
            .map_err(|e| corrupt(backend, at(), format!("metadata column: {e}")))?;
        Ok(Registration {
            config: Arc::new(config),
            status: Status::parse(&self.status),
            metadata: Arc::new(metadata),
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

/// The JSON text of a registration's config and metadata, for storage.
pub(crate) fn json_columns(reg: &Registration) -> (String, String) {
    (
        serde_json::to_string(&*reg.config).expect("JSON values always serialise"),
        serde_json::to_string(&*reg.metadata).expect("JSON maps always serialise"),
    )
}

/// Whether a touching read must write: the stored access time is at least `resolution` old.
pub(crate) fn touch_due(stored_micros: i64, now: &DateTime<Utc>, resolution: Duration) -> bool {
    let age = micros(now).saturating_sub(stored_micros);
    age >= 0 && age as u128 >= resolution.as_micros()
}

/// Merges live rows (already ordered by revision) and tombstones into one ordered feed.
pub(crate) fn merge_changes(rows: Vec<Registration>, tombstones: Vec<(u64, String)>) -> Vec<Change> {
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
