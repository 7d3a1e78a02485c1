//! Chunks and their provenance.
//!
//! Invariants:
//! - A chunk id is derived from the tenant (if any), the domain, the generation (if any), the
//!   file's **full relative path** and the chunk's ordinal, joined by `\x1f` (a character no
//!   knowledge-base path may contain). So `a/intro.md`, `b/intro.md` and `intro.json` never
//!   share an id — the original derives ids from the file stem alone and lets such files
//!   overwrite each other.
//! - [`Chunk::metadata`] carries the original's system keys (`text`, `source`, `chunk_index`,
//!   `document_type`, `source_path`, `domain_id`, `tenant_id`, `_generation`, `heading_path`,
//!   `headings`, `heading_levels`, `line_number`, `chunk_size`), so filters written for the
//!   original keep working; system keys win over document and pattern metadata.

use std::ops::Range;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The separator of the parts of a chunk id.
pub const ID_SEPARATOR: char = '\x1f';

/// How a file's content was read, the original's `document_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocumentType {
    /// Markdown and text, and YAML and CSV transformed to markdown sections.
    Markdown,
    /// One JSON document.
    Json,
    /// JSON lines.
    Jsonl,
}

impl DocumentType {
    /// `"markdown"`, `"json"` or `"jsonl"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::Markdown => "markdown",
            DocumentType::Json => "json",
            DocumentType::Jsonl => "jsonl",
        }
    }
}

/// The format of a file, from its extension (after removing `.gz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `.md`, `.markdown`
    Markdown,
    /// `.txt`: one section of prose, no markdown structure.
    Text,
    /// `.yaml`, `.yml`
    Yaml,
    /// `.csv`
    Csv,
    /// `.json`
    Json,
    /// `.jsonl`, `.ndjson`
    Jsonl,
}

impl Format {
    /// The format of `path` and whether it is gzip-compressed; `None` for unsupported files.
    pub fn of(path: &str) -> Option<(Format, bool)> {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let (name, gz) = match name.strip_suffix(".gz") {
            Some(n) => (n.to_owned(), true),
            None => (name, false),
        };
        let ext = name.rsplit_once('.').map(|(_, e)| e)?;
        let f = match ext {
            "md" | "markdown" => Format::Markdown,
            "txt" => Format::Text,
            "yaml" | "yml" => Format::Yaml,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::Jsonl,
            _ => return None,
        };
        Some((f, gz))
    }

    /// The document type its chunks carry.
    pub fn document_type(self) -> DocumentType {
        match self {
            Format::Json => DocumentType::Json,
            Format::Jsonl => DocumentType::Jsonl,
            _ => DocumentType::Markdown,
        }
    }
}

/// One file being chunked: what every chunk of it shares.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    /// The knowledge base.
    pub domain_id: String,
    /// The tenant the chunks are for, if any.
    pub tenant_id: Option<String>,
    /// The index generation the chunks are written under, if any.
    pub generation: Option<String>,
    /// The path inside the knowledge base (`docs/intro.md`): the delete key of its chunks.
    pub path: String,
    /// The display source: `{backend kind}://{domain}/{path}`.
    pub source: String,
    /// The stored file's MD5, as the knowledge store reports it.
    pub checksum: String,
    /// The stored (possibly compressed) size.
    pub size_bytes: u64,
    /// Its format.
    pub format: Format,
    /// True if stored gzip-compressed.
    pub gzip: bool,
    /// Document and pattern metadata added to every chunk (system keys win over it).
    pub metadata: Map<String, Value>,
}

impl SourceFile {
    /// The document type of its chunks.
    pub fn document_type(&self) -> DocumentType {
        self.format.document_type()
    }

    /// The id of its chunk `index`.
    pub fn chunk_id(&self, index: u64) -> String {
        let mut id = String::with_capacity(self.domain_id.len() + self.path.len() + 24);
        for part in [
            self.tenant_id.as_deref(),
            Some(self.domain_id.as_str()),
            self.generation.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            id.push_str(part);
            id.push(ID_SEPARATOR);
        }
        id.push_str(&self.path);
        id.push(ID_SEPARATOR);
        id.push_str(&index.to_string());
        id
    }
}

/// One heading of a chunk's heading path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1 to 6.
    pub level: u8,
    /// Its text, inline markup removed.
    pub text: String,
}

/// One chunk: text to show, text to embed, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Unique across a knowledge base (and tenant and generation); see the module docs.
    pub id: String,
    /// The file it came from.
    pub file: Arc<SourceFile>,
    /// Its ordinal in the file, from 0.
    pub index: u64,
    /// The chunk text.
    pub text: String,
    /// The text to embed: the text with its heading prefix (the original's rule).
    pub embedding_text: String,
    /// The headings it sits under, outermost first.
    pub headings: Arc<[Heading]>,
    /// The bytes of the (decompressed) source it came from. YAML chunks carry the whole
    /// document's range, since YAML is transformed as a whole.
    pub byte_range: Range<u64>,
    /// The 1-based line (or CSV record) it starts at, where the format has lines.
    pub line_number: Option<u64>,
    /// Fields of its own (a JSON object's flattened fields).
    pub fields: Map<String, Value>,
}

