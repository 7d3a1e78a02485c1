//! Event-bus benchmark: publish→delivery latency (p50/p99 over 10,000 events), sustained
//! throughput with every event delivered, and 1,000 concurrent publishes with their error count,
//! for each bus that is built and reachable (postgres/redis via DYNREG_TEST_POSTGRES_URL /
//! DYNREG_TEST_REDIS_URL). Run: `cargo bench -p dynreg-event-bus --all-features`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use futures::StreamExt;
use std::time::{Duration, Instant};

use dynreg_event_bus::{Delivery, Event, EventBus, EventType, InMemoryEventBus, new_uuid_v4};

const LATENCY_EVENTS: usize = 10_000;
const CONCURRENT: usize = 1_000;

fn event(i: usize) -> Event {
    let mut payload = serde_json::Map::new();
    payload.insert("seq".into(), i.into());
    payload.insert("registration_id".into(), "bot-1".into());
    Event::new(EventType::Updated, "registry:configs:bot-1", payload)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn latency(bus: &Arc<dyn EventBus>) -> anyhow::Result<(Duration, Duration)> {
    let topic = format!("bench:lat:{}", &new_uuid_v4()[..8]);
    let mut sub = bus.subscribe(&topic).await?;
    let mut samples = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let ev = event(i);
        let start = Instant::now();
        bus.publish(&topic, &ev).await?;
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await? {
            Some(Delivery::Event { .. }) => {}
            Some(Delivery::Resync { reason }) => anyhow::bail!("unexpected resync {reason:?}"),
            None => anyhow::bail!("subscription ended"),
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.50), percentile(&samples, 0.99)))
}

/// How the throughput run hands events to the bus.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    /// `publish(&Event)`: the bus copies (or serialises) the event.
    Borrowed,
    /// `publish_shared(Arc<Event>)`: the in-process bus shares the caller's `Arc`.
    Shared,
}

/// Returns (delivered events/s, published events/s).
async fn throughput(
    bus: &Arc<dyn EventBus>,
    count: usize,
    window: usize,
    api: Api,
) -> anyhow::Result<(f64, f64)> {
    let topic = format!("bench:tput:{}", &new_uuid_v4()[..8]);
    let mut sub = bus.subscribe(&topic).await?;
    let consumer = tokio::spawn(async move {
        let mut received = 0usize;
        while received < count {
            match tokio::time::timeout(Duration::from_secs(30), sub.next()).await? {
                Some(Delivery::Event { .. }) => received += 1,
                Some(Delivery::Resync { reason }) => {
                    anyhow::bail!("events lost: {reason:?} after {received}")
                }
                None => anyhow::bail!("subscription ended"),
            }
        }
        Ok(Instant::now())
    });
    // Distinct events (each has its own event_id), as real publishers send; built up front.
    let events: Vec<Arc<Event>> = (0..count).map(|i| Arc::new(event(i))).collect();
    let start = Instant::now();
    // `window` publishes in flight: 1 (a plain loop) for the in-process bus, where a publish
    // completes at once; 64 for server buses, so the transport can pipeline them.
    let errors = if window == 1 {
        let mut errors = 0;
        for ev in &events {
            let result = match api {
                Api::Borrowed => bus.publish(&topic, ev).await,
                Api::Shared => bus.publish_shared(&topic, Arc::clone(ev)).await,
            };
            errors += usize::from(result.is_err());
        }
        errors
    } else {
        futures::stream::iter(events)
            .map(|ev| {
                let bus = Arc::clone(bus);
                let topic = topic.clone();
                async move {
                    match api {
                        Api::Borrowed => bus.publish(&topic, &ev).await,
                        Api::Shared => bus.publish_shared(&topic, ev).await,
                    }
                }
            })
            .buffer_unordered(window)
            .filter(|r| futures::future::ready(r.is_err()))
            .count()
            .await
    };
    let published = start.elapsed();
    anyhow::ensure!(errors == 0, "{errors} publish errors");
    let done = consumer.await??;
    Ok((
        count as f64 / (done - start).as_secs_f64(),
        count as f64 / published.as_secs_f64(),
    ))
}

