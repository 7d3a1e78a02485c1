//! The change log of a file registry and the per-instance index over it.
//!
//! `_registry/changes.log` is a header line followed by one JSON line per committed write, in
//! revision order: `{"rev":N,"op":"put","id":...,"doc":{...}}` (the full document) or
//! `{"rev":N,"op":"del","id":...}`. Appending the fsynced line is the commit point of a write;
//! the document file is brought up to date right after (or, after a crash, by the next writer,
//! see `recover`). Compaction rewrites the file (new `generation` in the header) keeping only
//! the latest line per id and at most the retained number of deletions.
//!
//! Each instance keeps a [`LogIndex`]: revision → (id, byte range) of the latest line of each
//! id. Syncing reads only the bytes appended since the last sync, so `changes_since` costs the
//! new lines plus one read per reported change, never a scan of the documents.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dynreg_registry_core::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{corrupt, io_error};

/// The header line of the log.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    /// Format version.
    pub dynreg_file_registry: u32,
    /// Changes every time the file is (re)created, so instances notice a rewrite.
    pub generation: u64,
    /// The registry revision when the file was written (the lines after it go higher).
    pub revision: u64,
    /// Cursors below this cannot be answered (deletions before it were compacted away).
    pub horizon: u64,
}

/// What a log line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Op {
    /// Created or replaced the document (`doc` holds it).
    Put,
    /// Removed the document.
    Del,
}

/// A log line as written.
#[derive(Serialize)]
pub(super) struct RecordOut<'a> {
    pub rev: u64,
    pub op: Op,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

/// A log line as read back in full.
#[derive(Deserialize)]
pub(super) struct Record {
    pub rev: u64,
    pub op: Op,
    pub id: String,
    #[serde(default)]
    pub doc: Option<Value>,
}

/// A log line without its document (what syncing needs).
#[derive(Deserialize)]
struct RecordHead {
    rev: u64,
    op: Op,
    id: String,
}

/// Where the latest line of one id is.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub id: String,
    pub op: Op,
    pub offset: u64,
    pub len: u64,
}

/// One instance's view of the log.
#[derive(Debug, Default)]
pub(super) struct LogIndex {
    /// The generation read from the header (0: nothing loaded).
    pub generation: u64,
    /// Bytes consumed: the header and every complete line.
    pub offset: u64,
    /// The highest committed revision.
    pub revision: u64,
    /// The compaction horizon.
    pub horizon: u64,
    /// Lines in the file (for the compaction trigger).
    pub records: u64,
    /// Revision → the latest line of its id.
    pub entries: BTreeMap<u64, Entry>,
    latest: HashMap<String, u64>,
    /// How many entries are deletions.
    pub tombstones: u64,
    /// Every revision up to this one is known to be applied to the documents.
    pub applied: u64,
    /// The revision of the last line read (lines must ascend).
    last_line: u64,
}

impl LogIndex {
    fn add(&mut self, rev: u64, id: String, op: Op, offset: u64, len: u64) {
        if let Some(old) = self.latest.insert(id.clone(), rev)
            && let Some(e) = self.entries.remove(&old)
            && e.op == Op::Del
        {
            self.tombstones -= 1;
        }
        if op == Op::Del {
            self.tombstones += 1;
        }
        self.entries.insert(
            rev,
            Entry {
                id,
                op,
                offset,
                len,
            },
        );
        self.revision = self.revision.max(rev);
        self.last_line = rev;
        self.records += 1;
    }

    /// Records a line this instance just appended at `self.offset`.
    pub fn push(&mut self, rev: u64, id: &str, op: Op, len: u64) {
        let offset = self.offset;
        self.add(rev, id.to_owned(), op, offset, len);
        self.offset += len + 1;
    }

    /// Reads what was appended since the last sync (everything after a rewrite). Returns the
    /// handle it read, so records can be read from the same file version; `None` when the log
    /// does not exist yet.
    pub fn sync(&mut self, path: &Path) -> Result<Option<File>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self = LogIndex::default();
                return Ok(None);
            }
            Err(e) => return Err(io_error("read change log", None, path, e)),
        };
        let mut reader = BufReader::new(file);
        let mut first = String::new();
        let n = reader
            .read_line(&mut first)
            .map_err(|e| io_error("read change log", None, path, e))?;
        if !first.ends_with('\n') {
            return Err(corrupt(path, "the change log has no complete header line"));
        }
        let header: Header = serde_json::from_str(&first)
            .map_err(|e| corrupt(path, format!("invalid change log header: {e}")))?;
        if header.generation != self.generation {
            *self = LogIndex {
                generation: header.generation,
                offset: n as u64,
                revision: header.revision,
                horizon: header.horizon,
                ..LogIndex::default()
            };
        }
        reader
            .seek(SeekFrom::Start(self.offset))
            .map_err(|e| io_error("read change log", None, path, e))?;
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .map_err(|e| io_error("read change log", None, path, e))?;
        let mut pos = 0;
        // A trailing line without its newline is a write in progress (or torn by a crash and
        // truncated by the next writer): it is not committed, so it is not read.
        while let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') {
            let line = &buf[pos..pos + nl];
            let head: RecordHead = serde_json::from_slice(line).map_err(|e| {
                corrupt(
                    path,
                    format!("invalid change log line at byte {}: {e}", self.offset),
                )
            })?;
            if head.rev <= self.last_line {
                return Err(corrupt(
                    path,
                    format!(
                        "change log line at byte {} has revision {} after revision {}",
                        self.offset, head.rev, self.last_line
                    ),
                ));
            }
            let offset = self.offset;
            self.add(head.rev, head.id, head.op, offset, nl as u64);
            self.offset += nl as u64 + 1;
            pos += nl + 1;
        }
        Ok(Some(reader.into_inner()))
    }
}

/// Reads the full line of `entry` (the line of revision `rev`) from `file`.
pub(super) fn read_record(file: &mut File, path: &Path, rev: u64, entry: &Entry) -> Result<Record> {
    let mut buf = vec![0; entry.len as usize];
    file.seek(SeekFrom::Start(entry.offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| io_error("read change log", Some(&entry.id), path, e))?;
    let rec: Record = serde_json::from_slice(&buf).map_err(|e| {
        corrupt(
            path,
            format!("invalid change log line at byte {}: {e}", entry.offset),
        )
    })?;
    if rec.id != entry.id || rec.rev != rev {
        return Err(corrupt(
            path,
            format!("change log line at byte {} moved", entry.offset),
        ));
    }
    Ok(rec)
}

/// A fresh generation number (never 0).
pub(super) fn new_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mix = nanos ^ (u64::from(std::process::id()) << 32) ^ N.fetch_add(1, Ordering::Relaxed);
    mix.max(1)
}

/// The bytes of a header line.
pub(super) fn header_line(generation: u64, revision: u64, horizon: u64) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Header {
        dynreg_file_registry: 1,
        generation,
        revision,
        horizon,
    })
    .expect("a header always serialises");
    line.push(b'\n');
    line
}
