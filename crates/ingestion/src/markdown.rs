//! The markdown chunker, on `pulldown-cmark`'s CommonMark parser.
//!
//! The document becomes a heading tree: every top-level block sits under the headings open at
//! that point (a heading closes every open heading of its level or deeper). Under one heading
//! the blocks are packed, in document order, into chunks of at most `max_chunk_size`
//! characters; a code block, table or list is kept whole when it fits and split by lines when
//! it does not, prose is split at the best boundary (see [`crate::split`]). Thematic breaks
//! (`---`) are separators, not content, and never become chunks. Each chunk's byte range is
//! the span of its blocks in the source; headings go to the metadata (and the embedding text)
//! per `heading_inclusion`.

use std::ops::Range;
use std::sync::Arc;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde_json::Map;

use crate::chunk::Heading;
use crate::emit::{Emitter, LineCounter};
use crate::error::Refusal;
use crate::split::{LINE_BOUNDARIES, PROSE_BOUNDARIES, char_len_at_most};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prose,
    /// Code, tables, lists: whole where they fit.
    Atomic,
}

struct Block {
    range: Range<usize>,
    kind: Kind,
}

/// Chunks the markdown `src`, whose first byte is at `base` in the (decompressed) source. With
/// `whole`, every chunk carries that range and no line (generated markdown).
pub(crate) fn chunk_markdown(
    src: &str,
    base: u64,
    whole: Option<Range<u64>>,
    em: &mut Emitter<'_>,
) -> Result<(), Refusal> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut stack: Vec<Heading> = Vec::new();
    let mut headings: Arc<[Heading]> = Arc::from(Vec::new());
    let mut section: Vec<Block> = Vec::new();
    let mut lines = LineCounter::new(src, if whole.is_some() { None } else { Some(1) });
    let mut ctx = Ctx {
        src,
        base,
        whole,
        lines: &mut lines,
    };

    let mut depth = 0usize;
    let mut heading: Option<(u8, String)> = None;
    for (event, range) in Parser::new_ext(src, options).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                if depth == 0 {
                    match &tag {
                        Tag::Heading { level, .. } => heading = Some((*level as u8, String::new())),
                        Tag::CodeBlock(_) | Tag::Table(_) | Tag::List(_) => section.push(Block {
                            range: range.clone(),
                            kind: Kind::Atomic,
                        }),
                        Tag::MetadataBlock(_) => {}
                        _ => section.push(Block {
                            range: range.clone(),
                            kind: Kind::Prose,
                        }),
                    }
                }
                depth += 1;
            }
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                if depth == 0
                    && let (TagEnd::Heading(_), Some((level, text))) = (end, heading.take())
                {
                    ctx.flush_section(&headings, &mut section, em)?;
                    while stack.last().is_some_and(|h| h.level >= level) {
                        stack.pop();
                    }
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    stack.push(Heading { level, text });
                    headings = Arc::from(stack.clone());
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                if let Some((_, text)) = heading.as_mut() {
                    text.push_str(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, text)) = heading.as_mut() {
                    text.push(' ');
                }
            }
            Event::Html(_) | Event::InlineHtml(_) if depth == 0 => {
                section.push(Block {
                    range,
                    kind: Kind::Prose,
                });
            }
            // A thematic break separates; it is not content.
            Event::Rule => {}
            _ => {}
        }
    }
    ctx.flush_section(&headings, &mut section, em)
}

struct Ctx<'s, 'l> {
    src: &'s str,
    base: u64,
    whole: Option<Range<u64>>,
    lines: &'l mut LineCounter<'s>,
}

impl Ctx<'_, '_> {
    fn range(&self, r: &Range<usize>) -> Range<u64> {
        match &self.whole {
            Some(w) => w.clone(),
            None => self.base + r.start as u64..self.base + r.end as u64,
        }
    }

    /// Packs the section's blocks into chunks and emits them.
    fn flush_section(
        &mut self,
        headings: &Arc<[Heading]>,
        section: &mut Vec<Block>,
        em: &mut Emitter<'_>,
    ) -> Result<(), Refusal> {
        let max = em.cfg.max_chunk_size;
        let combine = em.cfg.combine_under_heading;
        let mut buf = String::new();
        let mut buf_chars = 0usize;
        let mut buf_range: Option<Range<usize>> = None;
        let blocks = std::mem::take(section);
        for block in blocks {
            let text = self.src[block.range.clone()].trim();
            if text.is_empty() {
                continue;
            }
            let chars = if char_len_at_most(text, max) {
                text.chars().count()
            } else {
                max + 1
            };
            if chars > max {
                self.flush_buf(headings, &mut buf, &mut buf_chars, &mut buf_range, em)?;
                let boundaries = if block.kind == Kind::Atomic {
                    LINE_BOUNDARIES
                } else {
                    PROSE_BOUNDARIES
                };
                let start = block.range.start
                    + (self.src[block.range.clone()].len()
                        - self.src[block.range.clone()].trim_start().len());
                let line = self.lines.line_at(start);
                match &self.whole {
                    Some(w) => em.emit_split(
                        headings,
                        text,
                        None,
                        w.clone(),
                        line,
                        Map::new(),
                        boundaries,
                    )?,
                    None => em.emit_split(
                        headings,
                        text,
                        Some(self.base + start as u64),
                        0..0,
                        line,
                        Map::new(),
                        boundaries,
                    )?,
                }
                continue;
            }
            let joined = if buf.is_empty() {
                chars
            } else {
                buf_chars + 2 + chars
            };
            if !buf.is_empty() && (!combine || joined > max) {
                self.flush_buf(headings, &mut buf, &mut buf_chars, &mut buf_range, em)?;
            }
            if buf.is_empty() {
                buf.push_str(text);
                buf_chars = chars;
                buf_range = Some(block.range.clone());
            } else {
                buf.push_str("\n\n");
                buf.push_str(text);
                buf_chars += 2 + chars;
                if let Some(r) = buf_range.as_mut() {
                    r.end = block.range.end;
                }
            }
        }
        self.flush_buf(headings, &mut buf, &mut buf_chars, &mut buf_range, em)
    }

    fn flush_buf(
        &mut self,
        headings: &Arc<[Heading]>,
        buf: &mut String,
        buf_chars: &mut usize,
        buf_range: &mut Option<Range<usize>>,
        em: &mut Emitter<'_>,
    ) -> Result<(), Refusal> {
        if let Some(r) = buf_range.take() {
            let line = self.lines.line_at(r.start);
            let range = self.range(&r);
            em.emit(headings, buf, range, line, Map::new())?;
        }
        buf.clear();
        *buf_chars = 0;
        Ok(())
    }
}

/// Chunks plain text: one section without headings, split at prose boundaries.
pub(crate) fn chunk_text(src: &str, base: u64, em: &mut Emitter<'_>) -> Result<(), Refusal> {
    let none: Arc<[Heading]> = Arc::from(Vec::new());
    em.emit_split(
        &none,
        src,
        Some(base),
        0..0,
        Some(1),
        Map::new(),
        PROSE_BOUNDARIES,
    )
}
