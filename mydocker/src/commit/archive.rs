// @stage 6
//! A directory tree written as a tarball that our own unpacker accepts.
//!
//! Every file is reached through the handle of the tree's root with
//! openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink is recorded,
//! never followed, so nothing outside the tree is ever read.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{fstatat, major, minor, FileStat, SFlag};
use tar::{Builder, EntryType, Header};

use crate::image::{self, XATTR};
use crate::rootfs::DEVICES;
use crate::signals;

// ANCHOR: write_tree
/// Write the tree below `root` (a directory handle) to `out` as a tar.
// @before 9
// pub fn write_tree<W: Write>(root: &OwnedFd, out: W) -> Result<W> {
// @end
// @stage 9
/// Leave out the files in `skip` (relative paths).
pub fn write_tree<W: Write>(
    root: &OwnedFd,
    out: W,
    skip: &[PathBuf],
) -> Result<W> {
    // @end
    let mut archive = Archive {
        root: root.as_raw_fd(),
        builder: Builder::new(out),
        links: HashMap::new(),
        // @stage 9
        skip: skip.to_vec(),
        // @end
    };
    archive.directory(Path::new(""))?;
    // Two blocks of zeros: the archive's end.
    archive.builder.into_inner().context("write the tarball")
}

struct Archive<W: Write> {
    root: RawFd,
    builder: Builder<W>,
    /// The first path of every file with several hard links, by inode.
    links: HashMap<(u64, u64), PathBuf>,
    // @stage 9
    skip: Vec<PathBuf>,
    // @end
}
// ANCHOR_END: write_tree

