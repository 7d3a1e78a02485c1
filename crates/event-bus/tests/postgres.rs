//! The conformance suite on the Postgres bus (DYNREG_TEST_POSTGRES_URL), plus what is specific
//! to Postgres: channel naming modes, the claim check and the reject policy.

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::conformance::{
    Capabilities, Harness, KillError, next_event, numbered, server_url, unique_prefix,
};
use dynreg_event_bus::postgres::{
    ChannelNaming, OversizePolicy, PostgresEventBus, PostgresEventBusConfig,
};
use dynreg_event_bus::{EventBus, EventBusError, create_event_bus};
use tokio_postgres::NoTls;

fn url() -> Option<String> {
    server_url("postgres", "DYNREG_TEST_POSTGRES_URL")
}

fn fast_config(url: &str) -> PostgresEventBusConfig {
    let mut config = PostgresEventBusConfig::new(url);
    config.connection.reconnect_base = std::time::Duration::from_millis(50);
    config.connection.reconnect_max = std::time::Duration::from_millis(500);
    config.connection.probe_interval = std::time::Duration::from_millis(500);
    config
}

struct PgHarness {
    url: String,
    buses: std::sync::Mutex<Vec<Arc<PostgresEventBus>>>,
}

impl PgHarness {
    fn find(&self, bus: &Arc<dyn EventBus>) -> Arc<PostgresEventBus> {
        let target = Arc::as_ptr(bus) as *const ();
        let buses = self.buses.lock().unwrap();
        let found = buses.iter().find(|b| Arc::as_ptr(b) as *const () == target);
        Arc::clone(found.expect("bus made by this harness"))
    }

    async fn terminate(
        &self,
        application_name: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        let driver = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .await?;
        drop(client);
        let _ = driver.await;
        if rows.is_empty() {
            return Err(format!("no backend with application_name {application_name}").into());
        }
        Ok(())
    }
}

#[async_trait]
impl Harness for PgHarness {
    async fn bus(&self, capacity: usize) -> Arc<dyn EventBus> {
        let mut config = fast_config(&self.url);
        config.connection.capacity = capacity;
        let bus = Arc::new(
            PostgresEventBus::connect(config)
                .await
                .expect("connect postgres bus"),
        );
        self.buses.lock().unwrap().push(Arc::clone(&bus));
        bus
    }
    async fn peer(&self, _: &Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        self.bus(64).await
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kill_connections: true,
        }
    }
    async fn kill_listener(&self, bus: &Arc<dyn EventBus>) -> Result<(), KillError> {
        let bus = self.find(bus);
        self.terminate(bus.listen_application_name()).await
    }
    async fn kill_publisher(&self, bus: &Arc<dyn EventBus>) -> Result<(), KillError> {
        let bus = self.find(bus);
        self.terminate(bus.publish_application_name()).await
    }
}

fn harness() -> Option<PgHarness> {
    url().map(|url| PgHarness {
        url,
        buses: Default::default(),
    })
}

dynreg_event_bus::event_bus_conformance_tests!(harness());

