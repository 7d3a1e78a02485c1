//! The in-memory file index every backend keeps per knowledge base: files sorted by path,
//! running totals, a cached identity, and the file-versus-folder conflict rule.
//!
//! Entries are shared (`Arc`), so a listing of 10,000 files copies 10,000 pointers, not
//! 10,000 entries. The identity is cached until the next change, and the MD5 state is kept at
//! every [`MARK_EVERY`]-th file, so after a change only the files from the changed path on are
//! hashed again (a change near the end costs almost nothing, one at a random place half).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::{KnowledgeError, Result};
use md5::{Digest, Md5};

use crate::identity::{cmp_joined, kb_identity};
use crate::model::KnowledgeFile;

/// One indexed file: the shared entry and its `"path": "checksum"` snapshot-document
/// fragment, rendered once so a snapshot document is a concatenation. When neither string
/// needed escaping (`plain`), the fragment also holds the path and checksum verbatim, so the
/// identity reads one small allocation per file instead of three.
#[derive(Debug, Clone)]
struct Entry {
    file: Arc<KnowledgeFile>,
    json: Box<str>,
    plain: bool,
}

impl Entry {
    fn new(file: KnowledgeFile) -> Self {
        let json = crate::identity::pair_json(&file.path, &file.checksum).into_boxed_str();
        let plain = json.len() == file.path.len() + file.checksum.len() + 6;
        Self {
            json,
            plain,
            file: Arc::new(file),
        }
    }

    /// `(path, checksum)`; `path` is the map key of this entry.
    fn pair<'a>(&'a self, path: &'a str) -> (&'a str, &'a str) {
        if self.plain {
            let n = path.len();
            (&self.json[1..=n], &self.json[n + 5..self.json.len() - 1])
        } else {
            (path, &self.file.checksum)
        }
    }
}

/// Files between two saved MD5 states of the identity.
const MARK_EVERY: usize = 128;

