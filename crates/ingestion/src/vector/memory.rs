//! The in-process vector store: exact search over contiguous `f32` arrays (no allocation per
//! row), metadata filters, and optional persistence to one file.
//!
//! Invariants:
//! - Vectors are stored **dimension-major**: one contiguous `Vec<f32>` per dimension, holding
//!   that coordinate of every row. A search adds `q[d] × column d` into one score per row —
//!   a streaming multiply-add the compiler vectorises — and skips the dimensions where the
//!   query is zero, so a sparse query (the lexical `hash` embedder's) reads only its own
//!   columns; a dense query reads everything once, as a row-major scan would. A delete moves
//!   the last row into the hole in every column, so the arrays stay dense. For the cosine
//!   metric rows are stored normalised and a search is a dot product.
//! - The metadata keys the crate's own reads, records and swaps filter on ([`KEYED`]:
//!   domain, tenant, source path, checksum, generation and the swap flags) are also kept as
//!   **interned columns**: one `u32` symbol per row and key (0 for missing or null, 1 for a
//!   value that is not a string or a boolean, which falls back to the metadata map). A filter
//!   is compiled once per call; on those keys a row's test is an integer comparison instead of
//!   a hashed map lookup, so a scan of the 14,000 rows of a corpus to find one file's rows costs
//!   microseconds. Every write that changes a row's metadata updates its symbols.
//! - The persisted file is written to a temporary file in the same folder, synced, then renamed
//!   over the old one: a crash leaves the old file or the new one, never a torn one. It starts
//!   with a magic and a format version and ends with a CRC-32 of everything before it, so a
//!   torn, truncated or foreign file is refused with an error naming it, never half-loaded.

use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Filter, SearchHit, VectorError, VectorRecord, VectorStore};

const MAGIC: &[u8; 8] = b"DYNRVEC\0";
const FORMAT_VERSION: u32 = 1;

/// How similarity is scored (higher is nearer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Cosine similarity, in [-1, 1]. The default.
    #[default]
    Cosine,
    /// The dot product.
    DotProduct,
    /// `1 / (1 + euclidean distance)`, as the original.
    Euclidean,
}

impl Metric {
    /// The metric of a config name (`cosine`, `dot_product`/`inner_product`, `euclidean`/`l2`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cosine" => Metric::Cosine,
            "dot_product" | "inner_product" | "dot" => Metric::DotProduct,
            "euclidean" | "l2" => Metric::Euclidean,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Metric::Cosine => 0,
            Metric::DotProduct => 1,
            Metric::Euclidean => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        [Metric::Cosine, Metric::DotProduct, Metric::Euclidean]
            .into_iter()
            .find(|m| m.code() == c)
    }
}

/// The memory store's options (the original's keys: `dimensions`, `metric`, `persist_path`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryVectorStoreConfig {
    /// The width of every vector.
    pub dimensions: usize,
    /// The similarity.
    pub metric: Metric,
    /// Where the store persists (`flush`) and is reloaded from on open; `None` keeps it in memory.
    pub persist_path: Option<PathBuf>,
}

