//! `${VAR}`, `${VAR:default}`, `${VAR:-default}` and `${VAR:?message}` in one string.
//!
//! The grammar is the original's regex `\$\{([^}:]+)(?::([-?]?)([^}]*))?\}`: a name of one or
//! more characters other than `}` and `:`, an optional `:` with an optional `-` or `?` modifier
//! and a default that cannot contain `}`. Text that does not match (an unclosed `${`, `${}`,
//! `$VAR` without braces) is kept literally, and substituted values are never rescanned, so
//! substitution always terminates and a value containing `${X}` stays as it is.
//!
//! **Empty variables** (the original's gap): a variable that is set
//! to the empty string counts as **unset** in every form, like bash's `${VAR:-default}` and
//! `${VAR:?}`. `${VAR:default}` and `${VAR:-default}` give the default; `${VAR}` and
//! `${VAR:?msg}` are a missing-variable error. Write `${VAR:}` to accept an empty value.
//! Unlike the original, no `~` expansion is done on any string.

/// How a missing variable with no default is handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// An error naming the variable (the default).
    #[default]
    Error,
    /// The placeholder is kept literally (e.g. `${RDS_HOST}`) and reported as unresolved.
    Keep,
}

/// One placeholder that had no value and no default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The variable.
    pub var: String,
    /// The `${VAR:?message}` text, if any.
    pub message: Option<String>,
}

/// The result of substituting one string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Substituted {
    /// The text after substitution.
    pub text: String,
    /// Whether any placeholder was found.
    pub changed: bool,
    /// `(variable, value)` for every value taken from the variable source (not defaults).
    pub used: Vec<(String, String)>,
    /// Placeholders left in place ([`Missing::Keep`] only).
    pub unresolved: Vec<Unresolved>,
}

struct Placeholder<'a> {
    end: usize,
    name: &'a str,
    modifier: Option<char>,
    default: Option<&'a str>,
}

/// Parses a placeholder starting at `start` (which points at `${`).
fn parse_at(s: &str, start: usize) -> Option<Placeholder<'_>> {
    let rest = &s[start + 2..];
    let name_len = rest.find(['}', ':']).unwrap_or(rest.len());
    if name_len == 0 || name_len == rest.len() {
        return None;
    }
    let name = &rest[..name_len];
    let after = &rest[name_len..];
    if after.starts_with('}') {
        return Some(Placeholder {
            end: start + 2 + name_len + 1,
            name,
            modifier: None,
            default: None,
        });
    }
    // after starts with ':'
    let mut body = &after[1..];
    let mut consumed = 1;
    let modifier = match body.chars().next() {
        Some(c @ ('-' | '?')) => {
            body = &body[1..];
            consumed += 1;
            Some(c)
        }
        _ => None,
    };
    let close = body.find('}')?;
    Some(Placeholder {
        end: start + 2 + name_len + consumed + close + 1,
        name,
        modifier,
        default: Some(&body[..close]),
    })
}

