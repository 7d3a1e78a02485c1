//! Buffered touches: a touching read records `last_accessed_at` in memory and the SQL backends
//! write the buffered touches in one batch at most once per touch resolution, so hot reads are
//! not writes. A touch only ever raises `last_accessed_at` (`max(stored, touched)`) and never
//! rewrites anything else, so it cannot revert a concurrent register.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pending touches of one backend instance.
#[derive(Debug)]
pub(crate) struct TouchBuffer {
    resolution: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    pending: HashMap<String, i64>,
    last_flush: Instant,
}

impl TouchBuffer {
    pub fn new(resolution: Duration) -> Self {
        TouchBuffer {
            resolution,
            state: Mutex::new(State {
                pending: HashMap::new(),
                last_flush: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a touch of `bot_id` at `micros` if the stored value is a resolution older;
    /// returns the batch to write when a flush is due (the caller writes it).
    pub fn touch(
        &self,
        bot_id: &str,
        stored_micros: i64,
        micros: i64,
    ) -> Option<Vec<(String, i64)>> {
        let mut s = self.lock();
        let known = s
            .pending
            .get(bot_id)
            .copied()
            .unwrap_or(stored_micros)
            .max(stored_micros);
        if micros.saturating_sub(known) as u128 >= self.resolution.as_micros() {
            s.pending.insert(bot_id.to_owned(), micros);
        }
        if !s.pending.is_empty() && s.last_flush.elapsed() >= self.resolution {
            s.last_flush = Instant::now();
            Some(s.pending.drain().collect())
        } else {
            None
        }
    }

    /// The latest buffered touch of `bot_id`, if any.
    pub fn pending(&self, bot_id: &str) -> Option<i64> {
        self.lock().pending.get(bot_id).copied()
    }

    /// Everything buffered (for `close`).
    pub fn drain(&self) -> Vec<(String, i64)> {
        self.lock().pending.drain().collect()
    }

    /// Puts a batch back after a failed write, keeping newer touches.
    pub fn restore(&self, batch: Vec<(String, i64)>) {
        let mut s = self.lock();
        for (id, t) in batch {
            let e = s.pending.entry(id).or_insert(t);
            *e = (*e).max(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_are_throttled_and_batched() {
        let b = TouchBuffer::new(Duration::from_millis(30));
        assert!(
            b.touch("a", 0, 10).is_none(),
            "too recent to record (10 µs < 30 ms)"
        );
        assert!(b.pending("a").is_none());
        assert!(
            b.touch("a", 0, 40_000).is_none(),
            "recorded, flush not yet due"
        );
        assert_eq!(b.pending("a"), Some(40_000));
        std::thread::sleep(Duration::from_millis(35));
        let batch = b.touch("b", 0, 50_000).expect("flush due");
        assert_eq!(batch.len(), 2);
        assert!(b.pending("a").is_none());
        b.restore(batch);
        assert_eq!(b.drain().len(), 2);
    }
}
