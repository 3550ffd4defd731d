// @stage 3
//! A container's files on the host: `<root>/containers/ID/rootfs`, its own
//! unpacked copy of the image.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::id;
use crate::image;
use crate::paths::Paths;

// ANCHOR: container
pub struct Container {
    pub id: String,
    dir: PathBuf,
}

impl Container {
    /// Unpack the image of container `id` into its directory.
    pub fn create(
        paths: &Paths,
        id: &str,
        image_name: &str,
    ) -> Result<Container> {
        let tarball = image::find(paths, image_name)?;
        let id = id.to_string();
        let dir = paths.container(&id);
        fs::create_dir_all(&dir)
            .with_context(|| format!("mkdir {}", dir.display()))?;
        // From here on, dropping `container` removes the directory again.
        let container = Container { id, dir };
        image::unpack(&tarball, &container.rootfs())?;
        Ok(container)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn short_id(&self) -> &str {
        id::short(&self.id)
    }
}

/// However `run` ends, an error included, the container's files go with it.
impl Drop for Container {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("mydocker: remove {}: {err}", self.dir.display());
        }
    }
}
// ANCHOR_END: container
// @end
