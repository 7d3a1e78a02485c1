//! What to ingest and how: the knowledge base's own config file (`knowledge_base.yaml|yml|json`,
//! the original's format and keys), chunking settings, and the limits that keep one hostile file
//! from exhausting memory.
//!
//! Invariants:
//! - Every key is checked when the config is read: an unknown key is an error naming the file,
//!   the key and the nearest valid one; a key of the original that dynreg does not implement
//!   (a Jinja2 `text_template`, a quality filter) is refused, never silently ignored.
//! - The effective chunking of a file is `default_chunking` updated with its pattern's
//!   `chunking` — the knowledge base's `default_chunking` is honoured (the original lets its
//!   RAG layer's own default override it).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::glob::Glob;
use dynreg_resource_resolver::keys::unknown_key;

/// Where the knowledge base config is looked for, in order: the first that exists wins, so
/// the root wins over `_metadata/`.
pub const CONFIG_FILES: &[&str] = &[
    "knowledge_base.yaml",
    "knowledge_base.yml",
    "knowledge_base.json",
    "_metadata/knowledge_base.yaml",
    "_metadata/knowledge_base.yml",
    "_metadata/knowledge_base.json",
];

/// The patterns used when a config names none: every supported file type, anywhere.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "**/*.md",
    "**/*.markdown",
    "**/*.txt",
    "**/*.yaml",
    "**/*.yml",
    "**/*.csv",
    "**/*.json",
    "**/*.jsonl",
    "**/*.ndjson",
    "**/*.md.gz",
    "**/*.markdown.gz",
    "**/*.txt.gz",
    "**/*.yaml.gz",
    "**/*.yml.gz",
    "**/*.csv.gz",
    "**/*.json.gz",
    "**/*.jsonl.gz",
    "**/*.ndjson.gz",
];

/// Where headings go in a markdown chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadingInclusion {
    /// In the metadata (`heading_path`) and, by the original's rule, as a prefix of the
    /// embedding text; the chunk text is the body alone. The default.
    #[default]
    InMetadata,
    /// As markdown heading lines at the top of the chunk text (and so of the embedding text).
    InText,
    /// Both: heading lines in the text, and the heading prefix in the embedding text.
    Both,
    /// Nowhere but the metadata: the embedding text is the body alone.
    None,
}

impl HeadingInclusion {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_metadata" => Self::InMetadata,
            "in_text" => Self::InText,
            "both" => Self::Both,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// How a file is cut into chunks. Keys as in the original's `default_chunking`, plus
/// `chunk_overlap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkingConfig {
    /// The largest chunk, in characters (default 500). Prose is split at the best boundary
    /// below it; code blocks, tables and lists are kept whole when they fit and split by lines
    /// when they do not.
    pub max_chunk_size: usize,
    /// Characters a split piece repeats from the end of the previous one (default 0).
    pub chunk_overlap: usize,
    /// Where headings go (default `in_metadata`).
    pub heading_inclusion: HeadingInclusion,
    /// Blocks under one heading are packed into chunks up to `max_chunk_size` (default true);
    /// false gives one chunk per block.
    pub combine_under_heading: bool,
    /// When false the embedding text is the chunk text without the heading prefix.
    pub generate_embeddings: bool,
    /// JSON: the separator of flattened metadata keys (default `.`).
    pub nested_separator: String,
    /// JSON: `key: value` lines rather than bare values (default true).
    pub include_field_names: bool,
    /// JSON: leave id, hash and timestamp fields out of the text (default true).
    pub skip_technical_fields: bool,
    /// JSON: the fields that make the text, in order (default: the original's rule).
    pub text_fields: Option<Vec<String>>,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig {
            max_chunk_size: 500,
            chunk_overlap: 0,
            heading_inclusion: HeadingInclusion::InMetadata,
            combine_under_heading: true,
            generate_embeddings: true,
            nested_separator: ".".into(),
            include_field_names: true,
            skip_technical_fields: true,
            text_fields: None,
        }
    }
}

const CHUNKING_KEYS: &[&str] = &[
    "max_chunk_size",
    "chunk_overlap",
    "heading_inclusion",
    "combine_under_heading",
    "generate_embeddings",
    "nested_separator",
    "include_field_names",
    "skip_technical_fields",
    "array_handling",
    "chunker",
    "text_fields",
];

