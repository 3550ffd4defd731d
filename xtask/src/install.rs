//! `cargo xtask install --stage N [--bin PATH]`: make `mydocker` stage N.
//!
//! A reader at chapter N types `sudo mydocker ...` and must get chapter N's
//! program, not the complete one that scripts/setup.sh installed: `sudo`
//! resets PATH, so "whichever binary you are studying" cannot be found by
//! name. This builds chapter N (or takes the reader's own binary) and
//! installs it as /usr/local/bin/mydocker, where `sudo` finds it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::stages;

/// Where the book's `sudo mydocker` finds the program: on sudo's
/// secure_path, and where scripts/setup.sh installs the complete one.
const DEST: &str = "/usr/local/bin/mydocker";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let (stage, bin) = parse(args)?;
    let stage = stages::find(stage).context("no such stage")?;
    let source = match &bin {
        Some(bin) => bin.clone(),
        None => {
            // Quiet: the reader wants the program, not cargo's progress
            // (errors are still printed).
            std::env::set_var("CARGO_TERM_QUIET", "true");
            crate::test::build_chapter(root, stage.number)?
        }
    };
    install(&source, Path::new(DEST))?;
    match bin {
        Some(bin) => println!(
            "mydocker is now {}, your stage {}: {DEST}",
            bin.display(),
            stage.number
        ),
        None => println!(
            "mydocker is now stage {} ({}): {DEST}",
            stage.number, stage.slug
        ),
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<(u32, Option<PathBuf>)> {
    let usage = "usage: cargo xtask install --stage N [--bin PATH]";
    let (mut stage, mut bin) = (None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stage" => {
                let n = args.next().context(usage)?;
                let n: u32 = n
                    .parse()
                    .with_context(|| format!("--stage {n}: not a number\n{usage}"))?;
                if stages::find(n).is_none() {
                    bail!("--stage {n}: stages are 1 to {}", stages::last());
                }
                stage = Some(n);
            }
            "--bin" => {
                let path = args.next().context(usage)?;
                let path = fs::canonicalize(path).with_context(|| format!("--bin {path}"))?;
                bin = Some(path);
            }
            other => bail!("unknown option {other:?}\n{usage}"),
        }
    }
    Ok((stage.context(usage)?, bin))
}

/// Copy `source` to `dest`: directly as root, through `sudo install`
/// otherwise. A copy and a rename, so that a mydocker still running from
/// `dest` keeps its own file.
fn install(source: &Path, dest: &Path) -> Result<()> {
    if !crate::test::is_root() {
        let status = Command::new("sudo")
            .args(["install", "-m", "0755"])
            .arg(source)
            .arg(dest)
            .status()
            .context("run sudo install")?;
        if !status.success() {
            bail!(
                "sudo install {} {} failed",
                source.display(),
                dest.display()
            );
        }
        return Ok(());
    }
    let dir = dest.parent().context("no directory to install into")?;
    let partial = dir.join(format!(".mydocker.{}", std::process::id()));
    let copied = fs::copy(source, &partial)
        .and_then(|_| fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)))
        .and_then(|()| fs::rename(&partial, dest));
    if let Err(err) = copied {
        let _ = fs::remove_file(&partial);
        return Err(err)
            .with_context(|| format!("install {} as {}", source.display(), dest.display()));
    }
    Ok(())
}
