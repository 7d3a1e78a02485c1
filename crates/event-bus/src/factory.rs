//! `create_event_bus(config)`: picks and builds a bus from a JSON configuration.

use std::sync::Arc;

use serde_json::Value;

use crate::EventBus;
use crate::error::EventBusError;
use crate::memory::InMemoryEventBus;
use crate::subscription::DEFAULT_CAPACITY;

/// The backends compiled into this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut names = vec!["memory"];
    if cfg!(feature = "postgres") {
        names.push("postgres");
    }
    if cfg!(feature = "redis") {
        names.push("redis");
    }
    names
}

/// Builds a bus from `config`, a JSON object whose `"backend"` key is `"memory"` (the default when
/// the key is absent), `"postgres"` or `"redis"`; the other keys are the backend's options, as
/// an environment writes them (numeric strings accepted; a server URL may be given as `url` or
/// as `host`, `port`, `username`, `password`, `db`/`database` and `ssl` parts) (see
/// [`crate::postgres::PostgresEventBusConfig::from_json`] and
/// [`crate::redis::RedisEventBusConfig::from_json`]). Server-backed buses connect before this
/// returns, so a bad address is reported here.
///
/// Errors: [`EventBusError::UnknownBackend`] for a name this crate does not know,
/// [`EventBusError::FeatureDisabled`] for a known backend whose feature is off,
/// [`EventBusError::InvalidConfig`] for a bad option, [`EventBusError::Connect`] when the
/// server cannot be reached.
pub async fn create_event_bus(config: &Value) -> Result<Arc<dyn EventBus>, EventBusError> {
    let map = match config {
        Value::Object(map) => map.clone(),
        Value::Null => serde_json::Map::new(),
        other => {
            return Err(EventBusError::InvalidConfig {
                key: "<config>".into(),
                reason: format!("expected a JSON object, got {other}"),
            });
        }
    };
    let backend = match map.get("backend") {
        None | Some(Value::Null) => {
            tracing::warn!(
                "event bus config has no \"backend\" key; using the in-process memory bus"
            );
            "memory".to_owned()
        }
        Some(Value::String(name)) => name.clone(),
        Some(other) => {
            return Err(EventBusError::InvalidConfig {
                key: "backend".into(),
                reason: format!("expected a string, got {other}"),
            });
        }
    };
    let map = crate::config::normalize(&backend, &map);
    match backend.as_str() {
        "memory" => {
            crate::config::reject_unknown(&map, &["capacity"])?;
            let capacity = crate::config::usize_key(&map, "capacity")?.unwrap_or(DEFAULT_CAPACITY);
            Ok(Arc::new(InMemoryEventBus::with_capacity(capacity)))
        }
        "postgres" => postgres(&map).await,
        "redis" => redis(&map).await,
        other => Err(EventBusError::UnknownBackend {
            backend: other.to_owned(),
            available: available_backends().join(", "),
        }),
    }
}

#[cfg(feature = "postgres")]
async fn postgres(
    map: &serde_json::Map<String, Value>,
) -> Result<Arc<dyn EventBus>, EventBusError> {
    let config = crate::postgres::PostgresEventBusConfig::from_json(map)?;
    Ok(Arc::new(
        crate::postgres::PostgresEventBus::connect(config).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &serde_json::Map<String, Value>) -> Result<Arc<dyn EventBus>, EventBusError> {
    Err(EventBusError::FeatureDisabled {
        backend: "postgres".into(),
        feature: "postgres".into(),
    })
}

#[cfg(feature = "redis")]
async fn redis(map: &serde_json::Map<String, Value>) -> Result<Arc<dyn EventBus>, EventBusError> {
    let config = crate::redis::RedisEventBusConfig::from_json(map)?;
    Ok(Arc::new(
        crate::redis::RedisEventBus::connect(config).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn redis(_: &serde_json::Map<String, Value>) -> Result<Arc<dyn EventBus>, EventBusError> {
    Err(EventBusError::FeatureDisabled {
        backend: "redis".into(),
        feature: "redis".into(),
    })
}
