//! # dynreg-resource-resolver
//!
//! Environment-aware configuration for dynreg, the Rust counterpart of the original's
//! `EnvironmentConfig` / `resolve_resource_references` / `substitute_env_vars`
//! (reference-spec §3), without its gaps (§9.2):
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
//! * [`EnvironmentResolver`]: an environment as the `ConfigResolver` of a
//!   `dynreg_cache::ConfigCachingManager`, so cached bot configs have their `$resource`
//!   references resolved (strict by default, `${VAR}` left as stored).
//! * [`ResolvedConfig::components`]: live handles built through `create_registry_backend`,
//!   `create_event_bus` and `create_knowledge_backend`.
//! * Errors ([`ResolveError`]) carry file, line and YAML path; values substituted from the
//!   environment never appear in error messages or `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dynreg_resource_resolver::ResolveError> {
//! use dynreg_resource_resolver::{DomainConfig, Environment};
//! let env = Environment::load("configs/environments/development.yaml")?;
//! let resolved = DomainConfig::load("configs/domains/my-bot.yaml")?.resolve(&env)?;
//! let live = resolved.components().await?; // SQLite registry, memory bus, file knowledge
//! # let _ = live; Ok(()) }
//! ```
//!
//! ## Features
//! Each forwards to the backend crates; a kind whose feature is off is
//! [`ResolveError::FeatureDisabled`] naming the feature.
//!
//! | feature | enables |
//! |---|---|
//! | `sqlite` (default) | the SQLite registry backend |
//! | `file` (default) | the file registry backend and the filesystem knowledge store |
//! | `postgres` | the PostgreSQL registry backend and LISTEN/NOTIFY event bus |
//! | `redis` | the Redis pub/sub event bus |
//! | `s3` | the S3 registry backend and S3 knowledge store |

mod components;
mod config_resolver;
mod domain;
mod environment;
mod error;
mod lines;
mod path;
mod placeholder;
mod resolve;
mod secrets;
mod substitute;
mod vars;
mod yaml;

pub use components::{ComponentPaths, Components};
pub use config_resolver::EnvironmentResolver;
pub use domain::{DomainConfig, ResolveOptions, ResolvedConfig};
pub use environment::{
    CLOUD_MARKERS, CONFIG_DIR_VAR, DEFAULT_CONFIG_DIR, ENV_VAR, Environment, LoadOptions,
};
pub use error::{Component, Location, PortabilityFinding, ResolveError, Result};
pub use lines::LineIndex;
pub use path::{Segment, YamlPath};
pub use placeholder::{Missing, Substituted, Unresolved, substitute_str};
pub use resolve::MAX_NODES;
pub use substitute::{MAX_DEPTH, UnresolvedVar};
pub use vars::{ProcessEnv, VarMap, VarSource};
