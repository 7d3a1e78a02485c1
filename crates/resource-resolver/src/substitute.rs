//! `${VAR}` substitution over a whole tree: keys and string values, recursively.

use serde_json::{Map, Value};

use crate::error::{Location, ResolveError, Result};
use crate::path::YamlPath;
use crate::placeholder::{Missing, substitute_str};
use crate::secrets::Secrets;
use crate::vars::VarSource;
use crate::yaml::Source;

/// Deepest nesting any walk of this crate accepts.
pub const MAX_DEPTH: usize = 256;

/// A placeholder left in place by lenient substitution, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnresolvedVar {
    /// The variable.
    pub var: String,
    /// The `${VAR:?message}` text, if any.
    pub message: Option<String>,
    /// Where.
    pub at: Location,
}

/// State of one substitution pass.
pub(crate) struct Substituter<'a> {
    pub vars: &'a dyn VarSource,
    pub missing: Missing,
    pub source: &'a Source,
    pub secrets: Secrets,
    pub unresolved: Vec<UnresolvedVar>,
    collecting: bool,
}

impl<'a> Substituter<'a> {
    pub fn new(vars: &'a dyn VarSource, missing: Missing, source: &'a Source) -> Self {
        Substituter {
            vars,
            missing,
            source,
            secrets: Secrets::default(),
            unresolved: Vec::new(),
            collecting: false,
        }
    }

    fn locate(&self, path: &YamlPath) -> Location {
        self.source
            .locate(path, self.secrets.scrub(&path.to_string()))
    }

    /// Substitutes one string found at `path`.
    pub fn string(&mut self, s: &str, path: &YamlPath) -> Result<String> {
        let lookup = |name: &str| self.vars.var(name);
        match substitute_str(s, &lookup, self.missing) {
            Ok(r) => {
                for (var, value) in &r.used {
                    self.secrets.add(var, value);
                }
                for u in r.unresolved {
                    if !self.collecting {
                        tracing::warn!(var = %u.var, "environment variable not set; placeholder kept");
                    }
                    let at = self.locate(path);
                    self.unresolved.push(UnresolvedVar {
                        var: u.var,
                        message: u.message,
                        at,
                    });
                }
                Ok(r.text)
            }
            Err(u) => Err(ResolveError::MissingVariable {
                var: u.var,
                message: u.message.map(|m| self.secrets.scrub(&m)),
                at: Box::new(self.locate(path)),
                others: Vec::new(),
            }),
        }
    }

    /// Like [`Substituter::tree`], but in strict mode reports the missing variable that comes
    /// first in the document (by line), listing the other missing ones too.
    pub fn tree_all(&mut self, value: &Value, path: &YamlPath) -> Result<Value> {
        if self.missing == Missing::Keep {
            return self.tree(value, path);
        }
        self.missing = Missing::Keep;
        self.collecting = true;
        let before = self.unresolved.len();
        let result = self.tree(value, path);
        self.missing = Missing::Error;
        self.collecting = false;
        let v = result?;
        let mut found: Vec<UnresolvedVar> = self.unresolved.drain(before..).collect();
        if found.is_empty() {
            return Ok(v);
        }
        found.sort_by(|a, b| (a.at.line, &a.at.path).cmp(&(b.at.line, &b.at.path)));
        let first = found.remove(0);
        let mut others: Vec<String> = Vec::new();
        for u in found {
            if u.var != first.var && !others.contains(&u.var) {
                others.push(u.var);
            }
        }
        Err(ResolveError::MissingVariable {
            var: first.var,
            message: first.message,
            at: Box::new(first.at),
            others,
        })
    }

    /// Substitutes every key and string of `value` (found at `path`).
    pub fn tree(&mut self, value: &Value, path: &YamlPath) -> Result<Value> {
        if path.len() > MAX_DEPTH {
            return Err(ResolveError::TooDeep {
                limit: MAX_DEPTH,
                at: Box::new(self.locate(path)),
            });
        }
        Ok(match value {
            Value::String(s) => Value::String(self.string(s, path)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.tree(v, &path.index(i)))
                    .collect::<Result<_>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let child = path.key(k);
                    let key = self.string(k, &child)?;
                    let v = self.tree(v, &child)?;
                    out.insert(key, v);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::VarMap;
    use crate::yaml::Document;
    use serde_json::json;

    #[test]
    fn keys_and_values_everywhere_but_not_other_scalars() {
        let doc = Document::parse(
            "a: ${A}\n${K:key}: [x, '${A}-${B:2}', 3, true]\n",
            Some("f.yaml".into()),
        )
        .unwrap();
        let vars = VarMap::new().with("A", "one");
        let mut s = Substituter::new(&vars, Missing::Error, &doc.source);
        let v = s.tree(&doc.value, &YamlPath::root()).unwrap();
        assert_eq!(v, json!({"a": "one", "key": ["x", "one-2", 3, true]}));
        assert_eq!(s.secrets.vars(), ["A"]);
    }

    #[test]
    fn missing_variable_names_file_line_and_path() {
        let doc = Document::parse(
            "name: prod\nresources:\n  databases:\n    registry:\n      host: ${RDS_HOST}\n",
            Some("configs/environments/production.yaml".into()),
        )
        .unwrap();
        let vars = VarMap::new();
        let mut s = Substituter::new(&vars, Missing::Error, &doc.source);
        let err = s.tree(&doc.value, &YamlPath::root()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("RDS_HOST")
                && msg.contains("configs/environments/production.yaml:5")
                && msg.contains("resources.databases.registry.host"),
            "{msg}"
        );
    }

    #[test]
    fn lenient_substitution_records_what_it_left() {
        let doc = Document::parse("a:\n  b: x${NOPE}\n", None).unwrap();
        let vars = VarMap::new();
        let mut s = Substituter::new(&vars, Missing::Keep, &doc.source);
        let v = s.tree(&doc.value, &YamlPath::root()).unwrap();
        assert_eq!(v, json!({"a": {"b": "x${NOPE}"}}));
        assert_eq!(s.unresolved.len(), 1);
        assert_eq!(s.unresolved[0].var, "NOPE");
        assert_eq!(s.unresolved[0].at.line, Some(2));
        assert_eq!(s.unresolved[0].at.path, "a.b");
    }
}
