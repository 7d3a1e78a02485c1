//! The structured formats: YAML (to markdown sections), CSV (one section per row, streamed),
//! JSON (one chunk per object, split when long) and JSON lines (streamed).
//!
//! Invariants:
//! - Content is only ever parsed, never interpreted as a path (the original reads a server
//!   file when a CSV or YAML file's whole content is that file's path).
//! - Nothing is lost silently: a JSONL line or CSV record that cannot be read is a reported
//!   error with its line; a JSON text longer than a chunk is split, not truncated; array
//!   elements that are not objects are chunks too.
//! - CSV and JSONL are read record by record from a stream: memory is bounded by the longest
//!   record (`max_line_bytes`), not the file.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::chunk::Heading;
use crate::config::ChunkingConfig;
use crate::emit::Emitter;
use crate::error::Refusal;
use crate::markdown::chunk_markdown;
use crate::split::PROSE_BOUNDARIES;

/// The title of a file: its stem with `_` and `-` as spaces, each word capitalised.
pub(crate) fn title_of(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    stem.split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// YAML

/// YAML: every document of the stream transformed to markdown sections, then chunked.
pub(crate) fn chunk_yaml(src: &str, total: u64, em: &mut Emitter<'_>) -> Result<(), Refusal> {
    let title = title_of(&em.file.path);
    let mut md = format!("# {}\n\n", escape_line(&title));
    for doc in serde_norway::Deserializer::from_str(src) {
        let value: serde_norway::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Refusal::msg(format!("invalid YAML: {e}")))?;
        let value = yaml_to_json(value, 0)?;
        render_top(&value, &mut md);
    }
    chunk_markdown(&md, 0, Some(0..total), em)
}

fn yaml_to_json(v: serde_norway::Value, depth: usize) -> Result<Value, Refusal> {
    use serde_norway::Value as Y;
    if depth > 128 {
        return Err(Refusal::msg("invalid YAML: nested deeper than 128 levels"));
    }
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| yaml_to_json(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_norway::to_string(&other)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default(),
                };
                out.insert(key, yaml_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, depth + 1)?,
    })
}

/// A markdown line that cannot open a block: a leading `#`, `>`, `-`, `=`, `*`, `+`, `|` or
/// backtick is escaped, so generated text never becomes structure.
fn escape_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let t = line.trim_start();
        if t.starts_with(['#', '>', '-', '=', '*', '+', '|', '`', '~']) {
            out.push('\\');
            out.push_str(t);
        } else {
            out.push_str(t);
        }
    }
    out
}

fn field_name(key: &str) -> String {
    title_of(&format!("{key}.x"))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn section_name(map: &Map<String, Value>) -> Option<String> {
    ["name", "title", "label"]
        .iter()
        .find_map(|k| map.get(*k).filter(|v| is_scalar(v)).map(scalar))
}

fn render_top(v: &Value, md: &mut String) {
    match v {
        Value::Object(map) => {
            if let Some(name) = section_name(map) {
                md.push_str(&format!("## {}\n\n", escape_line(&name)));
            }
            render_map(map, 3, md);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(map) => {
                        let name = section_name(map).unwrap_or_else(|| format!("Item {}", i + 1));
                        md.push_str(&format!("## {}\n\n", escape_line(&name)));
                        render_map(map, 3, md);
                    }
                    other => render_value_lines(other, md),
                }
            }
        }
        other => render_value_lines(other, md),
    }
}

fn render_value_lines(v: &Value, md: &mut String) {
    match v {
        Value::Array(items) => {
            for i in items {
                md.push_str(&format!("- {}\n", escape_inline(&compact(i))));
            }
            md.push('\n');
        }
        other => {
            let s = scalar(other);
            if !s.is_empty() {
                md.push_str(&escape_line(&s));
                md.push_str("\n\n");
            }
        }
    }
}

fn escape_inline(s: &str) -> String {
    s.replace('\n', " ")
}

fn compact(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{}: {}", field_name(k), compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(", "),
        other => scalar(other),
    }
}

