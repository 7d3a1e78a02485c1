//! Splitting text that is longer than a chunk into pieces at natural boundaries.
//!
//! The rule is the original's `split_text`: a piece is at most `max` characters; a piece that
//! would end inside the text ends instead after the **first** boundary, in priority order
//! (paragraph, sentence end, line, space), found searching backwards in its window; with none, it
//! is cut at `max`. Pieces are trimmed and empty ones dropped. dynreg adds an optional overlap:
//! each piece after the first starts up to `overlap` characters before the previous one ended
//! (at a word boundary), so a sentence cut in two is whole in one of the pieces.
//!
//! Pieces are byte ranges into the input, so callers keep exact provenance. Sizes are counted in
//! characters (Unicode scalar values); a range never splits a character.

use std::ops::Range;

/// Boundaries for prose, in priority order.
pub const PROSE_BOUNDARIES: &[&str] = &[
    "\n\n", "\n\r\n", ". ", "! ", "? ", ".\n", "!\n", "?\n", "\n", " ",
];

/// Boundaries for atomic blocks (code, tables, lists) that do not fit: whole lines first.
pub const LINE_BOUNDARIES: &[&str] = &["\n\n", "\n", " "];

/// Splits `text` into trimmed, non-empty byte ranges of at most `max` characters each.
pub fn split_text(
    text: &str,
    max: usize,
    overlap: usize,
    boundaries: &[&str],
) -> Vec<Range<usize>> {
    let max = max.max(1);
    let overlap = overlap.min(max / 2);
    let mut out = Vec::new();
    if char_len_at_most(text, max) {
        push_trimmed(text, 0..text.len(), &mut out);
        return out;
    }
    let n = text.len();
    let mut start = 0;
    while start < n {
        let mut end = advance_chars(text, start, max);
        if end < n {
            let window = &text[start..end];
            for b in boundaries {
                if let Some(p) = window.rfind(b)
                    && p > 0
                {
                    end = start + p + b.len();
                    break;
                }
            }
        }
        push_trimmed(text, start..end, &mut out);
        if end >= n {
            break;
        }
        let mut next = end;
        if overlap > 0 {
            let back = retreat_chars(text, end, overlap).max(start + 1);
            // Start the overlap at a word boundary inside it, if there is one.
            let back = (back..end)
                .find(|&i| {
                    text.is_char_boundary(i)
                        && i > 0
                        && text.as_bytes()[i - 1].is_ascii_whitespace()
                })
                .unwrap_or(end);
            next = back;
        }
        start = if next > start { next } else { end };
    }
    out
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let piece = &text[range.clone()];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        let s = range.start + lead;
        out.push(s..s + trimmed.len());
    }
}

/// True if `text` has at most `max` characters (stops counting early).
pub fn char_len_at_most(text: &str, max: usize) -> bool {
    if text.len() <= max {
        return true;
    }
    text.chars().nth(max).is_none()
}

/// The byte index `count` characters after `from` (or the end).
fn advance_chars(text: &str, from: usize, count: usize) -> usize {
    let rest = &text[from..];
    if rest.len() <= count {
        return text.len();
    }
    match rest.char_indices().nth(count) {
        Some((i, _)) => from + i,
        None => text.len(),
    }
}

/// The byte index `count` characters before `to` (or 0).
fn retreat_chars(text: &str, to: usize, count: usize) -> usize {
    match text[..to].char_indices().rev().nth(count.saturating_sub(1)) {
        Some((i, _)) => i,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, max: usize, overlap: usize) -> Vec<&str> {
        split_text(text, max, overlap, PROSE_BOUNDARIES)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn short_text_is_one_trimmed_piece() {
        assert_eq!(pieces("  hello  ", 500, 0), vec!["hello"]);
        assert!(pieces("   ", 500, 0).is_empty());
    }

    #[test]
    fn long_text_breaks_at_the_best_boundary_in_its_window() {
        let text = "First sentence here. Second sentence here.\n\nNew paragraph.";
        assert_eq!(
            pieces(text, 45, 0),
            vec![
                "First sentence here. Second sentence here.",
                "New paragraph."
            ]
        );
        assert_eq!(
            pieces(text, 30, 0),
            vec![
                "First sentence here.",
                "Second sentence here.",
                "New paragraph."
            ]
        );
    }

    #[test]
    fn no_boundary_means_a_hard_cut_and_nothing_is_lost() {
        let text = "x".repeat(1234);
        let p = pieces(&text, 500, 0);
        assert_eq!(
            p.iter().map(|s| s.len()).collect::<Vec<_>>(),
            vec![500, 500, 234]
        );
    }

    #[test]
    fn sizes_count_characters_not_bytes() {
        let text = "é".repeat(30);
        let p = pieces(&text, 10, 0);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|s| s.chars().count() == 10));
    }

    #[test]
    fn overlap_repeats_the_tail_of_the_previous_piece() {
        let text = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
        let p = pieces(text, 20, 8);
        assert!(p.len() >= 3, "{p:?}");
        for w in p.windows(2) {
            let last_word = w[0].split(' ').next_back().unwrap();
            assert!(w[1].starts_with(last_word), "{p:?}");
        }
        let joined: String = p.join(" ");
        for word in text.split(' ') {
            assert!(joined.contains(word));
        }
    }
}
