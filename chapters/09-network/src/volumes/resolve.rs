//! Finding a volume's mount point the way the container will see it.
//!
//! The image decides what `/data` is. If it ships `/data -> /etc`, or
//! `/data -> /var/lib/secret`, the container's `/data` is its own `/etc`,
//! or its own `/var/lib/secret`. A runtime that resolves
//! `<rootfs>/data` on the host follows the same link to the *host's* path,
//! and creates or mounts there. openat2(2) with RESOLVE_IN_ROOT resolves
//! as if the directory it is given were `/`: absolute links and `..` stop
//! at it. RESOLVE_NO_MAGICLINKS refuses /proc's links (`/proc/self/fd/0`,
//! `/proc/1/cwd`), which lead to whatever file the process has open, the
//! host's included.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};

// ANCHOR: open_in_root
/// Open `path` as if `root` were `/`, for its handle only (O_PATH): it
/// can be stat'ed, mounted on, or used as the directory of a *at call.
pub fn open_in_root(root: &File, path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    // EAGAIN: a rename or a mount somewhere on the system while a `..` was
    // resolved, so the kernel could not be sure it stayed below `root`.
    // Its advice is to try again; a lookup takes microseconds.
    let mut tries = 0;
    let fd = loop {
        match openat2(root.as_raw_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 100 => tries += 1,
            result => break result?,
        }
    };
    // SAFETY: openat2 just returned this descriptor, and nothing else owns
    // it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
// ANCHOR_END: open_in_root

/// What a path is, as far as mounting on it goes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Directory,
    /// Anything else: a file, a device, a socket...
    File,
}

impl Kind {
    pub fn of(fd: &OwnedFd) -> Result<Kind, Errno> {
        let stat = fstat(fd.as_raw_fd())?;
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
            == SFlag::S_IFDIR;
        Ok(if is_dir { Kind::Directory } else { Kind::File })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Directory => "a directory",
            Kind::File => "a file",
        }
    }
}

// ANCHOR: kind_in_root
/// What `path` is below `root`: None when it is missing (it will be made
/// when the volume is mounted). Nothing is made.
pub fn kind_in_root(root: &File, path: &Path) -> Result<Option<Kind>> {
    match walk_in_root(root, path, None)? {
        Some(fd) => Ok(Some(Kind::of(&fd)?)),
        None => Ok(None),
    }
}

/// Open `path` below `root`, first making what is missing of it:
/// directories, and a last component of `kind`.
pub fn make_in_root(root: &File, path: &Path, kind: Kind) -> Result<OwnedFd> {
    walk_in_root(root, path, Some(kind))?
        .ok_or_else(|| anyhow::anyhow!("{} names no file", path.display()))
}
// ANCHOR_END: kind_in_root

// ANCHOR: walk_in_root
/// Open `path` below `root` one component at a time. A missing component
/// is made when `make` says of which kind the last one is, each with
/// mkdirat(2) or openat(2) in the handle of its parent, itself found in
/// root; nothing is ever looked up from the host's `/`. Without `make`, a
/// missing path gives None.
fn walk_in_root(
    root: &File,
    path: &Path,
    make: Option<Kind>,
) -> Result<Option<OwnedFd>> {
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut parent = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        let here = parent.join(name);
        let last = i + 1 == names.len();
        match open_in_root(root, &here) {
            Ok(fd) if last => return not_the_root(root, fd, path).map(Some),
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let dir = open_in_root(root, &parent)
                    .map_err(|errno| refused(&parent, errno))?;
                // There, yet not found: a symlink that leads nowhere (or
                // into /proc, empty in the image). Refused, made or not.
                let flag = AtFlags::AT_SYMLINK_NOFOLLOW;
                if fstatat(Some(dir.as_raw_fd()), *name, flag).is_ok() {
                    return Err(refused(&here, Errno::ENOENT));
                }
                let Some(kind) = make else {
                    return Ok(None);
                };
                let kind = if last { kind } else { Kind::Directory };
                make_one(&dir, name, kind).map_err(|errno| {
                    let call = match kind {
                        Kind::Directory => "mkdirat",
                        Kind::File => "openat(O_CREAT)",
                    };
                    anyhow::anyhow!("{call}({here:?}): {errno}")
                })?;
                if last {
                    return open_in_root(root, &here)
                        .map(Some)
                        .map_err(|errno| refused(&here, errno));
                }
            }
            Err(errno) => return Err(refused(&here, errno)),
        }
        parent = here;
    }
    bail!("{} names no file", path.display())
}

/// A symlink can lead a mount point back to `/` (`/dot -> .`): a volume
/// there would cover the whole container, which `-v X:/` may not either.
fn not_the_root(root: &File, fd: OwnedFd, path: &Path) -> Result<OwnedFd> {
    let (found, top) = (fstat(fd.as_raw_fd())?, fstat(root.as_raw_fd())?);
    if (found.st_dev, found.st_ino) == (top.st_dev, top.st_ino) {
        bail!("{path:?} leads to the container's /, where no volume may go");
    }
    Ok(fd)
}

/// Make `name` in the directory `dir`: neither call follows a symlink
/// that `name` may already be (EEXIST instead).
fn make_one(dir: &OwnedFd, name: &OsStr, kind: Kind) -> Result<(), Errno> {
    let dir = Some(dir.as_raw_fd());
    match kind {
        Kind::Directory => mkdirat(dir, name, Mode::from_bits_truncate(0o755)),
        Kind::File => {
            let flags = OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_WRONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let fd = openat(dir, name, flags, Mode::from_bits_truncate(0o644))?;
            // SAFETY: openat just returned it; closed when dropped.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(())
        }
    }
}
// ANCHOR_END: walk_in_root

/// The error for a path that cannot be used as a mount point.
fn refused(path: &Path, errno: Errno) -> anyhow::Error {
    let why = match errno {
        Errno::ENOTDIR => "a part of it is not a directory",
        Errno::ELOOP => "a symbolic link loops, or leads through /proc",
        Errno::ENOENT => "a symbolic link on the way leads nowhere",
        _ => {
            return anyhow::anyhow!(
                "openat2({path:?}, RESOLVE_IN_ROOT): {errno}"
            )
        }
    };
    anyhow::anyhow!("openat2({path:?}, RESOLVE_IN_ROOT): {errno:?}: {why}")
}
