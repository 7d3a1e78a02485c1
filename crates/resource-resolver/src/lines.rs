//! A YAML path → line index built from the text, since YAML values carry no positions.
//!
//! It follows block-style structure (indentation, `key:` lines, `- ` items, block scalars,
//! comments, `---`). A node written in flow style (`{a: 1}`, `[1, 2]`) or spread over a
//! multi-line plain scalar is found at the line of its nearest block-style ancestor, so every
//! lookup yields a line, and an exact one for ordinary config files.

use std::collections::HashMap;

use crate::path::YamlPath;

/// Lines of the nodes of one YAML document.
#[derive(Clone, Debug, Default)]
pub struct LineIndex {
    lines: HashMap<YamlPath, usize>,
}

#[derive(Debug)]
struct Frame {
    col: usize,
    seq: bool,
    path: YamlPath,
    count: usize,
    last_key: Option<YamlPath>,
}

/// Splits `key: rest` (plain or quoted key). Returns the key and what follows the colon.
fn split_key(content: &str) -> Option<(String, &str)> {
    let first = content.chars().next()?;
    if first == '"' || first == '\'' {
        let close = content[1..].find(first)? + 1;
        let key = content[1..close].to_owned();
        let after = content[close + 1..].trim_start();
        let rest = after.strip_prefix(':')?;
        if !rest.is_empty() && !rest.starts_with(' ') && !rest.starts_with('\t') {
            return None;
        }
        return Some((key, rest.trim()));
    }
    if matches!(
        first,
        '#' | '{' | '[' | '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' | '?'
    ) {
        return None;
    }
    let bytes = content.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'#' && i > 0 && bytes[i - 1] == b' ' {
            return None;
        }
        if bytes[i] == b':'
            && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
        {
            let key = content[..i].trim_end().to_owned();
            return Some((key, content[i + 1..].trim()));
        }
    }
    None
}

fn strip_comment(rest: &str) -> &str {
    if rest.starts_with('#') {
        return "";
    }
    match rest.find(" #") {
        Some(i) => rest[..i].trim_end(),
        None => rest,
    }
}

fn is_block_scalar(rest: &str) -> bool {
    let r = strip_comment(rest);
    let mut chars = r.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| c == '+' || c == '-' || c.is_ascii_digit())
}

