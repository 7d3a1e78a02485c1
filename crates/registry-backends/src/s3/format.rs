//! The JSON objects of an S3 registry: documents (live or tombstone), log records and the head.

use dynreg_registry_core::{Registration, RegistryError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `_registry/head.json`: every log record up to `revision` is applied to the documents;
/// records up to `horizon` may have been deleted by compaction.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Head {
    pub revision: u64,
    pub horizon: u64,
}

/// What a log record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Put,
    Del,
}

/// `_registry/log/<rev>.json`: one committed write. Creating it (if-none-match) is the commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub rev: u64,
    pub op: Op,
    pub id: String,
    /// A token unique to the writer's attempt, to recognise its own record after a retried PUT.
    pub txn: String,
    /// The full document of a put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

impl LogRecord {
    /// The document bytes this record leaves behind.
    pub(crate) fn doc_bytes(&self) -> Vec<u8> {
        match (&self.op, &self.doc) {
            (Op::Put, Some(doc)) => serde_json::to_vec(doc),
            _ => serde_json::to_vec(
                &json!({"bot_id": self.id, "revision": self.rev, "deleted": true}),
            ),
        }
        .expect("JSON values serialise")
    }

    /// The registration of a put record.
    pub(crate) fn registration(&self, location: &str) -> Result<Registration> {
        let doc = self
            .doc
            .as_ref()
            .ok_or_else(|| corrupt(location, "a put record without a document"))?;
        Registration::from_json(doc)
            .map_err(|e| corrupt(location, format!("invalid document: {e}")))
    }
}

/// A stored document: a registration or the tombstone of its removal.
#[derive(Debug, Clone)]
pub(crate) enum Doc {
    Live(Registration),
    Deleted { revision: u64 },
}

impl Doc {
    pub(crate) fn revision(&self) -> u64 {
        match self {
            Doc::Live(r) => r.revision,
            Doc::Deleted { revision } => *revision,
        }
    }

    pub(crate) fn live(self) -> Option<Registration> {
        match self {
            Doc::Live(r) => Some(r),
            Doc::Deleted { .. } => None,
        }
    }

    /// Parses a document; it must hold `bot_id` when given.
    pub(crate) fn parse(location: &str, bytes: &[u8], bot_id: Option<&str>) -> Result<Doc> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(location, format!("invalid JSON: {e}")))?;
        let id = value
            .get("bot_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(want) = bot_id
            && id != want
        {
            return Err(corrupt(
                location,
                format!("holds bot id {id:?}, expected {want:?}"),
            ));
        }
        if value.get("deleted").and_then(Value::as_bool) == Some(true) {
            let revision = value
                .get("revision")
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt(location, "a tombstone without a revision"))?;
            return Ok(Doc::Deleted { revision });
        }
        Registration::from_json(&value)
            .map(Doc::Live)
            .map_err(|e| corrupt(location, format!("not a registration document: {e}")))
    }
}

/// A corrupt-data error naming the object.
pub(crate) fn corrupt(location: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::Corrupt {
        backend: "s3",
        location: location.to_owned(),
        reason: reason.into(),
    }
}