impl Chunk {
    /// `"A > B > C"`.
    pub fn heading_path(&self) -> String {
        let mut s = String::new();
        for (i, h) in self.headings.iter().enumerate() {
            if i > 0 {
                s.push_str(" > ");
            }
            s.push_str(&h.text);
        }
        s
    }

    /// The metadata a vector store keeps with the chunk: document and pattern metadata, the
    /// chunk's own fields, then the system and provenance keys (which win).
    pub fn metadata(&self) -> Map<String, Value> {
        let f = &*self.file;
        let mut m = Map::with_capacity(f.metadata.len() + self.fields.len() + 18);
        m.extend(
            f.metadata
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "source" | "filename"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        m.insert("heading_path".into(), Value::String(self.heading_path()));
        m.insert(
            "headings".into(),
            Value::Array(
                self.headings
                    .iter()
                    .map(|h| Value::String(h.text.clone()))
                    .collect(),
            ),
        );
        m.insert(
            "heading_levels".into(),
            Value::Array(self.headings.iter().map(|h| Value::from(h.level)).collect()),
        );
        if let Some(line) = self.line_number {
            m.insert("line_number".into(), Value::from(line));
        }
        m.insert("chunk_size".into(), Value::from(self.text.chars().count()));
        m.insert("byte_start".into(), Value::from(self.byte_range.start));
        m.insert("byte_end".into(), Value::from(self.byte_range.end));
        m.insert("checksum".into(), Value::String(f.checksum.clone()));
        m.insert("text".into(), Value::String(self.text.clone()));
        m.insert("source".into(), Value::String(f.source.clone()));
        m.insert("source_path".into(), Value::String(f.path.clone()));
        m.insert("chunk_index".into(), Value::from(self.index));
        m.insert(
            "document_type".into(),
            Value::String(f.document_type().as_str().into()),
        );
        m.insert("domain_id".into(), Value::String(f.domain_id.clone()));
        match &f.tenant_id {
            Some(t) => m.insert("tenant_id".into(), Value::String(t.clone())),
            None => m.remove("tenant_id"),
        };
        match &f.generation {
            Some(g) => m.insert("_generation".into(), Value::String(g.clone())),
            None => m.remove("_generation"),
        };
        m
    }
}

/// The original's embedding-text rule: walk the headings from the deepest up, stop after the
/// first with more than one word, and prefix them (outermost first) as `"A: B: text"`.
pub fn embedding_text(headings: &[Heading], text: &str) -> String {
    let mut taken = Vec::new();
    for h in headings.iter().rev() {
        taken.push(h.text.as_str());
        if h.text.split_whitespace().count() > 1 {
            break;
        }
    }
    if taken.is_empty() {
        return text.to_owned();
    }
    let mut s = String::with_capacity(text.len() + 32);
    for h in taken.iter().rev() {
        s.push_str(h);
        s.push_str(": ");
    }
    s.push_str(text);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> SourceFile {
        SourceFile {
            domain_id: "d1".into(),
            tenant_id: None,
            generation: None,
            path: path.into(),
            source: format!("memory://d1/{path}"),
            checksum: String::new(),
            size_bytes: 0,
            format: Format::of(path).unwrap().0,
            gzip: false,
            metadata: Map::new(),
        }
    }

    #[test]
    fn ids_use_the_full_path_so_same_stem_files_never_collide() {
        let ids: Vec<String> = ["a/intro.md", "b/intro.md", "intro.json"]
            .iter()
            .map(|p| file(p).chunk_id(0))
            .collect();
        assert_eq!(ids[0], "d1\x1fa/intro.md\x1f0");
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        let mut t = file("x.md");
        t.tenant_id = Some("acme".into());
        t.generation = Some("g2".into());
        assert_eq!(t.chunk_id(3), "acme\x1fd1\x1fg2\x1fx.md\x1f3");
    }

    #[test]
    fn embedding_text_stops_after_the_first_multi_word_heading() {
        let h = |level, text: &str| Heading {
            level,
            text: text.into(),
        };
        let hs = vec![
            h(1, "User Guide"),
            h(2, "Installation Steps"),
            h(3, "Linux"),
        ];
        assert_eq!(
            embedding_text(&hs, "apt install"),
            "Installation Steps: Linux: apt install"
        );
        assert_eq!(embedding_text(&[], "x"), "x");
    }

    #[test]
    fn formats_come_from_the_extension_after_gz() {
        assert_eq!(Format::of("a/b.JSONL.gz"), Some((Format::Jsonl, true)));
        assert_eq!(Format::of("x.yml"), Some((Format::Yaml, false)));
        assert_eq!(Format::of("x.pdf"), None);
        assert_eq!(Format::of("README"), None);
    }
}
