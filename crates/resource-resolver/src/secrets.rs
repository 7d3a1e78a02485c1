//! Values substituted from the environment, and scrubbing them out of messages and `Debug`.
//!
//! Every value taken from a variable (not a default) is treated as a secret: wherever it
//! would appear in an error message or `Debug` output it is replaced by its `${VAR}`
//! placeholder. Its percent-encoded form (as it appears inside URLs) is replaced too.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// The set of `(variable, value)` pairs substituted so far.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `(needle, replacement)`, longest needle first.
    needles: Vec<(String, String)>,
    vars: Vec<String>,
}

impl Secrets {
    /// Records that `value` was taken from `var`.
    pub fn add(&mut self, var: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        let placeholder = format!("${{{var}}}");
        let encoded = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
        for needle in [value.to_owned(), encoded] {
            if !self.needles.iter().any(|(n, _)| *n == needle) {
                self.needles.push((needle, placeholder.clone()));
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        if !self.vars.iter().any(|v| v == var) {
            self.vars.push(var.to_owned());
        }
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for (n, r) in &other.needles {
            if !self.needles.iter().any(|(m, _)| m == n) {
                self.needles.push((n.clone(), r.clone()));
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        for v in &other.vars {
            if !self.vars.contains(v) {
                self.vars.push(v.clone());
            }
        }
    }

    /// The variables whose values were substituted.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    /// Whether nothing was substituted from the environment.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced by its placeholder.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (needle, placeholder) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), placeholder);
            }
        }
        out
    }

    /// A copy of `value` with every string (and key) scrubbed.
    pub fn scrub_value(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.scrub(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.scrub_value(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.scrub(k), self.scrub_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("vars", &self.vars).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrubs_plain_and_url_encoded_values() {
        let mut s = Secrets::default();
        s.add("DB_PASSWORD", "p@ss word");
        s.add("EMPTY", "");
        let msg = "auth failed for postgres://u:p%40ss%20word@h and 'p@ss word'";
        let out = s.scrub(msg);
        assert!(!out.contains("p@ss") && !out.contains("p%40ss"), "{out}");
        assert!(out.contains("${DB_PASSWORD}"));
        assert_eq!(s.vars(), ["DB_PASSWORD"]);
        assert!(!format!("{s:?}").contains("p@ss"));
    }

    #[test]
    fn longest_value_first_and_values_in_trees() {
        let mut s = Secrets::default();
        s.add("SHORT", "abc");
        s.add("LONG", "abcdef");
        assert_eq!(s.scrub("xabcdefx abc"), "x${LONG}x ${SHORT}");
        let v = s.scrub_value(&json!({"k": ["abc", 1], "abcdef": true}));
        assert_eq!(v, json!({"k": ["${SHORT}", 1], "${LONG}": true}));
    }
}
