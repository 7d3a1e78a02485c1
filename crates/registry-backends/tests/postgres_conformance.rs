//! The registry conformance suite on `PostgresBackend` (needs `DYNREG_TEST_POSTGRES_URL`).
#![cfg(feature = "postgres")]
#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_backends::PostgresBackend;
use dynreg_registry_core::conformance::{Capabilities, Harness, skipped};
use dynreg_registry_core::{RegistryBackend, RegistryBackendExt};
use serde_json::json;

const VAR: &str = "DYNREG_TEST_POSTGRES_URL";

/// Each store is its own table; two opens of a name are two pools on one table.
struct PostgresHarness {
    url: String,
}

#[async_trait]
impl Harness for PostgresHarness {
    async fn open(&self, store: &str) -> Arc<dyn RegistryBackend> {
        let b = PostgresBackend::from_config(&json!({
            "url": self.url, "table": format!("t_{store}"), "touch_resolution_ms": 50, "pool_size": 4
        }))
        .unwrap();
        b.initialize().await.unwrap();
        Arc::new(b)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            touch_resolution: Duration::from_millis(50),
        }
    }
}

fn harness() -> Option<PostgresHarness> {
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(PostgresHarness { url }),
        _ => skipped("postgres", VAR),
    }
}

dynreg_registry_core::registry_conformance_tests!(harness());

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let b = PostgresBackend::from_config(&json!({
        "host": "127.0.0.1", "user": "u", "password": "s3cret-value", "database": "x"
    }))
    .unwrap();
    assert!(!format!("{b:?}").contains("s3cret"));
}

/// `ssl: false` never uses TLS and connects; `ssl: true` verifies the server's certificate and
/// host name, so against 127.0.0.1 — which the local server's certificate does not name, and
/// whose CA is not trusted — it is refused with an error naming the server, instead of
/// connecting unverified. (Verified connections: `tls_verifies_the_chain_and_the_host_name`.)
#[tokio::test]
async fn ssl_false_connects_and_ssl_true_refuses_an_unverified_server() {
    let Some(h) = harness() else { return };
    let b = PostgresBackend::from_config(&json!({
        "url": h.url, "table": "t_ssl_modes", "ssl": false, "pool_size": 1
    }))
    .unwrap();
    b.initialize().await.unwrap();
    let reg = b.register("bot", json!({"ssl": false})).await.unwrap();
    assert_eq!(reg.config["ssl"], false);
    b.close().await.unwrap();
    let b = PostgresBackend::from_config(&json!({
        "url": h.url, "table": "t_ssl_modes", "ssl": true, "pool_size": 1
    }))
    .unwrap();
    let err = b.initialize().await.unwrap_err().to_string();
    assert!(
        err.contains("127.0.0.1:") && err.contains("TLS, verified"),
        "{err}"
    );
}

/// Group commit: a writer that stops waiting — whether it was running its write on its own
/// task or queued behind one — never strands the writers queued behind it, and the queue keeps
/// working afterwards. (A stranded queue shows up as a timeout here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_write_never_strands_the_queue() {
    let Some(h) = harness() else { return };
    let store = dynreg_registry_core::conformance::unique_store("abandoned");
    let b = h.open(&store).await;
    for round in 0..20u64 {
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.register("lead", json!({"round": round})).await })
        };
        let followers: Vec<_> = (0..10)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(
                    async move { b.register(&format!("f{i}"), json!({"round": round})).await },
                )
            })
            .collect();
        // Abort the first writer at a different point of its write in each round.
        for _ in 0..round % 4 {
            tokio::task::yield_now().await;
        }
        first.abort();
        if round % 3 == 0 {
            followers[0].abort();
        }
        for (i, f) in followers.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(10), f).await {
                Err(_) => panic!("round {round}: follower {i} stranded behind an abandoned write"),
                Ok(Err(join)) => assert!(join.is_cancelled(), "round {round}: {join}"),
                Ok(Ok(written)) => {
                    written.unwrap_or_else(|e| panic!("round {round}: follower {i}: {e}"));
                }
            }
        }
    }
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        b.register("after", json!({"ok": true})),
    )
    .await
    .expect("the queue still works after abandoned writes")
    .unwrap();
    assert_eq!(after.config["ok"], true);
    let f1 = b.peek("f1").await.unwrap().expect("f1 was written");
    assert_eq!(f1.config["round"], 19);
}

/// A write whose connection the server killed is not lost: the queue sees the dead connection,
/// checks that the write did not land, and runs it once more on a live connection — so every
/// write after the kill succeeds, the first one included. Reads on killed pooled connections
/// are run again too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_cost_no_operation() {
    use sqlx::Connection;
    let Some(h) = harness() else { return };
    let store = dynreg_registry_core::conformance::unique_store("killed");
    let b = h.open(&store).await;
    b.register("bot", json!({"v": 0})).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&h.url).await.unwrap();
    for round in 0..3 {
        let killed: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND query LIKE '%t_{store}_write%'"
        )))
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            killed,
            [true],
            "round {round}: exactly the write connection was terminated"
        );
        for v in 1..=3 {
            let v = round * 10 + v;
            let reg = b
                .register("bot", json!({"v": v}))
                .await
                .unwrap_or_else(|e| panic!("round {round}: write {v} failed: {e}"));
            assert_eq!(reg.config["v"], v);
        }
    }
    let reg = b.peek("bot").await.unwrap().unwrap();
    assert_eq!(reg.config["v"], 23);
    // One revision per write: nothing ran twice, nothing was skipped.
    assert_eq!(reg.revision, 10);
    // Every connection of this backend killed (the server dropping them all): reads and writes
    // still succeed, each the first time.
    for _ in 0..2 {
        b.list_all().await.unwrap();
    }
    let killed: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND query LIKE '%t_{store}%'"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "{killed:?}");
    assert_eq!(b.peek("bot").await.unwrap().unwrap().config["v"], 23);
    assert_eq!(b.list_all().await.unwrap().len(), 1);
    assert_eq!(b.count().await.unwrap(), 1);
    assert_eq!(b.current_revision().await.unwrap(), 10);
    b.register("bot", json!({"v": 24})).await.unwrap();
    assert_eq!(b.get_config("bot").await.unwrap().unwrap()["v"], 24);
}