fn render_map(map: &Map<String, Value>, level: usize, md: &mut String) {
    let mut scalars = String::new();
    for (k, v) in map {
        if is_scalar(v) {
            let s = scalar(v);
            if !s.is_empty() {
                scalars.push_str(&format!(
                    "**{}**: {}\n",
                    field_name(k),
                    escape_line(&s).replace('\n', "\n  ")
                ));
            }
        }
    }
    if !scalars.is_empty() {
        md.push_str(&scalars);
        md.push('\n');
    }
    let hashes = "#".repeat(level.min(6));
    for (k, v) in map {
        match v {
            Value::Array(items) => {
                md.push_str(&format!("{hashes} {}\n\n", escape_line(&field_name(k))));
                for i in items {
                    md.push_str(&format!("- {}\n", escape_inline(&compact(i))));
                }
                md.push('\n');
            }
            Value::Object(inner) => {
                md.push_str(&format!("{hashes} {}\n\n", escape_line(&field_name(k))));
                render_map(inner, level + 1, md);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// CSV: `# Title`, then for each row a section named by its first column with the other
/// non-empty columns as `**Header**: value` lines. Ragged rows are read (extra columns are
/// named `Column N`); quoted newlines are part of their field. Rows are read one at a time.
pub(crate) fn chunk_csv(reader: impl Read, em: &mut Emitter<'_>) -> Result<(), Refusal> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(reader);
    let title = Heading {
        level: 1,
        text: title_of(&em.file.path),
    };
    let mut record = csv::ByteRecord::new();
    let mut headers: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        let start = rdr.position().byte();
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(Refusal::msg(format!("line {line}: {e}")));
                }
                em.record_error(line, e)?;
                continue;
            }
        }
        let end = rdr.position().byte();
        let fields: Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
        let fields = match fields {
            Ok(f) => f,
            Err(e) => {
                em.record_error(line, format!("not valid UTF-8: {e}"))?;
                continue;
            }
        };
        if first {
            first = false;
            headers = fields
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let h = h.trim_start_matches('\u{feff}').trim();
                    if h.is_empty() {
                        format!("Column {}", i + 1)
                    } else {
                        h.to_owned()
                    }
                })
                .collect();
            continue;
        }
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let name = |i: usize| {
            headers
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("Column {}", i + 1))
        };
        let first_value = fields[0].trim();
        let mut body = String::new();
        for (i, v) in fields.iter().enumerate().skip(1) {
            let v = v.trim();
            if !v.is_empty() {
                body.push_str(&format!("**{}**: {}\n", name(i), v));
            }
        }
        let headings: Arc<[Heading]> = if first_value.is_empty() {
            Arc::from(vec![title.clone()])
        } else {
            Arc::from(vec![
                title.clone(),
                Heading {
                    level: 2,
                    text: first_value.replace('\n', " "),
                },
            ])
        };
        if body.is_empty() {
            body = format!("**{}**: {}", name(0), first_value);
        }
        em.emit_split(
            &headings,
            &body,
            None,
            start..end,
            Some(line),
            Map::new(),
            PROSE_BOUNDARIES,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON

const TEXT_KEYS: &[&str] = &[
    "title",
    "name",
    "description",
    "content",
    "text",
    "summary",
    "body",
    "message",
    "comment",
    "note",
    "notes",
    "abstract",
    "overview",
    "details",
    "explanation",
    "definition",
    "label",
];
const BARE_KEYS: &[&str] = &["content", "text", "body"];
const TECHNICAL_KEYS: &[&str] = &[
    "id",
    "uuid",
    "guid",
    "_id",
    "created_at",
    "updated_at",
    "created",
    "updated",
    "timestamp",
    "modified",
    "hash",
    "checksum",
    "signature",
    "token",
    "key",
    "secret",
];
/// The most flattened metadata fields one chunk carries (the text keeps every field).
const MAX_FIELDS: usize = 256;

fn is_one_of(key: &str, set: &[&str]) -> bool {
    set.iter().any(|k| k.eq_ignore_ascii_case(key))
}

fn looks_technical(s: &str) -> bool {
    let b = s.as_bytes();
    // UUID
    if b.len() == 36
        && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
    {
        return true;
    }
    // ISO timestamp
    if b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
    {
        return b[..4].iter().all(u8::is_ascii_digit);
    }
    // long base64 without spaces
    b.len() >= 40
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        && b.iter().any(u8::is_ascii_digit)
}

/// The text of one JSON object, by the original's rule (or the configured `text_fields`).
pub(crate) fn json_text(obj: &Map<String, Value>, cfg: &ChunkingConfig) -> String {
    let mut parts: Vec<String> = Vec::new();
    let field = |k: &str, v: &Value| -> String {
        let s = compact_json(v);
        if cfg.include_field_names && !is_one_of(k, BARE_KEYS) {
            format!("{k}: {s}")
        } else {
            s
        }
    };
    if let Some(fields) = &cfg.text_fields {
        for k in fields {
            if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
                parts.push(field(k, v));
            }
        }
        return parts.join("\n");
    }
    let title_key = ["title", "name", "label"]
        .into_iter()
        .find(|k| obj.get(*k).is_some_and(Value::is_string));
    if let Some(k) = title_key {
        parts.push(scalar(&obj[k]));
    }
    let technical = |k: &str, v: &Value| {
        cfg.skip_technical_fields
            && (is_one_of(k, TECHNICAL_KEYS)
                || k.starts_with('_')
                || v.as_str().is_some_and(looks_technical))
    };
    for (k, v) in obj {
        if Some(k.as_str()) == title_key
            || !is_one_of(k, TEXT_KEYS)
            || v.is_null()
            || technical(k, v)
        {
            continue;
        }
        parts.push(field(k, v));
    }
    for (k, v) in obj {
        if Some(k.as_str()) == title_key
            || is_one_of(k, TEXT_KEYS)
            || v.is_null()
            || technical(k, v)
        {
            continue;
        }
        parts.push(field(k, v));
    }
    parts.join("\n")
}

