//! No secret in any `Debug` or error: every config type that can hold one — the registry's
//! PostgreSQL, S3 and HTTP backends, the PostgreSQL and Redis buses, the S3 knowledge store,
//! the HTTP embedder, the server's tokens — is built with a marker in each secret field, and
//! neither its `Debug`, nor the `Debug` of what it builds, nor the error of a bad config shows
//! the marker.

use dynreg::events::postgres::PostgresEventBusConfig;
use dynreg::events::redis::RedisEventBusConfig;
use dynreg::ingestion::embed::{HttpApi, HttpEmbedderConfig};
use dynreg::knowledge::S3Config as KnowledgeS3Config;
use dynreg::registry::config::{HttpConfig, PostgresConfig, S3Config};
use dynreg::registry::{HttpBackend, PostgresBackend, S3Backend, create_registry_backend};
use dynreg::server::ServerConfig;
use serde_json::{Value, json};

const MARK: &str = "Zq9-S3CR3T-MARKER";

fn clean(what: &str, text: &str) {
    assert!(!text.contains(MARK), "{what} shows a secret: {text}");
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test]
async fn no_config_type_shows_a_secret() {
    let pg_url = format!("postgres://app:{MARK}@127.0.0.1:1/db");
    // Registry configs, and the backends built from them (no I/O: built, not initialized).
    let pg = json!({"url": pg_url, "password": MARK, "ssl": false});
    clean(
        "PostgresConfig",
        &format!("{:?}", PostgresConfig::from_json(&pg).unwrap()),
    );
    clean(
        "PostgresBackend",
        &format!("{:?}", PostgresBackend::from_config(&pg).unwrap()),
    );
    let s3 = json!({"bucket": "b", "endpoint_url": "http://127.0.0.1:1", "aws_access_key_id": "AKIA",
                    "aws_secret_access_key": MARK, "aws_session_token": MARK});
    clean(
        "S3Config",
        &format!("{:?}", S3Config::from_json(&s3).unwrap()),
    );
    clean(
        "S3Backend",
        &format!("{:?}", S3Backend::from_config(&s3).unwrap()),
    );
    let http =
        json!({"base_url": format!("http://user:{MARK}@127.0.0.1:1/api/v1"), "auth_token": MARK});
    clean(
        "HttpConfig",
        &format!("{:?}", HttpConfig::from_json(&http).unwrap()),
    );
    clean(
        "HttpBackend",
        &format!("{:?}", HttpBackend::from_config(&http).unwrap()),
    );
    // Bus configs.
    let bus = PostgresEventBusConfig::from_json(&obj(json!({"url": pg_url}))).unwrap();
    clean("PostgresEventBusConfig", &format!("{bus:?}"));
    let redis_url = format!("redis://:{MARK}@127.0.0.1:1");
    let redis = RedisEventBusConfig::from_json(&obj(json!({"url": redis_url}))).unwrap();
    clean("RedisEventBusConfig (url)", &format!("{redis:?}"));
    let redis =
        RedisEventBusConfig::from_json(&obj(json!({"host": "127.0.0.1", "password": MARK})))
            .unwrap();
    clean("RedisEventBusConfig (password)", &format!("{redis:?}"));
    // Knowledge store, embedder, server.
    let k = KnowledgeS3Config::from_json(
        &json!({"bucket": "b", "aws_secret_access_key": MARK, "aws_session_token": MARK}),
    )
    .unwrap();
    clean("knowledge S3Config", &format!("{k:?}"));
    let mut e = HttpEmbedderConfig::new(HttpApi::OpenAi, "http://127.0.0.1:1/v1", "m", 8);
    e.api_key = Some(MARK.to_owned());
    clean("HttpEmbedderConfig", &format!("{e:?}"));
    let server = ServerConfig::default().read_token(MARK).write_token(MARK);
    clean("ServerConfig", &format!("{server:?}"));
    // Errors from bad configs name the key, never a value.
    for (kind, config) in [
        ("postgres", json!({"url": pg_url, "password": [MARK]})),
        ("postgres", json!({"url": pg_url, "pasword": MARK})),
        ("postgres", json!({"url": format!("not a url {MARK}")})),
        (
            "s3",
            json!({"bucket": "b", "aws_secret_access_key": {"v": MARK}}),
        ),
        ("http", json!({"base_url": format!("ftp://{MARK}@h")})),
        (
            "http",
            json!({"base_url": "http://127.0.0.1:1", "auth_token": [MARK]}),
        ),
        ("sqlite", json!(MARK)),
    ] {
        let err = create_registry_backend(kind, &config).await.unwrap_err();
        clean(&format!("{kind} config error"), &format!("{err} {err:?}"));
    }
}
