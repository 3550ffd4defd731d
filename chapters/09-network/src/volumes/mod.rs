//! Volumes: directories of the host, seen inside the container.
//!
//! A container's layer goes with the container (overlay.rs); a volume does
//! not. `-v /srv/db:/var/lib/db` bind-mounts the host's `/srv/db` on the
//! container's `/var/lib/db`: the same files, seen from two places, so what
//! the container writes there is on the host, and stays.
//!
//! - spec.rs reads `-v HOST:CTR[:ro|:rw]` and refuses what is wrong;
//! - named.rs keeps named volumes (`-v data:/data`) under the state root;
//! - resolve.rs finds CTR the way the container will, inside its root;
//! - mount.rs binds the host's side onto it, through file descriptors.

mod mount;
pub mod named;
mod resolve;
mod spec;

use std::fs::{self, DirBuilder, File};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::libc;
use serde::{Deserialize, Serialize};

use crate::paths::Paths;
pub use mount::{attach, open_sources};
use resolve::Kind;
pub use spec::{parse_all, Host, Spec};

// ANCHOR: volume
/// A volume as init mounts it: the host's side is a path by now, a named
/// volume's directory included.
#[derive(Serialize, Deserialize, Debug)]
pub struct Volume {
    /// Absolute, on the host: opened before `pivot_root`, while host paths
    /// still lead to the host.
    pub source: PathBuf,
    /// Absolute, in the container: resolved after `pivot_root`.
    pub target: PathBuf,
    pub read_only: bool,
}
// ANCHOR_END: volume

// ANCHOR: check
/// Before anything is made: each mount point, as the image has it, must
/// be able to take its volume. A directory goes on a directory, a file on
/// a file; what is missing will be made. `image` is the image's copy,
/// which is what the container sees before any volume is mounted.
pub fn check(specs: &[Spec], image: &Path) -> Result<()> {
    let root = File::open(image)
        .with_context(|| format!("open {}", image.display()))?;
    for (i, spec) in specs.iter().enumerate() {
        let source = source_kind(&spec.host)?;
        // Inside an earlier volume: that volume's files decide, when it
        // is mounted (attach checks again).
        if specs[..i]
            .iter()
            .any(|s| spec.target.starts_with(&s.target))
        {
            continue;
        }
        let target = spec.target.display();
        match resolve::kind_in_root(&root, &spec.target)? {
            Some(found) if found != source => bail!(
                "volume {}: cannot mount {} on {target}, {} in the image",
                spec.host,
                source.name(),
                found.name()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// What the host's side is, or will be once made: a directory.
fn source_kind(host: &Host) -> Result<Kind> {
    let Host::Path(path) = host else {
        return Ok(Kind::Directory);
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(Kind::Directory),
        Ok(_) => Ok(Kind::File),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Kind::Directory),
        Err(err) => {
            Err(err).with_context(|| format!("stat {}", path.display()))
        }
    }
}
// ANCHOR_END: check

// ANCHOR: prepare
/// The host's side of each volume, as init will open it. A missing host
/// directory is made now, like Docker does (a named volume is made with
/// the container, see container.rs).
pub fn prepare(paths: &Paths, specs: &[Spec]) -> Result<Vec<Volume>> {
    let mut volumes = Vec::new();
    for spec in specs {
        let source = match &spec.host {
            Host::Path(path) => {
                make_host_dir(path)?;
                path.clone()
            }
            Host::Named(name) => paths.volume(name),
        };
        volumes.push(Volume {
            source,
            target: spec.target.clone(),
            read_only: spec.read_only,
        });
    }
    Ok(volumes)
}

/// `mkdir -p`, each directory made 0755 whatever the umask (as Docker's
/// daemon makes them); one that exists is left as it is.
fn make_host_dir(path: &Path) -> Result<()> {
    let missing: Vec<&Path> =
        path.ancestors().take_while(|dir| !dir.exists()).collect();
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o755).create(dir) {
            // Made by someone else meanwhile: theirs, not ours to chmod.
            Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
            made => made.with_context(|| format!("mkdir {}", dir.display()))?,
        }
        chmod_made_dir(dir)?;
    }
    Ok(())
}

/// chmod 0755 the directory we just made, through a handle: a path could
/// have been swapped for a symlink meanwhile by whoever may write to its
/// parent, and chmod(2) would follow it to any file of the host.
pub fn chmod_made_dir(dir: &Path) -> Result<()> {
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW;
    File::options()
        .read(true)
        .custom_flags(flags)
        .open(dir)
        .and_then(|made| {
            made.set_permissions(fs::Permissions::from_mode(0o755))
        })
        .with_context(|| format!("chmod {}", dir.display()))
}

/// The named volumes among `specs`.
pub fn names(specs: &[Spec]) -> Vec<String> {
    specs
        .iter()
        .filter_map(|spec| match &spec.host {
            Host::Named(name) => Some(name.clone()),
            Host::Path(_) => None,
        })
        .collect()
}
// ANCHOR_END: prepare
