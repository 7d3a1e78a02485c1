//! `s3_versioning` change detection: the bucket's object versions of `_metadata.json` are the
//! history, and no snapshot objects are written.
//!
//! The original resolved a version by listing every object version of the metadata key and
//! GETting them one by one until one matched (O(history) requests per diff). Here every index write records, inside the new document, the identity and S3
//! `VersionId` of the document it replaces (`dynreg_versions`, at most `retention` entries,
//! most recent last). Resolving a version is then a lookup in the document just loaded plus
//! one `GET ?versionId=` — two requests, whatever the history.
//!
//! A version that cannot be resolved is `InvalidVersion` (which `has_changes_since` turns into
//! "changed", the safe full re-ingest): bucket versioning is off (S3 returns no `VersionId`,
//! so nothing is indexed), the identity is older than the retained entries or was never a
//! state of the document, the object version was removed (a lifecycle rule), or its content
//! does not have that identity.

use super::obj_path;
use object_store::{GetOptions, ObjectStore};

use super::{S3KnowledgeBackend, is_not_found};
use crate::error::{KnowledgeError, Result};
use crate::identity::Snapshot;
use crate::metadata_doc::{VersionEntry, parse_metadata};

/// The index to store with the next document: `index` plus the replaced document's own
/// identity → `VersionId` (when it has one and is not the empty identity), most recent last,
/// at most `retention` entries.
pub(super) fn next_index(
    mut index: Vec<VersionEntry>,
    replaced_identity: &str,
    replaced_version: Option<&str>,
    retention: usize,
) -> Vec<VersionEntry> {
    if let Some(vid) = replaced_version
        && !replaced_identity.is_empty()
    {
        index.retain(|e| e.identity != replaced_identity);
        index.push(VersionEntry {
            identity: replaced_identity.to_owned(),
            version_id: vid.to_owned(),
        });
    }
    let excess = index.len().saturating_sub(retention.max(1));
    index.drain(..excess);
    index
}

impl S3KnowledgeBackend {
    /// The `{path: checksum}` map of `version` from the object version the index names.
    pub(super) async fn resolve_object_version(
        &self,
        d: &str,
        version: &str,
        index: &[VersionEntry],
    ) -> Result<Snapshot> {
        let invalid = |reason| KnowledgeError::InvalidVersion {
            domain_id: d.to_owned(),
            version: version.to_owned(),
            reason,
        };
        let Some(entry) = index.iter().rev().find(|e| e.identity == version) else {
            return Err(invalid(
                "s3_versioning: no object version of _metadata.json with this identity is indexed (bucket versioning off, or older than the retained versions)",
            ));
        };
        let key = self.meta_key(d);
        let opts = GetOptions {
            version: Some(entry.version_id.clone()),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&obj_path(key.as_str()), opts).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => {
                return Err(invalid(
                    "s3_versioning: the indexed object version of _metadata.json is gone",
                ));
            }
            Err(e) => return Err(self.err(d, &key, e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(d, &key, e))?;
        let location = format!("{key}?versionId={}", entry.version_id);
        let (_, mut old) = parse_metadata(d, &location, &bytes)?;
        if old.identity() != version {
            return Err(invalid(
                "s3_versioning: the indexed object version does not hold this identity",
            ));
        }
        Ok(old
            .pairs()
            .map(|(p, c)| (p.to_owned(), c.to_owned()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[VersionEntry]) -> Vec<&str> {
        v.iter().map(|e| e.identity.as_str()).collect()
    }

    #[test]
    fn the_index_keeps_the_last_versions_once_each() {
        let mut idx = Vec::new();
        for (id, vid) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")] {
            idx = next_index(idx, id, Some(vid), 2);
        }
        assert_eq!(ids(&idx), vec!["a", "c"]);
        assert_eq!(idx[0].version_id, "3");
        // No VersionId (versioning off) or the empty identity: nothing is indexed.
        let idx2 = next_index(idx.clone(), "d", None, 2);
        assert_eq!(idx2, idx);
        assert_eq!(next_index(Vec::new(), "", Some("9"), 2), Vec::new());
    }
}
