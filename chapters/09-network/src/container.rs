//! A container's files on the host, in `<root>/containers/ID/`: its own
//! writable layer (`upper/`, `work/`), the mount point of its overlay
//! (`rootfs/`), and the name of the image copy below it (`layer`).
//!
//! The directory lives until `rm` (or, with `--rm`, until the container
//! ends), with the container's record (record.rs) and log (logs.rs). To
//! tell a running container from a stopped one, its monitor (monitor.rs)
//! holds a lock on the file `containers/ID/lock`: flock(2) locks belong to
//! an open file, so the kernel releases them when their holder dies,
//! however it dies. A record that says "running" while nobody holds the
//! lock is a killed monitor's: the next command that sees it settles it.

use std::collections::HashSet;
use std::io::ErrorKind::{NotADirectory, NotFound};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::{chown, Gid, Uid};

use crate::cgroups::Cgroup;
use crate::id;
use crate::layers::{self, Layer};
use crate::overlay::{self, MERGED, UPPER, WORK};
use crate::paths::Paths;
use crate::signals;
use crate::volumes;
use crate::names;
use crate::network;
use crate::record::{Record, State};
use std::time::{Duration, Instant, SystemTime};

// ANCHOR: container
// ANCHOR: create
pub struct Container {
    pub id: String,
    dir: PathBuf,
    /// The digest of the image copy it stands on.
    layer: String,
    /// `lock`, open and locked: this `run`, or the container's monitor,
    /// is alive.
    lock: File,
    /// Whether dropping the handle leaves the directory: once the
    /// container has started, its record says what becomes of it.
    pub kept: bool,
    /// `names/NAME`, given up with the directory.
    name_link: PathBuf,
}

impl Container {
    /// Make the directory of container `id`, on the image copy `layer`,
    /// with the named volumes `volumes`, and give it the name `name`.
    pub fn create(
        paths: &Paths,
        id: &str,
        layer: &Layer,
        volumes: &[String],
        name: &str,
    ) -> Result<Container> {
        let dir = paths.container(id);
        // Make the directory and lock it while holding `containers/`
        // locked: a `run` looking for dead containers takes that lock
        // first, so it never sees a directory made but not yet locked.
        let store = lock_store(paths)?;
        // Made under another name, locked, then renamed: a directory named
        // like a container always has its lock. (A `run` killed half-way
        // leaves a `.ID.new`, which the next sweep removes.)
        let new = paths.containers().join(format!(".{id}.new"));
        // 0700: the host's users must not reach the container's files, say
        // a setuid-root program written in the container.
        DirBuilder::new()
            .mode(0o700)
            .create(&new)
            .with_context(|| format!("mkdir {}", new.display()))?;
        let locked = lock(&new.join(LOCK), true, libc::LOCK_EX).and_then(|f| {
            // First: a run that loses the name makes nothing (no named
            // volume). Released again below if what follows fails.
            names::claim(paths, name, id)?;
            prepare_overlay(&new, layer)?;
            make_and_record_volumes(paths, &new, volumes)?;
            fs::rename(&new, &dir)
                .with_context(|| format!("rename to {}", dir.display()))?;
            Ok(f)
        });
        let lock = match locked {
            Ok(lock) => lock,
            Err(err) => {
                let _ = fs::remove_dir_all(&new);
                let _ = names::release(paths, name, id);
                return Err(err);
            }
        };
        // From here on, dropping `container` removes the directory again.
        let container = Container {
            id: id.to_string(),
            lock,
            kept: false,
            name_link: paths.name(name),
            dir,
            layer: layer.digest.clone(),
        };
        drop(store);
        Ok(container)
    }
    // ANCHOR_END: create

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(MERGED)
    }

    /// The image copy, as init's overlay options name it: relative to the
    /// container's directory.
    pub fn lower(&self) -> PathBuf {
        Path::new(overlay::LAYERS_FROM_CONTAINER).join(&self.layer)
    }

    pub fn short_id(&self) -> &str {
        id::short(&self.id)
    }

    /// The container's directory: `containers/ID/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Container `id` that exists already, to start it again: `lock` is
    /// its lock, which the caller has taken.
    pub fn open(paths: &Paths, id: &str, lock: File) -> Result<Container> {
        let dir = paths.container(id);
        let file = dir.join(LAYER);
        let layer = fs::read_to_string(&file)
            .with_context(|| format!("read {}", file.display()))?;
        let record = Record::load(&dir)?;
        Ok(Container {
            id: id.to_string(),
            lock,
            kept: true,
            name_link: paths.name(&record.name),
            dir,
            layer,
        })
    }

    /// Its lock, for a process that takes the container over.
    pub fn lock(&self) -> &File {
        &self.lock
    }
}

