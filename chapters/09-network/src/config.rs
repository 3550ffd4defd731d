//! What the parent tells the container's init, through the pipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

// ANCHOR: config
/// Everything init needs to know to become the container. The parent writes
/// it as JSON into the pipe; init reads it until end-of-file.
#[derive(Serialize, Deserialize, Debug)]
pub struct ContainerConfig {
    /// The command and its arguments, exactly as the user typed them.
    pub command: Vec<String>,
    /// Where init mounts the container's overlay, then pivots into it.
    pub rootfs: PathBuf,
    /// The image's shared copy, relative to the container's directory: the
    /// overlay's lower layer.
    pub lower: PathBuf,
    /// The container's hostname: its short ID, like Docker's.
    pub hostname: String,
    /// The command's environment, `KEY=value`: the host's stays outside.
    pub env: Vec<String>,
    /// What to mount where, in the order to mount them.
    pub volumes: Vec<crate::volumes::Volume>,
    /// The container's /etc/hostname, /etc/hosts and /etc/resolv.conf,
    /// mounted like volumes (see network/etc.rs).
    #[serde(default)]
    pub etc: Vec<crate::volumes::Volume>,
}
// ANCHOR_END: config
