//! The names of the key layout: the folder and file names every backend
//! writes under. The key layout (`keys`) and the tenant contexts (`tenant`) both import them
//! from here, so neither module depends on the other for them.

/// The index and status document of a knowledge base.
pub const METADATA_FILE: &str = "_metadata.json";
/// The folder of a knowledge base's raw files.
pub const CONTENT_DIR: &str = "content";
/// The folder of a knowledge base's snapshots.
pub const SNAPSHOTS_DIR: &str = "_snapshots";
/// Domain ids must not start with this (it marks the layout's own names).
pub const RESERVED_DOMAIN_PREFIX: &str = "_";
/// The file backend's write-ahead journal, relative to a knowledge base's folder (index
/// writes land here before compaction into `_metadata.json`).
pub const JOURNAL_FILE: &str = "_dynreg/journal.jsonl";
/// The S3 backend's index journal folder, relative to a knowledge base's folder (one record
/// object per index write, `<epoch>/<seq>.json`).
pub const JOURNAL_DIR: &str = "_dynreg/journal";
/// The one segment every tenant-scoped state key is rooted in.
pub const SCOPED_STATE_ROOT: &str = "_scoped";
