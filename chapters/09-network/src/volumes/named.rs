//! Named volumes: `-v data:/data` uses `<root>/volumes/data/`, made on
//! first use and kept when the container goes, until `volume rm data`.
//! Docker keeps its own in `/var/lib/docker/volumes/NAME/_data`.
//!
//! `run` records the named volumes of each container in its directory,
//! while `containers/` is locked; `volume rm` takes the same lock, so it
//! never removes a volume that a live container has just been given.

use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;

use anyhow::{bail, Context, Result};
use nix::unistd::Uid;

use super::spec::is_volume_name;
use crate::cli::VolumeCommand;
use crate::container;
use crate::paths::Paths;

// ANCHOR: command
/// `mydocker volume create|ls|rm`.
pub fn command(command: VolumeCommand, paths: &Paths) -> Result<i32> {
    if !Uid::effective().is_root() {
        bail!("volumes are root's, as the state root is: try sudo");
    }
    match command {
        VolumeCommand::Create { name } => {
            check_name(&name)?;
            paths.create_root()?;
            let _store = container::lock_store(paths)?;
            create(paths, &name)?;
            println!("{name}");
        }
        VolumeCommand::Ls { quiet } => list(paths, quiet)?,
        VolumeCommand::Rm { names } => return remove(paths, &names),
    }
    Ok(0)
}
// ANCHOR_END: command

fn check_name(name: &str) -> Result<()> {
    if !is_volume_name(name) {
        bail!(
            "invalid volume name {name:?}: 2 to 255 characters, a letter or \
             digit, then letters, digits, '_', '.' or '-'"
        );
    }
    Ok(())
}

// ANCHOR: create
/// Make the named volume `name` unless it exists. Called with
/// `containers/` locked (see above).
pub fn create(paths: &Paths, name: &str) -> Result<()> {
    let dir = paths.volume(name);
    match DirBuilder::new().mode(0o755).create(&dir) {
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            // Not followed: only a directory of ours is a volume.
            let meta = fs::symlink_metadata(&dir)
                .with_context(|| format!("stat {}", dir.display()))?;
            if !meta.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            Ok(())
        }
        made => {
            made.with_context(|| format!("mkdir {}", dir.display()))?;
            // 0755 whatever the umask, like a host directory.
            super::chmod_made_dir(&dir)
        }
    }
}
// ANCHOR_END: create

// ANCHOR: list
/// `volume ls`: Docker's table, sorted by name.
fn list(paths: &Paths, quiet: bool) -> Result<()> {
    let dir = paths.volumes();
    let mut names = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry =
                    entry.with_context(|| format!("read {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Dot-entries are volumes being removed.
                if is_volume_name(&name) && entry.path().is_dir() {
                    names.push(name);
                }
            }
        }
        // No volume was ever made under this state root.
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("read {}", dir.display()))
        }
    }
    names.sort();
    if !quiet {
        println!("DRIVER    VOLUME NAME");
    }
    for name in names {
        if quiet {
            println!("{name}");
        } else {
            println!("local     {name}");
        }
    }
    Ok(())
}
// ANCHOR_END: list

// ANCHOR: remove
/// `volume rm NAME...`: each one that no running container uses. The
/// others are still removed when one cannot be; the exit code says so.
fn remove(paths: &Paths, names: &[String]) -> Result<i32> {
    let volumes = paths.volumes();
    if !volumes.is_dir() {
        // No volume was ever made under this state root.
        for name in names {
            eprintln!("mydocker: no such volume: {name}");
        }
        return Ok(125);
    }
    // A container whose monitor was killed may hold a volume no more
    // (`--rm`): settle those first.
    container::remove_dead(paths)?;
    // Held until we are done: no `run` can take a volume meanwhile.
    let _store = container::lock_store(paths)?;
    let in_use = container::volumes_in_use(paths)?;
    sweep(paths);
    let mut failed = false;
    for name in names {
        let removed = check_name(name).and_then(|()| {
            if let Some((_, id)) = in_use.iter().find(|(v, _)| v == name) {
                bail!("volume {name} is in use by container {id}");
            }
            let dir = paths.volume(name);
            if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                bail!("no such volume: {name}");
            }
            // Renamed first: killed half-way, `rm` leaves a dot-entry that
            // no container can use, and the next `volume rm` sweeps it.
            // (Named by the process, not by the volume: a leftover that
            // cannot be removed never stands in the way of the name.)
            let going = volumes
                .join(format!(".{name}.{}.removing", std::process::id()));
            fs::rename(&dir, &going)
                .with_context(|| format!("rename {}", dir.display()))?;
            fs::remove_dir_all(&going)
                .with_context(|| format!("remove {}", going.display()))
        });
        match removed {
            Ok(()) => println!("{name}"),
            Err(err) => {
                eprintln!("mydocker: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// Remove what a killed `volume rm` left (we hold the lock it held).
fn sweep(paths: &Paths) {
    let Ok(entries) = fs::read_dir(paths.volumes()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".removing") {
            if let Err(err) = fs::remove_dir_all(entry.path()) {
                let path = entry.path();
                eprintln!(
                    "mydocker: warning: remove {}: {err}",
                    path.display()
                );
            }
        }
    }
}
// ANCHOR_END: remove
