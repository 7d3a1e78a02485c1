//! Topic validation and `fnmatch`-style glob patterns (the original matches with Python's
//! `fnmatch.fnmatch`: `*` matches anything including `:` and `/`, `?` one character, `[seq]`,
//! `[!seq]`, case-sensitive).

use crate::error::EventBusError;

/// The longest topic or pattern accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Checks a bus topic: 1..=255 bytes, no whitespace or control characters, and none of the glob
/// characters `* ? [ ]` (so a topic can never be mistaken for a pattern on any transport).
pub fn validate_topic(topic: &str) -> Result<(), EventBusError> {
    let reject = |reason: String| {
        Err(EventBusError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    if topic.is_empty() {
        return reject("a topic must not be empty".into());
    }
    if topic.len() > MAX_TOPIC_LEN {
        return reject(format!(
            "{} bytes is longer than the {MAX_TOPIC_LEN}-byte limit",
            topic.len()
        ));
    }
    if let Some(c) = topic.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return reject(format!(
            "contains whitespace or a control character ({c:?})"
        ));
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '*' | '?' | '[' | ']')) {
        return reject(format!(
            "contains the glob character {c:?}; use subscribe_pattern for patterns"
        ));
    }
    Ok(())
}

/// A compiled `fnmatch` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyMany,
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles `pattern`: 1..=255 bytes, no whitespace or control characters.
    pub fn new(pattern: &str) -> Result<Glob, EventBusError> {
        let reject = |reason: String| {
            Err(EventBusError::InvalidPattern {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        if pattern.is_empty() {
            return reject("a pattern must not be empty".into());
        }
        if pattern.len() > MAX_TOPIC_LEN {
            return reject(format!(
                "{} bytes is longer than the {MAX_TOPIC_LEN}-byte limit",
                pattern.len()
            ));
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return reject(format!(
                "contains whitespace or a control character ({c:?})"
            ));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::AnyMany) {
                        tokens.push(Token::AnyMany);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => match parse_set(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
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
        Ok(Glob {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcard at all (it then matches only itself).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `topic` matches, with `fnmatch.fnmatchcase` semantics.
    pub fn matches(&self, topic: &str) -> bool {
        let text: Vec<char> = topic.chars().collect();
        let (mut t, mut p) = (0usize, 0usize);
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::AnyMany) => {
                    backtrack = Some((p, t));
                    p += 1;
                    continue;
                }
                Some(token) if token_matches(token, text[t]) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match backtrack {
                Some((star_p, star_t)) => {
                    backtrack = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::AnyMany)
    }

    /// The equivalent Redis `PSUBSCRIBE` glob (Redis escapes with `\` and negates with `^`).
    pub fn to_redis_glob(&self) -> String {
        let mut out = String::with_capacity(self.source.len() + 4);
        for token in &self.tokens {
            match token {
                Token::AnyMany => out.push('*'),
                Token::AnyOne => out.push('?'),
                Token::Literal(c) => push_redis_literal(&mut out, *c),
                Token::Set { negated, ranges } => {
                    out.push('[');
                    if *negated {
                        out.push('^');
                    }
                    for (lo, hi) in ranges {
                        push_redis_literal(&mut out, *lo);
                        if lo != hi {
                            out.push('-');
                            push_redis_literal(&mut out, *hi);
                        }
                    }
                    out.push(']');
                }
            }
        }
        out
    }
}

fn push_redis_literal(out: &mut String, c: char) {
    if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
        out.push('\\');
    }
    out.push(c);
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::AnyMany => true,
        Token::Set { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

/// Parses `[...]` at `start` the way Python's `fnmatch.translate` does; `None` if unterminated.
fn parse_set(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut j = start + 1;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() && chars[j] != ']' {
        j += 1;
    }
    if j >= chars.len() {
        return None;
    }
    let mut body = &chars[start + 1..j];
    let negated = body.first() == Some(&'!');
    if negated {
        body = &body[1..];
    }
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            let (lo, hi) = (body[k], body[k + 2]);
            // Python drops reversed ranges such as `z-a`.
            if lo <= hi {
                ranges.push((lo, hi));
            }
            k += 3;
        } else {
            ranges.push((body[k], body[k]));
            k += 1;
        }
    }
    Some((Token::Set { negated, ranges }, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    #[test]
    fn fnmatch_semantics() {
        assert!(m("registry:*", "registry:bots"));
        assert!(m("registry:*", "registry:users"));
        assert!(!m("registry:*", "other:topic"));
        assert!(m("*", "a/b:c"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[ab]x", "bx"));
        assert!(!m("[!ab]x", "bx"));
        assert!(m("[!ab]x", "cx"));
        assert!(m("[a-c]*", "beta"));
        assert!(m("[]]", "]"));
        assert!(m("a[", "a["));
        assert!(m("*:*:end", "ingest:domain:end"));
        assert!(!m("*:*:end", "ingest:domain:start"));
        assert!(!m("Registry:*", "registry:x"));
        assert!(m("a*b*c", "aXXbYYbc"));
    }

    #[test]
    fn topic_validation() {
        assert!(validate_topic("registry:bots").is_ok());
        assert!(validate_topic("événement").is_ok());
        for bad in ["", "my topic", "a*", "a?b", "x[1]", "tab\t"] {
            let err = validate_topic(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(validate_topic(&"x".repeat(256)).is_err());
    }

    #[test]
    fn redis_glob_translation() {
        assert_eq!(
            Glob::new("registry:*").unwrap().to_redis_glob(),
            "registry:*"
        );
        assert_eq!(Glob::new("[!a-c]?").unwrap().to_redis_glob(), "[^a-c]?");
        assert_eq!(Glob::new("a\\b^").unwrap().to_redis_glob(), "a\\\\b\\^");
    }
}
