//! Tenant scope of state operations: which status document and which
//! snapshot lineage an `*_in` call of [`crate::KnowledgeBackend`] reads and writes.
//!
//! Content is never tenant-scoped: every tenant of a knowledge base reads the same files. Only
//! the ingestion status (status, error, generation, vector store path) and the snapshots handed
//! out by `get_checksum_in` / `list_changes_since_in` are kept per tenant, under
//! `_scoped/{prefix}` beside the knowledge bases (a domain id cannot start with `_`, so no
//! knowledge base can name or contain that subtree).
//!
//! The original's contexts also carry a `domain_id`; its backends ignore it except inside a
//! `PrefixedTenantContext` pattern. Here the domain always comes from the call, and a
//! `{domain_id}` placeholder is filled with it — the same key whenever the two agree, which is
//! how the original's ingestion manager builds its contexts.

use crate::error::{KnowledgeError, Result};
use crate::names::{METADATA_FILE, SCOPED_STATE_ROOT, SNAPSHOTS_DIR};

/// The tenant scope of a state operation. [`TenantContext::SingleTenant`] (the default) is the
/// shared, domain-keyed state the unsuffixed methods of [`crate::KnowledgeBackendExt`] use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TenantContext {
    /// No tenant: the domain-keyed state (`{domain}/_metadata.json`), byte-identical to the
    /// pre-tenancy layout.
    #[default]
    SingleTenant,
    /// Strict per-tenant state under `_scoped/tenants/{tenant_id}/_state/`.
    Bound {
        /// One path segment.
        tenant_id: String,
    },
    /// Per-tenant state over a shared corpus; the state prefix is the same as `Bound`'s
    /// (`shared_corpus_id` keys the corpus in layers above storage).
    SharedCorpus {
        /// One path segment.
        tenant_id: String,
        /// The shared corpus this tenant's view belongs to.
        shared_corpus_id: String,
    },
    /// A consumer-chosen prefix: `prefix_pattern` with the placeholders `{tenant_id}`,
    /// `{domain_id}` and `{operation}` (formatted as `""`), `{{` and `}}` for braces. The
    /// result must be a canonical relative path; a trailing `/` is added if missing.
    Prefixed {
        /// One path segment.
        tenant_id: String,
        /// For example `"clients/{tenant_id}/"`.
        prefix_pattern: String,
    },
}

impl TenantContext {
    /// A [`TenantContext::Bound`] context.
    pub fn bound(tenant_id: impl Into<String>) -> Self {
        Self::Bound {
            tenant_id: tenant_id.into(),
        }
    }

    /// A [`TenantContext::SharedCorpus`] context.
    pub fn shared_corpus(
        tenant_id: impl Into<String>,
        shared_corpus_id: impl Into<String>,
    ) -> Self {
        Self::SharedCorpus {
            tenant_id: tenant_id.into(),
            shared_corpus_id: shared_corpus_id.into(),
        }
    }

    /// A [`TenantContext::Prefixed`] context.
    pub fn prefixed(tenant_id: impl Into<String>, prefix_pattern: impl Into<String>) -> Self {
        Self::Prefixed {
            tenant_id: tenant_id.into(),
            prefix_pattern: prefix_pattern.into(),
        }
    }