fn compact_json(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(is_scalar) => {
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// Flattened metadata: dotted keys; a list of objects gives `k._count` and its first element;
/// a list of scalars is kept as a list (so a filter on it is a membership test).
pub(crate) fn flatten(obj: &Map<String, Value>, sep: &str) -> Map<String, Value> {
    let mut out = Map::new();
    flatten_into(obj, "", sep, &mut out, 0);
    out
}

fn flatten_into(
    obj: &Map<String, Value>,
    prefix: &str,
    sep: &str,
    out: &mut Map<String, Value>,
    depth: usize,
) {
    for (k, v) in obj {
        if out.len() >= MAX_FIELDS {
            return;
        }
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}{sep}{k}")
        };
        match v {
            Value::Object(inner) if depth < 16 => flatten_into(inner, &key, sep, out, depth + 1),
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                out.insert(format!("{key}{sep}_count"), Value::from(items.len()));
                if let (Some(Value::Object(first)), true) = (items.first(), depth < 16) {
                    flatten_into(first, &key, sep, out, depth + 1);
                }
            }
            Value::Array(items) if items.iter().all(is_scalar) => {
                out.insert(key, v.clone());
            }
            Value::Object(_) | Value::Array(_) => {
                out.insert(key, Value::String(v.to_string()));
            }
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// One JSON value as chunks: an object's text (split when long) with its fields as metadata;
/// any other value's text.
fn emit_json_value(
    v: &Value,
    range: std::ops::Range<u64>,
    line: Option<u64>,
    em: &mut Emitter<'_>,
) -> Result<(), Refusal> {
    let none: Arc<[Heading]> = Arc::from(Vec::new());
    match v {
        Value::Object(obj) => {
            let text = json_text(obj, em.cfg);
            let fields = flatten(obj, &em.cfg.nested_separator);
            let base = None;
            em.emit_split(&none, &text, base, range, line, fields, PROSE_BOUNDARIES)
        }
        other => {
            let text = compact_json(other);
            em.emit_split(
                &none,
                &text,
                None,
                range,
                line,
                Map::new(),
                PROSE_BOUNDARIES,
            )
        }
    }
}

/// A JSON document: an object is one chunk (split when long); an array gives a chunk per
/// element, with the element's exact byte range.
pub(crate) fn chunk_json(src: &str, base: u64, em: &mut Emitter<'_>) -> Result<(), Refusal> {
    let trimmed = src.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(src).map_err(|e| Refusal::msg(format!("invalid JSON: {e}")))?;
        for raw in items {
            let s = raw.get();
            let offset = s.as_ptr() as usize - src.as_ptr() as usize;
            let line = 1 + src.as_bytes()[..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            let v: Value =
                serde_json::from_str(s).map_err(|e| Refusal::msg(format!("invalid JSON: {e}")))?;
            let range = base + offset as u64..base + (offset + s.len()) as u64;
            emit_json_value(&v, range, Some(line), em)?;
        }
        Ok(())
    } else {
        let v: Value =
            serde_json::from_str(src).map_err(|e| Refusal::msg(format!("invalid JSON: {e}")))?;
        emit_json_value(&v, base..base + src.len() as u64, Some(1), em)
    }
}

/// JSON lines, one at a time: a line that is not JSON is a reported error with its number;
/// blank lines are skipped.
pub(crate) fn chunk_jsonl(reader: impl Read, em: &mut Emitter<'_>) -> Result<(), Refusal> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line += 1;
        let start = offset;
        offset += n as u64;
        let mut body: &[u8] = &buf;
        if line == 1 {
            body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
        }
        let body = body.trim_ascii();
        if body.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => emit_json_value(&v, start..offset, Some(line), em)?,
            Err(e) => em.record_error(line, format!("invalid JSON: {e}"))?,
        }
    }
    Ok(())
}
