//! Embedders: text to vectors, in batches.
//!
//! - [`EchoEmbedder`] is bit for bit the original's test provider (SHA-256 of the text, then
//!   SHA-256 of the digest, ..., each byte `b` as `b / 127.5 - 1`), so configs written for the
//!   original work; its vectors carry no meaning, so search over them is random.
//! - [`HashEmbedder`] is deterministic, offline and **lexical**: feature hashing of normalised
//!   words, word pairs and character trigrams, log-scaled term counts, L2-normalised. Texts
//!   that share words are near each other, so search with it finds the document that shares
//!   the query's words. It is the default for development and tests.
//!
//! - With the `http` feature, `HttpEmbedder` calls an OpenAI-compatible or Ollama service.
//!
//! Invariants: every vector an embedder returns has exactly [`Embedder::dimensions`] entries;
//! the output is in input order, one vector per text; the same text gives the same vector in
//! every process and version (the hash is FNV-1a, fixed here, not a seeded hasher).

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "local")]
mod local;

#[cfg(feature = "http")]
pub use http::{HttpApi, HttpEmbedder, HttpEmbedderConfig};
#[cfg(feature = "local")]
pub use local::{LocalEmbedder, LocalEmbedderConfig, MODEL_FILES};

use std::collections::HashMap;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// An embedder failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The embedder's config is invalid, or the model does not match it.
    #[error("embedding config: {0}")]
    Config(String),
    /// The embedding service failed (after its retries); the URL and status are named.
    #[error("embedding service: {0}")]
    Service(String),
}

/// Text to vectors.
#[async_trait]
pub trait Embedder: std::fmt::Debug + Send + Sync {
    /// The provider name (`"echo"`, `"hash"`).
    fn provider(&self) -> &'static str;

    /// The width of every vector.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order.
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The original's `echo` test provider (default width 768, as there).
#[derive(Debug, Clone)]
pub struct EchoEmbedder {
    dimensions: usize,
}

impl EchoEmbedder {
    /// The original's default width.
    pub const DEFAULT_DIMENSIONS: usize = 768;

    /// An echo embedder of `dimensions`.
    pub fn new(dimensions: usize) -> Self {
        EchoEmbedder { dimensions }
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dimensions);
        let mut digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        while out.len() < self.dimensions {
            for b in digest {
                if out.len() >= self.dimensions {
                    break;
                }
                out.push((f64::from(b) / 127.5 - 1.0) as f32);
            }
            digest = Sha256::digest(digest).into();
        }
        out
    }
}

#[async_trait]
impl Embedder for EchoEmbedder {
    fn provider(&self) -> &'static str {
        "echo"
    }
    fn dimensions(&self) -> usize {
        self.dimensions
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// The lexical hashing embedder (default width 384).
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimensions: usize,
}

/// Words too common to tell documents apart.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "of", "on", "or", "our",
    "so", "than", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your",
];

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Visits the lower-cased alphanumeric words of `text` without stop words, a plural `s`
/// removed, reusing one buffer.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut w = String::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() {
            continue;
        }
        w.clear();
        if raw.is_ascii() {
            w.push_str(raw);
            w.make_ascii_lowercase();
        } else {
            for c in raw.chars() {
                w.extend(c.to_lowercase());
            }
        }
        if STOPWORDS.contains(&w.as_str()) {
            continue;
        }
        if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
            w.pop();
        }
        f(&w);
    }
}

/// `v / |v|` in place (a zero vector stays zero): the unit vectors the embedders return. The
/// norm is summed in order, so the `hash` embedder's vectors keep their bits.
pub(crate) fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Buffers one text's vector is built in, reused across the texts of a batch.
#[derive(Default)]
struct Scratch {
    /// The text's words in order, as indices into `counts`.
    order: Vec<usize>,
    /// Distinct words in order of first occurrence: hash, count, and range in `words`.
    counts: Vec<(u64, u32, std::ops::Range<usize>)>,
    /// Word hash → index into `counts` of the first word with that hash (the key is a hash
    /// already: it is used as it is).
    first: HashMap<u64, usize, std::hash::BuildHasherDefault<PassThrough>>,
    /// The distinct words, end to end.
    words: String,
    chars: Vec<char>,
}

impl HashEmbedder {
    /// The default width.
    pub const DEFAULT_DIMENSIONS: usize = 384;

    /// A hashing embedder of `dimensions` (at least 1).
    pub fn new(dimensions: usize) -> Self {
        HashEmbedder {
            dimensions: dimensions.max(1),
        }
    }

    fn add(&self, v: &mut [f32], h: u64, weight: f32) {
        let i = (h % self.dimensions as u64) as usize;
        let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
        v[i] += sign * weight;
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        self.vector_in(text, &mut Scratch::default())
    }

