//! Portability check: does a config hold machine-local values (home directories, loopback
//! addresses) that would break it in another environment?
//!
//! Unlike the original, which regex-scanned the Python repr of the whole config, this walks every string leaf and every object key and judges each on its
//! own: an `${VAR...}` placeholder exempts only what follows it in the same string, URL paths
//! such as `https://api/Users/123` are not home directories, any `127.x.y.z`, bare `localhost`,
//! `::1` and `~/` are caught, each finding is reported once with its path, and a `$resource`
//! reference elsewhere does not make a config portable.

use std::fmt;

use serde_json::Value;

/// One machine-local value found in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortabilityIssue {
    /// Where: a path such as `bot.llm.url`, `items[2]`, or `storage (key)` for an object key.
    pub path: String,
    /// What kind of value, e.g. `Linux home directory`.
    pub description: &'static str,
    /// The offending text.
    pub matched: String,
}

impl fmt::Display for PortabilityIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Found {}: '{}' at {}",
            self.description, self.matched, self.path
        )
    }
}

/// A config that is not portable, with every issue found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PortabilityError {
    /// The issues, in document order.
    pub issues: Vec<PortabilityIssue>,
}

impl fmt::Display for PortabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "Config appears to contain resolved local values that would break portability. \
             Store portable config with $resource references instead.\nIssues found:",
        )?;
        for issue in &self.issues {
            write!(f, "\n  - {issue}")?;
        }
        Ok(())
    }
}

/// Every portability issue of `config`, in document order, each (path, text) once.
pub fn portability_issues(config: &Value) -> Vec<PortabilityIssue> {
    let mut issues = Vec::new();
    walk(config, &mut String::new(), &mut issues);
    issues.dedup();
    issues
}

/// `Ok(())` when `config` is portable, otherwise the issues.
pub fn validate_portability(config: &Value) -> Result<(), PortabilityError> {
    let issues = portability_issues(config);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(PortabilityError { issues })
    }
}

/// Whether `config` has no portability issue. A `$resource` reference does not excuse a
/// machine-local value elsewhere.
pub fn is_portable(config: &Value) -> bool {
    portability_issues(config).is_empty()
}

/// Whether any object in `config` has a `$resource` key.
pub fn has_resource_references(config: &Value) -> bool {
    match config {
        Value::Object(m) => m.contains_key("$resource") || m.values().any(has_resource_references),
        Value::Array(items) => items.iter().any(has_resource_references),
        _ => false,
    }
}

