//! Timing loops of the cache's hit path (`cargo bench -p dynreg-cache`): `get_or_create` hits
//! on one task and on two threads, over 8 hot keys per task and random over 10,000 cached ids,
//! and hits on one shared key from two threads (the worst case for shared writes).
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dynreg_cache::{CachingRegistryManager, InstanceFactory};
use dynreg_registry_core::{InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::{Value, json};

struct Factory;

#[async_trait]
impl InstanceFactory<Arc<Value>> for Factory {
    type Error = std::convert::Infallible;
    async fn create(&self, _id: &str, config: Arc<Value>) -> Result<Arc<Value>, Self::Error> {
        Ok(config)
    }
}

#[derive(Clone, Copy)]
enum Keys {
    /// 8 keys per task, different tasks different keys.
    Hot8,
    /// Random over all cached ids.
    Random,
    /// Every task the same key.
    Shared,
}

async fn cache(ids: usize) -> CachingRegistryManager<Arc<Value>> {
    let backend = Arc::new(InMemoryBackend::new());
    for i in 0..ids {
        backend
            .register(&format!("bot-{i}"), json!({"i": i}))
            .await
            .unwrap();
    }
    let cache = CachingRegistryManager::builder(backend as Arc<dyn RegistryBackend>, Factory)
        .max_size(Some(ids))
        .ttl(Some(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    for i in 0..ids {
        cache.get_or_create(&format!("bot-{i}")).await.unwrap();
    }
    cache
}

/// Hits per second (and ns per hit per task) with `threads` tasks on a `threads`-worker runtime.
fn hits(threads: usize, keys: Keys, ids: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = cache(ids).await;
        const PER: usize = 4_000_000;
        let t = Instant::now();
        let tasks: Vec<_> = (0..threads)
            .map(|w| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let names: Vec<String> = match keys {
                        Keys::Hot8 => (0..8).map(|k| format!("bot-{}", w * 8 + k)).collect(),
                        Keys::Shared => vec!["bot-0".to_owned(); 8],
                        Keys::Random => {
                            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
                            (0..4096)
                                .map(|_| {
                                    x ^= x << 13;
                                    x ^= x >> 7;
                                    x ^= x << 17;
                                    format!("bot-{}", x as usize % ids)
                                })
                                .collect()
                        }
                    };
                    let mask = names.len() - 1;
                    let start = Instant::now();
                    let mut sum = 0usize;
                    for i in 0..PER {
                        let b = cache.get_or_create(&names[i & mask]).await.unwrap();
                        sum += Arc::strong_count(&b) & 1;
                    }
                    std::hint::black_box(sum);
                    start.elapsed()
                })
            })
            .collect();
        let mut per_task = Duration::ZERO;
        for t in tasks {
            per_task = per_task.max(t.await.unwrap());
        }
        let rate = (threads * PER) as f64 / t.elapsed().as_secs_f64();
        (rate, per_task.as_nanos() as f64 / PER as f64)
    })
}

fn main() {
    for (label, threads, keys, ids) in [
        ("1 task, 8 hot keys", 1, Keys::Hot8, 64),
        ("1 task, random over 10k", 1, Keys::Random, 10_000),
        ("2 threads, 8 hot keys each", 2, Keys::Hot8, 64),
        ("2 threads, random over 10k", 2, Keys::Random, 10_000),
        ("2 threads, one shared key", 2, Keys::Shared, 64),
    ] {
        let (rate, ns) = hits(threads, keys, ids);
        println!(
            "cache hit get_or_create [{label}]: {:.1}M hits/s ({ns:.1} ns per hit per task)",
            rate / 1e6
        );
    }
}
