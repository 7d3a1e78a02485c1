//! The in-memory file index every backend keeps per knowledge base: files sorted by path,
//! running totals, a cached identity, and the file-versus-folder conflict rule.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::{KnowledgeError, Result};
use crate::identity::{Snapshot, kb_identity};
use crate::model::KnowledgeFile;

/// Files of one knowledge base, sorted by path.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileIndex {
    files: BTreeMap<String, KnowledgeFile>,
    total_size: u64,
    identity: Option<String>,
}

impl FileIndex {
    #[cfg(test)]
    pub(crate) fn from_files(files: impl IntoIterator<Item = KnowledgeFile>) -> Self {
        let mut index = Self::default();
        for f in files {
            index.insert(f);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn total_size(&self) -> u64 {
        self.total_size
    }

    pub(crate) fn get(&self, path: &str) -> Option<&KnowledgeFile> {
        self.files.get(path)
    }

    /// Refuses `path` if it would be a file and a folder at once (`a` vs `a/b`).
    pub(crate) fn check_conflict(&self, domain_id: &str, path: &str) -> Result<()> {
        let conflict = |existing: &str| KnowledgeError::PathConflict {
            domain_id: domain_id.to_owned(),
            path: path.to_owned(),
            existing: existing.to_owned(),
        };
        for (i, _) in path.match_indices('/') {
            let ancestor = &path[..i];
            if self.files.contains_key(ancestor) {
                return Err(conflict(ancestor));
            }
        }
        let lower = format!("{path}/");
        let upper = format!("{path}0"); // '0' follows '/' in byte order
        if let Some((existing, _)) = self
            .files
            .range::<str, _>((
                Bound::Included(lower.as_str()),
                Bound::Excluded(upper.as_str()),
            ))
            .next()
        {
            return Err(conflict(existing));
        }
        Ok(())
    }

    /// Inserts or replaces; returns the previous entry.
    pub(crate) fn insert(&mut self, file: KnowledgeFile) -> Option<KnowledgeFile> {
        self.identity = None;
        self.total_size += file.size_bytes;
        let old = self.files.insert(file.path.clone(), file);
        if let Some(o) = &old {
            self.total_size -= o.size_bytes;
        }
        old
    }

    pub(crate) fn remove(&mut self, path: &str) -> Option<KnowledgeFile> {
        let old = self.files.remove(path)?;
        self.identity = None;
        self.total_size -= old.size_bytes;
        Some(old)
    }

    /// Files whose path starts with `prefix` (plain string prefix), sorted by path.
    pub(crate) fn list(&self, prefix: Option<&str>) -> Vec<KnowledgeFile> {
        match prefix {
            None | Some("") => self.files.values().cloned().collect(),
            Some(p) => self
                .files
                .range::<str, _>((Bound::Included(p), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(p))
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// The snapshot document (`{path: checksum}` JSON) of the current content.
    #[cfg(feature = "file")]
    pub(crate) fn snapshot_json(&self) -> String {
        crate::identity::pairs_to_json(
            self.files
                .iter()
                .map(|(p, f)| (p.as_str(), f.checksum.as_str())),
        )
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.files
            .iter()
            .map(|(p, f)| (p.clone(), f.checksum.clone()))
            .collect()
    }

    /// The identity, cached until the next mutation.
    pub(crate) fn identity(&mut self) -> String {
        if let Some(id) = &self.identity {
            return id.clone();
        }
        let id = kb_identity(
            self.files
                .iter()
                .map(|(p, f)| (p.as_str(), f.checksum.as_str())),
        );
        self.identity = Some(id.clone());
        id
    }

    #[cfg(any(feature = "file", feature = "s3"))]
    pub(crate) fn files(&self) -> &BTreeMap<String, KnowledgeFile> {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;

    fn file(path: &str, size: u64) -> KnowledgeFile {
        KnowledgeFile {
            path: path.into(),
            content_type: "text/plain".into(),
            size_bytes: size,
            checksum: format!("c{size}"),
            uploaded_at: crate::pytime::now(),
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn totals_follow_inserts_replacements_and_removals() {
        let mut ix = FileIndex::default();
        ix.insert(file("a", 3));
        ix.insert(file("b", 4));
        ix.insert(file("a", 10));
        assert_eq!((ix.len(), ix.total_size()), (2, 14));
        ix.remove("b");
        assert_eq!((ix.len(), ix.total_size()), (1, 10));
    }

    #[test]
    fn file_and_folder_cannot_share_a_name() {
        let mut ix = FileIndex::default();
        ix.insert(file("a/b", 1));
        ix.insert(file("a.md", 1));
        assert!(ix.check_conflict("d", "a").is_err());
        assert!(ix.check_conflict("d", "a/b/c").is_err());
        ix.check_conflict("d", "a/c").unwrap();
        ix.check_conflict("d", "a.md2").unwrap();
        ix.check_conflict("d", "ab").unwrap();
    }

    #[test]
    fn prefix_listing_is_sorted_startswith() {
        let ix = FileIndex::from_files([
            file("b/x", 1),
            file("a/y", 1),
            file("a/x", 1),
            file("ab", 1),
        ]);
        let paths: Vec<_> = ix.list(Some("a/")).into_iter().map(|f| f.path).collect();
        assert_eq!(paths, vec!["a/x", "a/y"]);
        let all: Vec<_> = ix.list(Some("a")).into_iter().map(|f| f.path).collect();
        assert_eq!(all, vec!["a/x", "a/y", "ab"]);
    }
}
