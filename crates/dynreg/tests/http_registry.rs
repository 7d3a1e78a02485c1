//! A `$resource` environment whose registry is `backend: http` builds a working HTTP registry
//! backend, pointed at a dynreg server (over SQLite) with a write token from the environment.

use std::sync::Arc;

use anyhow::{Context, Result};
use dynreg::config::{DomainConfig, Environment, LoadOptions, ResolveOptions, VarMap};
use dynreg::registry::{RegistryBackend, RegistryBackendExt, SqliteBackend};
use dynreg::server::{RegistryServer, ServerConfig};
use serde_json::json;

#[tokio::test]
async fn an_environment_builds_an_http_registry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let inner = Arc::new(SqliteBackend::new(dir.path().join("r.sqlite3")));
    inner.initialize().await?;
    let server = RegistryServer::new(inner.clone())
        .with_config(ServerConfig::default().write_token("w-token"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        }
    });

    std::fs::write(
        dir.path().join("remote.yaml"),
        "name: remote\nresources:\n  databases:\n    registry:\n      backend: http\n      base_url: ${REGISTRY_URL}\n      auth_token: ${REGISTRY_TOKEN}\n      timeout: 5\n",
    )?;
    std::fs::write(
        dir.path().join("domain.yaml"),
        "bot:\n  registry:\n    $resource: registry\n    type: databases\n",
    )?;
    let vars: VarMap = [
        ("REGISTRY_URL".to_owned(), url),
        ("REGISTRY_TOKEN".to_owned(), "w-token".to_owned()),
    ]
    .into_iter()
    .collect();
    let load = LoadOptions::with_vars(vars);
    let env = Environment::load_named(dir.path(), "remote", &load)?;
    let domain = DomainConfig::load(dir.path().join("domain.yaml"))?;
    let resolved = domain.resolve_with(&env, &ResolveOptions::with_load(load))?;
    let components = dynreg::build::components(&resolved).await?;
    let registry = components.registry.context("no registry")?;
    assert_eq!(registry.kind(), "http");
    registry.register("remote-bot", json!({"llm": "m"})).await?;
    // It landed in the server's SQLite database.
    assert_eq!(
        *inner
            .peek_config("remote-bot")
            .await?
            .context("not stored")?,
        json!({"llm": "m"})
    );
    assert!(!format!("{registry:?}").contains("w-token"));
    let _ = stop.send(());
    serving.await??;
    Ok(())
}