fn walk(value: &Value, path: &mut String, out: &mut Vec<PortabilityIssue>) {
    match value {
        Value::String(s) => scan(s, path, out),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                if k.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$')
                {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                } else {
                    path.push_str(&format!("[{k:?}]"));
                }
                let key_path = format!("{path} (key)");
                scan(k, &key_path, out);
                walk(v, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn scan(s: &str, path: &str, out: &mut Vec<PortabilityIssue>) {
    let safe_from = placeholder_start(s);
    let mut found: Vec<(usize, &'static str, String)> = Vec::new();
    home_dirs(s, &mut found);
    hosts(s, &mut found);
    found.sort_by_key(|(pos, ..)| *pos);
    for (pos, description, matched) in found {
        if safe_from.is_some_and(|p| p < pos) {
            continue;
        }
        let issue = PortabilityIssue {
            path: if path.is_empty() {
                "$".to_owned()
            } else {
                path.to_owned()
            },
            description,
            matched,
        };
        if !out.contains(&issue) {
            out.push(issue);
        }
    }
}

/// Where the first `${...}` or `$NAME` placeholder starts.
fn placeholder_start(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b'$'
            && b.get(i + 1)
                .is_some_and(|&c| c == b'{' || c.is_ascii_uppercase() || c == b'_')
    })
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn word_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() && is_word(b[i]) {
        i += 1;
    }
    i
}

/// Whether position `pos` lies in the path part of a URL (`scheme://host/...`).
fn in_url_path(s: &str, pos: usize) -> bool {
    let token_start = s[..pos]
        .rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .map_or(0, |i| i + 1);
    s[token_start..pos].contains("://")
}

fn home_dirs(s: &str, found: &mut Vec<(usize, &'static str, String)>) {
    let b = s.as_bytes();
    for (prefix, description) in [
        ("/Users/", "macOS home directory"),
        ("/home/", "Linux home directory"),
    ] {
        for (pos, _) in s.match_indices(prefix) {
            let end = word_end(b, pos + prefix.len());
            if end > pos + prefix.len() && !in_url_path(s, pos) {
                found.push((pos, description, s[pos..end].to_owned()));
            }
        }
    }
    // Windows: a drive letter, one or more separators, "Users", separators, a name.
    for i in 0..b.len().saturating_sub(2) {
        if !(b[i].is_ascii_alphabetic() && b[i + 1] == b':') || (i > 0 && is_word(b[i - 1])) {
            continue;
        }
        let mut j = i + 2;
        let seps = |j: &mut usize| {
            let start = *j;
            while *j < b.len() && (b[*j] == b'\\' || b[*j] == b'/') {
                *j += 1;
            }
            *j > start
        };
        if !seps(&mut j) || !s[j..].to_ascii_lowercase().starts_with("users") {
            continue;
        }
        j += 5;
        if !seps(&mut j) {
            continue;
        }
        let end = word_end(b, j);
        if end > j {
            found.push((i, "Windows home directory", s[i..end].to_owned()));
        }
    }
    // A leading `~/`, or one after whitespace or `=`.
    for (pos, _) in s.match_indices("~/") {
        if pos == 0 || matches!(b[pos - 1], b' ' | b'\t' | b'=' | b':') {
            found.push((pos, "home-relative path", "~/".to_owned()));
        }
    }
}

fn hosts(s: &str, found: &mut Vec<(usize, &'static str, String)>) {
    let b = s.as_bytes();
    let lower = s.to_ascii_lowercase();
    let host_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
    for (pos, _) in lower.match_indices("localhost") {
        let end = pos + "localhost".len();
        if (pos > 0 && host_char(b[pos - 1])) || (end < b.len() && host_char(b[end])) {
            continue;
        }
        if b.get(end) == Some(&b':') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            let mut e = end + 1;
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            found.push((pos, "localhost with port", s[pos..e].to_owned()));
        } else {
            found.push((pos, "localhost", s[pos..end].to_owned()));
        }
    }
    // Dotted quads: 127.x.y.z is loopback, 0.0.0.0 is every interface.
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let token = s[i..j].trim_end_matches('.');
            let parts: Vec<&str> = token.split('.').collect();
            if parts.len() == 4
                && parts.iter().all(|p| {
                    !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|n| n <= 255)
                })
            {
                if parts[0] == "127" {
                    found.push((i, "localhost IP", token.to_owned()));
                } else if token == "0.0.0.0" {
                    found.push((i, "all interfaces IP", token.to_owned()));
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    // IPv6 loopback `::1` as a whole token.
    for (pos, _) in s.match_indices("::1") {
        let end = pos + 3;
        let before_ok = pos == 0 || !(b[pos - 1].is_ascii_hexdigit() || b[pos - 1] == b':');
        let after_ok = end == b.len() || !(b[end].is_ascii_hexdigit() || b[end] == b':');
        if before_ok && after_ok {
            found.push((pos, "IPv6 localhost", "::1".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(v: Value) -> Vec<String> {
        portability_issues(&v)
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn portable_configs_pass() {
        for ok in [
            json!({"path": "./data/vectors"}),
            json!({"path": "/var/data/app"}),
            json!({"url": "${DATABASE_URL}"}),
            json!({"path": "${DATA_PATH:/default/path}"}),
            json!({"db": {"$resource": "registry", "type": "databases"}}),
            json!({"api": "https://api.example.com/Users/123"}),
            json!({"host": "localhost.example.com", "n": 127}),
        ] {
            assert!(is_portable(&ok), "{ok}: {:?}", texts(ok.clone()));
        }
    }

    #[test]
    fn each_local_value_is_flagged_with_its_path() {
        let cfg = json!({
            "a": "/Users/alice/x", "b": ["/home/bob/data"], "c": "C:\\Users\\carol\\f",
            "d": {"url": "http://localhost:8080/x"}, "e": "127.0.0.1", "f": "0.0.0.0:80",
            "g": "http://localhost/x", "h": "127.0.0.10", "i": "[::1]:80", "j": "~/models",
            "/home/dave": 1
        });
        let t = texts(cfg);
        let want = [
            "Found macOS home directory: '/Users/alice' at a",
            "Found Linux home directory: '/home/bob' at b[0]",
            "Found Windows home directory: 'C:\\Users\\carol' at c",
            "Found localhost with port: 'localhost:8080' at d.url",
            "Found localhost IP: '127.0.0.1' at e",
            "Found all interfaces IP: '0.0.0.0' at f",
            "Found localhost: 'localhost' at g",
            "Found localhost IP: '127.0.0.10' at h",
            "Found IPv6 localhost: '::1' at i",
            "Found home-relative path: '~/' at j",
            "Found Linux home directory: '/home/dave' at [\"/home/dave\"] (key)",
        ];
        for w in want {
            assert!(t.iter().any(|x| x == w), "missing {w:?} in {t:#?}");
        }
        assert_eq!(t.len(), want.len(), "{t:#?}");
    }

    #[test]
    fn placeholder_exempts_only_its_own_string_and_resource_does_not_excuse() {
        let cfg = json!({"a": "${HOME:/home/u}/x", "b": "/home/u/y", "r": {"$resource": "x"}});
        let issues = portability_issues(&cfg);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "b");
        assert!(has_resource_references(&cfg));
        assert!(!is_portable(&cfg));
        assert!(!has_resource_references(
            &json!({"note": "$resource is a word here"})
        ));
    }

    #[test]
    fn duplicates_are_reported_once_and_error_text_matches_original() {
        let cfg = json!({"a": "127.0.0.1 and 127.0.0.1"});
        let err = validate_portability(&cfg).unwrap_err();
        assert_eq!(err.issues.len(), 1);
        let msg = err.to_string();
        for w in ["portable", "$resource", "Issues found", "localhost IP"] {
            assert!(msg.contains(w), "{msg}");
        }
    }
}
