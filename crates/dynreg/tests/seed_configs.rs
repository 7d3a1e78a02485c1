//! Loads the seed configs of `configs/` and builds live components from them: development
//! (SQLite + memory bus + filesystem knowledge, no services), test (all in memory) and
//! production (PostgreSQL + Redis + S3, against the local services when the
//! `DYNREG_TEST_*` variables are set).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use dynreg::build::Components;
use dynreg::config::{
    DomainConfig, Environment, LoadOptions, ResolveError, ResolveOptions, VarMap,
};
use dynreg::events::{Delivery, Event, EventBus, EventType};
use dynreg::knowledge::{KnowledgeBackend, KnowledgeBackendExt, PutOptions};
use dynreg::registry::{RegistryBackend, RegistryBackendExt};
use serde_json::json;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn resolve(env_name: &str, vars: VarMap) -> Result<dynreg::config::ResolvedConfig> {
    let load = LoadOptions::with_vars(vars);
    let env = Environment::load_named(configs().join("environments"), env_name, &load)?;
    let domain = DomainConfig::load(configs().join("domains/my-bot.yaml"))?;
    Ok(domain.resolve_with(&env, &ResolveOptions::with_load(load))?)
}

/// Writes through every component and reads the write back.
async fn exercise(c: &Components) -> Result<()> {
    let id = format!("bot-{}", suffix());
    let registry: &Arc<dyn RegistryBackend> = c.registry.as_ref().context("no registry")?;
    registry.register(&id, json!({"llm": "small"})).await?;
    let got = registry
        .get_config(&id)
        .await?
        .context("registration missing")?;
    ensure!(*got == json!({"llm": "small"}), "read back {got}");
    registry.unregister(&id).await?;

    let bus: &Arc<dyn EventBus> = c.event_bus.as_ref().context("no bus")?;
    let topic = format!("registry:configs:{id}");
    let mut sub = bus.subscribe(&topic).await?;
    let event = Event::new(EventType::Updated, topic.clone(), Default::default());
    bus.publish(&topic, &event).await?;
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match sub.next().await {
                Some(Delivery::Event { event, .. }) => return Some(event),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await?
    .context("subscription closed")?;
    ensure!(delivery.event_id == event.event_id, "wrong event");

    let kb: &Arc<dyn KnowledgeBackend> = c.knowledge.as_ref().context("no knowledge backend")?;
    let domain = format!("kb-{}", suffix());
    kb.create_kb(&domain, Default::default()).await?;
    kb.put_file(
        &domain,
        "docs/a.md",
        Bytes::from_static(b"# hi"),
        PutOptions::default(),
    )
    .await?;
    let body = kb
        .get_file(&domain, "docs/a.md")
        .await?
        .context("file missing")?;
    ensure!(&body[..] == b"# hi");
    kb.delete_kb(&domain).await?;
    Ok(())
}

#[cfg(all(feature = "sqlite", feature = "file"))]
#[tokio::test]
async fn development_gives_sqlite_memory_bus_and_file_knowledge() -> Result<()> {
    let data = tempfile::tempdir()?;
    let vars = VarMap::new().with("DATA_DIR", data.path().to_string_lossy());
    let resolved = resolve("development", vars)?;
    assert_eq!(resolved.environment_name(), "development");
    assert_eq!(resolved.get("domain.id"), Some(&json!("my-bot")));
    assert_eq!(resolved.get("bot.registry.backend"), Some(&json!("sqlite")));
    assert_eq!(resolved.get("bot.events.backend"), Some(&json!("memory")));
    assert_eq!(resolved.get("bot.knowledge.backend"), Some(&json!("file")));
    let c = dynreg::build::components(&resolved).await?;
    assert_eq!(c.registry.as_ref().unwrap().kind(), "sqlite");
    exercise(&c).await?;
    assert!(
        data.path().join("registry.sqlite3").is_file(),
        "SQLite file under DATA_DIR"
    );
    assert!(
        data.path().join("knowledge").is_dir(),
        "knowledge under DATA_DIR"
    );
    // DATA_DIR's value is a substituted value: Debug shows the placeholder instead.
    let dbg = format!("{resolved:?}");
    assert!(
        !dbg.contains(&*data.path().to_string_lossy()) && dbg.contains("${DATA_DIR}"),
        "{dbg}"
    );
    Ok(())
}

#[tokio::test]
async fn development_defaults_to_data_dir_under_the_working_directory() -> Result<()> {
    let resolved = resolve("development", VarMap::new())?;
    assert_eq!(
        resolved.get("bot.registry.path"),
        Some(&json!("./data/registry.sqlite3"))
    );
    assert_eq!(
        resolved.get("bot.knowledge.path"),
        Some(&json!("./data/knowledge"))
    );
    Ok(())
}

#[tokio::test]
async fn test_environment_is_all_in_memory() -> Result<()> {
    let resolved = resolve("test", VarMap::new())?;
    let c = dynreg::build::components(&resolved).await?;
    assert_eq!(c.registry.as_ref().unwrap().kind(), "memory");
    exercise(&c).await
}

#[test]
fn dynreg_env_selects_the_seed_environment() -> Result<()> {
    let load = LoadOptions::with_vars(VarMap::new().with("DYNREG_ENV", "Test"));
    let env = Environment::select(configs().join("environments"), &load)?;
    assert_eq!(env.name(), "test");
    let load = LoadOptions::with_vars(VarMap::new());
    assert_eq!(
        Environment::select(configs().join("environments"), &load)?.name(),
        "development"
    );
    Ok(())
}

#[test]
fn my_bot_is_portable() -> Result<()> {
    let d = DomainConfig::load(configs().join("domains/my-bot.yaml"))?;
    assert!(d.portability_findings().is_empty());
    Ok(())
}

#[test]
fn production_without_its_variables_names_the_first_missing_one() {
    let load = LoadOptions::with_vars(VarMap::new());
    let err =
        Environment::load_named(configs().join("environments"), "production", &load).unwrap_err();
    match &err {
        ResolveError::MissingVariable {
            var, at, others, ..
        } => {
            assert_eq!(var, "RDS_HOST");
            assert_eq!(
                others,
                &[
                    "RDS_DATABASE",
                    "ELASTICACHE_HOST",
                    "KNOWLEDGE_BUCKET",
                    "AWS_REGION"
                ]
            );
            assert_eq!(at.path, "resources.databases.registry.host");
            assert!(
                at.file
                    .as_ref()
                    .unwrap()
                    .ends_with("environments/production.yaml")
            );
            let text =
                std::fs::read_to_string(configs().join("environments/production.yaml")).unwrap();
            let line = text
                .lines()
                .position(|l| l.contains("${RDS_HOST}"))
                .unwrap()
                + 1;
            assert_eq!(at.line, Some(line));
        }
        other => panic!("unexpected {other}"),
    }
    // Lenient loading keeps the placeholders and lists them.
    let env = Environment::load_named(
        configs().join("environments"),
        "production",
        &load.lenient(),
    )
    .unwrap();
    let mut vars: Vec<&str> = env
        .unresolved_vars()
        .iter()
        .map(|u| u.var.as_str())
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            "AWS_REGION",
            "ELASTICACHE_HOST",
            "KNOWLEDGE_BUCKET",
            "RDS_DATABASE",
            "RDS_HOST"
        ]
    );
}

