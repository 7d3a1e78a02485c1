//! Environment files (`configs/environments/<name>.yaml`): `name`, `description`,
//! `resources.<type>.<name>` and `settings`, substituted from the environment at load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Location, ResolveError, Result};
use crate::path::YamlPath;
use crate::placeholder::Missing;
use crate::secrets::Secrets;
use crate::substitute::{Substituter, UnresolvedVar};
use crate::vars::{ProcessEnv, VarSource};
use crate::yaml::{Document, Source};

/// The variable that selects the environment: a name (`production`, looked up in the config
/// directory) or a path to a file (anything containing `/` or ending in `.yaml`, `.yml`,
/// `.json`).
pub const ENV_VAR: &str = "DYNREG_ENV";
/// The variable that overrides the config directory searched for environment names.
pub const CONFIG_DIR_VAR: &str = "DYNREG_CONFIG_DIR";
/// The config directory used when [`CONFIG_DIR_VAR`] is unset.
pub const DEFAULT_CONFIG_DIR: &str = "configs/environments";
/// Variables whose presence means "running in a cloud runtime" (as in the original): then the
/// environment is `$ENVIRONMENT`, or `production`.
pub const CLOUD_MARKERS: [&str; 5] = [
    "AWS_EXECUTION_ENV",
    "ECS_CONTAINER_METADATA_URI",
    "KUBERNETES_SERVICE_HOST",
    "K_SERVICE",
    "FUNCTIONS_WORKER_RUNTIME",
];

const TOP_LEVEL_KEYS: [&str; 4] = ["name", "description", "resources", "settings"];

/// How an environment (or a domain config) is substituted.
#[derive(Clone)]
pub struct LoadOptions {
    /// Where `${VAR}` values come from (default: the process environment).
    pub vars: Arc<dyn VarSource>,
    /// What a missing variable without default does (default: an error).
    pub missing: Missing,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            vars: Arc::new(ProcessEnv),
            missing: Missing::Error,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl LoadOptions {
    /// Options reading variables from `vars`.
    pub fn with_vars(vars: impl VarSource + 'static) -> Self {
        LoadOptions {
            vars: Arc::new(vars),
            missing: Missing::Error,
        }
    }

    /// Lenient substitution: a missing variable without default keeps its `${VAR}` text and
    /// is listed by [`Environment::unresolved_vars`].
    pub fn lenient(mut self) -> Self {
        self.missing = Missing::Keep;
        self
    }
}

/// A loaded environment: named resources by type, and settings.
#[derive(Clone)]
pub struct Environment {
    name: String,
    description: Option<String>,
    resources: Map<String, Value>,
    settings: Map<String, Value>,
    strict_resources: Option<bool>,
    source: Source,
    secrets: Secrets,
    unresolved: Vec<UnresolvedVar>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("name", &self.name)
            .field("file", &self.source.file())
            .field("description", &self.description)
            .field(
                "resources",
                &self
                    .secrets
                    .scrub_value(&Value::Object(self.resources.clone())),
            )
            .field(
                "settings",
                &self
                    .secrets
                    .scrub_value(&Value::Object(self.settings.clone())),
            )
            .field("substituted_vars", &self.secrets.vars())
            .finish()
    }
}

/// Parses a strictness flag: a boolean, or `"true"`/`"false"` (any case, trimmed).
pub(crate) fn parse_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.contains('\\') || [".yaml", ".yml", ".json"].iter().any(|e| s.ends_with(e))
}

