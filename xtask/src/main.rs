//! Workspace tasks, run with `cargo xtask <task>`:
//!
//! - `split [--check]`: write (or check) the chapters/ crates from mydocker/
//! - `book [...]`: check the book: every listing resolves, the rendered
//!   pages are intact, and every console transcript is what a real run
//!   prints (`--bless` rewrites the transcripts from a real run)
//! - `test`: everything CI runs (see `test.rs`), including the stage tests
//!   on a cgroup v2 kernel under QEMU when this host has cgroup v1 (`qemu.rs`)
//! - `test --stage N [--bin PATH]`: grade one binary (see `grade.rs`)
//! - `grade [...]`: grade binaries, e.g. a class's, against the stage tests
//! - `broken [...]`: check that the stage tests catch every broken variant
//! - `install --stage N [--bin PATH]`: install a stage as `mydocker`
//! - `tags`: tag every stage in git, `stage-01-namespace`, ...

mod book;
mod broken;
mod grade;
mod install;
mod qemu;
mod split;
mod stages;
mod tags;
mod test;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <task>
  split [--check]                     write (check) chapters/ from mydocker/
  book [--bless] [--chapter N]        check the book, transcripts included
  test [--stage N] [--bin PATH]       everything CI runs; or grade one binary
  grade [--stage N] [--format text|markdown|csv] BIN...
                                      grade binaries against the stage tests
  broken [--stage N] [--list | --refresh] [NN-slug/NAME...]
                                      the tests must catch each broken variant
  install --stage N [--bin PATH]      install stage N as /usr/local/bin/mydocker
  tags                                tag each stage: stage-01-namespace, ...";

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
        bail!("{USAGE}");
    };
    match task.as_str() {
        "split" => split::split(&root, rest.iter().any(|a| a == "--check")),
        "book" => book::main(&root, rest),
        "test" => test::run(&root, &test::Options::parse(rest)?),
        "grade" => grade::main(&root, rest),
        "broken" => broken::main(&root, rest),
        "install" => install::main(&root, rest),
        "tags" => tags::main(&root, rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n{USAGE}"),
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
