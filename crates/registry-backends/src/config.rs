//! Typed configuration of each registry backend: one struct per backend kind, as
//! [`create_registry_backend`](crate::create_registry_backend) and the backends' `from_config`
//! read it from JSON.
//!
//! | kind | struct | backend |
//! |---|---|---|
//! | `memory` | [`MemoryConfig`] (no options) | `InMemoryBackend` |
//! | `sqlite` | [`SqliteConfig`] | `SqliteBackend` (feature `sqlite`) |
//! | `postgres`, `postgresql` | [`PostgresConfig`] | `PostgresBackend` (feature `postgres`) |
//! | `file` | [`FileConfig`] | `FileBackend` (feature `file`) |
//! | `s3` | [`S3Config`] | `S3Backend` (feature `s3`) |
//!
//! Each struct deserialises from a JSON object (or `null`, meaning every default) with these
//! rules, so that configs written by hand and configs produced by `${VAR}` substitution read
//! the same:
//! - an unknown key is an error naming the key and the nearest valid key (a typo such as
//!   `tabel` is reported as "did you mean `table`");
//! - a key given twice under two accepted spellings (`path` and `database`) is an error;
//! - a `null` value means the key is absent;
//! - integers and booleans may be given as strings (`"5432"`, `"true"`, `"yes"`, `"0"`), and
//!   strings as numbers;
//! - every error is [`RegistryError::InvalidBackendConfig`] naming the backend and the key as
//!   it was written.
//!
//! A struct can also be built in code (`SqliteConfig { path: "reg.db".into(),
//! ..Default::default() }`) and handed to the backend's `with_config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use dynreg_registry_core::{RegistryError, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

/// How long a stored `last_accessed_at` may lag before a touching read writes it again.
pub const DEFAULT_TOUCH_RESOLUTION: Duration = Duration::from_secs(1);

/// Deletion tombstones a persistent registry keeps before compacting the oldest.
pub const DEFAULT_TOMBSTONE_RETENTION: u64 = 100_000;

/// [`DEFAULT_TOUCH_RESOLUTION`] in milliseconds, the unit of the `touch_resolution_ms` keys.
const DEFAULT_TOUCH_RESOLUTION_MS: u64 = DEFAULT_TOUCH_RESOLUTION.as_millis() as u64;

/// The default table of the SQL backends.
const DEFAULT_TABLE: &str = "registrations";

/// The default deadline of a PostgreSQL registry operation, in milliseconds.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// Checks a SQL identifier (table name): `[A-Za-z_][A-Za-z0-9_]*`, at most 48 bytes, so it can
/// be interpolated into statements without any chance of injection.
pub fn validate_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || name.len() > 48 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{name:?} is not a valid identifier: use 1-48 ASCII letters, digits and underscores, not starting with a digit"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The structs
// ---------------------------------------------------------------------------------------------

/// Options of the `memory` registry: there are none (any key is an error).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {}

/// Options of the `sqlite` registry (feature `sqlite`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file (key `path`, or `database`); default `./data/registry.sqlite3`;
    /// `:memory:` for a private in-memory database.
    #[serde(alias = "database", deserialize_with = "lenient::path")]
    pub path: PathBuf,
    /// The table (an identifier, see [`validate_identifier`]); default `registrations`.
    #[serde(deserialize_with = "lenient::string")]
    pub table: String,
    /// A touching `get` writes `last_accessed_at` only when the stored value is at least this
    /// many milliseconds old; default 1000.
    #[serde(deserialize_with = "lenient::u64")]
    pub touch_resolution_ms: u64,
    /// Deletion tombstones kept before the oldest are compacted; default 100,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub tombstone_retention: u64,
    /// Durability of a commit; default [`SqliteSynchronous::Normal`].
    pub synchronous: SqliteSynchronous,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: PathBuf::from("./data/registry.sqlite3"),
            table: DEFAULT_TABLE.to_owned(),
            touch_resolution_ms: DEFAULT_TOUCH_RESOLUTION_MS,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            synchronous: SqliteSynchronous::default(),
        }
    }
}

/// SQLite's `synchronous` setting (key `synchronous`: `normal`, `full` or `off`,
/// case-insensitive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// A committed write survives a crash of the process; a power loss may lose the last
    /// transactions (never corrupts the file).
    #[default]
    Normal,
    /// Also survives a power loss: one fsync per commit.
    Full,
    /// Survives neither.
    Off,
}

