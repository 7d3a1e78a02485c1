//! `ReloadMode`: where a hot-reload manager learns about registry changes.

use std::fmt;

/// How a [`crate::HotReloadManager`] learns about changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadMode {
    /// Poll the registry's change feed every interval (no bus needed).
    Polling,
    /// React to registry change events on the bus; on a resync signal (missed events) catch up
    /// through the change feed. An event is published after its write commits, so a write
    /// whose process dies between the two reaches event-driven replicas only at their next
    /// catch-up (a resync or a restart); [`ReloadMode::Hybrid`] bounds that by one poll interval.
    EventDriven,
    /// Both: events for low latency, polling so that lost events (a dead bus) still converge
    /// within one poll interval.
    Hybrid,
}

impl ReloadMode {
    /// The original's wire string (`polling`, `event_driven`, `hybrid`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadMode::Polling => "polling",
            ReloadMode::EventDriven => "event_driven",
            ReloadMode::Hybrid => "hybrid",
        }
    }

    /// Whether this mode polls.
    pub fn polls(self) -> bool {
        matches!(self, ReloadMode::Polling | ReloadMode::Hybrid)
    }

    /// Whether this mode listens to events.
    pub fn listens(self) -> bool {
        matches!(self, ReloadMode::EventDriven | ReloadMode::Hybrid)
    }
}

impl fmt::Display for ReloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