/// Substitutes every placeholder of `s` from `lookup`. With [`Missing::Error`] the first
/// variable that is unset (or empty) with no default is returned as the error.
pub fn substitute_str(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: Missing,
) -> Result<Substituted, Unresolved> {
    let mut out = Substituted::default();
    if !s.contains("${") {
        out.text = s.to_owned();
        return Ok(out);
    }
    let mut text = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(rel) = s[i..].find("${") {
        let start = i + rel;
        let Some(p) = parse_at(s, start) else {
            // Not a placeholder here: keep the `$` and scan on from the next character.
            text.push_str(&s[i..start + 1]);
            i = start + 1;
            continue;
        };
        text.push_str(&s[i..start]);
        out.changed = true;
        let value = lookup(p.name).filter(|v| !v.is_empty());
        match (value, p.modifier, p.default) {
            (Some(v), _, _) => {
                text.push_str(&v);
                out.used.push((p.name.to_owned(), v));
            }
            (None, Some('?'), msg) => {
                let u = Unresolved {
                    var: p.name.to_owned(),
                    message: msg.filter(|m| !m.is_empty()).map(str::to_owned),
                };
                match missing {
                    Missing::Error => return Err(u),
                    Missing::Keep => {
                        text.push_str(&s[start..p.end]);
                        out.unresolved.push(u);
                    }
                }
            }
            (None, _, Some(default)) => text.push_str(default),
            (None, _, None) => {
                let u = Unresolved {
                    var: p.name.to_owned(),
                    message: None,
                };
                match missing {
                    Missing::Error => return Err(u),
                    Missing::Keep => {
                        text.push_str(&s[start..p.end]);
                        out.unresolved.push(u);
                    }
                }
            }
        }
        i = p.end;
    }
    text.push_str(&s[i..]);
    out.text = text;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${HOST}".into()),
            _ => None,
        }
    }

    fn sub(s: &str) -> Result<String, Unresolved> {
        substitute_str(s, &env, Missing::Error).map(|r| r.text)
    }

    #[test]
    fn plain_and_defaulted_placeholders() {
        assert_eq!(sub("${HOST}").unwrap(), "db.internal");
        assert_eq!(
            sub("pg://${HOST}:${PORT:5432}/x").unwrap(),
            "pg://db.internal:5432/x"
        );
        assert_eq!(sub("${PORT:-5432}").unwrap(), "5432");
        assert_eq!(sub("${HOST:ignored}").unwrap(), "db.internal");
        assert_eq!(sub("${MISSING:}").unwrap(), "");
        assert_eq!(
            sub("${DATA_DIR:./data}/knowledge").unwrap(),
            "./data/knowledge"
        );
        assert_eq!(sub("no placeholder ~/x").unwrap(), "no placeholder ~/x");
    }

    #[test]
    fn empty_counts_as_unset() {
        assert_eq!(sub("${EMPTY:fallback}").unwrap(), "fallback");
        assert_eq!(sub("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(sub("${EMPTY}").unwrap_err().var, "EMPTY");
        assert_eq!(sub("${EMPTY:}").unwrap(), "");
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let e = sub("x ${RDS_HOST} y").unwrap_err();
        assert_eq!(e.var, "RDS_HOST");
        assert_eq!(e.message, None);
        let e = sub("${TOKEN:?set TOKEN to the API token}").unwrap_err();
        assert_eq!(
            (e.var.as_str(), e.message.as_deref()),
            ("TOKEN", Some("set TOKEN to the API token"))
        );
        assert_eq!(sub("${TOKEN:?}").unwrap_err().message, None);
        assert_eq!(sub("${HOST:?unused}").unwrap(), "db.internal");
    }

    #[test]
    fn lenient_mode_keeps_the_placeholder() {
        let r = substitute_str("a ${X} b ${Y:?why} ${HOST}", &env, Missing::Keep).unwrap();
        assert_eq!(r.text, "a ${X} b ${Y:?why} db.internal");
        assert_eq!(r.unresolved.len(), 2);
        assert_eq!(r.unresolved[1].message.as_deref(), Some("why"));
    }

    #[test]
    fn non_placeholders_stay_literal_and_values_are_not_rescanned() {
        assert_eq!(
            sub("$HOST ${} ${ unclosed").unwrap(),
            "$HOST ${} ${ unclosed"
        );
        assert_eq!(sub("${NESTED}").unwrap(), "${HOST}");
        // No nesting: the default stops at the first `}`, as in the original's regex.
        assert_eq!(sub("${MISSING:${HOST}}").unwrap(), "${HOST}");
        assert_eq!(sub("$${HOST}").unwrap(), "$db.internal");
    }

    #[test]
    fn records_values_taken_from_the_environment_only() {
        let r = substitute_str("${HOST}/${PORT:1}", &env, Missing::Error).unwrap();
        assert!(r.changed);
        assert_eq!(r.used, vec![("HOST".to_owned(), "db.internal".to_owned())]);
        let r = substitute_str("plain", &env, Missing::Error).unwrap();
        assert!(!r.changed && r.used.is_empty());
    }
}