    /// The tenant, or `None` for the single-tenant context.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Self::SingleTenant => None,
            Self::Bound { tenant_id }
            | Self::SharedCorpus { tenant_id, .. }
            | Self::Prefixed { tenant_id, .. } => Some(tenant_id),
        }
    }

    /// True for [`TenantContext::SingleTenant`].
    pub fn is_single_tenant(&self) -> bool {
        matches!(self, Self::SingleTenant)
    }

    /// The context's own projection, the original's `state_key_prefix()`: `""` for the single
    /// tenant, `"tenants/{tenant_id}/_state/"` for `Bound` and `SharedCorpus`, the formatted
    /// pattern for `Prefixed`. Not validated; see [`TenantContext::state_prefix`].
    pub fn state_key_prefix(&self, domain_id: &str) -> Result<String> {
        match self {
            Self::SingleTenant => Ok(String::new()),
            Self::Bound { tenant_id } | Self::SharedCorpus { tenant_id, .. } => {
                Ok(format!("tenants/{tenant_id}/_state/"))
            }
            Self::Prefixed {
                tenant_id,
                prefix_pattern,
            } => format_pattern(prefix_pattern, tenant_id, domain_id),
        }
    }

    /// What backends put before `{domain}/_metadata.json` and `{domain}/_snapshots/`: `""`
    /// for the single tenant, otherwise `"_scoped/" + state_key_prefix` with exactly one
    /// trailing `/`. Refused (with [`KnowledgeError::InvalidTenantContext`]): a tenant id that
    /// is not one segment, a pattern with an unknown placeholder or unbalanced braces, and a
    /// prefix that is empty, absolute or not canonical (`..`, `.`, `//`, `\`, control
    /// characters) or that uses a name of the layout (`_snapshots`, `_metadata.json…`).
    pub fn state_prefix(&self, domain_id: &str) -> Result<String> {
        let Some(tenant_id) = self.tenant_id() else {
            return Ok(String::new());
        };
        check_tenant_id(tenant_id)?;
        let raw = self.state_key_prefix(domain_id)?;
        let refuse = |reason| {
            Err(KnowledgeError::InvalidTenantContext {
                tenant_id: tenant_id.to_owned(),
                value: raw.clone(),
                reason,
            })
        };
        let trimmed = raw.trim_end_matches('/');
        if trimmed.is_empty() {
            return refuse(
                "the state prefix is empty (that is the single-tenant state; use SingleTenant)",
            );
        }
        if trimmed.starts_with('/') {
            return refuse("the state prefix must be relative, not absolute");
        }
        for segment in trimmed.split('/') {
            if let Err(reason) = check_segment(segment) {
                return refuse(reason);
            }
            if segment == SNAPSHOTS_DIR || segment.starts_with(METADATA_FILE) {
                return refuse(
                    "the state prefix uses a name of the layout (_snapshots, _metadata.json)",
                );
            }
        }
        Ok(format!("{SCOPED_STATE_ROOT}/{trimmed}/"))
    }

    /// Checks the context without using it (the same checks as [`TenantContext::state_prefix`]
    /// for a representative domain).
    pub fn validate(&self) -> Result<()> {
        self.state_prefix("domain").map(drop)
    }
}

/// One path segment: not blank, not `.`/`..`, no `/`, `\` or control characters, ≤ 200 bytes.
fn check_segment(segment: &str) -> std::result::Result<(), &'static str> {
    if segment.trim().is_empty() {
        Err("empty path segment")
    } else if segment == "." || segment == ".." {
        Err("'.' or '..' segment")
    } else if segment.contains(['/', '\\']) {
        Err("a segment must not contain '/' or '\\'")
    } else if segment.chars().any(char::is_control) {
        Err("NUL or control character")
    } else if segment.len() > 200 {
        Err("a segment is longer than 200 bytes")
    } else {
        Ok(())
    }
}

fn check_tenant_id(tenant_id: &str) -> Result<()> {
    check_segment(tenant_id).map_err(|reason| KnowledgeError::InvalidTenantContext {
        tenant_id: tenant_id.to_owned(),
        value: tenant_id.to_owned(),
        reason: match reason {
            "empty path segment" => "tenant_id must not be empty",
            _ => "tenant_id must be a single path segment",
        },
    })
}

