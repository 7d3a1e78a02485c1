//! `ChangeNotice`: the one registry change event every committed write publishes, its topic and
//! its wire form on the event bus.
//!
//! Bus topic [`REGISTRY_TOPIC`] (`registry:bots`); the event's own `topic` is the same string
//! (the original disagreed, reference-spec §9.1 #9). Payload:
//! `{"bot_id": "<id>" | null, "kind": "created|updated|deactivated|deleted|cleared", "revision": <u64>}`.
//! The event type follows the kind (`cleared` is sent as `deleted` with a null `bot_id`).

use dynreg_event_bus::{Event, EventType};
use dynreg_registry_core::Change;
use serde_json::{Map, Value};

/// The bus topic of registry change events.
pub const REGISTRY_TOPIC: &str = "registry:bots";

/// The bus topic on which a cache reports a failed rebuild (it kept serving the last good
/// instance). Payload: `{"bot_id", "revision", "error"}`; event type `error`.
pub const RELOAD_ERRORS_TOPIC: &str = "registry:errors";

/// The `source` of events published by [`crate::EventedRegistry`].
pub const EVENT_SOURCE: &str = "dynreg-registry";

/// What a committed registry write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new registration.
    Created,
    /// A changed registration that is (still) active, or a non-active status other than inactive.
    Updated,
    /// The registration was deactivated (soft delete).
    Deactivated,
    /// The registration was removed (hard delete).
    Deleted,
    /// The registry was cleared; `bot_id` is `None`.
    Cleared,
}

impl ChangeKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deactivated => "deactivated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Cleared => "cleared",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deactivated" => ChangeKind::Deactivated,
            "deleted" => ChangeKind::Deleted,
            "cleared" => ChangeKind::Cleared,
            _ => return None,
        })
    }

    /// The event type this kind is published with.
    pub fn event_type(self) -> EventType {
        match self {
            ChangeKind::Created => EventType::Created,
            ChangeKind::Updated => EventType::Updated,
            ChangeKind::Deactivated => EventType::Deactivated,
            ChangeKind::Deleted | ChangeKind::Cleared => EventType::Deleted,
        }
    }

    /// Whether after this change the bot can no longer be served.
    pub fn removes(self) -> bool {
        matches!(
            self,
            ChangeKind::Deactivated | ChangeKind::Deleted | ChangeKind::Cleared
        )
    }
}

/// One registry change as caches see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeNotice {
    /// What happened.
    pub kind: ChangeKind,
    /// The bot it happened to (`None` for [`ChangeKind::Cleared`]).
    pub bot_id: Option<String>,
    /// The registry revision of the change. `None` only for events published by hand without
    /// one (as in the original's examples): caches then treat their entry as stale.
    pub revision: Option<u64>,
}

impl ChangeNotice {
    /// A notice about one bot.
    pub fn new(kind: ChangeKind, bot_id: impl Into<String>, revision: u64) -> Self {
        ChangeNotice {
            kind,
            bot_id: Some(bot_id.into()),
            revision: Some(revision),
        }
    }

    /// The notice for an entry of a registry change feed.
    pub fn from_change(change: &Change) -> Self {
        match change {
            Change::Upsert(reg) => {
                let kind = if reg.is_active() {
                    ChangeKind::Updated
                } else {
                    ChangeKind::Deactivated
                };
                ChangeNotice::new(kind, reg.bot_id.clone(), reg.revision)
            }
            Change::Deleted { bot_id, revision } => {
                ChangeNotice::new(ChangeKind::Deleted, bot_id.clone(), *revision)
            }
        }
    }

    /// The bus event carrying this notice.
    pub fn to_event(&self) -> Event {
        let mut payload = Map::new();
        payload.insert(
            "bot_id".into(),
            self.bot_id.clone().map_or(Value::Null, Value::String),
        );
        payload.insert("kind".into(), Value::String(self.kind.as_str().into()));
        payload.insert(
            "revision".into(),
            self.revision.map_or(Value::Null, Value::from),
        );
        Event::new(self.kind.event_type(), REGISTRY_TOPIC, payload).with_source(EVENT_SOURCE)
    }

    /// Reads a notice from a bus event. Accepts the documented payload, and events published by
    /// hand with only an event type and `bot_id` (or the original's `instance_id`). Returns
    /// `None` for events that are not about a registry change (e.g. `custom`, no bot id).
    pub fn from_event(event: &Event) -> Option<ChangeNotice> {
        let payload = &event.payload;
        let kind = match payload.get("kind").and_then(Value::as_str) {
            Some(k) => ChangeKind::parse(k)?,
            None => match event.event_type {
                EventType::Created => ChangeKind::Created,
                EventType::Updated | EventType::Activated => ChangeKind::Updated,
                EventType::Deactivated => ChangeKind::Deactivated,
                EventType::Deleted => ChangeKind::Deleted,
                EventType::Error | EventType::Custom => return None,
            },
        };
        let bot_id = payload
            .get("bot_id")
            .or_else(|| payload.get("instance_id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if bot_id.is_none() && kind != ChangeKind::Cleared {
            return None;
        }
        let revision = payload.get("revision").and_then(Value::as_u64);
        Some(ChangeNotice {
            kind,
            bot_id,
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_an_event() {
        let n = ChangeNotice::new(ChangeKind::Deactivated, "b1", 42);
        let e = n.to_event();
        assert_eq!(e.event_type, EventType::Deactivated);
        assert_eq!(e.topic, REGISTRY_TOPIC);
        assert_eq!(ChangeNotice::from_event(&e), Some(n));
        let cleared = ChangeNotice {
            kind: ChangeKind::Cleared,
            bot_id: None,
            revision: Some(7),
        };
        assert_eq!(ChangeNotice::from_event(&cleared.to_event()), Some(cleared));
    }

    #[test]
    fn accepts_hand_published_events_and_ignores_others() {
        let mut p = Map::new();
        p.insert("bot_id".into(), "support-bot".into());
        let e = Event::new(EventType::Updated, REGISTRY_TOPIC, p);
        assert_eq!(
            ChangeNotice::from_event(&e),
            Some(ChangeNotice {
                kind: ChangeKind::Updated,
                bot_id: Some("support-bot".into()),
                revision: None
            })
        );
        let e = Event::new(EventType::Updated, REGISTRY_TOPIC, Map::new());
        assert_eq!(ChangeNotice::from_event(&e), None);
        let mut p = Map::new();
        p.insert("bot_id".into(), "x".into());
        assert_eq!(
            ChangeNotice::from_event(&Event::new(EventType::Custom, "t", p)),
            None
        );
    }
}
