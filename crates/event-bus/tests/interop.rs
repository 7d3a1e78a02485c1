//! Interop with the Python original's Redis and PostgreSQL buses, for real, both ways: events
//! the original publishes reach dynreg's exact and pattern subscriptions unchanged (type, topic,
//! payload, source, correlation id, metadata, timestamp, id), and the events dynreg publishes
//! reach the original's subscribers unchanged, and a payload relayed through dynreg keeps its
//! numbers and key order. Needs `DYNREG_INTEROP_PYTHON` (a Python with the
//! original installed; `cargo xtask interop`) and the servers' URLs; skipped, saying so, when
//! one is unset.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynreg_event_bus::conformance::{next_event, unique_prefix};
use dynreg_event_bus::{Event, EventBus, EventType, create_event_bus};
use serde_json::{Map, Value, json};

fn setup(backend: &str, var: &str) -> Option<(String, String)> {
    let python = std::env::var("DYNREG_INTEROP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    match (python, url) {
        (Some(p), Some(u)) => Some((p, u)),
        _ => {
            println!(
                "skipped: {backend} bus interop with the Python original (DYNREG_INTEROP_PYTHON or {var} unset)"
            );
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/bus.py")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The events of one run: nested objects, unicode, the original's registry topic shape, and a
/// large payload (100 KB on Redis; on PostgreSQL just under the NOTIFY limit, which the
/// original cannot exceed).
fn events(prefix: &str, large: usize) -> Vec<Event> {
    let topic = format!("{prefix}:bots");
    vec![
        Event::new(
            EventType::Created,
            topic.clone(),
            obj(json!({"bot_id": "b1", "nested": {"a": [1, 2.5, null, true, {"deep": "x"}], "n": -7}})),
        )
        .with_source("interop-test")
        .with_correlation("corr-1")
        .with_metadata(obj(json!({"k": "v", "n": 3}))),
        Event::new(
            EventType::Updated,
            topic.clone(),
            obj(json!({"bot_id": "b1", "text": "日本語 ✓ émoji 🚀 \"quoted\" \\ back\nline"})),
        ),
        Event::new(EventType::Deleted, topic.clone(), obj(json!({"bot_id": "b1"}))),
        Event::new(
            EventType::Custom,
            topic,
            obj(json!({"body": "x".repeat(large)})),
        ),
    ]
}

async fn bus(backend: &str, url: &str) -> Arc<dyn EventBus> {
    let config = match backend {
        "redis" => json!({"backend": "redis", "url": url}),
        // The original's channel formula (dynreg's default is collision-free).
        _ => json!({"backend": "postgres", "url": url, "channel_naming": "original"}),
    };
    create_event_bus(&config).await.unwrap()
}

async fn original_publishes_dynreg_receives(backend: &str, python: &str, url: &str, large: usize) {
    let prefix = unique_prefix(&format!("interop{backend}"));
    let sent = events(&prefix, large);
    let b = bus(backend, url).await;
    let mut exact = b.subscribe(&format!("{prefix}:bots")).await.unwrap();
    // A pattern reaches what the original publishes on Redis (PSUBSCRIBE); on PostgreSQL the
    // original NOTIFYs on one channel per topic, which no LISTEN can match by pattern.
    let mut pattern = if backend == "redis" {
        Some(b.subscribe_pattern(&format!("{prefix}:*")).await.unwrap())
    } else {
        None
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let lines: Vec<String> = sent.iter().map(Event::to_json).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = tokio::process::Command::new(python)
        .arg(script())
        .args(["publish", backend, url, &prefix])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the original's publisher failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, expected) in sent.iter().enumerate() {
        let (topic, got) = next_event(&mut exact, "exact").await;
        assert_eq!(
            (topic.as_str(), &got),
            (expected.topic.as_str(), expected),
            "event {i} (exact)"
        );
        if let Some(pattern) = pattern.as_mut() {
            let (_, got) = next_event(pattern, "pattern").await;
            assert_eq!(&got, expected, "event {i} (pattern)");
        }
    }
    b.close().await.unwrap();
}

async fn dynreg_publishes_original_receives(backend: &str, python: &str, url: &str, large: usize) {
    let prefix = unique_prefix(&format!("interop{backend}"));
    let sent = events(&prefix, large);
    let dir = tempfile::tempdir().unwrap();
    let (out, ready) = (dir.path().join("out.jsonl"), dir.path().join("ready"));
    let child = tokio::process::Command::new(python)
        .arg(script())
        .args(["subscribe", backend, url, &prefix, &sent.len().to_string()])
        .arg(&out)
        .arg(&ready)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready.exists(), "the original's subscriber did not start");
    let b = bus(backend, url).await;
    for e in &sent {
        b.publish(&e.topic, e).await.unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the original's subscriber finished")
        .unwrap();
    assert!(
        status.status.success(),
        "the original's subscriber failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let received: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vias: &[&str] = if backend == "redis" {
        &["exact", "pattern"]
    } else {
        &["exact"]
    };
    for via in vias {
        let got: Vec<&Value> = received
            .iter()
            .filter(|r| r["via"] == *via)
            .map(|r| &r["event"])
            .collect();
        assert_eq!(got.len(), sent.len(), "{via}");
        for (g, e) in got.iter().zip(&sent) {
            assert_eq!(
                **g,
                e.to_value(),
                "{via}: the original's to_dict of what it received"
            );
        }
    }
    b.close().await.unwrap();
}

/// A payload the original publishes, received by dynreg and re-published on another topic,
/// reaches the original again with the same `json.dumps` text: integers beyond 64 bits, floats
/// (`1.5e-300`, `1e-05`, `1e+16`) and key order all kept.
async fn a_relayed_payload_keeps_its_numbers_and_key_order(backend: &str, python: &str, url: &str) {
    let prefix = unique_prefix(&format!("interop{backend}"));
    let b = bus(backend, url).await;
    let mut inbox = b.subscribe(&format!("{prefix}:in")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("relay.json");
    let child = tokio::process::Command::new(python)
        .arg(script())
        .args(["relay", backend, url, &prefix])
        .arg(&out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The original subscribes to PREFIX:bots before it publishes, so relaying at once is safe.
    let (_, got) = next_event(&mut inbox, "relay").await;
    assert_eq!(got.payload["z"].to_string(), "18446744073709551616");
    assert_eq!(got.payload["tiny"].as_f64(), Some(1.5e-300));
    let relayed = Event {
        topic: format!("{prefix}:bots"),
        ..got
    };
    b.publish(&relayed.topic, &relayed).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the original's relay finished")
        .unwrap();
    assert!(
        status.status.success(),
        "the original's relay failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        report["received"], report["sent"],
        "json.dumps of what came back vs what was sent"
    );
    assert_eq!(
        report["keys"],
        json!(["z", "neg", "tiny", "small", "third", "big_float", "a", "m"])
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_both_ways() {
    let Some((python, url)) = setup("redis", "DYNREG_TEST_REDIS_URL") else {
        return;
    };
    original_publishes_dynreg_receives("redis", &python, &url, 100_000).await;
    dynreg_publishes_original_receives("redis", &python, &url, 100_000).await;
    a_relayed_payload_keeps_its_numbers_and_key_order("redis", &python, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_both_ways() {
    let Some((python, url)) = setup("postgres", "DYNREG_TEST_POSTGRES_URL") else {
        return;
    };
    original_publishes_dynreg_receives("postgres", &python, &url, 6_000).await;
    dynreg_publishes_original_receives("postgres", &python, &url, 6_000).await;
    a_relayed_payload_keeps_its_numbers_and_key_order("postgres", &python, &url).await;
}
