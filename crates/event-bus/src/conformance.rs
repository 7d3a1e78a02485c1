//! The conformance suite every bus runs (feature `conformance`): one contract, proven on the
//! memory, Postgres and Redis buses. Each check is a plain async function that panics on a
//! violation; [`run_all`] runs them in order.
//!
//! The shape is the same in the three suites of dynreg (registry, event bus, knowledge store):
//! a backend's test file implements [`Harness`], which opens the backend under test
//! ([`Harness::bus`], [`Harness::peer`]) and declares what it supports
//! ([`Harness::capabilities`], a [`Capabilities`] of flags with a `Default`), and expands
//! [`event_bus_conformance_tests!`](crate::event_bus_conformance_tests) with an
//! `Option<impl Harness>`, which generates one `#[tokio::test]` per check of this module. A
//! check that needs a capability names it in the macro's case list (`case: [capability]`); on a
//! harness that does not declare it the test prints `skipped: <case> (<capability> not
//! supported by this backend)` and passes. A `None` harness (a server that is not configured)
//! skips every check after [`server_url`] printed why. The reconnect checks need
//! `kill_connections` (a bus with server connections the harness can kill:
//! [`Harness::kill_listener`], [`Harness::kill_publisher`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::EventBus;
use crate::error::EventBusError;
use crate::event::{Event, EventType, new_uuid_v4};
use crate::subscription::{Delivery, ResyncReason, Subscription};

/// How long a check waits for an expected delivery.
pub const WAIT: Duration = Duration::from_secs(15);

/// The error a harness's connection killer returns (`dynreg_registry_core::BoxError` spelled
/// out: this crate exports no `BoxError` of its own).
pub type KillError = Box<dyn std::error::Error + Send + Sync>;

/// What a bus supports, as the checks that depend on it need to know (OpenDAL's behaviour
/// tests select cases the same way). The default declares nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The bus holds server connections the harness can kill from the server side
    /// ([`Harness::kill_listener`], [`Harness::kill_publisher`]); the reconnect checks need it.
    pub kill_connections: bool,
}

/// What the suite needs from a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A fresh bus whose subscriptions buffer `capacity` events.
    async fn bus(&self, capacity: usize) -> Arc<dyn EventBus>;
    /// A second bus on the same server, as another process would open it (the memory harness
    /// returns the same bus: it has no server).
    async fn peer(&self, bus: &Arc<dyn EventBus>) -> Arc<dyn EventBus>;
    /// What the bus supports.
    fn capabilities(&self) -> Capabilities;
    /// Kills `bus`'s listening server connection from the server side. Required of harnesses
    /// that declare [`Capabilities::kill_connections`]; the default is an error saying the
    /// capability is not declared.
    async fn kill_listener(&self, bus: &Arc<dyn EventBus>) -> Result<(), KillError> {
        let _ = bus;
        Err(not_declared("kill_listener"))
    }
    /// Kills `bus`'s publishing server connection from the server side. Required of
    /// harnesses that declare [`Capabilities::kill_connections`]; the default is an error
    /// saying the capability is not declared.
    async fn kill_publisher(&self, bus: &Arc<dyn EventBus>) -> Result<(), KillError> {
        let _ = bus;
        Err(not_declared("kill_publisher"))
    }
}

fn not_declared(method: &str) -> KillError {
    format!("{method}: this harness does not declare the kill_connections capability").into()
}

/// Prints the skip line of a check whose capability the harness does not declare (called by
/// [`event_bus_conformance_tests!`](crate::event_bus_conformance_tests)).
#[doc(hidden)]
#[allow(clippy::print_stdout)] // the skip line is meant for the test output
pub fn unsupported(case: &str, capability: &str) {
    println!("skipped: {case} ({capability} not supported by this backend)");
}

/// The server URL in the environment variable `var`, or `None` after printing the skip line
/// for `backend`'s tests.
pub fn server_url(backend: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {backend} tests ({var} unset)");
            None
        }
    }
}

/// A topic prefix unique to one check run, so checks can run in parallel and be re-run.
pub fn unique_prefix(check: &str) -> String {
    format!("conf{}:{check}", &new_uuid_v4()[..8])
}

/// An event whose payload carries `seq`.
pub fn numbered(seq: usize) -> Event {
    let mut payload = Map::new();
    payload.insert("seq".into(), json!(seq));
    Event::new(EventType::Updated, "conformance", payload)
}