impl ChunkingConfig {
    /// Reads a chunking map (the original's keys); `Err` names the key and what is wrong.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, String> {
        let mut c = ChunkingConfig::default();
        for (key, value) in map {
            match key.as_str() {
                "max_chunk_size" => c.max_chunk_size = positive(key, value)?,
                "chunk_overlap" => c.chunk_overlap = count(key, value)?,
                "heading_inclusion" => {
                    c.heading_inclusion = value
                        .as_str()
                        .and_then(HeadingInclusion::parse)
                        .ok_or_else(|| {
                            format!("{key}: {value} is not one of in_metadata, in_text, both, none")
                        })?
                }
                "combine_under_heading" => c.combine_under_heading = boolean(key, value)?,
                "generate_embeddings" => c.generate_embeddings = boolean(key, value)?,
                "nested_separator" => c.nested_separator = string(key, value)?,
                "include_field_names" => c.include_field_names = boolean(key, value)?,
                "skip_technical_fields" => c.skip_technical_fields = boolean(key, value)?,
                "array_handling" => {
                    if value.as_str() != Some("expand") {
                        return Err(format!("{key}: only \"expand\" is supported, got {value}"));
                    }
                }
                "chunker" => {
                    if !matches!(value.as_str(), Some("markdown_tree" | "markdown")) {
                        return Err(format!(
                            "{key}: only \"markdown_tree\" is supported, got {value}"
                        ));
                    }
                }
                "text_fields" => c.text_fields = Some(strings(key, value)?),
                "transforms" | "quality_filter" => {
                    return Err(format!("{key} is not supported by dynreg's chunker"));
                }
                other => return Err(unknown_key(other, CHUNKING_KEYS)),
            }
        }
        if c.chunk_overlap >= c.max_chunk_size {
            return Err(format!(
                "chunk_overlap ({}) must be smaller than max_chunk_size ({})",
                c.chunk_overlap, c.max_chunk_size
            ));
        }
        Ok(c)
    }
}

/// Bounds on what one file may cost. Every limit names itself in the error of a file that
/// exceeds it; the defaults are generous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest stored file (default 4 GiB): checked against the index before reading.
    pub max_file_bytes: u64,
    /// The most bytes one `.gz` file may decompress to (default 16 GiB); reading stops there.
    pub max_decompressed_bytes: u64,
    /// The largest decompressed/compressed ratio once past 16 MiB decompressed (default 1,000):
    /// a gzip bomb is refused after reading at most `ratio ×` what it read compressed.
    pub max_compression_ratio: u64,
    /// The largest document parsed as a whole (markdown, text, YAML, a JSON tree), after
    /// decompression (default 64 MiB). CSV and JSONL are streamed and have no such bound.
    pub max_document_bytes: u64,
    /// The longest line of a JSONL file or record of a CSV file (default 16 MiB).
    pub max_line_bytes: u64,
    /// The most chunks one file may give (default 100,000,000: a 1 GiB JSONL file of short
    /// records gives about 5 million).
    pub max_chunks_per_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 4 << 30,
            max_decompressed_bytes: 16 << 30,
            max_compression_ratio: 1000,
            max_document_bytes: 64 << 20,
            max_line_bytes: 16 << 20,
            max_chunks_per_file: 100_000_000,
        }
    }
}

/// One `patterns` entry of a knowledge base config.
#[derive(Debug, Clone)]
pub struct FilePattern {
    /// The glob.
    pub glob: Glob,
    /// Disabled patterns neither enumerate nor configure files.
    pub enabled: bool,
    /// The pattern's chunking overrides, as written.
    pub chunking: Option<Map<String, Value>>,
    /// Effective chunking (`default_chunking` updated with `chunking`).
    pub effective: ChunkingConfig,
    /// Metadata added to this pattern's chunks.
    pub metadata: Map<String, Value>,
}

/// A knowledge base's ingestion config, the original's `KnowledgeBaseConfig`.
#[derive(Debug, Clone)]
pub struct KnowledgeBaseConfig {
    /// The knowledge base's name (defaults to the domain id).
    pub name: String,
    /// Where it was read from, if from a file.
    pub file: Option<String>,
    /// `default_chunking`, as written.
    pub default_chunking: Map<String, Value>,
    /// `default_chunking` read.
    pub chunking: ChunkingConfig,
    /// The patterns, in order; the first enabled one that matches a file configures it.
    pub patterns: Vec<FilePattern>,
    /// Files matching any of these are skipped.
    pub exclude_patterns: Vec<Glob>,
    /// Metadata added to every chunk.
    pub default_metadata: Map<String, Value>,
}

