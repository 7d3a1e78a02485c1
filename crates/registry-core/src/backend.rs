//! Helpers for **implementors** of [`RegistryBackend`](crate::RegistryBackend): what every
//! backend calls so that all of them decide the same things the same way (write validation,
//! "is this re-register a no-op", timestamps, in-process filtering, sorting and paging).
//!
//! Users of a registry need none of this; their API is at the crate root.

use std::sync::Arc;

use serde_json::Value;

use crate::error::{RegistryError, Result};
use crate::id::validate_bot_id;
use crate::model::Registration;
use crate::write::RegisterOptions;

pub use crate::query::{compare_json, matches_metadata, paginate};
pub use crate::time::{format_timestamp, now, parse_timestamp};

/// Checks the shape of a write before any I/O: a valid id, an object config and a non-empty
/// status without control characters. Every backend calls it first.
pub fn validate_write(bot_id: &str, config: &Value, options: &RegisterOptions) -> Result<()> {
    validate_bot_id(bot_id)?;
    if !config.is_object() {
        return Err(RegistryError::InvalidRegistration {
            bot_id: bot_id.to_owned(),
            reason: format!(
                "config must be a JSON object, got {}",
                json_type_name(config)
            ),
        });
    }
    let status = options.status.as_str();
    if status.is_empty() || status.len() > 64 || status.chars().any(char::is_control) {
        return Err(RegistryError::InvalidRegistration {
            bot_id: bot_id.to_owned(),
            reason: format!("status {status:?} must be 1 to 64 bytes without control characters"),
        });
    }
    Ok(())
}

/// The JSON type of a value as messages name it (`a string`, `an object`, ...): messages name a
/// value's type, never the value (it could be a secret under a wrong key).
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// What a register would store, given the current state of the id (`None`: absent).
///
/// Returns `None` when the write changes nothing (identical config, status and metadata), in
/// which case the backend returns the current registration unchanged. Shared by every backend so
/// that all of them decide "identical" and fill timestamps the same way.
///
/// `hash` is [`crate::config_hash`]`(&config)`, computed by the caller before it takes any lock (it is
/// the costly part of a register).
pub fn plan_register(
    bot_id: &str,
    config: Arc<Value>,
    hash: String,
    options: &RegisterOptions,
    current: Option<&Registration>,
    revision: u64,
) -> Option<Registration> {
    if current.is_some_and(|cur| {
        cur.config_hash == hash && cur.status == options.status && cur.metadata == options.metadata
    }) {
        return None;
    }
    let t = now();
    Some(Registration {
        bot_id: bot_id.to_owned(),
        config,
        status: options.status.clone(),
        metadata: options.metadata.clone(),
        created_at: current.map_or(t, |c| c.created_at),
        updated_at: t,
        last_accessed_at: t,
        revision,
        config_hash: hash,
    })
}

/// Rows read from storage as the shared registrations [`crate::RegistryBackend::list`] returns.
pub fn shared(rows: Vec<Registration>) -> Vec<Arc<Registration>> {
    rows.into_iter().map(Arc::new).collect()
}
