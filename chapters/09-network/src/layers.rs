//! Images unpacked once: `<root>/layers/HEX/` is the read-only copy of an
//! image, shared by every container of it as their overlay's lower layer.
//!
//! A copy is named by the SHA-256 of the tarball's bytes, its *digest*, so a
//! tarball replaced under the same name gets a copy of its own. Hashing a
//! big tarball for every `run` would cost what we save, so `NAME.digest`
//! remembers the digest together with the tarball's inode, size and times
//! (git's index does the same for its files): the tarball is read again
//! only when one of them has changed, or changed too recently to tell.
//!
//! Everything here happens under an exclusive flock(2) of `layers/`: two
//! first runs of an image never unpack it twice, and a copy is never removed
//! while a `run` is choosing it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::container;
use crate::image;
use crate::paths::Paths;
use crate::signals;

// ANCHOR: layers
/// The `layers/` directory, locked: dropping this releases the lock.
pub struct Layers<'a> {
    paths: &'a Paths,
    _lock: File,
}

/// One image's copy: `layers/HEX`.
pub struct Layer {
    pub digest: String,
    pub dir: PathBuf,
}

impl Layers<'_> {
    /// Wait for the lock of `layers/` (`Paths::create_root` made it).
    pub fn lock(paths: &Paths) -> Result<Layers<'_>> {
        // Held by another run, maybe for a long unpack: wait.
        let lock = container::lock_waiting(&paths.layers())?;
        Ok(Layers { paths, _lock: lock })
    }
    // ANCHOR_END: layers

    // ANCHOR: get
    /// The copy of image `name`, unpacked now if it is not there yet.
    pub fn get(&self, name: &str) -> Result<Layer> {
        let (digest, to_remember) = self.hash(name)?;
        let dir = self.paths.layers().join(&digest);
        if !dir.is_dir() {
            let tarball = image::find(self.paths, name)?;
            let mut file = File::open(&tarball)
                .with_context(|| format!("open {}", tarball.display()))?;
            // Hashed again as it is unpacked: the copy holds what its
            // name says, even if the tarball was rewritten meanwhile.
            self.unpack(&mut file, &digest)
                .with_context(|| format!("unpack {}", tarball.display()))?;
        }
        // Remembered once its copy exists: a failed unpack leaves nothing.
        remember(to_remember)?;
        Ok(Layer { digest, dir })
    }
    // ANCHOR_END: get

    // ANCHOR: digest
    /// The digest of image `name`'s tarball: remembered, or read now and
    /// remembered.
    pub fn digest(&self, name: &str) -> Result<String> {
        let (digest, to_remember) = self.hash(name)?;
        remember(to_remember)?;
        Ok(digest)
    }

    /// The digest of image `name`'s tarball, and, when it was read now,
    /// what to remember of it (in `layers/NAME.digest`).
    fn hash(&self, name: &str) -> Result<(String, ToRemember)> {
        let tarball = image::find(self.paths, name)?;
        let mut file = File::open(&tarball)
            .with_context(|| format!("open {}", tarball.display()))?;
        let stat = Stat::of(&file, &tarball)?;
        let name = image::canonical(name);
        let remembered = self.paths.layers().join(format!("{name}.digest"));
        if let Some(known) =
            Remembered::read(&remembered).filter(|k| k.is_of(&stat))
        {
            return Ok((known.digest, None));
        }
        // The clock before we read: see `is_of`.
        let before = Remembered::clock()?;
        let digest = sha256(&mut file)
            .with_context(|| format!("read {}", tarball.display()))?;
        // `cp` onto a tarball rewrites it in place: had that happened while
        // we read it, its stat would say so.
        if Stat::of(&file, &tarball)? != stat {
            bail!("{} changed while it was read: try again", tarball.display());
        }
        let known = Remembered {
            stat,
            digest: digest.clone(),
            before,
        };
        Ok((digest, Some((known, remembered))))
    }
    // ANCHOR_END: digest

    // ANCHOR: add
    /// Give the tarball `file` its copy, unpacked now (and so checked by
    /// the rules every image passes) unless it is there already. Returns
    /// its digest.
    pub fn add(&self, file: &mut File) -> Result<String> {
        let digest = sha256(&mut *file)?;
        if !self.paths.layers().join(&digest).is_dir() {
            file.rewind()?;
            self.unpack(file, &digest)?;
        }
        Ok(digest)
    }
    // ANCHOR_END: add

    // ANCHOR: unpack
    /// Unpack `file` into `.HEX.partial`, hashing it again as it is read,
    /// and rename it to `HEX` only if it is complete and has that digest.
    fn unpack(&self, file: &mut File, digest: &str) -> Result<()> {
        let layers = self.paths.layers();
        let partial = layers.join(format!(".{digest}.partial"));
        remove(&partial)?; // left by a run killed half-way
        let mut reading = Hashing::new(file);
        let result = image::unpack(&mut reading, &partial).and_then(|()| {
            // The same file, read twice: it may have been rewritten in
            // between, and a copy must hold what its name says.
            if reading.digest() != digest {
                bail!("the tarball changed while it was unpacked: try again");
            }
            let dir = layers.join(digest);
            fs::rename(&partial, &dir)
                .with_context(|| format!("rename to {}", dir.display()))
        });
        if result.is_err() {
            let _ = remove(&partial);
        }
        result
    }
    // ANCHOR_END: unpack

    // ANCHOR: remove_unused
    /// Remove the copies that no image and no container uses any more, and
    /// what killed `run`s left half done.
    pub fn remove_unused(&self) -> Result<()> {
        let layers = self.paths.layers();
        let mut used: HashSet<String> = container::layers_in_use(self.paths)?;
        let mut copies = Vec::new();
        for entry in fs::read_dir(&layers)
            .with_context(|| format!("read {}", layers.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // Work in progress of a run that held the lock, as we do
                // now: that run is dead. (`.HEX.partial`, `.NAME.digest`)
                remove(&entry.path())?;
            } else if let Some(image) = name.strip_suffix(".digest") {
                // The copy of an image in the store, as long as the tarball
                // is the one we hashed; else forget the digest.
                // (A digest too recent to skip the hash, see `is_of`, still
                // names this image's copy: only the stat decides here.)
                let tarball = self.paths.images().join(format!("{image}.tar"));
                match (Remembered::read(&entry.path()), Stat::at(&tarball)) {
                    (Some(known), Some(stat)) if known.stat == stat => {
                        used.insert(known.digest);
                    }
                    _ => remove(&entry.path())?,
                }
            } else if is_digest(&name) {
                copies.push(name);
            }
        }
        for digest in copies.iter().filter(|d| !used.contains(*d)) {
            signals::check_interrupted()?;
            // Renamed away first: a copy half removed (a failure, a kill)
            // must not keep the name that runs look for.
            let doomed = layers.join(format!(".{digest}.partial"));
            let dir = layers.join(digest);
            fs::rename(&dir, &doomed)
                .with_context(|| format!("rename {}", dir.display()))?;
            remove(&doomed)?;
        }
        Ok(())
    }
    // ANCHOR_END: remove_unused
}

