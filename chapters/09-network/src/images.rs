//! The commands on the image store: `images`, `rmi` and `import`, and the
//! one way a file enters it: whole, under its name, in one step.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Pid, Uid};

use crate::container;
use crate::image;
use crate::layers::Layers;
use crate::paths::Paths;
use crate::signals;

// ANCHOR: new_file
/// A file that appears under its name only once it is complete. It is
/// written as `.NAME.PID` next to it, then renamed: rename(2) replaces
/// an older file of that name in one step, so a reader sees the old file
/// or the new one, never half of one. Dropped before `publish`, it is
/// removed; a process killed before then leaves it, for `sweep`.
pub struct NewFile {
    temporary: PathBuf,
    path: PathBuf,
    file: File,
    published: bool,
}

impl NewFile {
    pub fn create(path: &Path) -> Result<NewFile> {
        let name = path.file_name().context("no file name")?;
        let temporary = path.with_file_name(format!(
            ".{}.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // 0600: a container's files may hold its secrets.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("create {}", temporary.display()))?;
        Ok(NewFile {
            temporary,
            path: path.to_path_buf(),
            file,
            published: false,
        })
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Give the file its name.
    pub fn publish(mut self) -> Result<()> {
        // On the disk before it has a name: after a crash, the name never
        // leads to half a file.
        self.file
            .sync_all()
            .with_context(|| format!("fsync {}", self.temporary.display()))?;
        fs::rename(&self.temporary, &self.path)
            .with_context(|| format!("rename to {}", self.path.display()))?;
        self.published = true;
        // And the rename itself, which is written in the directory.
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("fsync {}", dir.display()))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

/// Remove the `.NAME.PID` files in `dir` of processes that no longer
/// exist: commits and imports killed before they could publish.
pub fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('.')
            .and_then(|name| name.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<i32>().ok());
        // kill(pid, 0) sends nothing: it asks whether pid exists.
        if pid.is_some_and(|pid| {
            kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)
        }) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
// ANCHOR_END: new_file

// ANCHOR: images
/// `mydocker images`: Docker's table, sorted by name.
pub fn images(paths: &Paths, quiet: bool) -> Result<i32> {
    root_only()?;
    let names = image::list(paths)?;
    let mut rows = Vec::new();
    if !names.is_empty() {
        paths.create_root()?;
        // The IDs are the tarballs' digests, remembered under this lock.
        let layers = Layers::lock(paths)?;
        for name in names {
            let tarball = image::tarball(paths, &name);
            let meta = fs::metadata(&tarball)
                .with_context(|| format!("stat {}", tarball.display()))?;
            let digest = match layers.digest(&name) {
                Ok(digest) => digest,
                Err(err) if err.is::<signals::Interrupted>() => {
                    return Err(err)
                }
                // Say which, and list the others: a tarball copied in by
                // hand under a name we refuse, say.
                Err(err) => {
                    eprintln!("mydocker: warning: {err:#}");
                    continue;
                }
            };
            let (repository, tag) =
                name.split_once(':').unwrap_or((name.as_str(), "latest"));
            rows.push([
                repository.to_string(),
                tag.to_string(),
                digest[..12].to_string(),
                ago(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                size(meta.len()),
            ]);
        }
    }
    // By name, then tag: `alpha-x` after every tag of `alpha`.
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    if quiet {
        for row in rows {
            println!("{}", row[2]);
        }
    } else {
        let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
        print_table(header.map(String::from), rows);
    }
    Ok(0)
}
// ANCHOR_END: images

/// Docker's columns: as wide as their widest cell and 3 spaces, at least
/// 10 characters.
/// (Counted in characters: `ps` cuts commands with a `…`.)
pub fn print_table<const N: usize>(
    header: [String; N],
    rows: Vec<[String; N]>,
) {
    let width = |cell: &String| cell.chars().count() + 3;
    let mut widths = header.clone().map(|cell| width(&cell).max(10));
    for row in &rows {
        for (column, cell) in widths.iter_mut().zip(row) {
            *column = (*column).max(width(cell));
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:width$}"));
        }
        println!("{}", line.trim_end());
    }
}

// ANCHOR: ago
/// How long ago `time` was, in Docker's words (and with its rounding).
pub fn ago(time: SystemTime) -> String {
    let age = SystemTime::now()
        .duration_since(time)
        .unwrap_or_default()
        .as_secs_f64();
    let (seconds, minutes) = (age as u64, (age / 60.0) as u64);
    let hours = (age / 3600.0 + 0.5) as u64;
    let text = if seconds < 1 {
        "Less than a second".to_string()
    } else if seconds == 1 {
        "1 second".to_string()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (age / 3600.0) as u64 / 24 / 365)
    };
    format!("{text} ago")
}

/// A size in Docker's decimal units, to 3 significant digits: 2.13MB.
fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    // 999,999 bytes is 1MB to 3 digits: round, then choose the unit.
    while round3(value) >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let value = round3(value);
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    // 2.10MB is 2.1MB, and 2.00MB is 2MB, as Docker writes them.
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", units[unit])
}

/// `value` rounded to 3 significant digits.
fn round3(value: f64) -> f64 {
    if value < 1.0 {
        return value.round();
    }
    let scale = 10f64.powi(2 - value.log10().floor() as i32);
    (value * scale).round() / scale
}
// ANCHOR_END: ago

// ANCHOR: rmi
/// `mydocker rmi IMAGE...`: each image that no running container uses,
/// with its unpacked copy. The others are still removed when one cannot
/// be; the exit code says so.
pub fn rmi(paths: &Paths, names: &[String]) -> Result<i32> {
    root_only()?;
    paths.create_root()?;
    sweep(&paths.images());
    // Held until we are done: no `run` can pick a copy or make a
    // container meanwhile.
    let layers = Layers::lock(paths)?;
    let in_use = container::layers_of_running(paths)?;
    // Every image's digest: two names can hold the same content (two
    // commits of an unchanged container), and its copy goes with the last.
    let mut store = Vec::new();
    for name in image::list(paths)? {
        if let Ok(digest) = layers.digest(&name) {
            store.push((name, digest));
        }
    }
    let mut failed = false;
    for name in names {
        let removed = (|| -> Result<()> {
            image::check_name(name)?;
            let name = image::canonical(name);
            let Some(at) = store.iter().position(|(n, _)| *n == name) else {
                bail!("no such image: {name}");
            };
            let digest = store[at].1.clone();
            let last = store.iter().filter(|(_, d)| *d == digest).count() == 1;
            if let Some((_, id)) = in_use.iter().find(|(d, _)| *d == digest) {
                if last {
                    bail!(
                        "image {name} is in use by container {id}: \
                         remove it first (mydocker rm -f {id})"
                    );
                }
            }
            remove(&image::tarball(paths, &name))?;
            remove(&paths.layers().join(format!("{name}.digest")))?;
            store.remove(at);
            let (repository, tag) =
                name.split_once(':').unwrap_or((name.as_str(), "latest"));
            println!("Untagged: {repository}:{tag}");
            if last {
                // Its copy goes too, unless a dead container's directory,
                // not yet swept, still names it.
                layers.remove_unused()?;
                println!("Deleted: sha256:{digest}");
            }
            Ok(())
        })();
        if let Err(err) = removed {
            if err.is::<signals::Interrupted>() {
                return Err(err);
            }
            eprintln!("mydocker: {err:#}");
            failed = true;
        }
    }
    Ok(if failed { 125 } else { 0 })
}
// ANCHOR_END: rmi

// ANCHOR: import
/// `mydocker import FILE|- IMAGE`: a tarball from elsewhere, checked
/// completely before it enters the store. Prints the image's ID.
pub fn import(paths: &Paths, source: &Path, name: &str) -> Result<i32> {
    root_only()?;
    image::check_name(name)?;
    signals::install()?;
    paths.create_root()?;
    sweep(&paths.images());
    let canonical = image::canonical(name);
    let mut new = NewFile::create(&image::tarball(paths, &canonical))?;
    // Copied as it is: the digest is that of the bytes given, which
    // `sha256sum FILE` shows too.
    let copied = if source == Path::new("-") {
        io::copy(&mut io::stdin().lock(), new.file())
    } else {
        File::open(source).and_then(|mut file| io::copy(&mut file, new.file()))
    };
    copied.with_context(|| format!("copy {}", source.display()))?;
    // Checked the way `run` checks every image: by unpacking it, into the
    // copy that containers of it will stand on.
    let layers = Layers::lock(paths)?;
    let mut file = File::open(&new.temporary)
        .with_context(|| format!("open {}", new.temporary.display()))?;
    let digest = layers
        .add(&mut file)
        .with_context(|| format!("import {}", source.display()))?;
    new.publish()?;
    // Remembered now, and the image's former copy removed if unused.
    layers.digest(&canonical)?;
    layers.remove_unused()?;
    println!("sha256:{digest}");
    Ok(0)
}
// ANCHOR_END: import

fn root_only() -> Result<()> {
    if !Uid::effective().is_root() {
        bail!("the image store is root's: try sudo");
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        removed => {
            removed.with_context(|| format!("remove {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(1500), "1.5kB");
        assert_eq!(size(2_130_000), "2.13MB");
        assert_eq!(size(2_000_000), "2MB");
        assert_eq!(size(123_456_789), "123MB");
        assert_eq!(size(1_070_000_000), "1.07GB");
        assert_eq!(size(999_999), "1MB");
        assert_eq!(size(0), "0B");
    }

    #[test]
    fn ages_read_like_dockers() {
        let now = SystemTime::now();
        let before = |s| now - Duration::from_secs(s);
        assert_eq!(ago(now + Duration::from_secs(5)), "Less than a second ago");
        assert_eq!(ago(before(30)), "30 seconds ago");
        assert_eq!(ago(before(90)), "About a minute ago");
        assert_eq!(ago(before(600)), "10 minutes ago");
        assert_eq!(ago(before(4000)), "About an hour ago");
        assert_eq!(ago(before(5400)), "2 hours ago");
        assert_eq!(ago(before(5 * 3600)), "5 hours ago");
        assert_eq!(ago(before(3 * 86400)), "3 days ago");
        assert_eq!(ago(before(21 * 86400)), "3 weeks ago");
    }
}
