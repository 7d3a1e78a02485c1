//! Write options: status, metadata and the optimistic-concurrency condition of a register.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::Status;

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

/// Options of [`crate::RegistryBackend::register_with`].
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
