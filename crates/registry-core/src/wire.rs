//! The HTTP wire vocabulary shared by the registry server (`dynreg-server`) and the HTTP
//! registry backend (`dynreg-registry-backends`, feature `http`): the headers dynreg adds to
//! the original's REST contract and the JSON of the change feed. One definition, so the two
//! ends cannot drift apart.
//!
//! The original's contract is unchanged by these additions: every extra is a response header
//! a client may ignore, a request header an old server ignores, or a query parameter
//! (`since`, `watch`, `timeout`) on a route the original answers without it.

use serde_json::{Map, Value, json};

use crate::changes::{Change, ChangeFeed};
use crate::model::Registration;

/// Response header: the registration's revision (on item responses) or the registry's
/// current revision (on lists and feeds). Its presence marks a dynreg server.
pub const REVISION_HEADER: &str = "dynreg-revision";
/// Response header on a register or deactivate: `created`, `updated`, `unchanged` or `absent`.
pub const EFFECT_HEADER: &str = "dynreg-write-effect";
/// Response header on a bulk delete: how many registrations were removed.
pub const REMOVED_HEADER: &str = "dynreg-removed";
/// Request header: `false` makes a `GET` of one registration a non-touching read (a peek).
pub const TOUCH_HEADER: &str = "dynreg-touch";

/// The strong entity tag of a registration at `revision`: `"<revision>"`. It names the
/// registration's content (config, status, metadata); a touch, which only moves
/// `last_accessed_at`, keeps it.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// Parses an entity tag written by [`etag`] (strong or weak form); `None` for anything else.
pub fn parse_etag(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// One change as JSON: `{"kind": "upsert", "bot_id", "revision", "registration"}` or
/// `{"kind": "deleted", "bot_id", "revision"}`.
pub fn change_to_json(change: &Change) -> Value {
    match change {
        Change::Upsert(reg) => json!({
            "kind": "upsert",
            "bot_id": reg.bot_id,
            "revision": reg.revision,
            "registration": reg.to_json(),
        }),
        Change::Deleted { bot_id, revision } => json!({
            "kind": "deleted",
            "bot_id": bot_id,
            "revision": revision,
        }),
    }
}

/// A change feed as the body of a `200`: `{"changes": [...], "current_revision": N}`; an
/// expired cursor as the body of a `410`: `{"detail": "...", "expired": {"cursor",
/// "oldest_available", "current_revision"}}`.
pub fn feed_to_json(feed: &ChangeFeed) -> Value {
    match feed {
        ChangeFeed::Changes {
            changes,
            current_revision,
        } => json!({
            "changes": changes.iter().map(change_to_json).collect::<Vec<_>>(),
            "current_revision": current_revision,
        }),
        ChangeFeed::Expired {
            cursor,
            oldest_available,
            current_revision,
        } => json!({
            "detail": format!(
                "revision {cursor} is older than the oldest change kept ({oldest_available}); relist and watch from {current_revision}"
            ),
            "expired": {
                "cursor": cursor,
                "oldest_available": oldest_available,
                "current_revision": current_revision,
            },
        }),
    }
}

/// Reads a change feed written by [`feed_to_json`]; the error says which part is wrong.
pub fn feed_from_json(body: &Value) -> Result<ChangeFeed, String> {
    let obj = body
        .as_object()
        .ok_or("the change feed is not a JSON object")?;
    if let Some(expired) = obj.get("expired") {
        let field = |k: &str| {
            expired
                .get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("expired.{k} is missing or not an unsigned integer"))
        };
        return Ok(ChangeFeed::Expired {
            cursor: field("cursor")?,
            oldest_available: field("oldest_available")?,
            current_revision: field("current_revision")?,
        });
    }
    let current_revision = obj
        .get("current_revision")
        .and_then(Value::as_u64)
        .ok_or("current_revision is missing or not an unsigned integer")?;
    let changes = obj
        .get("changes")
        .and_then(Value::as_array)
        .ok_or("changes is missing or not a list")?;
    let changes = changes
        .iter()
        .enumerate()
        .map(|(i, c)| change_from_json(c).map_err(|e| format!("changes[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(ChangeFeed::Changes {
        changes,
        current_revision,
    })
}

fn change_from_json(c: &Value) -> Result<Change, String> {
    let c: &Map<String, Value> = c.as_object().ok_or("not a JSON object")?;
    let revision = c
        .get("revision")
        .and_then(Value::as_u64)
        .ok_or("revision is missing or not an unsigned integer")?;
    match c.get("kind").and_then(Value::as_str) {
        Some("upsert") => {
            let reg = c.get("registration").ok_or("registration is missing")?;
            let mut reg = Registration::from_json(reg).map_err(|e| format!("registration: {e}"))?;
            reg.revision = revision;
            Ok(Change::Upsert(reg))
        }
        Some("deleted") => Ok(Change::Deleted {
            bot_id: c
                .get("bot_id")
                .and_then(Value::as_str)
                .ok_or("bot_id is missing or not a string")?
                .to_owned(),
            revision,
        }),
        other => Err(format!(
            "kind {other:?} is neither \"upsert\" nor \"deleted\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_and_etags_round_trip() {
        let mut reg = Registration::new("a/b", json!({"x": 1}));
        reg.revision = 7;
        let feed = ChangeFeed::Changes {
            changes: vec![
                Change::Upsert(reg),
                Change::Deleted {
                    bot_id: "gone".into(),
                    revision: 8,
                },
            ],
            current_revision: 8,
        };
        assert_eq!(feed_from_json(&feed_to_json(&feed)).unwrap(), feed);
        let expired = ChangeFeed::Expired {
            cursor: 1,
            oldest_available: 5,
            current_revision: 9,
        };
        assert_eq!(feed_from_json(&feed_to_json(&expired)).unwrap(), expired);
        let err = feed_from_json(
            &json!({"changes": [{"kind": "moved", "revision": 1}], "current_revision": 1}),
        )
        .unwrap_err();
        assert!(err.contains("changes[0]") && err.contains("moved"), "{err}");
        assert_eq!(parse_etag(&etag(42)), Some(42));
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("*"), None);
    }
}