impl SqliteSynchronous {
    /// The pragma value (`NORMAL`, `FULL`, `OFF`).
    pub fn as_pragma(self) -> &'static str {
        match self {
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Off => "OFF",
        }
    }
}

impl<'de> Deserialize<'de> for SqliteSynchronous {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = lenient::string(d)?;
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(SqliteSynchronous::Normal),
            "full" => Ok(SqliteSynchronous::Full),
            "off" => Ok(SqliteSynchronous::Off),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not one of normal, full, off"
            ))),
        }
    }
}

/// Options of the `postgres` registry (feature `postgres`). Separate connection keys
/// (`host`, `port`, `database`, `user`, `password`) override the parts of `url`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A `postgres://` URL (key `url`, or `connection_string`, or `dsn`).
    #[serde(
        alias = "connection_string",
        alias = "dsn",
        deserialize_with = "lenient::opt_string"
    )]
    pub url: Option<String>,
    /// The server host; default `localhost` when there is no `url`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub host: Option<String>,
    /// The server port; default 5432 when there is no `url`.
    #[serde(deserialize_with = "lenient::opt_port")]
    pub port: Option<u16>,
    /// The database name.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub database: Option<String>,
    /// The user (key `user`, or `username`).
    #[serde(alias = "username", deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
    /// The password.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub password: Option<String>,
    /// `true`: TLS with the server's certificate chain **and host name** verified
    /// (libpq's `verify-full`); `false`: plaintext (the explicit opt-out). Unset: the URL's
    /// `sslmode` (`require`, `verify-ca` and `verify-full` all mean verified TLS here, as on
    /// the PostgreSQL event bus; `prefer`, `allow` and `disable` as in libpq); with no
    /// `sslmode` either, verified TLS to any host that is not loopback, and TLS when offered
    /// (unverified) to a loopback host.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub ssl: Option<bool>,
    /// A PEM file of the CA certificates to trust (e.g. the RDS bundle), like libpq's
    /// `sslrootcert`; an empty value is unset. Default: the file named by `SSL_CERT_FILE`,
    /// else the Mozilla roots.
    #[serde(deserialize_with = "lenient::opt_path")]
    pub ca_file: Option<PathBuf>,
    /// The table (an identifier, see [`validate_identifier`]); default `registrations`.
    #[serde(deserialize_with = "lenient::string")]
    pub table: String,
    /// Pool size, clamped to 1..=1000; default 10. With 2 or more, writes keep one connection
    /// of their own, so a write pays for no pool checkout.
    #[serde(deserialize_with = "lenient::u64")]
    pub pool_size: u64,
    /// Connections opened by `initialize` and kept open (at most `pool_size`); default 3 (a
    /// write, a read and a touch flush at once), because a new PostgreSQL connection costs tens
    /// of milliseconds, which a write or read would otherwise pay the first time the pool
    /// grows.
    #[serde(deserialize_with = "lenient::u64")]
    pub min_connections: u64,
    /// As [`SqliteConfig::touch_resolution_ms`]; default 1000.
    #[serde(deserialize_with = "lenient::u64")]
    pub touch_resolution_ms: u64,
    /// As [`SqliteConfig::tombstone_retention`]; default 100,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub tombstone_retention: u64,
    /// Default true; false trades the last moments of writes on a server crash for
    /// throughput (commits return before the WAL is flushed; never corrupts).
    #[serde(deserialize_with = "lenient::bool")]
    pub synchronous_commit: bool,
    /// The deadline of every operation, in milliseconds (default 30,000; 0: none): the
    /// server's `statement_timeout`, and on the client the longest wait for an answer, so a
    /// server that stops answering fails operations instead of hanging them.
    #[serde(deserialize_with = "lenient::u64")]
    pub statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            host: None,
            port: None,
            database: None,
            user: None,
            password: None,
            ssl: None,
            ca_file: None,
            table: DEFAULT_TABLE.to_owned(),
            pool_size: 10,
            min_connections: 3,
            touch_resolution_ms: DEFAULT_TOUCH_RESOLUTION_MS,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            synchronous_commit: true,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password, nor the URL, which may hold one.
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("PostgresConfig")
            .field("url", &redacted(&self.url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("ssl", &self.ssl)
            .field("ca_file", &self.ca_file)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("min_connections", &self.min_connections)
            .field("touch_resolution_ms", &self.touch_resolution_ms)
            .field("tombstone_retention", &self.tombstone_retention)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

/// Options of the `file` registry (feature `file`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The directory (required; created by `initialize`).
    #[serde(deserialize_with = "lenient::opt_path")]
    pub path: Option<PathBuf>,
    /// As [`SqliteConfig::touch_resolution_ms`]; default 1000.
    #[serde(deserialize_with = "lenient::u64")]
    pub touch_resolution_ms: u64,
    /// Deletions kept in the change log; cursors before a compacted deletion get
    /// `ChangeFeed::Expired`. Default 100,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub tombstone_retention: u64,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: None,
            touch_resolution_ms: DEFAULT_TOUCH_RESOLUTION_MS,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }
}

