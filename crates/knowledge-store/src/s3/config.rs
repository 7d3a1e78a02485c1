//! `S3Config`, the original's `from_config` keys, and [`ChangeDetectionMode`].

use std::fmt;
use std::str::FromStr;

use crate::error::{KnowledgeError, Result};
use crate::snapshots::DEFAULT_SNAPSHOT_RETENTION;

/// How the S3 backend resolves a version handed out by `get_checksum` when diffing later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChangeDetectionMode {
    /// A `{path: checksum}` object per handed-out version under `_snapshots/` (the default).
    #[default]
    Snapshot,
    /// No snapshot objects: the bucket's object versions of `_metadata.json` are the history.
    /// The index document keeps `identity → VersionId` of its last versions, so a diff is two
    /// GETs. Needs bucket versioning; without it (or for an identity not in the index) a
    /// version is `InvalidVersion`, which `has_changes_since` reports as "changed".
    S3Versioning,
}

impl ChangeDetectionMode {
    /// The configuration string (`"snapshot"`, `"s3_versioning"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::S3Versioning => "s3_versioning",
        }
    }
}

impl fmt::Display for ChangeDetectionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeDetectionMode {
    type Err = KnowledgeError;

    /// `"snapshot"` or `"s3_versioning"`; anything else is refused, naming the value.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "snapshot" => Ok(Self::Snapshot),
            "s3_versioning" => Ok(Self::S3Versioning),
            other => Err(KnowledgeError::Config {
                kind: "s3",
                field: "change_detection_mode",
                reason: format!(
                    "unknown change_detection_mode {other:?}; expected \"snapshot\" or \"s3_versioning\""
                ),
            }),
        }
    }
}