impl LineIndex {
    /// Indexes the first document of `text`.
    pub fn build(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut skip_deeper_than: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start_matches(' ');
            let col = raw.len() - trimmed.len();
            if trimmed.trim().is_empty() {
                continue;
            }
            if let Some(limit) = skip_deeper_than {
                if col > limit {
                    continue;
                }
                skip_deeper_than = None;
            }
            if trimmed.starts_with('#') || trimmed.starts_with('%') {
                continue;
            }
            if col == 0 && (trimmed.starts_with("---") || trimmed.starts_with("...")) {
                if lines.is_empty() && trimmed.starts_with("---") {
                    continue;
                }
                break;
            }
            // Leave the containers this line is not inside of.
            while let Some(top) = stack.last() {
                let is_item = trimmed == "-" || trimmed.starts_with("- ");
                if top.col > col || (top.col == col && top.seq && !is_item) {
                    stack.pop();
                } else {
                    break;
                }
            }
            let mut col = col;
            let mut content = trimmed;
            let mut pending: Option<YamlPath> = None;
            loop {
                let is_item = content == "-" || content.starts_with("- ");
                if is_item {
                    let continues = matches!(stack.last(), Some(t) if t.seq && t.col == col);
                    let item = if continues {
                        let top = stack.last_mut().expect("checked");
                        top.count += 1;
                        top.path.index(top.count)
                    } else {
                        let parent = pending
                            .take()
                            .or_else(|| stack.last().and_then(|t| t.last_key.clone()))
                            .unwrap_or_default();
                        stack.push(Frame {
                            col,
                            seq: true,
                            path: parent.clone(),
                            count: 0,
                            last_key: None,
                        });
                        parent.index(0)
                    };
                    lines.entry(item.clone()).or_insert(line_no);
                    let after = &content[1..];
                    let inner = after.trim_start_matches(' ');
                    if inner.is_empty() {
                        // The item's content starts on the next lines: it becomes the parent.
                        if let Some(top) = stack.last_mut() {
                            top.last_key = Some(item);
                        }
                        break;
                    }
                    col += 1 + (after.len() - inner.len());
                    content = inner;
                    pending = Some(item);
                    continue;
                }
                if let Some((key, rest)) = split_key(content) {
                    let same_map = matches!(stack.last(), Some(t) if !t.seq && t.col == col);
                    if !same_map {
                        let parent = pending
                            .take()
                            .or_else(|| stack.last().and_then(|t| t.last_key.clone()))
                            .unwrap_or_default();
                        stack.push(Frame {
                            col,
                            seq: false,
                            path: parent,
                            count: 0,
                            last_key: None,
                        });
                    }
                    let top = stack.last_mut().expect("pushed");
                    let path = top.path.key(&key);
                    lines.entry(path.clone()).or_insert(line_no);
                    top.last_key = Some(path);
                    if is_block_scalar(rest) {
                        skip_deeper_than = Some(col);
                    }
                }
                break;
            }
        }
        LineIndex { lines }
    }

    /// The line of `path`, or of its nearest indexed ancestor (line 1 for the root).
    pub fn line_of(&self, path: &YamlPath) -> Option<usize> {
        for len in (1..=path.len()).rev() {
            if let Some(l) = self.lines.get(&path.truncated(len)) {
                return Some(*l);
            }
        }
        self.lines.values().min().copied().or(Some(1))
    }

    /// The line of exactly `path`, if indexed.
    pub fn exact(&self, path: &YamlPath) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment
name: development
resources:
  databases:
    registry:
      backend: sqlite   # the default
      path: \"${DATA_DIR:./data}/registry.sqlite3\"
  \"event_buses\":
    default: {backend: memory}
notes: |
  key: not a key
  - not an item
list:
- a
- b: 1
  c: 2
-
  d: 3
nested:
  - - x
    - y
after: true
";

    fn line(idx: &LineIndex, keys: &[&str]) -> Option<usize> {
        let mut p = YamlPath::root();
        for k in keys {
            p = match k.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(k),
            };
        }
        idx.exact(&p)
    }

    #[test]
    fn block_structure() {
        let idx = LineIndex::build(DOC);
        assert_eq!(line(&idx, &["name"]), Some(2));
        assert_eq!(
            line(&idx, &["resources", "databases", "registry", "backend"]),
            Some(6)
        );
        assert_eq!(
            line(&idx, &["resources", "databases", "registry", "path"]),
            Some(7)
        );
        assert_eq!(
            line(&idx, &["resources", "event_buses", "default"]),
            Some(9)
        );
        assert_eq!(line(&idx, &["notes"]), Some(10));
        assert_eq!(line(&idx, &["notes", "key"]), None);
        assert_eq!(line(&idx, &["list", "0"]), Some(14));
        assert_eq!(line(&idx, &["list", "1", "b"]), Some(15));
        assert_eq!(line(&idx, &["list", "1", "c"]), Some(16));
        assert_eq!(line(&idx, &["list", "2", "d"]), Some(18));
        assert_eq!(line(&idx, &["nested", "0", "1"]), Some(21));
        assert_eq!(line(&idx, &["after"]), Some(22));
    }

    #[test]
    fn flow_nodes_fall_back_to_their_block_ancestor() {
        let idx = LineIndex::build(DOC);
        let p = YamlPath::from_keys(["resources", "event_buses", "default", "backend"]);
        assert_eq!(idx.exact(&p), None);
        assert_eq!(idx.line_of(&p), Some(9));
        assert_eq!(idx.line_of(&YamlPath::root()), Some(2));
    }
}
