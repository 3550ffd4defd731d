// @stage 7
//! A container's record: what it is (its name, image, command, and all
//! that `start` needs to start it again) and where it is in its life
//! (created, running, exited; its PID, times and exit code), as JSON in
//! `containers/ID/config.json`.
//!
//! Two rules keep it true whatever is killed, whenever:
//! - It is only ever replaced whole: written to a temporary file, then
//!   renamed over the old one. rename(2) is atomic, so a reader sees the
//!   old record or the new one, never half of each, and a writer killed
//!   half-way leaves the old one.
//! - One writer at a time: the monitor while the container runs (it holds
//!   `containers/ID/lock`), or, once no monitor does, the one command that
//!   holds the right to change the container (the lock of its directory,
//!   see container.rs `change`). Readers need no lock.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::ContainerConfig;
use crate::limits::Limits;

// ANCHOR: record
/// Docker's lifecycle: `run` creates a container, it runs while its first
/// process lives, then it has exited, until `start` or `rm`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image, as the user named it.
    pub image: String,
    pub created: SystemTime,
    pub state: State,
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
    /// How the last run ended: its exit code, or 128 + the signal.
    pub exit_code: Option<i32>,
    /// The container's first process, as the host sees it, and when it
    /// started (in clock ticks after boot, /proc/PID/stat's 22nd field):
    /// a PID alone may belong to another process by the time we read it.
    pub pid: Option<i32>,
    pub pid_started: Option<u64>,
    /// `--rm`: remove the container once it ends.
    pub auto_remove: bool,
    /// `-i`: keep its standard input open.
    pub interactive: bool,
    /// What init needs, and the limits of its cgroup: all that `start`
    /// needs to start it again.
    pub config: ContainerConfig,
    pub limits: Limits,
    // @stage 9
    /// `--net` and `-p`. (A record of an older mydocker has none: its
    /// containers had a network namespace with only `lo`.)
    #[serde(default)]
    pub net: crate::network::Settings,
    // @end
}
// ANCHOR_END: record

/// The record's file in a container's directory.
pub const RECORD: &str = "config.json";

// ANCHOR: save
impl Record {
    /// The record of the container whose directory is `dir`.
    pub fn load(dir: &Path) -> Result<Record> {
        let path = dir.join(RECORD);
        let json = fs::read(&path)
            .with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&json)
            .with_context(|| format!("parse {}", path.display()))
    }

    /// The record, or None when there is no container in `dir` (any more).
    pub fn load_if_there(dir: &Path) -> Result<Option<Record>> {
        let path = dir.join(RECORD);
        let json = match fs::read(&path) {
            Ok(json) => json,
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::NotFound | ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None)
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("read {}", path.display()))
            }
        };
        serde_json::from_slice(&json)
            .with_context(|| format!("parse {}", path.display()))
            .map(Some)
    }

    /// Replace the record in `dir` in one step: a temporary file, then
    /// renamed over the old one.
    ///
    /// No fsync: it costs milliseconds on every start and stop, and the
    /// one thing it protects against, a crash of the whole machine, ends
    /// every container anyway. (ext4 flushes a file renamed over another
    /// before the rename itself reaches the disk.)
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("serialize")?;
        let temp = temporary(dir);
        let written = File::create(&temp)
            .and_then(|mut file| file.write_all(&json))
            .with_context(|| format!("write {}", temp.display()))
            .and_then(|()| {
                let path = dir.join(RECORD);
                fs::rename(&temp, &path).with_context(|| {
                    format!("rename {} to {}", temp.display(), path.display())
                })
            });
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// `.config.json.PID`: a dot-file named by its writer, so two writers never
/// share one, and `ps` never takes it for a record.
fn temporary(dir: &Path) -> PathBuf {
    dir.join(format!(".{RECORD}.{}", std::process::id()))
}
// ANCHOR_END: save
// @end