fn seq_of(event: &Event) -> usize {
    event
        .payload
        .get("seq")
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |s| s as usize)
}

/// Waits for the next delivery, failing the check after [`WAIT`].
pub async fn next_delivery(sub: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{what}: subscription {} ended unexpectedly", sub.target()),
        Err(_) => panic!(
            "{what}: nothing delivered to {} within {WAIT:?}",
            sub.target()
        ),
    }
}

/// Waits for the next delivery and requires it to be an event; returns (bus topic, event) as
/// owned values for easy comparison.
pub async fn next_event(sub: &mut Subscription, what: &str) -> (String, Event) {
    match next_delivery(sub, what).await {
        Delivery::Event { topic, event } => (topic.to_string(), Arc::unwrap_or_clone(event)),
        Delivery::Resync { reason } => {
            panic!("{what}: unexpected resync {reason:?} on {}", sub.target())
        }
    }
}

async fn publish(bus: &Arc<dyn EventBus>, topic: &str, event: &Event) {
    if let Err(e) = bus.publish(topic, event).await {
        panic!("publish to {topic} failed: {e}");
    }
}

/// Publishes a fence event on `topic` and requires it to be the very next delivery: proves no
/// extra (duplicate or unwanted) delivery was queued before it.
async fn expect_only_fence(
    bus: &Arc<dyn EventBus>,
    sub: &mut Subscription,
    topic: &str,
    what: &str,
) {
    let fence = numbered(999_999);
    publish(bus, topic, &fence).await;
    let (_, got) = next_event(sub, what).await;
    assert_eq!(
        got.event_id, fence.event_id,
        "{what}: an unexpected event arrived before the fence: {got:?}"
    );
}

/// A published event arrives unchanged (every wire field) on an exact subscription.
pub async fn publish_subscribe_roundtrip(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let topic = format!("{}:bots", unique_prefix("roundtrip"));
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    let mut payload = Map::new();
    payload.insert("registration_id".into(), json!("bot-1"));
    payload.insert(
        "nested".into(),
        json!({"list": [1, 2.5, null, true], "text": "héllo ✓ 😀"}),
    );
    let mut metadata = Map::new();
    metadata.insert("tenant".into(), json!("t1"));
    let event = Event::new(EventType::Created, format!("{topic}:bot-1"), payload)
        .with_source("conformance")
        .with_correlation("corr-1")
        .with_metadata(metadata);
    publish(&bus, &topic, &event).await;
    let (got_topic, got) = next_event(&mut sub, "roundtrip").await;
    assert_eq!(got_topic, topic);
    assert_eq!(
        got, event,
        "the delivered event differs from the published one"
    );
    bus.close().await.expect("close");
}

/// Every subscriber of a topic gets the event; a subscriber of another topic does not.
pub async fn multiple_subscribers_same_topic(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("multi");
    let topic = format!("{prefix}:a");
    let other = format!("{prefix}:b");
    let mut s1 = bus.subscribe(&topic).await.expect("subscribe");
    let mut s2 = bus.subscribe(&topic).await.expect("subscribe");
    let mut s3 = bus.subscribe(&other).await.expect("subscribe");
    let event = numbered(1);
    publish(&bus, &topic, &event).await;
    assert_eq!(next_event(&mut s1, "s1").await.1.event_id, event.event_id);
    assert_eq!(next_event(&mut s2, "s2").await.1.event_id, event.event_id);
    expect_only_fence(&bus, &mut s3, &other, "subscriber of another topic").await;
    assert_eq!(bus.subscription_count(), 3);
    bus.close().await.expect("close");
}

/// `prefix:*` matches `prefix:bots` and `prefix:users` but not `other:topic`.
pub async fn pattern_subscription(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("pattern");
    let mut sub = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("subscribe_pattern");
    let mut single = bus
        .subscribe_pattern(&format!("{prefix}:use?s"))
        .await
        .expect("subscribe_pattern");
    publish(&bus, &format!("{prefix}:bots"), &numbered(1)).await;
    publish(&bus, &format!("other{prefix}:topic"), &numbered(2)).await;
    publish(&bus, &format!("{prefix}:users"), &numbered(3)).await;
    let (t1, e1) = next_event(&mut sub, "pattern first").await;
    assert_eq!(
        (t1.as_str(), seq_of(&e1)),
        (format!("{prefix}:bots").as_str(), 1)
    );
    let (t2, e2) = next_event(&mut sub, "pattern second").await;
    assert_eq!(
        (t2.as_str(), seq_of(&e2)),
        (format!("{prefix}:users").as_str(), 3),
        "non-matching topic delivered"
    );
    let (t3, _) = next_event(&mut single, "? pattern").await;
    assert_eq!(t3, format!("{prefix}:users"));
    bus.close().await.expect("close");
}