impl MemoryVectorStoreConfig {
    /// An in-memory cosine store of `dimensions`.
    pub fn new(dimensions: usize) -> Self {
        MemoryVectorStoreConfig {
            dimensions,
            metric: Metric::Cosine,
            persist_path: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    ids: Vec<String>,
    /// `cols[d][row]`: coordinate `d` of every row.
    cols: Vec<Vec<f32>>,
    /// Squared norms of the rows (for the euclidean metric).
    norms2: Vec<f32>,
    meta: Vec<Arc<Map<String, Value>>>,
    index: FastMap<String, usize>,
    /// `keyed[k][row]`: the symbol of the row's value of `KEYED[k]`.
    keyed: Vec<Vec<u32>>,
    symbols: Symbols,
    /// Counts writes; `saved` is the count the file holds.
    version: u64,
}

/// Maps keyed by strings the store already holds (ids, metadata values): foldhash, seeded per
/// process, several times cheaper than SipHash on these short keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The metadata keys kept as interned columns (see the module docs).
pub(crate) const KEYED: [&str; 7] = [
    "domain_id",
    "tenant_id",
    "source_path",
    "checksum",
    "_generation",
    "_pending",
    "_stale",
];

/// The symbol of a missing or null value.
const ABSENT: u32 = 0;
/// The symbol of a value that is neither a string nor a boolean (tested on the map).
const OTHER: u32 = 1;

/// `false` and `true`.
const FALSE: u32 = 2;
const TRUE: u32 = 3;
/// The first string symbol.
const FIRST_STR: u32 = 4;

/// Interned string values (booleans have fixed symbols).
#[derive(Default)]
struct Symbols {
    of: FastMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Symbols {
    fn intern(&mut self, v: Option<&Value>) -> u32 {
        match v {
            None | Some(Value::Null) => ABSENT,
            Some(Value::Bool(b)) => [FALSE, TRUE][usize::from(*b)],
            Some(Value::String(s)) => {
                if let Some(n) = self.of.get(s.as_str()) {
                    return *n;
                }
                let n = self.values.len() as u32 + FIRST_STR;
                self.values.push(s.as_str().into());
                self.of.insert(s.as_str().into(), n);
                n
            }
            Some(_) => OTHER,
        }
    }

    /// The symbol of `v` if it is interned (strings and booleans only).
    fn lookup(&self, v: &Value) -> Option<u32> {
        match v {
            Value::String(s) => self.of.get(s.as_str()).copied(),
            Value::Bool(b) => Some([FALSE, TRUE][usize::from(*b)]),
            _ => None,
        }
    }

    /// The value of a string or boolean symbol.
    fn value(&self, sym: u32) -> Value {
        match sym {
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            s if s >= FIRST_STR => Value::String(self.values[(s - FIRST_STR) as usize].to_string()),
            _ => Value::Null,
        }
    }
}

impl Inner {
    fn empty(dims: usize) -> Self {
        Inner {
            cols: vec![Vec::new(); dims],
            keyed: vec![Vec::new(); KEYED.len()],
            ..Inner::default()
        }
    }

    fn push_keys(&mut self, meta: &Map<String, Value>) {
        if self.keyed.len() != KEYED.len() {
            self.keyed = vec![Vec::new(); KEYED.len()];
        }
        for (col, key) in self.keyed.iter_mut().zip(KEYED) {
            col.push(self.symbols.intern(meta.get(key)));
        }
    }

    /// Re-derives the symbols of `row` from its metadata (after a metadata change).
    fn rekey(&mut self, row: usize) {
        let meta = self.meta[row].clone();
        for (col, key) in self.keyed.iter_mut().zip(KEYED) {
            col[row] = self.symbols.intern(meta.get(key));
        }
    }

    /// Rebuilds the symbol table from the live rows once most of its values are dead (each
    /// ingest interns a new generation and the checksums of the files it changed).
    fn compact_symbols(&mut self) {
        if self.symbols.values.len() <= 1024 + 2 * self.ids.len() {
            return;
        }
        self.symbols = Symbols::default();
        self.keyed = vec![Vec::with_capacity(self.ids.len()); KEYED.len()];
        for row in 0..self.ids.len() {
            let meta = self.meta[row].clone();
            for (col, key) in self.keyed.iter_mut().zip(KEYED) {
                col.push(self.symbols.intern(meta.get(key)));
            }
        }
    }

    /// `filter` compiled against this store's symbols.
    fn compile<'f>(&self, filter: &'f Filter) -> Compiled<'f> {
        let check = |(key, value): (&'f String, &'f Value)| match KEYED
            .iter()
            .position(|k| *k == key.as_str())
        {
            Some(col) => {
                let allowed = match value {
                    Value::Array(vs) => vs.iter().filter_map(|v| self.symbols.lookup(v)).collect(),
                    v => self.symbols.lookup(v).into_iter().collect(),
                };
                Check::Keyed {
                    col,
                    allowed,
                    key,
                    value,
                }
            }
            None => Check::Meta { key, value },
        };
        Compiled {
            all: filter.is_empty(),
            conditions: filter.conditions().iter().map(check).collect(),
            exclusions: filter.exclusions().iter().map(check).collect(),
        }
    }
}

/// A filter compiled for one store (see [`Inner::compile`]); the same semantics as
/// [`Filter::matches`].
struct Compiled<'f> {
    all: bool,
    conditions: Vec<Check<'f>>,
    exclusions: Vec<Check<'f>>,
}

