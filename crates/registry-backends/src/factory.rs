//! `create_registry_backend(kind, config)`: the configuration-driven constructor.

use std::sync::Arc;

use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryError, Result};
use serde_json::Value;

/// Every kind the factory knows, whether or not its feature is compiled in.
pub const SUPPORTED_KINDS: &str = "memory, sqlite, postgres (postgresql), file, s3";

/// Builds an (uninitialized) registry backend of `kind` (case-insensitive) from its JSON
/// config. Call [`RegistryBackend::initialize`] before use.
///
/// An unknown kind is [`RegistryError::UnknownBackend`]; a known kind whose feature is not
/// compiled in is [`RegistryError::FeatureDisabled`], naming the feature to enable. Config
/// keys of each kind are documented on the backend's `from_config`.
pub fn create_registry_backend(kind: &str, config: &Value) -> Result<Arc<dyn RegistryBackend>> {
    // `memory` takes no config; without persistent features `config` is otherwise unread.
    let _ = config;
    let lower = kind.trim().to_ascii_lowercase();
    match lower.as_str() {
        "memory" => Ok(Arc::new(InMemoryBackend::new())),
        "sqlite" => {
            #[cfg(feature = "sqlite")]
            return Ok(Arc::new(crate::SqliteBackend::from_config(config)?));
            #[cfg(not(feature = "sqlite"))]
            return Err(disabled(kind, "sqlite"));
        }
        "postgres" | "postgresql" => {
            #[cfg(feature = "postgres")]
            return Ok(Arc::new(crate::PostgresBackend::from_config(config)?));
            #[cfg(not(feature = "postgres"))]
            return Err(disabled(kind, "postgres"));
        }
        "file" => {
            #[cfg(feature = "file")]
            return Ok(Arc::new(crate::FileBackend::from_config(config)?));
            #[cfg(not(feature = "file"))]
            return Err(disabled(kind, "file"));
        }
        "s3" => {
            #[cfg(feature = "s3")]
            return Ok(Arc::new(crate::S3Backend::from_config(config)?));
            #[cfg(not(feature = "s3"))]
            return Err(disabled(kind, "s3"));
        }
        _ => Err(RegistryError::UnknownBackend {
            kind: kind.to_owned(),
            supported: SUPPORTED_KINDS.to_owned(),
        }),
    }
}

#[allow(dead_code)] // unused when every feature is on
fn disabled(kind: &str, feature: &'static str) -> RegistryError {
    RegistryError::FeatureDisabled {
        kind: kind.to_owned(),
        feature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_names_itself_and_the_supported_ones() {
        let err = create_registry_backend("mongo", &Value::Null)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"mongo\"") && err.contains("sqlite"), "{err}");
        assert_eq!(
            create_registry_backend("MEMORY", &Value::Null)
                .unwrap()
                .kind(),
            "memory"
        );
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn compiled_out_kind_names_the_feature() {
        let err = create_registry_backend("s3", &Value::Null)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`s3`") && err.contains("\"s3\""), "{err}");
    }
}