/// Options of the `s3` registry (feature `s3`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (required).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub bucket: Option<String>,
    /// The folder of this registry in the bucket; default `registry/`.
    #[serde(deserialize_with = "lenient::string")]
    pub prefix: String,
    /// The region (key `region`, or `region_name`); default `AWS_REGION` from the
    /// environment, else `us-east-1`.
    #[serde(alias = "region_name", deserialize_with = "lenient::opt_string")]
    pub region: Option<String>,
    /// An S3-compatible endpoint, `http://` or `https://` (key `endpoint_url`, or
    /// `endpoint`); requests are then path-style.
    #[serde(alias = "endpoint", deserialize_with = "lenient::opt_string")]
    pub endpoint_url: Option<String>,
    /// The access key id (key `aws_access_key_id`, or `access_key_id`); default: the standard
    /// AWS credential chain.
    #[serde(
        rename = "aws_access_key_id",
        alias = "access_key_id",
        deserialize_with = "lenient::opt_string"
    )]
    pub access_key_id: Option<String>,
    /// The secret access key (key `aws_secret_access_key`, or `secret_access_key`). Never
    /// printed.
    #[serde(
        rename = "aws_secret_access_key",
        alias = "secret_access_key",
        deserialize_with = "lenient::opt_string"
    )]
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials (key `aws_session_token`, or
    /// `session_token`). Never printed.
    #[serde(
        rename = "aws_session_token",
        alias = "session_token",
        deserialize_with = "lenient::opt_string"
    )]
    pub session_token: Option<String>,
    /// Whether plain HTTP is allowed; default true when the endpoint is `http://`.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub allow_http: Option<bool>,
    /// As [`SqliteConfig::touch_resolution_ms`]; default 1000.
    #[serde(deserialize_with = "lenient::u64")]
    pub touch_resolution_ms: u64,
    /// Log records kept (at least 1); older cursors get `ChangeFeed::Expired`. Default
    /// 100,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub log_retention: u64,
    /// The deadline of one S3 request, from connecting to the end of its body; default 30,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub timeout_ms: u64,
    /// The deadline of connecting; default 5,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub connect_timeout_ms: u64,
    /// Retries of a failed request (with back-off); default 10.
    #[serde(deserialize_with = "lenient::u64")]
    pub max_retries: u64,
    /// No retry starts after this long since the first attempt; default 180,000.
    #[serde(deserialize_with = "lenient::u64")]
    pub retry_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: None,
            prefix: "registry/".to_owned(),
            region: None,
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: None,
            touch_resolution_ms: DEFAULT_TOUCH_RESOLUTION_MS,
            log_retention: DEFAULT_TOMBSTONE_RETENTION,
            timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            max_retries: 10,
            retry_timeout_ms: 180_000,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("touch_resolution_ms", &self.touch_resolution_ms)
            .field("log_retention", &self.log_retention)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_ms", &self.retry_timeout_ms)
            .finish()
    }
}

