//! Helpers for reading bus options out of a JSON configuration map, with errors naming the key.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::EventBusError;

fn bad(key: &str, reason: String) -> EventBusError {
    EventBusError::InvalidConfig {
        key: key.to_owned(),
        reason,
    }
}

/// An optional non-negative integer option.
pub(crate) fn usize_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<usize>, EventBusError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| bad(key, format!("expected a positive integer, got {n}"))),
        Some(other) => Err(bad(
            key,
            format!("expected a positive integer, got {other}"),
        )),
    }
}

/// An optional string option.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn string_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, EventBusError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(key, format!("expected a string, got {other}"))),
    }
}

/// An optional duration given in milliseconds.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn millis_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, EventBusError> {
    Ok(usize_key(map, key)?.map(|ms| Duration::from_millis(ms as u64)))
}

/// Rejects keys a backend does not understand (typos should not be silently ignored).
pub(crate) fn reject_unknown(
    map: &Map<String, Value>,
    known: &[&str],
) -> Result<(), EventBusError> {
    for key in map.keys() {
        if key != "backend" && !known.contains(&key.as_str()) {
            return Err(bad(
                key,
                format!("unknown option; known options: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}