const CONFIG_KEYS: &[&str] = &[
    "name",
    "default_chunking",
    "patterns",
    "exclude_patterns",
    "default_metadata",
    "default_quality_filter",
];
const PATTERN_KEYS: &[&str] = &[
    "pattern",
    "enabled",
    "chunking",
    "text_fields",
    "metadata",
    "metadata_fields",
    "text_template",
];

impl KnowledgeBaseConfig {
    /// The config of a knowledge base without a config file: `name` = the domain, the default
    /// chunking (`max_chunk_size` 500), every supported file type.
    pub fn defaults(domain_id: &str) -> Self {
        let mut default_chunking = Map::new();
        default_chunking.insert("max_chunk_size".into(), Value::from(500));
        KnowledgeBaseConfig {
            name: domain_id.to_owned(),
            file: None,
            default_chunking,
            chunking: ChunkingConfig::default(),
            patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            default_metadata: Map::new(),
        }
    }

    /// Reads a config from its parsed value; `Err` is the message (the caller names the file).
    pub fn from_value(domain_id: &str, value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("did not decode to a dict".into());
        };
        let mut cfg = KnowledgeBaseConfig::defaults(domain_id);
        for key in map.keys() {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                return Err(unknown_key(key, CONFIG_KEYS));
            }
        }
        if let Some(v) = map.get("default_quality_filter").filter(|v| !v.is_null()) {
            return Err(format!(
                "default_quality_filter ({v}) is not supported by dynreg's chunker"
            ));
        }
        if let Some(name) = map.get("name") {
            cfg.name = string("name", name)?;
        }
        if let Some(v) = map.get("default_chunking").filter(|v| !v.is_null()) {
            let Value::Object(m) = v else {
                return Err(format!("default_chunking: expected a mapping, got {v}"));
            };
            cfg.default_chunking.extend(m.clone());
        }
        cfg.chunking = ChunkingConfig::from_map(&cfg.default_chunking)
            .map_err(|e| format!("default_chunking: {e}"))?;
        if let Some(v) = map.get("default_metadata").filter(|v| !v.is_null()) {
            let Value::Object(m) = v else {
                return Err(format!("default_metadata: expected a mapping, got {v}"));
            };
            cfg.default_metadata = m.clone();
        }
        if let Some(v) = map.get("exclude_patterns").filter(|v| !v.is_null()) {
            cfg.exclude_patterns = strings("exclude_patterns", v)?
                .iter()
                .map(|p| Glob::new(p))
                .collect();
        }
        if let Some(v) = map.get("patterns").filter(|v| !v.is_null()) {
            let Value::Array(items) = v else {
                return Err(format!("patterns: expected a list, got {v}"));
            };
            for (i, item) in items.iter().enumerate() {
                let p = cfg
                    .read_pattern(item)
                    .map_err(|e| format!("patterns[{i}]: {e}"))?;
                cfg.patterns.push(p);
            }
        }
        Ok(cfg)
    }

    fn read_pattern(&self, item: &Value) -> Result<FilePattern, String> {
        let map = match item {
            Value::String(s) => {
                let mut m = Map::new();
                m.insert("pattern".into(), Value::String(s.clone()));
                m
            }
            Value::Object(m) => m.clone(),
            other => return Err(format!("expected a pattern string or mapping, got {other}")),
        };
        for key in map.keys() {
            if !PATTERN_KEYS.contains(&key.as_str()) {
                return Err(unknown_key(key, PATTERN_KEYS));
            }
        }
        let pattern = string("pattern", map.get("pattern").ok_or("pattern is missing")?)?;
        if map.get("text_template").is_some_and(|v| !v.is_null()) {
            return Err(
                "text_template (a Jinja2 template) is not supported; use text_fields".into(),
            );
        }
        if map.get("metadata_fields").is_some_and(|v| !v.is_null()) {
            return Err(
                "metadata_fields is not supported (every JSON field is kept as metadata)".into(),
            );
        }
        let enabled = match map.get("enabled") {
            None | Some(Value::Null) => true,
            Some(v) => boolean("enabled", v)?,
        };
        let chunking = match map.get("chunking") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(v) => return Err(format!("chunking: expected a mapping, got {v}")),
        };
        let mut merged = self.default_chunking.clone();
        if let Some(c) = &chunking {
            merged.extend(c.clone());
        }
        if let Some(tf) = map.get("text_fields").filter(|v| !v.is_null()) {
            merged.insert("text_fields".into(), tf.clone());
        }
        let effective = ChunkingConfig::from_map(&merged).map_err(|e| format!("chunking: {e}"))?;
        let metadata = match map.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => return Err(format!("metadata: expected a mapping, got {v}")),
        };
        Ok(FilePattern {
            glob: Glob::new(&pattern),
            enabled,
            chunking,
            effective,
            metadata,
        })
    }

    /// The globs that enumerate files: the enabled patterns, or `**` (every file: the
    /// supported types of [`DEFAULT_PATTERNS`] are chunked, the others skipped and counted).
    pub fn enumeration_globs(&self) -> Vec<Glob> {
        let enabled: Vec<Glob> = self
            .patterns
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.glob.clone())
            .collect();
        if enabled.is_empty() {
            vec![Glob::new("**")]
        } else {
            enabled
        }
    }

    /// The first enabled pattern whose rule matches `path`.
    pub fn pattern_for(&self, path: &str) -> Option<&FilePattern> {
        self.patterns
            .iter()
            .find(|p| p.enabled && p.glob.matches_rule(path))
    }

    /// True if an exclude pattern matches `path`.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exclude_patterns.iter().any(|g| g.matches_rule(path))
    }

    /// The chunking of `path`: its pattern's effective chunking, or `default_chunking`.
    pub fn chunking_for(&self, path: &str) -> &ChunkingConfig {
        self.pattern_for(path)
            .map_or(&self.chunking, |p| &p.effective)
    }

    /// The metadata of `path`'s chunks: `default_metadata` plus its pattern's `metadata`.
    pub fn metadata_for(&self, path: &str) -> Map<String, Value> {
        let mut m = self.default_metadata.clone();
        if let Some(p) = self.pattern_for(path) {
            m.extend(p.metadata.clone());
        }
        m
    }
}

