//! `dynreg demo`: the platform's main job, end to end, on the environment (by default the
//! embedded `development` one: SQLite, an in-process bus, knowledge files under `./data`).
//!
//! Two replicas share the registry, each with its own cache of live bots kept current by
//! hybrid hot reload. A bot is registered and served; an update is served at once by the
//! replica that wrote it and, through the change feed, by the other; a bad config keeps the
//! last good bot serving; a deactivated bot is not served. Then a knowledge base is filled,
//! ingested and searched. Every step is checked: a step that does not hold fails the command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use dynreg::cache::{CacheError, InstanceFactory};
use dynreg::config::DomainConfig;
use dynreg::hot_reload::ReloadMode;
use dynreg::ingestion::{KnowledgeIngestionManager, SwapMode};
use dynreg::knowledge::{KnowledgeBackendExt, Metadata, PutOptions};
use dynreg::registry::{RegistryBackend, RegistryBackendExt};
use dynreg::{Environment, Platform};
use serde_json::{Value, json};

use crate::{Cli, env, out, rag};

/// The demo's bots and knowledge base (re-running the demo starts them over).
const BOT: &str = "demo-support-bot";
const OLD_BOT: &str = "demo-old-bot";
const KB: &str = "demo-support";

const DOCS: [(&str, &str); 3] = [
    (
        "billing.md",
        "# Billing\n\n## Refunds\n\nRefunds are issued within 14 days to the original card.\n\n\
         ## Invoices\n\nInvoices are emailed on the first of each month.\n",
    ),
    (
        "shipping.md",
        "# Shipping\n\nParcels ship from Rotterdam every weekday; tracking links arrive by email.\n",
    ),
    (
        "accounts/password.md",
        "# Accounts\n\n## Password reset\n\nReset your password from the login page.\n",
    ),
];

/// A stand-in for a real bot: it needs `llm.model` and refuses a config without one.
struct Bot {
    model: String,
}

struct Bots;

#[derive(Debug)]
struct BadConfig(String);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadConfig {}

#[async_trait]
impl InstanceFactory<Bot> for Bots {
    type Error = BadConfig;

    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<Bot, BadConfig> {
        let model = config["llm"]["model"]
            .as_str()
            .ok_or_else(|| BadConfig(format!("bot {bot_id}: config has no llm.model")))?;
        Ok(Bot {
            model: model.to_owned(),
        })
    }
}

fn bot_config(model: &str) -> Value {
    json!({"llm": {"provider": "anthropic", "model": model},
           "system_prompt": "You are a helpful support agent."})
}

/// The platform parts the environment has, as a domain config of `$resource` references.
fn domain(env: &Environment) -> DomainConfig {
    let mut bot = serde_json::Map::new();
    for (key, kind, name) in [
        ("registry", "databases", "registry"),
        ("events", "event_buses", "default"),
        ("knowledge", "knowledge", "knowledge"),
    ] {
        if env.has_resource(kind, name) {
            bot.insert(key.to_owned(), json!({"$resource": name, "type": kind}));
        }
    }
    DomainConfig::from_value(json!({"domain": {"id": "demo"}, "bot": bot}))
}

async fn replica(env: &Environment) -> Result<Platform<Bot>> {
    Platform::from_env(env.clone(), domain(env))
        .instances(Bots)
        .reload(ReloadMode::Hybrid)
        .poll_interval(Duration::from_millis(200))
        .start()
        .await
        .with_context(|| format!("cannot start a platform on environment {:?}", env.name()))
}

pub(crate) async fn run(cli: &Cli, vectors_dir: &std::path::Path) -> Result<()> {
    let env = env::environment(cli)?;
    let (a, b) = (replica(&env).await?, replica(&env).await?);
    let result = steps(cli, &a, &b, vectors_dir).await;
    let closed = (a.close().await, b.close().await);
    let steps = result?;
    closed.0?;
    closed.1?;
    if cli.json {
        out::json(&Value::Array(steps));
    }
    Ok(())
}