/// An event matching an exact and two pattern subscriptions (and the same pattern twice)
/// reaches each subscription exactly once — the transport adds no duplicates.
pub async fn no_duplicate_deliveries(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("nodup");
    let topic = format!("{prefix}:x:y");
    let mut exact = bus.subscribe(&topic).await.expect("subscribe");
    let mut p1 = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    let mut p2 = bus
        .subscribe_pattern(&format!("{prefix}:x:*"))
        .await
        .expect("pattern");
    let mut p2_again = bus
        .subscribe_pattern(&format!("{prefix}:x:*"))
        .await
        .expect("pattern");
    let event = numbered(7);
    publish(&bus, &topic, &event).await;
    let mut subs = [
        ("exact", &mut exact),
        ("p1", &mut p1),
        ("p2", &mut p2),
        ("p2 again", &mut p2_again),
    ];
    for (name, sub) in subs.iter_mut() {
        assert_eq!(
            next_event(sub, name).await.1.event_id,
            event.event_id,
            "{name}"
        );
    }
    // A fence published next must be each subscription's very next item: no duplicate queued.
    let fence = numbered(8);
    publish(&bus, &topic, &fence).await;
    for (name, sub) in subs.iter_mut() {
        let (_, got) = next_event(sub, name).await;
        assert_eq!(
            got.event_id, fence.event_id,
            "{name}: duplicate delivery: {got:?}"
        );
    }
    bus.close().await.expect("close");
}

/// Per-topic publish order is kept for exact and pattern subscribers, with topics interleaved.
pub async fn per_topic_order(h: &dyn Harness) {
    const N: usize = 300;
    let bus = h.bus(4 * N).await;
    let prefix = unique_prefix("order");
    let (ta, tb) = (format!("{prefix}:a"), format!("{prefix}:b"));
    let mut sa = bus.subscribe(&ta).await.expect("subscribe");
    let mut sp = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    for i in 0..N {
        publish(&bus, &ta, &numbered(i)).await;
        publish(&bus, &tb, &numbered(i)).await;
    }
    for i in 0..N {
        let (_, e) = next_event(&mut sa, "exact order").await;
        assert_eq!(seq_of(&e), i, "exact subscriber saw events out of order");
    }
    let (mut next_a, mut next_b) = (0, 0);
    for _ in 0..2 * N {
        let (topic, e) = next_event(&mut sp, "pattern order").await;
        let expected = if topic == ta {
            &mut next_a
        } else {
            &mut next_b
        };
        assert_eq!(
            seq_of(&e),
            *expected,
            "pattern subscriber saw {topic} out of order"
        );
        *expected += 1;
    }
    bus.close().await.expect("close");
}

/// Cancelling (or dropping) a subscription stops its delivery without disturbing the others.
pub async fn unsubscribe_stops_delivery(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("unsub");
    let topic = format!("{prefix}:t");
    let mut keep = bus.subscribe(&topic).await.expect("subscribe");
    let mut gone = bus.subscribe(&topic).await.expect("subscribe");
    let mut keep_pattern = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    let dropped_pattern = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    assert_eq!(bus.subscription_count(), 4);
    gone.cancel();
    gone.cancel(); // idempotent
    drop(dropped_pattern);
    assert_eq!(bus.subscription_count(), 2);
    let event = numbered(1);
    publish(&bus, &topic, &event).await;
    assert_eq!(
        next_event(&mut keep, "kept exact").await.1.event_id,
        event.event_id
    );
    assert_eq!(
        next_event(&mut keep_pattern, "kept pattern")
            .await
            .1
            .event_id,
        event.event_id
    );
    assert!(
        gone.next().await.is_none(),
        "a cancelled subscription still yields items"
    );
    // Cancelling the last exact subscriber must not disturb the pattern subscriber.
    drop(keep);
    let event = numbered(2);
    publish(&bus, &topic, &event).await;
    assert_eq!(
        next_event(&mut keep_pattern, "pattern after exact left")
            .await
            .1
            .event_id,
        event.event_id
    );
    bus.close().await.expect("close");
}

