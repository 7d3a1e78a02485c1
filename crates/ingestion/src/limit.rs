//! Rate limiting of embedding (a paid or shared embedding service): the knowledge base asks
//! its [`RateLimiter`] for one permit per chunk before each batch is embedded (the original
//! asks once per chunk, as it embeds one chunk per call).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// Grants permits for a named resource (`"embed"`), waiting as long as needed.
#[async_trait]
pub trait RateLimiter: std::fmt::Debug + Send + Sync {
    /// Waits until `permits` units of `resource` may be used, and uses them.
    async fn acquire(&self, resource: &str, permits: u32);
}

/// A token bucket: `rate` permits per second, up to `burst` at once. Requests larger than the
/// burst are granted in burst-sized parts.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` permits per second (positive), bursts of up to `burst` (at least 1); starts full.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes up to `want` tokens now; the wait before the rest could be taken.
    fn take(&self, want: f64) -> Result<(), Duration> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, last) = *s;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= want {
            *s = (tokens - want, now);
            Ok(())
        } else {
            *s = (tokens, now);
            Err(Duration::from_secs_f64((want - tokens) / self.rate))
        }
    }
}

#[async_trait]
impl RateLimiter for TokenBucket {
    async fn acquire(&self, _resource: &str, permits: u32) {
        let mut left = f64::from(permits);
        while left > 0.0 {
            let part = left.min(self.burst);
            match self.take(part) {
                Ok(()) => left -= part,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_grants_its_rate_after_the_first_burst() {
        let bucket = TokenBucket::new(100.0, 10);
        let start = Instant::now();
        bucket.acquire("embed", 10).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first burst is immediate"
        );
        bucket.acquire("embed", 50).await;
        let waited = start.elapsed().as_secs_f64();
        assert!(
            (0.49..0.52).contains(&waited),
            "50 permits at 100/s took {waited} s of virtual time"
        );
    }
}
