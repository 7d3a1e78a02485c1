//! The conformance suite on the Redis bus (DYNREG_TEST_REDIS_URL), plus what is specific to
//! Redis: the original's channel formula on the wire.

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::conformance::{
    Capabilities, FreezableProxy, Harness, KillError, next_event, numbered, server_url,
    unique_prefix,
};
use dynreg_event_bus::redis::{RedisEventBus, RedisEventBusConfig};
use dynreg_event_bus::{EventBus, EventBusError, create_event_bus};

fn url() -> Option<String> {
    server_url("redis", "DYNREG_TEST_REDIS_URL")
}

fn fast_config(url: &str) -> RedisEventBusConfig {
    let mut config = RedisEventBusConfig::new(url);
    config.connection.reconnect_base = std::time::Duration::from_millis(50);
    config.connection.reconnect_max = std::time::Duration::from_millis(500);
    config.connection.probe_interval = std::time::Duration::from_millis(500);
    config
}

struct RedisHarness {
    url: String,
    buses: std::sync::Mutex<Vec<Arc<RedisEventBus>>>,
}

impl RedisHarness {
    fn find(&self, bus: &Arc<dyn EventBus>) -> Arc<RedisEventBus> {
        let target = Arc::as_ptr(bus) as *const ();
        let buses = self.buses.lock().unwrap();
        let found = buses.iter().find(|b| Arc::as_ptr(b) as *const () == target);
        Arc::clone(found.expect("bus made by this harness"))
    }

    async fn command(
        &self,
        args: &[String],
    ) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        let killed: i64 = cmd.query_async(&mut conn).await?;
        if killed < 1 {
            return Err(format!("{args:?} killed no client").into());
        }
        Ok(killed)
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn bus(&self, capacity: usize) -> Arc<dyn EventBus> {
        let mut config = fast_config(&self.url);
        config.connection.capacity = capacity;
        let bus = Arc::new(
            RedisEventBus::connect(config)
                .await
                .expect("connect redis bus"),
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
        let addr = self
            .find(bus)
            .pubsub_client_addr()
            .ok_or("the bus has no pub/sub connection to kill")?;
        let args = ["CLIENT", "KILL", "TYPE", "pubsub", "ADDR", &addr].map(String::from);
        self.command(&args).await.map(drop)
    }
    async fn kill_publisher(&self, bus: &Arc<dyn EventBus>) -> Result<(), KillError> {
        let id = self
            .find(bus)
            .publish_client_id()
            .ok_or("the bus has no publishing connection to kill")?;
        let args = ["CLIENT".into(), "KILL".into(), "ID".into(), id.to_string()];
        self.command(&args).await.map(drop)
    }
}

fn harness() -> Option<RedisHarness> {
    url().map(|url| RedisHarness {
        url,
        buses: Default::default(),
    })
}

dynreg_event_bus::event_bus_conformance_tests!(harness());

#[tokio::test]
async fn wire_format_matches_the_original() {
    let Some(url) = url() else { return };
    let bus = RedisEventBus::connect(fast_config(&url)).await.unwrap();
    let topic = format!("{}:bots", unique_prefix("wire"));
    assert_eq!(bus.channel_for(&topic).unwrap(), format!("events:{topic}"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    // A message exactly as the Python original publishes it.
    let event = numbered(1);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("events:{topic}"))
        .arg(event.to_json())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub, "python-style publish").await.1, event);
    // And a raw subscriber sees our publish as the original's JSON on the original's channel.
    let mut raw = client.get_async_pubsub().await.unwrap();
    raw.subscribe(format!("events:{topic}")).await.unwrap();
    let ours = numbered(2);
    bus.publish(&topic, &ours).await.unwrap();
    use futures::StreamExt;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), raw.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), ours.to_json());
    bus.close().await.unwrap();
}

#[tokio::test]
async fn factory_builds_redis_and_reports_bad_config() {
    let Some(url) = url() else { return };
    let bus = create_event_bus(&serde_json::json!({"backend": "redis", "url": url}))
        .await
        .unwrap();
    assert_eq!(bus.kind(), "redis");
    bus.close().await.unwrap();
    let err =
        create_event_bus(&serde_json::json!({"backend": "redis", "url": "redis://127.0.0.1:1"}))
            .await
            .unwrap_err();
    assert!(matches!(err, EventBusError::Connect { .. }), "{err}");
    let err = create_event_bus(&serde_json::json!({"backend": "redis", "hots": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "hots"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_publishes_all_succeed() {
    let Some(url) = url() else { return };
    let bus: Arc<dyn EventBus> = Arc::new(RedisEventBus::connect(fast_config(&url)).await.unwrap());
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

/// A server that stops answering (frozen: the TCP connection stays up, nothing comes back)
/// fails a publish within the response timeout instead of hanging it; the subscription notices
/// within its probe interval, and once the server answers again it reconnects, tells its
/// subscriber to resync, and delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_publishes_within_the_deadline_and_subscriptions_recover() {
    use dynreg_event_bus::conformance::frozen_server_fails_publishes_and_recovers;
    use std::time::Duration;
    let Some(url) = url() else { return };
    let hostport = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let target: std::net::SocketAddr = hostport.parse().unwrap();
    assert!(target.ip().is_loopback());
    let proxy = FreezableProxy::start(target).await;
    let mut config = fast_config(&format!("redis://127.0.0.1:{}", proxy.port));
    config.connection.connect_timeout = Duration::from_millis(700);
    config.connection.probe_interval = Duration::from_millis(300);
    let bus = RedisEventBus::connect(config).await.unwrap();
    frozen_server_fails_publishes_and_recovers(&bus, &proxy).await;
}

/// A bus on the application's own `redis::Client` works as one built from a URL.
#[tokio::test]
async fn a_bus_on_the_applications_own_client() {
    let Some(url) = url() else { return };
    let client = redis::Client::open(url.as_str()).unwrap();
    let bus = RedisEventBus::with_client(client, fast_config("redis://ignored:1"))
        .await
        .unwrap();
    let topic = format!("{}:bots", unique_prefix("ownclient"));
    let mut sub = bus.subscribe(&topic).await.unwrap();
    let event = numbered(1);
    bus.publish(&topic, &event).await.unwrap();
    assert_eq!(next_event(&mut sub, "own client").await.1, event);
    assert!(format!("{bus:?}").contains("127.0.0.1"), "{bus:?}");
    bus.close().await.unwrap();
}
