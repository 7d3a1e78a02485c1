//! The in-process vector store: exact search over one contiguous `f32` array (no allocation per
//! row), metadata filters, and optional persistence to one file.
//!
//! Invariants:
//! - Rows live in one `Vec<f32>` of `len × dimensions`; a delete moves the last row into the
//!   hole, so the array stays dense. For the cosine metric rows are stored normalised and a
//!   search is a dot product.
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
    rows: Vec<f32>,
    meta: Vec<Arc<Map<String, Value>>>,
    index: HashMap<String, usize>,
    /// Counts writes; `saved` is the count the file holds.
    version: u64,
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

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
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
            config,
            inner: RwLock::new(Inner::default()),
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
        if v.len() != self.config.dimensions {
            return Err(VectorError::Dimensions {
                id: id.to_owned(),
                expected: self.config.dimensions,
                got: v.len(),
            });
        }
        Ok(())
    }

    fn score(&self, query: &[f32], row: &[f32]) -> f32 {
        match self.config.metric {
            Metric::Cosine | Metric::DotProduct => dot(query, row),
            Metric::Euclidean => {
                let d: f32 = query.iter().zip(row).map(|(a, b)| (a - b) * (a - b)).sum();
                1.0 / (1.0 + d.sqrt())
            }
        }
    }

    fn remove_rows(inner: &mut Inner, mut rows: Vec<usize>, dims: usize) -> u64 {
        rows.sort_unstable();
        rows.dedup();
        let n = rows.len() as u64;
        for row in rows.into_iter().rev() {
            let last = inner.ids.len() - 1;
            let id = inner.ids.swap_remove(row);
            inner.meta.swap_remove(row);
            inner.index.remove(&id);
            if row != last {
                inner
                    .rows
                    .copy_within(last * dims..(last + 1) * dims, row * dims);
                inner.index.insert(inner.ids[row].clone(), row);
            }
            inner.rows.truncate(last * dims);
        }
        if n > 0 {
            inner.version += 1;
        }
        n
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
        let mut inner = self.write();
        for r in records {
            let v = if cosine {
                normalised(&r.vector)
            } else {
                r.vector
            };
            let meta = Arc::new(r.metadata);
            match inner.index.get(&r.id).copied() {
                Some(row) => {
                    inner.rows[row * dims..(row + 1) * dims].copy_from_slice(&v);
                    inner.meta[row] = meta;
                }
                None => {
                    let row = inner.ids.len();
                    inner.rows.extend_from_slice(&v);
                    inner.meta.push(meta);
                    inner.index.insert(r.id.clone(), row);
                    inner.ids.push(r.id);
                }
            }
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
        Ok(Self::remove_rows(&mut inner, rows, self.config.dimensions))
    }

    async fn clear(&self, filter: &Filter) -> Result<u64, VectorError> {
        let mut inner = self.write();
        if filter.is_empty() {
            let n = inner.ids.len() as u64;
            let version = inner.version + 1;
            *inner = Inner {
                version,
                ..Inner::default()
            };
            return Ok(n);
        }
        let rows: Vec<usize> = (0..inner.ids.len())
            .filter(|r| filter.matches(&inner.meta[*r]))
            .collect();
        Ok(Self::remove_rows(&mut inner, rows, self.config.dimensions))
    }

    async fn update_metadata_where(
        &self,
        filter: &Filter,
        patch: &Map<String, Value>,
    ) -> Result<u64, VectorError> {
        let mut inner = self.write();
        let mut n = 0;
        for row in 0..inner.ids.len() {
            if filter.matches(&inner.meta[row]) {
                let m = Arc::make_mut(&mut inner.meta[row]);
                for (k, v) in patch {
                    m.insert(k.clone(), v.clone());
                }
                n += 1;
            }
        }
        if n > 0 {
            inner.version += 1;
        }
        Ok(n)
    }

    async fn count(&self, filter: &Filter) -> Result<u64, VectorError> {
        let inner = self.read();
        if filter.is_empty() {
            return Ok(inner.ids.len() as u64);
        }
        Ok(inner.meta.iter().filter(|m| filter.matches(m)).count() as u64)
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
        let dims = self.config.dimensions;
        let inner = self.read();
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        let all = filter.is_empty();
        for (row, chunk) in inner.rows.chunks_exact(dims).enumerate() {
            if !all && !filter.matches(&inner.meta[row]) {
                continue;
            }
            let s = self.score(&query, chunk);
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
        let mut w = CrcWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
            crc: flate2::Crc::new(),
        };
        let io = |e: std::io::Error| persist_err(path, e);
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        w.write_all(&(dims as u32).to_le_bytes()).map_err(io)?;
        w.write_all(&[metric.code()]).map_err(io)?;
        w.write_all(&(inner.ids.len() as u64).to_le_bytes())
            .map_err(io)?;
        for (row, id) in inner.ids.iter().enumerate() {
            let meta = serde_json::to_vec(&*inner.meta[row]).map_err(|e| persist_err(path, e))?;
            w.write_all(&(id.len() as u32).to_le_bytes()).map_err(io)?;
            w.write_all(id.as_bytes()).map_err(io)?;
            w.write_all(&(meta.len() as u32).to_le_bytes())
                .map_err(io)?;
            w.write_all(&meta).map_err(io)?;
        }
        let mut buf = Vec::with_capacity(inner.rows.len().min(1 << 18) * 4);
        for block in inner.rows.chunks(1 << 18) {
            buf.clear();
            for x in block {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf).map_err(io)?;
        }
        let crc = w.crc.sum();
        w.inner.write_all(&crc.to_le_bytes()).map_err(io)?;
        w.inner.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(|e| persist_err(path, e))?;
    tmp.persist(path).map_err(|e| persist_err(path, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
    let mut inner = Inner::default();
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
        inner.meta.push(Arc::new(meta));
    }
    let floats = c.take(n * dims * 4).ok_or_else(torn)?;
    inner.rows = floats
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if c.pos != body.len() {
        return Err(persist_err(path, "trailing bytes after the vectors"));
    }
    Ok(inner)
}