/// A digest to remember, and the file to remember it in.
type ToRemember = Option<(Remembered, PathBuf)>;

fn remember(to_remember: ToRemember) -> Result<()> {
    match to_remember {
        Some((known, file)) => known.write(&file),
        None => Ok(()),
    }
}

/// A SHA-256 in hex, as we name copies.
pub fn is_digest(name: &str) -> bool {
    name.len() == 64
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// ANCHOR: stat
/// What tells us, without reading it, that a tarball is still the file we
/// hashed: replacing it gives a new inode, writing into it new times. The
/// ctime cannot be set back by hand, unlike the mtime.
#[derive(Serialize, Deserialize, PartialEq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}
// ANCHOR_END: stat

impl Stat {
    fn from(meta: &fs::Metadata) -> Stat {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn of(file: &File, path: &Path) -> Result<Stat> {
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        Ok(Stat::from(&meta))
    }

    fn at(path: &Path) -> Option<Stat> {
        fs::metadata(path).ok().map(|meta| Stat::from(&meta))
    }
}

// ANCHOR: remembered
/// `layers/NAME.digest`: the digest of a tarball, and its stat then.
#[derive(Serialize, Deserialize)]
struct Remembered {
    stat: Stat,
    digest: String,
    /// The kernel's coarse clock, which dates files, just before the
    /// tarball was read (see `clock`).
    before: (i64, i64),
}

impl Remembered {
    /// Whether this is still the digest of a tarball whose stat is `stat`.
    /// Git's "racily clean" rule: a tarball rewritten in place within the
    /// clock tick in which we started to read it can keep its size and
    /// times; only one changed strictly before that tick is known.
    fn is_of(&self, stat: &Stat) -> bool {
        self.stat == *stat && stat.ctime < self.before
    }

    /// The clock the kernel stamps file times with: its coarse one, which
    /// moves once a tick (a finer clock could read later than the ctime
    /// of a change made after it).
    fn clock() -> Result<(i64, i64)> {
        let now = clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
            .context("clock_gettime(CLOCK_REALTIME_COARSE)")?;
        Ok((now.tv_sec(), now.tv_nsec()))
    }

    /// None when missing or unreadable: then we hash again.
    fn read(path: &Path) -> Option<Remembered> {
        // Read whole, then parsed: serde_json reads a File byte by byte.
        let known: Remembered =
            serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        is_digest(&known.digest).then_some(known)
    }

    /// Written to a temporary file, then renamed: never half a digest.
    fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        let name = path.file_name().context("no file name")?;
        let tmp = path.with_file_name(format!(".{}", name.to_string_lossy()));
        fs::write(&tmp, json)
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("rename to {}", path.display()))
    }
}
// ANCHOR_END: remembered

// ANCHOR: sha256
/// The SHA-256 of everything `reader` gives, in hex.
fn sha256(reader: impl Read) -> Result<String> {
    let mut hashing = Hashing::new(reader);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        signals::check_interrupted()?;
        match hashing.read(&mut buffer) {
            Ok(0) => return Ok(hashing.digest()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// A reader, or a writer, that hashes every byte that goes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The SHA-256, in hex, of what went through so far.
    pub fn digest(&self) -> String {
        format!("{:x}", self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
// ANCHOR_END: sha256

/// Remove a file or a whole directory.
fn remove(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    };
    removed.with_context(|| format!("remove {}", path.display()))
}
