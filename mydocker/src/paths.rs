// @stage 3
//! Where mydocker keeps its state on the host.
//!
//! Everything lives under one root directory, `/var/lib/mydocker` unless
//! `--root DIR` or `MYDOCKER_ROOT=DIR` moves it (the tests give every test a
//! root of its own, so they never see each other's images or containers).

use std::path::PathBuf;

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

    /// `images/NAME.tar`: one tarball per image.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `containers/ID/`: the files of one container.
    pub fn container(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}
// @end
