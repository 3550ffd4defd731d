//! `cargo xtask broken`: not written yet.

use std::path::Path;

use anyhow::{bail, Result};

pub fn main(_root: &Path, _args: &[String]) -> Result<()> {
    bail!("xtask broken is not written yet")
}
