//! `EnvironmentResolver`: an environment as a [`ConfigResolver`] for the config cache, so a
//! `ConfigCachingManager` hands out bot configs whose `$resource` references are resolved
//! (the original's `ConfigCachingManager(backend, environment=...)`).

use std::sync::Arc;

use dynreg_cache::ConfigResolver;
use dynreg_registry_core::BoxError;
use dynreg_resource_resolver::{DomainConfig, Environment, ResolveOptions};
use serde_json::Value;

/// Resolves `$resource` references in bot configs read from the registry against one
/// environment.
///
/// As in the original, `${VAR}` placeholders in the stored config are **not** expanded (the
/// registry holds the config as written; the environment was substituted when it was loaded),
/// and resolution is strict by default: a missing resource is an error unless the reference
/// says `$required: false`.
#[derive(Clone, Debug)]
pub struct EnvironmentResolver {
    env: Arc<Environment>,
    strict: Option<bool>,
}

impl EnvironmentResolver {
    /// A strict resolver over `env`.
    pub fn new(env: Arc<Environment>) -> Self {
        EnvironmentResolver {
            env,
            strict: Some(true),
        }
    }

    /// Sets strictness: `Some(true)` (default) a missing resource is an error, `Some(false)`
    /// inline defaults are used, `None` defers to the environment's `strict_resources`
    /// setting (strict when absent).
    pub fn strict(mut self, strict: Option<bool>) -> Self {
        self.strict = strict;
        self
    }

    /// The environment.
    pub fn environment(&self) -> &Environment {
        &self.env
    }
}

impl ConfigResolver for EnvironmentResolver {
    fn environment_name(&self) -> Option<&str> {
        Some(self.env.name())
    }

    fn resolve(&self, _bot_id: &str, section: &Value) -> Result<Value, BoxError> {
        let opts = ResolveOptions {
            strict: self.strict,
            substitute: false,
            check_portability: false,
            ..ResolveOptions::default()
        };
        Ok(DomainConfig::from_value(section.clone())
            .resolve_with(&self.env, &opts)?
            .into_value())
    }
}
