//! `Event` and `EventType`: the original's event model and its JSON wire format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::EventBusError;
use crate::python_json::to_python_json;

/// What happened. Serialised as the original's lower-case strings (`"created"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// `"created"`
    Created,
    /// `"updated"`
    Updated,
    /// `"deleted"`
    Deleted,
    /// `"activated"`
    Activated,
    /// `"deactivated"`
    Deactivated,
    /// `"error"`
    Error,
    /// `"custom"`
    Custom,
}

impl EventType {
    /// Every event type, in the original's declaration order.
    pub const ALL: [EventType; 7] = [
        EventType::Created,
        EventType::Updated,
        EventType::Deleted,
        EventType::Activated,
        EventType::Deactivated,
        EventType::Error,
        EventType::Custom,
    ];

    /// The wire string (`"created"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Updated => "updated",
            EventType::Deleted => "deleted",
            EventType::Activated => "activated",
            EventType::Deactivated => "deactivated",
            EventType::Error => "error",
            EventType::Custom => "custom",
        }
    }

    /// Parses a wire string; an unknown value is an error naming it.
    pub fn parse(value: &str) -> Result<EventType, EventBusError> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == value)
            .ok_or_else(|| EventBusError::InvalidEvent {
                field: "type".into(),
                reason: format!("unknown event type {value:?}"),
            })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, field for field the original's `Event` dataclass.
///
/// `topic` is the event's own topic; the *bus* topic passed to `publish` is independent and is
/// what routing uses (as in the original).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened (JSON key `"type"`).
    pub event_type: EventType,
    /// The event's own topic, e.g. `registry:configs:bot-1`.
    pub topic: String,
    /// Free-form payload.
    pub payload: Map<String, Value>,
    /// When the event was created (UTC, microsecond precision like Python's datetime).
    pub timestamp: DateTime<Utc>,
    /// A uuid4 string.
    pub event_id: String,
    /// Who published it.
    pub source: Option<String>,
    /// Correlates related events.
    pub correlation_id: Option<String>,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
}

/// The wire shape, with keys in the original's `to_dict()` order.
#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    topic: &'a str,
    payload: &'a Map<String, Value>,
    timestamp: String,
    event_id: &'a str,
    source: &'a Option<String>,
    correlation_id: &'a Option<String>,
    metadata: &'a Map<String, Value>,
}

impl Event {
    /// A new event stamped now, with a fresh uuid4 id, no source, no correlation id, no metadata.
    pub fn new(
        event_type: EventType,
        topic: impl Into<String>,
        payload: Map<String, Value>,
    ) -> Self {
        Event {
            event_type,
            topic: topic.into(),
            payload,
            timestamp: now_micros(),
            event_id: new_uuid_v4(),
            source: None,
            correlation_id: None,
            metadata: Map::new(),
        }
    }

    /// The same event with `source` set.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A copy with the same `event_id` and the given correlation id (the original's `with_correlation`).
    pub fn with_correlation(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// The same event with `metadata` replaced.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The wire JSON, byte-compatible with Python's `json.dumps(event.to_dict())`.
    pub fn to_json(&self) -> String {
        to_python_json(&self.wire())
    }

    /// The original's `to_dict()` as a JSON value.
    pub fn to_value(&self) -> Value {
        // Serialising the wire struct to a Value cannot fail (string keys only).
        serde_json::to_value(self.wire()).unwrap_or(Value::Null)
    }

    fn wire(&self) -> WireEvent<'_> {
        WireEvent {
            event_type: self.event_type.as_str(),
            topic: &self.topic,
            payload: &self.payload,
            timestamp: python_isoformat(&self.timestamp),
            event_id: &self.event_id,
            source: &self.source,
            correlation_id: &self.correlation_id,
            metadata: &self.metadata,
        }
    }

    /// Parses the wire JSON with the original's `from_dict` defaults: `payload`/`metadata` default
    /// to `{}`, a missing timestamp to now, a missing `event_id` to a new uuid4.
    pub fn from_json(s: &str) -> Result<Event, EventBusError> {
        let value: Value = serde_json::from_str(s).map_err(|e| EventBusError::InvalidEvent {
            field: "<document>".into(),
            reason: e.to_string(),
        })?;
        Event::from_value(value)
    }

    /// Like [`Event::from_json`], from an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Event, EventBusError> {
        let Value::Object(mut map) = value else {
            return Err(invalid("<document>", "expected a JSON object"));
        };
        let event_type = match map.remove("type") {
            Some(Value::String(s)) => EventType::parse(&s)?,
            Some(other) => return Err(invalid("type", &format!("expected a string, got {other}"))),
            None => return Err(invalid("type", "missing")),
        };
        let topic = match map.remove("topic") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(invalid("topic", &format!("expected a string, got {other}")));
            }
            None => return Err(invalid("topic", "missing")),
        };
        let payload = object_field(&mut map, "payload")?;
        let metadata = object_field(&mut map, "metadata")?;
        let timestamp = match map.remove("timestamp") {
            None | Some(Value::Null) => now_micros(),
            Some(Value::String(s)) => parse_timestamp(&s)?,
            Some(other) => {
                return Err(invalid(
                    "timestamp",
                    &format!("expected a string, got {other}"),
                ));
            }
        };
        let event_id = match map.remove("event_id") {
            None | Some(Value::Null) => new_uuid_v4(),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(invalid(
                    "event_id",
                    &format!("expected a string, got {other}"),
                ));
            }
        };
        let source = optional_string(&mut map, "source")?;
        let correlation_id = optional_string(&mut map, "correlation_id")?;
        Ok(Event {
            event_type,
            topic,
            payload,
            timestamp,
            event_id,
            source,
            correlation_id,
            metadata,
        })
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Event::from_value(value).map_err(serde::de::Error::custom)
    }
}

fn invalid(field: &str, reason: &str) -> EventBusError {
    EventBusError::InvalidEvent {
        field: field.into(),
        reason: reason.into(),
    }
}

fn object_field(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, EventBusError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(invalid(field, &format!("expected an object, got {other}"))),
    }
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, EventBusError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            field,
            &format!("expected a string or null, got {other}"),
        )),
    }
}

/// Now, truncated to microseconds (Python's datetime precision) so JSON round trips are exact.
pub(crate) fn now_micros() -> DateTime<Utc> {
    dynreg_wire::time::now()
}

/// Python's `datetime.isoformat()` for a UTC datetime: `2024-01-15T10:30:00.123456+00:00`, and —
/// exactly like Python — no fractional part when the microseconds are zero.
pub fn python_isoformat(ts: &DateTime<Utc>) -> String {
    dynreg_wire::time::format(ts)
}

/// Parses an ISO-8601 timestamp as Python's `datetime.fromisoformat` produces or accepts it:
/// `Z` or a numeric offset (converted to UTC), with or without fractional seconds (kept to the
/// microsecond), `T` or a space between date and time; a timestamp without offset is taken as
/// UTC.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, EventBusError> {
    dynreg_wire::time::parse(s)
        .ok_or_else(|| invalid("timestamp", &format!("not an ISO-8601 timestamp: {s:?}")))
}

/// A random (version 4) uuid in its canonical hyphenated form.
pub fn new_uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}