/// Publishing to a topic nobody subscribes to succeeds.
pub async fn no_subscribers(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let topic = format!("{}:nobody", unique_prefix("nosub"));
    bus.publish(&topic, &numbered(1))
        .await
        .expect("publish without subscribers");
    bus.close().await.expect("close");
}

/// Two buses (two processes' worth of connections) talk through the same server.
pub async fn two_buses_same_server(h: &dyn Harness) {
    let a = h.bus(64).await;
    let b = h.peer(&a).await;
    let prefix = unique_prefix("twobus");
    let topic = format!("{prefix}:t");
    let mut on_b = b.subscribe(&topic).await.expect("subscribe on b");
    let mut pattern_on_b = b
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern on b");
    let mut on_a = a.subscribe(&topic).await.expect("subscribe on a");
    let event = numbered(5);
    publish(&a, &topic, &event).await;
    assert_eq!(next_event(&mut on_b, "peer exact").await.1, event);
    assert_eq!(next_event(&mut pattern_on_b, "peer pattern").await.1, event);
    assert_eq!(next_event(&mut on_a, "own bus").await.1, event);
    let back = numbered(6);
    publish(&b, &topic, &back).await;
    assert_eq!(next_event(&mut on_a, "reverse direction").await.1, back);
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

/// A 100 KB payload is delivered intact (over Postgres's 8000-byte NOTIFY limit).
pub async fn large_payload(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("large");
    let topic = format!("{prefix}:big");
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    let mut pattern = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    let mut payload = Map::new();
    let body: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    payload.insert("body".into(), json!(body));
    payload.insert("unicode".into(), json!("é".repeat(1000)));
    let event = Event::new(EventType::Custom, topic.clone(), payload);
    publish(&bus, &topic, &event).await;
    assert_eq!(next_event(&mut sub, "large exact").await.1, event);
    assert_eq!(next_event(&mut pattern, "large pattern").await.1, event);
    // Small events still flow after a large one, in order.
    let small = numbered(1);
    publish(&bus, &topic, &small).await;
    assert_eq!(next_event(&mut sub, "after large").await.1, small);
    bus.close().await.expect("close");
}

/// A subscriber that does not read never blocks the publisher or a fast subscriber; it later
/// gets what fit in its queue plus an explicit `Lagged` resync counting the rest, then recovers.
pub async fn slow_subscriber(h: &dyn Harness) {
    const CAPACITY: usize = 16;
    const N: usize = 200;
    let bus = h.bus(CAPACITY).await;
    let topic = format!("{}:slow", unique_prefix("slow"));
    let mut slow = bus.subscribe(&topic).await.expect("subscribe");
    let mut fast = bus.subscribe(&topic).await.expect("subscribe");
    // Publish in batches smaller than the capacity; the fast subscriber keeps up between
    // batches while the slow one never reads. Neither the publisher nor the fast subscriber
    // may be held up by the slow one.
    let run = async {
        let mut seen = 0;
        for batch in 0..N / 8 {
            for i in 0..8 {
                publish(&bus, &topic, &numbered(batch * 8 + i)).await;
            }
            for _ in 0..8 {
                let (_, e) = next_event(&mut fast, "fast subscriber").await;
                assert_eq!(seq_of(&e), seen, "fast subscriber out of order");
                seen += 1;
            }
        }
    };
    tokio::time::timeout(4 * WAIT, run)
        .await
        .expect("the publisher or a fast subscriber was blocked by a slow subscriber");
    // The slow subscriber: buffered events in order, then a Lagged marker; nothing lost silently.
    let mut accounted = 0u64;
    let mut events = 0;
    let mut lagged = false;
    let mut last_seq: Option<usize> = None;
    while accounted < N as u64 {
        match next_delivery(&mut slow, "slow subscriber").await {
            Delivery::Event { event, .. } => {
                let seq = seq_of(&event);
                assert!(
                    last_seq.is_none_or(|l| seq > l),
                    "slow subscriber out of order"
                );
                last_seq = Some(seq);
                events += 1;
                accounted += 1;
            }
            Delivery::Resync {
                reason: ResyncReason::Lagged { missed },
            } => {
                lagged = true;
                accounted += missed;
            }
            Delivery::Resync { reason } => panic!("unexpected resync {reason:?}"),
        }
    }
    assert_eq!(
        accounted, N as u64,
        "events were lost without being counted in a Lagged signal"
    );
    assert!(lagged, "an overflowing subscriber got no Lagged signal");
    assert!(
        events <= CAPACITY,
        "a subscription buffered more than its capacity"
    );
    // It recovers: the next event is delivered normally.
    let after = numbered(N + 1);
    publish(&bus, &topic, &after).await;
    assert_eq!(
        next_event(&mut slow, "slow after drain").await.1.event_id,
        after.event_id
    );
    bus.close().await.expect("close");
}

/// Bad topics and patterns are rejected with errors naming them.
pub async fn invalid_topics_rejected(h: &dyn Harness) {
    let bus = h.bus(8).await;
    for bad in ["", "has space", "glob*", "x?", "[abc]", "tab\there"] {
        let err = bus
            .publish(bad, &numbered(0))
            .await
            .expect_err("bad topic accepted by publish");
        assert!(
            matches!(err, EventBusError::InvalidTopic { ref topic, .. } if topic == bad),
            "{err}"
        );
        let err = bus
            .subscribe(bad)
            .await
            .expect_err("bad topic accepted by subscribe");
        assert!(matches!(err, EventBusError::InvalidTopic { .. }), "{err}");
    }
    let long = "x".repeat(crate::topic::MAX_TOPIC_LEN + 1);
    assert!(bus.publish(&long, &numbered(0)).await.is_err());
    for bad in ["", "with space"] {
        let err = bus
            .subscribe_pattern(bad)
            .await
            .expect_err("bad pattern accepted");
        assert!(matches!(err, EventBusError::InvalidPattern { .. }), "{err}");
    }
    bus.close().await.expect("close");
}

/// After `close()`: subscriptions end, publish and subscribe fail with `Closed`, close is idempotent.
pub async fn close_ends_everything(h: &dyn Harness) {
    let bus = h.bus(8).await;
    let topic = format!("{}:t", unique_prefix("close"));
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    bus.close().await.expect("close");
    assert!(
        tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("next after close hangs")
            .is_none()
    );
    let err = bus
        .publish(&topic, &numbered(0))
        .await
        .expect_err("publish after close");
    assert!(matches!(err, EventBusError::Closed { .. }), "{err}");
    let err = bus
        .subscribe(&topic)
        .await
        .expect_err("subscribe after close");
    assert!(matches!(err, EventBusError::Closed { .. }), "{err}");
    bus.close().await.expect("second close");
    assert_eq!(bus.subscription_count(), 0);
}

/// Publishing the very same event several times (even concurrently) delivers it that many
/// times: no transport de-duplicates (Postgres collapses identical NOTIFYs inside a transaction).
pub async fn same_event_twice_is_delivered_twice(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let topic = format!("{}:t", unique_prefix("twice"));
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    let event = numbered(1);
    let (a, b, c) = tokio::join!(
        bus.publish(&topic, &event),
        bus.publish(&topic, &event),
        bus.publish(&topic, &event)
    );
    for r in [a, b, c] {
        r.expect("publish");
    }
    for i in 0..3 {
        assert_eq!(next_event(&mut sub, &format!("copy {i}")).await.1, event);
    }
    expect_only_fence(&bus, &mut sub, &topic, "after the copies").await;
    bus.close().await.expect("close");
}

/// An idle bus stays connected: after a few liveness-probe periods with no traffic, events
/// still flow and no spurious resync was signalled. (Harnesses use a short probe interval.)
pub async fn idle_bus_stays_connected(h: &dyn Harness) {
    let bus = h.bus(8).await;
    let topic = format!("{}:t", unique_prefix("idle"));
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let event = numbered(1);
    publish(&bus, &topic, &event).await;
    assert_eq!(next_event(&mut sub, "after idle").await.1, event);
    bus.close().await.expect("close");
}

/// `close()` ends every background task the bus started (counted with the runtime's metrics,
/// so run this on a runtime of its own, as `#[tokio::test]` does).
pub async fn close_ends_background_tasks(h: &dyn Harness) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let bus = h.bus(8).await;
    let prefix = unique_prefix("tasks");
    let topic = format!("{prefix}:t");
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    let mut pattern = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    let event = numbered(1);
    publish(&bus, &topic, &event).await;
    assert_eq!(next_event(&mut sub, "exact").await.1, event);
    assert_eq!(next_event(&mut pattern, "pattern").await.1, event);
    bus.close().await.expect("close");
    drop(bus);
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.num_alive_tasks() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} background task(s) still alive after close()",
            metrics.num_alive_tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `event` until it is accepted (the publishing connection may be reconnecting).