enum Check<'f> {
    Keyed {
        col: usize,
        /// The symbols of the condition's string and boolean values.
        allowed: Vec<u32>,
        key: &'f str,
        value: &'f Value,
    },
    Meta {
        key: &'f str,
        value: &'f Value,
    },
}

impl Check<'_> {
    fn holds(&self, inner: &Inner, row: usize) -> bool {
        let on_map = |key: &str, value: &Value| match inner.meta[row].get(key) {
            None | Some(Value::Null) => false,
            Some(m) => super::value_matches(value, m),
        };
        match self {
            Check::Keyed {
                col,
                allowed,
                key,
                value,
            } => match inner.keyed[*col][row] {
                ABSENT => false,
                OTHER => on_map(key, value),
                s => allowed.contains(&s),
            },
            Check::Meta { key, value } => on_map(key, value),
        }
    }
}

impl Compiled<'_> {
    fn matches(&self, inner: &Inner, row: usize) -> bool {
        self.all
            || (self.conditions.iter().all(|c| c.holds(inner, row))
                && !self.exclusions.iter().any(|c| c.holds(inner, row)))
    }

    fn rows(&self, inner: &Inner) -> Vec<usize> {
        (0..inner.ids.len())
            .filter(|r| self.matches(inner, *r))
            .collect()
    }
}

/// The in-process store.
pub struct MemoryVectorStore {
    config: MemoryVectorStoreConfig,
    inner: RwLock<Inner>,
    saved: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MemoryVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVectorStore")
            .field("config", &self.config)
            .field("len", &self.read().ids.len())
            .finish()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Rows per search thread below which one thread scores everything.
const ROWS_PER_THREAD: usize = 16 * 1024;

/// Scores of rows `offset..offset + scores.len()`: `Σ_d q[d] × cols[d][row]`, skipping the
/// dimensions where the query is zero. Large stores are split across the machine's cores
/// (scoped threads over disjoint row ranges).
fn score_rows(cols: &[Vec<f32>], query: &[f32], scores: &mut [f32], offset: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dense = query.iter().filter(|q| **q != 0.0).count() * 4 > query.len();
    if threads > 1 && dense && scores.len() >= 2 * ROWS_PER_THREAD {
        let per = scores
            .len()
            .div_ceil(threads.min(scores.len() / ROWS_PER_THREAD));
        std::thread::scope(|scope| {
            for (i, part) in scores.chunks_mut(per).enumerate() {
                scope.spawn(move || score_block(cols, query, part, offset + i * per));
            }
        });
    } else {
        score_block(cols, query, scores, offset);
    }
}

/// One thread's rows, in blocks that keep their scores in the L1 cache.
fn score_block(cols: &[Vec<f32>], query: &[f32], scores: &mut [f32], offset: usize) {
    const BLOCK: usize = 2048;
    for (b, part) in scores.chunks_mut(BLOCK).enumerate() {
        let start = offset + b * BLOCK;
        for (col, q) in cols.iter().zip(query) {
            if *q != 0.0 {
                axpy(part, *q, &col[start..start + part.len()]);
            }
        }
    }
}

/// `acc += a × x`, element-wise.
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (s, v) in acc.iter_mut().zip(x) {
        *s += a * v;
    }
}

/// `v / |v|` in place (a zero vector stays zero).
fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    normalise(&mut v);
    v
}

