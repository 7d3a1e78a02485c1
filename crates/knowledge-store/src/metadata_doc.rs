//! The `_metadata.json` document of the original (`{"info": {...}, "files": {path: {...}}}`),
//! shared by the file and S3 backends: parse it leniently, write it like `json.dump(indent=2)`.

use serde::{Deserialize, Serialize};

use crate::error::{KnowledgeError, Result};
use crate::index::FileIndex;
use crate::model::{KnowledgeBaseInfo, KnowledgeFile};
use crate::paths::validate_path;

#[derive(Serialize)]
struct MetaOut<'a> {
    info: &'a KnowledgeBaseInfo,
    files: &'a std::collections::BTreeMap<String, KnowledgeFile>,
}

#[derive(Deserialize)]
struct MetaIn {
    #[serde(default)]
    info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    files: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Serialises `_metadata.json` like the original (`json.dump(indent=2)`).
pub(crate) fn metadata_json(info: &KnowledgeBaseInfo, index: &FileIndex) -> Vec<u8> {
    serde_json::to_vec_pretty(&MetaOut {
        info,
        files: index.files(),
    })
    .unwrap_or_default()
}

/// Parses `_metadata.json` (the original's or ours). Entries whose key is not a canonical
/// path (which the original allowed) are skipped with a warning: no backend can address them.
pub(crate) fn parse_metadata(
    domain_id: &str,
    location: &str,
    bytes: &[u8],
) -> Result<(KnowledgeBaseInfo, FileIndex)> {
    let corrupt = |reason: String| KnowledgeError::Corrupt {
        domain_id: domain_id.to_owned(),
        what: "index (_metadata.json)",
        path: location.to_owned(),
        reason,
    };
    let doc: MetaIn = if bytes.iter().all(u8::is_ascii_whitespace) {
        MetaIn {
            info: None,
            files: None,
        }
    } else {
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?
    };
    let mut info_map = doc.info.unwrap_or_default();
    info_map
        .entry("domain_id")
        .or_insert_with(|| domain_id.to_owned().into());
    let mut info: KnowledgeBaseInfo =
        serde_json::from_value(info_map.into()).map_err(|e| corrupt(format!("info: {e}")))?;
    info.domain_id = domain_id.to_owned();
    let mut index = FileIndex::default();
    for (key, value) in doc.files.unwrap_or_default() {
        if let Err(e) = validate_path(domain_id, &key) {
            tracing::warn!(domain_id = %domain_id, path = %key, error = %e, "skipping non-canonical index entry");
            continue;
        }
        let mut map = match value {
            serde_json::Value::Object(m) => m,
            _ => return Err(corrupt(format!("files[{key:?}] is not an object"))),
        };
        map.insert("path".into(), key.clone().into());
        let file: KnowledgeFile = serde_json::from_value(map.into())
            .map_err(|e| corrupt(format!("files[{key:?}]: {e}")))?;
        index.insert(file);
    }
    info.file_count = index.len() as u64;
    info.total_size_bytes = index.total_size();
    Ok((info, index))
}
