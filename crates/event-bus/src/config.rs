//! Helpers for reading bus options out of a JSON configuration map, with errors naming the key.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::error::EventBusError;

fn bad(key: &str, reason: String) -> EventBusError {
    EventBusError::InvalidConfig {
        key: key.to_owned(),
        reason,
    }
}

/// An optional non-negative integer option.
pub(crate) fn usize_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<usize>, EventBusError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| bad(key, format!("expected a positive integer, got {n}"))),
        Some(other) => Err(bad(
            key,
            format!("expected a positive integer, got {other}"),
        )),
    }
}

/// An optional string option.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn string_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, EventBusError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(key, format!("expected a string, got {other}"))),
    }
}

/// An optional duration given in milliseconds.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn millis_key(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, EventBusError> {
    Ok(usize_key(map, key)?.map(|ms| Duration::from_millis(ms as u64)))
}

/// Rejects keys a backend does not understand (typos should not be silently ignored).
pub(crate) fn reject_unknown(
    map: &Map<String, Value>,
    known: &[&str],
) -> Result<(), EventBusError> {
    for key in map.keys() {
        if key != "backend" && !known.contains(&key.as_str()) {
            return Err(bad(
                key,
                format!("unknown option; known options: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn opt_str(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truthy(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1")
        }
        _ => false,
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Normalises the options of a `kind` bus as environments write them: numeric strings become
/// numbers for `capacity` and `*_ms` options (a `${VAR:64}` substitution is a string), and
/// for `redis` and `postgres` without `url` (or `connection_string`) the URL is built from
/// `host`, `port`, `username`/`user`, `password`, `db`/`database` and `ssl` (`rediss://`,
/// `sslmode=require`), user and password percent-encoded. This is the one place a bus URL is
/// built from parts; every bus config reads its options through it.
pub(crate) fn normalize(kind: &str, m: &Map<String, Value>) -> Map<String, Value> {
    let mut m = m.clone();
    for (k, v) in m.iter_mut() {
        if (k == "capacity" || k.ends_with("_ms"))
            && let Some(n) = v.as_str().and_then(|s| s.trim().parse::<u64>().ok())
        {
            *v = Value::from(n);
        }
    }
    let url_keys = [
        "host", "port", "user", "username", "password", "db", "database", "ssl",
    ];
    if !m.contains_key("url")
        && !m.contains_key("connection_string")
        && url_keys.iter().any(|k| m.contains_key(*k))
    {
        let host = opt_str(&m, "host").unwrap_or_else(|| "localhost".into());
        let user = opt_str(&m, "username").or_else(|| opt_str(&m, "user"));
        let password = opt_str(&m, "password");
        let ssl = truthy(&m, "ssl");
        let auth = match (&user, &password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (Some(u), None) => format!("{}@", enc(u)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            (None, None) => String::new(),
        };
        let url = match kind {
            "redis" => {
                let port = opt_str(&m, "port").unwrap_or_else(|| "6379".into());
                let db = opt_str(&m, "db")
                    .map(|d| format!("/{d}"))
                    .unwrap_or_default();
                let scheme = if ssl { "rediss" } else { "redis" };
                Some(format!("{scheme}://{auth}{host}:{port}{db}"))
            }
            "postgres" | "postgresql" => {
                let port = opt_str(&m, "port").unwrap_or_else(|| "5432".into());
                let db = opt_str(&m, "database")
                    .or_else(|| opt_str(&m, "db"))
                    .unwrap_or_else(|| "postgres".into());
                let tls = if ssl { "?sslmode=require" } else { "" };
                Some(format!("postgres://{auth}{host}:{port}/{}{tls}", enc(&db)))
            }
            _ => None,
        };
        if let Some(url) = url {
            for k in url_keys {
                m.remove(k);
            }
            m.insert("url".into(), Value::String(url));
        }
    }
    m
}

#[cfg(test)]
mod url_tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn redis_url_from_parts_with_tls_and_escaped_password() {
        let m = normalize(
            "redis",
            &obj(
                json!({"host": "cache", "port": "6380", "password": "p@ss", "ssl": true, "capacity": "64"}),
            ),
        );
        assert_eq!(m["url"], json!("rediss://:p%40ss@cache:6380"));
        assert_eq!(m["capacity"], json!(64));
        assert!(!m.contains_key("host") && !m.contains_key("ssl"));
        let m = normalize(
            "redis",
            &obj(json!({"host": "127.0.0.1", "ssl": "false", "db": 2})),
        );
        assert_eq!(m["url"], json!("redis://127.0.0.1:6379/2"));
    }

    #[test]
    fn postgres_url_from_parts_and_explicit_url_wins() {
        let m = normalize(
            "postgres",
            &obj(json!({"host": "db", "user": "app", "database": "bots", "ssl": true})),
        );
        assert_eq!(
            m["url"],
            json!("postgres://app@db:5432/bots?sslmode=require")
        );
        let m = normalize(
            "postgres",
            &obj(json!({"url": "postgres://x/y", "host": "ignored"})),
        );
        assert_eq!(m["url"], json!("postgres://x/y"));
        let m = normalize("memory", &obj(json!({"capacity": "10"})));
        assert_eq!(m, obj(json!({"capacity": 10})));
    }
}