/// Configuration of the S3 backend (the original's `from_config` keys).
#[derive(Clone, Default)]
pub struct S3Config {
    /// Bucket name (required).
    pub bucket: String,
    /// Key prefix; normalised to end in `/` (default `knowledge/`).
    pub prefix: String,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:5000`).
    pub endpoint_url: Option<String>,
    /// Access key id.
    pub aws_access_key_id: Option<String>,
    /// Secret access key.
    pub aws_secret_access_key: Option<String>,
    /// Session token.
    pub aws_session_token: Option<String>,
    /// Snapshots (or, in `s3_versioning` mode, indexed versions) kept per knowledge base.
    pub snapshot_retention: usize,
    /// How versions handed out by `get_checksum` are resolved later.
    pub change_detection_mode: ChangeDetectionMode,
    /// The deadline of one S3 request, from connecting to the end of its body, in ms (key
    /// `timeout_ms`; default 30,000).
    pub timeout_ms: Option<u64>,
    /// The deadline of connecting, in ms (key `connect_timeout_ms`; default 5,000).
    pub connect_timeout_ms: Option<u64>,
    /// Retries of a failed request, with back-off (key `max_retries`; default 10).
    pub max_retries: Option<u64>,
    /// No retry starts after this long since the first attempt, in ms (key
    /// `retry_timeout_ms`; default 180,000).
    pub retry_timeout_ms: Option<u64>,
}

impl S3Config {
    /// A config for `bucket` with the default prefix.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: "knowledge/".into(),
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            ..Self::default()
        }
    }

    /// Reads `{"bucket", "prefix", "region"|"region_name", "endpoint_url",
    /// "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "snapshot_retention",
    /// "change_detection_mode", "timeout_ms", "connect_timeout_ms", "max_retries",
    /// "retry_timeout_ms"}`.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        crate::factory::check_keys(
            "s3",
            v,
            &[
                "bucket",
                "prefix",
                "region",
                "region_name",
                "endpoint_url",
                "aws_access_key_id",
                "aws_secret_access_key",
                "aws_session_token",
                "access_key_id",
                "secret_access_key",
                "session_token",
                "endpoint",
                "snapshot_retention",
                "change_detection_mode",
                "timeout_ms",
                "connect_timeout_ms",
                "max_retries",
                "retry_timeout_ms",
            ],
        )?;
        let s = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let bucket = s("bucket")
            .filter(|b| !b.is_empty())
            .ok_or(KnowledgeError::Config {
                kind: "s3",
                field: "bucket",
                reason: "required".into(),
            })?;
        let mut cfg = Self::new(bucket);
        if let Some(p) = s("prefix") {
            cfg.prefix = p;
        }
        cfg.region = s("region").or_else(|| s("region_name"));
        // One set of key names with the registry's S3 backend (the original's `aws_*` names);
        // the registry's former spellings are accepted.
        cfg.endpoint_url = s("endpoint_url").or_else(|| s("endpoint"));
        cfg.aws_access_key_id = s("aws_access_key_id").or_else(|| s("access_key_id"));
        cfg.aws_secret_access_key = s("aws_secret_access_key").or_else(|| s("secret_access_key"));
        cfg.aws_session_token = s("aws_session_token").or_else(|| s("session_token"));
        if let Some(n) = v.get("snapshot_retention") {
            cfg.snapshot_retention =
                n.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| KnowledgeError::Config {
                        kind: "s3",
                        field: "snapshot_retention",
                        reason: format!("expected a positive integer, got {n}"),
                    })? as usize;
        }
        for (key, slot) in [
            ("timeout_ms", &mut cfg.timeout_ms),
            ("connect_timeout_ms", &mut cfg.connect_timeout_ms),
            ("max_retries", &mut cfg.max_retries),
            ("retry_timeout_ms", &mut cfg.retry_timeout_ms),
        ] {
            if let Some(n) = v.get(key) {
                *slot = Some(n.as_u64().ok_or_else(|| KnowledgeError::Config {
                    kind: "s3",
                    field: key,
                    reason: format!("expected a non-negative integer, got {n}"),
                })?);
            }
        }
        if let Some(m) = v.get("change_detection_mode") {
            cfg.change_detection_mode = match m.as_str() {
                Some(s) => s.parse()?,
                None => {
                    return Err(KnowledgeError::Config {
                        kind: "s3",
                        field: "change_detection_mode",
                        reason: format!("expected \"snapshot\" or \"s3_versioning\", got {m}"),
                    });
                }
            };
        }
        Ok(cfg)
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field(
                "aws_secret_access_key",
                &redacted(&self.aws_secret_access_key),
            )
            .field("aws_session_token", &redacted(&self.aws_session_token))
            .field("snapshot_retention", &self.snapshot_retention)
            .field("change_detection_mode", &self.change_detection_mode)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_ms", &self.retry_timeout_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_from_config_and_checked() {
        let cfg = S3Config::from_json(&serde_json::json!({"bucket": "b"})).unwrap();
        assert_eq!((cfg.timeout_ms, cfg.max_retries), (None, None));
        let cfg = S3Config::from_json(&serde_json::json!({
            "bucket": "b", "timeout_ms": 500, "connect_timeout_ms": 200, "max_retries": 1,
            "retry_timeout_ms": 3000
        }))
        .unwrap();
        assert_eq!(
            (
                cfg.timeout_ms,
                cfg.connect_timeout_ms,
                cfg.max_retries,
                cfg.retry_timeout_ms
            ),
            (Some(500), Some(200), Some(1), Some(3000))
        );
        let err = S3Config::from_json(&serde_json::json!({"bucket": "b", "timeout_ms": "soon"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout_ms"), "{err}");
    }

    #[test]
    fn the_mode_is_read_from_config_and_unknown_modes_are_refused() {
        let cfg = S3Config::from_json(&serde_json::json!({"bucket": "b"})).unwrap();
        assert_eq!(cfg.change_detection_mode, ChangeDetectionMode::Snapshot);
        let cfg = S3Config::from_json(
            &serde_json::json!({"bucket": "b", "change_detection_mode": "s3_versioning"}),
        )
        .unwrap();
        assert_eq!(cfg.change_detection_mode, ChangeDetectionMode::S3Versioning);
        for bad in [serde_json::json!("bogus"), serde_json::json!(3)] {
            let err = S3Config::from_json(
                &serde_json::json!({"bucket": "b", "change_detection_mode": bad}),
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("change_detection_mode"), "{msg}");
            assert!(
                msg.contains(&bad.to_string().trim_matches('"').to_owned()),
                "{msg}"
            );
        }
        assert_eq!(
            "s3_versioning"
                .parse::<ChangeDetectionMode>()
                .unwrap()
                .to_string(),
            "s3_versioning"
        );
    }
}
