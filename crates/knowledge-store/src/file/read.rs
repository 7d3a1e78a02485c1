//! `get_file` without a trip to the blocking pool when the kernel can answer from its caches.
//!
//! Handing a read to `spawn_blocking` costs more than reading a small file from the page
//! cache (two thread hand-offs against a few microseconds of syscalls), which capped
//! `get_file` at ~25,000/s on one task. On Linux the file is opened with
//! `openat2(RESOLVE_CACHED)` (fails with `EAGAIN` instead of reading a directory from disk) and
//! read with `preadv2(RWF_NOWAIT)` (fails with `EAGAIN` instead of waiting for the disk), so
//! the async task never blocks on I/O; anything the caches cannot serve, and files over
//! [`INLINE_READ_MAX`], go to the blocking pool as before.

use std::io;
use std::path::Path;

/// Files up to this size may be read on the async task (a copy of at most this much).
pub(crate) const INLINE_READ_MAX: u64 = 256 * 1024;

/// What a non-blocking read attempt found.
pub(crate) enum Cached {
    /// The file's bytes.
    Bytes(Vec<u8>),
    /// No such file (or not a regular file).
    Missing,
    /// Not answerable from the caches (or too large): read it on the blocking pool.
    WouldBlock,
}

/// Reads `path` if that needs no disk access; see the module docs.
#[cfg(target_os = "linux")]
pub(crate) fn read_cached(root: &Path, rel: &Path) -> io::Result<Cached> {
    use rustix::fs::{FileType, fstat};
    use rustix::io::{Errno, ReadWriteFlags, preadv2};

    // Beneath `root`, following no link (see `beneath`); a link found goes to the blocking
    // path, which reports it.
    let fd = match super::beneath::open_cached(root, rel) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Cached::Missing),
        // EAGAIN (not cached), ENOSYS/EINVAL (kernel without openat2 or RESOLVE_CACHED), and
        // anything else: the blocking path decides, and reports errors the usual way.
        Err(_) => return Ok(Cached::WouldBlock),
    };
    let st = fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Cached::Missing);
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > INLINE_READ_MAX {
        return Ok(Cached::WouldBlock);
    }
    // Content files are replaced by rename, never rewritten in place: the size is final.
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let mut slices = [io::IoSliceMut::new(&mut buf[filled..])];
        match preadv2(&fd, &mut slices, filled as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                buf.truncate(filled);
                break;
            }
            Ok(n) => filled += n,
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INTR | Errno::INVAL | Errno::NOSYS) => {
                return Ok(Cached::WouldBlock);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Cached::Bytes(buf))
}

/// Elsewhere every read goes to the blocking pool.
#[cfg(not(target_os = "linux"))]
pub(crate) fn read_cached(_root: &Path, _rel: &Path) -> io::Result<Cached> {
    Ok(Cached::WouldBlock)
}
