//! `create_knowledge_backend(kind, config)`: picks a backend by name at run time.

use std::sync::Arc;

use crate::KnowledgeBackend;
use crate::error::{KnowledgeError, Result};
use crate::memory::MemoryKnowledgeBackend;

/// The backend kinds built into this binary.
pub fn available_backends() -> Vec<&'static str> {
    let mut kinds = vec!["memory"];
    if cfg!(feature = "file") {
        kinds.push("file");
    }
    if cfg!(feature = "s3") {
        kinds.push("s3");
    }
    kinds
}

/// Creates a backend by kind (case-insensitive): `memory`, `file` (`{"path": ...}`, default
/// `./data/knowledge`) or `s3` (`{"bucket", "prefix", "region", "endpoint_url", ...}`).
///
/// An unknown kind, or a kind whose cargo feature is not built, is an error naming the kind
/// (and the feature to enable). The backend comes wrapped in [`crate::Instrumented`] (tracing
/// spans and metrics for every operation).
pub async fn create_knowledge_backend(
    kind: &str,
    config: &serde_json::Value,
) -> Result<Arc<dyn KnowledgeBackend>> {
    let backend = build(kind, config).await?;
    Ok(Arc::new(crate::Instrumented::new(backend)))
}

async fn build(kind: &str, config: &serde_json::Value) -> Result<Arc<dyn KnowledgeBackend>> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "memory" | "inmemory" | "in_memory" => {
            check_keys("memory", config, &["snapshot_retention"])?;
            let retention = crate::snapshots::DEFAULT_SNAPSHOT_RETENTION;
            let retention = config
                .get("snapshot_retention")
                .and_then(serde_json::Value::as_u64)
                .map_or(retention, |n| n as usize);
            Ok(Arc::new(MemoryKnowledgeBackend::with_retention(retention)))
        }
        #[cfg(feature = "file")]
        "file" | "filesystem" | "local" => {
            let cfg = crate::file::FileConfig::from_json(config)?;
            Ok(Arc::new(
                crate::file::FileKnowledgeBackend::open(cfg).await?,
            ))
        }
        #[cfg(not(feature = "file"))]
        "file" | "filesystem" | "local" => Err(KnowledgeError::FeatureDisabled {
            kind: kind.to_owned(),
            feature: "file",
        }),
        #[cfg(feature = "s3")]
        "s3" => {
            let cfg = crate::s3::S3Config::from_json(config)?;
            Ok(Arc::new(crate::s3::S3KnowledgeBackend::connect(cfg).await?))
        }
        #[cfg(not(feature = "s3"))]
        "s3" => Err(KnowledgeError::FeatureDisabled {
            kind: kind.to_owned(),
            feature: "s3",
        }),
        _ => Err(KnowledgeError::UnknownBackend {
            kind: kind.to_owned(),
            available: available_backends().join(", "),
        }),
    }
}

/// Refuses an option `kind` does not take, naming the nearest one it does (`backend`, the
/// kind itself, is always accepted).
pub(crate) fn check_keys(
    kind: &'static str,
    config: &serde_json::Value,
    valid: &[&str],
) -> Result<()> {
    let Some(map) = config.as_object() else {
        return Ok(());
    };
    for key in map.keys() {
        if key != "backend" && !valid.contains(&key.as_str()) {
            return Err(KnowledgeError::Config {
                kind,
                field: "options",
                reason: dynreg_resource_resolver::keys::unknown_key(key, valid),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_option_names_the_nearest_valid_one() {
        let Err(err) =
            create_knowledge_backend("memory", &serde_json::json!({"snapshot_retension": 5})).await
        else {
            panic!("a typo is refused")
        };
        let msg = err.to_string();
        assert!(
            msg.contains("\"snapshot_retension\"")
                && msg.contains("did you mean \"snapshot_retention\""),
            "{msg}"
        );
        #[cfg(feature = "file")]
        {
            let Err(err) = crate::file::FileConfig::from_json(&serde_json::json!({"pth": "/x"}))
            else {
                panic!("a typo is refused")
            };
            assert!(err.to_string().contains("did you mean \"path\""), "{err}");
        }
        #[cfg(feature = "s3")]
        {
            let config = serde_json::json!({"bucket": "b", "regoin": "x"});
            let Err(err) = crate::s3::S3Config::from_json(&config) else {
                panic!("a typo is refused")
            };
            assert!(err.to_string().contains("did you mean \"region\""), "{err}");
        }
    }
}
