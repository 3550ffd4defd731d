//! A running container's root filesystem, seen from the host.
//!
//! The container's overlay is mounted in its own mount namespace only
//! (chapter 4): the host has no path to it. We step into that namespace
//! for a moment and take a copy of the root mount with open_tree(2):
//! a detached mount, a file descriptor that we carry back home. It shows
//! the overlay's merged view, image plus changes with the deletions
//! applied by the kernel, and only that: a copy without AT_RECURSIVE
//! leaves out every mount on top of it, /proc, /sys, /dev and the
//! volumes. Under them it shows the directories they were mounted on.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, OVERLAYFS_SUPER_MAGIC};
use nix::unistd::{chroot, fchdir};

use crate::cgroups::freezer::Freezer;
use crate::id;
use crate::overlay::UPPER;
use crate::paths::Paths;

// ANCHOR: root
/// The container's root mount, copied, and its first process.
pub struct Root {
    /// The detached copy of the root mount: `openat` below it.
    pub tree: OwnedFd,
    /// A pidfd of the container's init: it tells us if the container ends.
    init: OwnedFd,
}

impl Root {
    /// The root of the running container `id`, whose cgroup is `freezer`.
    pub fn of(paths: &Paths, id: &str, freezer: &Freezer) -> Result<Root> {
        let init = pidfd_open(init_of(freezer)?)?;
        let tree = copy_root_mount(&init)?;
        // What we entered was the namespace of the process we found a
        // moment ago. Had the container ended and its PID gone to a
        // process of the host, we would hold a copy of the host's `/`.
        // The container's merged root has the inode of its own `upper`.
        let upper = paths.container(id).join(UPPER);
        let upper = fs::metadata(&upper)
            .with_context(|| format!("stat {}", upper.display()))?;
        let is_overlay = fstatfs(&tree)
            .is_ok_and(|fs| fs.filesystem_type() == OVERLAYFS_SUPER_MAGIC);
        let ino = fstat(tree.as_raw_fd()).context("fstat")?.st_ino;
        if !is_overlay || ino != upper.ino() {
            bail!(
                "the root of container {} is not its overlay yet, or any \
                 more: it is starting or ending (try again)",
                id::short(id)
            );
        }
        Ok(Root { tree, init })
    }

    /// An error if the container's init has ended since: then `run` may
    /// be removing the container's files while we read them.
    pub fn check_still_running(&self) -> Result<()> {
        let mut fds = [PollFd::new(self.init.as_fd(), PollFlags::POLLIN)];
        // A pidfd becomes readable when its process ends.
        let ended = poll(&mut fds, PollTimeout::ZERO).context("poll")? > 0;
        if ended {
            bail!("the container ended while its files were read");
        }
        Ok(())
    }
}
// ANCHOR_END: root

// ANCHOR: init_of
/// The container's first process: the one in its cgroup whose parent,
/// `run`, is not in it.
fn init_of(freezer: &Freezer) -> Result<i32> {
    let procs = freezer.dir().join("cgroup.procs");
    let text = fs::read_to_string(&procs)
        .with_context(|| format!("read {}", procs.display()))?;
    let pids: Vec<i32> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        let status = format!("/proc/{pid}/status");
        // Gone since we read the list: not the one we look for.
        let Ok(status) = fs::read_to_string(&status) else {
            continue;
        };
        let parent = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|ppid| ppid.trim().parse::<i32>().ok());
        if parent.is_some_and(|parent| !pids.contains(&parent)) {
            return Ok(pid);
        }
    }
    bail!("the container has no process: it is starting or ending")
}

/// pidfd_open(2): a descriptor that names this process, and no other
/// that may get its PID later.
fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: no memory is passed; the kernel returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    Errno::result(fd).with_context(|| format!("pidfd_open({pid})"))?;
    // SAFETY: the descriptor is new and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
// ANCHOR_END: init_of

// ANCHOR: copy_root_mount
/// Step into the mount namespace of `init`, copy its root mount, and
/// step back. (setns(2) into a mount namespace needs a process with a
/// single thread, as mydocker is: the others would be left behind.)
fn copy_root_mount(init: &OwnedFd) -> Result<OwnedFd> {
    // Where we are, to come back: our mount namespace, root and
    // directory. setns puts us at the root of the namespace we enter.
    let home =
        File::open("/proc/self/ns/mnt").context("open /proc/self/ns/mnt")?;
    let (root, cwd) = (open_path("/")?, open_path(".")?);
    setns(init, CloneFlags::CLONE_NEWNS)
        .context("setns(the container's init, CLONE_NEWNS)")?;
    // From the host, open_tree refuses (EINVAL) to copy a mount of
    // another namespace, even through /proc/PID/root: hence the trip.
    let tree = open_tree_clone("/");
    setns(&home, CloneFlags::CLONE_NEWNS)
        .context("setns(back to our mount namespace)")?;
    fchdir(root.as_raw_fd()).context("fchdir(our root)")?;
    chroot(".").context("chroot(our root)")?;
    fchdir(cwd.as_raw_fd()).context("fchdir(our directory)")?;
    tree.context("open_tree(the container's /, OPEN_TREE_CLONE)")
}

/// open_tree(2) with OPEN_TREE_CLONE and without AT_RECURSIVE: a copy of
/// the one mount at `path`, without the mounts on top of it.
fn open_tree_clone(path: &str) -> Result<OwnedFd, Errno> {
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: `path` is a valid C string for the duration of the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags)
    };
    Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
// ANCHOR_END: copy_root_mount

/// A handle on a directory that only names it (O_PATH): enough for
/// fchdir, even where we may not read.
fn open_path(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(Path::new(path))
        .with_context(|| format!("open {path}"))
}