/// A score and a row, ordered by score reversed (so a `BinaryHeap` keeps the worst on top).
#[derive(PartialEq)]
struct Ranked(f32, usize);
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl MemoryVectorStore {
    /// Opens the store, loading `persist_path` if it exists.
    pub fn open(config: MemoryVectorStoreConfig) -> Result<Self, VectorError> {
        if config.dimensions == 0 {
            return Err(VectorError::Config("dimensions must be positive".into()));
        }
        let store = MemoryVectorStore {
            inner: RwLock::new(Inner::empty(config.dimensions)),
            config,
            saved: Default::default(),
        };
        if let Some(path) = &store.config.persist_path
            && path.exists()
        {
            let loaded = load(path, store.config.dimensions, store.config.metric)?;
            *store.write() = loaded;
        }
        Ok(store)
    }

    /// An in-memory cosine store of `dimensions`.
    pub fn new(dimensions: usize) -> Result<Self, VectorError> {
        Self::open(MemoryVectorStoreConfig::new(dimensions))
    }

    /// The options.
    pub fn config(&self) -> &MemoryVectorStoreConfig {
        &self.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, id: &str, v: &[f32]) -> Result<(), VectorError> {
        super::check_width(id, v, self.config.dimensions)
    }

    /// Removes `rows`: a few by moving the last row into each hole, many by compacting every
    /// column in one sequential pass (a swap per row and column would touch every column's
    /// cache lines once per removed row).
    fn remove_rows(inner: &mut Inner, mut rows: Vec<usize>) -> u64 {
        rows.sort_unstable();
        rows.dedup();
        let n = rows.len() as u64;
        if n == 0 {
            return 0;
        }
        if rows.len() * 16 < inner.ids.len() {
            for row in rows.into_iter().rev() {
                let last = inner.ids.len() - 1;
                let id = inner.ids.swap_remove(row);
                inner.meta.swap_remove(row);
                inner.norms2.swap_remove(row);
                for col in &mut inner.cols {
                    col.swap_remove(row);
                }
                for col in &mut inner.keyed {
                    col.swap_remove(row);
                }
                inner.index.remove(&id);
                if row != last {
                    inner.index.insert(inner.ids[row].clone(), row);
                }
            }
        } else {
            let mut keep = vec![true; inner.ids.len()];
            for row in &rows {
                keep[*row] = false;
                inner.index.remove(&inner.ids[*row]);
            }
            fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
                let mut i = 0;
                v.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
            retain(&mut inner.ids, &keep);
            retain(&mut inner.meta, &keep);
            retain(&mut inner.norms2, &keep);
            for col in &mut inner.cols {
                retain(col, &keep);
            }
            for col in &mut inner.keyed {
                retain(col, &keep);
            }
            // Rows before the first hole kept their place.
            for (row, id) in inner.ids.iter().enumerate().skip(rows[0]) {
                if let Some(at) = inner.index.get_mut(id) {
                    *at = row;
                }
            }
        }
        inner.compact_symbols();
        inner.version += 1;
        n
    }

    /// Merges `patch` into the metadata of `rows`, keeping their symbols in step (the patch
    /// sets the same value on every row, so each patched column gets one symbol).
    fn patch(inner: &mut Inner, rows: &[usize], patch: &Map<String, Value>) {
        let keyed: Vec<(usize, u32)> = patch
            .iter()
            .filter_map(|(k, v)| {
                let col = KEYED.iter().position(|c| c == k)?;
                Some((col, inner.symbols.intern(Some(v))))
            })
            .collect();
        for row in rows {
            let m = Arc::make_mut(&mut inner.meta[*row]);
            for (k, v) in patch {
                m.insert(k.clone(), v.clone());
            }
            for (col, sym) in &keyed {
                inner.keyed[*col][*row] = *sym;
            }
        }
    }

    /// Writes the store to `persist_path` atomically (nothing without one).
    pub fn save(&self) -> Result<(), VectorError> {
        let Some(path) = &self.config.persist_path else {
            return Ok(());
        };
        let inner = self.read();
        save(path, self.config.dimensions, self.config.metric, &inner)?;
        self.saved
            .fetch_max(inner.version, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Records in the store.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    /// True if the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl VectorStore for MemoryVectorStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError> {
        for r in &records {
            self.check(&r.id, &r.vector)?;
        }
        let dims = self.config.dimensions;
        let cosine = self.config.metric == Metric::Cosine;
        // Normalised and measured before the lock is taken.
        let prepared: Vec<(VectorRecord, f32)> = records
            .into_iter()
            .map(|mut r| {
                if cosine {
                    normalise(&mut r.vector);
                }
                let norm2 = dot(&r.vector, &r.vector);
                (r, norm2)
            })
            .collect();
        let mut inner = self.write();
        if inner.cols.len() != dims {
            inner.cols = vec![Vec::new(); dims];
        }
        // Known ids are replaced in place; new ones get their rows (and index entries) now and
        // are appended below, column by column. An id twice in the batch: the last one wins.
        let base = inner.ids.len();
        let mut fresh: Vec<(Vec<f32>, f32, Arc<Map<String, Value>>)> = Vec::new();
        for (r, norm2) in prepared {
            let meta = Arc::new(r.metadata);
            match inner.index.get(&r.id).copied() {
                Some(row) if row >= base => fresh[row - base] = (r.vector, norm2, meta),
                Some(row) => {
                    for (col, x) in inner.cols.iter_mut().zip(&r.vector) {
                        col[row] = *x;
                    }
                    inner.norms2[row] = norm2;
                    inner.meta[row] = meta;
                    inner.rekey(row);
                }
                None => {
                    inner.index.insert(r.id.clone(), base + fresh.len());
                    inner.ids.push(r.id);
                    fresh.push((r.vector, norm2, meta));
                }
            }
        }
        // One sequential pass per column rather than one push into every column per row.
        for (d, col) in inner.cols.iter_mut().enumerate() {
            col.extend(fresh.iter().map(|(v, _, _)| v[d]));
        }
        for (_, norm2, meta) in fresh {
            inner.norms2.push(norm2);
            inner.push_keys(&meta);
            inner.meta.push(meta);
        }
        inner.version += 1;
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, VectorError> {
        let mut inner = self.write();
        let rows: Vec<usize> = ids
            .iter()
            .filter_map(|id| inner.index.get(id).copied())
            .collect();
        Ok(Self::remove_rows(&mut inner, rows))
    }

    async fn clear(&self, filter: &Filter) -> Result<u64, VectorError> {
        let mut inner = self.write();
        if filter.is_empty() {
            let n = inner.ids.len() as u64;
            let version = inner.version + 1;
            *inner = Inner {
                version,
                ..Inner::empty(self.config.dimensions)
            };
            return Ok(n);
        }
        let rows = inner.compile(filter).rows(&inner);
        Ok(Self::remove_rows(&mut inner, rows))
    }

    async fn update_metadata_where(
        &self,
        filter: &Filter,
        patch: &Map<String, Value>,
    ) -> Result<u64, VectorError> {
        let mut inner = self.write();
        let rows = inner.compile(filter).rows(&inner);
        Self::patch(&mut inner, &rows, patch);
        if !rows.is_empty() {
            inner.version += 1;
        }
        Ok(rows.len() as u64)
    }

    async fn update_metadata_atomically(
        &self,
        updates: &[(Filter, Map<String, Value>)],
    ) -> Result<Vec<u64>, VectorError> {
        let mut inner = self.write();
        // Decide every update's rows first, so that one update does not select another's.
        let selected: Vec<Vec<usize>> = updates
            .iter()
            .map(|(f, _)| inner.compile(f).rows(&inner))
            .collect();
        let mut counts = Vec::with_capacity(updates.len());
        for ((_, patch), rows) in updates.iter().zip(&selected) {
            Self::patch(&mut inner, rows, patch);
            counts.push(rows.len() as u64);
        }
        if counts.iter().any(|n| *n > 0) {
            inner.version += 1;
        }
        Ok(counts)
    }

    async fn distinct(
        &self,
        filter: &Filter,
        keys: &[&str],
    ) -> Result<Vec<(Vec<Value>, u64)>, VectorError> {
        let inner = self.read();
        let compiled = inner.compile(filter);
        let mut seen: Vec<(Vec<Value>, u64)> = Vec::new();
        // Keys kept as columns group by their symbols; a row whose value of such a key is
        // neither a string nor a boolean (and every row, if a key is not a column) groups by
        // a text key instead. The two never share a tuple: only the second holds other values.
        let cols: Option<Vec<usize>> = keys
            .iter()
            .map(|k| KEYED.iter().position(|c| c == k))
            .collect();
        let mut by_syms: FastMap<Vec<u32>, usize> = FastMap::default();
        let mut by_text: FastMap<String, usize> = FastMap::default();
        let mut syms: Vec<u32> = Vec::with_capacity(keys.len());
        // The text key, built in one reused buffer: each value tagged and length-prefixed
        // (strings as they are, anything else as JSON), so no two tuples share a key; the
        // tuple itself is cloned only for a new group.
        let mut key = String::new();
        for row in (0..inner.ids.len()).filter(|r| compiled.matches(&inner, *r)) {
            if let Some(cols) = &cols {
                syms.clear();
                syms.extend(cols.iter().map(|c| inner.keyed[*c][row]));
                if !syms.contains(&OTHER) {
                    match by_syms.get(syms.as_slice()) {
                        Some(i) => seen[*i].1 += 1,
                        None => {
                            by_syms.insert(syms.clone(), seen.len());
                            let tuple = syms.iter().map(|s| inner.symbols.value(*s)).collect();
                            seen.push((tuple, 1));
                        }
                    }
                    continue;
                }
            }
            let meta = &inner.meta[row];
            key.clear();
            for k in keys {
                match meta.get(*k) {
                    Some(Value::String(s)) => {
                        key.push('s');
                        key.push_str(&s.len().to_string());
                        key.push(':');
                        key.push_str(s);
                    }
                    Some(Value::Null) | None => key.push('n'),
                    Some(v) => {
                        let j = v.to_string();
                        key.push('j');
                        key.push_str(&j.len().to_string());
                        key.push(':');
                        key.push_str(&j);
                    }
                }
            }
            match by_text.get(key.as_str()) {
                Some(i) => seen[*i].1 += 1,
                None => {
                    by_text.insert(key.clone(), seen.len());
                    let tuple = keys
                        .iter()
                        .map(|k| meta.get(*k).cloned().unwrap_or(Value::Null))
                        .collect();
                    seen.push((tuple, 1));
                }
            }
        }
        Ok(seen)
    }

    async fn count(&self, filter: &Filter) -> Result<u64, VectorError> {
        let inner = self.read();
        if filter.is_empty() {
            return Ok(inner.ids.len() as u64);
        }
        let compiled = inner.compile(filter);
        Ok((0..inner.ids.len())
            .filter(|r| compiled.matches(&inner, *r))
            .count() as u64)
    }

    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<SearchHit>, VectorError> {
        self.check("<query>", vector)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let query = if self.config.metric == Metric::Cosine {
            normalised(vector)
        } else {
            vector.to_vec()
        };
        let inner = self.read();
        let n = inner.ids.len();
        let mut scores = vec![0f32; n];
        score_rows(&inner.cols, &query, &mut scores, 0);
        if self.config.metric == Metric::Euclidean {
            let q2 = dot(&query, &query);
            for (s, r2) in scores.iter_mut().zip(&inner.norms2) {
                *s = 1.0 / (1.0 + (q2 + r2 - 2.0 * *s).max(0.0).sqrt());
            }
        }
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        let compiled = inner.compile(filter);
        for (row, s) in scores.into_iter().enumerate() {
            if !compiled.matches(&inner, row) {
                continue;
            }
            if heap.len() < k {
                heap.push(Ranked(s, row));
            } else if heap.peek().is_some_and(|w| s > w.0) {
                heap.pop();
                heap.push(Ranked(s, row));
            }
        }
        let mut out: Vec<Ranked> = heap.into_vec();
        out.sort();
        Ok(out
            .into_iter()
            .map(|Ranked(score, row)| SearchHit {
                id: inner.ids[row].clone(),
                score,
                metadata: inner.meta[row].clone(),
            })
            .collect())
    }

    async fn snapshot(&self, filter: &Filter) -> Result<Option<Vec<u8>>, VectorError> {
        let inner = self.read();
        let rows = inner.compile(filter).rows(&inner);
        let mut out = Vec::new();
        encode(
            &mut out,
            self.config.dimensions,
            self.config.metric,
            &inner,
            &rows,
        )
        .map_err(|e| VectorError::Persist {
            path: "<snapshot>".into(),
            message: e.to_string(),
        })?;
        Ok(Some(out))
    }

    async fn restore(&self, filter: &Filter, snapshot: &[u8]) -> Result<u64, VectorError> {
        // Parse first (build), then replace under one write lock (swap).
        let fresh = decode(
            snapshot,
            self.config.dimensions,
            self.config.metric,
            Path::new("<snapshot>"),
        )?;
        let mut inner = self.write();
        let old = inner.compile(filter).rows(&inner);
        Self::remove_rows(&mut inner, old);
        if inner.cols.len() != self.config.dimensions {
            inner.cols = vec![Vec::new(); self.config.dimensions];
        }
        let n = fresh.ids.len();
        for (row, id) in fresh.ids.into_iter().enumerate() {
            if let Some(existing) = inner.index.get(&id).copied() {
                for (col, src) in inner.cols.iter_mut().zip(&fresh.cols) {
                    col[existing] = src[row];
                }
                inner.norms2[existing] = fresh.norms2[row];
                inner.meta[existing] = fresh.meta[row].clone();
                inner.rekey(existing);
                continue;
            }
            let at = inner.ids.len();
            for (col, src) in inner.cols.iter_mut().zip(&fresh.cols) {
                col.push(src[row]);
            }
            inner.norms2.push(fresh.norms2[row]);
            inner.push_keys(&fresh.meta[row]);
            inner.meta.push(fresh.meta[row].clone());
            inner.index.insert(id.clone(), at);
            inner.ids.push(id);
        }
        inner.version += 1;
        Ok(n as u64)
    }

    async fn flush(&self) -> Result<(), VectorError> {
        let saved = self.saved.load(std::sync::atomic::Ordering::Acquire);
        if self.read().version != saved {
            self.save()
        } else {
            Ok(())
        }
    }
}

fn persist_err(path: &Path, message: impl std::fmt::Display) -> VectorError {
    VectorError::Persist {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn save(path: &Path, dims: usize, metric: Metric, inner: &Inner) -> Result<(), VectorError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| persist_err(path, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| persist_err(path, e))?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let rows: Vec<usize> = (0..inner.ids.len()).collect();
        encode(&mut w, dims, metric, inner, &rows).map_err(|e| persist_err(path, e))?;
        w.flush().map_err(|e| persist_err(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| persist_err(path, e))?;
    tmp.persist(path).map_err(|e| persist_err(path, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `rows` of `inner` in the file format: magic, version, width, metric, count, then
/// each row's id and metadata, then the vectors dimension by dimension, then a CRC-32.
fn encode<W: Write>(
    out: W,
    dims: usize,
    metric: Metric,
    inner: &Inner,
    rows: &[usize],
) -> std::io::Result<()> {
    let mut w = CrcWriter {
        inner: out,
        crc: flate2::Crc::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.write_all(&(dims as u32).to_le_bytes())?;
    w.write_all(&[metric.code()])?;
    w.write_all(&(rows.len() as u64).to_le_bytes())?;
    for row in rows {
        let id = &inner.ids[*row];
        let meta = serde_json::to_vec(&*inner.meta[*row]).map_err(std::io::Error::other)?;
        w.write_all(&(id.len() as u32).to_le_bytes())?;
        w.write_all(id.as_bytes())?;
        w.write_all(&(meta.len() as u32).to_le_bytes())?;
        w.write_all(&meta)?;
    }
    let mut buf = Vec::with_capacity(rows.len().min(1 << 18) * 4);
    for col in &inner.cols {
        for block in rows.chunks(1 << 18) {
            buf.clear();
            for row in block {
                buf.extend_from_slice(&col[*row].to_le_bytes());
            }
            w.write_all(&buf)?;
        }
    }
    let crc = w.crc.sum();
    w.inner.write_all(&crc.to_le_bytes())
}

struct CrcWriter<W> {
    inner: W,
    crc: flate2::Crc,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

fn load(path: &Path, dims: usize, metric: Metric) -> Result<Inner, VectorError> {
    let bytes = std::fs::read(path).map_err(|e| persist_err(path, e))?;
    decode(&bytes, dims, metric, path)
}

/// Reads the file format (`origin` names it in errors).
fn decode(bytes: &[u8], dims: usize, metric: Metric, path: &Path) -> Result<Inner, VectorError> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(persist_err(path, "not a dynreg vector store file"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let mut crc = flate2::Crc::new();
    crc.update(body);
    if crc.sum().to_le_bytes() != trailer {
        return Err(persist_err(
            path,
            "checksum mismatch: the file is torn or was modified",
        ));
    }
    let torn = || persist_err(path, "truncated record: the file is torn");
    let mut c = Cursor {
        buf: body,
        pos: MAGIC.len(),
    };
    let version = c.u32().ok_or_else(torn)?;
    if version != FORMAT_VERSION {
        return Err(persist_err(
            path,
            format!("format version {version}; this build reads {FORMAT_VERSION}"),
        ));
    }
    let file_dims = c.u32().ok_or_else(torn)? as usize;
    if file_dims != dims {
        return Err(persist_err(
            path,
            format!("holds {file_dims}-dimensional vectors; the store is configured for {dims}"),
        ));
    }
    let file_metric = c
        .take(1)
        .and_then(|b| Metric::from_code(b[0]))
        .ok_or_else(torn)?;
    if file_metric != metric {
        return Err(persist_err(
            path,
            format!(
                "was written with metric {file_metric:?}; the store is configured for {metric:?}"
            ),
        ));
    }
    let n = usize::try_from(c.u64().ok_or_else(torn)?).map_err(|_| torn())?;
    let mut inner = Inner::empty(0);
    for row in 0..n {
        let len = c.u32().ok_or_else(torn)? as usize;
        let id = std::str::from_utf8(c.take(len).ok_or_else(torn)?)
            .map_err(|e| persist_err(path, e))?
            .to_owned();
        let len = c.u32().ok_or_else(torn)? as usize;
        let meta: Map<String, Value> = serde_json::from_slice(c.take(len).ok_or_else(torn)?)
            .map_err(|e| persist_err(path, e))?;
        inner.index.insert(id.clone(), row);
        inner.ids.push(id);
        inner.push_keys(&meta);
        inner.meta.push(Arc::new(meta));
    }
    for _ in 0..dims {
        let floats = c
            .take(n.checked_mul(4).ok_or_else(torn)?)
            .ok_or_else(torn)?;
        let col: Vec<f32> = floats
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        inner.cols.push(col);
    }
    inner.norms2 = vec![0.0; n];
    if inner.cols.is_empty() {
        inner.cols = vec![Vec::new(); dims];
    }
    for col in &inner.cols {
        for (s, x) in inner.norms2.iter_mut().zip(col) {
            *s += x * x;
        }
    }
    if c.pos != body.len() {
        return Err(persist_err(path, "trailing bytes after the vectors"));
    }
    Ok(inner)
}
