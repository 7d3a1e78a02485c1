//! The change feed: what `changes_since(revision)` answers.

use crate::model::Registration;

/// One committed change after a cursor.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The registration was created, updated or deactivated; this is its latest state.
    Upsert(Registration),
    /// The registration was removed (unregister or clear) at `revision`.
    Deleted {
        /// The removed id.
        bot_id: String,
        /// The revision of the removal.
        revision: u64,
    },
}

impl Change {
    /// The revision of this change.
    pub fn revision(&self) -> u64 {
        match self {
            Change::Upsert(r) => r.revision,
            Change::Deleted { revision, .. } => *revision,
        }
    }

    /// The id this change is about.
    pub fn bot_id(&self) -> &str {
        match self {
            Change::Upsert(r) => &r.bot_id,
            Change::Deleted { bot_id, .. } => bot_id,
        }
    }
}

/// The answer of [`crate::RegistryBackend::changes_since`].
///
/// Only the latest state of each id is reported: an id changed three times after the cursor
/// appears once, at its latest revision. Applying the changes in order to a copy taken at the
/// cursor gives the state at `current_revision`.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeFeed {
    /// Every change after the cursor, in ascending revision order.
    Changes {
        /// The changes.
        changes: Vec<Change>,
        /// The registry's revision when the feed was read; the caller's next cursor.
        current_revision: u64,
    },
    /// The registry can no longer tell what changed after the cursor (deletion history was
    /// compacted, or the cursor is ahead of this registry, e.g. after it was recreated): relist
    /// everything and continue from `current_revision`.
    Expired {
        /// The cursor the caller asked about.
        cursor: u64,
        /// The oldest cursor this registry can still answer.
        oldest_available: u64,
        /// The registry's revision now.
        current_revision: u64,
    },
}

impl ChangeFeed {
    /// The registry's revision when the feed was read.
    pub fn current_revision(&self) -> u64 {
        match self {
            ChangeFeed::Changes {
                current_revision, ..
            }
            | ChangeFeed::Expired {
                current_revision, ..
            } => *current_revision,
        }
    }
}

/// What a committed registry write did, as the replicas' caches are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new registration.
    Created,
    /// A changed registration that is (still) active, or a non-active status other than inactive.
    Updated,
    /// The registration was deactivated (soft delete).
    Deactivated,
    /// The registration was removed (hard delete).
    Deleted,
    /// The registry was cleared; `bot_id` is `None`.
    Cleared,
}

impl ChangeKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deactivated => "deactivated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Cleared => "cleared",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deactivated" => ChangeKind::Deactivated,
            "deleted" => ChangeKind::Deleted,
            "cleared" => ChangeKind::Cleared,
            _ => return None,
        })
    }

    /// Whether after this change the bot can no longer be served.
    pub fn removes(self) -> bool {
        matches!(
            self,
            ChangeKind::Deactivated | ChangeKind::Deleted | ChangeKind::Cleared
        )
    }
}

/// One committed registry change as caches see it: the data every path that carries changes
/// (an in-process listener, a bus event, a change-feed poll) reduces to. Its bus wire form
/// lives with the bus bridge (`dynreg-hot-reload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeNotice {
    /// What happened.
    pub kind: ChangeKind,
    /// The bot it happened to (`None` for [`ChangeKind::Cleared`]).
    pub bot_id: Option<String>,
    /// The registry revision of the change. `None` only for events published by hand without
    /// one (as in the original's examples): caches then treat their entry as stale.
    pub revision: Option<u64>,
}

impl ChangeNotice {
    /// A notice about one bot.
    pub fn new(kind: ChangeKind, bot_id: impl Into<String>, revision: u64) -> Self {
        ChangeNotice {
            kind,
            bot_id: Some(bot_id.into()),
            revision: Some(revision),
        }
    }

    /// The notice for a cleared registry at `revision`.
    pub fn cleared(revision: u64) -> Self {
        ChangeNotice {
            kind: ChangeKind::Cleared,
            bot_id: None,
            revision: Some(revision),
        }
    }

    /// The notice for an entry of a registry change feed.
    pub fn from_change(change: &Change) -> Self {
        match change {
            Change::Upsert(reg) => {
                let kind = if reg.is_active() {
                    ChangeKind::Updated
                } else {
                    ChangeKind::Deactivated
                };
                ChangeNotice::new(kind, reg.bot_id.clone(), reg.revision)
            }
            Change::Deleted { bot_id, revision } => {
                ChangeNotice::new(ChangeKind::Deleted, bot_id.clone(), *revision)
            }
        }
    }
}

/// Receives change notices synchronously, before the registry write that caused them returns
/// (read-your-writes in one process). Implementations must be quick and must not block:
/// caches only mark entries stale.
pub trait ChangeListener: Send + Sync {
    /// Called once per committed write.
    fn on_change(&self, notice: &ChangeNotice);
}
