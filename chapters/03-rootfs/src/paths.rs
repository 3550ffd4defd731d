//! Where mydocker keeps its state on the host.
//!
//! Everything lives under one root directory, `/var/lib/mydocker` unless
//! `--root DIR` or `MYDOCKER_ROOT=DIR` moves it (the tests give every test a
//! root of its own, so they never see each other's images or containers).

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

// ANCHOR: paths
/// The default state root, where Docker keeps /var/lib/docker.
pub const DEFAULT_ROOT: &str = "/var/lib/mydocker";

pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// The paths under `root`, or under the default root when it is None.
    pub fn new(root: Option<PathBuf>) -> Paths {
        Paths {
            root: root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        }
    }

    // ANCHOR: create_root
    /// Create the state root when it does not exist yet. An existing
    /// directory is used as it is: `--root /tmp` must not change /tmp.
    /// (Containers' directories keep the host's users out themselves.)
    pub fn create_root(&self) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("mkdir {}", self.root.display()))
    }
    // ANCHOR_END: create_root

    /// `images/NAME.tar`: one tarball per image.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `containers/`: one directory per container.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `containers/ID/`: the files of one container.
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
}
// ANCHOR_END: paths