/// Production's registry verifies TLS unless told otherwise: `ssl` resolves to true.
#[test]
fn production_registry_uses_verified_tls_by_default() {
    let vars = VarMap::new()
        .with("RDS_HOST", "db.example.invalid")
        .with("RDS_DATABASE", "bots")
        .with("ELASTICACHE_HOST", "cache.example.invalid")
        .with("KNOWLEDGE_BUCKET", "kb")
        .with("AWS_REGION", "eu-west-1");
    let resolved = resolve("production", vars).unwrap();
    let section = resolved
        .section("bot.registry", dynreg::config::Component::Registry)
        .unwrap()
        .expect("a registry section");
    let options = section.options_value();
    assert_eq!(section.kind, "postgres");
    assert!(
        matches!(&options["ssl"], serde_json::Value::Bool(true))
            || options["ssl"] == serde_json::json!("true"),
        "{options}"
    );
}

/// `host`, `port`, user and database of a `postgres://user@host:port/db` URL (127.0.0.1 only).
#[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
fn split_url(url: &str) -> Option<(String, String, String, String)> {
    let rest = url.split_once("://")?.1;
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
    let user = auth.split(':').next().unwrap_or("").to_owned();
    Some((host.to_owned(), port.to_owned(), user, db.to_owned()))
}

