//! The one error type of this crate: every variant names its input and where it was found.

use std::fmt;
use std::path::PathBuf;

/// Where in a config something went wrong: file, 1-based line (when known) and YAML path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, or `None` for a config given as a string or value.
    pub file: Option<PathBuf>,
    /// The 1-based line of the node (or of its nearest ancestor written in block style).
    pub line: Option<usize>,
    /// The YAML path, e.g. `resources.databases.registry.host` (`<root>` for the root).
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}, at {}", file.display(), self.path),
            (Some(file), None) => write!(f, "{}, at {}", file.display(), self.path),
            (None, Some(line)) => write!(f, "line {line}, at {}", self.path),
            (None, None) => write!(f, "at {}", self.path),
        }
    }
}

/// Which live component a build error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// A registry backend (`create_registry_backend`).
    Registry,
    /// An event bus (`create_event_bus`).
    EventBus,
    /// A knowledge backend (`create_knowledge_backend`).
    Knowledge,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Registry => "registry backend",
            Component::EventBus => "event bus",
            Component::Knowledge => "knowledge backend",
        })
    }
}

/// Everything that can go wrong loading, resolving or building from a config.
///
/// Values substituted from environment variables are replaced by their `${VAR}` placeholder in
/// every message, so an error never shows a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// A config file could not be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("YAML syntax error in {}: {message}", match (file, line) {
        (Some(f), Some(l)) => format!("{}:{l}:{}", f.display(), column.unwrap_or(1)),
        (Some(f), None) => f.display().to_string(),
        (None, Some(l)) => format!("line {l}:{}", column.unwrap_or(1)),
        (None, None) => "<string>".to_owned(),
    })]
    Yaml {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// 1-based line.
        line: Option<usize>,
        /// 1-based column.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A YAML construct that has no JSON equivalent (a non-scalar key, a non-finite float).
    #[error("unsupported YAML value ({at}): {reason}")]
    Unsupported {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        reason: String,
    },
    /// `${VAR}` (or `${VAR:?msg}`) with the variable unset or empty and no default.
    #[error("environment variable {var} is not set ({at}){}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), if others.is_empty() { String::new() } else { format!("; also not set: {}", others.join(", ")) })]
    MissingVariable {
        /// The variable's name (the first missing one in document order).
        var: String,
        /// The `${VAR:?msg}` message, if any.
        message: Option<String>,
        /// Where the placeholder is.
        at: Box<Location>,
        /// Other variables of the same file that are missing too.
        others: Vec<String>,
    },
    /// The environment file is malformed (`resources` not a mapping of mappings, ...).
    #[error("invalid environment config ({at}): {reason}")]
    InvalidEnvironment {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        reason: String,
    },
    /// An environment name that is not a plain file name.
    #[error("invalid environment name {name:?}: use letters, digits, '-', '_' and '.' only")]
    InvalidEnvironmentName {
        /// The name.
        name: String,
    },
    /// No `<name>.yaml`, `.yml` or `.json` in the config directory.
    #[error("environment {name:?} not found: none of {} exists", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    EnvironmentNotFound {
        /// The environment name.
        name: String,
        /// The files looked for.
        tried: Vec<PathBuf>,
    },
    /// A `$resource` block (or a stray `$required`/`$requires`) is malformed.
    #[error("invalid $resource reference ({at}): {reason}")]
    InvalidReference {
        /// Where the block is.
        at: Box<Location>,
        /// What is wrong.
        reason: String,
    },
    /// A required resource is not in the environment.
    #[error(
        "resource {name:?} of type {kind:?} not found in environment {environment:?} ({at}), and {reason}"
    )]
    ResourceNotFound {
        /// The resource type (`databases`, ...).
        kind: String,
        /// The logical name.
        name: String,
        /// The environment's name.
        environment: String,
        /// Where the reference is.
        at: Box<Location>,
        /// Why it was required.
        reason: String,
    },
    /// Resources reference each other in a loop.
    #[error("resource reference cycle ({at}): {chain}")]
    ReferenceCycle {
        /// The loop, e.g. `databases/a -> databases/b -> databases/a`.
        chain: String,
        /// Where the reference that closes the loop is.
        at: Box<Location>,
    },
    /// A resource lacks a capability its reference `$requires`.
    #[error("resource {name:?} of type {kind:?} is missing required capabilities {missing:?} ({at}){}", if *declares_none { "; it declares no `capabilities` at all" } else { "" })]
    MissingCapabilities {
        /// The resource type.
        kind: String,
        /// The logical name.
        name: String,
        /// The capabilities required but absent.
        missing: Vec<String>,
        /// Whether the resource has no `capabilities` key.
        declares_none: bool,
        /// Where the reference is.
        at: Box<Location>,
    },
    /// Nesting deeper than the resolver allows (a guard against runaway configs).
    #[error("config nested deeper than {limit} levels ({at})")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was hit.
        at: Box<Location>,
    },
    /// Resolution would produce more nodes than allowed (a reference fan-out bomb).
    #[error("resolved config would exceed {limit} nodes ({at})")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// Where the limit was hit.
        at: Box<Location>,
    },
    /// A config holds machine-local values (home directories, loopback addresses).
    #[error("config {} is not portable; store $resource references or ${{VAR}} placeholders instead:{}", file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "<string>".into()), issues.iter().map(|i| format!("\n  - {i}")).collect::<String>())]
    NotPortable {
        /// The file.
        file: Option<PathBuf>,
        /// Every finding, in document order.
        issues: Vec<PortabilityFinding>,
    },
    /// A component section has no usable `backend`.
    #[error("invalid {component} config ({at}): {reason}")]
    InvalidComponentConfig {
        /// Which component.
        component: Component,
        /// Where the section is.
        at: Box<Location>,
        /// What is wrong.
        reason: String,
    },
    /// The backend kind exists but its cargo feature is not compiled in.
    #[error(
        "{component} kind {kind:?} ({at}) is not compiled in; enable the cargo feature `{feature}`"
    )]
    FeatureDisabled {
        /// Which component.
        component: Component,
        /// The kind asked for.
        kind: String,
        /// The feature to enable.
        feature: String,
        /// Where the section is.
        at: Box<Location>,
    },
    /// The component's factory failed (bad option, unreachable server, ...).
    #[error("cannot build {component} of kind {kind:?} ({at}): {message}")]
    Build {
        /// Which component.
        component: Component,
        /// The kind asked for.
        kind: String,
        /// Where the section is.
        at: Box<Location>,
        /// The factory's error, with secrets replaced by their placeholders.
        message: String,
    },
}

