//! Checksums and knowledge-base identity, exactly as the original computes them.
//!
//! * File checksum: MD5 hex of the bytes.
//! * KB identity: `""` for no files, else MD5 hex of the sorted `"{path}:{checksum}"` strings
//!   joined with `":"` (sorted by UTF-8 bytes). Snapshot files are named by this identity and
//!   hold the JSON map `{path: checksum}`.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::model::ChangeSet;

/// A `{path: checksum}` map: the content of a knowledge base at one identity.
pub type Snapshot = BTreeMap<String, String>;

/// MD5 hex of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The knowledge-base identity of `(path, checksum)` pairs.
///
/// Sorts the pairs as the original sorts its `"{path}:{checksum}"` strings (by bytes), without
/// building those strings; input sorted by path (as every index is) is nearly sorted, so this
/// is close to linear.
pub fn kb_identity<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut entries: Vec<(&str, &str)> = files.into_iter().collect();
    if entries.is_empty() {
        return String::new();
    }
    if !entries.windows(2).all(|w| cmp_joined(w[0], w[1]).is_le()) {
        entries.sort_by(|a, b| cmp_joined(*a, *b));
    }
    // One contiguous buffer, hashed in one call: MD5 at full speed, no per-entry overhead.
    let len: usize = entries.iter().map(|(p, c)| p.len() + c.len() + 2).sum();
    let mut joined = Vec::with_capacity(len);
    for (i, (path, checksum)) in entries.iter().enumerate() {
        if i > 0 {
            joined.push(b':');
        }
        joined.extend_from_slice(path.as_bytes());
        joined.push(b':');
        joined.extend_from_slice(checksum.as_bytes());
    }
    hex::encode(Md5::digest(&joined))
}

/// Compares `"{a.0}:{a.1}"` with `"{b.0}:{b.1}"` byte-wise without allocating.
pub(crate) fn cmp_joined(a: (&str, &str), b: (&str, &str)) -> std::cmp::Ordering {
    let (ap, bp) = (a.0.as_bytes(), b.0.as_bytes());
    let n = ap.len().min(bp.len());
    match ap[..n].cmp(&bp[..n]) {
        std::cmp::Ordering::Equal => {}
        other => return other,
    }
    let rest_a = ap[n..].iter().chain(b":").chain(a.1.as_bytes());
    let rest_b = bp[n..].iter().chain(b":").chain(b.1.as_bytes());
    rest_a.cmp(rest_b)
}

/// The identity of a snapshot map.
pub fn snapshot_identity(snapshot: &Snapshot) -> String {
    kb_identity(snapshot.iter().map(|(p, c)| (p.as_str(), c.as_str())))
}

/// Compares the current content with a retained snapshot; every list is sorted by path.
pub fn diff(current: &Snapshot, old: &Snapshot, version: String) -> ChangeSet {
    diff_sorted(
        current.iter().map(|(p, c)| (p.as_str(), c.as_str())),
        old.iter().map(|(p, c)| (p.as_str(), c.as_str())),
        version,
    )
}

/// [`diff`] of two `(path, checksum)` sequences, each sorted by path: one merge pass, no maps.
pub(crate) fn diff_sorted<'a, 'b>(
    current: impl IntoIterator<Item = (&'a str, &'a str)>,
    old: impl IntoIterator<Item = (&'b str, &'b str)>,
    version: String,
) -> ChangeSet {
    let mut cs = ChangeSet {
        version,
        ..ChangeSet::default()
    };
    let mut cur = current.into_iter().peekable();
    let mut old = old.into_iter().peekable();
    loop {
        match (cur.peek(), old.peek()) {
            (None, None) => break,
            (Some(&(p, _)), None) => {
                cs.added.push(p.to_owned());
                cur.next();
            }
            (None, Some(&(p, _))) => {
                cs.deleted.push(p.to_owned());
                old.next();
            }
            (Some(&(p, c)), Some(&(op, oc))) => match p.cmp(op) {
                std::cmp::Ordering::Less => {
                    cs.added.push(p.to_owned());
                    cur.next();
                }
                std::cmp::Ordering::Greater => {
                    cs.deleted.push(op.to_owned());
                    old.next();
                }
                std::cmp::Ordering::Equal => {
                    if c != oc {
                        cs.modified.push(p.to_owned());
                    }
                    cur.next();
                    old.next();
                }
            },
        }
    }
    cs
}

