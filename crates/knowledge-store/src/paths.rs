//! The identifier and path rules every backend applies identically.
//!
//! * A `domain_id` is one addressable segment: not empty or blank, not `.`/`..`, no `/`, `\`,
//!   NUL or control characters, and not starting with `_` (reserved for the store's own state).
//! * A resource path is a **canonical** relative path: `/`-separated non-empty segments, none
//!   of them `.` or `..`, no leading or trailing `/`, no backslash, NUL or control character,
//!   and no drive letter (`C:`). Non-canonical spellings are refused rather than collapsed, so
//!   one file has exactly one name in every backend.
//! * A change-detection version is `""` (the empty baseline) or 32 lowercase hex digits.

use crate::error::{KnowledgeError, Result};

/// Checks a domain id; the error names it.
pub fn validate_domain_id(domain_id: &str) -> Result<()> {
    let reason = if domain_id.trim().is_empty() {
        Some("domain_id must not be empty")
    } else if domain_id == "." || domain_id == ".." {
        Some("domain_id must not be '.' or '..'")
    } else if domain_id.contains(['/', '\\']) {
        Some("domain_id must be a single segment (no '/' or '\\')")
    } else if domain_id.chars().any(char::is_control) {
        Some("domain_id must not contain NUL or control characters")
    } else if domain_id.starts_with('_') {
        Some("domain_id must not start with '_' (reserved)")
    } else if domain_id.len() > 200 {
        Some("domain_id is longer than 200 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KnowledgeError::InvalidDomainId {
            domain_id: domain_id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a resource path; the error names the domain and the path.
pub fn validate_path(domain_id: &str, path: &str) -> Result<()> {
    let refuse = |reason| {
        Err(KnowledgeError::InvalidPath {
            domain_id: domain_id.to_owned(),
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("path must not be empty");
    }
    if path.contains('\0') || path.chars().any(char::is_control) {
        return refuse("path must not contain NUL or control characters");
    }
    if path.contains('\\') {
        return refuse("path must use '/' separators, not '\\'");
    }
    if path.starts_with('/') {
        return refuse("path must be relative, not absolute");
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return refuse("path must not start with a drive letter");
    }
    if path.len() > 1024 {
        return refuse("path is longer than 1024 bytes");
    }
    for segment in path.split('/') {
        match segment {
            "" => return refuse("path must not contain empty segments ('//' or a trailing '/')"),
            "." => return refuse("path must not contain '.' segments"),
            ".." => return refuse("path must not contain '..' segments"),
            s if s.len() > 255 => return refuse("a path segment is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a change-detection version: `""` or an MD5 hex identity.
pub fn validate_version(domain_id: &str, version: &str) -> Result<()> {
    if version.is_empty()
        || (version.len() == 32
            && version
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        Ok(())
    } else {
        Err(KnowledgeError::InvalidVersion {
            domain_id: domain_id.to_owned(),
            version: version.to_owned(),
            reason: "a version is \"\" or 32 lowercase hex digits (an identity from get_checksum)",
        })
    }
}

/// Hostile or malformed resource paths every backend must refuse (used by the conformance
/// suite and exported so other crates can reuse the list).
pub const HOSTILE_PATHS: &[&str] = &[
    "",
    "/",
    "/etc/passwd",
    "../x",
    "../../etc/passwd",
    "a/../../x",
    "../_metadata.json",
    "sub/../guide.md",
    "./a.md",
    "a/./b.md",
    "a//b.md",
    "a/",
    "..",
    ".",
    "a\\b.md",
    "..\\..\\windows\\win.ini",
    "C:/Windows/win.ini",
    "c:evil.md",
    "nul\0byte.md",
    "line\nbreak.md",
];

/// Hostile or malformed domain ids every backend must refuse.
pub const HOSTILE_DOMAIN_IDS: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "acme/content",
    "a\\b",
    "_scoped",
    "_x",
    "nul\0",
    "../etc",
    "/abs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_paths_and_ids() {
        for p in [
            "a.md",
            "docs/a.md",
            "content/guide.md",
            "archive/old.md.gz",
            "x..y/z.",
            ".hidden",
        ] {
            validate_path("d", p).unwrap();
        }
        for d in ["support", "my_domain", "empty-kb", "content", "a.b"] {
            validate_domain_id(d).unwrap();
        }
    }

    #[test]
    fn refuses_every_hostile_path_and_names_it() {
        for p in HOSTILE_PATHS {
            let err = validate_path("dom", p).unwrap_err();
            assert!(err.is_refusal(), "{p:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("dom") && msg.contains(&format!("{p:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn refuses_every_hostile_domain() {
        for d in HOSTILE_DOMAIN_IDS {
            let err = validate_domain_id(d).unwrap_err();
            assert!(err.is_refusal());
            assert!(err.to_string().contains("domain_id"));
        }
    }

    #[test]
    fn versions_are_empty_or_md5_hex() {
        validate_version("d", "").unwrap();
        validate_version("d", "70bc08b03191145dd5d29dea7693be38").unwrap();
        for v in [
            "..",
            "a/b",
            "70BC08B03191145DD5D29DEA7693BE38",
            "xyz",
            "../../etc/passwd",
        ] {
            assert!(matches!(
                validate_version("d", v),
                Err(KnowledgeError::InvalidVersion { .. })
            ));
        }
    }
}
