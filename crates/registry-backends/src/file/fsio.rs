//! Filesystem primitives of the file registry: atomic replace, document read/write, the
//! cross-process lock and typed I/O errors that name the path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dynreg_registry_core::{Registration, RegistryError, Result};

/// An I/O error together with the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub(crate) struct PathIoError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// A storage error of `operation` on `path`.
pub(crate) fn io_error(
    operation: &'static str,
    bot_id: Option<&str>,
    path: &Path,
    source: std::io::Error,
) -> RegistryError {
    RegistryError::storage(
        "file",
        operation,
        bot_id,
        PathIoError {
            path: path.display().to_string(),
            source,
        },
    )
}

/// A corrupt-data error naming `path`.
pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::Corrupt {
        backend: "file",
        location: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync of the directory. Readers see the old or the new file, never
/// a partial one.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    bot_id: Option<&str>,
) -> Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let target = dir.join(name);
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", bot_id, &tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", bot_id, &target, e));
    }
    sync_dir(dir, bot_id)
}

/// Fsyncs a directory so that a rename or removal in it is durable.
pub(crate) fn sync_dir(dir: &Path, bot_id: Option<&str>) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync directory", bot_id, dir, e))
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for fsync here; renames are durable once the OS
        // flushes its metadata.
        let _ = (dir, bot_id);
        Ok(())
    }
}

/// Reads a registry file without following a symbolic link at `path` (a link planted in the
/// registry's folder would otherwise make a read reach any file the process can read).
pub(crate) fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    #[cfg(unix)]
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        let nofollow = rustix::fs::OFlags::NOFOLLOW.bits();
        match OpenOptions::new()
            .read(true)
            .custom_flags(nofollow as i32)
            .open(path)
        {
            Ok(f) => f,
            // ELOOP: the final component is a link.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "a symbolic link in the registry folder is refused",
                ));
            }
            Err(e) => return Err(e),
        }
    };
    #[cfg(not(unix))]
    let mut file = {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a symbolic link in the registry folder is refused",
            ));
        }
        File::open(path)?
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Reads the document at `path`, which must hold `bot_id`. `None` if there is none.
pub(crate) fn read_doc(path: &Path, bot_id: &str) -> Result<Option<Registration>> {
    let bytes = match read_no_follow(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", Some(bot_id), path, e)),
    };
    let reg = parse_doc(path, &bytes)?;
    if reg.bot_id != bot_id {
        return Err(corrupt(
            path,
            format!("holds bot id {:?}, expected {bot_id:?}", reg.bot_id),
        ));
    }
    Ok(Some(reg))
}

/// Parses a document's bytes; a bad document is [`RegistryError::Corrupt`] naming `path`.
pub(crate) fn parse_doc(path: &Path, bytes: &[u8]) -> Result<Registration> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, format!("invalid JSON: {e}")))?;
    Registration::from_json(&value)
        .map_err(|e| corrupt(path, format!("not a registration document: {e}")))
}

/// Removes a file; `false` if it was not there.
pub(crate) fn remove(path: &Path, bot_id: Option<&str>) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("remove", bot_id, path, e)),
    }
}

/// The exclusive cross-process lock of one write transaction; released on drop (and by the OS
/// if the process dies).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Blocks until the lock file at `path` is locked exclusively. Each call opens its own
    /// handle, so the lock also excludes other threads and instances of this process.
    pub(crate) fn acquire(path: &PathBuf) -> Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("lock", None, path, e))?;
        file.lock().map_err(|e| io_error("lock", None, path, e))?;
        Ok(DirLock { _file: file })
    }
}
