//! The environment the commands run against, and the parts built from it.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use dynreg::Environment;
use dynreg::config::{Component, DomainConfig, LoadOptions, ResolveOptions};
use dynreg::knowledge::KnowledgeBackend;
use dynreg::registry::{HttpBackend, RegistryBackend};
use serde_json::json;

use crate::Cli;

/// Loads the environment named by `--config` or `--env`.
pub(crate) fn environment(cli: &Cli) -> Result<Environment> {
    let load = LoadOptions::default();
    match &cli.config {
        Some(file) => Environment::load_with(file, &load).map_err(|e| {
            anyhow::anyhow!("cannot load the environment file {}: {e}", file.display())
        }),
        None => Environment::load_named(&cli.config_dir, &cli.env, &load).map_err(|e| {
            anyhow::anyhow!(
                "cannot load environment {:?} from {}: {e}",
                cli.env,
                cli.config_dir.display()
            )
        }),
    }
}

/// The section of the environment's resource `name` of `kind`, resolved.
fn section(
    cli: &Cli,
    path: &str,
    kind: &str,
    name: &str,
    component: Component,
) -> Result<dynreg::config::ComponentSection> {
    let env = environment(cli)?;
    if !env.has_resource(kind, name) {
        bail!(
            "environment {:?} has no {kind} resource named {name:?}",
            env.name()
        );
    }
    let (root, key) = path.split_once('.').unwrap_or(("bot", path));
    let domain = DomainConfig::from_value(json!({root: {key: {"$resource": name, "type": kind}}}));
    let resolved = domain
        .resolve_with(&env, &ResolveOptions::with_load(LoadOptions::default()))
        .with_context(|| format!("cannot resolve the {kind} resource {name:?}"))?;
    resolved
        .section(path, component)?
        .with_context(|| format!("no {path} section"))
}

/// The environment's registry, never a remote one (what `serve` serves).
pub(crate) async fn local_registry(cli: &Cli) -> Result<Arc<dyn RegistryBackend>> {
    let section = section(
        cli,
        "bot.registry",
        "databases",
        "registry",
        Component::Registry,
    )?;
    Ok(dynreg::build::registry(&section).await?)
}

/// The HTTP registry of `--url`, if given.
pub(crate) async fn remote(cli: &Cli) -> Result<Option<Arc<HttpBackend>>> {
    let Some(url) = &cli.url else {
        return Ok(None);
    };
    let base = format!("{}/api/v1", url.trim_end_matches('/'));
    let mut config = json!({"base_url": base});
    if let Some(token) = &cli.token {
        config["auth_token"] = json!(token);
    }
    let b = HttpBackend::from_config(&config)?;
    b.initialize().await?;
    Ok(Some(Arc::new(b)))
}

/// The environment's knowledge store (`knowledge.knowledge`).
pub(crate) async fn knowledge(cli: &Cli) -> Result<Arc<dyn KnowledgeBackend>> {
    if cli.url.is_some() {
        bail!("knowledge commands run against an environment; --url serves bots only");
    }
    let section = section(
        cli,
        "bot.knowledge",
        "knowledge",
        "knowledge",
        Component::Knowledge,
    )?;
    Ok(dynreg::build::knowledge(&section).await?)
}
