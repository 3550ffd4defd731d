//! The container's root filesystem: an overlay of its own writable layer on
//! the image's shared, read-only copy.
//!
//! ```text
//! mount -t overlay overlay -o lowerdir=L,upperdir=U,workdir=W MERGED
//! ```
//!
//! MERGED shows U's files over L's. Reading a file of L reads it in place;
//! the first write copies it up into U; deleting it leaves a *whiteout* in
//! U (a character device 0/0) that hides it. L never changes. W is
//! overlay's scratch directory, on U's filesystem, where a copy-up is made
//! before it is renamed into U.
//!
//! init mounts it in the container's own mount namespace: the host's mount
//! table never shows it, and it goes away with the namespace, however the
//! container ends.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, OVERLAYFS_SUPER_MAGIC};
use nix::unistd::chdir;

// ANCHOR: names
/// The names of a container's overlay directories, in `containers/ID/`.
pub const UPPER: &str = "upper";
pub const WORK: &str = "work";
pub const MERGED: &str = "rootfs";

/// Where the image's copies are, seen from `containers/ID/`.
pub const LAYERS_FROM_CONTAINER: &str = "../../layers";
// ANCHOR_END: names

// ANCHOR: mount
/// Mount the overlay on `containers/ID/rootfs`, with the copy `lower`
/// (a path relative to `containers/ID`) below the container's own layer.
pub fn mount_root(rootfs: &Path, lower: &Path) -> Result<()> {
    // The options are one string, where ',' and ':' separate values, and
    // it must fit in one page of memory. Paths relative to the container's
    // directory are short and plain, whatever the state root is called.
    let dir = rootfs.parent().context("the rootfs has no parent")?;
    chdir(dir).with_context(|| format!("chdir({})", dir.display()))?;
    // volatile: no sync of the upper layer's filesystem when the overlay
    // goes (a journal commit for every container). Only a crash of the
    // machine can then lose the layer's last writes: see `reuse`.
    let options = format!(
        "lowerdir={},upperdir={UPPER},workdir={WORK},volatile",
        lower.display()
    );
    mount(
        Some("overlay"),
        MERGED,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| unusable(dir, errno, &options))
    .with_context(|| format!("mount(overlay, {})", rootfs.display()))
}
// ANCHOR_END: mount

// ANCHOR: unusable
/// Overlay keeps whiteouts and its own notes (extended attributes) in the
/// upper layer, which some filesystems cannot hold: overlay itself (a state
/// root inside a container), NFS, FUSE... Say which one, and the way out.
fn unusable(dir: &Path, errno: Errno, options: &str) -> anyhow::Error {
    let kind = match statfs(dir).map(|fs| fs.filesystem_type()) {
        Ok(OVERLAYFS_SUPER_MAGIC) => "overlay",
        Ok(FsType(0x6969)) => "NFS",
        Ok(FsType(0x6573_5546)) => "FUSE",
        Ok(FsType(0xff53_4d42)) | Ok(FsType(0xfe53_4d42)) => "SMB",
        // Something else: say which paths the mount was given.
        _ => return anyhow!("{errno} ({options})"),
    };
    // containers/ID is two levels below the state root.
    let root = dir.ancestors().nth(2).unwrap_or(dir);
    anyhow!(
        "{errno}: the state root {} is on {kind}, where overlay cannot \
         keep a container's layer: move it with --root DIR or \
         MYDOCKER_ROOT=DIR (ext4, xfs, btrfs and tmpfs work)",
        root.display()
    )
}
// ANCHOR_END: unusable

// ANCHOR: reuse
/// Before a stopped container's overlay is mounted again (`start`).
///
/// A `volatile` mount leaves a mark in the work directory, and the kernel
/// refuses to mount the layer again while it is there: a crash may have
/// lost writes that were never synced. If the machine has not restarted
/// since the mark was made, the page cache still holds them all: the mark
/// can go.
pub fn reuse(container: &Path) -> Result<()> {
    let mark = container.join(WORK).join("work/incompat/volatile");
    let made = match fs::metadata(&mark) {
        Ok(meta) => meta.modified().context("the mark's time")?,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| format!("stat {}", mark.display()))
        }
    };
    if made < boot_time()? {
        bail!(
            "the machine restarted while the container's layer was in use: \
             its last writes may be lost ({} is there); remove the container",
            mark.display()
        );
    }
    // It holds a file, `dirty`.
    fs::remove_dir_all(&mark)
        .with_context(|| format!("remove {}", mark.display()))
}

/// When the machine started: `btime` in /proc/stat.
fn boot_time() -> Result<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
        .context("no btime in /proc/stat")?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}
// ANCHOR_END: reuse
