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
