//! `cargo xtask test`: everything CI runs, in the order that fails fastest.
//!
//! 1. formatting, clippy and the unit tests of the workspace (those that
//!    need root, `#[ignore]`d for `cargo test` as a user, run as root)
//! 2. `split --check`: the chapters/ crates match mydocker/
//! 3. every chapter crate builds (warnings are errors)
//! 4. the book: listings resolve, pages render intact, transcripts match,
//!    each page in a sandbox with a network namespace of its own
//! 5. the end-to-end tests of stages 1..=N against chapter N's binary, for
//!    every stage N, then all of them against the complete mydocker/; but
//!    not a (stage, binary) pair that step 4 already graded: chapter N's
//!    "Check your own binary" runs `cargo xtask test --stage N --bin
//!    /usr/local/bin/mydocker` with that same binary installed, and when
//!    its transcript matched with every stage passed, the pair is skipped
//!    with a line naming the transcript (`book/graded.rs`; the binary is
//!    recognised by its SHA-256)
//! 6. the stage tests catch every broken variant (`broken.rs`)
//! 7. on a host with cgroup v1, the tests of the cgroup stages once more, on
//!    a cgroup v2 kernel booted under QEMU (see `qemu.rs`)
//! 8. `bench/run`, `bench/ps` and `bench/exec` with `--smoke`: the benchmarks still run (their figures are not
//!    checked: speed is measured, never asserted)
//!
//! `cargo xtask test --stage N [--bin PATH]` runs only step 5, for one
//! binary: stage N's own, or yours.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::grade::{self, Grader};
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
                "-h" | "--help" => {
                    println!(
                        "usage: cargo xtask test [--stage N] [--bin PATH]\n\
                         without options: everything CI runs; with them: grade \
                         one binary (stage N's own by default) on stages 1..N"
                    );
                    std::process::exit(0);
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
        let grader = Grader::new(root)?;
        return end_to_end(&grader, stage, &bin);
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
    root_unit_tests(root)?;
    // The stage tests' own unit tests, which need no root: among them, the
    // check that tests/catalog.txt has every test and names real sections
    // of the book.
    cargo(
        root,
        &["test", "--package", "mydocker-stage-tests", "--lib"],
    )?;
    crate::split::split(root, true)?;

    let mut binaries = Vec::new();
    for stage in STAGES {
        binaries.push((stage.number, build_chapter(root, stage.number)?));
    }
    cargo(root, &["build", "--package", "mydocker"])?;
    // The book's transcripts run against the chapters' binaries, and grade
    // some of them as step 5 would.
    let graded = crate::book::check(root, &[])?;
    binaries.push((stages::last(), root.join("target/debug/mydocker")));
    let grader = Grader::new(root)?;
    for (stage, bin) in &binaries {
        match graded_by_book(&graded, *stage, bin)? {
            Some(by) => println!(
                "\n== stage {stage} against {}: already graded, every test passed, by \
                 {} (`cargo xtask test --stage {stage} --bin {}`): not run again",
                bin.strip_prefix(root).unwrap_or(bin).display(),
                by.at,
                crate::book::INSTALLED,
            ),
            None => end_to_end(&grader, *stage, bin)?,
        }
    }
    // The stage tests must fail on every broken variant of the program.
    crate::broken::main(root, &[])?;
    crate::qemu::v2_tests(root)?;
    // The benchmark must keep working: a few runs of each row, not saved.
    cargo(root, &["build", "--release", "--package", "mydocker"])?;
    bench_smoke(root)?;
    println!("xtask: every check passed");
    Ok(())
}

/// The book's grading run of `bin` on `stage`, if it did one with every
/// test passed: the same stage, and a binary with the same content.
fn graded_by_book<'a>(
    graded: &'a [crate::book::Graded],
    stage: u32,
    bin: &Path,
) -> Result<Option<&'a crate::book::Graded>> {
    if !graded.iter().any(|g| g.stage == stage) {
        return Ok(None);
    }
    let sha256 = crate::book::sha256(bin)?;
    Ok(graded
        .iter()
        .find(|g| g.stage == stage && g.sha256 == sha256))
}

/// mydocker's unit tests that need root (network namespaces, iptables in
/// them) are `#[ignore]`d, so that `cargo test` as a user passes and says
/// it ignored them; they run here, as root, or through sudo.
fn root_unit_tests(root: &Path) -> Result<()> {
    if is_root() {
        return cargo(root, &["test", "--package", "mydocker", "--", "--ignored"]);
    }
    println!("\n== mydocker's root-only unit tests, through sudo");
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "test",
            "--no-run",
            "--message-format=json",
            "--package",
            "mydocker",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    let exe = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no unit test binary of mydocker")?;
    let status = Command::new("sudo")
        .arg(&exe)
        .arg("--ignored")
        .status()
        .context("run sudo")?;
    if !status.success() {
        bail!("mydocker's root-only unit tests failed ({status})");
    }
    Ok(())
}

fn bench_smoke(root: &Path) -> Result<()> {
    let bin = root.join("target/release/mydocker");
    for script in ["bench/run", "bench/ps", "bench/exec"] {
        let status = Command::new(root.join(script))
            .arg("--smoke")
            .arg("--bin")
            .arg(&bin)
            .status()
            .with_context(|| format!("run {script} --smoke"))?;
        if !status.success() {
            bail!("{script} --smoke failed ({status})");
        }
    }
    Ok(())
}

/// Build chapters/NN-slug and return its binary, copied to target/stages.
/// Each chapter has a target directory of its own: two chapters with the
/// same dependencies are the same package to cargo's fingerprint (name,
/// version, path in its own workspace), and in a shared directory cargo
/// would hand chapter 5 the binary it built for chapter 4 whenever no
/// source file is newer than that binary (as in a fresh clone).
pub fn build_chapter(root: &Path, number: u32) -> Result<PathBuf> {
    let stage = stages::find(number).context("no such stage")?;
    let manifest = root.join("chapters").join(stage.slug).join("Cargo.toml");
    let target = root.join("target/chapters").join(stage.slug);
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

/// Run the end-to-end tests of stages 1..=`stage` against `bin`, every one
/// of them (no stopping at the first failure), and print the report: each
/// test's result, the details of each failure, and a summary that names
/// what each failed test expected and where the book teaches it. As a user
/// with sudo, the test binaries run through sudo (see `grade.rs`).
fn end_to_end(grader: &Grader, stage: u32, bin: &Path) -> Result<()> {
    grade::grade_one(grader, bin, stage)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Graded;

    #[test]
    fn a_pair_the_book_graded_is_found_by_stage_and_content() {
        let dir = std::env::temp_dir().join(format!("xtask-graded-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (bin, copy, other) = (dir.join("a"), dir.join("b"), dir.join("c"));
        fs::write(&bin, "chapter 8").unwrap();
        fs::write(&copy, "chapter 8").unwrap();
        fs::write(&other, "chapter 7").unwrap();
        let graded = vec![Graded {
            stage: 8,
            sha256: crate::book::sha256(&bin).unwrap(),
            at: "book/src/08-exec.md:1377".into(),
        }];
        let found = graded_by_book(&graded, 8, &copy).unwrap();
        assert_eq!(
            found.map(|g| g.at.as_str()),
            Some("book/src/08-exec.md:1377")
        );
        assert!(graded_by_book(&graded, 7, &copy).unwrap().is_none());
        assert!(graded_by_book(&graded, 8, &other).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
