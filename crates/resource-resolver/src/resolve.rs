//! `$resource` references resolved against an [`Environment`].
//!
//! A mapping with a `$resource` key is a reference block. Its marker keys are the closed set
//! `$resource`, `type` (default `"default"`), `$requires` (a list of capability names) and
//! `$required` (a strictness flag); any other `$` key is an error, and every other key is an
//! inline default. A found resource is resolved recursively (it may reference other
//! resources; loops are reported), then inline defaults fill only the keys it lacks: the
//! environment wins. `$requires` fails when a capability is absent, including when the
//! resource declares no `capabilities` at all (the original let that pass).

use serde_json::{Map, Value};

use crate::environment::{Environment, kind_of, parse_flag};
use crate::error::{Location, ResolveError, Result};
use crate::path::YamlPath;
use crate::secrets::Secrets;
use crate::substitute::{MAX_DEPTH, Substituter};
use crate::yaml::Source;

/// Default for the most nodes one resolution may produce (a guard against reference fan-out bombs).
pub const MAX_NODES: usize = 1_000_000;

const MARKERS: [&str; 4] = ["$resource", "type", "$requires", "$required"];

/// Where the node being resolved lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The application (domain) config.
    App,
    /// A resource of the environment (already substituted).
    Env,
}

pub(crate) struct Resolver<'a> {
    pub env: &'a Environment,
    pub app: &'a Source,
    /// Substitutes `${VAR}` in application-config strings; `None` leaves them raw.
    pub sub: Option<Substituter<'a>>,
    pub strict: Option<bool>,
    stack: Vec<(String, String)>,
    nodes: usize,
    max_nodes: usize,
    env_secrets: Secrets,
}

impl<'a> Resolver<'a> {
    pub fn new(
        env: &'a Environment,
        app: &'a Source,
        sub: Option<Substituter<'a>>,
        strict: Option<bool>,
        max_nodes: usize,
    ) -> Self {
        Resolver {
            max_nodes,
            env,
            app,
            sub,
            strict,
            stack: Vec::new(),
            nodes: 0,
            env_secrets: env.secrets().clone(),
        }
    }

    /// Every secret seen: the environment's and the application config's.
    pub fn secrets(&self) -> Secrets {
        let mut s = self.env_secrets.clone();
        if let Some(sub) = &self.sub {
            s.extend(&sub.secrets);
        }
        s
    }

    fn locate(&self, origin: Origin, path: &YamlPath) -> Box<Location> {
        let secrets = self.secrets();
        Box::new(match origin {
            Origin::App => self.app.locate(path, secrets.scrub(&path.to_string())),
            Origin::Env => self.env.locate(path, &secrets),
        })
    }

    fn text(&mut self, origin: Origin, s: &str, path: &YamlPath) -> Result<String> {
        match (&mut self.sub, origin) {
            (Some(sub), Origin::App) => sub.string(s, path),
            _ => Ok(s.to_owned()),
        }
    }

    fn invalid(&self, origin: Origin, path: &YamlPath, reason: String) -> ResolveError {
        ResolveError::InvalidReference {
            at: self.locate(origin, path),
            reason: self.secrets().scrub(&reason),
        }
    }

    /// Resolves an application-config tree.
    pub fn resolve_app(&mut self, value: &Value) -> Result<Value> {
        self.resolve(value, &YamlPath::root(), Origin::App, 0)
    }

