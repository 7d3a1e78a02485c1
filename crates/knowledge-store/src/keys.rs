//! The key layout every backend shares: the key of every
//! object a backend writes, the watch patterns over them ([`KeyLayout::key_pattern`]) and the
//! classification of a key someone observed ([`KeyLayout::classify_key`]).
//!
//! ```text
//! {root}{domain}/content/<path>                  content (never tenant-scoped)
//! {root}{state}{domain}/_metadata.json           metadata (index and status)
//! {root}{state}{domain}/_snapshots/<id>.json     snapshots
//! ```
//!
//! The backends' own journals count as metadata: the file backend's
//! `{root}{domain}/_dynreg/journal.jsonl` and the S3 backend's records
//! `{root}{domain}/_dynreg/journal/<epoch>/<seq>.json`. Their writes are reported on the
//! `_metadata.json` key, the index they extend.
//!
//! `{root}` is the backend's: the absolute base folder plus `/` (file), the key prefix (S3),
//! `""` (memory). `{state}` is `""` for the single tenant and `_scoped/…/` for a tenant
//! ([`TenantContext::state_prefix`]).
//!
//! **Classification is positional** (fixing the original's bug): the key is read relative
//! to `{root}`, its first segment is the domain (or `_scoped`), and only the segment *after the
//! domain* decides — not "any segment equals `content`". So a knowledge base named `content`
//! has its `_metadata.json` classified as metadata, and an S3 prefix or base folder that
//! contains a `content` segment changes nothing. Two consequences differ from the original's
//! rule and are deliberate: `foo/_snapshots/content/x.json` is `Unknown` (snapshots are one
//! flat folder, and `content` there is not the content folder), and a key outside `{root}` is
//! `Unknown`.
//!
//! Patterns are `fnmatch` globs (what `dynreg-event-bus` subscriptions take) in which `*`
//! also matches `/`; the literal parts are escaped (`*` `?` `[` as `[*]` `[?]` `[[]`), so a
//! root or name containing a glob character matches only itself. Because `*` crosses `/`, a
//! wildcard-domain pattern also matches deeper keys (`{root}*/_metadata.json` matches a content
//! file named `_metadata.json`); the bus bridge `dynreg_hot_reload::subscribe_to_changes`
//! therefore delivers only keys that [`KeyLayout::parse_key`] puts in the requested kind,
//! domain and tenant scope.

use std::borrow::Cow;

use crate::error::{KnowledgeError, Result};
use crate::events::KnowledgeKeyKind;
use crate::names::{
    CONTENT_DIR, JOURNAL_DIR, JOURNAL_FILE, METADATA_FILE, SCOPED_STATE_ROOT, SNAPSHOTS_DIR,
};
use crate::paths::validate_domain_id;
use crate::tenant::TenantContext;

/// How a backend's keys are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStyle {
    /// Filesystem paths (file backend): content pattern `…/content/**`, the journal counts as
    /// metadata.
    Directory,
    /// Object keys (S3, memory): content pattern `…/content/*`.
    Object,
}

/// What a key is, read positionally ([`KeyLayout::parse_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'k> {
    /// Content, metadata or snapshot (never `Unknown`: unknown keys do not parse).
    pub kind: KnowledgeKeyKind,
    /// The knowledge base.
    pub domain_id: &'k str,
    /// `""` for the single-tenant state (and for all content), else `_scoped/…/`.
    pub state_prefix: &'k str,
    /// What follows the domain's slot: the resource path (content), the snapshot file name
    /// (snapshot), `_metadata.json` or the journal (metadata).
    pub name: &'k str,
}

/// One backend's key layout: its root and style. Equal layouts classify every key alike (the
/// original's `BackendKeyDiscriminator`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    root: String,
    style: KeyStyle,
}

