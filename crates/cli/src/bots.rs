//! `dynreg serve` and `dynreg bots ...`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dynreg::config::portability_issues;
use dynreg::registry::backend::format_timestamp;
use dynreg::registry::wire::change_to_json;
use dynreg::registry::{
    Change, ChangeFeed, ListQuery, RegisterOptions, Registration, RegistryBackend,
    RegistryBackendExt, SortSpec, WriteEffect,
};
use dynreg::server::{RegistryServer, ServerConfig};
use serde_json::{Map, Value, json};

use crate::{Cli, env, out};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// A token that may read (repeatable).
    #[arg(long = "read-token", env = "DYNREG_READ_TOKEN", hide_env_values = true)]
    read_tokens: Vec<String>,
    /// A token that may read and write (repeatable).
    #[arg(
        long = "write-token",
        env = "DYNREG_WRITE_TOKEN",
        hide_env_values = true
    )]
    write_tokens: Vec<String>,
    /// Serve without tokens on an address that is not loopback.
    #[arg(long)]
    insecure: bool,
    /// Allow `DELETE /api/v1/configs` (delete every registration).
    #[arg(long)]
    allow_clear: bool,
    /// Where in-memory vector stores are persisted (the knowledge routes' ingest and search).
    #[arg(long, env = "DYNREG_VECTORS_DIR", default_value = "data/vectors")]
    vectors_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BotsCommand {
    /// Register (create or replace) a bot from a YAML or JSON config file.
    Register {
        /// The bot id.
        id: String,
        /// The config file (`.json`, or YAML).
        #[arg(long, short)]
        file: PathBuf,
        /// Metadata `key=value` (repeatable; the value is JSON when it parses, else text).
        #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// The status (default `active`).
        #[arg(long, default_value = "active")]
        status: String,
        /// Only if the registration is still at this revision (compare-and-swap).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
        /// Only if the bot does not exist yet.
        #[arg(long, conflicts_with = "if_revision")]
        create_only: bool,
    },
    /// Show one bot.
    Get {
        /// The bot id.
        id: String,
    },
    /// List bots.
    Ls {
        /// Only this status (`active`, `inactive`, ...).
        #[arg(long)]
        status: Option<String>,
        /// Metadata filter `key=value` (repeatable; all must match).
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Sort `field[:asc|desc]` (repeatable): `bot_id`, `updated_at`, `metadata.<key>`, ...
        #[arg(long = "sort", value_name = "FIELD[:ORDER]")]
        sorts: Vec<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Deactivate a bot (soft delete: it stays listed as inactive).
    Deactivate {
        /// The bot id.
        id: String,
    },
    /// Delete a bot.
    Rm {
        /// The bot id.
        id: String,
        /// Only if the registration is still at this revision (compare-and-swap).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Print changes as they happen.
    Watch {
        /// Start after this revision (default: the current one, so only new changes).
        #[arg(long, value_name = "REV")]
        since: Option<u64>,
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Check a config for machine-local values (paths, localhost URLs, ...).
    Lint {
        /// The config file (`.json`, or YAML).
        #[arg(long, short)]
        file: PathBuf,
    },
}

/// Reads a YAML or JSON file as JSON; errors name the file (and the line for YAML).
pub(crate) fn read_config(file: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", file.display()))
    } else {
        serde_norway::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid YAML: {e}", file.display()))
    }
}

fn pairs(items: &[String], what: &str) -> Result<Map<String, Value>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("{what} {kv:?} is not KEY=VALUE"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            Ok((k.to_owned(), value))
        })
        .collect()
}

fn effect_name(e: WriteEffect) -> &'static str {
    match e {
        WriteEffect::Created => "created",
        WriteEffect::Updated => "updated",
        WriteEffect::Unchanged => "unchanged",
        WriteEffect::Absent => "absent",
    }
}

fn show(cli: &Cli, reg: &Registration) {
    if cli.json {
        out::json(&reg.to_json());
        return;
    }
    out::line(format!("bot_id:      {}", reg.bot_id));
    out::line(format!("status:      {}", reg.status));
    out::line(format!("revision:    {}", reg.revision));
    out::line(format!(
        "updated_at:  {}",
        format_timestamp(&reg.updated_at)
    ));
    out::line(format!(
        "created_at:  {}",
        format_timestamp(&reg.created_at)
    ));
    if !reg.metadata.is_empty() {
        out::line(format!(
            "metadata:    {}",
            Value::Object((*reg.metadata).clone())
        ));
    }
    out::line("config:");
    out::line(serde_json::to_string_pretty(&*reg.config).unwrap_or_default());
}

