//! `ConfigCachingManager` with an `EnvironmentResolver`: cached bot configs have their
//! `$resource` references resolved against the environment (as the original's config cache does), the stored
//! config stays raw, a config that does not resolve is an error naming the bot and the
//! reference, and after a change to a bad config the last good one keeps serving.

use std::sync::Arc;

use dynreg::cache::{CacheError, CacheOptions, ConfigCachingManager, ConfigResolveError};
use dynreg::config::{Environment, EnvironmentResolver, LoadOptions, VarMap};
use dynreg::registry::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::json;

const ENV: &str = "\
name: staging
resources:
  databases:
    conversations:
      backend: postgres
      table: conversations_${STAGE}
";

fn env() -> Arc<Environment> {
    let vars = VarMap::new().with("STAGE", "blue");
    Arc::new(Environment::parse(ENV, None, &LoadOptions::with_vars(vars)).unwrap())
}

async fn manager(
    backend: Arc<InMemoryBackend>,
    resolver: EnvironmentResolver,
) -> ConfigCachingManager {
    ConfigCachingManager::with_resolver(
        backend as Arc<dyn RegistryBackend>,
        Some("bot".into()),
        Arc::new(resolver),
        CacheOptions::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn resource_references_are_resolved_and_the_stored_config_stays_raw() {
    let backend = Arc::new(InMemoryBackend::new());
    let stored = json!({"bot": {
        "llm": {"model": "m", "prompt": "${NOT_EXPANDED}"},
        "memory": {"$resource": "conversations", "type": "databases", "pool": 5}
    }});
    let r = backend.register("a", stored.clone()).await.unwrap();
    let cfg = manager(backend.clone(), EnvironmentResolver::new(env())).await;
    let got = cfg.get("a").await.unwrap();
    assert_eq!(
        got.config["memory"],
        json!({"backend": "postgres", "table": "conversations_blue", "pool": 5}),
        "environment values, then inline defaults for what the resource lacks"
    );
    assert_eq!(
        got.config["llm"]["prompt"], "${NOT_EXPANDED}",
        "stored placeholders are not expanded"
    );
    assert_eq!(*got.raw_config, stored, "the raw config is the stored one");
    assert_eq!(got.environment_name.as_deref(), Some("staging"));
    assert_eq!(
        (got.revision, &got.config_hash),
        (r.revision, &r.config_hash)
    );
    let in_registry = backend.peek_config("a").await.unwrap().unwrap();
    assert_eq!(*in_registry, stored, "resolution never writes back");
}

#[tokio::test]
async fn a_missing_resource_is_an_error_naming_bot_and_reference_unless_lenient() {
    let backend = Arc::new(InMemoryBackend::new());
    backend
        .register(
            "b",
            json!({"bot": {"db": {"$resource": "nope", "type": "databases", "table": "t"}}}),
        )
        .await
        .unwrap();
    let strict = manager(backend.clone(), EnvironmentResolver::new(env())).await;
    let err = strict.get("b").await.unwrap_err();
    let CacheError::Create { bot_id, source, .. } = &err else {
        panic!("expected a creation error, got {err:?}");
    };
    assert_eq!(bot_id, "b");
    let resolve = source
        .downcast_ref::<ConfigResolveError>()
        .expect("the source is a ConfigResolveError");
    assert_eq!(resolve.bot_id, "b");
    let text = resolve.to_string();
    assert!(
        text.contains("nope") && text.contains("databases"),
        "{text}"
    );
    assert!(!strict.is_cached("b"), "a failed resolution is not cached");

    let lenient = manager(
        backend.clone(),
        EnvironmentResolver::new(env()).strict(Some(false)),
    )
    .await;
    assert_eq!(
        lenient.get("b").await.unwrap().config["db"],
        json!({"table": "t"})
    );
}

#[tokio::test]
async fn after_a_change_to_an_unresolvable_config_the_last_good_one_keeps_serving() {
    let backend = Arc::new(InMemoryBackend::new());
    backend
        .register(
            "c",
            json!({"bot": {"db": {"$resource": "conversations", "type": "databases"}}}),
        )
        .await
        .unwrap();
    let cfg = manager(backend.clone(), EnvironmentResolver::new(env())).await;
    let good = cfg.get("c").await.unwrap();
    assert_eq!(good.config["db"]["table"], "conversations_blue");
    backend
        .register(
            "c",
            json!({"bot": {"db": {"$resource": "gone", "type": "databases"}}}),
        )
        .await
        .unwrap();
    let kept = cfg.refresh("c").await.unwrap();
    assert_eq!(
        kept.revision, good.revision,
        "the last good config keeps serving"
    );
    assert_eq!(cfg.stats().refresh_failures, 1);
}
