//! `Registration` and `Status`: the stored record of one bot and its wire shape.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::hash::config_hash;
use crate::time::{deserialize_timestamp, now, serialize_timestamp};

/// The status of a registration. Free-form in the original; `active` and `inactive` carry meaning.
///
/// Only [`Status::Active`] registrations are handed out as configs to build a bot from
/// ([`crate::RegistryBackend::get_config`]); every other status is treated as "not servable".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Status {
    /// `"active"`: servable.
    #[default]
    Active,
    /// `"inactive"`: soft-deleted by [`crate::RegistryBackendExt::deactivate`].
    Inactive,
    /// Any other value (for example `"error"`), kept verbatim.
    Other(String),
}

impl Status {
    /// The wire string of this status.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Other(s) => s,
        }
    }

    /// Parses a wire string; `"active"` and `"inactive"` become the named variants.
    pub fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "inactive" => Status::Inactive,
            other => Status::Other(other.to_owned()),
        }
    }

    /// Whether this is [`Status::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, Status::Active)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        Status::parse(s)
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Status::parse(&s))
    }
}

/// One bot's stored configuration.
///
/// The JSON shape is the original's `Registration.to_dict()` plus two fields, `revision` and
/// `config_hash`. Timestamps serialise as Python `isoformat()` does (`+00:00`, microseconds) and
/// parse with `Z` or `+00:00`, with or without fractions. `config` and `metadata` are shared,
/// immutable values: cloning a `Registration` never deep-copies them, and no caller can change
/// what a backend has stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The bot's id.
    pub bot_id: String,
    /// The bot's configuration (always a JSON object).
    pub config: Arc<Value>,
    /// `active`, `inactive` or any other status string.
    #[serde(default)]
    pub status: Status,
    /// Free-form metadata; `null` on the wire means empty.
    #[serde(default, deserialize_with = "deserialize_metadata")]
    pub metadata: Arc<Map<String, Value>>,
    /// When the id was first registered (kept across re-registration).
    #[serde(
        default = "now",
        serialize_with = "serialize_timestamp",
        deserialize_with = "deserialize_timestamp"
    )]
    pub created_at: DateTime<Utc>,
    /// When the config, status or metadata last changed.
    #[serde(
        default = "now",
        serialize_with = "serialize_timestamp",
        deserialize_with = "deserialize_timestamp"
    )]
    pub updated_at: DateTime<Utc>,
    /// When a touching read ([`crate::RegistryBackend::get`]) last saw it.
    #[serde(
        default = "now",
        serialize_with = "serialize_timestamp",
        deserialize_with = "deserialize_timestamp"
    )]
    pub last_accessed_at: DateTime<Utc>,
    /// The registry-wide revision of the write that produced this state (0 if never stored).
    #[serde(default)]
    pub revision: u64,
    /// SHA-256 (hex) of the canonical JSON of `config`.
    #[serde(default)]
    pub config_hash: String,
}

fn deserialize_metadata<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<Map<String, Value>>, D::Error> {
    let m: Option<Map<String, Value>> = Option::deserialize(d)?;
    Ok(Arc::new(m.unwrap_or_default()))
}

impl Registration {
    /// A new, not yet stored registration: status active, empty metadata, all timestamps now,
    /// revision 0 and the config's hash.
    pub fn new(bot_id: impl Into<String>, config: Value) -> Self {
        let t = now();
        let config_hash = config_hash(&config);
        Registration {
            bot_id: bot_id.into(),
            config: Arc::new(config),
            status: Status::Active,
            metadata: Arc::default(),
            created_at: t,
            updated_at: t,
            last_accessed_at: t,
            revision: 0,
            config_hash,
        }
    }

    /// Whether the status is `active`.
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }

    /// The wire JSON (the original's `to_dict()` plus `revision` and `config_hash`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a Registration always serialises")
    }

    /// Parses the wire JSON. `bot_id` and `config` are required; the rest defaults as in the
    /// original. A missing `config_hash` is computed.
    pub fn from_json(value: &Value) -> Result<Registration, serde_json::Error> {
        let mut reg: Registration = serde_json::from_value(value.clone())?;
        if reg.config_hash.is_empty() {
            reg.config_hash = config_hash(&reg.config);
        }
        Ok(reg)
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Registration(bot_id={:?}, status={:?}, revision={}, created_at={})",
            self.bot_id,
            self.status.as_str(),
            self.revision,
            crate::time::format_timestamp(&self.created_at)
        )
    }
}
