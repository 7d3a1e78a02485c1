//! Typed access to a backend's JSON config: every error names the backend and the key.

use std::time::Duration;

use dynreg_registry_core::{RegistryError, Result};
use serde_json::{Map, Value};

/// A backend config object (`{"path": ..., "table": ...}`), read key by key.
#[derive(Debug, Clone)]
pub struct BackendConfig<'a> {
    backend: &'static str,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> BackendConfig<'a> {
    /// Wraps `config`, which must be a JSON object or null.
    pub fn new(backend: &'static str, config: &'a Value) -> Result<Self> {
        match config {
            Value::Null => Ok(BackendConfig { backend, map: None }),
            Value::Object(map) => Ok(BackendConfig {
                backend,
                map: Some(map),
            }),
            other => Err(RegistryError::InvalidBackendConfig {
                backend,
                key: "<root>".into(),
                reason: format!("expected an object, got {other}"),
            }),
        }
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::InvalidBackendConfig {
            backend: self.backend,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The raw value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// A string value (numbers are accepted and printed).
    pub fn str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.invalid(key, format!("expected a string, got {other}"))),
        }
    }

    /// A required string value.
    pub fn required_str(&self, key: &str) -> Result<String> {
        self.str(key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.invalid(key, "is required"))
    }

    /// A non-negative integer (a numeric string is accepted, as substituted `${VAR}`s are
    /// strings).
    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                self.invalid(key, format!("expected a non-negative integer, got {n}"))
            }),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                self.invalid(key, format!("expected a non-negative integer, got {s:?}"))
            }),
            Some(other) => Err(self.invalid(key, format!("expected an integer, got {other}"))),
        }
    }

    /// A boolean (`"true"`/`"false"` strings accepted).
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" | "" => Ok(Some(false)),
                _ => Err(self.invalid(key, format!("expected a boolean, got {s:?}"))),
            },
            Some(other) => Err(self.invalid(key, format!("expected a boolean, got {other}"))),
        }
    }

    /// A duration given in milliseconds under `key`.
    pub fn millis(&self, key: &str) -> Result<Option<Duration>> {
        Ok(self.u64(key)?.map(Duration::from_millis))
    }

    /// A SQL identifier (table name): `[A-Za-z_][A-Za-z0-9_]*`, at most 48 bytes, so it can be
    /// interpolated into statements without any chance of injection.
    pub fn identifier(&self, key: &str, default: &str) -> Result<String> {
        let name = self.str(key)?.unwrap_or_else(|| default.to_owned());
        validate_identifier(&name).map_err(|reason| self.invalid(key, reason))?;
        Ok(name)
    }
}

/// Checks a SQL identifier; see [`BackendConfig::identifier`].
pub fn validate_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || name.len() > 48 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{name:?} is not a valid identifier: use 1-48 ASCII letters, digits and underscores, not starting with a digit"
        ));
    }
    Ok(())
}

/// How long a stored `last_accessed_at` may lag before a touching read writes it again.
pub const DEFAULT_TOUCH_RESOLUTION: Duration = Duration::from_secs(1);

/// Deletion tombstones a persistent registry keeps before compacting the oldest.
pub const DEFAULT_TOMBSTONE_RETENTION: u64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_and_typed_values() {
        let v = json!({"table": "bots; DROP TABLE x", "n": "12", "b": "yes", "bad": [1]});
        let c = BackendConfig::new("sqlite", &v).unwrap();
        let err = c
            .identifier("table", "registrations")
            .unwrap_err()
            .to_string();
        assert!(err.contains("table") && err.contains("sqlite"), "{err}");
        assert_eq!(c.u64("n").unwrap(), Some(12));
        assert_eq!(c.bool("b").unwrap(), Some(true));
        assert!(c.str("bad").unwrap_err().to_string().contains("\"bad\""));
        assert_eq!(
            c.identifier("missing", "registrations").unwrap(),
            "registrations"
        );
        assert!(validate_identifier("1abc").is_err());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("bot_configs").is_ok());
    }
}
