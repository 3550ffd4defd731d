//! The image store: an image is a tarball `<root>/images/NAME.tar`, plain or
//! gzip-compressed, such as the one `docker export` writes.
//!
//! Unpacking is where a hostile image attacks the host: an entry named
//! `../../etc/cron.d/x`, or a symlink `etc -> /etc` followed by an entry
//! `etc/passwd`, would write outside the container's root. Every entry's
//! path and link are checked here before it is written; the tar crate (0.4.46
//! or later) checks again, resolving symlinks, as it writes files, links and
//! directories. A broken image leaves nothing half-unpacked behind.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use tar::EntryType;

use crate::busybox;
use crate::paths::Paths;
use crate::rootfs::DEVICES;
use crate::signals;

// ANCHOR: find
/// The tarball of image `name`. The `busybox` image is built from the host's
/// static busybox the first time it is asked for.
pub fn find(paths: &Paths, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    let tarball = paths.images().join(format!("{name}.tar"));
    if tarball.is_file() {
        return Ok(tarball);
    }
    if name == busybox::IMAGE {
        busybox::create(&tarball)?;
        return Ok(tarball);
    }
    let known = list(paths)?;
    if known.is_empty() {
        bail!(
            "no image {name:?}: there are no images yet \
             (busybox is built on first use)"
        );
    }
    bail!("no image {name:?}: the images are {}", known.join(", "));
}
// ANCHOR_END: find

// ANCHOR: names
/// The names of the images in the store, sorted.
pub fn list(paths: &Paths) -> Result<Vec<String>> {
    let dir = paths.images();
    let mut names = Vec::new();
    if !dir.exists() {
        return Ok(names);
    }
    for entry in
        fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?
    {
        let file = entry?.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".tar") {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// An image name becomes a file name: allow no path tricks in it.
pub fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
        });
    if !valid {
        bail!(
            "invalid image name {name:?}: \
             use lowercase letters, digits, '.', '_' and '-'"
        );
    }
    Ok(())
}
// ANCHOR_END: names

// ANCHOR: unpack
/// Unpack the tarball that `tarball` reads into `dest`, a new directory.
/// (layers.rs makes that all or nothing: `dest` is a temporary name.)
pub fn unpack(tarball: impl Read, dest: &Path) -> Result<()> {
    fs::create_dir(dest)
        .with_context(|| format!("mkdir {}", dest.display()))?;
    // `/` is 0755, whatever the umask of whoever runs mydocker.
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dest.display()))?;
    unpack_entries(tarball, dest)
}
// ANCHOR_END: unpack

// ANCHOR: open
/// Open a tarball, through gzip when it starts with gzip's magic bytes.
fn open<'a>(tarball: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut file = BufReader::new(tarball);
    // Look at the first bytes without taking them from the reader.
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    // Multi: `cat a.tar.gz b.tar.gz` is one valid gzip file of two
    // members, and gzip(1) reads them all; so must we.
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}
// ANCHOR_END: open

// ANCHOR: entries
// ANCHOR: entry_path
fn unpack_entries(tarball: impl Read, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(open(tarball)?);
    // An image keeps its owners, modes and times: /tmp is 1777, a setuid
    // binary stays setuid, files belong to the users of the image.
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries().context("read the archive")? {
        // Ctrl-C during a long unpack: stop between two entries.
        signals::check_interrupted()?;
        let mut entry = entry.context("read an archive entry")?;
        let path = entry
            .path()
            .context("an entry has an invalid path")?
            .into_owned();
        let relative = inside(&path)
            .with_context(|| format!("entry {}", path.display()))?;
        if relative.as_os_str().is_empty() {
            continue; // "./" itself
        }
        no_symlink_on_the_way(root, &relative)
            .with_context(|| format!("entry {}", path.display()))?;
        // ANCHOR_END: entry_path
        // ANCHOR: entry_link
        let kind = entry.header().entry_type();
        if let Some(link) =
            entry.link_name().context("an entry has an invalid link")?
        {
            let ok = match kind {
                // A hard link names another entry of the archive.
                EntryType::Link => inside(&link).is_ok(),
                // Inside the container a symlink cannot leave "/", but the
                // host meets these links too (when it unpacks, and later
                // when it copies files in and out of containers). An
                // absolute link is read from the container's root by every
                // careful reader; a relative one that climbs above the
                // image has no use but to point at the host.
                _ => link.is_absolute() || stays_inside(&relative, &link),
            };
            if !ok {
                bail!(
                    "entry {}: link to {} points outside the image",
                    path.display(),
                    link.display()
                );
            }
        }
        // ANCHOR_END: entry_link
        // ANCHOR: entry_kind
        match kind {
            // The tar crate writes these as plain files: make the real node.
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                make_node(&entry, &root.join(&relative))
                    .with_context(|| format!("entry {}", path.display()))?;
            }
            _ => {
                if !entry
                    .unpack_in(root)
                    .with_context(|| format!("entry {}", path.display()))?
                {
                    bail!("entry {}: refused by the unpacker", path.display());
                }
            }
        }
    }
    // ANCHOR_END: entry_kind
    // ANCHOR: trailer
    // The tar reader stops at the archive's end marker, before gzip's
    // trailer: read to the end, so that gzip checks the CRC and length of
    // everything we unpacked. A corrupted image must not run.
    check_the_end(archive.into_inner())?;
    // ANCHOR_END: trailer
    Ok(())
}
// ANCHOR_END: entries

