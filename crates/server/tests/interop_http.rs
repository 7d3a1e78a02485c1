//! Interop with the Python original, for real: its `HTTPRegistryBackend` against dynreg's
//! server, and dynreg's `HttpBackend` against its FastAPI router under uvicorn. Needs a Python
//! with the original installed, named by `DYNREG_INTEROP_PYTHON` (`cargo xtask interop` sets it
//! up); skipped, saying so, when unset.
#![allow(clippy::print_stdout)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dynreg_registry_backends::HttpBackend;
use dynreg_registry_core::{
    InMemoryBackend, ListQuery, RegisterOptions, RegistryBackend, RegistryBackendExt,
    RegistryError, SortSpec,
};
use dynreg_server::ServerConfig;
use serde_json::json;

fn python() -> Option<String> {
    let p = std::env::var("DYNREG_INTEROP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if p.is_none() {
        println!(
            "skipped: HTTP interop with the Python original (DYNREG_INTEROP_PYTHON unset; run `cargo xtask interop`)"
        );
    }
    p
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_client_against_dynregs_server() {
    let Some(python) = python() else { return };
    let backend = Arc::new(InMemoryBackend::new());
    let s = support::serve(
        backend.clone(),
        ServerConfig::default().write_token("interop-token"),
    )
    .await;
    let out = tokio::process::Command::new(&python)
        .arg(script("http_client.py"))
        .arg(s.base())
        .arg("interop-token")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the original's client failed against dynreg's server:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What it wrote reads back exactly, and nothing else is left.
    let reg = backend.peek("from-python").await.unwrap().unwrap();
    assert_eq!(
        *reg.config,
        json!({"unicode": "日本語 ✓", "nested": {"a": [1, 2.5, null, true]}, "big": 12345678901234u64})
    );
    assert_eq!(reg.metadata.get("k"), Some(&json!("v")));
    assert_eq!(backend.count_all().await.unwrap(), 1);
    assert!(backend.peek("intruder").await.unwrap().is_none());
}

struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynregs_client_against_the_originals_server() {
    let Some(python) = python() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _server = Child(
        tokio::process::Command::new(&python)
            .arg(script("serve_original.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get(format!("{base}/configs"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the original's server did not start on port {port}");
    let c = HttpBackend::new(&base).unwrap();
    c.initialize().await.unwrap();

    let meta = |team: &str, tier: i64| {
        json!({"team": team, "tier": tier})
            .as_object()
            .unwrap()
            .clone()
    };
    let first = c
        .register_with(
            "bot-1",
            Arc::new(json!({"n": 1, "u": "日本語"})),
            RegisterOptions::default().metadata(meta("x", 1)),
        )
        .await
        .unwrap();
    // The original server's timestamps (+00:00 with microseconds) parse; no revision is sent.
    assert_eq!(first.revision, 0);
    c.register_with(
        "bot-2",
        Arc::new(json!({"n": 2})),
        RegisterOptions::default().metadata(meta("y", 2)),
    )
    .await
    .unwrap();
    c.register_with(
        "bot-3",
        Arc::new(json!({"n": 3})),
        RegisterOptions::default().metadata(meta("x", 3)),
    )
    .await
    .unwrap();
    let again = c
        .register("bot-1", json!({"n": 10, "u": "日本語"}))
        .await
        .unwrap();
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(
        *c.get_config("bot-1").await.unwrap().unwrap(),
        json!({"n": 10, "u": "日本語"})
    );
    assert!(c.exists("bot-1").await.unwrap());
    assert!(c.get("missing").await.unwrap().is_none());
    assert!(c.deactivate("bot-2").await.unwrap());
    assert!(!c.deactivate("missing").await.unwrap());
    assert!(!c.exists("bot-2").await.unwrap());
    assert!(
        c.peek_config("bot-2").await.unwrap().is_none(),
        "an inactive config is not served"
    );
    let listed = c
        .list(
            &ListQuery::with_status("active")
                .filter("team", json!("x"))
                .sort_by(SortSpec::desc("metadata.tier")),
        )
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.bot_id.as_str()).collect::<Vec<_>>(),
        ["bot-3"],
        "bot-1's metadata was replaced by the re-register"
    );
    let page = c
        .list(
            &ListQuery::default()
                .sort_by(SortSpec::asc("bot_id"))
                .limit(1)
                .offset(1),
        )
        .await
        .unwrap();
    assert_eq!(page[0].bot_id, "bot-2");
    assert_eq!(c.count().await.unwrap(), 2);
    assert_eq!(c.count_inactive().await.unwrap(), 1);
    // Ids that the original's server can route, with characters it would break on raw.
    for id in ["with space", "q?x=1#f", "日本語-bot", "%2541"] {
        c.register(id, json!({"id": id})).await.unwrap();
        assert_eq!(c.peek_config(id).await.unwrap().unwrap()["id"], id, "{id}");
        assert!(c.unregister(id).await.unwrap());
    }
    // What needs dynreg's server is refused before anything is written.
    let err = c
        .register_with(
            "bot-9",
            Arc::new(json!({})),
            RegisterOptions::default().create_only(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unsupported { .. }), "{err}");
    assert!(c.peek("bot-9").await.unwrap().is_none());
    assert!(matches!(
        c.changes_since(0).await,
        Err(RegistryError::Unsupported { .. })
    ));
    assert!(matches!(
        c.current_revision().await,
        Err(RegistryError::Unsupported { .. })
    ));
    assert!(c.unregister("bot-3").await.unwrap());
    assert!(!c.unregister("bot-3").await.unwrap());
    // The original's server allows a bulk delete.
    assert_eq!(c.clear().await.unwrap(), 2);
    assert_eq!(c.count_all().await.unwrap(), 0);
}
