//! End to end, across every crate: the README's main job as a test. Two replicas load
//! `configs/environments/development.yaml` (SQLite registry on one file, each its own in-memory
//! bus, knowledge files on disk), cache live bots with hybrid hot reload, and serve every
//! change: the writing replica at once (read-your-writes), the other through the change feed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg::cache::{CacheError, InstanceFactory};
use dynreg::config::{LoadOptions, VarMap};
use dynreg::hot_reload::ReloadMode;
use dynreg::knowledge::{KnowledgeBackend, KnowledgeBackendExt, PutOptions};
use dynreg::registry::{RegistryBackend, RegistryBackendExt};
use dynreg::{DomainConfig, Environment, Platform};
use md5::{Digest, Md5};
use serde_json::{Value, json};

const ENV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../configs/environments/development.yaml"
);
const DOMAIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../configs/domains/my-bot.yaml"
);

struct Bot {
    model: String,
}

#[derive(Debug, thiserror::Error)]
#[error("bot {0}: config has no llm.model")]
struct NoModel(String);

struct Bots;

#[async_trait]
impl InstanceFactory<Bot> for Bots {
    type Error = NoModel;

    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<Bot, NoModel> {
        let model = config["llm"]["model"]
            .as_str()
            .ok_or_else(|| NoModel(bot_id.to_owned()))?;
        Ok(Bot {
            model: model.to_owned(),
        })
    }
}

type Replica = Platform<Bot>;

async fn replica(data_dir: &std::path::Path) -> anyhow::Result<Replica> {
    let vars = VarMap::new().with("DATA_DIR", data_dir.to_string_lossy());
    let env = Environment::load_with(ENV, &LoadOptions::with_vars(vars))?;
    let platform = Platform::from_env(env, DomainConfig::load(DOMAIN)?)
        .instances(Bots)
        .reload(ReloadMode::Hybrid)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await?;
    assert_eq!(platform.registry().kind(), "sqlite");
    Ok(platform)
}

fn kb(r: &Replica) -> &Arc<dyn KnowledgeBackend> {
    r.knowledge().expect("my-bot.yaml names a knowledge store")
}

fn config(model: &str) -> Value {
    json!({"llm": {"provider": "anthropic", "model": model}})
}

/// Polls until `model` is served by `r` (a deadlock guard, not a timing assertion).
async fn serves(r: &Replica, bot: &str, model: &str) {
    for _ in 0..1000 {
        if r.bots()
            .get_or_create(bot)
            .await
            .is_ok_and(|b| b.model == model)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{bot} never served {model}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_every_change_from_the_development_environment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b) = (replica(dir.path()).await?, replica(dir.path()).await?);
    assert!(dir.path().join("registry.sqlite3").exists());

    a.registry()
        .register("support-bot", config("claude-3-sonnet"))
        .await?;
    assert_eq!(
        a.bots().get_or_create("support-bot").await?.model,
        "claude-3-sonnet"
    );
    serves(&b, "support-bot", "claude-3-sonnet").await;

    a.registry()
        .register("support-bot", config("claude-3-opus"))
        .await?;
    assert_eq!(
        a.bots().get_or_create("support-bot").await?.model,
        "claude-3-opus",
        "read-your-writes"
    );
    serves(&b, "support-bot", "claude-3-opus").await;

    // A bad config keeps the last good bot serving on the writer.
    a.registry()
        .register("support-bot", json!({"llm": {}}))
        .await?;
    assert_eq!(
        a.bots().get_or_create("support-bot").await?.model,
        "claude-3-opus"
    );

    // A deactivated bot is served by no replica.
    b.registry().register("old-bot", config("claude-2")).await?;
    serves(&a, "old-bot", "claude-2").await;
    b.registry().deactivate("old-bot").await?;
    assert!(matches!(
        b.bots().get_or_create("old-bot").await,
        Err(CacheError::NotFound { .. })
    ));
    for _ in 0..1000 {
        if matches!(
            a.bots().get_or_create("old-bot").await,
            Err(CacheError::NotFound { .. })
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        a.bots().get_or_create("old-bot").await,
        Err(CacheError::NotFound { .. })
    ));

    // Knowledge written by one replica is read by the other, with the original's MD5.
    kb(&a).create_kb("support", Default::default()).await?;
    let body = "# FAQ\n\nGo to settings.\n";
    let file = kb(&a)
        .put_file("support", "faq.md", body.into(), PutOptions::default())
        .await?;
    assert_eq!(file.checksum, hex::encode(Md5::digest(body.as_bytes())));
    let read = kb(&b)
        .get_file("support", "faq.md")
        .await?
        .expect("faq.md was written");
    assert_eq!(&read[..], body.as_bytes());
    assert_eq!(
        kb(&a).get_checksum("support").await?,
        kb(&b).get_checksum("support").await?
    );

    for r in [a, b] {
        r.close().await?;
    }
    Ok(())
}
