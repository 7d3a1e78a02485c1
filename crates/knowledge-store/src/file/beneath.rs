//! Opening, placing and removing content files **beneath** a knowledge base's `content/`
//! folder without following a symbolic link anywhere below it.
//!
//! Invariant: no read or write of a content file ever reaches outside `content/`, even when
//! someone planted a symbolic link inside it (`content/docs -> /etc`). On Linux every path is
//! resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a handle on
//! `content/`, parents are created with `mkdirat` one level at a time, and the final rename and
//! unlink are relative to the parent's handle — so there is no window between a check and the
//! use. Elsewhere (or on a kernel without `openat2`) each component is checked with `lstat`
//! first: a checked fallback. A link found is an error naming the path; nothing is read or
//! written through it. `content/` itself may be a link (the operator's choice of where the data
//! lives); only what is below it is guarded.

use std::fs::File;
use std::io;
use std::path::{Component, Path};

fn refused(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{}: a symbolic link inside the knowledge base's content folder is refused",
            rel.display()
        ),
    )
}

fn normal_components(rel: &Path) -> io::Result<Vec<&std::ffi::OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(s) => Ok(s),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

/// The checked fallback: refuses when an existing component of `rel` below `root` is a link.
fn check_no_links(root: &Path, rel: &Path) -> io::Result<()> {
    let mut p = root.to_path_buf();
    for c in normal_components(rel)? {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(refused(rel)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    use rustix::fd::OwnedFd;
    use rustix::fs::{
        AtFlags, CWD, Mode, OFlags, ResolveFlags, mkdirat, openat2, renameat, unlinkat,
    };
    use rustix::io::Errno;

    use super::{normal_components, refused};

    pub(super) const SAFE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

    pub(super) fn open_root(root: &Path) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// `None`: the kernel has no `openat2`; use the fallback.
    pub(super) fn map(rel: &Path, r: Result<OwnedFd, Errno>) -> Option<io::Result<OwnedFd>> {
        match r {
            Ok(fd) => Some(Ok(fd)),
            Err(Errno::NOSYS) => None,
            Err(Errno::LOOP | Errno::XDEV) => Some(Err(refused(rel))),
            Err(e) => Some(Err(e.into())),
        }
    }

    pub(super) fn open_read(root: &Path, rel: &Path) -> Option<io::Result<File>> {
        let root_fd = match open_root(root) {
            Ok(fd) => fd,
            Err(e) => return Some(Err(e)),
        };
        let r = openat2(
            &root_fd,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            SAFE,
        );
        map(rel, r).map(|r| r.map(File::from))
    }

    /// The folder `rel_dir` below `root`, opened beneath it (created level by level if asked).
    fn open_dirs(
        root: &Path,
        rel: &Path,
        rel_dir: &Path,
        create: bool,
    ) -> Option<io::Result<OwnedFd>> {
        let mut cur = match open_root(root) {
            Ok(fd) => fd,
            Err(e) => return Some(Err(e)),
        };
        let comps = match normal_components(rel_dir) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        for c in comps {
            if create {
                match mkdirat(&cur, c, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Some(Err(e.into())),
                }
            }
            let r = openat2(
                &cur,
                c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                SAFE,
            );
            cur = match map(rel, r)? {
                Ok(fd) => fd,
                Err(e) => return Some(Err(e)),
            };
        }
        Some(Ok(cur))
    }

    pub(super) fn place(root: &Path, rel: &Path, tmp: &Path) -> Option<io::Result<()>> {
        let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name()?);
        let dir = match open_dirs(root, rel, parent, true)? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        Some(renameat(CWD, tmp, &dir, name).map_err(Into::into))
    }

    pub(super) fn remove(root: &Path, rel: &Path) -> Option<io::Result<bool>> {
        let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name()?);
        let dir = match open_dirs(root, rel, parent, false)? {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Ok(false)),
            Err(e) => return Some(Err(e)),
        };
        let removed = match unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => true,
            Err(Errno::NOENT) => false,
            Err(e) => return Some(Err(e.into())),
        };
        // Folders left empty, deepest first, each relative to its own parent's handle.
        let comps: Vec<_> = parent.components().collect();
        for depth in (1..=comps.len()).rev() {
            let above: std::path::PathBuf = comps[..depth - 1].iter().collect();
            let Some(Ok(fd)) = open_dirs(root, rel, &above, false) else {
                break;
            };
            if unlinkat(&fd, comps[depth - 1].as_os_str(), AtFlags::REMOVEDIR).is_err() {
                break;
            }
        }
        Some(Ok(removed))
    }
}

/// Refuses (before anything is written) when an existing component of `rel` below `root` is a
/// link; the operations below refuse again at the moment of use.
pub(crate) fn check(root: &Path, rel: &Path) -> io::Result<()> {
    check_no_links(root, rel)
}

/// Opens the content file `rel` below `root` for reading.
pub(crate) fn open_read(root: &Path, rel: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    if let Some(r) = imp::open_read(root, rel) {
        return r;
    }
    check_no_links(root, rel)?;
    File::open(root.join(rel))
}

/// Renames the temp file `tmp` to the content file `rel` below `root`, creating its folders.
pub(crate) fn place(root: &Path, rel: &Path, tmp: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(r) = imp::place(root, rel, tmp) {
        return r;
    }
    check_no_links(root, rel)?;
    let target = root.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    check_no_links(root, rel)?;
    std::fs::rename(tmp, target)
}

/// Deletes the content file `rel` below `root` and the folders it leaves empty; `false` when
/// there was no such file.
pub(crate) fn remove(root: &Path, rel: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    if let Some(r) = imp::remove(root, rel) {
        return r;
    }
    check_no_links(root, rel)?;
    let target = root.join(rel);
    let removed = match std::fs::remove_file(&target) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let mut dir = target.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(removed)
}

/// [`super::read::read_cached`]'s open: beneath `root`, no links, and only from the caches.
#[cfg(target_os = "linux")]
pub(crate) fn open_cached(
    root: &Path,
    rel: &Path,
) -> Result<rustix::fd::OwnedFd, rustix::io::Errno> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    openat2(
        &root_fd,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        imp::SAFE | ResolveFlags::CACHED,
    )
}
