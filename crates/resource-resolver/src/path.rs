//! YAML paths (`bot.knowledge_base.vector_store`, `items[0]`) naming a node of a config tree.

use std::fmt;

/// One step of a [`YamlPath`]: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// The path of a node from the document root. The root renders as `<root>`, keys are joined
/// with `.`, indexes are `[i]`, and a key that is not a plain word renders quoted
/// (`servers["a.b"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(Vec<Segment>);

impl YamlPath {
    /// The root path.
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    /// A path built from keys.
    pub fn from_keys<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        YamlPath(keys.into_iter().map(|k| Segment::Key(k.into())).collect())
    }

    /// This path with `key` appended.
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.to_owned()));
        YamlPath(v)
    }

    /// This path with index `i` appended.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(i));
        YamlPath(v)
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path without its last `n` segments (the root when `n >= len`).
    pub fn truncated(&self, len: usize) -> Self {
        YamlPath(self.0[..len.min(self.0.len())].to_vec())
    }
}

fn plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '$'))
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if plain(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_original() {
        assert_eq!(YamlPath::root().to_string(), "<root>");
        let p = YamlPath::from_keys(["bot", "knowledge_base"]).key("vector_store");
        assert_eq!(p.to_string(), "bot.knowledge_base.vector_store");
        assert_eq!(
            YamlPath::from_keys(["items"]).index(0).key("x").to_string(),
            "items[0].x"
        );
        assert_eq!(
            YamlPath::from_keys(["a"]).key("b.c").to_string(),
            "a[\"b.c\"]"
        );
        assert_eq!(p.truncated(1).to_string(), "bot");
    }
}
