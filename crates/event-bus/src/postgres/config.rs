//! `PostgresEventBusConfig` and its JSON form.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio_postgres::config::SslMode;

use super::channel::{ChannelNaming, sanitize_prefix};
use crate::config::{ConnectionOptions, known_keys, millis_key, reject_unknown, string_key};
use crate::error::EventBusError;

/// What to do with an event whose NOTIFY payload would exceed Postgres's 8000-byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OversizePolicy {
    /// Store the event in the claim table and NOTIFY its id; listeners fetch it. Rows are deleted
    /// after `claim_ttl`. (Python processes of the original cannot read such notifications.)
    #[default]
    ClaimCheck,
    /// Refuse with [`EventBusError::PayloadTooLarge`].
    Reject,
}

/// Options of the Postgres bus.
#[derive(Clone)]
pub struct PostgresEventBusConfig {
    /// A libpq-style URL or key=value string (`postgresql+asyncpg://` is accepted).
    pub url: String,
    /// Channel prefix, sanitised to `[A-Za-z0-9_]` (default `events`).
    pub channel_prefix: String,
    /// Topic → channel naming (default collision-free).
    pub channel_naming: ChannelNaming,
    /// Events over the NOTIFY limit (default claim check).
    pub oversize: OversizePolicy,
    /// Claim-check table (created if missing; default `dynreg_event_claims`).
    pub claim_table: String,
    /// How long claim rows are kept (default 300 s).
    pub claim_ttl: Duration,
    /// Notifications buffered between the LISTEN connection and routing (default 16,384).
    /// Beyond it, notifications are dropped and every subscriber is told to resync (`Lagged`):
    /// a flood of publishers cannot grow this process's memory without bound.
    pub forward_capacity: usize,
    /// The options every server bus shares: queue capacity, reconnect back-off, probe cadence
    /// (of the LISTEN connection), connect timeout and TLS (`ssl` is also on when the URL says
    /// `sslmode=require`, `verify-ca` or `verify-full`).
    pub connection: ConnectionOptions,
}

impl std::fmt::Debug for PostgresEventBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEventBusConfig")
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("channel_naming", &self.channel_naming)
            .field("oversize", &self.oversize)
            .field("claim_table", &self.claim_table)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Removes a password from a URL for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresEventBusConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresEventBusConfig {
            url: url.into(),
            channel_prefix: "events".into(),
            channel_naming: ChannelNaming::CollisionFree,
            oversize: OversizePolicy::ClaimCheck,
            claim_table: "dynreg_event_claims".into(),
            claim_ttl: Duration::from_secs(300),
            forward_capacity: super::listener::FORWARD_CAPACITY,
            connection: ConnectionOptions::default(),
        }
    }

    /// Reads `url` (or `connection_string`, or `host`/`port`/`username`/`password`/`database`/
    /// `ssl` parts; else the `DATABASE_URL` environment variable),
    /// `channel_prefix`, `channel_naming` (`"collision_free"` | `"original"`), `oversize`
    /// (`"claim_check"` | `"reject"`), `claim_table`, `claim_ttl_ms`, and the keys of the shared
    /// [`ConnectionOptions`]: `capacity`, `reconnect_base_ms`, `reconnect_max_ms`,
    /// `probe_interval_ms`, `connect_timeout_ms`, and for TLS `ssl` (`true`/`false`) and
    /// `ca_file` (a PEM file of CA certificates).
    pub fn from_json(map: &Map<String, Value>) -> Result<Self, EventBusError> {
        let map = &crate::config::normalize("postgres", map);
        reject_unknown(
            map,
            &known_keys(&[
                "url",
                "connection_string",
                "channel_prefix",
                "channel_naming",
                "oversize",
                "claim_table",
                "claim_ttl_ms",
            ]),
        )?;
        let url = match (
            string_key(map, "url")?,
            string_key(map, "connection_string")?,
        ) {
            (Some(url), _) | (None, Some(url)) => url,
            (None, None) => {
                std::env::var("DATABASE_URL").map_err(|_| EventBusError::InvalidConfig {
                    key: "url".into(),
                    reason: "no \"url\" or \"connection_string\" given and DATABASE_URL is not set"
                        .into(),
                })?
            }
        };
        let mut config = PostgresEventBusConfig::new(url);
        if let Some(prefix) = string_key(map, "channel_prefix")? {
            config.channel_prefix = prefix;
        }
        if let Some(naming) = string_key(map, "channel_naming")? {
            config.channel_naming = match naming.as_str() {
                "collision_free" => ChannelNaming::CollisionFree,
                "original" => ChannelNaming::Original,
                other => {
                    return Err(EventBusError::InvalidConfig {
                        key: "channel_naming".into(),
                        reason: format!("{other:?} is not \"collision_free\" or \"original\""),
                    });
                }
            };
        }
        if let Some(policy) = string_key(map, "oversize")? {
            config.oversize = match policy.as_str() {
                "claim_check" => OversizePolicy::ClaimCheck,
                "reject" => OversizePolicy::Reject,
                other => {
                    return Err(EventBusError::InvalidConfig {
                        key: "oversize".into(),
                        reason: format!("{other:?} is not \"claim_check\" or \"reject\""),
                    });
                }
            };
        }
        if let Some(table) = string_key(map, "claim_table")? {
            config.claim_table = table;
        }
        if let Some(ttl) = millis_key(map, "claim_ttl_ms")? {
            config.claim_ttl = ttl;
        }
        config.connection = ConnectionOptions::from_json(map)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the prefix and the claim table name.
    pub fn validate(&self) -> Result<(), EventBusError> {
        sanitize_prefix(&self.channel_prefix)?;
        let table_ok = !self.claim_table.is_empty()
            && self.claim_table.len() <= 63
            && self
                .claim_table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.claim_table.starts_with(|c: char| c.is_ascii_digit());
        if !table_ok {
            return Err(EventBusError::InvalidConfig {
                key: "claim_table".into(),
                reason: format!(
                    "{:?} is not a plain lower-case SQL identifier",
                    self.claim_table
                ),
            });
        }
        Ok(())
    }

    /// The tokio-postgres configuration and whether it uses TLS. `sslmode=verify-ca` and
    /// `verify-full` (libpq's names, which tokio-postgres does not parse) mean `require` here:
    /// the certificate and host name are verified in every TLS mode. Without TLS the mode is
    /// `disable` (tokio-postgres's default `prefer` never used TLS with the old `NoTls` either).
    pub(crate) fn pg_config(&self) -> Result<(tokio_postgres::Config, bool), EventBusError> {
        let url = self
            .url
            .replacen("postgresql+asyncpg://", "postgresql://", 1)
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| EventBusError::InvalidConfig {
                key: "url".into(),
                reason: format!("{}: {e}", redact(&self.url)),
            })?;
        let tls = self.connection.tls.ssl || config.get_ssl_mode() == SslMode::Require;
        config.ssl_mode(if tls {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        config.connect_timeout(self.connection.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        Ok((config, tls))
    }
}
