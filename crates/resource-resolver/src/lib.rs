//! # dynreg-resource-resolver
//!
//! Environment-aware configuration for dynreg, the Rust counterpart of the original's
//! `EnvironmentConfig` / `resolve_resource_references` / `substitute_env_vars`
//! without its gaps:
//!
//! * [`Environment`]: `configs/environments/<name>.yaml` (`name`, `description`,
//!   `resources.<type>.<name>`, `settings`), chosen by path, by name, or by the
//!   [`ENV_VAR`] (`DYNREG_ENV`) variable, and substituted from the environment at load.
//! * `${VAR}`, `${VAR:default}`, `${VAR:-default}`, `${VAR:?message}` in every string and key
//!   ([`substitute_str`]); an **empty variable counts as unset**; a missing one is an error
//!   naming the variable, file, line and YAML path, or is kept literally in lenient mode.
//! * [`DomainConfig`]: an application config whose `$resource` blocks are resolved against
//!   an environment ([`DomainConfig::resolve`]): strict or lenient, environment values win
//!   over inline defaults, nested references, cycle detection, `$requires` checks that fail
//!   when a capability is absent, and the portability check with offending YAML paths.
//! * [`ResolvedConfig::section`]: a component's kind and options with their location
//!   ([`ComponentSection`]), for a backend factory; errors of that factory are reported through
//!   [`ComponentSection::build_error`] with the location and no secret.
//! * [`validate_portability`] and friends: machine-local values (home directories, loopback
//!   addresses) in any config.
//!
//! * [`keys`]: the options vocabulary every backend family shares (an unknown option names the
//!   nearest valid one).
//!
//! This crate is pure configuration: it depends on no other dynreg crate and builds nothing;
//! the backend crates depend on it for their option vocabulary.
//! The facade (`dynreg::Platform`, `dynreg::build`) turns sections into live backends.
//! * Errors ([`ResolveError`]) carry file, line and YAML path; values substituted from the
//!   environment never appear in error messages or `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dynreg_resource_resolver::ResolveError> {
//! use dynreg_resource_resolver::{Component, DomainConfig, Environment};
//! let env = Environment::load("configs/environments/development.yaml")?;
//! let resolved = DomainConfig::load("configs/domains/my-bot.yaml")?.resolve(&env)?;
//! let registry = resolved.section("bot.registry", Component::Registry)?.unwrap();
//! assert_eq!(registry.kind, "sqlite"); // the development environment's registry
//! # Ok(()) }
//! ```
//!
//! No cargo features: which backends exist is the business of the crates that build them.

mod domain;
mod environment;
mod error;
pub mod keys;
mod lines;
mod path;
mod placeholder;
mod portability;
mod resolve;
mod secrets;
mod section;
mod substitute;
mod vars;
mod yaml;

pub use domain::{DomainConfig, ResolveOptions, ResolvedConfig};
pub use environment::{
    CLOUD_MARKERS, CONFIG_DIR_VAR, DEFAULT_CONFIG_DIR, ENV_VAR, Environment, LoadOptions,
};
pub use error::{Component, Location, PortabilityFinding, ResolveError, Result};
pub use lines::LineIndex;
pub use path::{Segment, YamlPath};
pub use placeholder::{Missing, Substituted, Unresolved, substitute_str};
pub use portability::{
    PortabilityError, PortabilityIssue, has_resource_references, is_portable, portability_issues,
    validate_portability,
};
pub use resolve::MAX_NODES;
pub use section::{ComponentPaths, ComponentSection};
pub use substitute::{MAX_DEPTH, UnresolvedVar};
pub use vars::{ProcessEnv, VarMap, VarSource};
