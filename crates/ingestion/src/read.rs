//! Reading one file's bytes under the limits: a counter of stored (compressed) bytes, gzip
//! decompression as a stream, a cap on decompressed bytes and on the compression ratio (a gzip
//! bomb is refused after reading at most the limit), and a cap on line length.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::config::Limits;

/// The ratio check starts once this much was decompressed (small files compress well).
const RATIO_GRACE: u64 = 16 << 20;

/// A limit that was exceeded, as an I/O error whose message names it.
fn limit(message: String) -> io::Error {
    io::Error::other(message)
}

/// Counts the bytes read through it.
pub(crate) struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Caps decompressed bytes and the decompressed/compressed ratio.
struct Inflated<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    max: u64,
    ratio: u64,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.out > self.max {
            return Err(limit(format!(
                "decompresses to more than max_decompressed_bytes ({} bytes)",
                self.max
            )));
        }
        if self.out > RATIO_GRACE {
            let c = self.compressed.load(Ordering::Relaxed).max(1);
            if self.out / c > self.ratio {
                return Err(limit(format!(
                    "compression ratio above max_compression_ratio ({}): {} bytes from {} (a gzip bomb?)",
                    self.ratio, self.out, c
                )));
            }
        }
        Ok(n)
    }
}

/// Refuses a line (bytes between newlines) longer than the limit, before it is buffered whole.
pub(crate) struct LineLimited<R> {
    inner: R,
    run: u64,
    max: u64,
}

impl<R: Read> LineLimited<R> {
    pub fn new(inner: R, max: u64) -> Self {
        LineLimited { inner, run: 0, max }
    }
}

impl<R: Read> Read for LineLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &buf[..n] {
            if *b == b'\n' {
                self.run = 0;
            } else {
                self.run += 1;
                if self.run > self.max {
                    return Err(limit(format!(
                        "a line is longer than max_line_bytes ({} bytes)",
                        self.max
                    )));
                }
            }
        }
        Ok(n)
    }
}

/// The decompressed content of a stored file.
pub(crate) fn open(
    stored: Box<dyn Read + Send>,
    gzip: bool,
    limits: &Limits,
) -> Box<dyn Read + Send> {
    if !gzip {
        return stored;
    }
    let compressed = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: stored,
        count: compressed.clone(),
    };
    Box::new(Inflated {
        inner: MultiGzDecoder::new(io::BufReader::with_capacity(64 * 1024, counting)),
        compressed,
        out: 0,
        max: limits.max_decompressed_bytes,
        ratio: limits.max_compression_ratio,
    })
}

/// Reads a whole document of at most `max_document_bytes`.
pub(crate) fn read_document(reader: &mut dyn Read, limits: &Limits) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(limits.max_document_bytes + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limits.max_document_bytes {
        return Err(limit(format!(
            "larger than max_document_bytes ({} bytes) after decompression; use JSONL or CSV for large data",
            limits.max_document_bytes
        )));
    }
    Ok(out)
}

/// UTF-8 text of a document, its BOM removed; the error names the first invalid byte.
pub(crate) fn utf8(bytes: &[u8]) -> Result<(&str, u64), String> {
    let (bytes, base) = match bytes.strip_prefix("\u{feff}".as_bytes()) {
        Some(rest) => (rest, 3),
        None => (bytes, 0),
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((s, base)),
        Err(e) => Err(format!(
            "not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to() as u64 + base
        )),
    }
}
