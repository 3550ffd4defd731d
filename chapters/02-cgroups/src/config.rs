//! What the parent tells the container's init, through the pipe.

use serde::{Deserialize, Serialize};

// ANCHOR: config
/// Everything init needs to know to become the container. The parent writes
/// it as JSON into the pipe; init reads it until end-of-file.
#[derive(Serialize, Deserialize, Debug)]
pub struct ContainerConfig {
    /// The command and its arguments, exactly as the user typed them.
    pub command: Vec<String>,
}
// ANCHOR_END: config
