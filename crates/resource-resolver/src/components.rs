//! Building live components from resolved config sections through the factories of the other
//! crates: `create_registry_backend`, `create_event_bus` and `create_knowledge_backend`.
//!
//! A section is a mapping with a `backend` key (the kind) and the backend's options.
//! Adaptation rules, applied before the factory sees the options:
//! * `backend` is removed; an option whose value is the empty string or null is treated as
//!   absent (so `${VAR:}` can leave an option unset);
//! * event buses: numeric strings become numbers for `capacity` and `*_ms` options; for
//!   `redis` and `postgres` without `url`, the URL is built from `host`, `port`,
//!   `username`/`user`, `password`, `db`/`database` and `ssl` (`rediss://`, `sslmode=require`).

use std::sync::Arc;

use dynreg_event_bus::{EventBus, EventBusError};
use dynreg_knowledge_store::{KnowledgeBackend, KnowledgeError};
use dynreg_registry_core::{RegistryBackend, RegistryError};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::domain::{ResolvedConfig, parse_path};
use crate::environment::kind_of;
use crate::error::{Component, Location, ResolveError, Result};
use crate::secrets::Secrets;

/// The live handles built from a domain config.
#[derive(Clone, Default)]
pub struct Components {
    /// The registry backend (initialized), if the config has a registry section.
    pub registry: Option<Arc<dyn RegistryBackend>>,
    /// The event bus (connected), if the config has an event-bus section.
    pub event_bus: Option<Arc<dyn EventBus>>,
    /// The knowledge backend, if the config has a knowledge section.
    pub knowledge: Option<Arc<dyn KnowledgeBackend>>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components")
            .field("registry", &self.registry.as_ref().map(|r| r.kind()))
            .field("event_bus", &self.event_bus.is_some())
            .field("knowledge", &self.knowledge.is_some())
            .finish()
    }
}

/// Where [`ResolvedConfig::components`] looks for each section.
#[derive(Clone, Debug)]
pub struct ComponentPaths {
    /// Default `bot.registry`.
    pub registry: String,
    /// Default `bot.events`.
    pub event_bus: String,
    /// Default `bot.knowledge`.
    pub knowledge: String,
}

impl Default for ComponentPaths {
    fn default() -> Self {
        ComponentPaths {
            registry: "bot.registry".into(),
            event_bus: "bot.events".into(),
            knowledge: "bot.knowledge".into(),
        }
    }
}

struct Section {
    kind: String,
    options: Map<String, Value>,
    at: Location,
}

fn section(cfg: &ResolvedConfig, path: &str, component: Component) -> Result<Option<Section>> {
    let p = parse_path(path);
    let at = cfg.source.locate(&p, cfg.secrets.scrub(&p.to_string()));
    let Some(node) = cfg.get(path) else {
        return Ok(None);
    };
    let invalid = |reason: String| ResolveError::InvalidComponentConfig {
        component,
        at: Box::new(at.clone()),
        reason: cfg.secrets.scrub(&reason),
    };
    let Value::Object(map) = node else {
        return Err(invalid(format!(
            "expected a mapping with a `backend` key, got {}",
            kind_of(node)
        )));
    };
    let kind = match map.get("backend") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_ascii_lowercase(),
        Some(other) => {
            return Err(invalid(format!(
                "`backend` must be a non-empty string, got {}",
                kind_of(other)
            )));
        }
        None => {
            return Err(invalid(
                "no `backend` key (is the $resource missing from the environment?)".into(),
            ));
        }
    };
    let options = map
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "backend" && !matches!(v, Value::Null) && v.as_str() != Some("")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Some(Section { kind, options, at }))
}

fn build_error(
    component: Component,
    s: &Section,
    secrets: &Secrets,
    message: String,
) -> ResolveError {
    ResolveError::Build {
        component,
        kind: s.kind.clone(),
        at: Box::new(s.at.clone()),
        message: secrets.scrub(&message),
    }
}

fn disabled(component: Component, s: &Section, feature: &str) -> ResolveError {
    ResolveError::FeatureDisabled {
        component,
        kind: s.kind.clone(),
        feature: feature.to_owned(),
        at: Box::new(s.at.clone()),
    }
}

