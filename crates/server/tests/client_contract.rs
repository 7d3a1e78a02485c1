//! `HttpBackend`'s wire contract, checked against a recording stub server (the original
//! client's tests ported): exactly which requests each call sends, how it reads the answers,
//! and what it does with servers that lack dynreg's extensions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dynreg_registry_backends::config::HttpConfig;
use dynreg_registry_backends::{HttpBackend, HttpStatusError, create_registry_backend};
use dynreg_registry_core::{
    ListQuery, RegisterOptions, RegistryBackend, RegistryBackendExt, RegistryError, SortSpec,
    Status,
};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

type Reply = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct Stub {
    seen: Mutex<Vec<Seen>>,
    replies: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
}

async fn record(State(stub): State<Arc<Stub>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    stub.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let reply = stub
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| stub.default.lock().unwrap().clone())
        .unwrap_or((404, vec![], r#"{"detail": "Not Found"}"#.into()));
    let mut resp = (StatusCode::from_u16(reply.0).unwrap(), reply.2).into_response();
    for (k, v) in reply.1 {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

struct Fixture {
    stub: Arc<Stub>,
    base: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let stub = Arc::new(Stub::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fixture { stub, base }
    }

    fn reply(&self, status: u16, body: Value) {
        self.stub
            .replies
            .lock()
            .unwrap()
            .push_back((status, vec![], body.to_string()));
    }

    fn reply_raw(&self, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
        self.stub
            .replies
            .lock()
            .unwrap()
            .push_back((status, headers, body.to_owned()));
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.stub.seen.lock().unwrap())
    }

    async fn client(&self, extra: Value) -> HttpBackend {
        let mut cfg = json!({"base_url": format!("{}/", self.base), "retries": 2});
        cfg.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let c = HttpBackend::from_config(&cfg).unwrap();
        c.initialize().await.unwrap();
        c
    }
}

fn reg(id: &str, status: &str, meta: Value) -> Value {
    json!({"bot_id": id, "config": {"id": id}, "status": status, "metadata": meta,
           "created_at": "2024-01-15T10:30:00Z", "updated_at": "2024-01-15T10:30:00.5Z",
           "last_accessed_at": null})
}

#[tokio::test]
async fn config_defaults_and_the_factory() {
    let c = HttpBackend::from_config(&json!({"base_url": "http://127.0.0.1:9/api/v1/"})).unwrap();
    assert_eq!(c.base_url(), "http://127.0.0.1:9/api/v1");
    let d = HttpConfig::from_json(&json!({"base_url": "x"})).unwrap();
    assert_eq!(
        (d.timeout, d.read_only, d.verify_ssl, d.auth_header.as_str()),
        (30.0, false, true, "Authorization")
    );
    let err = HttpBackend::from_config(&json!({}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("base_url") && err.contains("required"),
        "{err}"
    );
    let err = HttpBackend::from_config(&json!({"base_url": "ftp://h/x"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http://"), "{err}");
    let err = HttpBackend::from_config(&json!({"base_url": "http://h", "timout": 3}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"timeout\""), "{err}");
    // The token never shows.
    let cfg = HttpConfig::from_json(&json!({"base_url": "http://h", "auth_token": "s3cret-token"}))
        .unwrap();
    assert!(!format!("{cfg:?}").contains("s3cret"));
    let c = HttpBackend::with_config(cfg).unwrap();
    assert!(!format!("{c:?}").contains("s3cret"));
    // Through the factory, initialized.
    let f = Fixture::new().await;
    let b = create_registry_backend("HTTP", &json!({"base_url": f.base}))
        .await
        .unwrap();
    assert_eq!(b.kind(), "http");
    f.reply(404, json!({"detail": "Bot 'x' not found"}));
    assert!(b.get("x").await.unwrap().is_none());
}

#[tokio::test]
async fn not_initialized_and_read_only_refuse_before_any_request() {
    let f = Fixture::new().await;
    let c = HttpBackend::from_config(&json!({"base_url": f.base})).unwrap();
    assert!(matches!(
        c.get("a").await,
        Err(RegistryError::NotInitialized { backend: "http" })
    ));
    let ro = f.client(json!({"read_only": true})).await;
    assert!(matches!(
        ro.register("a", json!({})).await,
        Err(RegistryError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.unregister("a").await,
        Err(RegistryError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.deactivate("a").await,
        Err(RegistryError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.clear().await,
        Err(RegistryError::ReadOnly { .. })
    ));
    assert!(f.seen().is_empty());
    f.reply(200, reg("a", "active", json!({})));
    assert_eq!(ro.peek_config("a").await.unwrap().unwrap()["id"], "a");
    let seen = f.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].query.clone()),
        ("GET", None)
    );
}

#[tokio::test]
async fn reads_parse_the_original_shapes() {
    let f = Fixture::new().await;
    let c = f.client(json!({"auth_token": "tok"})).await;
    f.reply(200, reg("a", "active", Value::Null));
    let r = c.get("a").await.unwrap().unwrap();
    assert_eq!((r.bot_id.as_str(), r.metadata.len()), ("a", 0));
    assert_eq!(r.created_at.to_rfc3339(), "2024-01-15T10:30:00+00:00");
    let seen = f.seen();
    assert_eq!(seen[0].path, "/api/v1/configs/a");
    assert_eq!(seen[0].query, None);
    assert_eq!(seen[0].headers["authorization"], "Bearer tok");
    assert_eq!(seen[0].headers["accept"], "application/json");
    // "id" instead of "bot_id", no config, no status.
    f.reply(200, json!({"id": "legacy"}));
    let r = c.get("legacy").await.unwrap().unwrap();
    assert_eq!(
        (
            r.bot_id.as_str(),
            r.is_active(),
            r.config.as_object().unwrap().len()
        ),
        ("legacy", true, 0)
    );
    f.reply(200, reg("i", "inactive", json!({})));
    assert!(!c.exists("i").await.unwrap());
    f.reply(200, reg("i", "inactive", json!({})));
    assert!(
        c.get_config("i").await.unwrap().is_none(),
        "inactive configs are not served"
    );
    f.reply(404, json!({"detail": "x"}));
    assert!(!c.exists("gone").await.unwrap());
    // An unreadable timestamp is an error naming the path, not "now".
    f.reply(
        200,
        json!({"bot_id": "t", "config": {}, "created_at": "yesterday"}),
    );
    let err = c.get("t").await.unwrap_err().to_string();
    assert!(
        err.contains("/api/v1/configs/t") && err.contains("yesterday"),
        "{err}"
    );
    // Any other error status carries status and body.
    f.reply_raw(500, vec![], "boom");
    match c.get("a").await.unwrap_err() {
        RegistryError::Storage { source, .. } => {
            let e = source.downcast_ref::<HttpStatusError>().unwrap();
            assert_eq!((e.status, e.message.as_str()), (500, "boom"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn writes_are_one_request_each() {
    let f = Fixture::new().await;
    let c = f
        .client(json!({"auth_token": "k", "auth_header": "X-API-Key"}))
        .await;
    f.reply(200, reg("n", "active", json!({"team": "x"})));
    let meta = json!({"team": "x"}).as_object().unwrap().clone();
    c.register_with(
        "n",
        std::sync::Arc::new(json!({"id": "n"})),
        RegisterOptions::default().metadata(meta),
    )
    .await
    .unwrap();
    let seen = f.seen();
    assert_eq!(seen.len(), 1, "one PUT, no probing GET");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PUT", "/api/v1/configs/n")
    );
    assert_eq!(
        seen[0].body,
        json!({"bot_id": "n", "config": {"id": "n"}, "status": "active", "metadata": {"team": "x"}})
    );
    assert_eq!(seen[0].headers["x-api-key"], "Bearer k");
    assert!(!seen[0].headers.contains_key("authorization"));
    f.reply_raw(204, vec![], "");
    assert!(c.unregister("n").await.unwrap());
    f.reply(404, json!({"detail": "no"}));
    assert!(!c.unregister("n").await.unwrap());
    f.reply_raw(204, vec![], "");
    assert!(c.deactivate("n").await.unwrap());
    f.reply(404, json!({"detail": "no"}));
    assert!(!c.deactivate("n").await.unwrap());
    let seen = f.seen();
    assert_eq!(
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>(),
        [
            "DELETE /api/v1/configs/n",
            "DELETE /api/v1/configs/n",
            "POST /api/v1/configs/n/deactivate",
            "POST /api/v1/configs/n/deactivate"
        ]
    );
    // Ids are one encoded segment; `.` and `..` take the query form.
    for (id, path, query) in [
        ("a/b c%", "/api/v1/configs/a%2Fb%20c%25", None),
        ("..", "/api/v1/config", Some("bot_id=..")),
    ] {
        f.reply(404, json!({"detail": "no"}));
        c.peek(id).await.unwrap();
        let s = &f.seen()[0];
        assert_eq!((s.path.as_str(), s.query.as_deref()), (path, query), "{id}");
        assert_eq!(s.headers["dynreg-touch"], "false");
    }
    // Invalid ids never leave the process.
    assert!(matches!(
        c.register("a\0b", json!({})).await,
        Err(RegistryError::InvalidId { .. })
    ));
    assert!(matches!(
        c.register("a", json!([1])).await,
        Err(RegistryError::InvalidRegistration { .. })
    ));
    assert!(f.seen().is_empty());
}

#[tokio::test]
async fn list_query_encoding_and_client_side_reapplication() {
    let f = Fixture::new().await;
    let c = f.client(json!({})).await;
    // No parameters: no query string at all; a bare list is accepted.
    f.reply(
        200,
        json!([reg("b", "active", json!({})), reg("a", "active", json!({}))]),
    );
    let all = c.list(&ListQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.bot_id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(f.seen()[0].query, None);
    // Every parameter, in the original's encoding.
    f.reply(200, json!({"items": [], "total": 0}));
    let q = ListQuery::with_status("active")
        .filter("z", json!(1))
        .filter("a", json!("x y"))
        .sort_by(SortSpec::desc("metadata.n"))
        .sort_by(SortSpec::asc("bot_id"))
        .limit(5)
        .offset(10);
    c.list(&q).await.unwrap();
    let seen = &f.seen()[0];
    let pairs: Vec<(String, String)> = form_pairs(seen.query.as_deref().unwrap());
    assert_eq!(
        pairs,
        [
            ("filter_metadata", r#"{"a":"x y","z":1}"#),
            ("status", "active"),
            ("sort", "metadata.n:desc"),
            ("sort", "bot_id:asc"),
            ("limit", "5"),
            ("offset", "10")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // A server that ignores filter, status and sort: the client applies them, but not the page.
    let rows = json!({"configs": [
        reg("a", "active", json!({"team": "x", "n": 1})),
        reg("b", "inactive", json!({"team": "x", "n": 2})),
        reg("c", "active", json!({"team": "y", "n": 3})),
        reg("d", "active", json!({"team": "x", "n": 4})),
    ]});
    f.reply(200, rows.clone());
    let got = c
        .list(
            &ListQuery::with_status("active")
                .filter("team", json!("x"))
                .sort_by(SortSpec::desc("metadata.n"))
                .limit(1),
        )
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.bot_id.as_str()).collect::<Vec<_>>(),
        ["d", "a"],
        "limit is the server's job"
    );
    f.seen();
    // Counting: `limit=0` and the server's total, or the whole list from a server without one.
    f.reply(200, json!({"items": [], "total": 7}));
    assert_eq!(c.count_where(Some(&Status::Active), None).await.unwrap(), 7);
    let q = f.seen()[0].query.clone().unwrap();
    assert!(q.contains("status=active") && q.contains("limit=0"), "{q}");
    f.reply(200, json!({"items": []}));
    f.reply(200, rows);
    assert_eq!(c.count_where(Some(&Status::Active), None).await.unwrap(), 3);
    // Unknown shapes are errors, not an empty list.
    f.reply(200, json!({"rows": []}));
    let err = c.list(&ListQuery::default()).await.unwrap_err().to_string();
    assert!(err.contains("items"), "{err}");
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let dec = |s: &str| percent_decode(&s.replace('+', " "));
            (dec(k), dec(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn retries_only_idempotent_calls() {
    let f = Fixture::new().await;
    let c = f.client(json!({})).await;
    f.reply(503, json!({"detail": "busy"}));
    f.reply(502, json!({"detail": "busy"}));
    f.reply(200, reg("r", "active", json!({})));
    assert!(c.get("r").await.unwrap().is_some());
    assert_eq!(f.seen().len(), 3);
    // POST (deactivate) is not retried.
    f.reply(503, json!({"detail": "busy"}));
    assert!(c.deactivate("r").await.is_err());
    assert_eq!(f.seen().len(), 1);
    // 500 is not retried either.
    f.reply(500, json!({"detail": "bug"}));
    assert!(c.get("r").await.is_err());
    assert_eq!(f.seen().len(), 1);
    // Retries are bounded.
    for _ in 0..5 {
        f.reply(504, json!({"detail": "busy"}));
    }
    assert!(c.get("r").await.is_err());
    assert_eq!(f.seen().len(), 3);
    f.stub.replies.lock().unwrap().clear();
}

#[tokio::test]
async fn what_needs_a_dynreg_server_is_refused_by_another() {
    let f = Fixture::new().await;
    let c = f.client(json!({})).await;
    // The original's server has no /revision: 404.
    f.reply(404, json!({"detail": "Not Found"}));
    let err = c
        .register_with(
            "x",
            std::sync::Arc::new(json!({})),
            RegisterOptions::default().if_revision(3),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unsupported { .. }), "{err}");
    let seen = f.seen();
    assert_eq!(
        (seen.len(), seen[0].method.as_str(), seen[0].path.as_str()),
        (1, "GET", "/api/v1/revision"),
        "nothing written"
    );
    // The change feed: the original answers ?since= with a plain list.
    f.reply(200, json!({"items": []}));
    assert!(matches!(
        c.changes_since(0).await,
        Err(RegistryError::Unsupported { .. })
    ));
    assert_eq!(f.seen()[0].query.as_deref(), Some("since=0"));
    // Bulk delete refused with 405: one by one, as the original client does.
    f.reply(200, json!({"items": [], "total": 2}));
    f.reply(405, json!({"detail": "Method Not Allowed"}));
    f.reply(
        200,
        json!({"items": [reg("a", "active", json!({})), reg("b", "inactive", json!({}))]}),
    );
    f.reply_raw(204, vec![], "");
    f.reply_raw(204, vec![], "");
    assert_eq!(c.clear().await.unwrap(), 2);
    let seen = f.seen();
    assert_eq!(
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>(),
        [
            "GET /api/v1/configs",
            "DELETE /api/v1/configs",
            "GET /api/v1/configs",
            "DELETE /api/v1/configs/a",
            "DELETE /api/v1/configs/b"
        ]
    );
}