/// Options of the `http` registry (feature `http`): the original's keys plus retries.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The API base, e.g. `http://127.0.0.1:8080/api/v1` (required; a trailing `/` is
    /// dropped).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub base_url: Option<String>,
    /// A bearer token, sent as `Bearer <token>` on [`HttpConfig::auth_header`]. Never printed.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub auth_token: Option<String>,
    /// The header carrying the token; default `Authorization`.
    #[serde(deserialize_with = "lenient::string")]
    pub auth_header: String,
    /// The deadline of one request, in seconds; default 30.
    #[serde(deserialize_with = "lenient::f64")]
    pub timeout: f64,
    /// The deadline of establishing a connection, in seconds; default 5.
    #[serde(deserialize_with = "lenient::f64")]
    pub connect_timeout: f64,
    /// Refuse writes locally, before any request; default false.
    #[serde(deserialize_with = "lenient::bool")]
    pub read_only: bool,
    /// Verify the server's TLS certificate and host name; default true.
    #[serde(deserialize_with = "lenient::bool")]
    pub verify_ssl: bool,
    /// Retries of an idempotent request (`GET`, `PUT`, `DELETE`) after a connection error or
    /// a `502`/`503`/`504`, with jittered exponential back-off; default 3.
    #[serde(deserialize_with = "lenient::u64")]
    pub retries: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            base_url: None,
            auth_token: None,
            auth_header: "Authorization".to_owned(),
            timeout: 30.0,
            connect_timeout: 5.0,
            read_only: false,
            verify_ssl: true,
            retries: 3,
        }
    }
}

/// `url` with the user info of its authority (which may hold a password) shown as `***`, for
/// `Debug` and errors: `http://user:pw@host/x` → `http://***@host/x`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base_url = self.base_url.as_deref().map(redact_url);
        f.debug_struct("HttpConfig")
            .field("base_url", &base_url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("auth_header", &self.auth_header)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_only", &self.read_only)
            .field("verify_ssl", &self.verify_ssl)
            .field("retries", &self.retries)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a struct from JSON
// ---------------------------------------------------------------------------------------------

/// A backend's config struct: its kind (for errors) and its alternative key spellings.
pub(crate) trait BackendOptions: for<'de> Deserialize<'de> {
    /// The backend kind named in errors.
    const BACKEND: &'static str;
    /// `(alias, key)`: `alias` is accepted for `key` (the `#[serde(alias)]`es of the struct).
    const ALIASES: &'static [(&'static str, &'static str)] = &[];
}

impl BackendOptions for MemoryConfig {
    const BACKEND: &'static str = "memory";
}

impl BackendOptions for SqliteConfig {
    const BACKEND: &'static str = "sqlite";
    const ALIASES: &'static [(&'static str, &'static str)] = &[("database", "path")];
}

impl BackendOptions for PostgresConfig {
    const BACKEND: &'static str = "postgres";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("connection_string", "url"),
        ("dsn", "url"),
        ("username", "user"),
    ];
}

impl BackendOptions for FileConfig {
    const BACKEND: &'static str = "file";
}

impl BackendOptions for HttpConfig {
    const BACKEND: &'static str = "http";
}

impl BackendOptions for S3Config {
    const BACKEND: &'static str = "s3";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("endpoint", "endpoint_url"),
        ("region_name", "region"),
        ("access_key_id", "aws_access_key_id"),
        ("secret_access_key", "aws_secret_access_key"),
        ("session_token", "aws_session_token"),
    ];
}

macro_rules! from_json {
    ($($t:ty),*) => {$(
        impl $t {
            /// Reads the options from JSON (an object, or `null` for every default); see the
            /// [module docs](self) for the rules.
            pub fn from_json(config: &Value) -> Result<Self> {
                Ok(parse::<Self>(config)?.0)
            }
        }
    )*};
}

from_json!(
    MemoryConfig,
    SqliteConfig,
    PostgresConfig,
    FileConfig,
    S3Config,
    HttpConfig
);