fn opt_str(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truthy(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1")
        }
        _ => false,
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Adapts an event-bus section to `create_event_bus`'s options.
fn bus_options(kind: &str, mut m: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in m.iter_mut() {
        if (k == "capacity" || k.ends_with("_ms"))
            && let Some(n) = v.as_str().and_then(|s| s.trim().parse::<u64>().ok())
        {
            *v = Value::from(n);
        }
    }
    let url_keys = [
        "host", "port", "user", "username", "password", "db", "database", "ssl",
    ];
    if !m.contains_key("url")
        && !m.contains_key("connection_string")
        && url_keys.iter().any(|k| m.contains_key(*k))
    {
        let host = opt_str(&m, "host").unwrap_or_else(|| "localhost".into());
        let user = opt_str(&m, "username").or_else(|| opt_str(&m, "user"));
        let password = opt_str(&m, "password");
        let ssl = truthy(&m, "ssl");
        let auth = match (&user, &password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (Some(u), None) => format!("{}@", enc(u)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            (None, None) => String::new(),
        };
        let url = match kind {
            "redis" => {
                let port = opt_str(&m, "port").unwrap_or_else(|| "6379".into());
                let db = opt_str(&m, "db")
                    .map(|d| format!("/{d}"))
                    .unwrap_or_default();
                let scheme = if ssl { "rediss" } else { "redis" };
                Some(format!("{scheme}://{auth}{host}:{port}{db}"))
            }
            "postgres" | "postgresql" => {
                let port = opt_str(&m, "port").unwrap_or_else(|| "5432".into());
                let db = opt_str(&m, "database")
                    .or_else(|| opt_str(&m, "db"))
                    .unwrap_or_else(|| "postgres".into());
                let tls = if ssl { "?sslmode=require" } else { "" };
                Some(format!("postgres://{auth}{host}:{port}/{}{tls}", enc(&db)))
            }
            _ => None,
        };
        if let Some(url) = url {
            for k in url_keys {
                m.remove(k);
            }
            m.insert("url".into(), Value::String(url));
        }
    }
    m
}

/// Builds and initializes a registry backend from a resolved section.
async fn registry(s: &Section, secrets: &Secrets) -> Result<Arc<dyn RegistryBackend>> {
    let backend = dynreg_registry_backends::create_registry_backend(
        &s.kind,
        &Value::Object(s.options.clone()),
    )
    .map_err(|e| match e {
        RegistryError::FeatureDisabled { feature, .. } => disabled(Component::Registry, s, feature),
        other => build_error(Component::Registry, s, secrets, other.to_string()),
    })?;
    backend
        .initialize()
        .await
        .map_err(|e| build_error(Component::Registry, s, secrets, e.to_string()))?;
    Ok(backend)
}

async fn event_bus(s: &Section, secrets: &Secrets) -> Result<Arc<dyn EventBus>> {
    let mut options = bus_options(&s.kind, s.options.clone());
    options.insert("backend".into(), Value::String(s.kind.clone()));
    dynreg_event_bus::create_event_bus(&Value::Object(options))
        .await
        .map_err(|e| match e {
            EventBusError::BackendNotBuilt { feature, .. } => {
                disabled(Component::EventBus, s, &feature)
            }
            other => build_error(Component::EventBus, s, secrets, other.to_string()),
        })
}

async fn knowledge(s: &Section, secrets: &Secrets) -> Result<Arc<dyn KnowledgeBackend>> {
    dynreg_knowledge_store::create_knowledge_backend(&s.kind, &Value::Object(s.options.clone()))
        .await
        .map_err(|e| match e {
            KnowledgeError::FeatureDisabled { feature, .. } => {
                disabled(Component::Knowledge, s, feature)
            }
            other => build_error(Component::Knowledge, s, secrets, other.to_string()),
        })
}

impl ResolvedConfig {
    /// Builds and initializes the registry backend described at `path` (e.g. `bot.registry`).
    /// `Ok(None)` when there is no such section.
    pub async fn registry_backend(&self, path: &str) -> Result<Option<Arc<dyn RegistryBackend>>> {
        match section(self, path, Component::Registry).map_err(|e| e.scrubbed(&self.secrets))? {
            Some(s) => registry(&s, &self.secrets)
                .await
                .map(Some)
                .map_err(|e| e.scrubbed(&self.secrets)),
            None => Ok(None),
        }
    }

    /// Builds (and connects) the event bus described at `path` (e.g. `bot.events`).
    pub async fn event_bus(&self, path: &str) -> Result<Option<Arc<dyn EventBus>>> {
        match section(self, path, Component::EventBus).map_err(|e| e.scrubbed(&self.secrets))? {
            Some(s) => event_bus(&s, &self.secrets)
                .await
                .map(Some)
                .map_err(|e| e.scrubbed(&self.secrets)),
            None => Ok(None),
        }
    }

    /// Builds the knowledge backend described at `path` (e.g. `bot.knowledge`).
    pub async fn knowledge_backend(&self, path: &str) -> Result<Option<Arc<dyn KnowledgeBackend>>> {
        match section(self, path, Component::Knowledge).map_err(|e| e.scrubbed(&self.secrets))? {
            Some(s) => knowledge(&s, &self.secrets)
                .await
                .map(Some)
                .map_err(|e| e.scrubbed(&self.secrets)),
            None => Ok(None),
        }
    }

    /// Builds every component found at the default paths (`bot.registry`, `bot.events`,
    /// `bot.knowledge`).
    pub async fn components(&self) -> Result<Components> {
        self.components_at(&ComponentPaths::default()).await
    }

    /// Builds every component found at `paths`. A section that is absent leaves its handle
    /// `None`; one that is present but fails is an error.
    pub async fn components_at(&self, paths: &ComponentPaths) -> Result<Components> {
        Ok(Components {
            registry: self.registry_backend(&paths.registry).await?,
            event_bus: self.event_bus(&paths.event_bus).await?,
            knowledge: self.knowledge_backend(&paths.knowledge).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn redis_url_from_parts_with_tls_and_escaped_password() {
        let m = bus_options(
            "redis",
            obj(
                json!({"host": "cache", "port": "6380", "password": "p@ss", "ssl": true, "capacity": "64"}),
            ),
        );
        assert_eq!(m["url"], json!("rediss://:p%40ss@cache:6380"));
        assert_eq!(m["capacity"], json!(64));
        assert!(!m.contains_key("host") && !m.contains_key("ssl"));
        let m = bus_options(
            "redis",
            obj(json!({"host": "127.0.0.1", "ssl": "false", "db": 2})),
        );
        assert_eq!(m["url"], json!("redis://127.0.0.1:6379/2"));
    }

    #[test]
    fn postgres_url_from_parts_and_explicit_url_wins() {
        let m = bus_options(
            "postgres",
            obj(json!({"host": "db", "user": "app", "database": "bots", "ssl": true})),
        );
        assert_eq!(
            m["url"],
            json!("postgres://app@db:5432/bots?sslmode=require")
        );
        let m = bus_options(
            "postgres",
            obj(json!({"url": "postgres://x/y", "host": "ignored"})),
        );
        assert_eq!(m["url"], json!("postgres://x/y"));
        let m = bus_options("memory", obj(json!({"capacity": "10"})));
        assert_eq!(m, obj(json!({"capacity": 10})));
    }
}
