//! The main job on the embedded default: a SQLite registry in `./data/`, written and read the
//! way a bot platform does — register, list, update, deactivate, follow the change feed.
//!
//! Run with `cargo run -p dynreg --example registry_demo`. Each run continues the same
//! database, so the change feed shows the revisions moving on.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use dynreg::config::validate_portability;
use dynreg::registry::{
    Change, ChangeFeed, ListQuery, RegisterOptions, RegistryBackendExt, RegistryError, SortSpec,
    create_registry_backend,
};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::var("DYNREG_DEMO_DB").unwrap_or_else(|_| "./data/registry.sqlite3".into());
    let registry = create_registry_backend("sqlite", &json!({ "path": path })).await?;
    let cursor = registry.current_revision().await?;
    println!("opened {path} at revision {cursor}");

    let support = json!({
        "llm": {"provider": "anthropic", "model": "claude-3-sonnet"},
        "system_prompt": "You are a helpful support agent.",
        "knowledge": {"$resource": "knowledge", "type": "knowledge"}
    });
    validate_portability(&support)?;
    let reg = registry
        .register_with(
            "support-bot",
            Arc::new(support),
            RegisterOptions::default().metadata(
                json!({"team": "support"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        )
        .await?;
    println!(
        "registered {} at revision {} (config_hash {}…)",
        reg.bot_id,
        reg.revision,
        &reg.config_hash[..12]
    );
    let sales = registry
        .register(
            "sales-bot",
            json!({"llm": {"provider": "anthropic", "model": "claude-3-haiku"}}),
        )
        .await?;
    println!("registered {} at revision {}", sales.bot_id, sales.revision);

    for r in registry
        .list(&ListQuery::all().sort_by(SortSpec::asc("bot_id")))
        .await?
    {
        println!(
            "  list: {:<12} {:<8} revision {:>4} model {}",
            r.bot_id, r.status, r.revision, r.config["llm"]["model"]
        );
    }

    // An update through compare-and-swap: read the revision, write only if it is unchanged.
    let current = registry
        .peek("support-bot")
        .await?
        .expect("just registered");
    let mut updated = (*current.config).clone();
    updated["llm"]["model"] = json!(format!("claude-3-opus-r{}", current.revision));
    let after = registry
        .register_with(
            "support-bot",
            Arc::new(updated),
            RegisterOptions::default()
                .metadata((*current.metadata).clone())
                .if_revision(current.revision),
        )
        .await?;
    println!(
        "updated support-bot: revision {} -> {}",
        current.revision, after.revision
    );
    match registry
        .register_with(
            "support-bot",
            Arc::new(json!({})),
            RegisterOptions::default().if_revision(current.revision),
        )
        .await
    {
        Err(e @ RegistryError::Conflict { .. }) => println!("a stale writer is refused: {e}"),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }

    registry.deactivate("sales-bot").await?;
    println!(
        "deactivated sales-bot; servable config now: {:?}",
        registry.get_config("sales-bot").await?
    );

    match registry.changes_since(cursor).await? {
        ChangeFeed::Changes {
            changes,
            current_revision,
        } => {
            println!("changes since revision {cursor} (now {current_revision}):");
            for c in changes {
                match c {
                    Change::Upsert(r) => {
                        println!("  r{:<4} upsert  {} ({})", r.revision, r.bot_id, r.status)
                    }
                    Change::Deleted { bot_id, revision } => {
                        println!("  r{revision:<4} deleted {bot_id}")
                    }
                }
            }
        }
        ChangeFeed::Expired {
            current_revision, ..
        } => println!("cursor expired; relist at {current_revision}"),
    }
    println!("active bots: {:?}", registry.list_ids().await?);
    registry.close().await?;
    Ok(())
}