pub(crate) async fn run(cli: &Cli, cmd: &BotsCommand) -> Result<()> {
    if let BotsCommand::Lint { file } = cmd {
        return lint(cli, file);
    }
    // One client: `watch` long-polls through the same server connection the other commands use.
    let remote = env::remote(cli).await?;
    let registry: Arc<dyn RegistryBackend> = match &remote {
        Some(http) => http.clone(),
        None => env::local_registry(cli).await?,
    };
    match cmd {
        BotsCommand::Register {
            id,
            file,
            metadata,
            status,
            if_revision,
            create_only,
        } => {
            let config = read_config(file)?;
            let mut options = RegisterOptions::default()
                .status(status.as_str())
                .metadata(pairs(metadata, "metadata")?);
            if let Some(r) = if_revision {
                options = options.if_revision(*r);
            }
            if *create_only {
                options = options.create_only();
            }
            let done = registry
                .register_reporting(id, Arc::new(config), options)
                .await?;
            if cli.json {
                let mut v = done.registration.to_json();
                v["effect"] = json!(effect_name(done.effect));
                out::json(&v);
            } else {
                out::line(format!(
                    "{} {id} at revision {}",
                    effect_name(done.effect),
                    done.registration.revision
                ));
            }
        }
        BotsCommand::Get { id } => {
            let reg = registry
                .peek(id)
                .await?
                .with_context(|| format!("bot {id:?} not found"))?;
            show(cli, &reg);
        }
        BotsCommand::Ls {
            status,
            filters,
            sorts,
            limit,
        } => {
            let mut query = ListQuery {
                status: status.as_deref().map(Into::into),
                filter_metadata: Some(pairs(filters, "filter")?).filter(|m| !m.is_empty()),
                limit: *limit,
                ..ListQuery::default()
            };
            for s in sorts {
                query.sort.push(SortSpec::parse(s)?);
            }
            let rows = registry.list(&query).await?;
            if cli.json {
                out::json(&Value::Array(rows.iter().map(|r| r.to_json()).collect()));
            } else {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.bot_id.clone(),
                            r.status.to_string(),
                            r.revision.to_string(),
                            format_timestamp(&r.updated_at),
                        ]
                    })
                    .collect();
                out::table(&["BOT", "STATUS", "REVISION", "UPDATED"], &rows);
            }
        }
        BotsCommand::Deactivate { id } => {
            if !registry.deactivate(id).await? {
                bail!("bot {id:?} not found");
            }
            out::line(format!("deactivated {id}"));
        }
        BotsCommand::Rm { id, if_revision } => {
            match if_revision {
                Some(r) => registry.unregister_if(id, *r).await?,
                None => {
                    if !registry.unregister(id).await? {
                        bail!("bot {id:?} not found");
                    }
                }
            }
            out::line(format!("deleted {id}"));
        }
        BotsCommand::Watch { since, count } => watch(cli, registry, remote, *since, *count).await?,
        BotsCommand::Lint { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn lint(cli: &Cli, file: &Path) -> Result<()> {
    let config = read_config(file)?;
    let issues = portability_issues(&config);
    if cli.json {
        out::json(&Value::Array(
            issues
                .iter()
                .map(
                    |i| json!({"path": i.path, "description": i.description, "matched": i.matched}),
                )
                .collect(),
        ));
    } else {
        for i in &issues {
            out::line(format!("{}: {} ({:?})", i.path, i.description, i.matched));
        }
    }
    if issues.is_empty() {
        if !cli.json {
            out::line(format!("{}: portable", file.display()));
        }
        Ok(())
    } else {
        bail!(
            "{}: {} machine-local value(s); use ${{VAR}} or $resource references instead",
            file.display(),
            issues.len()
        )
    }
}

fn print_change(cli: &Cli, change: &Change) {
    if cli.json {
        out::line(change_to_json(change));
        return;
    }
    match change {
        Change::Upsert(r) => out::line(format!(
            "{}\tupsert\t{}\t{}",
            r.revision, r.bot_id, r.status
        )),
        Change::Deleted { bot_id, revision } => out::line(format!("{revision}\tdeleted\t{bot_id}")),
    }
}

async fn watch(
    cli: &Cli,
    registry: Arc<dyn RegistryBackend>,
    remote: Option<Arc<dynreg::registry::HttpBackend>>,
    since: Option<u64>,
    count: Option<u64>,
) -> Result<()> {
    let mut cursor = match since {
        Some(s) => s,
        None => registry.current_revision().await?,
    };
    let mut seen = 0u64;
    loop {
        let feed = match &remote {
            Some(http) => http.watch(cursor, Duration::from_secs(30)).await?,
            None => registry.changes_since(cursor).await?,
        };
        match feed {
            ChangeFeed::Changes {
                changes,
                current_revision,
            } => {
                if changes.is_empty() && remote.is_none() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                for c in &changes {
                    print_change(cli, c);
                    seen += 1;
                    if count.is_some_and(|n| seen >= n) {
                        return Ok(());
                    }
                }
                cursor = changes.last().map_or(current_revision, Change::revision);
            }
            ChangeFeed::Expired {
                current_revision, ..
            } => {
                eprintln!(
                    "the change feed no longer reaches revision {cursor}; continuing from {current_revision} (relist with `dynreg bots ls`)"
                );
                cursor = current_revision;
            }
        }
    }
}

pub(crate) async fn serve(cli: &Cli, args: &ServeArgs) -> Result<()> {
    if cli.url.is_some() {
        bail!("serve runs against an environment, not --url");
    }
    let registry = env::local_registry(cli).await?;
    let mut config = ServerConfig {
        insecure: args.insecure,
        allow_clear: args.allow_clear,
        ..ServerConfig::default()
    };
    for t in &args.read_tokens {
        config = config.read_token(t);
    }
    for t in &args.write_tokens {
        config = config.write_token(t);
    }
    let mut server = RegistryServer::new(registry.clone()).with_config(config)?;
    // The knowledge routes, when the environment has a knowledge store.
    if env::environment(cli)?.has_resource("knowledge", "knowledge") {
        let backend = env::knowledge(cli).await?;
        let rag_config = crate::rag::rag_config(cli)?;
        let vectors_dir = args.vectors_dir.clone();
        let factory: dynreg::server::RagFactory = Arc::new(move |domain: String| {
            let (config, dir) = (rag_config.clone(), vectors_dir.clone());
            Box::pin(async move {
                crate::rag::build(config, &domain, &dir)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
        });
        server = server.with_knowledge(dynreg::server::KnowledgeService::new(backend, factory));
    }
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    out::line(format!("serving the registry on http://{addr}/api/v1"));
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    server.serve(listener, shutdown).await?;
    registry.close().await?;
    Ok(())
}
