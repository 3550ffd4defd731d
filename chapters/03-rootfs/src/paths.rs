//! Where mydocker keeps its state on the host.
//!
//! Everything lives under one root directory, `/var/lib/mydocker` unless
//! `--root DIR` or `MYDOCKER_ROOT=DIR` moves it (the tests give every test a
//! root of its own, so they never see each other's images or containers).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

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
    /// Create the state root, readable by root only. Containers' files live
    /// below it: a setuid-root program written in a container must not be
    /// runnable by the host's users through the container's directory.
    pub fn create_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("mkdir {}", self.root.display()))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", self.root.display()))
    }
    // ANCHOR_END: create_root

    /// `images/NAME.tar`: one tarball per image.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `containers/ID/`: the files of one container.
    pub fn container(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}
