//! Glob patterns over knowledge-base paths, with the original's two dialects.
//!
//! - **Enumeration** ([`Glob::matches`]): the pattern is anchored at both ends; `*` and `?` stay
//!   inside one folder, `**/` spans any number of folders (also none), `**` elsewhere matches
//!   anything. So `*.md` matches root files only and `**/*.md` every markdown file.
//! - **Pattern and exclude rules** ([`Glob::matches_rule`]): a pattern containing `**` uses the
//!   enumeration rules but is right-anchored at a folder boundary (`docs/**/*.md` also matches
//!   `site/docs/a/b.md`); any other pattern is an `fnmatch` pattern whose `*` crosses folders,
//!   so the exclude `*.tmp` drops every `.tmp` file.
//!
//! Both dialects accept `[abc]`, `[a-z]` and `[!abc]` classes. Matching is a dynamic program
//! over (pattern position, path position): linear in their product, never exponential.

/// One compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
    recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**/`: zero or more whole folders.
    Folders,
    /// `**` not followed by `/`.
    Anything,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles `pattern`; every string is a valid pattern (an unclosed `[` is a literal).
    pub fn new(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    if chars.get(i + 2) == Some(&'/') {
                        tokens.push(Token::Folders);
                        i += 3;
                    } else {
                        tokens.push(Token::Anything);
                        i += 2;
                    }
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => match parse_class(&chars[i + 1..]) {
                    Some((token, used)) => {
                        tokens.push(token);
                        i += 1 + used;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Glob {
            source: pattern.to_owned(),
            recursive: pattern.contains("**"),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Enumeration match: anchored at both ends, `*` inside one folder.
    pub fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        matches_tokens(&self.tokens, &path, false)
    }

    /// Pattern/exclude match: right-anchored enumeration rules for a `**` pattern, `fnmatch`
    /// (whose `*` crosses folders) otherwise.
    pub fn matches_rule(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        if !self.recursive {
            return matches_tokens(&self.tokens, &chars, true);
        }
        if matches_tokens(&self.tokens, &chars, false) {
            return true;
        }
        chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .any(|(i, _)| matches_tokens(&self.tokens, &chars[i + 1..], false))
    }

    /// The literal folder prefix every match starts with (up to and including its last `/`),
    /// used to narrow a listing: `docs/*.md` gives `docs/`, `**/*.md` gives the empty string.
    pub fn literal_prefix(&self) -> String {
        let mut literal = String::new();
        for t in &self.tokens {
            match t {
                Token::Literal(c) => literal.push(*c),
                _ => break,
            }
        }
        match literal.rfind('/') {
            Some(i) => literal[..=i].to_owned(),
            None => String::new(),
        }
    }
}

/// `[...]` after the `[`: the class token and the characters it used (including `]`).
fn parse_class(chars: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && i > first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|e| *e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

fn class_matches(negated: bool, ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != negated
}

/// `reach[j]` = the pattern prefix consumed so far can end at path position `j`.
fn matches_tokens(tokens: &[Token], path: &[char], star_crosses: bool) -> bool {
    let n = path.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        match token {
            Token::Literal(l) => {
                for j in 0..n {
                    if reach[j] && path[j] == *l {
                        next[j + 1] = true;
                    }
                }
            }
            Token::One => {
                for j in 0..n {
                    if reach[j] && (star_crosses || path[j] != '/') {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Class { negated, ranges } => {
                for j in 0..n {
                    if reach[j]
                        && (star_crosses || path[j] != '/')
                        && class_matches(*negated, ranges, path[j])
                    {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Star => {
                let mut on = false;
                for j in 0..=n {
                    if reach[j] {
                        on = true;
                    }
                    if on {
                        next[j] = true;
                    }
                    if j < n && path[j] == '/' && !star_crosses {
                        on = false;
                    }
                }
            }
            Token::Anything => {
                let mut on = false;
                for j in 0..=n {
                    on |= reach[j];
                    next[j] = on;
                }
            }
            Token::Folders => {
                // Zero folders, or any run of characters ending with '/'.
                let mut on = false;
                for j in 0..=n {
                    if reach[j] {
                        next[j] = true;
                        on = true;
                    }
                    if on && j > 0 && path[j - 1] == '/' {
                        next[j] = true;
                    }
                }
            }
        }
        reach = next;
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn star_stays_in_one_folder_and_double_star_slash_spans_folders() {
        let root = Glob::new("*.md");
        assert!(root.matches("a.md"));
        assert!(!root.matches("docs/a.md"));
        let all = Glob::new("**/*.md");
        assert!(all.matches("a.md"));
        assert!(all.matches("docs/a.md"));
        assert!(all.matches("docs/deep/a.md"));
        assert!(!all.matches("docs/a.mdx"));
        let mid = Glob::new("docs/**/*.md");
        assert!(mid.matches("docs/a.md"));
        assert!(mid.matches("docs/x/y/a.md"));
        assert!(!mid.matches("other/a.md"));
        assert!(Glob::new("docs/**").matches("docs/x/y.txt"));
        assert!(Glob::new("?.md").matches("a.md"));
        assert!(!Glob::new("?.md").matches("ab.md"));
        assert!(Glob::new("[ab]*.md").matches("b1.md"));
        assert!(!Glob::new("[!ab]*.md").matches("b1.md"));
        assert!(Glob::new("x[a-c].md").matches("xb.md"));
        assert!(Glob::new("x[.md").matches("x[.md"));
    }

    #[test]
    fn rules_use_fnmatch_without_double_star_and_right_anchoring_with_it() {
        assert!(Glob::new("*.tmp").matches_rule("a/b/c.tmp"));
        assert!(Glob::new("drafts/*").matches_rule("drafts/x/y.md"));
        assert!(!Glob::new("drafts/*").matches_rule("site/drafts/y.md"));
        assert!(Glob::new("drafts/**/*.md").matches_rule("site/drafts/y.md"));
        assert!(!Glob::new("drafts/**/*.md").matches_rule("sitedrafts/y.md"));
    }

    #[test]
    fn literal_prefix_stops_at_the_last_folder_before_a_wildcard() {
        assert_eq!(Glob::new("docs/api/*.md").literal_prefix(), "docs/api/");
        assert_eq!(Glob::new("docs/a*.md").literal_prefix(), "docs/");
        assert_eq!(Glob::new("**/*.md").literal_prefix(), "");
        assert_eq!(Glob::new("readme.md").literal_prefix(), "");
    }
}
