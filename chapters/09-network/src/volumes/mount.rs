//! Binding each volume's host side onto its mount point, with the mount
//! API that works on file descriptors (Linux 5.2, mount_setattr 5.12):
//!
//! ```text
//! open_tree(SOURCE, CLONE|RECURSIVE) -> a detached copy of SOURCE's mounts
//! mount_setattr(tree, RECURSIVE, rdonly, private)   (still detached)
//!            ... pivot_root: host paths mean nothing any more ...
//! move_mount(tree -> the mount point's handle)       (now it is visible)
//! ```
//!
//! The source is opened while the host is still there, the target once
//! the host is gone; what is mounted on is the handle that the lookup in
//! the container's root gave, never a path looked up again.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use super::resolve::{self, Kind};
use super::Volume;

// ANCHOR: open_sources
/// Before pivot_root: a detached copy of each volume's host side, its
/// mounts included (`rbind`), read-only when asked, and private.
pub fn open_sources(volumes: &[Volume]) -> Result<Vec<OwnedFd>> {
    volumes
        .iter()
        .map(|volume| {
            let path = volume.source.display();
            let tree = open_tree(&volume.source)
                .with_context(|| format!("open_tree({path})"))?;
            set_attributes(&tree, volume.read_only)
                .with_context(|| format!("mount_setattr({path})"))?;
            Ok(tree)
        })
        .collect()
}

/// A copy of the mount tree at `source`, attached nowhere yet: what
/// `mount --rbind` makes, before it is put in place.
fn open_tree(source: &Path) -> Result<OwnedFd, Errno> {
    let path = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| Errno::EINVAL)?;
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: `path` is a valid C string for the duration of the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags)
    };
    Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
// ANCHOR_END: open_sources

// ANCHOR: read_only
/// Set the per-mount flags of every mount in `tree`. mount(2) ignores
/// MS_RDONLY when it makes a bind mount, and its remount changes one mount
/// only; mount_setattr(2) with AT_RECURSIVE changes the whole tree, here
/// while nobody can see it yet. MS_PRIVATE: mounts made later below the
/// source, on the host, stay out of the container, and the other way
/// round (`rprivate`, Docker's default for volumes). init made every mount
/// of its namespace private already (chapter 1), so the copies are; saying
/// it here keeps that true whatever comes before.
fn set_attributes(tree: &OwnedFd, read_only: bool) -> Result<(), Errno> {
    let rdonly = if read_only {
        libc::MOUNT_ATTR_RDONLY
    } else {
        0
    };
    let attr = libc::mount_attr {
        attr_set: rdonly,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: `attr` lives across the call, and its size is passed along.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(done).map(drop)
}
// ANCHOR_END: read_only

// ANCHOR: attach
/// After pivot_root and /proc, /dev, /sys: put each tree on its mount
/// point, found (and made, when missing) inside the container's root.
pub fn attach(volumes: &[Volume], trees: Vec<OwnedFd>) -> Result<()> {
    let root = File::open("/").context("open /")?;
    for (volume, tree) in volumes.iter().zip(trees) {
        let target = volume.target.display();
        let kind = Kind::of(&tree)
            .with_context(|| format!("fstat({})", volume.source.display()))?;
        let place = resolve::make_in_root(&root, &volume.target, kind)?;
        let found =
            Kind::of(&place).with_context(|| format!("fstat({target})"))?;
        if found != kind {
            bail!(
                "volume {}: cannot mount {} on {target}, {}",
                volume.source.display(),
                kind.name(),
                found.name()
            );
        }
        // /proc's own symlinks are plain ones (`/proc/self`, and /dev/fd
        // -> /proc/self/fd): a volume could land in the kernel's files,
        // and cover what init and programs rely on there.
        let fs =
            fstatfs(&place).with_context(|| format!("fstatfs({target})"))?;
        if fs.filesystem_type() == PROC_SUPER_MAGIC {
            bail!("volume on {target}: it leads into /proc, the kernel's");
        }
        move_mount(&tree, &place)
            .with_context(|| format!("move_mount(to {target})"))?;
    }
    Ok(())
}

/// Attach the detached `tree` on the file that `place` is open on.
fn move_mount(tree: &OwnedFd, place: &OwnedFd) -> Result<(), Errno> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both descriptors are open; the paths are empty C strings.
    let done = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            place.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    Errno::result(done).map(drop)
}
// ANCHOR_END: attach