/// Files of one knowledge base, sorted by path.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileIndex {
    /// `(path, MD5 state before that file's part of the identity)` every [`MARK_EVERY`] files
    /// in path order; only valid while path order is the identity's order (see `identity`).
    marks: Vec<(String, Md5)>,
    files: BTreeMap<String, Entry>,
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
        self.files.get(path).map(|e| &*e.file)
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
        self.changed(&file.path);
        self.total_size += file.size_bytes;
        let old = self.files.insert(file.path.clone(), Entry::new(file));
        if let Some(o) = &old {
            self.total_size -= o.file.size_bytes;
        }
        old.map(|o| Arc::unwrap_or_clone(o.file))
    }

    pub(crate) fn remove(&mut self, path: &str) -> Option<KnowledgeFile> {
        let old = self.files.remove(path)?;
        self.changed(path);
        self.total_size -= old.file.size_bytes;
        Some(Arc::unwrap_or_clone(old.file))
    }

    /// Files whose path starts with `prefix` (plain string prefix), sorted by path.
    pub(crate) fn list(&self, prefix: Option<&str>) -> Vec<Arc<KnowledgeFile>> {
        match prefix {
            None | Some("") => self.entries(),
            Some(p) => self
                .files
                .range::<str, _>((Bound::Included(p), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(p))
                .map(|(_, e)| e.file.clone())
                .collect(),
        }
    }

    /// The snapshot document (`{path: checksum}` JSON) of the current content.
    #[cfg(any(feature = "file", feature = "s3"))]
    pub(crate) fn snapshot_json(&self) -> String {
        let len: usize = self.files.values().map(|e| e.json.len() + 2).sum();
        let mut out = String::with_capacity(len + 2);
        out.push('{');
        for (i, e) in self.files.values().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&e.json);
        }
        out.push('}');
        out
    }

    /// The entries in path order, shared with the index.
    pub(crate) fn entries(&self) -> Vec<Arc<KnowledgeFile>> {
        self.files.values().map(|e| e.file.clone()).collect()
    }

    /// `(path, checksum)` of every file, sorted by path.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.files.iter().map(|(p, e)| e.pair(p))
    }

    /// Forgets the identity and the MD5 states that covered `path`.
    fn changed(&mut self, path: &str) {
        self.identity = None;
        // A mark's state covers the files before its path: those at or before `path` stay.
        let keep = self.marks.partition_point(|(k, _)| k.as_str() <= path);
        self.marks.truncate(keep);
    }

    /// The identity, cached until the next mutation.
    ///
    /// The formula hashes `"path:checksum"` strings in byte order; that is path order except
    /// where one path is a prefix of another (`a` / `a.md`). While path order holds, hashing
    /// resumes from the last saved MD5 state before the first changed path; otherwise the
    /// pairs are sorted and hashed from scratch.
    pub(crate) fn identity(&mut self) -> String {
        if let Some(id) = &self.identity {
            return id.clone();
        }
        let id = match self.resume_identity() {
            Some(id) => id,
            None => {
                self.marks.clear();
                kb_identity(self.pairs())
            }
        };
        self.identity = Some(id.clone());
        id
    }

    /// Hashes from the last mark on; `None` if the files are not in the identity's order.
    fn resume_identity(&mut self) -> Option<String> {
        if self.files.is_empty() {
            return Some(String::new());
        }
        let (start, mut hasher) = match self.marks.last() {
            Some((k, h)) => (Some(k.clone()), h.clone()),
            None => (None, Md5::new()),
        };
        let (mut prev, rest) = match &start {
            Some(k) => (
                self.files
                    .range::<str, _>((Bound::Unbounded, Bound::Excluded(k.as_str())))
                    .next_back()
                    .map(|(p, e)| e.pair(p)),
                self.files
                    .range::<str, _>((Bound::Included(k.as_str()), Bound::Unbounded)),
            ),
            None => (
                None,
                self.files
                    .range::<str, _>((Bound::Unbounded::<&str>, Bound::Unbounded)),
            ),
        };
        let mut buf = Vec::with_capacity(MARK_EVERY * 64);
        let mut new_marks = Vec::new();
        let mut since_mark = 0;
        for (path, e) in rest {
            let pair = e.pair(path);
            if prev.is_some_and(|q| cmp_joined(q, pair).is_gt()) {
                return None;
            }
            if since_mark == MARK_EVERY || (start.is_none() && prev.is_none()) {
                hasher.update(&buf);
                buf.clear();
                new_marks.push((path.clone(), hasher.clone()));
                since_mark = 0;
            }
            if prev.is_some() {
                buf.push(b':');
            }
            buf.extend_from_slice(pair.0.as_bytes());
            buf.push(b':');
            buf.extend_from_slice(pair.1.as_bytes());
            since_mark += 1;
            prev = Some(pair);
        }
        hasher.update(&buf);
        self.marks.extend(new_marks);
        Some(hex::encode(hasher.finalize()))
    }

    /// Every entry, sorted by path.
    #[cfg(any(feature = "file", feature = "s3"))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &KnowledgeFile)> {
        self.files.iter().map(|(p, e)| (p.as_str(), &*e.file))
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
        let paths: Vec<_> = ix.list(Some("a/")).iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, vec!["a/x", "a/y"]);
        let all: Vec<_> = ix.list(Some("a")).iter().map(|f| f.path.clone()).collect();
        assert_eq!(all, vec!["a/x", "a/y", "ab"]);
    }

    #[test]
    fn identity_and_snapshot_document_match_the_reference_formulas() {
        // Prefix pairs ("a" / "a.md" / "a:b") are out of joined order; escaped paths are not
        // plain fragments.
        for paths in [
            vec!["b/x", "a/y", "a/x", "ab"],
            vec!["a", "a.md", "a/b", "a0", "a:b"],
            vec!["q\"uote.md", "\u{e9}t\u{e9}.md", "tab\there.md", "plain.md"],
        ] {
            let ix = FileIndex::from_files(paths.iter().enumerate().map(|(i, p)| KnowledgeFile {
                checksum: crate::identity::md5_hex(p.as_bytes()),
                ..file(p, i as u64)
            }));
            let snap: crate::identity::Snapshot = paths
                .iter()
                .map(|p| ((*p).to_owned(), crate::identity::md5_hex(p.as_bytes())))
                .collect();
            let mut ix2 = ix.clone();
            assert_eq!(ix2.identity(), crate::identity::snapshot_identity(&snap));
            #[cfg(any(feature = "file", feature = "s3"))]
            assert_eq!(ix.snapshot_json(), crate::identity::snapshot_to_json(&snap));
            let pairs: Vec<_> = ix.pairs().collect();
            let expected: Vec<_> = snap.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
            assert_eq!(pairs, expected);
        }
    }

    #[test]
    fn incremental_identity_matches_a_full_recomputation() {
        let reference =
            |ix: &FileIndex| crate::identity::kb_identity(ix.pairs().collect::<Vec<_>>());
        let mut ix = FileIndex::default();
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..3000u64 {
            let r = next();
            let n = r % 700;
            // Mostly plain paths; now and then one that breaks path order ("a" vs "a.md").
            if step == 1500 {
                for k in 0..40 {
                    ix.remove(&format!("d{k}"));
                    ix.remove(&format!("d{k}.md"));
                }
                assert_eq!(ix.identity(), reference(&ix));
                assert!(!ix.marks.is_empty(), "back in path order: marks are kept");
            }
            let path = match (step < 1500, r % 23) {
                (true, 0) => format!("d{}", n % 40),
                (true, 1) => format!("d{}.md", n % 40),
                _ => format!("d{}/f{n:04}.md", n % 40),
            };
            if r % 5 == 0 {
                ix.remove(&path);
            } else {
                ix.insert(KnowledgeFile {
                    checksum: crate::identity::md5_hex(&step.to_le_bytes()),
                    ..file(&path, n)
                });
            }
            if step % 7 == 0 || step > 2900 {
                assert_eq!(ix.identity(), reference(&ix), "step {step}");
            }
        }
        assert!(ix.len() > MARK_EVERY * 2);
    }
}
