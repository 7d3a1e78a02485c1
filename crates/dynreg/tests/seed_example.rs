//! The seed document's "Complete Example — Bot Manager with Caching and Hot Reload", in Rust.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg::Platform;
use dynreg::cache::InstanceFactory;
use dynreg::events::{Event, EventType, create_event_bus};
use dynreg::hot_reload::{REGISTRY_TOPIC, ReloadMode};
use dynreg::registry::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
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

    let platform = Platform::builder()
        .registry(backend.clone())
        .events(event_bus.clone())
        .instances(BotManager)
        .ttl(Some(Duration::from_secs(300)))
        .reload(ReloadMode::EventDriven)
        .start()
        .await?;
    let manager = platform.bots();

    let bot = manager.get_or_create("support-bot").await?;
    assert_eq!(bot.chat("Hello!").await, "Bot support-bot received: Hello!");
    assert_eq!(bot.config["llm"]["model"], "claude-3-sonnet");

    // Update the config directly on the backend (not through the platform's registry), then publish the update
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
    assert!(platform.hot_reload().stats().events >= 1);

    platform.close().await?;
    // Closing does not wipe the registry.
    assert!(backend.exists("support-bot").await?);
    Ok(())
}