impl Environment {
    /// Loads an environment file, substituting `${VAR}` from the process environment
    /// (a missing variable without default is an error).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads an environment file with explicit options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let doc = Document::read(path)?;
        let fallback = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        Self::from_document(doc, fallback, opts)
    }

    /// Parses an environment from YAML text; `file` is used in locations only.
    pub fn parse(text: &str, file: Option<PathBuf>, opts: &LoadOptions) -> Result<Self> {
        let doc = Document::parse(text, file)?;
        Self::from_document(doc, None, opts)
    }

    /// Loads `<dir>/<name>.yaml` (or `.yml`, `.json`). The name is lower-cased and must be a
    /// plain file name, so it cannot leave `dir`.
    pub fn load_named(dir: impl AsRef<Path>, name: &str, opts: &LoadOptions) -> Result<Self> {
        let name = name.trim().to_ascii_lowercase();
        if !valid_name(&name) {
            return Err(ResolveError::InvalidEnvironmentName { name });
        }
        let dir = dir.as_ref();
        let tried: Vec<PathBuf> = ["yaml", "yml", "json"]
            .iter()
            .map(|ext| dir.join(format!("{name}.{ext}")))
            .collect();
        match tried.iter().find(|p| p.is_file()) {
            Some(p) => Self::load_with(p, opts),
            None => Err(ResolveError::EnvironmentNotFound { name, tried }),
        }
    }

    /// The environment name that `vars` select: `$DYNREG_ENV` (lower-cased) if set; else, in
    /// a cloud runtime (see [`CLOUD_MARKERS`]), `$ENVIRONMENT` or `production`; else
    /// `development`.
    pub fn detect_name(vars: &dyn VarSource) -> String {
        let set = |n: &str| vars.var(n).filter(|v| !v.trim().is_empty());
        if let Some(v) = set(ENV_VAR) {
            return v.trim().to_ascii_lowercase();
        }
        if CLOUD_MARKERS.iter().any(|m| set(m).is_some()) {
            return set("ENVIRONMENT")
                .map(|v| v.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "production".into());
        }
        "development".into()
    }

    /// Loads the environment selected by `opts.vars`: `$DYNREG_ENV` as a file path, or the
    /// name from [`Environment::detect_name`] looked up in `dir`.
    pub fn select(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        if let Some(v) = opts.vars.var(ENV_VAR).filter(|v| looks_like_path(v.trim())) {
            return Self::load_with(v.trim(), opts);
        }
        Self::load_named(dir, &Self::detect_name(opts.vars.as_ref()), opts)
    }

    /// [`Environment::select`] on the process environment, in `$DYNREG_CONFIG_DIR` (default
    /// `configs/environments`).
    pub fn from_env() -> Result<Self> {
        let opts = LoadOptions::default();
        let dir = opts
            .vars
            .var(CONFIG_DIR_VAR)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_CONFIG_DIR.into());
        Self::select(dir, &opts)
    }

    fn from_document(
        doc: Document,
        fallback_name: Option<String>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let mut sub = Substituter::new(opts.vars.as_ref(), opts.missing, &doc.source);
        let value = match sub.tree_all(&doc.value, &YamlPath::root()) {
            Ok(v) => v,
            Err(e) => return Err(e.scrubbed(&sub.secrets)),
        };
        let secrets = sub.secrets;
        let unresolved = sub.unresolved;
        let source = doc.source;
        let at = |path: YamlPath| source.locate(&path, secrets.scrub(&path.to_string()));
        let invalid = |path: YamlPath, reason: String| ResolveError::InvalidEnvironment {
            at: Box::new(at(path)),
            reason: secrets.scrub(&reason),
        };
        let root = match value {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(invalid(YamlPath::root(), "expected a mapping".into())),
        };
        if let Some(k) = root.keys().find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
            return Err(invalid(
                YamlPath::root().key(k),
                format!(
                    "unknown key {k:?}; expected one of {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ));
        }
        let text = |key: &str| -> Result<Option<String>> {
            match root.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(
                    YamlPath::root().key(key),
                    format!("expected a string, got {}", kind_of(other)),
                )),
            }
        };
        let name = text("name")?
            .or(fallback_name)
            .unwrap_or_else(|| "default".into());
        let description = text("description")?;
        let mut resources = Map::new();
        match root.get("resources") {
            None | Some(Value::Null) => {}
            Some(Value::Object(types)) => {
                for (ty, named) in types {
                    match named {
                        Value::Object(m) => {
                            resources.insert(ty.clone(), Value::Object(m.clone()));
                        }
                        Value::Null => {
                            resources.insert(ty.clone(), Value::Object(Map::new()));
                        }
                        other => {
                            return Err(invalid(
                                YamlPath::from_keys(["resources", ty.as_str()]),
                                format!(
                                    "expected a mapping of resource names to configs, got {}",
                                    kind_of(other)
                                ),
                            ));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(invalid(
                    YamlPath::root().key("resources"),
                    format!(
                        "expected a mapping of resource types, got {}",
                        kind_of(other)
                    ),
                ));
            }
        }
        let settings = match root.get("settings") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(invalid(
                    YamlPath::root().key("settings"),
                    format!("expected a mapping, got {}", kind_of(other)),
                ));
            }
        };
        let strict_resources = match settings.get("strict_resources") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.contains("${") => None,
            Some(v) => Some(parse_flag(v).ok_or_else(|| {
                invalid(
                    YamlPath::from_keys(["settings", "strict_resources"]),
                    "expected true or false".into(),
                )
            })?),
        };
        Ok(Environment {
            name,
            description,
            resources,
            settings,
            strict_resources,
            source,
            secrets,
            unresolved,
        })
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The file it was loaded from.
    pub fn file(&self) -> Option<&Path> {
        self.source.file()
    }

    /// The resource `name` of type `kind` (substituted), if present.
    pub fn resource(&self, kind: &str, name: &str) -> Option<&Value> {
        self.resources.get(kind)?.get(name)
    }

    /// Whether the resource exists.
    pub fn has_resource(&self, kind: &str, name: &str) -> bool {
        self.resource(kind, name).is_some()
    }

    /// Every `(type, name)` pair, sorted.
    pub fn resource_names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (ty, named) in &self.resources {
            if let Value::Object(m) = named {
                out.extend(m.keys().map(|n| (ty.clone(), n.clone())));
            }
        }
        out
    }

    /// A setting.
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.settings.get(key)
    }

    /// The `strict_resources` setting, if given.
    pub fn strict_resources(&self) -> Option<bool> {
        self.strict_resources
    }

    /// Placeholders left in place by lenient loading.
    pub fn unresolved_vars(&self) -> &[UnresolvedVar] {
        &self.unresolved
    }

    /// The names of the variables whose values were substituted (the values are secret).
    pub fn substituted_vars(&self) -> &[String] {
        self.secrets.vars()
    }

    pub(crate) fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub(crate) fn locate(&self, path: &YamlPath, secrets: &Secrets) -> Location {
        self.source.locate(path, secrets.scrub(&path.to_string()))
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::VarMap;
    use serde_json::json;

    fn opts(vars: VarMap) -> LoadOptions {
        LoadOptions::with_vars(vars)
    }

    #[test]
    fn substitutes_at_load_and_exposes_resources_and_settings() {
        let env = Environment::parse(
            "name: staging\nresources:\n  databases:\n    registry: {backend: postgres, host: '${DB_HOST}'}\nsettings:\n  strict_resources: ' TRUE '\n  log_level: INFO\n",
            None,
            &opts(VarMap::new().with("DB_HOST", "db.internal")),
        )
        .unwrap();
        assert_eq!(env.name(), "staging");
        assert_eq!(
            env.resource("databases", "registry"),
            Some(&json!({"backend": "postgres", "host": "db.internal"}))
        );
        assert!(env.has_resource("databases", "registry") && !env.has_resource("databases", "x"));
        assert_eq!(env.strict_resources(), Some(true));
        assert_eq!(env.setting("log_level"), Some(&json!("INFO")));
        assert_eq!(env.substituted_vars(), ["DB_HOST"]);
    }

    #[test]
    fn debug_never_shows_substituted_values() {
        let env = Environment::parse(
            "resources:\n  databases:\n    registry: {password: '${DB_PASSWORD}', url: 'postgres://u:${DB_PASSWORD}@h/db'}\n",
            None,
            &opts(VarMap::new().with("DB_PASSWORD", "s3cr3t-Pa55")),
        )
        .unwrap();
        let dbg = format!("{env:?}");
        assert!(
            !dbg.contains("s3cr3t-Pa55") && dbg.contains("${DB_PASSWORD}"),
            "{dbg}"
        );
    }

    #[test]
    fn malformed_files_are_reported_with_paths() {
        let o = opts(VarMap::new());
        let e = Environment::parse("name: x\nresource: {}\n", Some("e.yaml".into()), &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("e.yaml:2") && e.contains("resource"), "{e}");
        let e = Environment::parse("resources:\n  databases: [1]\n", None, &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resources.databases") && e.contains("a list"),
            "{e}"
        );
        let e = Environment::parse("settings:\n  strict_resources: maybe\n", None, &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("settings.strict_resources"), "{e}");
        assert!(Environment::parse("[1, 2]", None, &o).is_err());
    }

    #[test]
    fn name_detection_follows_the_original_with_dynreg_env() {
        assert_eq!(Environment::detect_name(&VarMap::new()), "development");
        assert_eq!(
            Environment::detect_name(&VarMap::new().with(ENV_VAR, " Staging ")),
            "staging"
        );
        assert_eq!(
            Environment::detect_name(&VarMap::new().with("K_SERVICE", "svc")),
            "production"
        );
        assert_eq!(
            Environment::detect_name(
                &VarMap::new()
                    .with("KUBERNETES_SERVICE_HOST", "10.0.0.1")
                    .with("ENVIRONMENT", "QA")
            ),
            "qa"
        );
        assert_eq!(
            Environment::detect_name(
                &VarMap::new()
                    .with("KUBERNETES_SERVICE_HOST", "1")
                    .with(ENV_VAR, "dev")
            ),
            "dev"
        );
    }

    #[test]
    fn selection_by_name_by_path_and_bounded_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("qa.yml"), "name: qa\n").unwrap();
        std::fs::write(dir.path().join("development.yaml"), "name: development\n").unwrap();
        let other = dir.path().join("elsewhere.yaml");
        std::fs::write(&other, "name: elsewhere\n").unwrap();
        let o = opts(VarMap::new());
        assert_eq!(
            Environment::load_named(dir.path(), "QA", &o)
                .unwrap()
                .name(),
            "qa"
        );
        assert_eq!(
            Environment::select(dir.path(), &o).unwrap().name(),
            "development"
        );
        let o = opts(VarMap::new().with(ENV_VAR, other.to_string_lossy()));
        assert_eq!(
            Environment::select(dir.path(), &o).unwrap().name(),
            "elsewhere"
        );
        let o = opts(VarMap::new());
        assert!(matches!(
            Environment::load_named(dir.path(), "../etc/passwd", &o),
            Err(ResolveError::InvalidEnvironmentName { .. })
        ));
        let e = Environment::load_named(dir.path(), "prod", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prod.yaml") && e.contains("prod.json"), "{e}");
    }
}
