//! Workspace tasks, run with `cargo xtask <task>`:
//!
//! - `split [--check]`: write (or check) the chapters/ crates from mydocker/
//! - `book`: build the book and check that every listing resolves
//! - `test`: everything CI runs (see `test.rs`), including the stage tests
//!   on a cgroup v2 kernel under QEMU when this host has cgroup v1 (`qemu.rs`)
//! - `test --stage N [--bin PATH]`: the end-to-end tests of stages 1..=N
//!   against one binary, e.g. your own

mod book;
mod qemu;
mod split;
mod stages;
mod test;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let root = workspace_root()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        bail!("usage: cargo xtask <split [--check] | book | test [--stage N] [--bin PATH]>");
    };
    match task.as_str() {
        "split" => split::split(&root, rest.iter().any(|a| a == "--check")),
        "book" => book::check(&root),
        "test" => test::run(&root, &test::Options::parse(rest)?),
        other => bail!("unknown task {other:?}: expected split, book or test"),
    }
}

/// The workspace root: the parent of xtask/, where this crate lives. `cargo
/// run` tells us at run time, which still holds after the checkout moved.
fn workspace_root() -> Result<PathBuf> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask must live in the workspace")
}