/// The keys a config was written with where they differ from the struct's own names, so that
/// an error found after reading (by the backend's `with_config`) names the key as written.
#[derive(Debug, Default)]
pub(crate) struct Spelling(BTreeMap<&'static str, String>);

impl Spelling {
    /// Renames the key of an [`RegistryError::InvalidBackendConfig`] to its written spelling.
    pub(crate) fn rename(&self, err: RegistryError) -> RegistryError {
        match err {
            RegistryError::InvalidBackendConfig {
                backend,
                key,
                reason,
            } => RegistryError::InvalidBackendConfig {
                backend,
                key: self.0.get(key.as_str()).cloned().unwrap_or(key),
                reason,
            },
            other => other,
        }
    }
}

/// Reads `T` from `config`, then builds with `build`; every error names the key as written.
pub(crate) fn build_from_json<T: BackendOptions, B>(
    config: &Value,
    build: impl FnOnce(T) -> Result<B>,
) -> Result<B> {
    let (options, spelling) = parse::<T>(config)?;
    build(options).map_err(|e| spelling.rename(e))
}

/// An invalid-config error of `backend` about `key`.
pub(crate) fn invalid(
    backend: &'static str,
    key: &str,
    reason: impl Into<String>,
) -> RegistryError {
    RegistryError::InvalidBackendConfig {
        backend,
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn parse<T: BackendOptions>(config: &Value) -> Result<(T, Spelling)> {
    let map = match config {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        other => {
            return Err(invalid(
                T::BACKEND,
                "<root>",
                format!(
                    "expected an object, got {}",
                    match other {
                        Value::Array(_) => "a list",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        _ => "a boolean",
                    }
                ),
            ));
        }
    };
    let names = field_names::<T>();
    let canonical: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !T::ALIASES.iter().any(|(alias, _)| alias == n))
        .collect();
    let mut spelling = Spelling::default();
    for key in map.keys() {
        if !names.contains(&key.as_str()) {
            let reason = match nearest(key, &canonical) {
                Some(near) => format!(
                    "unknown key; did you mean {near:?}? (valid keys: {})",
                    described(&canonical, T::ALIASES)
                ),
                None => format!("unknown key; the {} registry takes no options", T::BACKEND),
            };
            return Err(invalid(T::BACKEND, key, reason));
        }
        let given = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        if let Some((_, target)) = T::ALIASES.iter().find(|(alias, _)| alias == key) {
            if !given(key) {
                continue;
            }
            if let Some(other) = spellings_of(target, T::ALIASES).find(|s| *s != key && given(s)) {
                return Err(invalid(
                    T::BACKEND,
                    key,
                    format!(
                        "is another spelling of {target:?}, which is also given as {other:?}; give one"
                    ),
                ));
            }
            spelling.0.insert(target, key.clone());
        }
    }
    // `null` means absent.
    let map: Map<String, Value> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let mut current = String::new();
    let result = T::deserialize(serde::de::value::MapAccessDeserializer::new(Tracked {
        entries: map.into_iter(),
        value: None,
        current: &mut current,
    }));
    match result {
        Ok(options) => Ok((options, spelling)),
        Err(e) => Err(invalid(T::BACKEND, &current, e.to_string())),
    }
}

/// `key` and its aliases.
fn spellings_of<'a>(
    key: &'a str,
    aliases: &'a [(&'static str, &'static str)],
) -> impl Iterator<Item = &'a str> {
    std::iter::once(key).chain(
        aliases
            .iter()
            .filter(move |(_, target)| *target == key)
            .map(|(alias, _)| *alias),
    )
}

