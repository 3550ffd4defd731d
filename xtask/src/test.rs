//! `cargo xtask test`: everything CI runs, in the order that fails fastest.
//!
//! 1. formatting, clippy and the unit tests of the workspace
//! 2. `split --check`: the chapters/ crates match mydocker/
//! 3. every chapter crate builds (warnings are errors)
//! 4. the book: listings resolve, pages render intact, transcripts match
//! 5. the end-to-end tests of stages 1..=N against chapter N's binary, for
//!    every stage N, then all of them against the complete mydocker/
//! 6. the stage tests catch every broken variant (`broken.rs`)
//! 7. on a host with cgroup v1, the tests of the cgroup stages once more, on
//!    a cgroup v2 kernel booted under QEMU (see `qemu.rs`)
//!
//! `cargo xtask test --stage N [--bin PATH]` runs only step 5, for one
//! binary: stage N's own, or yours.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::stages::{self, STAGES};

pub struct Options {
    stage: Option<u32>,
    bin: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            stage: None,
            bin: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--stage" => {
                    let n = args.next().context("--stage needs a number")?;
                    let n: u32 = n
                        .parse()
                        .with_context(|| format!("--stage {n}: not a number"))?;
                    if stages::find(n).is_none() {
                        bail!("--stage {n}: stages are 1 to {}", stages::last());
                    }
                    options.stage = Some(n);
                }
                "--bin" => {
                    let path = args.next().context("--bin needs a path")?;
                    let path = fs::canonicalize(path).with_context(|| format!("--bin {path}"))?;
                    options.bin = Some(path);
                }
                other => bail!("unknown option {other:?}: expected --stage N or --bin PATH"),
            }
        }
        Ok(options)
    }
}

pub fn run(root: &Path, options: &Options) -> Result<()> {
    if options.stage.is_some() || options.bin.is_some() {
        let stage = options.stage.unwrap_or_else(stages::last);
        let bin = match &options.bin {
            Some(bin) => bin.clone(),
            None => build_chapter(root, stage)?,
        };
        return end_to_end(root, stage, &bin);
    }

    cargo(root, &["fmt", "--all", "--check"])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(
        root,
        &["test", "--workspace", "--exclude", "mydocker-stage-tests"],
    )?;
    crate::split::split(root, true)?;

    let mut binaries = Vec::new();
    for stage in STAGES {
        binaries.push((stage.number, build_chapter(root, stage.number)?));
    }
    cargo(root, &["build", "--package", "mydocker"])?;
    // The book's transcripts run against the chapters' binaries.
    crate::book::main(root, &[])?;
    for (stage, bin) in &binaries {
        end_to_end(root, *stage, bin)?;
    }
    end_to_end(root, stages::last(), &root.join("target/debug/mydocker"))?;
    // The stage tests must fail on every broken variant of the program.
    crate::broken::main(root, &[])?;
    crate::qemu::v2_tests(root)?;
    println!("xtask: every check passed");
    Ok(())
}

/// Build chapters/NN-slug and return its binary. All chapters share one
/// target directory, so their dependencies are compiled once; each binary is
/// then copied out of the way of the next chapter's.
pub fn build_chapter(root: &Path, number: u32) -> Result<PathBuf> {
    let stage = stages::find(number).context("no such stage")?;
    let manifest = root.join("chapters").join(stage.slug).join("Cargo.toml");
    let target = root.join("target/chapters");
    // Build with the workspace's dependency versions: cargo keeps the
    // versions of a copied lock file and drops what the chapter does not use.
    let lock = root.join("chapters").join(stage.slug).join("Cargo.lock");
    fs::copy(root.join("Cargo.lock"), &lock)
        .with_context(|| format!("copy Cargo.lock to {}", lock.display()))?;
    let status = Command::new(env!("CARGO"))
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        // A stage must build cleanly on its own: no code left unused
        // because the stage that uses it is not there yet.
        .env("RUSTFLAGS", "-D warnings")
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("chapters/{} does not build", stage.slug);
    }
    let out = root.join("target/stages").join(stage.slug);
    fs::create_dir_all(&out)?;
    let bin = out.join("mydocker");
    fs::copy(target.join("debug/mydocker"), &bin)
        .with_context(|| format!("copy the binary of chapters/{}", stage.slug))?;
    Ok(bin)
}

/// Run the end-to-end tests of stages 1..=`stage` against `bin`.
fn end_to_end(root: &Path, stage: u32, bin: &Path) -> Result<()> {
    let mut args: Vec<String> = ["test", "--package", "mydocker-stage-tests"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for test in stage_tests(root, stage)? {
        args.push("--test".into());
        args.push(test);
    }
    println!("\n== stage {stage} tests against {}", bin.display());
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root)
        .args(&args)
        .env("MYDOCKER_BIN", bin)
        .env("MYDOCKER_STAGE", stage.to_string());
    // The tests need root. As a user with sudo, cargo builds them as you and
    // runs each test binary through sudo (cargo's "runner").
    if !is_root() {
        command.arg("--config").arg(
            "target.'cfg(target_os = \"linux\")'.runner = ['sudo', '--preserve-env=MYDOCKER_BIN,MYDOCKER_STAGE,RUST_TEST_THREADS,RUST_BACKTRACE']",
        );
    }
    let status = command.status().context("run cargo test")?;
    if !status.success() {
        bail!("stage {stage} tests failed against {}", bin.display());
    }
    Ok(())
}

/// tests/tests/stageNN_*.rs for every NN up to `stage`, as test target names.
fn stage_tests(root: &Path, stage: u32) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(root.join("tests/tests")).context("read tests/tests")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let Some(number) = stem.strip_prefix("stage").and_then(|s| s.get(..2)) else {
            continue;
        };
        if number.parse::<u32>().is_ok_and(|n| n <= stage) {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    println!("\n== cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(args)
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

pub fn is_root() -> bool {
    // /proc/self belongs to the effective user of the process reading it.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
