//! Component sections: where a domain config describes a registry, an event bus or a knowledge
//! store, read as a kind and its options with their location, ready for a backend factory.
//!
//! This crate builds nothing: the facade's `Platform` (or a user wiring by hand) hands a
//! [`ComponentSection`]'s kind and options to the factory of the backend crate and reports a
//! failure with [`ComponentSection::build_error`], which names the file, line and YAML path and
//! never shows a value substituted from the environment.
//!
//! Adaptation rules: `backend` is the kind (trimmed, lower-cased) and is removed from the
//! options; an option whose value is the empty string or null is treated as absent (so
//! `${VAR:}` can leave an option unset). Everything else is passed on as written; each
//! factory reads its own options (a bus builds its URL from `host`/`port`/... parts itself).

use serde_json::{Map, Value};

use crate::domain::{ResolvedConfig, parse_path};
use crate::environment::kind_of;
use crate::error::{Component, Location, ResolveError, Result};
use crate::secrets::Secrets;

/// Where [`ResolvedConfig::section`] looks for each component by default.
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

impl ComponentPaths {
    /// The path of `component`.
    pub fn of(&self, component: Component) -> &str {
        match component {
            Component::Registry => &self.registry,
            Component::EventBus => &self.event_bus,
            Component::Knowledge => &self.knowledge,
        }
    }
}

/// One component's section of a resolved config: its kind and options, and where it is.
#[derive(Clone)]
pub struct ComponentSection {
    /// Which component.
    pub component: Component,
    /// The backend kind (`backend`, trimmed and lower-cased).
    pub kind: String,
    /// The backend's options (`backend` removed, empty and null options dropped).
    pub options: Map<String, Value>,
    /// Where the section is.
    pub at: Location,
    secrets: Secrets,
}

impl std::fmt::Debug for ComponentSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentSection")
            .field("component", &self.component)
            .field("kind", &self.kind)
            .field(
                "options",
                &self
                    .secrets
                    .scrub_value(&Value::Object(self.options.clone())),
            )
            .field("at", &self.at)
            .finish()
    }
}

impl ComponentSection {
    /// The options as one JSON object, as the factories take them.
    pub fn options_value(&self) -> Value {
        Value::Object(self.options.clone())
    }

    /// The options with the kind under `backend` (the event bus factory's form).
    pub fn options_with_backend(&self) -> Value {
        let mut m = self.options.clone();
        m.insert("backend".into(), Value::String(self.kind.clone()));
        Value::Object(m)
    }

    /// The factory of this section's kind failed: `message` (scrubbed of substituted values)
    /// with the section's location.
    pub fn build_error(&self, message: impl std::fmt::Display) -> ResolveError {
        ResolveError::Build {
            component: self.component,
            kind: self.kind.clone(),
            at: Box::new(self.at.clone()),
            message: self.secrets.scrub(&message.to_string()),
        }
        .scrubbed(&self.secrets)
    }

    /// This section's kind needs a cargo feature that is not compiled in.
    pub fn feature_disabled(&self, feature: impl Into<String>) -> ResolveError {
        ResolveError::FeatureDisabled {
            component: self.component,
            kind: self.kind.clone(),
            feature: feature.into(),
            at: Box::new(self.at.clone()),
        }
        .scrubbed(&self.secrets)
    }
}

impl ResolvedConfig {
    /// The section of `component` at `path` (e.g. `bot.registry`); `Ok(None)` when there is no
    /// such section. A section that is not a mapping with a non-empty `backend` string is an
    /// error naming where it is.
    pub fn section(&self, path: &str, component: Component) -> Result<Option<ComponentSection>> {
        let p = parse_path(path);
        let at = self.source.locate(&p, self.secrets.scrub(&p.to_string()));
        let Some(node) = self.get(path) else {
            return Ok(None);
        };
        let invalid = |reason: String| {
            ResolveError::InvalidComponentConfig {
                component,
                at: Box::new(at.clone()),
                reason: self.secrets.scrub(&reason),
            }
            .scrubbed(&self.secrets)
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
        Ok(Some(ComponentSection {
            component,
            kind,
            options,
            at,
            secrets: self.secrets.clone(),
        }))
    }
}