/// The test server's certificate file when the server has `ssl = on` and the file is a readable
/// certificate for `localhost` (as Debian's snakeoil certificate is); else why not.
async fn server_certificate(url: &str) -> Result<std::path::PathBuf, String> {
    let b = PostgresBackend::from_config(&json!({"url": url, "table": "tls_probe"})).unwrap();
    b.initialize().await.map_err(|e| e.to_string())?;
    drop(b);
    let pool = sqlx::PgPool::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let cert: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    if ssl != "on" {
        return Err(format!("the server has ssl = {ssl}"));
    }
    let names_localhost = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in", &cert])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("DNS:localhost"));
    if !names_localhost {
        return Err(format!(
            "{cert} is not a readable certificate for localhost"
        ));
    }
    Ok(cert.into())
}

/// `ssl: true` verifies the chain and the host name: the right CA and name connect; another CA,
/// or an address the certificate does not name, is refused with an error naming the server.
#[tokio::test]
async fn tls_verifies_the_chain_and_the_host_name() {
    let Ok(url) = std::env::var("DYNREG_TEST_POSTGRES_URL") else {
        println!("skipped: postgres TLS (DYNREG_TEST_POSTGRES_URL unset)");
        return;
    };
    let cert = match server_certificate(&url).await {
        Ok(c) => c,
        Err(why) => {
            println!("skipped: postgres TLS ({why})");
            return;
        }
    };
    let open = |extra: serde_json::Value| {
        let mut c = json!({"url": url, "table": "tls_registry", "ssl": true});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        PostgresBackend::from_config(&c).unwrap()
    };
    // The certificate names localhost, and the server's own certificate is its CA.
    let ok = open(json!({"host": "localhost", "ca_file": cert}));
    ok.initialize().await.unwrap();
    ok.register("tls-bot", json!({"v": 1})).await.unwrap();
    assert!(ok.exists("tls-bot").await.unwrap());
    ok.unregister("tls-bot").await.unwrap();
    // Connected as 127.0.0.1, which the certificate does not name.
    let err = open(json!({"ca_file": cert}))
        .initialize()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("127.0.0.1:") && err.contains("TLS, verified"),
        "{err}"
    );
    // Another CA.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=dynreg other CA",
            "-keyout",
        ])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .is_ok_and(|o| o.status.success());
    if made {
        let err = open(json!({"host": "localhost", "ca_file": other}))
            .initialize()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("localhost:") && err.to_lowercase().contains("certificate"),
            "{err}"
        );
    } else {
        println!("skipped: postgres TLS with another CA (openssl not runnable)");
    }
    // A ca_file that is not a certificate is refused up front, naming the key.
    let err =
        PostgresBackend::from_config(&json!({"url": url, "ssl": true, "ca_file": "/dev/null"}))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("ca_file") && err.contains("/dev/null"),
        "{err}"
    );
}

/// An application's own pool can carry the registry.
#[tokio::test]
async fn a_registry_on_the_applications_own_pool() {
    let Some(h) = harness() else { return };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&h.url)
        .await
        .unwrap();
    let b = PostgresBackend::with_pool(pool.clone(), "t_own_pool").unwrap();
    b.initialize().await.unwrap();
    b.register("own", json!({"v": 1})).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t_own_pool WHERE bot_id = 'own'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    b.unregister("own").await.unwrap();
    assert!(PostgresBackend::with_pool(pool, "bad; name").is_err());
}

/// A server that stops answering fails each operation within `statement_timeout_ms` instead of
/// hanging it, and the registry works again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_operations_within_the_deadline_and_recovers() {
    let Some(h) = harness() else { return };
    let url = h.url.clone();
    // The test server's address, from its URL (127.0.0.1 only).
    let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let target: std::net::SocketAddr = hostport.parse().unwrap();
    assert!(target.ip().is_loopback());
    let proxy = dynreg_event_bus::conformance::FreezableProxy::start(target).await;
    let b = PostgresBackend::from_config(&json!({
        "url": url, "host": "127.0.0.1", "port": proxy.port, "table": "t_frozen",
        "statement_timeout_ms": 800, "pool_size": 2, "min_connections": 0
    }))
    .unwrap();
    b.initialize().await.unwrap();
    b.register("f", json!({"v": 1})).await.unwrap();
    proxy.freeze(true);
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), b.register("f", json!({"v": 2})))
        .await
        .expect("the write returned instead of hanging")
        .unwrap_err()
        .to_string();
    assert!(err.contains("800 ms"), "{err}");
    let err = tokio::time::timeout(Duration::from_secs(20), b.peek("f"))
        .await
        .expect("the read returned instead of hanging")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no answer"), "{err}");
    eprintln!(
        "two operations against a frozen server failed after {:?}",
        t.elapsed()
    );
    proxy.freeze(false);
    // Working again (a connection left mid-statement may fail once more before it is replaced).
    let mut ok = false;
    for _ in 0..5 {
        if b.register("f", json!({"v": 3})).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(
        ok,
        "the registry did not recover after the server answered again"
    );
    assert_eq!(b.peek_config("f").await.unwrap().unwrap()["v"], 3);
}
