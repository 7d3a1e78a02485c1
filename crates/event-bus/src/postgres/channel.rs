//! Topic → Postgres channel naming: the collision-free default and the original's formula,
//! plus identifier quoting.

use sha2::{Digest, Sha256};

use crate::error::EventBusError;

/// Postgres identifiers (and so channel names) are at most 63 bytes.
pub const MAX_CHANNEL_LEN: usize = 63;

/// How bus topics become Postgres channel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelNaming {
    /// `{prefix}:{topic}` verbatim (channels are always quoted, so any character is fine); a topic
    /// too long for 63 bytes becomes `{prefix}#{16 hex of sha256(topic)}:{start of topic}`.
    /// Distinct topics never share a channel (the long form relies on a 64-bit hash).
    #[default]
    CollisionFree,
    /// The original's `_topic_to_channel`: `:`, `.`, `-` → `_`, every other character outside
    /// `[A-Za-z0-9_]` deleted, joined to the prefix with `_`. Use it only to share a database
    /// with Python processes of the original. Limits: `a:b`, `a.b`, `a-b` and `a_b` share one
    /// channel, so the bus delivers a notification on it to the exact subscribers of *every*
    /// topic of this bus that maps there (over-delivery, never loss); topics whose channel
    /// would exceed 63 bytes or be empty are rejected.
    Original,
}

/// The original's prefix sanitiser: keep `[A-Za-z0-9_]`, error if nothing is left.
pub fn sanitize_prefix(prefix: &str) -> Result<String, EventBusError> {
    let safe: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if safe.is_empty() {
        return Err(EventBusError::InvalidConfig {
            key: "channel_prefix".into(),
            reason: format!("channel_prefix {prefix:?} is empty after sanitization"),
        });
    }
    Ok(safe)
}

/// The channel for `topic` (already validated as a topic) under `prefix` (already sanitised).
pub fn topic_channel(
    naming: ChannelNaming,
    prefix: &str,
    topic: &str,
) -> Result<String, EventBusError> {
    match naming {
        ChannelNaming::Original => original_channel(prefix, topic),
        ChannelNaming::CollisionFree => Ok(collision_free_channel(prefix, topic)),
    }
}

/// The original's formula, e.g. `registry:bots` → `events_registry_bots`.
pub fn original_channel(prefix: &str, topic: &str) -> Result<String, EventBusError> {
    let safe: String = topic
        .chars()
        .map(|c| if matches!(c, ':' | '.' | '-') { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if safe.is_empty() {
        return Err(EventBusError::InvalidTopic {
            topic: topic.to_owned(),
            reason: "produces an empty channel name after sanitization".into(),
        });
    }
    let channel = format!("{prefix}_{safe}");
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(EventBusError::InvalidTopic {
            topic: topic.to_owned(),
            reason: format!(
                "original-formula channel {channel:?} is longer than {MAX_CHANNEL_LEN} bytes"
            ),
        });
    }
    Ok(channel)
}

fn collision_free_channel(prefix: &str, topic: &str) -> String {
    let plain = format!("{prefix}:{topic}");
    if plain.len() <= MAX_CHANNEL_LEN {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(topic.as_bytes()));
    let head = format!("{prefix}#{}:", &digest[..16]);
    let mut out = head;
    for c in topic.chars() {
        if out.len() + c.len_utf8() > MAX_CHANNEL_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// The channel every dynreg publisher also notifies (with `topic\npayload`) so pattern
/// subscriptions see every topic. `#` never occurs in a name the original's formula produces and
/// `{prefix}#patterns` is never a collision-free topic channel (those start `{prefix}:` or
/// `{prefix}#<16 hex>:`).
pub fn pattern_channel(prefix: &str) -> String {
    format!("{prefix}#patterns")
}

/// Quotes an identifier for `LISTEN`/`UNLISTEN` (doubling embedded quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_formula_matches_the_original_tests() {
        let c = |t| original_channel("events", t);
        assert_eq!(c("registry:bots").unwrap(), "events_registry_bots");
        assert_eq!(c("com.example.topic").unwrap(), "events_com_example_topic");
        assert_eq!(
            c("foo'; DROP TABLE users --").unwrap(),
            "events_fooDROPTABLEusers__"
        );
        assert_eq!(c("my topic").unwrap(), "events_mytopic");
        assert_eq!(c("événement").unwrap(), "events_vnement");
        assert!(
            c("!@#$%^&*()")
                .unwrap_err()
                .to_string()
                .contains("!@#$%^&*()")
        );
        // The original's collision, kept only in this mode.
        assert_eq!(c("a:b").unwrap(), c("a.b").unwrap());
    }

    #[test]
    fn prefix_sanitization() {
        assert_eq!(sanitize_prefix("my-app.events").unwrap(), "myappevents");
        assert!(
            sanitize_prefix("-.-")
                .unwrap_err()
                .to_string()
                .contains("empty after sanitization")
        );
    }

    #[test]
    fn collision_free_is_injective_and_bounded() {
        let c = |t| topic_channel(ChannelNaming::CollisionFree, "events", t).unwrap();
        let names = ["a:b", "a.b", "a-b", "a_b"].map(c);
        for i in 0..names.len() {
            for j in i + 1..names.len() {
                assert_ne!(names[i], names[j]);
            }
        }
        assert_eq!(c("registry:bots"), "events:registry:bots");
        let long_a = format!("{}:a", "x".repeat(100));
        let long_b = format!("{}:b", "x".repeat(100));
        assert!(c(&long_a).len() <= MAX_CHANNEL_LEN);
        assert_ne!(c(&long_a), c(&long_b));
        assert_ne!(c("patterns"), pattern_channel("events"));
        let long_unicode = "é".repeat(100);
        assert!(c(&long_unicode).len() <= MAX_CHANNEL_LEN);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
