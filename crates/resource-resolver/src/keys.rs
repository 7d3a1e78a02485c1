//! The vocabulary of backend options shared by every backend family: an option a backend does
//! not know is an error that names it and the nearest option it does know.
//!
//! Backend config readers (registry, event bus, knowledge store) call [`unknown_key`] for every
//! key outside their list, so a typo reads the same everywhere:
//! `unknown option "tabel"; did you mean "table"? (valid: path, table, ...)`.

/// The valid key nearest to `key` by edit distance (case-insensitive; the first of equally near
/// ones), or `None` when there is no valid key.
pub fn nearest_key<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    valid
        .iter()
        .copied()
        .min_by_key(|v| edit_distance(&key, &v.to_ascii_lowercase()))
}

/// Levenshtein distance, counted in chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Why `key` is refused by a backend that takes `valid`: the nearest valid key and the list.
pub fn unknown_key(key: &str, valid: &[&str]) -> String {
    match nearest_key(key, valid) {
        Some(near) => format!(
            "unknown option {key:?}; did you mean {near:?}? (valid: {})",
            valid.join(", ")
        ),
        None => format!("unknown option {key:?}; this backend takes no options"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_by_edit_distance() {
        let valid = [
            "path",
            "table",
            "touch_resolution_ms",
            "tombstone_retention",
        ];
        assert_eq!(nearest_key("tabel", &valid), Some("table"));
        assert_eq!(nearest_key("TABLE", &valid), Some("table"));
        assert_eq!(nearest_key("pth", &valid), Some("path"));
        assert_eq!(
            nearest_key("tombstone_retension", &valid),
            Some("tombstone_retention")
        );
        assert_eq!(nearest_key("x", &[]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("日本", "日本語"), 1);
    }

    #[test]
    fn the_reason_names_the_key_and_the_nearest_valid_one() {
        let r = unknown_key("capacty", &["capacity", "url"]);
        assert!(
            r.contains("\"capacty\"") && r.contains("did you mean \"capacity\""),
            "{r}"
        );
        assert!(unknown_key("x", &[]).contains("takes no options"));
    }
}