#[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
fn production_vars() -> Option<VarMap> {
    let pg = std::env::var("DYNREG_TEST_POSTGRES_URL").ok()?;
    let redis = std::env::var("DYNREG_TEST_REDIS_URL").ok()?;
    let s3 = std::env::var("DYNREG_TEST_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into());
    let (pg_host, pg_port, pg_user, pg_db) = split_url(&pg)?;
    let (redis_host, redis_port, _, _) = split_url(&redis)?;
    for host in [&pg_host, &redis_host] {
        assert_eq!(host, "127.0.0.1", "tests only talk to 127.0.0.1");
    }
    assert!(
        s3.starts_with("http://127.0.0.1"),
        "tests only talk to 127.0.0.1"
    );
    Some(
        VarMap::new()
            .with("RDS_HOST", pg_host)
            .with("RDS_PORT", pg_port)
            .with("RDS_USER", pg_user)
            .with("RDS_DATABASE", pg_db)
            .with("ELASTICACHE_HOST", redis_host)
            .with("ELASTICACHE_PORT", redis_port)
            .with("ELASTICACHE_SSL", "false")
            // The local test server's certificate names localhost, not 127.0.0.1; verified
            // TLS is tested by the registry's own TLS test.
            .with("RDS_SSL", "false")
            .with("KNOWLEDGE_BUCKET", bucket)
            .with("AWS_REGION", "us-east-1")
            .with("S3_ENDPOINT_URL", s3)
            .with("AWS_ACCESS_KEY_ID", "testing-key-id")
            .with("AWS_SECRET_ACCESS_KEY", "testing-secret-Zq9"),
    )
}

#[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
#[tokio::test]
async fn production_gives_postgres_redis_and_s3() -> Result<()> {
    let Some(vars) = production_vars() else {
        println!(
            "skipped: production tests (DYNREG_TEST_POSTGRES_URL, DYNREG_TEST_REDIS_URL or DYNREG_TEST_S3_ENDPOINT unset)"
        );
        return Ok(());
    };
    let resolved = resolve("production", vars)?;
    assert_eq!(resolved.get("bot.events.ssl"), Some(&json!("false")));
    let dbg = format!("{resolved:?}");
    assert!(
        !dbg.contains("testing-secret-Zq9") && dbg.contains("${AWS_SECRET_ACCESS_KEY}"),
        "{dbg}"
    );
    let c = dynreg::build::components(&resolved).await?;
    assert_eq!(c.registry.as_ref().unwrap().kind(), "postgres");
    exercise(&c).await
}

#[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
#[tokio::test]
async fn production_errors_do_not_leak_secrets() -> Result<()> {
    let Some(vars) = production_vars() else {
        println!(
            "skipped: production tests (DYNREG_TEST_POSTGRES_URL, DYNREG_TEST_REDIS_URL or DYNREG_TEST_S3_ENDPOINT unset)"
        );
        return Ok(());
    };
    // A wrong Redis password: the bus refuses to connect, and the error must not show it.
    let vars = vars
        .with("ELASTICACHE_PASSWORD", "wr0ng-Secret-77")
        .with("ELASTICACHE_PORT", "1");
    let resolved = resolve("production", vars)?;
    let section = resolved
        .section("bot.events", dynreg::config::Component::EventBus)?
        .context("production names an event bus")?;
    let err = dynreg::build::event_bus(&section).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wr0ng-Secret-77") && !text.contains("wr0ng%2DSecret"),
        "{text}"
    );
    assert!(matches!(err, ResolveError::Build { .. }), "{text}");
    assert!(
        text.contains("production.yaml") || text.contains("my-bot.yaml"),
        "{text}"
    );
    Ok(())
}

#[cfg(not(feature = "s3"))]
#[tokio::test]
async fn a_compiled_out_kind_names_its_feature() -> Result<()> {
    let vars = VarMap::new()
        .with("RDS_HOST", "db")
        .with("RDS_DATABASE", "x")
        .with("ELASTICACHE_HOST", "cache")
        .with("KNOWLEDGE_BUCKET", "b")
        .with("AWS_REGION", "us-east-1");
    let resolved = resolve("production", vars)?;
    let section = resolved
        .section("bot.knowledge", dynreg::config::Component::Knowledge)?
        .context("production names a knowledge store")?;
    let err = dynreg::build::knowledge(&section).await.unwrap_err();
    match &err {
        ResolveError::FeatureDisabled { feature, kind, .. } => {
            assert_eq!((feature.as_str(), kind.as_str()), ("s3", "s3"));
        }
        other => panic!("unexpected {other}"),
    }
    Ok(())
}

/// The ingest lock follows the environment: in-process for development (one process, the
/// in-process bus), a PostgreSQL advisory lock on the registry's server for production — and
/// two processes' locks built from it exclude each other.
#[tokio::test]
async fn the_ingest_lock_follows_the_environment() -> Result<()> {
    use dynreg::config::ComponentPaths;
    let dev = resolve("development", VarMap::new())?;
    let lock = dynreg::build::ingest_lock(&dev, &ComponentPaths::default())?;
    ensure!(format!("{lock:?}").starts_with("InProcessLock"), "{lock:?}");
    #[cfg(all(feature = "postgres", feature = "redis", feature = "s3"))]
    {
        let Some(vars) = production_vars() else {
            println!("skipped: the advisory-lock half (DYNREG_TEST_* service variables unset)");
            return Ok(());
        };
        let prod = resolve("production", vars)?;
        let a = dynreg::build::ingest_lock(&prod, &ComponentPaths::default())?;
        let b = dynreg::build::ingest_lock(&prod, &ComponentPaths::default())?;
        ensure!(
            format!("{a:?}").starts_with("PgAdvisoryLock")
                && format!("{a:?}").contains("127.0.0.1"),
            "{a:?}"
        );
        let key = format!("ingest:-:lock-{}", suffix());
        let held = a.acquire(&key).await.map_err(anyhow::Error::msg)?;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), b.acquire(&key));
        ensure!(waiting.await.is_err(), "a second process got a held lock");
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), b.acquire(&key))
            .await
            .context("the released lock was not granted")?
            .map_err(anyhow::Error::msg)?;
        drop(again);
    }
    Ok(())
}
