//! Object keys of an S3 registry: the validated prefix, one document key per bot id
//! (injective, bounded length) and the head and log keys.
//!
//! Document names come from [`crate::doc_name`] (shared with the file backend), so `/`, `..`,
//! `%` or `_meta` never leave the `bots/` folder or collide. The real id is kept in the
//! document and checked on read.

use object_store::path::Path;

pub(crate) use crate::doc_name::doc_name;

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The prefix without leading or trailing `/` (may be empty).
    prefix: String,
}

impl Keys {
    /// Validates `prefix` (`registry/`, `a/b/`...): no empty, `.` or `..` segment, no control
    /// characters.
    pub(crate) fn new(prefix: &str) -> Result<Keys, String> {
        let trimmed = prefix.trim_matches('/');
        if !trimmed.is_empty() {
            let parsed = Path::parse(trimmed)
                .map_err(|e| format!("{prefix:?} is not a valid key prefix: {e}"))?;
            if parsed.as_ref() != trimmed {
                return Err(format!("{prefix:?} is not a valid key prefix"));
            }
        }
        Ok(Keys {
            prefix: trimmed.to_owned(),
        })
    }

    fn path(&self, rest: &str) -> Path {
        let full = if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        };
        Path::parse(full).expect("keys are built from validated parts")
    }

    /// The folder of the documents.
    pub(crate) fn bots(&self) -> Path {
        self.path("bots")
    }

    /// The document key of `bot_id`.
    pub(crate) fn doc(&self, bot_id: &str) -> Path {
        self.path(&format!("bots/{}", doc_name(bot_id)))
    }

    /// The head object (applied revision and compaction horizon).
    pub(crate) fn head(&self) -> Path {
        self.path("_registry/head.json")
    }

    /// The folder of the log records.
    pub(crate) fn log_dir(&self) -> Path {
        self.path("_registry/log")
    }

    /// The log record of `rev` (zero-padded, so key order is revision order).
    pub(crate) fn log(&self, rev: u64) -> Path {
        self.path(&format!("_registry/log/{rev:020}.json"))
    }

    /// The revision of a log record key.
    pub(crate) fn log_rev(path: &Path) -> Option<u64> {
        path.filename()?.strip_suffix(".json")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_keys() {
        let k = Keys::new("registry/").unwrap();
        assert_eq!(k.doc("a/b").as_ref(), "registry/bots/a%2Fb.json");
        assert_eq!(k.doc("..").as_ref(), "registry/bots/%2E%2E.json");
        assert_eq!(k.doc("Up").as_ref(), "registry/bots/%55p.json");
        assert_eq!(
            k.log(42).as_ref(),
            "registry/_registry/log/00000000000000000042.json"
        );
        assert_eq!(Keys::log_rev(&k.log(42)), Some(42));
        assert_eq!(
            Keys::new("").unwrap().head().as_ref(),
            "_registry/head.json"
        );
        assert!(k.doc(&"x".repeat(1024)).as_ref().len() < 300);
        for bad in ["a//b", "a/../b", "./x"] {
            assert!(Keys::new(bad).is_err(), "{bad}");
        }
    }
}
