//! Application (domain) configs: loading, the portability check, and resolving `$resource`
//! references against an environment into a [`ResolvedConfig`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::environment::{Environment, LoadOptions};
use crate::error::{PortabilityFinding, ResolveError, Result};
use crate::path::YamlPath;
use crate::placeholder::Missing;
use crate::resolve::{MAX_NODES, Resolver};
use crate::secrets::Secrets;
use crate::substitute::{Substituter, UnresolvedVar};
use crate::yaml::{Document, Source};

/// How a domain config is resolved.
#[derive(Clone, Debug)]
pub struct ResolveOptions {
    /// Whether a missing resource is an error: `Some(true)` strict, `Some(false)` lenient
    /// (inline defaults are used), `None` (default) defers to the environment's
    /// `strict_resources` setting and, when that is absent, is strict.
    pub strict: Option<bool>,
    /// Whether `${VAR}` in the domain config itself is substituted (default true), with
    /// [`LoadOptions::vars`] and [`LoadOptions::missing`].
    pub substitute: bool,
    /// Where variables come from and what a missing one does.
    pub load: LoadOptions,
    /// Whether a non-portable domain config is refused (default true).
    pub check_portability: bool,
    /// Most nodes the resolved tree may have (default [`MAX_NODES`]).
    pub max_nodes: usize,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            strict: None,
            substitute: true,
            load: LoadOptions::default(),
            check_portability: true,
            max_nodes: MAX_NODES,
        }
    }
}

impl ResolveOptions {
    /// Defaults with variables from `load`.
    pub fn with_load(load: LoadOptions) -> Self {
        ResolveOptions {
            load,
            ..Self::default()
        }
    }

    /// Sets the strictness (see [`ResolveOptions::strict`]).
    pub fn strict(mut self, strict: Option<bool>) -> Self {
        self.strict = strict;
        self
    }
}

/// An application config as written: `$resource` references and `${VAR}` placeholders intact.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    doc: Document,
}

impl DomainConfig {
    /// Reads a YAML (or JSON) file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(DomainConfig {
            doc: Document::read(path.as_ref())?,
        })
    }

    /// Parses YAML text; `file` is used in locations only.
    pub fn parse(text: &str, file: Option<PathBuf>) -> Result<Self> {
        Ok(DomainConfig {
            doc: Document::parse(text, file)?,
        })
    }

    /// Wraps a config tree (locations then have a path but no file or line).
    pub fn from_value(value: Value) -> Self {
        DomainConfig {
            doc: Document {
                source: Source::default(),
                value,
            },
        }
    }

    /// The config as written.
    pub fn raw(&self) -> &Value {
        &self.doc.value
    }

    /// The file it was read from.
    pub fn file(&self) -> Option<&Path> {
        self.doc.source.file()
    }

    /// Every machine-local value (home directories, loopback addresses...) with its file,
    /// line and YAML path, judged by [`crate::portability_issues`] leaf by leaf.
    pub fn portability_findings(&self) -> Vec<PortabilityFinding> {
        let mut out = Vec::new();
        self.walk_portability(&self.doc.value, &YamlPath::root(), &mut out, 0);
        out
    }

    fn walk_portability(
        &self,
        v: &Value,
        path: &YamlPath,
        out: &mut Vec<PortabilityFinding>,
        depth: usize,
    ) {
        if depth > crate::substitute::MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => self.report(s, path, "", out),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_portability(item, &path.index(i), out, depth + 1);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let child = path.key(k);
                    self.report(k, &child, " (key)", out);
                    self.walk_portability(item, &child, out, depth + 1);
                }
            }
            _ => {}
        }
    }

    fn report(
        &self,
        text: &str,
        at_path: &YamlPath,
        suffix: &str,
        out: &mut Vec<PortabilityFinding>,
    ) {
        for issue in crate::portability::portability_issues(&Value::String(text.to_owned())) {
            out.push(PortabilityFinding {
                at: self
                    .doc
                    .source
                    .locate(at_path, format!("{at_path}{suffix}")),
                description: issue.description.to_owned(),
                matched: issue.matched,
            });
        }
    }

    /// `Ok(())` when portable, else [`ResolveError::NotPortable`] listing every finding.
    pub fn check_portability(&self) -> Result<()> {
        let issues = self.portability_findings();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ResolveError::NotPortable {
                file: self.doc.source.file().map(Path::to_owned),
                issues,
            })
        }
    }

    /// Resolves against `env` with the default options (portability checked, strictness from
    /// the environment, `${VAR}` from the process environment).
    pub fn resolve(&self, env: &Environment) -> Result<ResolvedConfig> {
        self.resolve_with(env, &ResolveOptions::default())
    }

    /// Resolves against `env`.
    pub fn resolve_with(&self, env: &Environment, opts: &ResolveOptions) -> Result<ResolvedConfig> {
        if opts.check_portability {
            self.check_portability()?;
        }
        let sub = opts.substitute.then(|| {
            Substituter::new(opts.load.vars.as_ref(), opts.load.missing, &self.doc.source)
        });
        let mut resolver = Resolver::new(env, &self.doc.source, sub, opts.strict, opts.max_nodes);
        let value = match resolver.resolve_app(&self.doc.value) {
            Ok(v) => v,
            Err(e) => return Err(e.scrubbed(&resolver.secrets())),
        };
        let secrets = resolver.secrets();
        let unresolved = resolver.sub.map(|s| s.unresolved).unwrap_or_default();
        Ok(ResolvedConfig {
            value,
            environment: env.name().to_owned(),
            source: self.doc.source.clone(),
            secrets,
            unresolved,
        })
    }
}

/// A domain config with every `$resource` reference replaced by the environment's resource.
#[derive(Clone)]
pub struct ResolvedConfig {
    value: Value,
    environment: String,
    pub(crate) source: Source,
    pub(crate) secrets: Secrets,
    unresolved: Vec<UnresolvedVar>,
}

impl std::fmt::Debug for ResolvedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedConfig")
            .field("environment", &self.environment)
            .field("file", &self.source.file())
            .field("value", &self.secrets.scrub_value(&self.value))
            .field("substituted_vars", &self.secrets.vars())
            .finish()
    }
}

/// Parses `bot.registry` or `items[0].x` into a path.
pub(crate) fn parse_path(s: &str) -> YamlPath {
    let mut p = YamlPath::root();
    for part in s.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            p = p.key(key);
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                p = p.index(i);
            }
        }
    }
    p
}

impl ResolvedConfig {
    /// The resolved tree. It holds substituted values: do not log it (its `Debug` is safe).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The resolved tree, owned.
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The environment it was resolved against.
    pub fn environment_name(&self) -> &str {
        &self.environment
    }

    /// The node at a dotted path such as `bot.registry` (`items[0]` for list items).
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut node = &self.value;
        for seg in parse_path(path).segments() {
            node = match seg {
                crate::path::Segment::Key(k) => node.get(k)?,
                crate::path::Segment::Index(i) => node.get(*i)?,
            };
        }
        Some(node)
    }

    /// Placeholders of the domain config left in place by lenient substitution.
    pub fn unresolved_vars(&self) -> &[UnresolvedVar] {
        &self.unresolved
    }

    /// Whether lenient substitution was used and left placeholders.
    pub fn is_complete(&self) -> bool {
        self.unresolved.is_empty()
    }

    /// Names of the variables substituted into this config (values are secret).
    pub fn substituted_vars(&self) -> &[String] {
        self.secrets.vars()
    }
}

impl Missing {
    /// Whether this is the lenient mode.
    pub fn is_lenient(self) -> bool {
        self == Missing::Keep
    }
}
