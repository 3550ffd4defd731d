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
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
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
    let name = &canonical(name);
    let tarball = tarball(paths, name);
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

/// Docker's rules for `NAME[:TAG]`, without its `/` (a local store has no
/// registries or repositories of users). An image name becomes a file
/// name: the rules leave no room for path tricks.
pub fn check_name(name: &str) -> Result<()> {
    let (repository, tag) = match name.split_once(':') {
        Some((repository, tag)) => (repository, Some(tag)),
        None => (name, None),
    };
    if !is_repository(repository) {
        bail!(
            "invalid image name {name:?}: lowercase letters and digits, \
             joined by '.', '_', '__' or dashes (my-app_2.0), at most 128"
        );
    }
    if tag.is_some_and(|tag| !is_tag(tag)) {
        bail!(
            "invalid tag in {name:?}: letters, digits, '_', '.' and '-', \
             not first '.' or '-', at most 120"
        );
    }
    // A file name has at most 255 bytes, and the store's files add to it
    // (`.NAME.tar.PID`).
    if name.len() > 230 {
        bail!(
            "image name too long: {} characters, at most 230",
            name.len()
        );
    }
    Ok(())
}

/// Groups of lowercase letters and digits joined by one `.`, one or two
/// `_`, or dashes: never empty, `..`, hidden, or starting with a dash.
fn is_repository(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 128
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && name.split(alphanumeric).all(|joint| {
            matches!(joint, "" | "." | "_" | "__")
                || joint.chars().all(|c| c == '-')
        })
}

/// Letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn is_tag(tag: &str) -> bool {
    tag.len() <= 120
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// One spelling per image: `x:latest` is `x`, as in Docker.
pub fn canonical(name: &str) -> String {
    name.strip_suffix(":latest").unwrap_or(name).to_string()
}

/// `images/NAME.tar`: the tarball of the image `name` (canonical).
pub fn tarball(paths: &Paths, name: &str) -> PathBuf {
    paths.images().join(format!("{name}.tar"))
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
        let xattrs = allowed_xattrs(&mut entry)
            .with_context(|| format!("entry {}", path.display()))?;
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
        // Last: chown (done by the unpacker) clears security.capability.
        if kind != EntryType::Symlink {
            set_xattrs(&root.join(&relative), &xattrs)
                .with_context(|| format!("entry {}", path.display()))?;
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
pub fn stays_inside(entry: &Path, target: &Path) -> bool {
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

// ANCHOR: xattrs
/// The extended attributes of an entry that an image may set: `user.*`,
/// and `security.capability` (the capabilities of a program such as
/// `ping`). `trusted.*` attributes are overlay's own notes (whiteouts,
/// opaque directories, redirects): an image that carries them is
/// refused. Others, such as the SELinux label of the machine that made
/// the tarball, are left out.
fn allowed_xattrs<R: Read>(
    entry: &mut tar::Entry<R>,
) -> Result<Vec<(CString, Vec<u8>)>> {
    let mut xattrs = Vec::new();
    let Some(records) = entry.pax_extensions()? else {
        return Ok(xattrs); // no PAX records
    };
    for record in records {
        let record = record.context("a malformed PAX record")?;
        let Some(name) = record.key().ok().and_then(|key| {
            key.strip_prefix(XATTR) // "SCHILY.xattr.user.note"
        }) else {
            continue;
        };
        if name.starts_with("trusted.") {
            bail!("extended attribute {name} refused: overlay reads these");
        }
        if xattr_allowed(name) {
            let name = CString::new(name).context("a NUL in a name")?;
            xattrs.push((name, record.value_bytes().to_vec()));
        }
    }
    Ok(xattrs)
}

/// How tar (GNU, libarchive, Python, Docker) records an extended attribute.
pub const XATTR: &str = "SCHILY.xattr.";

/// Whether an image may carry the extended attribute `name`.
pub fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

/// lsetxattr(2) each attribute on `path`.
fn set_xattrs(path: &Path, xattrs: &[(CString, Vec<u8>)]) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let file = CString::new(path.as_os_str().as_bytes())?;
    for (name, value) in xattrs {
        // SAFETY: both strings are NUL-terminated and outlive the call;
        // `value` is valid for its length.
        let set = unsafe {
            libc::lsetxattr(
                file.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        Errno::result(set).with_context(|| {
            format!("lsetxattr({}, {})", path.display(), name.to_string_lossy())
        })?;
    }
    Ok(())
}
// ANCHOR_END: xattrs

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
    fn names_follow_dockers_rules() {
        for good in ["a", "a__b", "a---b", "x:v1", "x:V_1.0-rc", "x:_"] {
            assert!(check_name(good).is_ok(), "{good:?} should be allowed");
        }
        for bad in [
            "..", "a.", "a..b", "a___b", "a_", "x:", ":v1", "x:.v", "x:-v",
            "x:a:b", "x:a/b", "x y:z",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_name(&"a".repeat(129)).is_err());
        assert!(check_name(&format!("a:{}", "v".repeat(121))).is_err());
        assert_eq!(canonical("x:latest"), "x");
        assert_eq!(canonical("x:v1"), "x:v1");
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
