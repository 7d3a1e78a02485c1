//! Deterministic helpers shared by the retrieval fixture and the benchmarks: a xorshift
//! generator, the word list of the original benchmark's synthetic text, percentiles and the
//! benchmarks' JSON-line output.

#![allow(dead_code)] // each user takes what it needs

/// The original benchmark's vocabulary for synthetic text.
pub const WORDS: &[&str] = &[
    "registry",
    "backend",
    "cache",
    "invalidation",
    "event",
    "bus",
    "postgres",
    "redis",
    "notify",
    "listen",
    "poll",
    "snapshot",
    "knowledge",
    "ingestion",
    "chunk",
    "vector",
    "embedding",
    "search",
    "query",
    "domain",
    "tenant",
    "config",
    "reload",
    "bot",
    "manager",
    "instance",
    "latency",
    "throughput",
    "stream",
    "file",
    "checksum",
    "version",
    "metadata",
    "status",
    "error",
    "retry",
    "timeout",
    "lock",
    "concurrency",
    "async",
    "runtime",
    "memory",
    "storage",
    "schema",
    "table",
    "index",
    "record",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "on",
    "by",
    "is",
    "are",
    "be",
    "that",
    "this",
    "from",
    "as",
    "at",
    "it",
    "or",
];

/// A xorshift64 generator: the same sequence for the same seed everywhere.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// A float in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// The `p` quantile (0..=1) of `v`, by nearest rank.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Prints one figure as a JSON line: `{"bench", "name", "value", "unit", ...extra}`.
#[allow(clippy::print_stdout)]
pub fn emit(bench: &str, name: &str, value: f64, unit: &str, extra: serde_json::Value) {
    let mut line = serde_json::json!({"bench": bench, "name": name, "value": (value * 1000.0).round() / 1000.0, "unit": unit});
    if let (Some(l), Some(e)) = (line.as_object_mut(), extra.as_object()) {
        l.extend(e.clone());
    }
    println!("{line}");
}
