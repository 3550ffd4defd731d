//! Where mydocker keeps its state on the host.
//!
//! Everything lives under one root directory, `/var/lib/mydocker` unless
//! `--root DIR` or `MYDOCKER_ROOT=DIR` moves it (the tests give every test a
//! root of its own, so they never see each other's images or containers).

use std::fs::{self, DirBuilder, Metadata};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

// ANCHOR: paths
/// The default state root, where Docker keeps /var/lib/docker.
pub const DEFAULT_ROOT: &str = "/var/lib/mydocker";

#[derive(Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// The paths under `root`, or under the default root when it is None.
    pub fn new(root: Option<PathBuf>) -> Paths {
        let root = root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        // init changes its directory to mount the overlay (overlay.rs): a
        // relative `--root` would then name another place. (Fails only for
        // an empty path, which the next mkdir reports.)
        let root = std::path::absolute(&root).unwrap_or(root);
        Paths { root }
    }

    // ANCHOR: create_root
    /// Create the state root if missing; use an existing one as it is
    /// (`--root /tmp` must not change /tmp), or refuse it if another user
    /// could change it. (Containers' directories keep other users out.)
    pub fn create_root(&self) -> Result<()> {
        make_dir(&self.root, 0o700, true)?;
        // mydocker runs, as root, what it finds here: no other user may
        // be able to change it. The root may be shared like /tmp (sticky:
        // nobody removes or renames another's files there), the
        // directories we keep in it may not.
        only_root_can_change(&self.root, fs::metadata(&self.root), true)?;
        let dirs = [
            (self.images(), 0o755),
            (self.layers(), 0o700),
            (self.containers(), 0o700),
            (self.volumes(), 0o700),
            (self.names(), 0o700),
        ];
        for (dir, mode) in dirs {
            // Made now, then checked: in a shared root, another user could
            // make it first, and then it is theirs. symlink_metadata: a
            // planted symlink is refused, not followed.
            make_dir(&dir, mode, false)?;
            only_root_can_change(&dir, fs::symlink_metadata(&dir), false)?;
        }
        // The copies in layers/ hold every image's setuid programs, shared
        // by all its containers, and a container's root can write one in a
        // named volume: no other user may even look in.
        for (dir, whose) in [
            (self.layers(), "the images'"),
            (self.volumes(), "containers'"),
        ] {
            let mode = fs::metadata(&dir)
                .with_context(|| format!("stat {}", dir.display()))?
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is open to other users (mode {:o}): they could run \
                     {whose} setuid programs; `chmod 700` it",
                    dir.display(),
                    mode & 0o7777
                );
            }
        }
        Ok(())
    }
    // ANCHOR_END: create_root

    /// `images/NAME.tar`: one tarball per image.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `layers/`: each image unpacked once, shared by its containers.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `containers/`: one directory per container.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `containers/ID/`: the files of one container.
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// `volumes/`: the named volumes.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// `volumes/NAME/`: one named volume's files.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }

    /// `names/`: the containers' names.
    pub fn names(&self) -> PathBuf {
        self.root.join("names")
    }

    /// `names/NAME`: a symbolic link to the ID of the container named NAME.
    pub fn name(&self, name: &str) -> PathBuf {
        self.names().join(name)
    }

    /// `networks/`: the networks, their addresses and endpoints.
    pub fn networks(&self) -> PathBuf {
        self.root.join("networks")
    }
}
// ANCHOR_END: paths

/// mkdir; one that exists already is fine (whose it is is checked next),
/// and so is something else there (said next: not a directory).
fn make_dir(path: &Path, mode: u32, recursive: bool) -> Result<()> {
    match DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(path)
    {
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        made => made.with_context(|| format!("mkdir {}", path.display())),
    }
}

// ANCHOR: only_root
/// An error unless `path` is a directory that belongs to root and that no
/// other user may write to (but for a sticky one, when `sticky_ok`).
fn only_root_can_change(
    path: &Path,
    meta: io::Result<Metadata>,
    sticky_ok: bool,
) -> Result<()> {
    let meta = meta.with_context(|| format!("stat {}", path.display()))?;
    let path = path.display();
    if !meta.is_dir() {
        bail!("{path} is not a directory");
    }
    if meta.uid() != 0 {
        bail!(
            "{path} belongs to uid {}: another user could change what \
             mydocker runs as root (use a directory of root's)",
            meta.uid()
        );
    }
    let writable = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if writable && !(sticky && sticky_ok) {
        bail!(
            "{path} is writable by other users (mode {:o}): they could \
             change what mydocker runs as root",
            meta.mode() & 0o7777
        );
    }
    Ok(())
}
// ANCHOR_END: only_root
