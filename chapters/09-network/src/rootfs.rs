//! Giving the container its own root filesystem, inside its mount namespace.
//!
//! `pivot_root(2)` swaps the root mount of the namespace for the image, then
//! the host's root is unmounted: nothing of the host stays reachable, unlike
//! with `chroot(2)`, which only changes how one process resolves "/".

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root};

// ANCHOR: old_root
/// Where the old root is parked during the pivot, inside the new root.
const OLD_ROOT: &str = ".oldroot";
// ANCHOR_END: old_root

// ANCHOR: pivot
/// Make `rootfs` the root of this mount namespace and detach the host's.
pub fn pivot_into(rootfs: &Path) -> Result<()> {
    // pivot_root requires the new root to be a mount point: the overlay
    // mounted on it is one.
    let old_root = rootfs.join(OLD_ROOT);
    // An image could ship `.oldroot` as a symlink; refuse anything but a
    // plain directory.
    if fs::symlink_metadata(&old_root).is_ok_and(|m| !m.is_dir()) {
        bail!("{} in the image is not a directory", old_root.display());
    }
    fs::create_dir_all(&old_root)
        .with_context(|| format!("mkdir {}", old_root.display()))?;
    // The old root is moved to new_root/.oldroot; "/" becomes the image.
    pivot_root(rootfs, &old_root).with_context(|| {
        format!("pivot_root({}, {})", rootfs.display(), old_root.display())
    })?;
    chdir("/").context("chdir(/)")?;
    // MNT_DETACH: processes may still hold files of the host open; a lazy
    // unmount detaches the whole tree now and frees it when they are done.
    let old_root = Path::new("/").join(OLD_ROOT);
    umount2(&old_root, MntFlags::MNT_DETACH).with_context(|| {
        format!("umount2({}, MNT_DETACH)", old_root.display())
    })?;
    fs::remove_dir(&old_root)
        .with_context(|| format!("rmdir {}", old_root.display()))?;
    Ok(())
}
// ANCHOR_END: pivot

// ANCHOR: dev
// ANCHOR: devices
/// The device nodes a program expects, as (name, major, minor): the same
/// numbers as on every Linux system (see devices.txt in the kernel docs).
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A fresh /dev on a tmpfs, holding only harmless devices. Bind-mounting the
/// host's /dev would hand the container its disks.
pub fn mount_dev() -> Result<()> {
    let dev = Path::new("/dev");
    mkdir(dev)?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .context("mount(tmpfs, /dev)")?;
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .with_context(|| format!("mknod({})", path.display()))?;
        // mknod's mode is reduced by the umask: set it exactly.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    // ANCHOR_END: devices
    // ANCHOR: devpts
    // A private devpts instance: the container's pseudo-terminals are its own.
    let pts = dev.join("pts");
    mkdir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"), // gid 5: tty
    )
    .context("mount(devpts, /dev/pts)")?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .context("mount(tmpfs, /dev/shm)")?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link))
            .with_context(|| format!("symlink /dev/{link}"))?;
    }
    Ok(())
}
// ANCHOR_END: devpts
// ANCHOR_END: dev

// ANCHOR: sys
/// sysfs, read-only: programs may look at the system, never change it.
pub fn mount_sys() -> Result<()> {
    let sys = Path::new("/sys");
    mkdir(sys)?;
    let flags = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NODEV;
    mount(Some("sysfs"), sys, Some("sysfs"), flags, None::<&str>)
        .context("mount(sysfs, /sys, MS_RDONLY)")
}
// ANCHOR_END: sys

// ANCHOR: mkdir
/// An image need not have /dev, /proc or /sys: create the mount points.
pub fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path)
        .with_context(|| format!("mkdir {}", path.display()))
}
// ANCHOR_END: mkdir