// ANCHOR: prepare_overlay
/// The container's side of its overlay, made in its new directory: its own
/// layer `upper/`, overlay's scratch directory `work/` (on the same
/// filesystem, as overlay requires), the mount point `rootfs/`, and the file
/// `layer` that names the image copy, so that nobody removes the copy while
/// the container uses it.
fn prepare_overlay(dir: &Path, layer: &Layer) -> Result<()> {
    let file = dir.join(LAYER);
    fs::write(&file, &layer.digest)
        .with_context(|| format!("write {}", file.display()))?;
    for name in [UPPER, WORK, MERGED] {
        let path = dir.join(name);
        fs::create_dir(&path)
            .with_context(|| format!("mkdir {}", path.display()))?;
    }
    // The merged `/` has the mode and owner of the upper directory, the
    // topmost layer: give it those of the copy's root (0755 root's, as
    // `image::unpack` makes it), whatever the umask made of `upper`.
    let upper = dir.join(UPPER);
    let image_root = fs::metadata(&layer.dir)
        .with_context(|| format!("stat {}", layer.dir.display()))?;
    let mode = fs::Permissions::from_mode(image_root.mode() & 0o7777);
    fs::set_permissions(&upper, mode)
        .with_context(|| format!("chmod {}", upper.display()))?;
    let (uid, gid) = (image_root.uid(), image_root.gid());
    chown(&upper, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .with_context(|| format!("chown {}", upper.display()))?;
    Ok(())
}
// ANCHOR_END: prepare_overlay

/// The file in a container's directory that names its image copy.
const LAYER: &str = "layer";

// ANCHOR: volumes_file
/// The file in a container's directory that names its named volumes.
const VOLUMES: &str = "volumes";

/// Make the named volumes of a new container and write their names in
/// its directory, while `containers/` is locked: `volume rm` takes that
/// lock, then reads these files.
fn make_and_record_volumes(
    paths: &Paths,
    dir: &Path,
    names: &[String],
) -> Result<()> {
    for name in names {
        volumes::named::create(paths, name)?;
    }
    let file = dir.join(VOLUMES);
    fs::write(&file, names.join("\n"))
        .with_context(|| format!("write {}", file.display()))
}

/// The named volumes of the containers, with their short IDs: a stopped
/// one will need its volumes when it starts again.
/// The caller holds `containers/` locked, so no container is being made.
pub fn volumes_in_use(paths: &Paths) -> Result<Vec<(String, String)>> {
    let mut used = Vec::new();
    for id in all(paths)? {
        let file = paths.container(&id).join(VOLUMES);
        match fs::read_to_string(&file) {
            Ok(names) => used.extend(
                names
                    .lines()
                    .map(|name| (name.to_string(), id::short(&id).to_string())),
            ),
            // A container made by chapter 4's program: no named volumes.
            Err(err) if matches!(err.kind(), NotFound | NotADirectory) => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("read {}", file.display()))
            }
        }
    }
    Ok(used)
}
// ANCHOR_END: volumes_file

