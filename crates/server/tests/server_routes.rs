//! The routes of the server, driven with a plain HTTP client: the original server's tests
//! ported (status codes, bodies, `{"detail": ...}` errors), then what dynreg adds — tokens,
//! ETags and conditional writes, hostile input, the watch, health checks and shutdown.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynreg_registry_core::{InMemoryBackend, RegisterOptions, RegistryBackend, RegistryBackendExt};
use dynreg_server::{RegistryServer, ServerConfig, ServerError};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

fn backend() -> Arc<InMemoryBackend> {
    Arc::new(InMemoryBackend::new())
}

async fn open(b: &Arc<InMemoryBackend>) -> support::Running {
    support::serve(b.clone(), ServerConfig::default().allow_clear(true)).await
}

fn meta(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn seed(b: &InMemoryBackend) {
    for (id, team, n) in [("a", "x", 3), ("b", "y", 1), ("c", "x", 2)] {
        b.register_with(
            id,
            Arc::new(json!({"n": n})),
            RegisterOptions::default().metadata(meta(&[("team", json!(team)), ("n", json!(n))])),
        )
        .await
        .unwrap();
    }
    b.deactivate("b").await.unwrap();
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let r = reqwest::get(url).await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bot_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_shapes_filters_sorts_and_pages() {
    let b = backend();
    let s = open(&b).await;
    let (st, v) = get_json(&format!("{}/configs", s.base())).await;
    assert_eq!(st, 200);
    assert_eq!(v["items"], json!([]));
    seed(&b).await;
    let base = s.base();
    let (_, v) = get_json(&format!("{base}/configs")).await;
    assert_eq!(ids(&v), ["a", "b", "c"]);
    // The original's registration dict, plus revision and config_hash.
    let first = &v["items"][0];
    for k in [
        "bot_id",
        "config",
        "status",
        "metadata",
        "created_at",
        "updated_at",
        "last_accessed_at",
        "revision",
    ] {
        assert!(first.get(k).is_some(), "{k} missing from {first}");
    }
    assert!(first["created_at"].as_str().unwrap().ends_with("+00:00"));
    let q = |s: &str| format!("{base}/configs?{s}");
    assert_eq!(
        ids(&get_json(&q("filter_metadata=%7B%22team%22%3A%22x%22%7D"))
            .await
            .1),
        ["a", "c"]
    );
    assert_eq!(ids(&get_json(&q("status=inactive")).await.1), ["b"]);
    assert_eq!(ids(&get_json(&q("status=active")).await.1), ["a", "c"]);
    assert_eq!(
        ids(&get_json(&q("sort=metadata.n:desc")).await.1),
        ["a", "c", "b"]
    );
    assert_eq!(
        ids(&get_json(&q("sort=metadata.n")).await.1),
        ["b", "c", "a"]
    );
    assert_eq!(
        ids(&get_json(&q("sort=metadata.team:asc&sort=metadata.n:desc"))
            .await
            .1),
        ["a", "c", "b"]
    );
    assert_eq!(
        ids(&get_json(&q("sort=bot_id:desc&limit=2")).await.1),
        ["c", "b"]
    );
    let (_, v) = get_json(&q("sort=bot_id&limit=1&offset=1")).await;
    assert_eq!(
        (ids(&v), v["total"].clone()),
        (vec!["b".to_owned()], json!(3))
    );
    assert_eq!(ids(&get_json(&q("status=active&filter_metadata=%7B%22team%22%3A%22x%22%7D&sort=metadata.n:asc&limit=1&offset=1")).await.1), ["a"]);
    // The original's 422 texts.
    for (query, text) in [
        (
            "filter_metadata=%7Bnope",
            "filter_metadata must be valid JSON",
        ),
        (
            "filter_metadata=%5B1%5D",
            "filter_metadata must be a JSON object",
        ),
        (
            "sort=bot_id:sideways",
            "sort entry 'bot_id:sideways' has invalid order 'sideways'; must be 'asc' or 'desc'",
        ),
        ("sort=:asc", "sort entry ':asc' has an empty field"),
        ("limit=-1", "limit must be a non-negative integer"),
        ("offset=-5", "offset must be a non-negative integer"),
        (
            "limit=99999999999999999999999",
            "limit must be a non-negative integer",
        ),
        ("limit=10001", "limit must be at most 10000"),
        ("since=x", "since must be a revision"),
        ("watch=true", "watch=true needs since"),
    ] {
        let (st, v) = get_json(&q(query)).await;
        assert_eq!(st, 422, "{query}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(text), "{query}: {detail}");
    }
}

#[tokio::test]
async fn item_routes_answer_as_the_original() {
    let b = backend();
    let s = open(&b).await;
    let c = reqwest::Client::new();
    let base = s.base();
    // POST: upsert, default status active, metadata defaults to {}.
    let r = c
        .post(format!("{base}/configs"))
        .json(&json!({"bot_id": "p", "config": {"m": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["dynreg-write-effect"], "created");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["status"].clone(), v["metadata"].clone()),
        (json!("active"), json!({}))
    );
    for body in [json!({"config": {}}), json!({"bot_id": "p"})] {
        let r = c
            .post(format!("{base}/configs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["detail"], "Body must include 'bot_id' and 'config'");
    }
    // PUT: the path wins over a body bot_id; without status it is active again.
    b.deactivate("p").await.unwrap();
    let r = c
        .put(format!("{base}/configs/p"))
        .json(&json!({"bot_id": "other", "config": {"m": 2}, "metadata": {"k": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["bot_id"].clone(),
            v["status"].clone(),
            v["config"].clone()
        ),
        (json!("p"), json!("active"), json!({"m": 2}))
    );
    assert!(b.peek("other").await.unwrap().is_none());
    let r = c
        .put(format!("{base}/configs/p"))
        .json(&json!({"status": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["detail"],
        "Body must include 'config'"
    );
    // GET, 404s with the original's detail, DELETE and deactivate 204.
    let (st, v) = get_json(&format!("{base}/configs/p")).await;
    assert_eq!((st, v["config"].clone()), (StatusCode::OK, json!({"m": 2})));
    let (st, v) = get_json(&format!("{base}/configs/nope")).await;
    assert_eq!(
        (st, v["detail"].clone()),
        (StatusCode::NOT_FOUND, json!("Bot 'nope' not found"))
    );
    let r = c
        .post(format!("{base}/configs/p/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        b.peek("p").await.unwrap().unwrap().status.as_str(),
        "inactive"
    );
    let r = c
        .post(format!("{base}/configs/nope/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status(),
            r.json::<Value>().await.unwrap()["detail"].clone()
        ),
        (StatusCode::NOT_FOUND, json!("Bot 'nope' not found"))
    );
    let r = c.delete(format!("{base}/configs/p")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.delete(format!("{base}/configs/p")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The seed's /bots aliases.
    let r = c
        .post(format!("{base}/bots"))
        .json(&json!({"bot_id": "s", "config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(format!("{base}/bots/s"))
        .json(&json!({"config": {"v": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get_json(&format!("{base}/bots")).await;
    assert_eq!(ids(&v), ["s"]);
    let r = c.delete(format!("{base}/bots/s")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // Bulk delete: 204 and empty when enabled.
    b.register("x", json!({})).await.unwrap();
    let r = c.delete(format!("{base}/configs")).send().await.unwrap();
    assert_eq!(
        (r.status(), r.headers()["dynreg-removed"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "1")
    );
    assert_eq!(b.count_all().await.unwrap(), 0);
}

#[tokio::test]
async fn bulk_delete_is_refused_unless_enabled() {
    let b = backend();
    b.register("keep", json!({})).await.unwrap();
    let s = support::serve(b.clone(), ServerConfig::default()).await;
    let r = reqwest::Client::new()
        .delete(format!("{}/configs", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert_eq!(b.count_all().await.unwrap(), 1);
}

#[tokio::test]
async fn tokens_guard_every_route_and_refusals_write_nothing() {
    let b = backend();
    b.register("seed", json!({"v": 1})).await.unwrap();
    let cfg = ServerConfig::default()
        .read_token("reader")
        .write_token("writer")
        .allow_clear(true);
    let s = support::serve(b.clone(), cfg).await;
    let c = reqwest::Client::new();
    let base = s.base();
    let writes: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (
            reqwest::Method::POST,
            format!("{base}/configs"),
            Some(json!({"bot_id": "n", "config": {}})),
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/configs/seed"),
            Some(json!({"config": {"v": 2}})),
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/config?bot_id=seed"),
            Some(json!({"config": {"v": 2}})),
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/configs/seed"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/config?bot_id=seed"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/configs/seed/deactivate"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/config/deactivate?bot_id=seed"),
            None,
        ),
        (reqwest::Method::DELETE, format!("{base}/configs"), None),
        (
            reqwest::Method::PUT,
            format!("{base}/bots/seed"),
            Some(json!({"config": {"v": 2}})),
        ),
    ];
    let before = b.peek("seed").await.unwrap().unwrap();
    for (method, url, body) in &writes {
        for (token, expected) in [
            (None, 401),
            (Some("Bearer wrong"), 401),
            (Some("writer"), 401),
            (Some("Bearer reader"), 403),
        ] {
            let mut req = c.request(method.clone(), url);
            if let Some(t) = token {
                req = req.header("authorization", t);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status().as_u16(),
                expected,
                "{method} {url} with {token:?}"
            );
            if expected == 401 {
                assert!(r.headers().contains_key("www-authenticate"));
            }
            assert!(r.json::<Value>().await.unwrap()["detail"].is_string());
        }
    }
    assert_eq!(b.count_all().await.unwrap(), 1);
    assert_eq!(
        b.peek("seed").await.unwrap().unwrap().revision,
        before.revision
    );
    // Reads need a token too; either kind reads.
    for token in [None, Some("Bearer nope")] {
        let mut req = c.get(format!("{base}/configs"));
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    for t in ["Bearer reader", "bearer writer"] {
        let r = c
            .get(format!("{base}/configs/seed"))
            .header("authorization", t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .put(format!("{base}/configs/seed"))
        .header("authorization", "Bearer writer")
        .json(&json!({"config": {"v": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Health checks need no token.
    assert_eq!(
        reqwest::get(format!("{}/healthz", s.root()))
            .await
            .unwrap()
            .status(),
        200
    );
    let (st, v) = get_json(&format!("{}/readyz", s.root())).await;
    assert_eq!((st, v["status"].clone()), (StatusCode::OK, json!("ready")));
    // The client sends its token, on a custom header if configured.
    let client = support::client(&base, Some("writer")).await;
    client.register("via-client", json!({})).await.unwrap();
    let reader = support::client(&base, Some("reader")).await;
    assert!(reader.exists("via-client").await.unwrap());
    let err = reader
        .register("no", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let custom = support::serve(
        b.clone(),
        ServerConfig {
            auth_header: "X-API-Key".into(),
            ..ServerConfig::default().write_token("k")
        },
    )
    .await;
    let client = dynreg_registry_backends::HttpBackend::from_config(&json!({
        "base_url": custom.base(), "auth_token": "k", "auth_header": "X-API-Key"
    }))
    .unwrap();
    client.initialize().await.unwrap();
    assert!(client.exists("via-client").await.unwrap());
    assert!(!format!("{client:?}").contains('k') || !format!("{client:?}").contains("\"k\""));
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx_and_writes_nothing() {
    let b = backend();
    let s = open(&b).await;
    let c = reqwest::Client::new();
    let base = s.base();
    let long = "x".repeat(2000);
    for (path, want) in [
        ("configs/nul%00byte".to_owned(), 422),
        (format!("configs/{long}"), 422),
        ("configs/%FF%FE".to_owned(), 400),
        ("configs/a/b".to_owned(), 404),
        ("configs/a/deactivate".to_owned(), 405),
    ] {
        let r = c
            .put(format!("{base}/{path}"))
            .json(&json!({"config": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
    }
    let bodies: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"[1,2]".to_vec(), 422, "Body must be a JSON object"),
        (b"\"text\"".to_vec(), 422, "Body must be a JSON object"),
        (b"{not json".to_vec(), 422, "not valid JSON"),
        (
            format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes(),
            422,
            "not valid JSON",
        ),
        (
            format!(
                "{{\"config\": {}1{}}}",
                "{\"a\":".repeat(5000),
                "}".repeat(5000)
            )
            .into_bytes(),
            422,
            "recursion limit",
        ),
        (
            br#"{"config": [1]}"#.to_vec(),
            422,
            "config must be a JSON object",
        ),
        (
            br#"{"config": {}, "metadata": 3}"#.to_vec(),
            422,
            "metadata must be an object",
        ),
        (
            br#"{"config": {}, "status": 3}"#.to_vec(),
            422,
            "status must be a string",
        ),
    ];
    for (body, want, text) in bodies {
        let r = c
            .put(format!("{base}/configs/h"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
        let detail = r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains(text), "{detail}");
    }
    // 100 MB: refused at the body limit, without buffering it all.
    let big = vec![b' '; 100 * 1024 * 1024];
    let r = c
        .put(format!("{base}/configs/h"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let r = c
        .post(format!("{base}/configs"))
        .json(&json!({"bot_id": 5, "config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(b.count_all().await.unwrap(), 0);
    assert_eq!(b.current_revision().await.unwrap(), 0);
}

#[tokio::test]
async fn any_accepted_id_round_trips_through_the_path() {
    let b = backend();
    let s = open(&b).await;
    let client = support::client(&s.base(), None).await;
    let ids = [
        "a/b",
        "..",
        ".",
        "%2F",
        "%252F",
        "with space",
        "q?x=1#f",
        "日本語",
        "a/../b",
        "x".repeat(1024).leak() as &str,
    ];
    for (i, id) in ids.iter().enumerate() {
        client.register(id, json!({"i": i})).await.unwrap();
        assert_eq!(b.peek(id).await.unwrap().unwrap().config["i"], i, "{id}");
        assert_eq!(client.peek(id).await.unwrap().unwrap().bot_id, *id);
    }
    for id in ids {
        assert!(client.deactivate(id).await.unwrap());
        assert!(client.unregister(id).await.unwrap());
    }
    assert_eq!(b.count_all().await.unwrap(), 0);
}

#[tokio::test]
async fn etags_and_conditional_writes() {
    let b = backend();
    let s = open(&b).await;
    let c = reqwest::Client::new();
    let url = format!("{}/configs/e", s.base());
    let r = c
        .put(&url)
        .header("if-none-match", "*")
        .json(&json!({"config": {"v": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let rev: u64 = r.headers()["dynreg-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(tag, format!("\"{rev}\""));
    // Create-only again: 412, nothing written.
    let r = c
        .put(&url)
        .header("if-none-match", "*")
        .json(&json!({"config": {"v": 9}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // GET with the current tag: 304; with another: 200.
    let r = c
        .get(&url)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&url)
        .header("if-none-match", "\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Compare-and-swap: the current tag wins once, then it is stale.
    let r = c
        .put(&url)
        .header("if-match", &tag)
        .json(&json!({"config": {"v": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status(),
            r.headers()["dynreg-write-effect"].to_str().unwrap()
        ),
        (StatusCode::OK, "updated")
    );
    let r = c
        .put(&url)
        .header("if-match", &tag)
        .json(&json!({"config": {"v": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("conflict")
    );
    assert_eq!(b.peek("e").await.unwrap().unwrap().config["v"], 2);
    let r = c
        .put(&url)
        .header("if-match", "garbage")
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .put(format!("{}/configs/none", s.base()))
        .header("if-match", "*")
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // Conditional deactivate.
    let now = b.peek("e").await.unwrap().unwrap().revision;
    let r = c
        .post(format!("{url}/deactivate"))
        .header("if-match", format!("\"{}\"", now - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert!(b.peek("e").await.unwrap().unwrap().is_active());
    let r = c
        .post(format!("{url}/deactivate"))
        .header("if-match", format!("\"{now}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!b.peek("e").await.unwrap().unwrap().is_active());
    // A conditional DELETE: a stale tag deletes nothing.
    let r = c
        .delete(&url)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert!(b.peek("e").await.unwrap().is_some());
    // A GET touches; a GET with dynreg-touch: false does not.
    let before = b.peek("e").await.unwrap().unwrap().last_accessed_at;
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.get(&url)
        .header("dynreg-touch", "false")
        .send()
        .await
        .unwrap();
    assert_eq!(b.peek("e").await.unwrap().unwrap().last_accessed_at, before);
    c.get(&url).send().await.unwrap();
    assert!(b.peek("e").await.unwrap().unwrap().last_accessed_at > before);
    // The current tag deletes; then the registration is absent, a conflict too.
    let now = b.peek("e").await.unwrap().unwrap().revision;
    let r = c
        .delete(&url)
        .header("if-match", format!("\"{now}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(b.peek("e").await.unwrap().is_none());
    let r = c
        .delete(&url)
        .header("if-match", format!("\"{now}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
}

#[tokio::test]
async fn watch_wakes_on_a_write_resumes_and_expires() {
    let b = Arc::new(InMemoryBackend::with_tombstone_retention(2));
    let s = support::serve(b.clone(), ServerConfig::default()).await;
    let client = Arc::new(support::client(&s.base(), None).await);
    client.register("w", json!({"v": 1})).await.unwrap();
    let from = client.current_revision().await.unwrap();
    // Nothing new: the watch waits for its timeout and answers an empty feed.
    let t = Instant::now();
    let feed = client
        .watch(from, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(
        matches!(feed, dynreg_registry_core::ChangeFeed::Changes { ref changes, .. } if changes.is_empty()),
        "{feed:?}"
    );
    // A write through the server wakes a waiting watch at once.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.watch(from, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    client.register("w", json!({"v": 2})).await.unwrap();
    let feed = waiter.await.unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the watch waited for its timeout"
    );
    let dynreg_registry_core::ChangeFeed::Changes {
        changes,
        current_revision,
    } = feed
    else {
        panic!()
    };
    assert_eq!((changes.len(), changes[0].bot_id()), (1, "w"));
    // A write the server did not make (straight into the backend) is seen by the poll.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .watch(current_revision, Duration::from_secs(20))
                .await
        })
    };
    b.unregister("w").await.unwrap();
    let feed = waiter.await.unwrap().unwrap();
    let dynreg_registry_core::ChangeFeed::Changes { changes, .. } = feed else {
        panic!()
    };
    assert!(matches!(
        changes[0],
        dynreg_registry_core::Change::Deleted { .. }
    ));
    // A cursor older than the kept tombstones: 410, relist.
    for i in 0..5 {
        b.register(&format!("t{i}"), json!({})).await.unwrap();
        b.unregister(&format!("t{i}")).await.unwrap();
    }
    let r = reqwest::get(format!("{}/configs?since=1", s.base()))
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("relist")
    );
    assert!(matches!(
        client.changes_since(1).await.unwrap(),
        dynreg_registry_core::ChangeFeed::Expired { .. }
    ));
}

#[tokio::test]
async fn shutdown_ends_watches_and_finishes_in_flight_requests() {
    let b = backend();
    let s = open(&b).await;
    let client = Arc::new(support::client(&s.base(), None).await);
    let from = client.current_revision().await.unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.watch(from, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    s.shutdown().await;
    let feed = waiter.await.unwrap().unwrap();
    assert!(matches!(
        feed,
        dynreg_registry_core::ChangeFeed::Changes { .. }
    ));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown waited for the watch's timeout"
    );
    assert!(client.peek("x").await.is_err(), "the server is gone");
}

#[tokio::test]
async fn refuses_an_open_registry_on_a_public_address() {
    let b: Arc<dyn RegistryBackend> = backend();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = RegistryServer::new(b.clone())
        .serve(listener, async {})
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::InsecureBind { .. }), "{err}");
    assert!(err.to_string().contains("insecure"));
    // With tokens it serves (and stops at once here).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    RegistryServer::new(b)
        .with_config(ServerConfig::default().write_token("t"))
        .unwrap()
        .serve(listener, async {})
        .await
        .unwrap();
    let err = RegistryServer::new(backend())
        .with_config(ServerConfig::default().read_token(""))
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}
