//! The original's model and factory tests, ported: Event/EventType wire
//! JSON, timestamps, defaults, and `create_event_bus` errors.

use dynreg_event_bus::{
    Delivery, Event, EventBus, EventBusError, EventType, InMemoryEventBus, create_event_bus,
    parse_timestamp, python_isoformat,
};
use serde_json::{Map, json};

#[test]
fn test_event_types_exist() {
    let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "created",
            "updated",
            "deleted",
            "activated",
            "deactivated",
            "error",
            "custom"
        ]
    );
    assert_eq!(
        serde_json::to_string(&EventType::Deactivated).unwrap(),
        "\"deactivated\""
    );
}

#[test]
fn test_event_defaults() {
    let e = Event::new(EventType::Created, "registry:bots", Map::new());
    assert!(e.payload.is_empty() && e.metadata.is_empty());
    assert_eq!(e.source, None);
    assert_eq!(e.correlation_id, None);
    // uuid4 shape: 8-4-4-4-12, version nibble 4, variant 8..b.
    let parts: Vec<_> = e.event_id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    assert_ne!(
        e.event_id,
        Event::new(EventType::Created, "x", Map::new()).event_id
    );
    assert!((chrono::Utc::now() - e.timestamp).num_seconds().abs() < 5);
}

#[test]
fn test_event_to_dict_matches_python_bytes() {
    // Python 3: json.dumps() of the dict the original's to_dict() builds,
    // with datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=timezone.utc).isoformat().
    let mut payload = Map::new();
    payload.insert("registration_id".into(), json!("bot-é"));
    let mut e =
        Event::new(EventType::Updated, "registry:configs:bot-1", payload).with_source("svc");
    e.event_id = "0a9b5c8e-1f2d-4c3b-9a8e-7d6c5b4a3f21".into();
    e.timestamp = parse_timestamp("2024-01-15T10:30:00.123456+00:00").unwrap();
    assert_eq!(
        e.to_json(),
        r#"{"type": "updated", "topic": "registry:configs:bot-1", "payload": {"registration_id": "bot-\u00e9"}, "timestamp": "2024-01-15T10:30:00.123456+00:00", "event_id": "0a9b5c8e-1f2d-4c3b-9a8e-7d6c5b4a3f21", "source": "svc", "correlation_id": null, "metadata": {}}"#
    );
    let value = e.to_value();
    assert_eq!(value["type"], "updated");
    assert_eq!(value["timestamp"], "2024-01-15T10:30:00.123456+00:00");
}

#[test]
fn test_timestamp_formats() {
    let whole = parse_timestamp("2024-01-15T10:30:00Z").unwrap();
    // Python's isoformat() drops a zero microsecond part.
    assert_eq!(python_isoformat(&whole), "2024-01-15T10:30:00+00:00");
    for s in [
        "2024-01-15T10:30:00.5Z",
        "2024-01-15T10:30:00.500000+00:00",
        "2024-01-15T12:30:00.5+02:00",
        "2024-01-15 10:30:00.5+00:00",
        "2024-01-15T10:30:00.500000",
    ] {
        assert_eq!(
            python_isoformat(&parse_timestamp(s).unwrap()),
            "2024-01-15T10:30:00.500000+00:00",
            "{s}"
        );
    }
    let err = parse_timestamp("yesterday").unwrap_err();
    assert!(err.to_string().contains("yesterday"), "{err}");
}

#[test]
fn test_event_from_dict_and_roundtrip() {
    let e = Event::from_json(r#"{"type": "deleted", "topic": "t"}"#).unwrap();
    assert_eq!(e.event_type, EventType::Deleted);
    assert!(e.payload.is_empty() && e.metadata.is_empty());
    assert_eq!(e.event_id.len(), 36);
    let full =
        Event::new(EventType::Custom, "ingest:domain:end", Map::new()).with_correlation("c-1");
    assert_eq!(Event::from_json(&full.to_json()).unwrap(), full);
    let via_serde: Event = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
    assert_eq!(via_serde, full);
}

#[test]
fn test_event_from_dict_errors_name_the_field() {
    for (input, field) in [
        (r#"{"type": "bogus", "topic": "t"}"#, "type"),
        (r#"{"topic": "t"}"#, "type"),
        (r#"{"type": "created"}"#, "topic"),
        (
            r#"{"type": "created", "topic": "t", "payload": []}"#,
            "payload",
        ),
        (
            r#"{"type": "created", "topic": "t", "timestamp": "soon"}"#,
            "timestamp",
        ),
        ("not json", "<document>"),
    ] {
        match Event::from_json(input) {
            Err(EventBusError::InvalidEvent { field: f, .. }) => assert_eq!(f, field, "{input}"),
            other => panic!("{input}: expected InvalidEvent({field}), got {other:?}"),
        }
    }
}

#[test]
fn test_event_with_correlation_keeps_id() {
    let e = Event::new(EventType::Created, "t", Map::new());
    let c = e.clone().with_correlation("req-42");
    assert_eq!(c.event_id, e.event_id);
    assert_eq!(c.correlation_id.as_deref(), Some("req-42"));
}

#[tokio::test]
async fn test_create_memory_and_default_bus() {
    let bus = create_event_bus(&json!({"backend": "memory", "capacity": 8}))
        .await
        .unwrap();
    assert_eq!(bus.kind(), "memory");
    let default = create_event_bus(&json!({})).await.unwrap();
    assert_eq!(default.kind(), "memory");
}

#[tokio::test]
async fn test_unknown_backend_lists_registered() {
    let err = create_event_bus(&json!({"backend": "kafka"}))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("kafka") && text.contains("memory"), "{text}");
    assert!(matches!(err, EventBusError::UnknownBackend { .. }));
    let err = create_event_bus(&json!({"backend": "memory", "capacity": 0}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "capacity"),
        "{err}"
    );
    let err = create_event_bus(&json!({"backend": "memory", "capcity": 3}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "capcity"),
        "{err}"
    );
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn test_feature_off_backend_names_feature() {
    let err = create_event_bus(&json!({"backend": "postgres"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`postgres` feature"), "{err}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn test_feature_off_redis_names_feature() {
    let err = create_event_bus(&json!({"backend": "redis"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`redis` feature"), "{err}");
}

#[tokio::test]
async fn test_registry_events_workflow_and_handler_isolation() {
    // The original's workflow test: a cache subscribes to registry topics; a failing handler
    // does not stop delivery to it or to the others.
    let bus = InMemoryEventBus::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sub = bus.subscribe_pattern("registry:*").await.unwrap();
    let seen2 = std::sync::Arc::clone(&seen);
    let handle = dynreg_event_bus::spawn_handler(sub, move |d: Delivery| {
        let seen = std::sync::Arc::clone(&seen2);
        async move {
            if let Delivery::Event { event, .. } = d {
                if event.payload.get("fail").is_some() {
                    return Err("handler failed on purpose");
                }
                if event.payload.get("panic").is_some() {
                    panic!("handler panicked on purpose");
                }
                seen.lock().unwrap().push(event.event_type);
            }
            Ok(())
        }
    });
    let mut bad = Map::new();
    bad.insert("fail".into(), json!(true));
    let mut worse = Map::new();
    worse.insert("panic".into(), json!(true));
    for (t, p) in [
        (EventType::Created, Map::new()),
        (EventType::Error, bad),
        (EventType::Error, worse),
        (EventType::Deleted, Map::new()),
    ] {
        bus.publish("registry:bots", &Event::new(t, "registry:bots:b1", p))
            .await
            .unwrap();
    }
    for _ in 0..200 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [EventType::Created, EventType::Deleted]
    );
    bus.close().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
}