/// Python `str.format` of a prefix pattern with the three placeholders the original accepts.
fn format_pattern(pattern: &str, tenant_id: &str, domain_id: &str) -> Result<String> {
    let refuse = |reason| {
        Err(KnowledgeError::InvalidTenantContext {
            tenant_id: tenant_id.to_owned(),
            value: pattern.to_owned(),
            reason,
        })
    };
    let mut out = String::with_capacity(pattern.len() + tenant_id.len() + domain_id.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => return refuse("unbalanced '{' in prefix_pattern"),
                    }
                }
                match name.as_str() {
                    "tenant_id" => out.push_str(tenant_id),
                    "domain_id" => out.push_str(domain_id),
                    "operation" => {}
                    _ => {
                        return refuse(
                            "unknown placeholder in prefix_pattern; only {tenant_id}, {domain_id} and {operation} are supported",
                        );
                    }
                }
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => return refuse("single '}' in prefix_pattern (write '}}')"),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_original_formulas() {
        assert_eq!(TenantContext::SingleTenant.state_prefix("kb").unwrap(), "");
        assert_eq!(
            TenantContext::bound("acme").state_prefix("kb").unwrap(),
            "_scoped/tenants/acme/_state/"
        );
        assert_eq!(
            TenantContext::shared_corpus("acme", "corpus")
                .state_prefix("kb")
                .unwrap(),
            "_scoped/tenants/acme/_state/"
        );
        assert_eq!(
            TenantContext::bound("acme").state_key_prefix("kb").unwrap(),
            "tenants/acme/_state/"
        );
        // A missing trailing separator is restored, so tenants "a"+"bc" and "ab"+"c" differ.
        let p = TenantContext::prefixed("a", "t-{tenant_id}");
        assert_eq!(p.state_prefix("bc").unwrap(), "_scoped/t-a/");
        let p = TenantContext::prefixed("acme", "{{x}}/{tenant_id}-{domain_id}{operation}//");
        assert_eq!(p.state_prefix("kb").unwrap(), "_scoped/{x}/acme-kb/");
    }

    #[test]
    fn bad_contexts_are_refused_naming_the_tenant_and_value() {
        let cases = [
            TenantContext::bound(""),
            TenantContext::bound("a/b"),
            TenantContext::bound(".."),
            TenantContext::bound("nul\0"),
            TenantContext::bound("_snapshots"),
            TenantContext::prefixed("t", ""),
            TenantContext::prefixed("t", "/"),
            TenantContext::prefixed("t", "/abs/{tenant_id}"),
            TenantContext::prefixed("t", "a/../{tenant_id}"),
            TenantContext::prefixed("t", "a//{tenant_id}"),
            TenantContext::prefixed("t", "./{tenant_id}"),
            TenantContext::prefixed("t", "a\\{tenant_id}"),
            TenantContext::prefixed("t", "{tenant}"),
            TenantContext::prefixed("t", "{tenant_id"),
            TenantContext::prefixed("t", "x}"),
            TenantContext::prefixed("t", "{tenant_id!r}"),
            TenantContext::prefixed("t", "{tenant_id}/_metadata.json"),
        ];
        for ctx in cases {
            let err = ctx.state_prefix("kb").unwrap_err();
            assert!(err.is_refusal(), "{ctx:?}");
            assert!(
                matches!(err, KnowledgeError::InvalidTenantContext { .. }),
                "{ctx:?}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains("tenant"), "{msg}");
            assert!(ctx.validate().is_err());
        }
        let err = TenantContext::prefixed("acme", "{bogus}/")
            .state_prefix("kb")
            .unwrap_err();
        assert!(err.to_string().contains("{bogus}/") && err.to_string().contains("acme"));
    }

    #[test]
    fn accessors() {
        assert_eq!(TenantContext::default(), TenantContext::SingleTenant);
        assert!(TenantContext::default().is_single_tenant());
        assert_eq!(TenantContext::bound("a").tenant_id(), Some("a"));
        assert_eq!(TenantContext::SingleTenant.tenant_id(), None);
        assert!(!TenantContext::prefixed("a", "p/").is_single_tenant());
    }
}