    fn resolve(
        &mut self,
        value: &Value,
        path: &YamlPath,
        origin: Origin,
        depth: usize,
    ) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(ResolveError::TooDeep {
                limit: MAX_DEPTH,
                at: self.locate(origin, path),
            });
        }
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return Err(ResolveError::TooLarge {
                limit: self.max_nodes,
                at: self.locate(origin, path),
            });
        }
        match value {
            Value::String(s) => Ok(Value::String(self.text(origin, s, path)?)),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    out.push(self.resolve(v, &path.index(i), origin, depth + 1)?);
                }
                Ok(Value::Array(out))
            }
            Value::Object(map) if map.contains_key("$resource") => {
                self.reference(map, path, origin, depth)
            }
            Value::Object(map) => {
                if let Some(k) = ["$required", "$requires"]
                    .iter()
                    .find(|k| map.contains_key(**k))
                {
                    return Err(self.invalid(
                        origin,
                        path,
                        format!("{k} given without $resource (a misspelled $resource key?)"),
                    ));
                }
                let mut out = Map::new();
                for (k, v) in map {
                    let child = path.key(k);
                    let key = self.text(origin, k, &child)?;
                    let v = self.resolve(v, &child, origin, depth + 1)?;
                    out.insert(key, v);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn marker_string(
        &mut self,
        origin: Origin,
        v: &Value,
        path: &YamlPath,
        what: &str,
    ) -> Result<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => self.text(origin, s, path),
            other => Err(self.invalid(
                origin,
                path,
                format!("{what} must be a non-empty string, got {}", kind_of(other)),
            )),
        }
    }

    fn reference(
        &mut self,
        map: &Map<String, Value>,
        path: &YamlPath,
        origin: Origin,
        depth: usize,
    ) -> Result<Value> {
        let name = self.marker_string(
            origin,
            &map["$resource"],
            &path.key("$resource"),
            "$resource",
        )?;
        let unknown: Vec<&String> = map
            .keys()
            .filter(|k| k.starts_with('$') && !MARKERS.contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(self.invalid(
                origin,
                path,
                format!(
                    "unknown marker key(s) {unknown:?} in the $resource reference for {name:?}; allowed: {}",
                    MARKERS.join(", ")
                ),
            ));
        }
        let kind = match map.get("type") {
            None | Some(Value::Null) => "default".to_owned(),
            Some(v) => self.marker_string(origin, v, &path.key("type"), "type")?,
        };
        let requires = match map.get("$requires") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = path.key("$requires").index(i);
                    out.push(self.marker_string(origin, item, &p, "each $requires entry")?);
                }
                out
            }
            Some(other) => {
                return Err(self.invalid(
                    origin,
                    &path.key("$requires"),
                    format!(
                        "$requires must be a list of capability names, got {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        let required_flag = match map.get("$required") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let v = match v {
                    Value::String(s) => {
                        Value::String(self.text(origin, s, &path.key("$required"))?)
                    }
                    other => other.clone(),
                };
                Some(parse_flag(&v).ok_or_else(|| {
                    self.invalid(
                        origin,
                        &path.key("$required"),
                        "$required must be true or false".into(),
                    )
                })?)
            }
        };
        let mut defaults: Vec<(String, &str, &Value)> = Vec::new();
        for (k, v) in map.iter().filter(|(k, _)| !MARKERS.contains(&k.as_str())) {
            let key = self.text(origin, k, &path.key(k))?;
            defaults.push((key, k.as_str(), v));
        }

        let Some(resource) = self.env.resource(&kind, &name) else {
            let (required, reason) = match required_flag {
                Some(r) => (r, "the reference sets $required: true".to_owned()),
                None if !requires.is_empty() => (true, format!("the reference $requires {requires:?}")),
                None => match (self.strict, self.env.strict_resources()) {
                    (Some(s), _) => (s, "strict resolution is on".to_owned()),
                    (None, Some(s)) => (s, "the environment sets strict_resources: true".to_owned()),
                    (None, None) => (true, "resolution is strict by default (set $required: false for an optional resource)".to_owned()),
                },
            };
            if required {
                return Err(ResolveError::ResourceNotFound {
                    kind,
                    name,
                    environment: self.env.name().to_owned(),
                    at: self.locate(origin, path),
                    reason,
                });
            }
            tracing::warn!(%kind, %name, environment = self.env.name(), "resource not found; using the inline defaults");
            let mut out = Map::new();
            for (key, raw, v) in defaults {
                let v = self.resolve(v, &path.key(raw), origin, depth + 1)?;
                out.insert(key, v);
            }
            return Ok(Value::Object(out));
        };

        if let Some(pos) = self
            .stack
            .iter()
            .position(|(t, n)| *t == kind && *n == name)
        {
            let mut chain: Vec<String> = self.stack[pos..]
                .iter()
                .map(|(t, n)| format!("{t}/{n}"))
                .collect();
            chain.push(format!("{kind}/{name}"));
            return Err(ResolveError::ReferenceCycle {
                chain: chain.join(" -> "),
                at: self.locate(origin, path),
            });
        }
        let env_path = YamlPath::from_keys(["resources", kind.as_str(), name.as_str()]);
        self.stack.push((kind.clone(), name.clone()));
        let resolved = self.resolve(resource, &env_path, Origin::Env, depth + 1);
        self.stack.pop();
        let mut resolved = resolved?;
        if let Value::Object(out) = &mut resolved {
            for (key, raw, v) in defaults {
                if !out.contains_key(&key) {
                    let v = self.resolve(v, &path.key(raw), origin, depth + 1)?;
                    out.insert(key, v);
                }
            }
        }
        if !requires.is_empty() {
            self.check_capabilities(&resolved, &requires, &kind, &name, path, origin, &env_path)?;
        }
        Ok(resolved)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_capabilities(
        &self,
        resolved: &Value,
        requires: &[String],
        kind: &str,
        name: &str,
        path: &YamlPath,
        origin: Origin,
        env_path: &YamlPath,
    ) -> Result<()> {
        let declared: Option<Vec<String>> = match resolved.get("capabilities") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(other),
                    })
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|other| ResolveError::InvalidEnvironment {
                        at: self.locate(Origin::Env, &env_path.key("capabilities")),
                        reason: format!("capabilities must be strings, got {}", kind_of(other)),
                    })?,
            ),
            Some(Value::Object(m)) => Some(
                m.iter()
                    .filter(|(_, v)| !matches!(v, Value::Bool(false) | Value::Null))
                    .map(|(k, _)| k.clone())
                    .collect(),
            ),
            Some(other) => {
                return Err(ResolveError::InvalidEnvironment {
                    at: self.locate(Origin::Env, &env_path.key("capabilities")),
                    reason: format!(
                        "capabilities must be a list of names, got {}",
                        kind_of(other)
                    ),
                });
            }
        };
        let have = declared.as_deref().unwrap_or(&[]);
        let missing: Vec<String> = requires
            .iter()
            .filter(|r| !have.contains(r))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ResolveError::MissingCapabilities {
            kind: kind.to_owned(),
            name: name.to_owned(),
            missing,
            declares_none: declared.is_none(),
            at: self.locate(origin, path),
        })
    }
}
