//! Capped exponential back-off whose jitter survives the cap (the original applied the
//! cap after the jitter, so every replica retried at exactly 30 s).

use std::time::Duration;

/// Reconnect delays: `min(base * 2^(n-1), max)`, then scaled by a random factor in
/// `[1 - jitter, 1]`, so the delay never exceeds `max` and replicas never fall into lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// A back-off starting at `base`, capped at `max`, with 20 % jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            jitter: 0.2,
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(30);
        let raw = self.base.as_secs_f64() * f64::from(1u32 << exp);
        let capped = raw.min(self.max.as_secs_f64());
        let factor = 1.0 - self.jitter * rand::random::<f64>();
        Duration::from_secs_f64(capped * factor)
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn grows_caps_and_keeps_jitter_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(
            first <= Duration::from_millis(100) && first >= Duration::from_millis(80),
            "{first:?}"
        );
        let mut at_cap = Vec::new();
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1), "{d:?}");
            at_cap.push(d);
        }
        let tail = &at_cap[10..];
        assert!(tail.iter().all(|d| *d >= Duration::from_millis(800)));
        // Jitter survives the cap: the capped delays are not all identical.
        assert!(tail.iter().any(|d| *d != tail[0]));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
