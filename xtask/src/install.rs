//! `cargo xtask install`: not written yet.

use std::path::Path;

use anyhow::{bail, Result};

pub fn main(_root: &Path, _args: &[String]) -> Result<()> {
    bail!("xtask install is not written yet")
}