async fn publish_until_ok(bus: &Arc<dyn EventBus>, topic: &str, event: &Event) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut failures = 0;
    loop {
        match bus.publish(topic, event).await {
            Ok(()) => return failures,
            Err(EventBusError::Disconnected { .. } | EventBusError::Publish { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("publish did not recover: {e}"),
        }
    }
}

/// Killing the listening connection from the server side yields a `Reconnected` resync on
/// every subscription, and later events flow again.
///
/// Needs [`Capabilities::kill_connections`].
pub async fn listener_reconnects(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let prefix = unique_prefix("relisten");
    let topic = format!("{prefix}:t");
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    let mut pattern = bus
        .subscribe_pattern(&format!("{prefix}:*"))
        .await
        .expect("pattern");
    let before = numbered(1);
    publish(&bus, &topic, &before).await;
    assert_eq!(next_event(&mut sub, "before kill").await.1, before);
    assert_eq!(next_event(&mut pattern, "before kill").await.1, before);
    h.kill_listener(&bus)
        .await
        .expect("kill the listening connection");
    for (name, s) in [("exact", &mut sub), ("pattern", &mut pattern)] {
        match next_delivery(s, name).await {
            Delivery::Resync {
                reason: ResyncReason::Reconnected,
            } => {}
            other => panic!("{name}: expected a Reconnected resync after the kill, got {other:?}"),
        }
    }
    let after = numbered(2);
    publish_until_ok(&bus, &topic, &after).await;
    assert_eq!(next_event(&mut sub, "exact after reconnect").await.1, after);
    assert_eq!(
        next_event(&mut pattern, "pattern after reconnect").await.1,
        after
    );
    // A subscription made after the reconnect works too.
    let mut late = bus
        .subscribe(&format!("{prefix}:late"))
        .await
        .expect("subscribe after reconnect");
    let late_event = numbered(3);
    publish(&bus, &format!("{prefix}:late"), &late_event).await;
    assert_eq!(next_event(&mut late, "late subscriber").await.1, late_event);
    bus.close().await.expect("close");
}

/// Killing the publishing connection: publishes fail with an error (never silently) until the
/// connection is re-established by itself, then succeed and are delivered.
///
/// Needs [`Capabilities::kill_connections`].
pub async fn publisher_reconnects(h: &dyn Harness) {
    let bus = h.bus(64).await;
    let topic = format!("{}:t", unique_prefix("republish"));
    let mut sub = bus.subscribe(&topic).await.expect("subscribe");
    publish(&bus, &topic, &numbered(0)).await;
    assert_eq!(seq_of(&next_event(&mut sub, "before kill").await.1), 0);
    h.kill_publisher(&bus)
        .await
        .expect("kill the publishing connection");
    let event = numbered(1);
    publish_until_ok(&bus, &topic, &event).await;
    // Every accepted publish is delivered (a resync is allowed only if the listener noticed too).
    loop {
        match next_delivery(&mut sub, "after publisher reconnect").await {
            Delivery::Event { event: got, .. } => {
                assert_eq!(got.event_id, event.event_id);
                break;
            }
            Delivery::Resync { .. } => continue,
        }
    }
    bus.close().await.expect("close");
}

/// Runs every check the harness's capabilities allow; prints a skip line for each other.
pub async fn run_all(name: &str, h: &dyn Harness) {
    publish_subscribe_roundtrip(h).await;
    multiple_subscribers_same_topic(h).await;
    pattern_subscription(h).await;
    no_duplicate_deliveries(h).await;
    per_topic_order(h).await;
    unsubscribe_stops_delivery(h).await;
    no_subscribers(h).await;
    two_buses_same_server(h).await;
    large_payload(h).await;
    slow_subscriber(h).await;
    invalid_topics_rejected(h).await;
    close_ends_everything(h).await;
    idle_bus_stays_connected(h).await;
    same_event_twice_is_delivered_twice(h).await;
    close_ends_background_tasks(h).await;
    if h.capabilities().kill_connections {
        listener_reconnects(h).await;
        publisher_reconnects(h).await;
    } else {
        for case in ["listener_reconnects", "publisher_reconnects"] {
            unsupported(&format!("{name} {case}"), "kill_connections");
        }
    }
}

/// Generates one `#[tokio::test]` per conformance check, e.g.
/// `dynreg_event_bus::event_bus_conformance_tests!(harness());`.
///
/// `$harness` is an expression of type `Option<impl Harness>`, evaluated once per test; `None`
/// skips every check (the harness constructor prints why, see [`server_url`]). The `@cases`
/// form takes an explicit case list in which a case may name the capabilities it needs,
/// `case: [capability, …]`; the test then prints a skip line and passes when the harness's
/// [`Capabilities`] lack one.
#[macro_export]
macro_rules! event_bus_conformance_tests {
    ($harness:expr) => {
        $crate::event_bus_conformance_tests!(@cases $harness;
            publish_subscribe_roundtrip, multiple_subscribers_same_topic, pattern_subscription,
            no_duplicate_deliveries, per_topic_order, unsubscribe_stops_delivery, no_subscribers,
            two_buses_same_server, large_payload, slow_subscriber, invalid_topics_rejected,
            close_ends_everything, idle_bus_stays_connected, same_event_twice_is_delivered_twice,
            close_ends_background_tasks,
            listener_reconnects: [kill_connections], publisher_reconnects: [kill_connections]);
    };
    (@cases $harness:expr; $($case:ident $(: [$($capability:ident),* $(,)?])?),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(h) = $harness else { return };
                let _capabilities = $crate::conformance::Harness::capabilities(&h);
                $($(
                    if !_capabilities.$capability {
                        $crate::conformance::unsupported(stringify!($case), stringify!($capability));
                        return;
                    }
                )*)?
                $crate::conformance::$case(&h).await;
            }
        )*
    };
}