// ANCHOR: in_use
/// The image copies that containers stand on, dead or alive: a dead one's
/// directory still names its copy until the sweep has removed it.
pub fn layers_in_use(paths: &Paths) -> Result<HashSet<String>> {
    let containers = paths.containers();
    let mut used = HashSet::new();
    for entry in fs::read_dir(&containers)
        .with_context(|| format!("read {}", containers.display()))?
    {
        let file = entry?.path().join(LAYER);
        match fs::read_to_string(&file) {
            Ok(digest) if layers::is_digest(&digest) => {
                used.insert(digest);
            }
            Ok(_) => {}
            // Not a container's directory, or a container made by chapter
            // 3's program, which has no copy.
            Err(err) if matches!(err.kind(), NotFound | NotADirectory) => {}
            // Any other failure: we cannot tell which copy it uses, so
            // no copy may be removed.
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("read {}", file.display()))
            }
        }
    }
    Ok(used)
}
// ANCHOR_END: in_use

// ANCHOR: find_running
/// The full ID of the running container that `name` names (see `find`).
pub fn find_running(paths: &Paths, name: &str) -> Result<String> {
    let id = find(paths, name)?;
    if !is_running(paths, &id)? {
        bail!("container {name} is not running");
    }
    Ok(id)
}

// ANCHOR_END: find_running

// ANCHOR: layers_of_running
/// The image copies that containers stand on, with the containers' short
/// IDs: a stopped one needs its copy to start again.
pub fn layers_of_running(paths: &Paths) -> Result<Vec<(String, String)>> {
    let mut layers = Vec::new();
    for id in all(paths)? {
        let file = paths.container(&id).join(LAYER);
        let digest = fs::read_to_string(&file)
            .with_context(|| format!("read {}", file.display()))?;
        layers.push((digest, id::short(&id).to_string()));
    }
    Ok(layers)
}
// ANCHOR_END: layers_of_running

