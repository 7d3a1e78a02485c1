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

/// The largest config file read (a config is kilobytes; this refuses `/dev/zero` and runaway
/// files before they fill memory).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The deepest nesting of mappings and lists a config may have; deeper text is refused by a
/// linear pre-scan before the YAML parser sees it (which would spend seconds on 40,000 levels).
pub const MAX_CONFIG_DEPTH: usize = 64;

impl Document {
    /// Reads and parses `path`: a regular file of at most [`MAX_CONFIG_BYTES`].
    pub fn read(path: &Path) -> Result<Self> {
        let io = |source: std::io::Error| ResolveError::Io {
            file: path.to_owned(),
            source,
        };
        let invalid = |msg: String| io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".to_owned()));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
            &mut text,
        )
        .map_err(io)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(invalid(format!(
                "larger than the {} MiB limit of a config file",
                MAX_CONFIG_BYTES / (1024 * 1024)
            )));
        }
        Self::parse(&text, Some(path.to_owned()))
    }

    /// Parses `text`; `file` is only used in locations.
    pub fn parse(text: &str, file: Option<PathBuf>) -> Result<Self> {
        if let Some((line, column)) = too_deep(text, MAX_CONFIG_DEPTH) {
            return Err(ResolveError::Yaml {
                file,
                line: Some(line),
                column: Some(column),
                message: format!(
                    "mappings and lists nested deeper than {MAX_CONFIG_DEPTH} levels; refused before parsing"
                ),
            });
        }
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

/// Where (1-based line and column) `text` first nests deeper than `max`, counting flow
/// brackets (`[`, `{`, outside quotes and comments) and, for block style, the indentation levels
/// open plus the `- ` entries that start a line. Linear in the text; a cheap over-estimate is
/// fine (a real config is a few levels deep).
fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if flow == 0 && !body.is_empty() && !body.starts_with('#') {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut dashes = 0;
            let mut rest = body;
            while let Some(r) = rest.strip_prefix("- ") {
                dashes += 1;
                rest = r.trim_start_matches(' ');
            }
            if indents.len() + dashes > max {
                return Some((n + 1, indent + 1));
            }
        }
        let (mut quote, mut prev) = (None::<char>, ' ');
        for (col, c) in body.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q && !(q == '"' && prev == '\\') => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if matches!(prev, ' ' | '[' | '{' | ',' | ':') => {
                    quote = Some(c)
                }
                (None, '#') if prev == ' ' || col == 0 => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if flow + indents.len() > max {
                        return Some((n + 1, indent + col + 1));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    None
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
    fn pathological_nesting_is_refused_before_parsing() {
        // 40,000 levels of flow lists in 80 KB: the parser alone takes seconds on this.
        let deep = format!("a: {}1{}\n", "[".repeat(40_000), "]".repeat(40_000));
        let err = Document::parse(&deep, Some("deep.yaml".into())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("deep.yaml:1:") && msg.contains("nested deeper than 64"),
            "{msg}"
        );
        // Deep block style: one level per indentation step, and `- - -` on one line.
        let mut block = String::new();
        for i in 0..80 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let msg = Document::parse(&block, None).unwrap_err().to_string();
        assert!(msg.contains("line 65:"), "{msg}");
        let dashes = format!("x:\n  {}1\n", "- ".repeat(100));
        assert!(Document::parse(&dashes, None).is_err());
        // Brackets inside quotes and comments do not count; ordinary depth parses.
        let fine = format!(
            "a: \"{}\"\nb: '{}' # {}\nc: [[1, 2], {{x: [3]}}]\n",
            "[".repeat(200),
            "{".repeat(200),
            "[".repeat(200)
        );
        let d = Document::parse(&fine, None).unwrap();
        assert_eq!(d.value["c"], json!([[1, 2], {"x": [3]}]));
    }

    #[test]
    fn oversized_and_special_files_are_refused_naming_the_file() {
        let err = Document::read(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/zero") && err.contains("not a regular file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let line = "k: v\n".repeat(1024 * 1024);
        std::fs::write(&big, line).unwrap();
        let err = Document::read(&big).unwrap_err().to_string();
        assert!(err.contains("big.yaml") && err.contains("4 MiB"), "{err}");
    }

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
