//! One tenant's ingestion state and the view `get_info_in` builds from it.
//!
//! A tenant owns its status, error, generation token and vector store path; everything else in
//! its view — file count, total size, the version counter, the knowledge base's metadata — is
//! the knowledge base's real, shared content summary. (The original reported a tenant view
//! with `file_count = 0`, `total_size_bytes = 0`, `version = "1"` and empty metadata,
//! the original; a tenant reading its view wants the content it ingests.) A tenant
//! that never wrote sees the default state: pending, no error, no generation, no vector store
//! path. `last_updated` is the later of the content's last change and the tenant's last write.
//!
//! The file and S3 backends store it as the original's tenant document
//! `{"info": {...KnowledgeBaseInfo...}}` (no `files`), written from the view so the original
//! reads sensible counts too; reading takes only the tenant-owned fields from it.

use chrono::{DateTime, Utc};
#[cfg(any(feature = "file", feature = "s3"))]
use serde::Deserialize;
use serde::Serialize;

#[cfg(any(feature = "file", feature = "s3"))]
use crate::error::{KnowledgeError, Result};
use crate::model::{IngestionStatus, KnowledgeBaseInfo, StatusUpdate};
use crate::pytime;

/// The tenant-owned part of a knowledge base's info.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TenantState {
    pub(crate) status: IngestionStatus,
    pub(crate) error: Option<String>,
    pub(crate) generation: Option<String>,
    pub(crate) vector_store_path: Option<String>,
    /// When the tenant last wrote; `None` if never.
    pub(crate) last_updated: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct DocOut<'a> {
    info: &'a KnowledgeBaseInfo,
}

#[cfg(any(feature = "file", feature = "s3"))]
#[derive(Deserialize)]
struct DocIn {
    #[serde(default)]
    info: Option<InfoIn>,
}

#[cfg(any(feature = "file", feature = "s3"))]
#[derive(Deserialize)]
struct InfoIn {
    #[serde(default)]
    ingestion_status: Option<String>,
    #[serde(default)]
    ingestion_error: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    vector_store_path: Option<String>,
    #[serde(default)]
    last_updated: Option<String>,
}

impl TenantState {
    /// Applies a status write: status, error and generation always; the vector store path
    /// only when given.
    pub(crate) fn apply(&mut self, update: &StatusUpdate) {
        self.status = update.status;
        self.error.clone_from(&update.error);
        self.generation.clone_from(&update.generation);
        if update.vector_store_path.is_some() {
            self.vector_store_path.clone_from(&update.vector_store_path);
        }
        self.last_updated = Some(pytime::now());
    }

    /// The tenant's view of a knowledge base whose shared info is `content`.
    pub(crate) fn view(&self, content: &KnowledgeBaseInfo) -> KnowledgeBaseInfo {
        let mut v = content.clone();
        v.ingestion_status = self.status;
        v.ingestion_error.clone_from(&self.error);
        v.generation.clone_from(&self.generation);
        v.vector_store_path.clone_from(&self.vector_store_path);
        if let Some(t) = self.last_updated
            && t > v.last_updated
        {
            v.last_updated = t;
        }
        v
    }

    /// The stored document (`json.dump(indent=2)` of `{"info": view}`).
    pub(crate) fn to_doc(&self, content: &KnowledgeBaseInfo) -> Vec<u8> {
        serde_json::to_vec_pretty(&DocOut {
            info: &self.view(content),
        })
        .unwrap_or_default()
    }

    /// Parses a stored document (ours or the original's); empty bytes are the default state.
    #[cfg(any(feature = "file", feature = "s3"))]
    pub(crate) fn from_doc(domain_id: &str, location: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| KnowledgeError::Corrupt {
            domain_id: domain_id.to_owned(),
            what: "tenant state document",
            path: location.to_owned(),
            reason,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let doc: DocIn = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let Some(info) = doc.info else {
            return Ok(Self::default());
        };
        let status = match info.ingestion_status.as_deref() {
            None => IngestionStatus::Pending,
            Some(s) => s
                .parse()
                .map_err(|e: KnowledgeError| corrupt(format!("info.ingestion_status: {e}")))?,
        };
        let last_updated = match info.last_updated.as_deref() {
            None => None,
            Some(t) => {
                Some(pytime::parse(t).ok_or_else(|| corrupt(format!("info.last_updated {t:?}")))?)
            }
        };
        Ok(Self {
            status,
            error: info.ingestion_error,
            generation: info.generation,
            vector_store_path: info.vector_store_path,
            last_updated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;

    #[test]
    fn a_view_keeps_the_real_content_summary() {
        let mut content = KnowledgeBaseInfo::new("kb", Metadata::new());
        content.file_count = 3;
        content.total_size_bytes = 42;
        content.version = "7".into();
        content.ingestion_status = IngestionStatus::Swapping;
        content.generation = Some("domain-gen".into());
        let fresh = TenantState::default().view(&content);
        assert_eq!((fresh.file_count, fresh.total_size_bytes), (3, 42));
        assert_eq!(fresh.version, "7");
        assert_eq!(fresh.ingestion_status, IngestionStatus::Pending);
        assert_eq!(fresh.generation, None, "the domain's token does not leak");
        let mut t = TenantState::default();
        t.apply(&StatusUpdate::new(IngestionStatus::Ready).generation("g"));
        let v = t.view(&content);
        assert_eq!(v.ingestion_status, IngestionStatus::Ready);
        assert_eq!((v.file_count, v.generation.as_deref()), (3, Some("g")));
        assert!(v.last_updated >= content.last_updated);
    }

    #[cfg(any(feature = "file", feature = "s3"))]
    #[test]
    fn the_originals_document_reads_and_bad_ones_are_corrupt() {
        let content = KnowledgeBaseInfo::new("kb", Metadata::new());
        let mut t = TenantState::default();
        t.apply(&StatusUpdate::new(IngestionStatus::Ready).generation("g"));
        let back = TenantState::from_doc("kb", "x", &t.to_doc(&content)).unwrap();
        assert_eq!(back, t);
        let doc = br#"{"info": {"domain_id": "kb", "file_count": 0, "ingestion_status": "ingesting", "generation": "g1", "last_updated": "2026-11-28T00:04:10.596849+00:00"}}"#;
        let t = TenantState::from_doc("kb", "x", doc).unwrap();
        assert_eq!(t.status, IngestionStatus::Ingesting);
        assert_eq!(t.generation.as_deref(), Some("g1"));
        assert_eq!(
            TenantState::from_doc("kb", "x", b"{}").unwrap(),
            TenantState::default()
        );
        assert_eq!(
            TenantState::from_doc("kb", "x", b"").unwrap(),
            TenantState::default()
        );
        let err = TenantState::from_doc(
            "kb",
            "/p/_metadata.json",
            br#"{"info": {"ingestion_status": "done"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/p/_metadata.json"), "{err}");
        assert!(TenantState::from_doc("kb", "x", b"not json").is_err());
    }
}