impl<W: Write> Archive<W> {
    // ANCHOR: directory
    /// Write the entries of the directory `path` (relative to the root):
    /// its files first, while it is open, then each subdirectory.
    fn directory(&mut self, path: &Path) -> Result<()> {
        let dir = self.open(path, OFlag::O_DIRECTORY)?;
        // Dir reads the entries, and closes the descriptor when dropped.
        let mut listing = Dir::from_fd(dir.into_raw_fd())
            .with_context(|| format!("opendir /{}", path.display()))?;
        let mut names: Vec<OsString> = Vec::new();
        for entry in listing.iter() {
            let entry = entry
                .with_context(|| format!("readdir /{}", path.display()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        // The same tree, the same tarball.
        names.sort();
        let dir = listing.as_raw_fd();
        let mut subdirectories = Vec::new();
        for name in names {
            signals::check_interrupted()?;
            // @stage 9
            if self.skip.contains(&path.join(&name)) {
                continue;
            }
            // @end
            let stat = fstatat(
                Some(dir),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("stat /{}", path.join(&name).display()))?;
            if kind(&stat) == SFlag::S_IFDIR {
                subdirectories.push((path.join(&name), stat));
            } else {
                self.entry(dir, &name, &path.join(&name), &stat)?;
            }
        }
        drop(listing);
        for (path, stat) in subdirectories {
            let dir = self.open(&path, OFlag::O_DIRECTORY)?;
            self.xattrs(&dir, &path)?;
            let mut header = header(&stat, EntryType::Directory);
            self.builder
                .append_data(&mut header, &path, io::empty())
                .context("write the tarball")?;
            drop(dir);
            self.directory(&path)?;
        }
        Ok(())
    }
    // ANCHOR_END: directory

    // ANCHOR: entry
    /// Write one entry that is not a directory.
    fn entry(
        &mut self,
        dir: RawFd,
        name: &OsStr,
        path: &Path,
        stat: &FileStat,
    ) -> Result<()> {
        let shown = Path::new("/").join(path);
        let shown = shown.display();
        // ANCHOR: hard_link
        // A second name of a file already written: a hard link to it.
        // (Regular files only: the unpacker would follow a link to a
        // symlink, and a socket is never written.)
        let inode = (stat.st_dev, stat.st_ino);
        let linked = stat.st_nlink > 1 && kind(stat) == SFlag::S_IFREG;
        if linked {
            if let Some(first) = self.links.get(&inode) {
                let mut header = header(stat, EntryType::Link);
                let first = first.clone();
                return self
                    .builder
                    .append_link(&mut header, path, first)
                    .context("write the tarball");
            }
        }
        // ANCHOR_END: hard_link
        match kind(stat) {
            SFlag::S_IFREG => {
                let file = self.open(path, OFlag::empty())?;
                self.xattrs(&file, path)?;
                let mut header = header(stat, EntryType::Regular);
                header.set_size(stat.st_size as u64);
                let size = stat.st_size as u64;
                let content = Exactly::new(File::from(file), size, &shown);
                // A failed write (a full disk) or read (which says so).
                self.builder
                    .append_data(&mut header, path, content)
                    .with_context(|| {
                        format!("copy {shown} into the tarball")
                    })?;
                if linked {
                    self.links.insert(inode, path.to_path_buf());
                }
            }
            // ANCHOR: symlink
            SFlag::S_IFLNK => {
                let target = readlinkat(Some(dir), name)
                    .with_context(|| format!("readlink {shown}"))?;
                let target = Path::new(&target);
                // Our unpacker refuses a relative link that climbs out of
                // the image: so must we, or the image would never run.
                if target.is_relative() && !image::stays_inside(path, target) {
                    bail!(
                        "{shown} links to {}, above the root: an image may \
                         not hold it (remove it, or make it absolute)",
                        target.display()
                    );
                }
                let mut header = header(stat, EntryType::Symlink);
                self.builder
                    .append_link(&mut header, path, target)
                    .context("write the tarball")?;
            }
            // ANCHOR_END: symlink
            // ANCHOR: device
            SFlag::S_IFCHR | SFlag::S_IFBLK => {
                let (major, minor) = (major(stat.st_rdev), minor(stat.st_rdev));
                let char = kind(stat) == SFlag::S_IFCHR;
                if !char
                    || !DEVICES
                        .iter()
                        .any(|(_, ma, mi)| (*ma, *mi) == (major, minor))
                {
                    let letter = if char { 'c' } else { 'b' };
                    bail!(
                        "{shown} is the device {letter} {major}:{minor}, \
                         which an image may not hold (only null, zero, \
                         full, random, urandom and tty): remove it"
                    );
                }
                let mut header = header(stat, EntryType::Char);
                header.set_device_major(major as u32)?;
                header.set_device_minor(minor as u32)?;
                self.builder
                    .append_data(&mut header, path, io::empty())
                    .context("write the tarball")?;
            }
            // ANCHOR_END: device
            SFlag::S_IFIFO => {
                let mut header = header(stat, EntryType::Fifo);
                self.builder
                    .append_data(&mut header, path, io::empty())
                    .context("write the tarball")?;
            }
            // A socket: tar cannot hold one (its server is gone anyway).
            _ => {}
        }
        Ok(())
    }
    // ANCHOR_END: entry

    // ANCHOR: open
    /// Open `path` below the root, never through a symlink.
    fn open(&self, path: &Path, flags: OFlag) -> Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(
                flags | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            )
            .resolve(
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
            );
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let fd = openat2(self.root, path, how)
            .with_context(|| format!("open /{}", path.display()))?;
        // SAFETY: openat2 just returned it, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
    // ANCHOR_END: open

    // ANCHOR: xattrs
    /// Write, as PAX records for the next entry, the extended attributes
    /// of the open file `fd` that an image may carry.
    fn xattrs(&mut self, fd: &OwnedFd, path: &Path) -> Result<()> {
        let mut records = Vec::new();
        for name in list_xattrs(fd)? {
            let text = name.to_string_lossy();
            if image::xattr_allowed(&text) {
                let value = get_xattr(fd, &name).with_context(|| {
                    format!("fgetxattr(/{}, {text})", path.display())
                })?;
                records.push((format!("{XATTR}{text}"), value));
            }
        }
        self.builder
            .append_pax_extensions(
                records.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )
            .context("write the tarball")
    }
    // ANCHOR_END: xattrs
}

// ANCHOR: header
/// A tar header with the owner, mode and time of `stat`.
fn header(stat: &FileStat, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(stat.st_mtime.max(0) as u64);
    header.set_size(0);
    header
}
// ANCHOR_END: header

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// flistxattr(2): the names of a file's extended attributes.
fn list_xattrs(fd: &OwnedFd) -> Result<Vec<CString>> {
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: the buffer is valid for its length.
        let size = unsafe {
            libc::flistxattr(
                fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        match Errno::result(size) {
            Ok(size) => {
                return Ok(buffer[..size as usize]
                    .split(|b| *b == 0)
                    .filter(|name| !name.is_empty())
                    .filter_map(|name| CString::new(name).ok())
                    .collect())
            }
            // The list grew, or is longer: ask for its size and retry.
            Err(Errno::ERANGE) => buffer.resize(buffer.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(errno) => return Err(errno).context("flistxattr"),
        }
    }
}

/// fgetxattr(2): the value of one extended attribute.
fn get_xattr(fd: &OwnedFd, name: &CString) -> Result<Vec<u8>, Errno> {
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: `name` is a C string, the buffer valid for its length.
        let size = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        match Errno::result(size) {
            Ok(size) => {
                buffer.truncate(size as usize);
                return Ok(buffer);
            }
            Err(Errno::ERANGE) if buffer.len() < 1 << 20 => {
                buffer.resize(buffer.len() * 4, 0)
            }
            Err(errno) => return Err(errno),
        }
    }
}

// ANCHOR: exactly
/// A file's content, exactly `size` bytes of it: a tar header states the
/// size before the content, and an archive whose content is shorter than
/// its header says is corrupt from there on.
struct Exactly {
    file: std::io::Take<std::fs::File>,
    left: u64,
    /// The file's path, for errors.
    shown: String,
}

impl Exactly {
    fn new(file: std::fs::File, size: u64, shown: &dyn Display) -> Exactly {
        Exactly {
            file: file.take(size),
            left: size,
            shown: shown.to_string(),
        }
    }
}

impl Read for Exactly {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let shown = &self.shown;
        let read = self.file.read(buffer).map_err(|err| {
            io::Error::new(err.kind(), format!("read {shown}: {err}"))
        })?;
        if read == 0 && self.left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {shown}: the file shrank while it was read"),
            ));
        }
        self.left -= read as u64;
        Ok(read)
    }
}
// ANCHOR_END: exactly
// @end
