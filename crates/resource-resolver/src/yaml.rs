//! Reading YAML (or JSON, a subset) into a `serde_json::Value` tree that remembers its file
//! and the line of each node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use serde_norway::Value as Yaml;

use crate::error::{Location, ResolveError, Result};
use crate::lines::LineIndex;
use crate::path::YamlPath;

/// Where a tree came from: its file (if any) and the line of each node.
#[derive(Clone, Debug, Default)]
pub struct Source {
    file: Option<PathBuf>,
    lines: Arc<LineIndex>,
}

impl Source {
    /// A source for `text`, read from `file` (or from a string when `None`).
    pub fn new(file: Option<PathBuf>, text: &str) -> Self {
        Source {
            file,
            lines: Arc::new(LineIndex::build(text)),
        }
    }

    /// The file.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The location of `path` in this source; `render` is the path text to show (already
    /// scrubbed of secrets).
    pub fn locate(&self, path: &YamlPath, render: String) -> Location {
        Location {
            file: self.file.clone(),
            line: self.lines.line_of(path),
            path: render,
        }
    }
}

/// A parsed YAML document.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub source: Source,
    /// The tree (merge keys `<<` applied).
    pub value: Value,
}

impl Document {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ResolveError::Io {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path.to_owned()))
    }

    /// Parses `text`; `file` is only used in locations.
    pub fn parse(text: &str, file: Option<PathBuf>) -> Result<Self> {
        let source = Source::new(file, text);
        let mut yaml: Yaml = serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            ResolveError::Yaml {
                file: source.file.clone(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }
        })?;
        yaml.apply_merge().map_err(|e| ResolveError::Yaml {
            file: source.file.clone(),
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e.to_string(),
        })?;
        let value = to_json(&yaml, &YamlPath::root()).map_err(|(path, reason)| {
            ResolveError::Unsupported {
                at: Box::new(source.locate(&path, path.to_string())),
                reason,
            }
        })?;
        Ok(Document { source, value })
    }
}

fn to_json(y: &Yaml, path: &YamlPath) -> std::result::Result<Value, (YamlPath, String)> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(Number::from_f64(f).ok_or_else(|| {
                    (
                        path.clone(),
                        format!("the number {n} has no JSON equivalent"),
                    )
                })?)
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &path.index(i)))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Null => "null".to_owned(),
                    _ => {
                        return Err((
                            path.clone(),
                            "a mapping key must be a string, number, boolean or null".into(),
                        ));
                    }
                };
                let child = path.key(&key);
                let value = to_json(v, &child)?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            return Err((
                path.clone(),
                format!("YAML tags are not supported (found {})", t.tag),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_applies_merge_keys() {
        let d = Document::parse(
            "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n3: three\n",
            None,
        )
        .unwrap();
        assert_eq!(d.value["other"], json!({"x": 1, "y": 2}));
        assert_eq!(d.value["3"], json!("three"));
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let err = Document::parse("a: 1\nb: [1, 2\nc: 3\n", Some("cfg/x.yaml".into())).unwrap_err();
        match &err {
            ResolveError::Yaml { file, line, .. } => {
                assert_eq!(file.as_deref(), Some(Path::new("cfg/x.yaml")));
                assert!(line.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("cfg/x.yaml:"), "{err}");
    }

    #[test]
    fn tags_and_complex_keys_are_rejected_with_their_path() {
        let err = Document::parse("a:\n  b: !Secret x\n", Some("t.yaml".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.yaml:2") && err.contains("a.b"), "{err}");
        let err = Document::parse("? [1, 2]\n: x\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mapping key"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        assert!(Document::parse("a: 1\na: 2\n", None).is_err());
    }
}
