//! `create_registry_backend(kind, config)`: the configuration-driven constructor.

use std::sync::Arc;

use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryError, Result};
use serde_json::Value;

use crate::config::{MemoryConfig, build_from_json};

/// Every kind the factory knows, whether or not its feature is compiled in.
pub const SUPPORTED_KINDS: &str = "memory, sqlite, postgres (postgresql), file, s3, http";

/// Builds and initializes a registry backend of `kind` (case-insensitive) from its JSON config,
/// ready for use: server-backed kinds connect and every kind creates its schema (tables,
/// directories, ...) before this returns, so a bad address or a storage that cannot be written
/// is reported here.
///
/// An unknown kind is [`RegistryError::UnknownBackend`]; a known kind whose feature is not
/// compiled in is [`RegistryError::FeatureDisabled`], naming the feature to enable; a bad
/// option is [`RegistryError::InvalidBackendConfig`] naming the key (and, for an unknown key,
/// the nearest valid one). The options of each kind are its struct in [`crate::config`].
pub async fn create_registry_backend(
    kind: &str,
    config: &Value,
) -> Result<Arc<dyn RegistryBackend>> {
    // Traced and measured (see `Instrumented`).
    let backend: Arc<dyn RegistryBackend> = Arc::new(dynreg_registry_core::Instrumented::new(
        build(kind, config)?,
    ));
    backend.initialize().await?;
    Ok(backend)
}

/// The (uninitialized) backend of `kind`.
fn build(kind: &str, config: &Value) -> Result<Arc<dyn RegistryBackend>> {
    let lower = kind.trim().to_ascii_lowercase();
    match lower.as_str() {
        "memory" => build_from_json(config, |_: MemoryConfig| {
            Ok(Arc::new(InMemoryBackend::new()) as Arc<dyn RegistryBackend>)
        }),
        "sqlite" => {
            #[cfg(feature = "sqlite")]
            return Ok(Arc::new(crate::SqliteBackend::from_config(config)?));
            #[cfg(not(feature = "sqlite"))]
            return Err(feature_disabled(kind, "sqlite"));
        }
        "postgres" | "postgresql" => {
            #[cfg(feature = "postgres")]
            return Ok(Arc::new(crate::PostgresBackend::from_config(config)?));
            #[cfg(not(feature = "postgres"))]
            return Err(feature_disabled(kind, "postgres"));
        }
        "file" => {
            #[cfg(feature = "file")]
            return Ok(Arc::new(crate::FileBackend::from_config(config)?));
            #[cfg(not(feature = "file"))]
            return Err(feature_disabled(kind, "file"));
        }
        "s3" => {
            #[cfg(feature = "s3")]
            return Ok(Arc::new(crate::S3Backend::from_config(config)?));
            #[cfg(not(feature = "s3"))]
            return Err(feature_disabled(kind, "s3"));
        }
        "http" => {
            #[cfg(feature = "http")]
            return Ok(Arc::new(crate::HttpBackend::from_config(config)?));
            #[cfg(not(feature = "http"))]
            return Err(feature_disabled(kind, "http"));
        }
        _ => Err(RegistryError::UnknownBackend {
            kind: kind.to_owned(),
            supported: SUPPORTED_KINDS.to_owned(),
        }),
    }
}

#[allow(dead_code)] // unused when every feature is on
fn feature_disabled(kind: &str, feature: &'static str) -> RegistryError {
    RegistryError::FeatureDisabled {
        kind: kind.to_owned(),
        feature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn unknown_kind_names_itself_and_the_supported_ones() {
        let err = create_registry_backend("mongo", &Value::Null)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"mongo\"") && err.contains("sqlite"), "{err}");
        let memory = create_registry_backend("MEMORY", &Value::Null)
            .await
            .unwrap();
        assert_eq!(memory.kind(), "memory");
    }

    #[tokio::test]
    async fn memory_takes_no_options() {
        let err = create_registry_backend("memory", &json!({"path": "/x"}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidBackendConfig { key, .. } if key == "path"),
            "{err}"
        );
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_typo_names_the_nearest_valid_key() {
        let err = create_registry_backend("sqlite", &json!({"path": ":memory:", "tabel": "bots"}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidBackendConfig { backend: "sqlite", key, reason }
                if key == "tabel" && reason.contains("\"table\"")),
            "{err}"
        );
        let err = err.to_string();
        assert!(err.contains("tabel") && err.contains("table"), "{err}");
    }

    #[cfg(not(feature = "s3"))]
    #[tokio::test]
    async fn compiled_out_kind_names_the_feature() {
        let err = create_registry_backend("s3", &Value::Null)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`s3`") && err.contains("\"s3\""), "{err}");
    }
}
