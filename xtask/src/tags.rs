//! `cargo xtask tags`: one git tag per stage, `stage-01-namespace`, ...
//!
//! Each tag is a commit whose tree is exactly that chapter's crate, as
//! committed in HEAD, and whose parent is the previous stage's: so
//! `git diff stage-01-namespace stage-02-cgroups` shows what chapter 2
//! adds, `git log stage-03-rootfs` lists the stages, and
//! `git worktree add /tmp/s3 stage-03-rootfs` checks out stage 3 alone.
//! The commits have a fixed author and date, so the same chapters always
//! give the same commits, and running this again changes nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::stages::STAGES;

/// Fixed, so that a tag only moves when its chapter changes.
const IDENTITY: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "mydocker"),
    ("GIT_AUTHOR_EMAIL", "mydocker@localhost"),
    ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
    ("GIT_COMMITTER_NAME", "mydocker"),
    ("GIT_COMMITTER_EMAIL", "mydocker@localhost"),
    ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
];

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("xtask tags takes no arguments, not {arg:?}");
    }
    if git(root, &["rev-parse", "--verify", "--quiet", "HEAD"]).is_err() {
        bail!("{} is not a git checkout with commits", root.display());
    }
    let mut parent: Option<String> = None;
    for stage in STAGES {
        let tag = format!("stage-{}", stage.slug);
        let tree = git(
            root,
            &["rev-parse", &format!("HEAD:chapters/{}", stage.slug)],
        )
        .with_context(|| format!("chapters/{} is not committed", stage.slug))?;
        let message = format!("Stage {}: chapters/{}", stage.number, stage.slug);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", &message];
        if let Some(parent) = &parent {
            args.extend(["-p", parent.as_str()]);
        }
        let commit = git(root, &args)?;
        let old = git(
            root,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/tags/{tag}"),
            ],
        )
        .ok();
        if old.as_deref() != Some(commit.as_str()) {
            git(root, &["update-ref", &format!("refs/tags/{tag}"), &commit])?;
        }
        let how = match old {
            Some(old) if old == commit => "unchanged",
            Some(_) => "moved",
            None => "new",
        };
        println!("{tag:<22} {} ({how})", &commit[..12]);
        parent = Some(commit);
    }
    Ok(())
}

/// Run git in `root` and return its output, trimmed.
fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .envs(IDENTITY)
        .stderr(Stdio::piped())
        .output()
        .context("run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
