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
/// (and the feature to enable).
pub async fn create_knowledge_backend(
    kind: &str,
    config: &serde_json::Value,
) -> Result<Arc<dyn KnowledgeBackend>> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "memory" | "inmemory" | "in_memory" => {
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
