//! The wire form of registry change notices on the event bus, and the topics of the sync layer.
//!
//! Bus topic [`REGISTRY_TOPIC`] (`registry:bots`); the event's own `topic` is the same string
//! (the original disagreed: its events named one topic and were published on another). Payload:
//! `{"bot_id": "<id>" | null, "kind": "created|updated|deactivated|deleted|cleared", "revision": <u64>}`.
//! The event type follows the kind (`cleared` is sent as `deleted` with a null `bot_id`).
//!
//! This module is the only place that turns a [`ChangeNotice`] into an [`Event`] and back.

use dynreg_event_bus::{Event, EventType};
use dynreg_registry_core::{ChangeKind, ChangeNotice};
use serde_json::{Map, Value};

/// The bus topic of registry change events.
pub const REGISTRY_TOPIC: &str = "registry:bots";

/// The bus topic on which a failed rebuild is reported (the cache kept serving the last good
/// instance). Payload: `{"bot_id", "revision", "serving_revision", "error"}`; event type `error`.
pub const RELOAD_ERRORS_TOPIC: &str = "registry:errors";

/// The `source` of events published by [`crate::EventedRegistry`].
pub const EVENT_SOURCE: &str = "dynreg-registry";

/// The event type a change kind is published with.
pub fn event_type(kind: ChangeKind) -> EventType {
    match kind {
        ChangeKind::Created => EventType::Created,
        ChangeKind::Updated => EventType::Updated,
        ChangeKind::Deactivated => EventType::Deactivated,
        ChangeKind::Deleted | ChangeKind::Cleared => EventType::Deleted,
    }
}

/// The bus event carrying `notice`, addressed to `topic`.
pub fn notice_to_event(notice: &ChangeNotice, topic: &str) -> Event {
    let mut payload = Map::new();
    payload.insert(
        "bot_id".into(),
        notice.bot_id.clone().map_or(Value::Null, Value::String),
    );
    payload.insert("kind".into(), Value::String(notice.kind.as_str().into()));
    payload.insert(
        "revision".into(),
        notice.revision.map_or(Value::Null, Value::from),
    );
    Event::new(event_type(notice.kind), topic, payload).with_source(EVENT_SOURCE)
}

/// Reads a notice from a bus event. Accepts the documented payload, and events published by
/// hand with only an event type and `bot_id` (or the original's `instance_id`). Returns `None`
/// for events that are not about a registry change (e.g. `custom`, no bot id).
pub fn notice_from_event(event: &Event) -> Option<ChangeNotice> {
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

/// The `error` event reporting a failed rebuild on [`RELOAD_ERRORS_TOPIC`].
pub fn reload_error_event(failure: &dynreg_cache::RefreshFailure) -> Event {
    let mut payload = Map::new();
    payload.insert("bot_id".into(), Value::String(failure.bot_id.clone()));
    payload.insert("revision".into(), Value::from(failure.revision));
    payload.insert(
        "serving_revision".into(),
        Value::from(failure.serving_revision),
    );
    payload.insert("error".into(), Value::String(failure.error.clone()));
    Event::new(EventType::Error, RELOAD_ERRORS_TOPIC, payload).with_source("dynreg-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_an_event() {
        let n = ChangeNotice::new(ChangeKind::Deactivated, "b1", 42);
        let e = notice_to_event(&n, REGISTRY_TOPIC);
        assert_eq!(e.event_type, EventType::Deactivated);
        assert_eq!(e.topic, REGISTRY_TOPIC);
        assert_eq!(notice_from_event(&e), Some(n));
        let cleared = ChangeNotice::cleared(7);
        assert_eq!(
            notice_from_event(&notice_to_event(&cleared, REGISTRY_TOPIC)),
            Some(cleared)
        );
    }

    #[test]
    fn accepts_hand_published_events_and_ignores_others() {
        let mut p = Map::new();
        p.insert("bot_id".into(), "support-bot".into());
        let e = Event::new(EventType::Updated, REGISTRY_TOPIC, p);
        assert_eq!(
            notice_from_event(&e),
            Some(ChangeNotice {
                kind: ChangeKind::Updated,
                bot_id: Some("support-bot".into()),
                revision: None
            })
        );
        let e = Event::new(EventType::Updated, REGISTRY_TOPIC, Map::new());
        assert_eq!(notice_from_event(&e), None);
        let mut p = Map::new();
        p.insert("bot_id".into(), "x".into());
        assert_eq!(
            notice_from_event(&Event::new(EventType::Custom, "t", p)),
            None
        );
    }
}