/// Parses a config file's bytes by its extension, with the line of a YAML/JSON syntax error.
pub(crate) fn parse_config_bytes(path: &str, bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str::<Value>(text).map_err(|e| e.to_string())
    }
}

fn positive(key: &str, v: &Value) -> Result<usize, String> {
    match v.as_u64() {
        Some(n) if n > 0 => usize::try_from(n).map_err(|_| format!("{key}: {n} is too large")),
        _ => Err(format!("{key}: expected a positive integer, got {v}")),
    }
}

fn count(key: &str, v: &Value) -> Result<usize, String> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{key}: expected a non-negative integer, got {v}"))
}

fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{key}: expected true or false, got {v}"))
}

fn string(key: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key}: expected a string, got {v}"))
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|i| string(key, i)).collect(),
        other => Err(format!("{key}: expected a list of strings, got {other}")),
    }
}

/// Counts of skipped files by reason, for reports.
pub type SkipCounts = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pattern_chunking_overrides_the_default_and_the_default_is_honoured() {
        let cfg = KnowledgeBaseConfig::from_value(
            "d",
            &json!({"default_chunking": {"max_chunk_size": 120},
                    "patterns": [{"pattern": "api/**/*.md", "chunking": {"chunk_overlap": 10}}, "**/*.txt"]}),
        )
        .unwrap();
        assert_eq!(cfg.chunking_for("intro.md").max_chunk_size, 120);
        let api = cfg.chunking_for("api/v1/x.md");
        assert_eq!((api.max_chunk_size, api.chunk_overlap), (120, 10));
    }

    #[test]
    fn unknown_and_unsupported_keys_are_refused_by_name() {
        let e = KnowledgeBaseConfig::from_value("d", &json!({"paterns": []})).unwrap_err();
        assert!(
            e.contains("\"paterns\"") && e.contains("\"patterns\""),
            "{e}"
        );
        let e = KnowledgeBaseConfig::from_value(
            "d",
            &json!({"default_chunking": {"max_chunk_sise": 3}}),
        )
        .unwrap_err();
        assert!(e.contains("max_chunk_size"), "{e}");
        let e = KnowledgeBaseConfig::from_value(
            "d",
            &json!({"patterns": [{"pattern": "*.json", "text_template": "{{ x }}"}]}),
        )
        .unwrap_err();
        assert!(
            e.contains("patterns[0]") && e.contains("text_template"),
            "{e}"
        );
        assert!(
            KnowledgeBaseConfig::from_value("d", &json!([1]))
                .unwrap_err()
                .contains("dict")
        );
    }
}
