//! Write options: status, metadata and the optimistic-concurrency condition of a register.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::{Registration, Status};

/// The condition a conditional write checks atomically before it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WriteCondition {
    /// Unconditional upsert (the original's behaviour).
    #[default]
    Any,
    /// The id must not exist (in any status): create only.
    MustNotExist,
    /// The id must exist at exactly this revision: compare-and-swap.
    Revision(u64),
}

impl fmt::Display for WriteCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteCondition::Any => f.write_str("any state"),
            WriteCondition::MustNotExist => f.write_str("no registration"),
            WriteCondition::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

impl WriteCondition {
    /// Checks the condition against the current revision of the id (`None`: absent).
    pub fn check(&self, bot_id: &str, actual: Option<u64>) -> crate::Result<()> {
        let ok = match (self, actual) {
            (WriteCondition::Any, _) => true,
            (WriteCondition::MustNotExist, None) => true,
            (WriteCondition::Revision(r), Some(a)) => *r == a,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(crate::RegistryError::Conflict {
                bot_id: bot_id.to_owned(),
                expected: *self,
                actual,
            })
        }
    }
}

/// Options of [`crate::RegistryBackendExt::register_with`].
#[derive(Clone, Debug, Default)]
pub struct RegisterOptions {
    /// The status to store (default active).
    pub status: Status,
    /// The metadata to store; it replaces the previous metadata wholesale (default empty).
    pub metadata: Arc<Map<String, Value>>,
    /// The optimistic-concurrency condition (default unconditional).
    pub condition: WriteCondition,
}

impl RegisterOptions {
    /// Sets the status.
    pub fn status(mut self, status: impl Into<Status>) -> Self {
        self.status = status.into();
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Arc::new(metadata);
        self
    }

    /// Requires the id to be absent.
    pub fn create_only(mut self) -> Self {
        self.condition = WriteCondition::MustNotExist;
        self
    }

    /// Requires the id to be at `revision`.
    pub fn if_revision(mut self, revision: u64) -> Self {
        self.condition = WriteCondition::Revision(revision);
        self
    }
}

/// What a write did to its id, as the backend saw it inside the write itself (so it is exact
/// even when other writers race it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// The id does not exist and nothing was written (a deactivate of a missing id).
    Absent,
    /// Nothing was written: an identical re-register, or deactivating an inactive registration.
    Unchanged,
    /// The id did not exist and the write created it.
    Created,
    /// The id existed and the write changed it.
    Updated,
}

impl WriteEffect {
    /// Whether the write committed a change (and so took a new revision).
    pub fn changed(self) -> bool {
        matches!(self, WriteEffect::Created | WriteEffect::Updated)
    }
}

/// The result of [`crate::RegistryBackend::register_reporting`]: the registration now stored
/// (for [`WriteEffect::Unchanged`], the one that was already there) and what the write did.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The stored registration.
    pub registration: Registration,
    /// What the write did.
    pub effect: WriteEffect,
}

/// The result of [`crate::RegistryBackend::deactivate_reporting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deactivation {
    /// [`WriteEffect::Absent`], [`WriteEffect::Unchanged`] (already inactive) or
    /// [`WriteEffect::Updated`].
    pub effect: WriteEffect,
    /// The revision the deactivation committed at (`None` when nothing was written).
    pub revision: Option<u64>,
}

impl Registered {
    /// A no-op: `current` stays as it is.
    pub fn unchanged(current: Registration) -> Self {
        Registered {
            registration: current,
            effect: WriteEffect::Unchanged,
        }
    }

    /// `registration` was written; `existed` says whether the id was there before.
    pub fn written(registration: Registration, existed: bool) -> Self {
        Registered {
            registration,
            effect: if existed {
                WriteEffect::Updated
            } else {
                WriteEffect::Created
            },
        }
    }
}

impl Deactivation {
    /// The id does not exist.
    pub const ABSENT: Deactivation = Deactivation {
        effect: WriteEffect::Absent,
        revision: None,
    };

    /// The registration was already inactive.
    pub const UNCHANGED: Deactivation = Deactivation {
        effect: WriteEffect::Unchanged,
        revision: None,
    };

    /// Deactivated at `revision`.
    pub fn at(revision: u64) -> Self {
        Deactivation {
            effect: WriteEffect::Updated,
            revision: Some(revision),
        }
    }
}