// ANCHOR: check_the_end
/// Read what follows the archive's end marker: only zeros may (tar pads
/// its output), and reading it makes gzip check its CRC and length.
fn check_the_end(mut rest: impl Read) -> Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // A long padding, or a huge gzip trailer, must not hold off Ctrl-C.
        signals::check_interrupted()?;
        let read = match rest.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("the image is corrupt"),
        };
        if buffer[..read].iter().any(|byte| *byte != 0) {
            // Such as a second archive appended with `cat`: its files would
            // be silently left out.
            bail!("the image has data after the end of its archive");
        }
    }
}
// ANCHOR_END: check_the_end

// ANCHOR: checks
// ANCHOR: inside
/// The entry's path relative to the image root; an error for an absolute
/// path or one that climbs with `..`.
fn inside(path: &Path) -> Result<PathBuf> {
    let mut relative = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("absolute path outside the image")
            }
            Component::ParentDir => bail!("`..` climbs outside the image"),
        }
    }
    Ok(relative)
}
// ANCHOR_END: inside

// ANCHOR: stays_inside
/// Whether a relative symlink at `entry` pointing to `target` stays within
/// the image root.
fn stays_inside(entry: &Path, target: &Path) -> bool {
    // The link is resolved from the directory that contains it.
    let mut depth = entry.components().count() as isize - 1;
    for part in target.components() {
        match part {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}
// ANCHOR_END: stays_inside

// ANCHOR: no_symlink
/// Refuse to write through a symlink that an earlier entry created: the
/// host would follow it, wherever it points.
fn no_symlink_on_the_way(root: &Path, relative: &Path) -> Result<()> {
    let mut current = root.to_path_buf();
    let parents = relative
        .parent()
        .map(|p| p.components().count())
        .unwrap_or(0);
    for part in relative.components().take(parents) {
        current.push(part);
        if let Ok(meta) = fs::symlink_metadata(&current) {
            if meta.file_type().is_symlink() {
                bail!("goes through the symlink {}", current.display());
            }
        }
    }
    Ok(())
}
// ANCHOR_END: no_symlink
// ANCHOR_END: checks

// ANCHOR: make_node
// ANCHOR: device_filter
/// mknod(2) for a device or FIFO entry, with its owner and mode.
///
/// A device node is a key to a kernel driver: `b 254 0` would be the host's
/// disk. An image may only carry the harmless character devices that every
/// container gets anyway, and `c 0 0` (how overlayfs marks a deleted file).
fn make_node<R: Read>(entry: &tar::Entry<R>, dest: &Path) -> Result<()> {
    let header = entry.header();
    let (kind, major, minor) = match header.entry_type() {
        // GNU tar leaves a FIFO's device numbers empty: do not read them.
        EntryType::Fifo => (SFlag::S_IFIFO, 0, 0),
        kind => {
            let number = |n: std::io::Result<Option<u32>>| {
                n.ok().flatten().context("bad device number")
            };
            let (major, minor) = (
                number(header.device_major())?,
                number(header.device_minor())?,
            );
            let harmless = kind == EntryType::Char
                && ((major, minor) == (0, 0)
                    || DEVICES.iter().any(|(_, ma, mi)| {
                        (*ma, *mi) == (u64::from(major), u64::from(minor))
                    }));
            if !harmless {
                let letter = if kind == EntryType::Block { 'b' } else { 'c' };
                bail!(
                    "device {letter} {major}:{minor} refused: an image may \
                     only hold null, zero, full, random, urandom and tty"
                );
            }
            (SFlag::S_IFCHR, major, minor)
        }
    };
    // ANCHOR_END: device_filter
    // ANCHOR: mknod
    let mode = header.mode()? & 0o7777;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("mkdir {}", parent.display()))?;
    }
    if fs::symlink_metadata(dest).is_ok() {
        fs::remove_file(dest)
            .with_context(|| format!("remove {}", dest.display()))?;
    }
    let dev = makedev(u64::from(major), u64::from(minor));
    mknod(dest, kind, Mode::from_bits_truncate(mode), dev)
        .with_context(|| format!("mknod({})", dest.display()))?;
    // The umask trimmed the mode that mknod applied: set it exactly.
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dest.display()))?;
    let uid = Uid::from_raw(header.uid()? as u32);
    let gid = Gid::from_raw(header.gid()? as u32);
    chown(dest, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dest.display()))?;
    Ok(())
}
// ANCHOR_END: mknod
// ANCHOR_END: make_node

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_be_paths() {
        assert!(check_name("busybox").is_ok());
        assert!(check_name("my-image_1.0").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "UPPER", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn entries_stay_inside_the_root() {
        assert_eq!(
            inside(Path::new("./bin/sh")).unwrap(),
            PathBuf::from("bin/sh")
        );
        assert!(inside(Path::new("/etc/passwd")).is_err());
        assert!(inside(Path::new("bin/../../x")).is_err());
    }

    #[test]
    fn relative_symlinks_may_not_climb_out() {
        assert!(stays_inside(Path::new("bin/ls"), Path::new("busybox")));
        assert!(stays_inside(
            Path::new("usr/bin/env"),
            Path::new("../../bin/busybox")
        ));
        assert!(!stays_inside(
            Path::new("usr/bin/env"),
            Path::new("../../../etc")
        ));
        assert!(!stays_inside(Path::new("link"), Path::new("..")));
    }
}