// ANCHOR: find
/// The full ID of the container that `name` names: its full ID, its name,
/// or the start of its ID, looked for in that order, as Docker does.
pub fn find(paths: &Paths, name: &str) -> Result<String> {
    if id::is_id(name) && paths.container(name).is_dir() {
        return Ok(name.to_string());
    }
    if let Some(id) = names::lookup(paths, name) {
        return Ok(id);
    }
    let hex = name.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    let found: Vec<String> = match hex && !name.is_empty() {
        true => all(paths)?
            .into_iter()
            .filter(|id| id.starts_with(name))
            .collect(),
        false => Vec::new(),
    };
    match found.as_slice() {
        [] => bail!("no such container: {name}"),
        [id] => Ok(id.clone()),
        several => bail!(
            "{name:?} starts the IDs of {} containers ({}): give more of it",
            several.len(),
            several
                .iter()
                .map(|id| id::short(id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The IDs of all the containers, running or not.
pub fn all(paths: &Paths) -> Result<Vec<String>> {
    let containers = paths.containers();
    let entries = match fs::read_dir(&containers) {
        Ok(entries) => entries,
        Err(err) if err.kind() == NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("read {}", containers.display()))
        }
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("read {}", containers.display()))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id::is_id(&id) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}
// ANCHOR_END: find

// ANCHOR: is_running
/// Whether container `id` runs: its monitor (or foreground `run`) holds
/// the container's lock, `lock`, exclusively, for as long as it lives, and
/// nobody else ever takes it so.
///
/// We only look: a *shared* lock, given back at once. Two who look at the
/// same time do not get in each other's way. A container that is gone
/// (removed meanwhile) does not run.
pub fn is_running(paths: &Paths, id: &str) -> Result<bool> {
    let path = paths.container(id).join(LOCK);
    match lock(&path, false, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(_) => Ok(false),
        Err(err) if err.downcast_ref() == Some(&Errno::EWOULDBLOCK) => Ok(true),
        Err(err) if gone(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether `err` says that a container's files are not there (any more).
fn gone(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| matches!(e.kind(), NotFound | NotADirectory))
}
// ANCHOR_END: is_running

// ANCHOR: change
/// The right to change a stopped container (settle it, remove it, start
/// it): a lock of its directory, so that two commands never change one
/// container at once. None if the container is gone. (A monitor needs no
/// such right: nobody changes a container that runs.)
pub fn change(paths: &Paths, id: &str) -> Result<Option<File>> {
    let dir = paths.container(id);
    let lock = match lock_waiting(&dir) {
        // Removed while we waited: we locked what is now `.ID.removing`.
        Ok(_) if !dir.exists() => return Ok(None),
        Ok(lock) => lock,
        Err(err) if gone(&err) => return Ok(None),
        Err(err) => return Err(err),
    };
    // A monitor that has written "exited" is about to let its lock go:
    // wait for it, rather than take its container for a running one.
    // It only closes its files: a few ms. One that never does is stuck.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = |record: Record| record.state == State::Exited;
    while Record::load_if_there(&dir)?.is_some_and(exited)
        && is_running(paths, id)?
    {
        if Instant::now() > deadline {
            bail!("the monitor of container {} does not end", id::short(id));
        }
        signals::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Some(lock))
}

/// The container's `lock`, for a new monitor (`start`): the caller has the
/// right to change it, and saw that it does not run, so only someone who
/// looks (`is_running`) may hold it, for a moment.
pub fn take_for_monitor(paths: &Paths, id: &str) -> Result<File> {
    lock_waiting(&paths.container(id).join(LOCK))
}
// ANCHOR_END: change

// ANCHOR: settle
/// Bring the record of container `id` up to date if its monitor is dead.
/// The caller has the right to change it (`change`).
///
/// A record that still says "running" (or "created": killed before the
/// command ran) is a monitor's that was killed (`kill -9`) before it could
/// write how the container ended. The container died with it (see
/// namespace.rs); whatever escaped dies now, through its cgroup. How it
/// ended, nobody knows: 255, as Docker says when it loses a container's
/// shim. With `--rm`, it goes.
pub fn settle(paths: &Paths, id: &str) -> Result<()> {
    if is_running(paths, id)? {
        return Ok(()); // started again meanwhile: nothing to settle
    }
    let dir = paths.container(id);
    let Some(mut record) = Record::load_if_there(&dir)? else {
        // Killed before its record was written: a `run` that never ran.
        return remove(paths, id);
    };
    if record.auto_remove {
        return remove(paths, id);
    }
    if unsettled(&record) {
        Cgroup::of_dead_container(id).and_then(Cgroup::kill_and_remove)?;
        // Its endpoint, which its killed monitor could not release.
        network::release(paths, id)?;
        record.state = State::Exited;
        record.exit_code = Some(255);
        record.finished = Some(SystemTime::now());
        record.pid = None;
        record.pid_started = None;
        record.save(&dir)?;
    }
    Ok(())
}

/// Whether the record of a container without a monitor needs `settle`.
pub fn unsettled(record: &Record) -> bool {
    record.state != State::Exited || record.auto_remove
}
// ANCHOR_END: settle

// ANCHOR: remove
/// Remove container `id`, which does not run: what may be left of its
/// cgroup, its directory (record, log, writable layer), its name. The
/// caller has the right to change it, or is its monitor.
pub fn remove(paths: &Paths, id: &str) -> Result<()> {
    Cgroup::of_dead_container(id).and_then(Cgroup::kill_and_remove)?;
    network::release(paths, id)?;
    let dir = paths.container(id);
    let record = Record::load_if_there(&dir).ok().flatten();
    // Renamed away first: the container is gone in one step, and an `rm`
    // killed while it removes the files leaves a `.ID.removing`, which
    // the next sweep removes.
    let doomed = paths.containers().join(format!(".{id}.removing"));
    {
        let _store = lock_store(paths)?;
        fs::rename(&dir, &doomed).with_context(|| {
            format!("rename {} to {}", dir.display(), doomed.display())
        })?;
        if let Some(record) = record {
            names::release(paths, &record.name, id)?;
        }
    }
    fs::remove_dir_all(&doomed)
        .with_context(|| format!("remove {}", doomed.display()))
}
// ANCHOR_END: remove

// ANCHOR: drop
/// However `run` ends, an error included, the container's files go with it.
impl Drop for Container {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Not started: as if `run` had never made it. Its name goes too.
        let _ = names::release_link(&self.name_link, &self.id);
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("mydocker: remove {}: {err}", self.dir.display());
        }
    }
}
// ANCHOR_END: drop
// ANCHOR_END: container

// ANCHOR: remove_dead
/// Remove what killed `run`s left behind: every container directory whose
/// `lock` nobody holds, and the container's cgroup.
pub fn remove_dead(paths: &Paths) -> Result<()> {
    let containers = paths.containers();
    let store = lock_store(paths)?;
    let mut dead = Vec::new();
    let entries = fs::read_dir(&containers)
        .with_context(|| format!("read {}", containers.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Half made by a `run` killed before its rename: nobody is making
        // one now, since we hold the store lock.
        let half_made =
            name.strip_prefix('.').and_then(|n| n.strip_suffix(".new"));
        if half_made.is_some_and(id::is_id) {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        // Being removed by an `rm` that was killed, or that still runs:
        // then one of us gets ENOENT, which is fine.
        let doomed = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".removing"));
        if doomed.is_some_and(id::is_id) {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        // Only what a `run` made: the name becomes a cgroup path below.
        if !entry.path().is_dir() || !id::is_id(&name) {
            continue;
        }
        // A container that runs, or that stopped and stays until `rm`:
        // nothing to do. We only look, so as not to get in the way of a
        // `start` or an `rm` (see is_running).
        if is_running(paths, &name).unwrap_or(true) {
            continue;
        }
        match Record::load_if_there(&entry.path()) {
            Ok(Some(record)) if !unsettled(&record) => continue,
            Ok(_) => {}
            Err(err) => {
                eprintln!("mydocker: warning: {err:#}");
                continue;
            }
        }
        // The right to change it; not blocking: someone else is at it.
        let lock = lock(&entry.path(), false, LOCK_NOW);
        if let Ok(lock) = lock {
            dead.push((entry.path(), name, lock));
        }
    }
    // Holding their locks, we may let other `run`s start while we clean.
    drop(store);
    for (_, id, _change) in dead {
        signals::check_interrupted()?;
        let removed = settle(paths, &id);
        // One that cannot go must not keep the others: try the next.
        if let Err(err) = removed {
            eprintln!("mydocker: warning: {err:#}");
        }
    }
    Ok(())
}
// ANCHOR_END: remove_dead

// ANCHOR: lock
/// Lock `containers/` itself while a container directory is made, or
/// while we look for dead ones: the two never interleave.
/// (`Paths::create_root` made it, and checked whose it is.)
pub fn lock_store(paths: &Paths) -> Result<File> {
    lock(&paths.containers(), false, libc::LOCK_EX)
}

/// The file whose lock says that a container's `run` is alive.
const LOCK: &str = "lock";

/// An exclusive lock, or an error at once if someone else holds it.
const LOCK_NOW: libc::c_int = libc::LOCK_EX | libc::LOCK_NB;

/// An exclusive lock of `path`, waiting for whoever holds it, maybe for a
/// long time, while Ctrl-C can still stop us (a blocked flock(2) would be
/// restarted after the signal).
pub fn lock_waiting(path: &Path) -> Result<File> {
    loop {
        match lock(path, false, LOCK_NOW) {
            Ok(lock) => return Ok(lock),
            Err(err) if err.downcast_ref() == Some(&Errno::EWOULDBLOCK) => {
                signals::check_interrupted()?;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Open `path` (a file, made if `create`; or a directory) and flock(2) it.
/// Closing the file, or the death of this process, releases the lock.
pub fn lock(path: &Path, create: bool, how: libc::c_int) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock(2) takes only a descriptor, which `file` keeps open.
    Errno::result(unsafe { libc::flock(file.as_raw_fd(), how) })
        .with_context(|| format!("flock({})", path.display()))?;
    Ok(file)
}
// ANCHOR_END: lock