async fn steps(
    cli: &Cli,
    a: &Platform<Bot>,
    b: &Platform<Bot>,
    vectors_dir: &std::path::Path,
) -> Result<Vec<Value>> {
    let mut log = Vec::new();
    let mut say = |step: &str, detail: String| {
        if !cli.json {
            out::line(format!("{step:<12} {detail}"));
        }
        log.push(json!({"step": step, "detail": detail}));
    };
    for id in [BOT, OLD_BOT] {
        a.registry().unregister(id).await?;
    }

    let reg = a
        .registry()
        .register(BOT, bot_config("claude-3-sonnet"))
        .await?;
    let bot = a.bots().get_or_create(BOT).await?;
    say(
        "register",
        format!(
            "{BOT} at revision {}; replica A serves it on {}",
            reg.revision, bot.model
        ),
    );

    // An update through replica B: B serves it at once, A through the change feed.
    let reg = b
        .registry()
        .register(BOT, bot_config("claude-3-opus"))
        .await?;
    ensure!(
        b.bots().get_or_create(BOT).await?.model == "claude-3-opus",
        "replica B does not serve its own update"
    );
    let started = Instant::now();
    loop {
        if a.bots().get_or_create(BOT).await?.model == "claude-3-opus" {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("replica A still serves the old bot 10 s after the update");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    say(
        "update",
        format!(
            "revision {} written through replica B, served by B at once and by A after {} ms",
            reg.revision,
            started.elapsed().as_millis()
        ),
    );

    let failures = a.bots().stats().refresh_failures;
    a.registry().register(BOT, json!({"llm": {}})).await?;
    // The rebuild of the bad config fails (the factory refuses it) ...
    let started = Instant::now();
    while a.bots().stats().refresh_failures == failures {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the bad config was not tried within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and the last good bot keeps serving.
    let served = a.bots().get_or_create(BOT).await?;
    ensure!(
        served.model == "claude-3-opus",
        "a bad config replaced the last good bot"
    );
    say(
        "bad config",
        format!(
            "refused (no llm.model); the last good bot keeps serving on {}",
            served.model
        ),
    );
    a.registry()
        .register(BOT, bot_config("claude-3-opus"))
        .await?;

    a.registry()
        .register(OLD_BOT, bot_config("claude-2"))
        .await?;
    a.registry().deactivate(OLD_BOT).await?;
    match a.bots().get_or_create(OLD_BOT).await {
        Err(CacheError::NotFound { .. }) => {}
        other => bail!(
            "a deactivated bot is served: {:?}",
            other.map(|b| b.model.clone())
        ),
    }
    say("deactivate", format!("{OLD_BOT} is no longer served"));

    let Some(knowledge) = a.knowledge() else {
        say("knowledge", "the environment has no knowledge store".into());
        return Ok(log);
    };
    if knowledge.get_info(KB).await?.is_some() {
        knowledge.delete_kb(KB).await?;
    }
    knowledge.create_kb(KB, Metadata::new()).await?;
    for (path, text) in DOCS {
        knowledge
            .put_file(KB, path, text.into(), PutOptions::default())
            .await?;
    }
    let version = knowledge.get_checksum(KB).await?;
    say(
        "knowledge",
        format!("{} files stored in {KB} (version {version})", DOCS.len()),
    );

    let destination = rag::build(rag::rag_config(cli)?, KB, vectors_dir).await?;
    let manager = KnowledgeIngestionManager::new(Arc::clone(knowledge), destination);
    let result = manager.ingest(KB, SwapMode::Tombstone).await?;
    manager.destination().flush().await?;
    ensure!(
        result.errors.is_empty(),
        "ingest failed: {:?}",
        result.error_summary()
    );
    say(
        "ingest",
        format!(
            "{} files → {} chunks embedded and stored; {} unchanged files not embedded again",
            result.files_processed, result.chunks_created, result.files_unchanged
        ),
    );
    let query = "how long do refunds take";
    let hits = manager.destination().search(query, 1).await?;
    let hit = hits.first().context("the search found nothing")?.summary();
    ensure!(
        hit["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("billing.md")),
        "the search for {query:?} found {hit}"
    );
    say(
        "search",
        format!(
            "{query:?} → {} ({}), score {:.3}",
            hit["source"].as_str().unwrap_or(""),
            hit["heading_path"].as_str().unwrap_or(""),
            hit["similarity"].as_f64().unwrap_or(0.0)
        ),
    );
    Ok(log)
}
