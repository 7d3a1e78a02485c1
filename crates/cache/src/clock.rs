//! The cache's clock: quanta's monotonic clock (TSC-based where the CPU has a stable one, no
//! syscall), read coarsely on hits.
//!
//! Hits compare an instance's age with the TTL on [`recent`], a time kept by one background
//! thread (started with the first cache that has a TTL) and at most about [`TICK`] old. Only
//! when that coarse age is within [`SLACK`] of the TTL does a hit read the precise clock, so a
//! hit is never served more than `SLACK` past its TTL unless the clock thread is starved for
//! longer than that. The sweeper, builds and every non-hit path read the precise clock.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub(crate) use quanta::Instant;

/// How often the coarse clock is updated.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Within this much of its TTL (by the coarse clock) a hit checks the precise clock.
pub(crate) const SLACK: Duration = Duration::from_millis(5);

static UPKEEP: OnceLock<Mutex<Option<quanta::Handle>>> = OnceLock::new();

/// The precise monotonic time.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// The coarse time (the precise time when the clock thread does not run).
pub(crate) fn recent() -> Instant {
    Instant::recent()
}

/// Starts the clock thread once per process. If another library already runs quanta's clock
/// thread, that one keeps the coarse time and this is a no-op.
pub(crate) fn start() {
    UPKEEP.get_or_init(|| Mutex::new(quanta::Upkeep::new(TICK).start().ok()));
}
