//! The seed document's "Complete Example — Bot Manager with Caching and Hot Reload", in Rust.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_cache::{CachingRegistryManager, InstanceFactory, REGISTRY_TOPIC};
use dynreg_event_bus::{Event, EventType, create_event_bus};
use dynreg_hot_reload::{HotReloadManager, ReloadMode};
use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::{Map, Value, json};

struct Bot {
    bot_id: String,
    config: Arc<Value>,
}

impl Bot {
    async fn chat(&self, message: &str) -> String {
        format!("Bot {} received: {message}", self.bot_id)
    }
}

struct BotManager;

#[async_trait]
impl InstanceFactory<Bot> for BotManager {
    type Error = std::convert::Infallible;

    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<Bot, Self::Error> {
        Ok(Bot {
            bot_id: bot_id.to_owned(),
            config,
        })
    }
}

#[tokio::test]
async fn bot_manager_with_caching_and_hot_reload() -> anyhow::Result<()> {
    let event_bus = create_event_bus(&json!({"backend": "memory"})).await?;
    let backend = Arc::new(InMemoryBackend::new());
    backend.initialize().await?;
    backend
        .register(
            "support-bot",
            json!({
                "llm": {"provider": "anthropic", "model": "claude-3-sonnet"},
                "system_prompt": "You are a helpful support agent."
            }),
        )
        .await?;

    let manager =
        CachingRegistryManager::builder(backend.clone() as Arc<dyn RegistryBackend>, BotManager)
            .ttl(Some(Duration::from_secs(300)))
            .events(event_bus.clone())
            .build()
            .await?;
    let hot_reload = HotReloadManager::builder(manager.clone())
        .events(event_bus.clone())
        .mode(ReloadMode::EventDriven)
        .build()?;
    hot_reload.start().await?;
    hot_reload.wait_until_synced().await;

    let bot = manager.get_or_create("support-bot").await?;
    assert_eq!(bot.chat("Hello!").await, "Bot support-bot received: Hello!");
    assert_eq!(bot.config["llm"]["model"], "claude-3-sonnet");

    // Update the config directly on the backend (no EventedRegistry), then publish the update
    // event by hand as the seed does: payload {"bot_id"} only, no revision.
    backend
        .register(
            "support-bot",
            json!({
                "llm": {"provider": "anthropic", "model": "claude-3-opus"},
                "system_prompt": "You are a helpful support agent."
            }),
        )
        .await?;
    let mut payload = Map::new();
    payload.insert("bot_id".into(), "support-bot".into());
    event_bus
        .publish(
            REGISTRY_TOPIC,
            &Event::new(EventType::Updated, REGISTRY_TOPIC, payload),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let bot = manager.get_or_create("support-bot").await?;
    assert_eq!(bot.config["llm"]["model"], "claude-3-opus");
    assert!(hot_reload.stats().events >= 1);

    hot_reload.close().await;
    manager.close().await?;
    event_bus.close().await?;
    // close() did not close (or wipe) the backend it does not own.
    assert!(backend.exists("support-bot").await?);
    Ok(())
}