/// A TCP proxy on 127.0.0.1 to a test server that can stop forwarding: a frozen server, as
/// SIGSTOP or a dead network path would make it (connections stay up, nothing comes back). For
/// the deadline tests of network backends.
#[derive(Debug)]
pub struct FreezableProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    /// Starts forwarding every connection to `target`.
    pub async fn start(target: std::net::SocketAddr) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let gate = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let mut gate = gate.subscribe();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Frozen: hold the bytes, forward nothing, until thawed.
                            while *gate.borrow_and_update() {
                                if gate.changed().await.is_err() {
                                    return;
                                }
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        FreezableProxy { port, frozen }
    }

    /// Stops (`true`) or resumes (`false`) forwarding; held bytes are forwarded on resume.
    pub fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

/// The frozen-server check of a network bus whose only path to its server is `proxy`: a
/// publish while the server is frozen fails within the bus's deadline instead of hanging; once
/// thawed, the bus's subscription resyncs (it lost its connection) and delivers again. Returns
/// the publish's error, for the caller to check its wording. Closes the bus.
pub async fn frozen_server_fails_publishes_and_recovers(
    bus: &dyn EventBus,
    proxy: &FreezableProxy,
) -> EventBusError {
    let topic = format!("{}:bots", unique_prefix("frozen"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    let first = numbered(1);
    bus.publish(&topic, &first).await.unwrap();
    assert_eq!(next_event(&mut sub, "before the freeze").await.1, first);

    proxy.freeze(true);
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), bus.publish(&topic, &numbered(2)))
        .await
        .expect("the publish returned instead of hanging")
        .unwrap_err();
    tracing::info!(elapsed = ?t.elapsed(), error = %err, "a publish to a frozen server failed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.freeze(false);

    let t = std::time::Instant::now();
    let mut resynced = false;
    let mut delivered = false;
    while t.elapsed() < Duration::from_secs(30) && !delivered {
        if resynced {
            let _ = bus.publish(&topic, &numbered(3)).await;
        }
        match tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
            Ok(Some(Delivery::Resync { .. })) => resynced = true,
            // The publish that timed out may still arrive: its bytes were held, not lost.
            Ok(Some(Delivery::Event { event, .. })) if resynced && event.payload["seq"] == 3 => {
                delivered = true;
            }
            Ok(Some(Delivery::Event { .. })) | Err(_) => {}
            Ok(None) => panic!("the subscription ended"),
        }
    }
    assert!(resynced, "no resync after the server was frozen and thawed");
    assert!(delivered, "no delivery after the server answered again");
    bus.close().await.unwrap();
    err
}