#[tokio::test]
async fn original_naming_interoperates_and_over_delivers_on_collision() {
    let Some(url) = url() else { return };
    let mut config = fast_config(&url);
    config.channel_naming = ChannelNaming::Original;
    let bus = PostgresEventBus::connect(config).await.unwrap();
    let prefix = unique_prefix("orig").replace(':', "_");
    let (a, b) = (format!("{prefix}:x"), format!("{prefix}.x"));
    assert_eq!(bus.channel_for(&a).unwrap(), format!("events_{prefix}_x"));
    let mut sa = bus.subscribe(&a).await.unwrap();
    let mut sb = bus.subscribe(&b).await.unwrap();
    // A NOTIFY exactly as the Python original sends it reaches the exact subscribers.
    let event = numbered(1);
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&bus.channel_for(&a).unwrap(), &event.to_json()],
        )
        .await
        .unwrap();
    // Colliding topics cannot be told apart on the original's channels: both get it (no loss).
    assert_eq!(next_event(&mut sa, "a").await.1, event);
    assert_eq!(next_event(&mut sb, "b").await.1, event);
    drop(client);
    let _ = driver.await;
    // Unsubscribing one colliding topic does not UNLISTEN the other (the original's bug).
    drop(sa);
    let again = numbered(2);
    bus.publish(&b, &again).await.unwrap();
    assert_eq!(next_event(&mut sb, "b after a left").await.1, again);
    let err = bus.subscribe("!@#$%^&").await.unwrap_err();
    assert!(matches!(err, EventBusError::InvalidTopic { .. }), "{err}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn reject_policy_refuses_oversized_events_clearly() {
    let Some(url) = url() else { return };
    let mut config = fast_config(&url);
    config.oversize = OversizePolicy::Reject;
    let bus = PostgresEventBus::connect(config).await.unwrap();
    let topic = format!("{}:big", unique_prefix("reject"));
    let mut payload = serde_json::Map::new();
    payload.insert("body".into(), serde_json::json!("x".repeat(10_000)));
    let event =
        dynreg_event_bus::Event::new(dynreg_event_bus::EventType::Custom, topic.clone(), payload);
    match bus.publish(&topic, &event).await {
        Err(EventBusError::PayloadTooLarge {
            topic: t,
            size,
            limit,
            ..
        }) => {
            assert_eq!(t, topic);
            assert!(size > limit);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    bus.close().await.unwrap();
}

#[tokio::test]
async fn factory_builds_postgres_and_reports_bad_config() {
    let Some(url) = url() else { return };
    let bus = create_event_bus(
        &serde_json::json!({"backend": "postgres", "url": url, "channel_naming": "original"}),
    )
    .await
    .unwrap();
    assert_eq!(bus.kind(), "postgres");
    bus.close().await.unwrap();
    let err = create_event_bus(
        &serde_json::json!({"backend": "postgres", "url": url, "channel_naming": "fancy"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "channel_naming"),
        "{err}"
    );
    let err = create_event_bus(
        &serde_json::json!({"backend": "postgres", "url": "postgres://postgres@127.0.0.1:1/x"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EventBusError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn concurrent_publishes_all_succeed() {
    let Some(url) = url() else { return };
    let bus: Arc<dyn EventBus> =
        Arc::new(PostgresEventBus::connect(fast_config(&url)).await.unwrap());
    let topic = format!("{}:c", unique_prefix("concurrent"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let bus = Arc::clone(&bus);
            let topic = topic.clone();
            tokio::spawn(async move { bus.publish(&topic, &numbered(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for _ in 0..1000 {
        next_event(&mut sub, "concurrent").await;
    }
    bus.close().await.unwrap();
}

/// A burst of notifications faster than routing overflows the bounded forwarding queue: the
/// overflow is dropped, every subscriber is told to resync (`Lagged`), and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_flood_is_bounded_and_resyncs() {
    let Some(url) = url() else { return };
    let mut config = fast_config(&url);
    config.forward_capacity = 4;
    config.connection.capacity = 100_000;
    let bus = Arc::new(PostgresEventBus::connect(config).await.unwrap());
    let topic = format!("{}:flood", unique_prefix("flood"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    let channel = bus.channel_for(&topic).unwrap();
    // Distinct payloads (PostgreSQL folds identical notifications of one transaction into one).
    let template = numbered(1);
    let payload = template.to_json().replace(&template.event_id, "EVENT-ID");
    // 5,000 notifications committed at once arrive as one burst.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    client
        .execute(
            "SELECT pg_notify($1, replace($2, 'EVENT-ID', 'flood-' || i)) FROM generate_series(1, 5000) i",
            &[&channel, &payload],
        )
        .await
        .unwrap();
    let mut events = 0u64;
    let mut missed = 0u64;
    while events + missed < 5000 {
        match tokio::time::timeout(std::time::Duration::from_secs(15), sub.next()).await {
            Ok(Some(dynreg_event_bus::Delivery::Event { .. })) => events += 1,
            Ok(Some(dynreg_event_bus::Delivery::Resync { reason })) => match reason {
                dynreg_event_bus::ResyncReason::Lagged { missed: m } => missed += m,
                other => panic!("unexpected resync {other:?}"),
            },
            other => panic!("after {events} events and {missed} missed: {other:?}"),
        }
    }
    assert!(missed > 0, "the burst never overflowed a queue of 4");
    assert_eq!(events + missed, 5000);
    // Delivery goes on.
    let after = numbered(2);
    bus.publish(&topic, &after).await.unwrap();
    let (_, e) = next_event(&mut sub, "after the flood").await;
    assert_eq!(e, after);
    drop(client);
    driver.abort();
    bus.close().await.unwrap();
}

/// A server that stops answering (frozen: the TCP connection stays up, nothing comes back)
/// fails a publish within `connect_timeout` instead of hanging it; the bus replaces the
/// connections, and once the server answers again the subscription resyncs and delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_publishes_within_the_deadline_and_subscriptions_recover() {
    use dynreg_event_bus::conformance::{
        FreezableProxy, frozen_server_fails_publishes_and_recovers,
    };
    use std::time::Duration;
    let Some(url) = url() else { return };
    let config: tokio_postgres::Config = url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let proxy = FreezableProxy::start(target).await;
    let (rest, _) = url.rsplit_once('/').unwrap();
    let db = url.rsplit('/').next().unwrap();
    let user = rest.split("://").nth(1).unwrap().split('@').next().unwrap();
    let proxied = format!("postgres://{user}@127.0.0.1:{}/{db}", proxy.port);
    let mut config = fast_config(&proxied);
    config.connection.connect_timeout = Duration::from_millis(700);
    config.connection.probe_interval = Duration::from_millis(300);
    let bus = PostgresEventBus::connect(config).await.unwrap();
    let err = frozen_server_fails_publishes_and_recovers(&bus, &proxy).await;
    assert!(err.to_string().contains("700 ms"), "{err}");
}

/// A bus on the application's own `tokio_postgres::Config` works as one built from a URL.
#[tokio::test]
async fn a_bus_on_the_applications_own_config() {
    let Some(url) = url() else { return };
    let pg: tokio_postgres::Config = url.parse().unwrap();
    let bus = PostgresEventBus::with_pg_config(pg, fast_config("postgres://ignored@nowhere/x"))
        .await
        .unwrap();
    let topic = format!("{}:bots", unique_prefix("ownconfig"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    let event = numbered(1);
    bus.publish(&topic, &event).await.unwrap();
    assert_eq!(next_event(&mut sub, "own config").await.1, event);
    bus.close().await.unwrap();
}