/// Escapes the glob characters of a literal.
fn glob_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['*', '?', '[']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl KeyLayout {
    /// A filesystem layout under `base` (an absolute folder path; a trailing `/` is optional).
    pub fn directory(base: &str) -> Self {
        Self {
            root: format!("{}/", base.trim_end_matches('/')),
            style: KeyStyle::Directory,
        }
    }

    /// An object-key layout under `prefix` (`""`, or normalised to end in `/`).
    pub fn object(prefix: &str) -> Self {
        let t = prefix.trim_end_matches('/');
        Self {
            root: if t.is_empty() {
                String::new()
            } else {
                format!("{t}/")
            },
            style: KeyStyle::Object,
        }
    }

    /// The root every key starts with (`""` or ending in `/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The style.
    pub fn style(&self) -> KeyStyle {
        self.style
    }

    /// `{root}{domain}/`: everything of one knowledge base except tenant state.
    pub fn domain_root(&self, domain_id: &str) -> String {
        format!("{}{domain_id}/", self.root)
    }

    /// `{root}{domain}/content/{path}`.
    pub fn content_key(&self, domain_id: &str, path: &str) -> String {
        format!("{}{domain_id}/{CONTENT_DIR}/{path}", self.root)
    }

    /// `{root}{state}{domain}/_metadata.json` (`state` from [`TenantContext::state_prefix`]).
    pub fn metadata_key(&self, domain_id: &str, state: &str) -> String {
        format!("{}{state}{domain_id}/{METADATA_FILE}", self.root)
    }

    /// `{root}{state}{domain}/_snapshots`.
    pub fn snapshots_dir(&self, domain_id: &str, state: &str) -> String {
        format!("{}{state}{domain_id}/{SNAPSHOTS_DIR}", self.root)
    }

    /// `{root}{state}{domain}/_snapshots/{version}.json`.
    pub fn snapshot_key(&self, domain_id: &str, version: &str, state: &str) -> String {
        format!("{}/{version}.json", self.snapshots_dir(domain_id, state))
    }

    /// The watch pattern of one kind of key: for `domain_id`, or
    /// every domain (`*`) when `None`; tenant-scoped by `ctx` except for content, which is
    /// never tenant-scoped.
    ///
    /// | kind | pattern |
    /// |---|---|
    /// | content | `{root}{domain\|*}/content/**` (directory) or `…/content/*` (object) |
    /// | metadata | `{root}{state}{domain\|*}/_metadata.json` |
    /// | snapshot | `{root}{state}{domain\|*}/_snapshots/*` |
    ///
    /// `Unknown` is refused (`InvalidKeyKind`); so are an invalid domain id (`Some("")`
    /// included — the wildcard is `None`) and an invalid tenant context.
    pub fn key_pattern(
        &self,
        kind: KnowledgeKeyKind,
        domain_id: Option<&str>,
        ctx: &TenantContext,
    ) -> Result<String> {
        if kind == KnowledgeKeyKind::Unknown {
            return Err(KnowledgeError::InvalidKeyKind {
                operation: "key_pattern",
                kinds: kind.as_str().to_owned(),
                reason: "UNKNOWN has no key pattern; ask for content, metadata or snapshot"
                    .to_owned(),
            });
        }
        if let Some(d) = domain_id {
            validate_domain_id(d)?;
        }
        let domain = domain_id.map_or(Cow::Borrowed("*"), glob_escape);
        let root = glob_escape(&self.root);
        let state = state_glob(ctx, domain_id)?;
        Ok(match kind {
            KnowledgeKeyKind::Content => {
                let tail = match self.style {
                    KeyStyle::Directory => "**",
                    KeyStyle::Object => "*",
                };
                format!("{root}{domain}/{CONTENT_DIR}/{tail}")
            }
            KnowledgeKeyKind::Metadata => format!("{root}{state}{domain}/{METADATA_FILE}"),
            _ => format!("{root}{state}{domain}/{SNAPSHOTS_DIR}/*"),
        })
    }

    /// What `key` holds: content, metadata or snapshot by its position under this layout's
    /// root, `Unknown` for anything else (see the module docs).
    pub fn classify_key(&self, key: &str) -> KnowledgeKeyKind {
        self.parse_key(key)
            .map_or(KnowledgeKeyKind::Unknown, |p| p.kind)
    }

    /// Reads `key` positionally; `None` when it is not a key of this layout.
    pub fn parse_key<'k>(&self, key: &'k str) -> Option<ParsedKey<'k>> {
        let rel = key.strip_prefix(self.root.as_str())?;
        let segs: Vec<&str> = rel.split('/').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return None;
        }
        let n = segs.len();
        let state_of = |k: usize| &rel[..segs[..k].iter().map(|s| s.len() + 1).sum::<usize>()];
        let addressable = |d: &str| validate_domain_id(d).is_ok();
        if segs[0] == SCOPED_STATE_ROOT {
            // _scoped/<prefix…>/{domain}/_metadata.json | …/{domain}/_snapshots/<name>
            let (d_at, kind) = if n >= 4 && segs[n - 1] == METADATA_FILE {
                (n - 2, KnowledgeKeyKind::Metadata)
            } else if n >= 5 && segs[n - 2] == SNAPSHOTS_DIR {
                (n - 3, KnowledgeKeyKind::Snapshot)
            } else {
                return None;
            };
            let prefix_ok = segs[1..d_at].iter().all(|s| {
                *s != SNAPSHOTS_DIR && !s.starts_with(METADATA_FILE) && *s != "." && *s != ".."
            });
            if !prefix_ok || !addressable(segs[d_at]) {
                return None;
            }
            return Some(ParsedKey {
                kind,
                domain_id: segs[d_at],
                state_prefix: state_of(d_at),
                name: segs[n - 1],
            });
        }
        if n < 2 || !addressable(segs[0]) {
            return None;
        }
        let kind = match (segs[1], n) {
            (METADATA_FILE, 2) => KnowledgeKeyKind::Metadata,
            (SNAPSHOTS_DIR, 3) => KnowledgeKeyKind::Snapshot,
            (CONTENT_DIR, n) if n >= 3 => KnowledgeKeyKind::Content,
            _ if self.style == KeyStyle::Directory && &rel[segs[0].len() + 1..] == JOURNAL_FILE => {
                KnowledgeKeyKind::Metadata
            }
            (_, 5)
                if self.style == KeyStyle::Object
                    && format!("{}/{}", segs[1], segs[2]) == JOURNAL_DIR
                    && segs[4].ends_with(".json") =>
            {
                KnowledgeKeyKind::Metadata
            }
            _ => return None,
        };
        let after_domain = &rel[segs[0].len() + 1..];
        let name = match kind {
            KnowledgeKeyKind::Content => &after_domain[CONTENT_DIR.len() + 1..],
            KnowledgeKeyKind::Snapshot => segs[2],
            _ => after_domain,
        };
        Some(ParsedKey {
            kind,
            domain_id: segs[0],
            state_prefix: "",
            name,
        })
    }
}

