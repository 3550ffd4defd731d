//! `cargo xtask grade`: not written yet.

use std::path::Path;

use anyhow::{bail, Result};

pub fn main(_root: &Path, _args: &[String]) -> Result<()> {
    bail!("xtask grade is not written yet")
}