/// `a, b (or c), d` for the keys `a`, `b`, `d` where `c` is an alias of `b`.
fn described(keys: &[&str], aliases: &[(&'static str, &'static str)]) -> String {
    keys.iter()
        .map(|k| {
            let others: Vec<&str> = spellings_of(k, aliases).skip(1).collect();
            if others.is_empty() {
                (*k).to_owned()
            } else {
                format!("{k} (or {})", others.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

use dynreg_resource_resolver::keys::nearest_key as nearest;

/// Every key `T` accepts (its fields and their aliases), as its derived `Deserialize` declares
/// them: the list is taken from the struct itself so it can never drift from it.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only records the field list a struct's `Deserialize` asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        _visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A map of config entries that remembers the key being read, so that an error from a value
/// can name its key.
struct Tracked<'a> {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
    current: &'a mut String,
}

impl<'de> serde::de::MapAccess<'de> for Tracked<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, Self::Error> {
        use serde::de::IntoDeserializer;
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.current.clone_from(&key);
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        seed.deserialize(self.value.take().unwrap_or(Value::Null))
    }
}

/// Field deserializers that accept what `${VAR}` substitution produces: numbers and booleans
/// as strings, strings as numbers. Their messages say what was expected and what was found.
mod lenient {
    use std::path::PathBuf;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(D::Error::custom(format!(
                "expected a string, got {}",
                json_type(&other)
            ))),
        }
    }

    use dynreg_registry_core::backend::json_type_name as json_type;

    pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        string(d).map(Some)
    }

    pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        string(d).map(PathBuf::from)
    }

    pub(super) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        path(d).map(Some)
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                D::Error::custom("expected a non-negative integer, got another number")
            }),
            Value::String(s) => s.trim().parse().map_err(|_| {
                D::Error::custom("expected a non-negative integer, got a string that is not one")
            }),
            other => Err(D::Error::custom(format!(
                "expected an integer, got {}",
                json_type(&other)
            ))),
        }
    }

    pub(super) fn opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        let p = u64(d)?;
        u16::try_from(p)
            .map(Some)
            .map_err(|_| D::Error::custom("a port is at most 65535"))
    }

    pub(super) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                _ => Err(D::Error::custom(
                    "expected a boolean, got a string that is not one",
                )),
            },
            other => Err(D::Error::custom(format!(
                "expected a boolean, got {}",
                json_type(&other)
            ))),
        }
    }

    pub(super) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let v = match Value::deserialize(d)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            other => {
                return Err(D::Error::custom(format!(
                    "expected a number, got {}",
                    json_type(&other)
                )));
            }
        };
        v.filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| D::Error::custom("expected a positive number of seconds"))
    }

    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        bool(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_of<T: BackendOptions + fmt::Debug>(v: Value) -> (String, String) {
        match parse::<T>(&v).map(|(t, _)| t) {
            Err(RegistryError::InvalidBackendConfig { key, reason, .. }) => (key, reason),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(redact_url("http://u:pw@h:1/a@b"), "http://***@h:1/a@b");
        assert_eq!(redact_url("https://h/x?q=a@b"), "https://h/x?q=a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn identifiers() {
        assert!(validate_identifier("1abc").is_err());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("bots; DROP TABLE x").is_err());
        assert!(validate_identifier("bot_configs").is_ok());
    }

    #[test]
    fn defaults_from_null_and_empty() {
        assert_eq!(
            SqliteConfig::from_json(&Value::Null).unwrap(),
            SqliteConfig::default()
        );
        assert_eq!(
            S3Config::from_json(&json!({})).unwrap(),
            S3Config::default()
        );
        assert_eq!(
            MemoryConfig::from_json(&json!({})).unwrap(),
            MemoryConfig {}
        );
        let (key, reason) = err_of::<SqliteConfig>(json!([1]));
        assert_eq!(key, "<root>");
        assert!(reason.contains("expected an object"), "{reason}");
    }

    #[test]
    fn a_typo_names_the_key_and_the_nearest_valid_key() {
        let err = SqliteConfig::from_json(&json!({"path": "x", "tabel": "bots"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"tabel\"") && err.contains("\"table\""),
            "{err}"
        );
        assert!(err.contains("sqlite"), "{err}");
        let (key, reason) = err_of::<PostgresConfig>(json!({"pasword": "x"}));
        assert_eq!(key, "pasword");
        assert!(reason.contains("did you mean \"password\""), "{reason}");
        let (key, reason) = err_of::<S3Config>(json!({"bucket": "b", "Region": "x"}));
        assert_eq!(key, "Region");
        assert!(reason.contains("did you mean \"region\""), "{reason}");
        let (key, reason) = err_of::<FileConfig>(json!({"path": "/x", "touch_resolution": 5}));
        assert_eq!(key, "touch_resolution");
        assert!(
            reason.contains("did you mean \"touch_resolution_ms\""),
            "{reason}"
        );
        let (key, reason) = err_of::<MemoryConfig>(json!({"path": "/x"}));
        assert_eq!(key, "path");
        assert!(reason.contains("takes no options"), "{reason}");
    }

    #[test]
    fn aliases_are_accepted_once() {
        let c = SqliteConfig::from_json(&json!({"database": "/tmp/x.db"})).unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/x.db"));
        let c =
            PostgresConfig::from_json(&json!({"dsn": "postgres://h/db", "username": "u"})).unwrap();
        assert_eq!(c.url.as_deref(), Some("postgres://h/db"));
        assert_eq!(c.user.as_deref(), Some("u"));
        let c = S3Config::from_json(&json!({"bucket": "b", "endpoint": "http://h:9000"})).unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("http://h:9000"));
        let (key, reason) = err_of::<SqliteConfig>(json!({"path": "a", "database": "b"}));
        assert_eq!(key, "database");
        assert!(reason.contains("\"path\""), "{reason}");
        let (key, _) = err_of::<PostgresConfig>(json!({"dsn": "a", "connection_string": "b"}));
        assert!(key == "dsn" || key == "connection_string", "{key}");
    }

    #[test]
    fn values_as_substitution_writes_them() {
        let c = PostgresConfig::from_json(&json!({
            "port": "5433", "pool_size": " 4 ", "ssl": "yes", "synchronous_commit": "0",
            "password": 1234, "host": null, "touch_resolution_ms": 250
        }))
        .unwrap();
        assert_eq!(c.port, Some(5433));
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.ssl, Some(true));
        assert!(!c.synchronous_commit);
        assert_eq!(c.password.as_deref(), Some("1234"));
        assert_eq!(c.host, None);
        assert_eq!(c.touch_resolution_ms, 250);
        assert!(!format!("{c:?}").contains("1234"), "{c:?}");
        let c =
            SqliteConfig::from_json(&json!({"synchronous": "FULL", "tombstone_retention": "12"}))
                .unwrap();
        assert_eq!(c.synchronous, SqliteSynchronous::Full);
        assert_eq!(c.tombstone_retention, 12);
    }

    #[test]
    fn bad_values_name_their_key_as_written() {
        let (key, reason) =
            err_of::<FileConfig>(json!({"path": "/x", "touch_resolution_ms": "soon"}));
        assert_eq!(key, "touch_resolution_ms");
        // The key is named; the value is not shown (it could be a secret under a wrong key).
        assert!(
            reason.contains("non-negative integer") && !reason.contains("soon"),
            "{reason}"
        );
        let (key, reason) = err_of::<PostgresConfig>(json!({"port": 70000}));
        assert_eq!(key, "port");
        assert!(reason.contains("at most 65535"), "{reason}");
        let (key, reason) = err_of::<PostgresConfig>(json!({"password": ["s3cr3t-pw"]}));
        assert_eq!(key, "password");
        assert!(!reason.contains("s3cr3t"), "{reason}");
        let (key, reason) = err_of::<PostgresConfig>(json!({"username": ["u"]}));
        assert_eq!(key, "username");
        assert!(reason.contains("expected a string"), "{reason}");
        let (key, reason) = err_of::<SqliteConfig>(json!({"synchronous": "sometimes"}));
        assert_eq!(key, "synchronous");
        assert!(reason.contains("normal, full, off"), "{reason}");
        let (key, _) = err_of::<S3Config>(json!({"allow_http": "maybe"}));
        assert_eq!(key, "allow_http");
    }

    #[test]
    fn errors_after_reading_name_the_key_as_written() {
        let err = build_from_json::<S3Config, ()>(&json!({"endpoint": "x"}), |_| {
            Err(invalid("s3", "endpoint_url", "bad"))
        })
        .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidBackendConfig { key, .. } if key == "endpoint"),
            "{err}"
        );
        let err = build_from_json::<S3Config, ()>(&json!({"endpoint_url": "x"}), |_| {
            Err(invalid("s3", "endpoint_url", "bad"))
        })
        .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidBackendConfig { key, .. } if key == "endpoint_url"),
            "{err}"
        );
    }

    #[test]
    fn the_key_lists_come_from_the_structs() {
        let names = field_names::<SqliteConfig>();
        for k in [
            "path",
            "database",
            "table",
            "touch_resolution_ms",
            "tombstone_retention",
            "synchronous",
        ] {
            assert!(names.contains(&k), "{k} missing from {names:?}");
        }
        assert!(field_names::<MemoryConfig>().is_empty());
        // Every declared alias is one the struct accepts, for a key it has.
        fn check<T: BackendOptions>() {
            let names = field_names::<T>();
            for (alias, key) in T::ALIASES {
                assert!(
                    names.contains(alias) && names.contains(key),
                    "{alias} -> {key}"
                );
            }
        }
        check::<SqliteConfig>();
        check::<PostgresConfig>();
        check::<FileConfig>();
        check::<S3Config>();
    }
}