/// The `{state}` part of a pattern: the escaped state prefix, with `*` for a `{domain_id}`
/// placeholder when the domain is the wildcard.
fn state_glob(ctx: &TenantContext, domain_id: Option<&str>) -> Result<String> {
    if ctx.is_single_tenant() {
        return Ok(String::new());
    }
    if let Some(d) = domain_id {
        return Ok(glob_escape(&ctx.state_prefix(d)?).into_owned());
    }
    ctx.validate()?;
    // A marker no valid prefix contains (control characters are refused) stands in for the
    // domain, then becomes the wildcard after escaping.
    const MARK: &str = "\u{1}";
    let raw = ctx.state_key_prefix(MARK)?;
    let rooted = format!("{SCOPED_STATE_ROOT}/{}/", raw.trim_end_matches('/'));
    Ok(glob_escape(&rooted).replace(MARK, "*"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RESERVED_DOMAIN_PREFIX;

    /// `test_backend_key_discriminator` / `test_multi_field_discriminator_composition`: a
    /// layout is a plain value that stands for its backend's classification — equal layouts
    /// classify alike and hash alike (one entry per layout in a map), different roots or
    /// styles do not, and a key is classified by the layout of the backend it came from.
    #[test]
    fn layouts_discriminate_keys_by_backend() {
        use std::collections::HashMap;
        let file_a = KeyLayout::directory("/srv/kb");
        let file_b = KeyLayout::directory("/srv/kb");
        let s3 = KeyLayout::object("kb/");
        let other_root = KeyLayout::directory("/srv/other");
        assert_eq!(file_a, file_b);
        assert_ne!(file_a, other_root);
        assert_ne!(file_a, s3);
        let mut by_layout: HashMap<KeyLayout, &str> = HashMap::new();
        by_layout.insert(file_a.clone(), "file");
        by_layout.insert(file_b.clone(), "file again");
        by_layout.insert(s3.clone(), "s3");
        assert_eq!(by_layout.len(), 2, "equal layouts are one discriminator");
        let key = "/srv/kb/acme/_metadata.json";
        for l in [&file_a, &file_b] {
            assert_eq!(l.classify_key(key), KnowledgeKeyKind::Metadata);
        }
        // The same key means nothing to a backend rooted elsewhere.
        assert_eq!(other_root.classify_key(key), KnowledgeKeyKind::Unknown);
        assert_eq!(s3.classify_key(key), KnowledgeKeyKind::Unknown);
        // Composition: (layout, kind) pairs route keys from several backends at once.
        let keys = [
            (&file_a, "/srv/kb/acme/content/a.md"),
            (&s3, "kb/acme/_snapshots/0f.json"),
            (&s3, "kb/acme/content/a.md"),
        ];
        let routed: Vec<(&str, KnowledgeKeyKind)> = keys
            .iter()
            .map(|(l, k)| (by_layout[*l], l.classify_key(k)))
            .collect();
        assert_eq!(
            routed,
            [
                ("file again", KnowledgeKeyKind::Content),
                ("s3", KnowledgeKeyKind::Snapshot),
                ("s3", KnowledgeKeyKind::Content),
            ]
        );
    }

    #[test]
    fn the_layout_constants_are_the_originals() {
        assert_eq!(METADATA_FILE, "_metadata.json");
        assert_eq!(CONTENT_DIR, "content");
        assert_eq!(SNAPSHOTS_DIR, "_snapshots");
        assert_eq!(SCOPED_STATE_ROOT, "_scoped");
        assert_eq!(RESERVED_DOMAIN_PREFIX, "_");
        let l = KeyLayout::object("kbs/");
        assert_eq!(l.metadata_key("my_kb", ""), "kbs/my_kb/_metadata.json");
        assert_eq!(
            l.snapshot_key("my_kb", "v1", ""),
            "kbs/my_kb/_snapshots/v1.json"
        );
        assert_eq!(
            l.content_key("my_kb", "intro.md"),
            "kbs/my_kb/content/intro.md"
        );
        assert_eq!(l.domain_root("my_kb"), "kbs/my_kb/");
        let acme = TenantContext::bound("acme").state_prefix("my_kb").unwrap();
        assert_eq!(
            l.metadata_key("my_kb", &acme),
            "kbs/_scoped/tenants/acme/_state/my_kb/_metadata.json"
        );
        assert!(
            !l.metadata_key("my_kb", &acme)
                .starts_with(&l.domain_root("tenants"))
        );
        assert_eq!(KeyLayout::directory("/b/").root(), "/b/");
    }

    #[test]
    fn escaping_keeps_literals_literal() {
        assert_eq!(glob_escape("a*b?c[d]"), "a[*]b[?]c[[]d]");
        let l = KeyLayout::directory("/srv/k*b");
        let p = l
            .key_pattern(
                KnowledgeKeyKind::Metadata,
                None,
                &TenantContext::SingleTenant,
            )
            .unwrap();
        assert_eq!(p, "/srv/k[*]b/*/_metadata.json");
        let g = dynreg_event_bus::Glob::new(&p).unwrap();
        assert!(g.matches("/srv/k*b/acme/_metadata.json"));
        assert!(!g.matches("/srv/kXb/acme/_metadata.json"));
    }

    #[test]
    fn a_wildcard_domain_inside_a_prefixed_pattern_is_a_wildcard() {
        let l = KeyLayout::object("kb/");
        let ctx = TenantContext::prefixed("acme", "{tenant_id}-{domain_id}/");
        assert_eq!(
            l.key_pattern(KnowledgeKeyKind::Metadata, None, &ctx)
                .unwrap(),
            "kb/_scoped/acme-*/*/_metadata.json"
        );
        assert_eq!(
            l.key_pattern(KnowledgeKeyKind::Metadata, Some("d"), &ctx)
                .unwrap(),
            "kb/_scoped/acme-d/d/_metadata.json"
        );
    }

    #[test]
    fn parse_reports_domain_state_and_name() {
        let l = KeyLayout::object("p/");
        let k = l.parse_key("p/acme/content/docs/a.md").unwrap();
        assert_eq!(
            (k.kind, k.domain_id, k.state_prefix, k.name),
            (KnowledgeKeyKind::Content, "acme", "", "docs/a.md")
        );
        let k = l
            .parse_key("p/_scoped/tenants/t/_state/acme/_snapshots/v.json")
            .unwrap();
        assert_eq!(
            (k.kind, k.domain_id, k.state_prefix, k.name),
            (
                KnowledgeKeyKind::Snapshot,
                "acme",
                "_scoped/tenants/t/_state/",
                "v.json"
            )
        );
        let k = l.parse_key("p/acme/_metadata.json").unwrap();
        assert_eq!(
            (k.kind, k.name),
            (KnowledgeKeyKind::Metadata, "_metadata.json")
        );
        assert!(l.parse_key("p/acme/_dynreg/journal.jsonl").is_none());
        let k = l
            .parse_key("p/acme/_dynreg/journal/0123abcd/00000000000000000007.json")
            .unwrap();
        assert_eq!(
            (k.kind, k.domain_id, k.name),
            (
                KnowledgeKeyKind::Metadata,
                "acme",
                "_dynreg/journal/0123abcd/00000000000000000007.json"
            )
        );
        assert!(l.parse_key("p/acme/_dynreg/intents/x.json").is_none());
        let f = KeyLayout::directory("/b");
        assert_eq!(
            f.classify_key("/b/acme/_dynreg/journal.jsonl"),
            KnowledgeKeyKind::Metadata
        );
        assert_eq!(
            f.classify_key("/b/acme/_dynreg/tmp/x.tmp"),
            KnowledgeKeyKind::Unknown
        );
    }
}
