//! Bot id → document name, shared by the file and S3 backends: injective, safe on
//! case-insensitive file systems, bounded length.
//!
//! Every byte except lowercase ASCII letters, digits, `-` and `_` is percent-encoded (with
//! upper-case hex), so `/`, `..`, `%`, `_meta` or `A` can never escape the documents directory
//! or collide, and two ids never give names that differ only in case. An encoding longer than
//! [`MAX_ENCODED`] bytes (file names stop at 255, S3 keys at 1024) is replaced by `~` and the SHA-256 of
//! the id; `~` is always encoded otherwise, so hashed and encoded names never meet. The real id
//! is kept inside the document, and reads check it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The longest percent-encoding used as-is; longer ones are hashed.
pub(crate) const MAX_ENCODED: usize = 200;

const fn encode_set() -> AsciiSet {
    let mut set = NON_ALPHANUMERIC.remove(b'-').remove(b'_');
    let mut c = b'A';
    while c <= b'Z' {
        set = set.add(c);
        c += 1;
    }
    set
}

static ENCODE: AsciiSet = encode_set();

/// The file name of `bot_id`'s document.
pub(crate) fn doc_name(bot_id: &str) -> String {
    let encoded = utf8_percent_encode(bot_id, &ENCODE).to_string();
    if encoded.len() <= MAX_ENCODED {
        format!("{encoded}.json")
    } else {
        format!("~{}.json", hex::encode(Sha256::digest(bot_id.as_bytes())))
    }
}

/// Whether a directory entry is a document (not a temporary file or anything else).
#[cfg(feature = "file")]
pub(crate) fn is_doc_name(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_safe_injective_and_case_distinct() {
        let ids = [
            "a/b",
            "..",
            ".",
            "%2F",
            "%252F",
            "_meta",
            "UPPER",
            "upper",
            "Upper",
            "~x",
            "a.json",
            "日本語",
            "with space",
        ];
        let mut seen = HashSet::new();
        for id in ids {
            let name = doc_name(id);
            assert!(name.ends_with(".json"), "{name}");
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
            assert!(
                seen.insert(name.to_ascii_lowercase()),
                "case-insensitive collision on {id:?}"
            );
        }
        assert_eq!(doc_name("bot-1_x"), "bot-1_x.json");
        assert_eq!(doc_name("a/b"), "a%2Fb.json");
        let long = doc_name(&"é".repeat(512));
        assert!(long.starts_with('~') && long.len() < 255, "{long}");
        assert_ne!(doc_name(&"x".repeat(1024)), doc_name(&"x".repeat(1023)));
    }
}