/// One portability finding of a domain config, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortabilityFinding {
    /// Where (the path of a key finding ends with ` (key)`).
    pub at: Location,
    /// What kind of value, e.g. `Linux home directory`.
    pub description: String,
    /// The offending text.
    pub matched: String,
}

impl fmt::Display for PortabilityFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "found {} {:?} ({})",
            self.description, self.matched, self.at
        )
    }
}

/// The result type of this crate.
pub type Result<T, E = ResolveError> = std::result::Result<T, E>;

impl Location {
    fn scrubbed(mut self: Box<Self>, s: &crate::secrets::Secrets) -> Box<Self> {
        self.path = s.scrub(&self.path);
        self
    }
}

impl ResolveError {
    /// This error with every value substituted from the environment replaced by its
    /// placeholder, in every field.
    pub(crate) fn scrubbed(self, s: &crate::secrets::Secrets) -> Self {
        if s.is_empty() {
            return self;
        }
        let t = |x: String| s.scrub(&x);
        use ResolveError::*;
        match self {
            e @ (Io { .. }
            | Yaml { .. }
            | InvalidEnvironmentName { .. }
            | EnvironmentNotFound { .. }) => e,
            Unsupported { at, reason } => Unsupported {
                at: at.scrubbed(s),
                reason: t(reason),
            },
            MissingVariable {
                var,
                message,
                at,
                others,
            } => MissingVariable {
                var,
                message: message.map(t),
                at: at.scrubbed(s),
                others,
            },
            InvalidEnvironment { at, reason } => InvalidEnvironment {
                at: at.scrubbed(s),
                reason: t(reason),
            },
            InvalidReference { at, reason } => InvalidReference {
                at: at.scrubbed(s),
                reason: t(reason),
            },
            ResourceNotFound {
                kind,
                name,
                environment,
                at,
                reason,
            } => ResourceNotFound {
                kind: t(kind),
                name: t(name),
                environment: t(environment),
                at: at.scrubbed(s),
                reason: t(reason),
            },
            ReferenceCycle { chain, at } => ReferenceCycle {
                chain: t(chain),
                at: at.scrubbed(s),
            },
            MissingCapabilities {
                kind,
                name,
                missing,
                declares_none,
                at,
            } => MissingCapabilities {
                kind: t(kind),
                name: t(name),
                missing: missing.into_iter().map(t).collect(),
                declares_none,
                at: at.scrubbed(s),
            },
            TooDeep { limit, at } => TooDeep {
                limit,
                at: at.scrubbed(s),
            },
            TooLarge { limit, at } => TooLarge {
                limit,
                at: at.scrubbed(s),
            },
            NotPortable { file, issues } => NotPortable {
                file,
                issues: issues
                    .into_iter()
                    .map(|i| PortabilityFinding {
                        at: *Box::new(i.at).scrubbed(s),
                        description: i.description,
                        matched: t(i.matched),
                    })
                    .collect(),
            },
            InvalidComponentConfig {
                component,
                at,
                reason,
            } => InvalidComponentConfig {
                component,
                at: at.scrubbed(s),
                reason: t(reason),
            },
            FeatureDisabled {
                component,
                kind,
                feature,
                at,
            } => FeatureDisabled {
                component,
                kind: t(kind),
                feature,
                at: at.scrubbed(s),
            },
            Build {
                component,
                kind,
                at,
                message,
            } => Build {
                component,
                kind: t(kind),
                at: at.scrubbed(s),
                message: t(message),
            },
        }
    }
}
