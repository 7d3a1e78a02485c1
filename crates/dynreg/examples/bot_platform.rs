//! The main job on the embedded defaults: a bot platform configured from
//! `configs/environments/development.yaml` (SQLite registry, in-memory event bus, knowledge
//! files on disk under `./data`, or `$DATA_DIR`), with a cache of live bots kept current by
//! hybrid hot reload.
//!
//! It registers a bot, serves it from the cache, updates its config and shows the new bot
//! served at once (read-your-writes), shows that a bad config keeps the last good bot serving,
//! deactivates a bot, and stores a knowledge file. Run from the repository root:
//! `cargo run -p dynreg --example bot_platform`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg::cache::{CacheError, InstanceFactory};
use dynreg::hot_reload::ReloadMode;
use dynreg::knowledge::{KnowledgeBackendExt, PutOptions};
use dynreg::registry::RegistryBackendExt;
use dynreg::{DomainConfig, Environment, Platform};
use serde_json::{Value, json};

/// A stand-in for a real bot: it needs a model name and refuses a config without one.
struct Bot {
    id: String,
    model: String,
}

struct Bots;

/// Why a config cannot be built into a bot.
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
            id: bot_id.to_owned(),
            model: model.to_owned(),
        })
    }
}

fn bot_config(model: &str) -> Value {
    json!({"llm": {"provider": "anthropic", "model": model},
           "system_prompt": "You are a helpful support agent."})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Environment::load("configs/environments/development.yaml")?;
    install_logging(&env);
    let platform = Platform::from_env(env, DomainConfig::load("configs/domains/my-bot.yaml")?)
        .instances(Bots)
        .reload(ReloadMode::Hybrid)
        .poll_interval(Duration::from_secs(1))
        .start()
        .await?;
    println!("{platform:?}");
    let (registry, bots) = (platform.registry(), platform.bots());
    let knowledge = platform
        .knowledge()
        .ok_or_else(|| anyhow::anyhow!("my-bot.yaml names a knowledge store"))?;

    let reg = registry
        .register("support-bot", bot_config("claude-3-sonnet"))
        .await?;
    println!("registered support-bot at revision {}", reg.revision);
    let bot = bots.get_or_create("support-bot").await?;
    println!("serving {} on {}", bot.id, bot.model);

    let reg = registry
        .register("support-bot", bot_config("claude-3-opus"))
        .await?;
    let bot = bots.get_or_create("support-bot").await?;
    println!(
        "updated to revision {}; serving {} on {} right away",
        reg.revision, bot.id, bot.model
    );

    registry.register("support-bot", json!({"llm": {}})).await?;
    match bots.get_or_create("support-bot").await {
        Ok(bot) => println!(
            "a bad config was registered; the last good bot keeps serving: {}",
            bot.model
        ),
        Err(e) => println!("a bad config was registered and refused: {e}"),
    }
    registry
        .register("support-bot", bot_config("claude-3-opus"))
        .await?;

    registry.register("old-bot", bot_config("claude-2")).await?;
    registry.deactivate("old-bot").await?;
    match bots.get_or_create("old-bot").await {
        Err(CacheError::NotFound { bot_id }) => println!("deactivated {bot_id} is not served"),
        other => anyhow::bail!(
            "a deactivated bot must not be served: {:?}",
            other.map(|b| b.model.clone())
        ),
    }

    if knowledge.get_info("support").await?.is_none() {
        knowledge.create_kb("support", Default::default()).await?;
    }
    let file = knowledge
        .put_file(
            "support",
            "faq.md",
            "# FAQ\n\n## How do I reset my password?\n\nGo to settings.\n".into(),
            PutOptions::default(),
        )
        .await?;
    let version = knowledge.get_checksum("support").await?;
    println!(
        "knowledge: stored {} ({} bytes, md5 {}); knowledge base version {version}",
        file.path, file.size_bytes, file.checksum
    );

    println!(
        "active bots: {:?}; cache {:?}",
        registry.list_ids().await?,
        bots.stats()
    );
    platform.close().await?;
    Ok(())
}

/// Logs to stderr at the environment's `settings.log_level` (the original's names: `DEBUG`,
/// `INFO`, `WARNING`, `ERROR`), unless `RUST_LOG` says otherwise.
fn install_logging(env: &Environment) {
    let level = match env
        .setting("log_level")
        .and_then(|v| v.as_str())
        .unwrap_or("INFO")
        .to_ascii_uppercase()
        .as_str()
    {
        "DEBUG" => "debug",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,sqlx=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