    fn vector_in(&self, text: &str, s: &mut Scratch) -> Vec<f32> {
        let mut v = vec![0f32; self.dimensions];
        s.order.clear();
        s.counts.clear();
        s.first.clear();
        s.words.clear();
        let Scratch {
            order,
            counts,
            first,
            words,
            chars,
        } = s;
        for_each_word(text, |w| {
            let h = fnv1a(&[b"w", w.as_bytes()]);
            // The first distinct word equal to `w` (by hash, then text; a hash shared by two
            // different words falls back to a scan).
            let found = match first.get(&h) {
                Some(i) if &words[counts[*i].2.clone()] == w => Some(*i),
                Some(_) => counts
                    .iter()
                    .position(|(k, _, r)| *k == h && &words[r.clone()] == w),
                None => None,
            };
            match found {
                Some(i) => {
                    counts[i].1 += 1;
                    order.push(i);
                }
                None => {
                    first.entry(h).or_insert(counts.len());
                    order.push(counts.len());
                    let start = words.len();
                    words.push_str(w);
                    counts.push((h, 1, start..words.len()));
                }
            }
        });
        let mut tri = [0u8; 12];
        for (h, n, range) in counts.iter() {
            let tf = 1.0 + (*n as f32).ln();
            self.add(&mut v, *h, tf);
            chars.clear();
            chars.push('^');
            chars.extend(words[range.clone()].chars());
            chars.push('$');
            if chars.len() > 4 {
                for t in chars.windows(3) {
                    let mut len = 0;
                    for c in t {
                        len += c.encode_utf8(&mut tri[len..]).len();
                    }
                    self.add(&mut v, fnv1a(&[b"c", &tri[..len]]), 0.25 * tf);
                }
            }
        }
        for pair in order.windows(2) {
            self.add(
                &mut v,
                fnv1a(&[b"b", &pair[0].to_le_bytes(), &pair[1].to_le_bytes()]),
                0.5,
            );
        }
        l2_normalise(&mut v);
        v
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn provider(&self) -> &'static str {
        "hash"
    }
    fn dimensions(&self) -> usize {
        self.dimensions
    }
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut scratch = Scratch::default();
        Ok(texts
            .iter()
            .map(|t| self.vector_in(t, &mut scratch))
            .collect())
    }
}

/// The providers [`create_embedder`] builds.
pub const PROVIDERS: &[&str] = &["echo", "hash"];

/// An embedder by provider name and width (`None`: the provider's default).
pub fn create_embedder(
    provider: &str,
    dimensions: Option<usize>,
) -> Result<std::sync::Arc<dyn Embedder>, EmbedError> {
    match provider {
        "echo" => Ok(std::sync::Arc::new(EchoEmbedder::new(
            dimensions.unwrap_or(EchoEmbedder::DEFAULT_DIMENSIONS),
        ))),
        "hash" => Ok(std::sync::Arc::new(HashEmbedder::new(
            dimensions.unwrap_or(HashEmbedder::DEFAULT_DIMENSIONS),
        ))),
        other => Err(EmbedError::Config(format!(
            "embedding_provider: {}",
            dynreg_resource_resolver::keys::unknown_key(other, PROVIDERS)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hash_vectors_are_unit_length_and_lexical() {
        let e = HashEmbedder::new(384);
        let q = e.vector("How long do refunds take?");
        let right = e.vector("Refunds take five business days to reach your card.");
        let wrong = e.vector("The office is closed on public holidays in spring.");
        assert!((cos(&q, &q) - 1.0).abs() < 1e-5);
        assert!(
            cos(&q, &right) > cos(&q, &wrong) + 0.2,
            "{} vs {}",
            cos(&q, &right),
            cos(&q, &wrong)
        );
        assert_eq!(e.vector(""), vec![0.0; 384]);
    }

    #[test]
    fn unknown_provider_names_the_valid_ones() {
        let e = create_embedder("eho", None).unwrap_err().to_string();
        assert!(e.contains("\"echo\""), "{e}");
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    #[test]
    fn l2_normalise_gives_unit_vectors_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalise(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut zero = vec![0.0; 3];
        l2_normalise(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
    }

    /// The `hash` embedder's vectors are part of every persisted index: a change of its
    /// arithmetic (even of the order of its additions) would leave stored vectors that queries
    /// no longer match. This pins the bits of a few texts, words repeated, non-ASCII and
    /// stop words included.
    #[tokio::test]
    async fn hash_vectors_keep_their_bits() {
        let texts = [
            "How long do refunds take? Refunds take five business days; refunds are final.",
            "Café prices rose 5% in Zürich — ÉCOLE, école, Straße and STRASSE.",
            "the and of a an to",
            "",
            "x y z x y z x y z classes glass bus buses",
        ];
        let e = HashEmbedder::new(64);
        let vectors = e.embed(&texts).await.unwrap();
        let mut h = Sha256::new();
        for (t, v) in texts.iter().zip(&vectors) {
            assert_eq!(v, &e.vector(t));
            for x in v {
                h.update(x.to_bits().to_le_bytes());
            }
        }
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            digest,
            "df4e415907a7270a3ba5204ef23159466e046b354a2c9d9e4023795c948ff415"
        );
    }
}
