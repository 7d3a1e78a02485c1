//! Reading bus options out of a JSON configuration map, with errors naming the key: the typed
//! key readers, [`normalize`] (the one place a bus URL is built from parts) and, for the server
//! buses, [`ConnectionOptions`] — the options the Postgres and Redis buses share, read by one
//! [`ConnectionOptions::from_json`] with one set of key names and defaults.
//!
//! Invariants: every error is [`EventBusError::InvalidConfig`] naming the offending key; a key
//! that is absent or `null` means the default; a shared option has the same key, default and
//! meaning on every server bus.

#[cfg(any(feature = "postgres", feature = "redis"))]
use std::path::PathBuf;
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

/// TLS options of a server bus (keys `ssl` and `ca_file`).
#[cfg(any(feature = "postgres", feature = "redis"))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Require TLS (default false). The URL can turn it on too: Redis `rediss://`, Postgres
    /// `sslmode=require` (or libpq's `verify-ca` / `verify-full`). The server's certificate and
    /// host name (DNS name or IP address) are always verified.
    pub ssl: bool,
    /// PEM file of the CA certificates to trust instead of the platform's trust store (e.g. the
    /// RDS CA bundle or a private CA), like libpq's `sslrootcert`.
    pub ca_file: Option<PathBuf>,
}

/// The options every server bus (Postgres, Redis) has, with the same keys and defaults:
/// embedded as `connection` in `postgres::PostgresEventBusConfig` and
/// `redis::RedisEventBusConfig`. URL and channel prefix are not here: their defaults and
/// meaning differ per transport (Postgres needs a URL and sanitises the prefix; Redis defaults
/// to `redis://localhost:6379` and uses the prefix verbatim, as the original).
#[cfg(any(feature = "postgres", feature = "redis"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Per-subscription queue capacity (key `capacity`; default
    /// [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY)).
    pub capacity: usize,
    /// First reconnect delay (key `reconnect_base_ms`; default 250 ms).
    pub reconnect_base: Duration,
    /// Longest reconnect delay (key `reconnect_max_ms`; default 30 s).
    pub reconnect_max: Duration,
    /// Liveness probe cadence (key `probe_interval_ms`; default 2 s, as the original) of the
    /// listening connection, and on Redis of the publishing connection too (a Postgres
    /// publishing connection is watched through its driver task instead).
    pub probe_interval: Duration,
    /// Connect timeout (key `connect_timeout_ms`; default 10 s, as the original); also the
    /// deadline of a publish (on Redis the response timeout of the publishing connection; on
    /// PostgreSQL a publish without an answer in time fails and its connection is replaced).
    pub connect_timeout: Duration,
    /// TLS (keys `ssl` and `ca_file`).
    pub tls: TlsOptions,
}

#[cfg(any(feature = "postgres", feature = "redis"))]
impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            capacity: crate::subscription::DEFAULT_CAPACITY,
            reconnect_base: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            tls: TlsOptions::default(),
        }
    }
}

#[cfg(any(feature = "postgres", feature = "redis"))]
impl ConnectionOptions {
    /// The configuration keys these options are read from, in the order they are read.
    pub const KEYS: &'static [&'static str] = &[
        "capacity",
        "reconnect_base_ms",
        "reconnect_max_ms",
        "probe_interval_ms",
        "connect_timeout_ms",
        "ssl",
        "ca_file",
    ];

    /// Reads [`ConnectionOptions::KEYS`] from a normalised map (see [`normalize`]); absent keys
    /// keep their defaults. Unknown keys are the caller's to reject.
    pub(crate) fn from_json(map: &Map<String, Value>) -> Result<Self, EventBusError> {
        let mut options = ConnectionOptions::default();
        if let Some(capacity) = usize_key(map, "capacity")? {
            options.capacity = capacity;
        }
        if let Some(d) = millis_key(map, "reconnect_base_ms")? {
            options.reconnect_base = d;
        }
        if let Some(d) = millis_key(map, "reconnect_max_ms")? {
            options.reconnect_max = d;
        }
        if let Some(d) = millis_key(map, "probe_interval_ms")? {
            options.probe_interval = d;
        }
        if let Some(d) = millis_key(map, "connect_timeout_ms")? {
            options.connect_timeout = d;
        }
        let (ssl, ca_file) = crate::tls::options_from_json(map)?;
        options.tls = TlsOptions {
            ssl: ssl.unwrap_or(false),
            ca_file,
        };
        Ok(options)
    }

    /// A fresh reconnect back-off from `reconnect_base` and `reconnect_max`.
    pub(crate) fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.reconnect_base, self.reconnect_max)
    }
}

/// The keys a server bus accepts: its own `specific` keys, then [`ConnectionOptions::KEYS`].
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn known_keys<'a>(specific: &[&'a str]) -> Vec<&'a str> {
    specific
        .iter()
        .chain(ConnectionOptions::KEYS)
        .copied()
        .collect()
}

/// Rejects keys a backend does not understand (typos should not be silently ignored): the
/// error names the key and the nearest known option.
pub(crate) fn reject_unknown(
    map: &Map<String, Value>,
    known: &[&str],
) -> Result<(), EventBusError> {
    for key in map.keys() {
        if key != "backend" && !known.contains(&key.as_str()) {
            return Err(bad(
                key,
                dynreg_resource_resolver::keys::unknown_key(key, known),
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

#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
mod connection_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_keys() {
        let map = |v: Value| v.as_object().unwrap().clone();
        let defaults = ConnectionOptions::from_json(&map(json!({}))).unwrap();
        assert_eq!(defaults, ConnectionOptions::default());
        assert_eq!(defaults.capacity, crate::DEFAULT_CAPACITY);
        assert_eq!(defaults.reconnect_base, Duration::from_millis(250));
        assert_eq!(defaults.reconnect_max, Duration::from_secs(30));
        assert_eq!(defaults.probe_interval, Duration::from_secs(2));
        assert_eq!(defaults.connect_timeout, Duration::from_secs(10));
        assert_eq!(defaults.tls, TlsOptions::default());
        let read = ConnectionOptions::from_json(&normalize(
            "redis",
            &map(json!({
                "url": "redis://x", "capacity": "7", "reconnect_base_ms": 1,
                "reconnect_max_ms": 2, "probe_interval_ms": 3, "connect_timeout_ms": "4",
                "ssl": "true", "ca_file": "/ca.pem",
            })),
        ))
        .unwrap();
        assert_eq!(
            read,
            ConnectionOptions {
                capacity: 7,
                reconnect_base: Duration::from_millis(1),
                reconnect_max: Duration::from_millis(2),
                probe_interval: Duration::from_millis(3),
                connect_timeout: Duration::from_millis(4),
                tls: TlsOptions {
                    ssl: true,
                    ca_file: Some(PathBuf::from("/ca.pem")),
                },
            }
        );
        let err = ConnectionOptions::from_json(&map(json!({"capacity": 0}))).unwrap_err();
        assert!(matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "capacity"));
    }
}

#[cfg(test)]
mod key_tests {
    use serde_json::json;

    #[test]
    fn an_unknown_option_names_the_nearest_valid_one() {
        let map = json!({"backend": "memory", "capacty": 5});
        let err = super::reject_unknown(map.as_object().unwrap(), &["capacity"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("did you mean \"capacity\""), "{msg}");
    }
}
