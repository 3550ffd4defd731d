// @stage 4
//! Images unpacked once: `<root>/layers/HEX/` is the read-only copy of an
//! image, shared by every container of it as their overlay's lower layer.
//!
//! A copy is named by the SHA-256 of the tarball's bytes, its *digest*, so a
//! tarball replaced under the same name gets a copy of its own. Hashing a
//! big tarball for every `run` would cost what we save, so `NAME.digest`
//! remembers the digest together with the tarball's inode, size and times
//! (git's index does the same for its files): the tarball is read again
//! only when one of them has changed.
//!
//! Everything here happens under an exclusive flock(2) of `layers/`: two
//! first runs of an image never unpack it twice, and a copy is never removed
//! while a `run` is choosing it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::libc;
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
        let lock = container::lock(&paths.layers(), false, libc::LOCK_EX)?;
        Ok(Layers { paths, _lock: lock })
    }
    // ANCHOR_END: layers

    // ANCHOR: get
    /// The copy of image `name`, unpacked now if it is not there yet.
    pub fn get(&self, name: &str) -> Result<Layer> {
        let tarball = image::find(self.paths, name)?;
        let mut file = File::open(&tarball)
            .with_context(|| format!("open {}", tarball.display()))?;
        let stat = Stat::of(&file, &tarball)?;
        let remembered = self.paths.layers().join(format!("{name}.digest"));
        let digest = match Remembered::read(&remembered) {
            // The tarball has not changed since we hashed it.
            Some(known) if known.stat == stat => known.digest,
            _ => {
                let digest = sha256(&mut file, &tarball)?;
                let known = Remembered { stat, digest };
                known.write(&remembered)?;
                known.digest
            }
        };
        let dir = self.paths.layers().join(&digest);
        if !dir.is_dir() {
            // From the file we hashed, not from the path: a tarball
            // replaced meanwhile cannot slip in under this digest.
            file.rewind()
                .with_context(|| format!("rewind {}", tarball.display()))?;
            image::unpack(file, &tarball, &dir)?;
        }
        Ok(Layer { digest, dir })
    }
    // ANCHOR_END: get

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
            if let Some(image) = name.strip_suffix(".digest") {
                // The copy of an image in the store, as long as the tarball
                // is the one we hashed; else forget the digest.
                let tarball = self.paths.images().join(format!("{image}.tar"));
                match (Remembered::read(&entry.path()), Stat::at(&tarball)) {
                    (Some(known), Some(stat)) if known.stat == stat => {
                        used.insert(known.digest);
                    }
                    _ => remove(&entry.path())?,
                }
            } else if name.starts_with('.') && name.ends_with(".partial") {
                // An unpack killed half-way: nobody else unpacks while we
                // hold the lock.
                remove(&entry.path())?;
            } else if is_digest(&name) {
                copies.push(name);
            }
        }
        for digest in copies {
            if !used.contains(&digest) {
                signals::check_interrupted()?;
                remove(&layers.join(&digest))?;
            }
        }
        Ok(())
    }
    // ANCHOR_END: remove_unused
}

/// A SHA-256 in hex, as we name copies.
pub fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
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

/// `layers/NAME.digest`: the digest of a tarball, and its stat then.
#[derive(Serialize, Deserialize)]
struct Remembered {
    stat: Stat,
    digest: String,
}

impl Remembered {
    /// None when missing or unreadable: then we hash again.
    fn read(path: &Path) -> Option<Remembered> {
        let known: Remembered =
            serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        is_digest(&known.digest).then_some(known)
    }

    /// Written to a temporary file, then renamed: never half a digest.
    fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        let tmp = path.with_extension("digest.tmp");
        fs::write(&tmp, json)
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("rename to {}", path.display()))
    }
}

// ANCHOR: sha256
/// The SHA-256 of the whole file, in hex.
fn sha256(file: &mut File, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        signals::check_interrupted()?;
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(&buffer[..read]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("read {}", path.display()))
            }
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
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
// @end