async fn concurrent(bus: &Arc<dyn EventBus>) -> anyhow::Result<(usize, usize, Duration)> {
    let topic = format!("bench:conc:{}", &new_uuid_v4()[..8]);
    let mut sub = bus.subscribe(&topic).await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let bus = Arc::clone(bus);
            let topic = topic.clone();
            tokio::spawn(async move { bus.publish(&topic, &event(i)).await })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        if t.await?.is_err() {
            errors += 1;
        }
    }
    let mut received = 0;
    while received < CONCURRENT - errors {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await? {
            Some(Delivery::Event { .. }) => received += 1,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    Ok((errors, received, start.elapsed()))
}

async fn run(
    name: &str,
    bus: Arc<dyn EventBus>,
    throughput_events: usize,
    window: usize,
) -> anyhow::Result<()> {
    // Concurrency first: after a big throughput run, the allocator's one-off clean-up of a
    // million freed events would be charged to whatever runs next.
    let (errors, received, took) = concurrent(&bus).await?;
    let (p50, p99) = latency(&bus).await?;
    // Warm-up at full size (allocator heap growth), then the measured run.
    let _ = throughput(&bus, throughput_events, window, Api::Borrowed).await?;
    let (tput, publish_rate) = throughput(&bus, throughput_events, window, Api::Borrowed).await?;
    // The in-process bus also through `publish_shared` (server buses serialise either way).
    let shared = if window == 1 {
        let (rate, _) = throughput(&bus, throughput_events, window, Api::Shared).await?;
        format!("; publish_shared {rate:.0} events/s")
    } else {
        String::new()
    };
    println!(
        "| {name} | {:.1} µs | {:.1} µs | {:.0} events/s ({throughput_events} events; publish side {:.0}/s{shared}) | {errors} errors, {received} delivered, {:.1} ms |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        tput,
        publish_rate,
        took.as_secs_f64() * 1e3,
    );
    bus.close().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Everything runs in a spawned task, on the runtime's workers, as a service's code would.
    runtime.block_on(async { tokio::spawn(bench_all()).await? })
}

async fn bench_all() -> anyhow::Result<()> {
    {
        println!(
            "| bus | p50 latency | p99 latency | sustained throughput | 1,000 concurrent publishes |"
        );
        println!("|---|---|---|---|---|");
        let memory: Arc<dyn EventBus> = Arc::new(InMemoryEventBus::with_capacity(1 << 21));
        run("memory", memory, 1_000_000, 1).await?;
        run_servers().await
    }
}

#[cfg(any(feature = "postgres", feature = "redis"))]
async fn run_servers() -> anyhow::Result<()> {
    #[cfg(feature = "postgres")]
    match std::env::var("DYNREG_TEST_POSTGRES_URL") {
        Ok(url) => {
            let config =
                serde_json::json!({"backend": "postgres", "url": url, "capacity": 1 << 20});
            run(
                "postgres",
                dynreg_event_bus::create_event_bus(&config).await?,
                100_000,
                64,
            )
            .await?;
        }
        Err(_) => println!("skipped: postgres bench (DYNREG_TEST_POSTGRES_URL unset)"),
    }
    #[cfg(feature = "redis")]
    match std::env::var("DYNREG_TEST_REDIS_URL") {
        Ok(url) => {
            let config = serde_json::json!({"backend": "redis", "url": url, "capacity": 1 << 20});
            run(
                "redis",
                dynreg_event_bus::create_event_bus(&config).await?,
                100_000,
                64,
            )
            .await?;
        }
        Err(_) => println!("skipped: redis bench (DYNREG_TEST_REDIS_URL unset)"),
    }
    Ok(())
}

#[cfg(not(any(feature = "postgres", feature = "redis")))]
async fn run_servers() -> anyhow::Result<()> {
    println!("skipped: postgres and redis benches (features off)");
    Ok(())
}
