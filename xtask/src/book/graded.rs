//! The grading the book's transcripts did, so that CI does not do it twice.
//!
//! Each chapter's "Check your own binary" types
//! `cargo xtask test --stage N --bin /usr/local/bin/mydocker`, with the
//! chapter's binary installed there: the same tests of stages 1 to N,
//! against the same binary, that `cargo xtask test` runs afterwards for
//! every chapter. When such a block matched the page and its summary says
//! that every stage passed, the run is recorded as a `Graded`: the stage,
//! and the SHA-256 of the binary that `/usr/local/bin/mydocker` was during
//! the whole block. `test.rs` skips the (stage, binary) pairs it finds
//! there, and grades everything else.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::transcript::{Block, Step};

/// The binary the grading transcripts name: the page's own, installed.
pub const INSTALLED: &str = "/usr/local/bin/mydocker";

/// A grading run of a transcript in which every test passed.
#[derive(Clone, Debug)]
pub struct Graded {
    /// `--stage N`: the tests of stages 1 to N ran, with MYDOCKER_STAGE=N.
    pub stage: u32,
    /// The SHA-256 of the binary graded, in hex.
    pub sha256: String,
    /// The block that did it, `book/src/08-exec.md:1377`.
    pub at: String,
}

/// If `block` grades the installed binary, the index of that step and its
/// stage: a step that is exactly
/// `cargo xtask test --stage N --bin /usr/local/bin/mydocker` (the two
/// options in either order), typed into a root shell.
pub fn grading_step(block: &Block) -> Option<(usize, u32)> {
    if block.options.nobody {
        return None;
    }
    block.steps.iter().enumerate().find_map(|(k, step)| {
        let Step::Shell { input, .. } = step else {
            return None;
        };
        let [line] = input.as_slice() else {
            return None;
        };
        grading_stage(line).map(|stage| (k, stage))
    })
}

/// The N of `cargo xtask test --stage N --bin /usr/local/bin/mydocker`.
fn grading_stage(command: &str) -> Option<u32> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let options = match words.as_slice() {
        ["cargo", "xtask", "test", rest @ ..] => rest,
        _ => return None,
    };
    match options {
        ["--stage", n, "--bin", INSTALLED] | ["--bin", INSTALLED, "--stage", n] => n.parse().ok(),
        _ => None,
    }
}

/// Whether the output of `cargo xtask test --stage N --bin
/// /usr/local/bin/mydocker` (`lines`, as the terminal showed them) ends
/// with a summary in which every stage from 1 to N passed: the line
/// `== /usr/local/bin/mydocker graded as stage N`, then no failure, then
/// `stage K: P passed, 0 failed` for K = 1..=N, with P > 0, and nothing
/// after (`xtask: ...` would be an error).
pub fn all_passed(lines: &[String], stage: u32) -> bool {
    let header = format!("== {INSTALLED} graded as stage {stage}");
    let Some(at) = lines.iter().rposition(|l| l.trim_end() == header) else {
        return false;
    };
    let rest: Vec<&str> = lines[at + 1..]
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .collect();
    rest.len() == stage as usize
        && rest.iter().zip(1..=stage).all(|(line, k)| {
            line.strip_prefix(&format!("stage {k}: "))
                .and_then(|counts| counts.strip_suffix(" passed, 0 failed"))
                .and_then(|passed| passed.parse::<u32>().ok())
                .is_some_and(|passed| passed > 0)
        })
}

/// The SHA-256 of a file, in hex, by `sha256sum` (coreutils): xtask is
/// built without optimizations, and a debug build of mydocker is tens of
/// megabytes.
pub fn sha256(path: &Path) -> Result<String> {
    let output = Command::new("sha256sum")
        .arg("--")
        .arg(path)
        .output()
        .context("run sha256sum")?;
    if !output.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    match text.split_whitespace().next() {
        Some(hex) if hex.len() == 64 => Ok(hex.to_string()),
        _ => bail!("sha256sum {}: unexpected output {text:?}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_grading_command() {
        let installed = "cargo xtask test --stage 8 --bin /usr/local/bin/mydocker";
        assert_eq!(grading_stage(installed), Some(8));
        let swapped = "cargo xtask test --bin /usr/local/bin/mydocker --stage 3";
        assert_eq!(grading_stage(swapped), Some(3));
        for other in [
            "cargo xtask test --stage 8 --bin /tmp/naive/target/debug/mydocker",
            "cargo xtask test --stage 8",
            "cargo xtask test",
            "cargo xtask broken --stage 8",
            "cargo xtask test --stage x --bin /usr/local/bin/mydocker",
        ] {
            assert_eq!(grading_stage(other), None, "{other}");
        }
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn every_stage_of_the_summary_must_pass() {
        let passed = lines(
            "ok      x\n\n== /usr/local/bin/mydocker graded as stage 2\n\
             stage 1: 21 passed, 0 failed\nstage 2: 14 passed, 0 failed\n",
        );
        assert!(all_passed(&passed, 2));
        // Another stage than the one asked for.
        assert!(!all_passed(&passed, 3));
        let failed = lines(
            "== /usr/local/bin/mydocker graded as stage 2\n\
             FAILED stage02_cgroups::x: expected y -- see z\n\
             stage 1: 21 passed, 0 failed\nstage 2: 13 passed, 1 failed\n\
             xtask: 1 stage tests failed against /usr/local/bin/mydocker\n",
        );
        assert!(!all_passed(&failed, 2));
        let missing =
            lines("== /usr/local/bin/mydocker graded as stage 2\nstage 2: 14 passed, 0 failed\n");
        assert!(!all_passed(&missing, 2));
        let other_binary =
            lines("== /tmp/naive/mydocker graded as stage 1\nstage 1: 21 passed, 0 failed\n");
        assert!(!all_passed(&other_binary, 1));
    }
}