/// Serialises a snapshot the way the original does (`json.dumps(map)`: `", "` and `": "`).
pub fn snapshot_to_json(snapshot: &Snapshot) -> String {
    pairs_to_json(snapshot.iter().map(|(p, c)| (p.as_str(), c.as_str())))
}

/// Serialises `(path, checksum)` pairs as a snapshot document, without building a map.
pub(crate) fn pairs_to_json<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    // Sized up front (exact for ASCII): no regrowth of a large document.
    let len: usize = pairs.clone().map(|(p, c)| p.len() + c.len() + 8).sum();
    let mut out = String::with_capacity(len + 2);
    out.push('{');
    for (i, (path, checksum)) in pairs.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_json_string(&mut out, path);
        out.push_str(": ");
        push_py_json_string(&mut out, checksum);
    }
    out.push('}');
    out
}

/// One `"path": "checksum"` member of a snapshot document.
pub(crate) fn pair_json(path: &str, checksum: &str) -> String {
    let mut out = String::with_capacity(path.len() + checksum.len() + 6);
    push_py_json_string(&mut out, path);
    out.push_str(": ");
    push_py_json_string(&mut out, checksum);
    out
}

/// Appends a JSON string literal with Python's default `ensure_ascii=True` escaping.
fn push_py_json_string(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push_str(&py_json_string(s));
}

/// A JSON string literal with Python's default `ensure_ascii=True` escaping.
pub(crate) fn py_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_support() -> Snapshot {
        [
            ("archive/old.md.gz", "1d0a04fa2d446a1bc91900e272a5e34b"),
            ("content/guide.md", "1f1b75f43ca64bf0c283acebdff4e653"),
            ("content/intro.md", "7aa65ec152c81a0d7053e620e3f1cd0f"),
            ("data/faq.json", "007b22ea9f96f8066d17a31cd4e6a495"),
            ("data/products.csv", "b79ab2e09386e8c96ba97c3302877228"),
            ("data/settings.yaml", "8bca9e96b21b193def52560a92961ba6"),
            ("faq.md", "06f98abdabc4d30a02af4ea81a1906f4"),
            ("notes/readme.txt", "64d209087e83d440f318710d6208f341"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }

    #[test]
    fn identity_matches_the_value_the_original_reported() {
        // expected.json of the fixture: support's checksum.
        assert_eq!(
            snapshot_identity(&fixture_support()),
            "70bc08b03191145dd5d29dea7693be38"
        );
        assert_eq!(snapshot_identity(&Snapshot::new()), "");
    }

    #[test]
    fn sorts_joined_strings_not_paths() {
        // "a.md:..." < "a:..." because '.' < ':' — path order would put "a" first.
        let pairs = [
            ("a", "1"),
            ("a.md", "2"),
            ("a/b", "3"),
            ("a0", "4"),
            ("b", "5"),
        ];
        let mut joined: Vec<String> = pairs.iter().map(|(p, c)| format!("{p}:{c}")).collect();
        joined.sort();
        let expected = md5_hex(joined.join(":").as_bytes());
        assert_eq!(kb_identity(pairs), expected);
        let reversed: Vec<_> = pairs.iter().rev().copied().collect();
        assert_eq!(kb_identity(reversed), expected);
    }

    #[test]
    fn md5_of_bytes() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn diff_is_disjoint_and_sorted() {
        let old: Snapshot = [("a", "1"), ("b", "2"), ("z", "9"), ("c", "3")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let cur: Snapshot = [("a", "1"), ("b", "22"), ("d", "4")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let cs = diff(&cur, &old, "v".into());
        assert_eq!(cs.added, vec!["d"]);
        assert_eq!(cs.modified, vec!["b"]);
        assert_eq!(cs.deleted, vec!["c", "z"]);
    }

    #[test]
    fn snapshot_json_is_python_json_dumps() {
        let s: Snapshot = [("a.md", "x"), ("é", "y")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let text = snapshot_to_json(&s);
        assert_eq!(text, r#"{"a.md": "x", "\u00e9": "y"}"#);
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
