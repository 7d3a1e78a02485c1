//! The emitter: the one place a piece of text becomes a [`Chunk`], so every format applies the
//! same heading rule, embedding-text rule, numbering and per-file chunk limit.

use std::ops::Range;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::chunk::{Chunk, Heading, SourceFile, embedding_text};
use crate::config::{ChunkingConfig, HeadingInclusion, Limits};
use crate::error::{FileError, Refusal};
use crate::split::split_text;

/// Receives the chunks and record-level errors of one file.
pub(crate) trait Sink {
    fn chunk(&mut self, chunk: Chunk) -> Result<(), Refusal>;
    fn record_error(&mut self, error: FileError) -> Result<(), Refusal>;
}

impl Sink for Vec<Chunk> {
    fn chunk(&mut self, chunk: Chunk) -> Result<(), Refusal> {
        self.push(chunk);
        Ok(())
    }
    fn record_error(&mut self, error: FileError) -> Result<(), Refusal> {
        Err(Refusal::msg(error.error))
    }
}

pub(crate) struct Emitter<'a> {
    pub file: Arc<SourceFile>,
    pub cfg: &'a ChunkingConfig,
    pub limits: &'a Limits,
    pub sink: &'a mut dyn Sink,
    next_index: u64,
}

impl<'a> Emitter<'a> {
    pub fn new(
        file: Arc<SourceFile>,
        cfg: &'a ChunkingConfig,
        limits: &'a Limits,
        sink: &'a mut dyn Sink,
    ) -> Self {
        Emitter {
            file,
            cfg,
            limits,
            sink,
            next_index: 0,
        }
    }

    pub fn chunks_emitted(&self) -> u64 {
        self.next_index
    }

    /// A record-level error: the record is lost, the file goes on, the error is reported.
    pub fn record_error(
        &mut self,
        line: u64,
        message: impl std::fmt::Display,
    ) -> Result<(), Refusal> {
        let error = FileError {
            file: self.file.source.clone(),
            error: format!("{} line {line}: {message}", self.file.path),
            path: self.file.path.clone(),
            line: Some(line),
            fatal: false,
        };
        self.sink.record_error(error)
    }

    /// One chunk of `body` (already within size) under `headings`.
    pub fn emit(
        &mut self,
        headings: &Arc<[Heading]>,
        body: &str,
        range: Range<u64>,
        line: Option<u64>,
        fields: Map<String, Value>,
    ) -> Result<(), Refusal> {
        let body = body.trim();
        if body.is_empty() || is_separator_only(body) {
            return Ok(());
        }
        let body = if body.contains('\r') {
            body.replace("\r\n", "\n")
        } else {
            body.to_owned()
        };
        if self.next_index >= self.limits.max_chunks_per_file {
            return Err(Refusal::msg(format!(
                "more than max_chunks_per_file ({}) chunks",
                self.limits.max_chunks_per_file
            )));
        }
        let (text, embedding) = match self.cfg.heading_inclusion {
            HeadingInclusion::InMetadata => {
                let e = if self.cfg.generate_embeddings {
                    embedding_text(headings, &body)
                } else {
                    body.clone()
                };
                (body, e)
            }
            HeadingInclusion::None => (body.clone(), body),
            HeadingInclusion::InText | HeadingInclusion::Both => {
                let mut t = String::with_capacity(body.len() + 64);
                for h in headings.iter() {
                    for _ in 0..h.level {
                        t.push('#');
                    }
                    t.push(' ');
                    t.push_str(&h.text);
                    t.push('\n');
                }
                if !headings.is_empty() {
                    t.push('\n');
                }
                t.push_str(&body);
                let e = if self.cfg.heading_inclusion == HeadingInclusion::Both
                    && self.cfg.generate_embeddings
                {
                    embedding_text(headings, &body)
                } else {
                    t.clone()
                };
                (t, e)
            }
        };
        let index = self.next_index;
        self.next_index += 1;
        let chunk = Chunk {
            id: self.file.chunk_id(index),
            file: self.file.clone(),
            index,
            text,
            embedding_text: embedding,
            headings: headings.clone(),
            byte_range: range,
            line_number: line,
            fields,
        };
        self.sink.chunk(chunk)
    }

    /// `text` split to size at `boundaries`; `base` is the byte offset of `text` in the source
    /// (`None` when `text` is generated and `range` covers it as a whole).
    #[allow(clippy::too_many_arguments)]
    pub fn emit_split(
        &mut self,
        headings: &Arc<[Heading]>,
        text: &str,
        base: Option<u64>,
        whole: Range<u64>,
        line: Option<u64>,
        fields: Map<String, Value>,
        boundaries: &[&str],
    ) -> Result<(), Refusal> {
        let pieces = split_text(
            text,
            self.cfg.max_chunk_size,
            self.cfg.chunk_overlap,
            boundaries,
        );
        let mut lines = LineCounter::new(text, line);
        let last = pieces.len().saturating_sub(1);
        let mut fields = Some(fields);
        for (i, piece) in pieces.into_iter().enumerate() {
            let range = match base {
                Some(b) => b + piece.start as u64..b + piece.end as u64,
                None => whole.clone(),
            };
            let line = lines.line_at(piece.start);
            let f = if i == last {
                fields.take().unwrap_or_default()
            } else {
                fields.clone().unwrap_or_default()
            };
            self.emit(headings, &text[piece], range, line, f)?;
        }
        Ok(())
    }
}

/// A chunk of nothing but thematic-break or separator characters carries no content (the
/// original embeds lone `---` chunks from its CSV and YAML transforms).
fn is_separator_only(text: &str) -> bool {
    text.chars()
        .all(|c| matches!(c, '-' | '*' | '_' | '=' | ' ' | '\n' | '\r' | '\t'))
}

/// Lines of positions inside one text, counted incrementally.
pub(crate) struct LineCounter<'t> {
    text: &'t str,
    first: Option<u64>,
    pos: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    pub fn new(text: &'t str, first: Option<u64>) -> Self {
        LineCounter {
            text,
            first,
            pos: 0,
            line: 0,
        }
    }

    pub fn line_at(&mut self, at: usize) -> Option<u64> {
        let first = self.first?;
        if at < self.pos {
            self.pos = 0;
            self.line = 0;
        }
        self.line += self.text.as_bytes()[self.pos..at]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.pos = at;
        Some(first + self.line)
    }
}
