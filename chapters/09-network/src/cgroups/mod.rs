//! Resource limits with control groups (cgroups).
//!
//! A cgroup is a directory in a special filesystem. Its files are the
//! controllers' knobs (`memory.max`, `pids.max`, ...); writing a PID into its
//! `cgroup.procs` moves that process, and every child it forks later, into
//! the group. Two layouts exist, and a host has one of them:
//!
//! - cgroup v1: one hierarchy (one mount) per controller, or per group of
//!   controllers, e.g. /sys/fs/cgroup/memory and /sys/fs/cgroup/cpu.
//!   A "hybrid" host also mounts an (almost empty) cgroup v2 tree; mydocker
//!   treats it as v1, like Docker does.
//! - cgroup v2: a single unified hierarchy, usually at /sys/fs/cgroup, where
//!   every controller lives and a parent decides which controllers its
//!   children get.
//!
//! Making a container's cgroup happens in two steps: a [`Plan`] (pure: which
//! directories and files, in which order, checked against the host) is made
//! before the container's process exists, and [`Cgroup::create`] carries it
//! out once it does.

pub mod freezer;
mod v1;
mod v2;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::limits::Limits;

/// Every container's cgroup lives in a directory of this name at the root of
/// each hierarchy: `<root>/mydocker/<container ID>`.
pub const PARENT: &str = "mydocker";

// ANCHOR: layout
/// How the host's cgroups are arranged, as read from /proc/self/mountinfo.
#[derive(Debug, PartialEq)]
pub enum Layout {
    /// cgroup v1: one mount per hierarchy. `unified` is where a hybrid host
    /// mounts cgroup v2 as well, which mydocker leaves alone.
    V1 {
        hierarchies: Vec<Hierarchy>,
        unified: Option<PathBuf>,
    },
    /// cgroup v2: one tree for every controller, mounted at `root`.
    V2 { root: PathBuf },
}

/// One cgroup v1 hierarchy: the controllers it has and where it is mounted.
#[derive(Debug, PartialEq)]
pub struct Hierarchy {
    pub controllers: Vec<String>,
    pub mount: PathBuf,
}
// ANCHOR_END: layout

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Mount options of a v1 cgroup mount that are not controllers.
const NOT_CONTROLLERS: [&str; 6] = [
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
];

impl Layout {
    /// The layout of this host.
    pub fn detect() -> Result<Layout> {
        let path = "/proc/self/mountinfo";
        let text =
            fs::read_to_string(path).with_context(|| format!("read {path}"))?;
        Layout::from_mountinfo(&text)
    }

    // ANCHOR: detect
    /// Find the cgroup mounts in the text of /proc/self/mountinfo. A line is
    /// `ID PARENT DEV ROOT MOUNT_POINT OPTIONS... - FSTYPE SOURCE SUPER_OPTS`;
    /// for a v1 hierarchy, the super options name its controllers.
    pub fn from_mountinfo(text: &str) -> Result<Layout> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            let Some((mount, fs)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = mount.split(' ').nth(4) else {
                continue;
            };
            let mut fs = fs.split(' ');
            let (fstype, options) = (fs.next(), fs.nth(1).unwrap_or_default());
            let mount = PathBuf::from(unescape(mount_point));
            match fstype {
                Some("cgroup2") if unified.is_none() => unified = Some(mount),
                Some("cgroup") => {
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|o| {
                            !NOT_CONTROLLERS.contains(o) && !o.contains('=')
                        })
                        .map(String::from)
                        .collect();
                    // Skip hierarchies without a controller (name=systemd)
                    // and second mounts of one we already have.
                    if !controllers.is_empty()
                        && !hierarchies
                            .iter()
                            .any(|h| h.controllers == controllers)
                    {
                        hierarchies.push(Hierarchy { controllers, mount });
                    }
                }
                _ => {}
            }
        }
        match (hierarchies.is_empty(), unified) {
            (false, unified) => Ok(Layout::V1 {
                hierarchies,
                unified,
            }),
            (true, Some(root)) => Ok(Layout::V2 { root }),
            (true, None) => bail!(
                "no cgroup filesystem is mounted (see /proc/self/mountinfo)"
            ),
        }
    }
    // ANCHOR_END: detect

    /// "cgroup v2" or "cgroup v1", for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1 { unified: None, .. } => "cgroup v1",
            Layout::V1 { .. } => "cgroup v1 (hybrid)",
            Layout::V2 { .. } => "cgroup v2",
        }
    }

    /// The controllers this host offers, each with the directory its files
    /// are in.
    pub fn controllers(&self) -> Result<Vec<(String, PathBuf)>> {
        Ok(match self {
            Layout::V1 { hierarchies, .. } => hierarchies
                .iter()
                .flat_map(|h| {
                    h.controllers.iter().map(|c| (c.clone(), h.mount.clone()))
                })
                .collect(),
            Layout::V2 { root } => v2::available(root)?
                .into_iter()
                .map(|c| (c, root.clone()))
                .collect(),
        })
    }
}

/// Mount points in mountinfo spell space, tab, newline and backslash as
/// octal escapes (`\040`).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ANCHOR: step
/// One thing to do to the cgroup filesystem.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Make a directory: the kernel fills it with the control files. One
    /// that exists already is fine (the `mydocker` parent usually does).
    Mkdir(PathBuf),
    /// Write a value into a control file.
    Write(PathBuf, String),
    /// The same, but only if the kernel has that file (an optional feature,
    /// such as swap accounting).
    WriteIfExists(PathBuf, String),
    /// Copy the value of one control file into another.
    Copy { from: PathBuf, to: PathBuf },
}

/// Everything needed to make one container's cgroup, in order.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The container's own directories (one per v1 hierarchy; one on v2).
    pub leaves: Vec<PathBuf>,
    /// Their `mydocker` parents, shared with other containers.
    pub parents: Vec<PathBuf>,
}
// ANCHOR_END: step

// ANCHOR: plan_new
impl Plan {
    /// Plan the cgroup of container `id`. Fails, before anything is made,
    /// when the host lacks a controller that a limit needs.
    pub fn new(layout: &Layout, id: &str, limits: &Limits) -> Result<Plan> {
        // Every container gets a cgroup, limits or not: `commit` freezes
        // it there (on v1, in the freezer hierarchy; on v2 every cgroup can
        // be frozen).
        match layout {
            Layout::V1 { hierarchies, .. } => v1::plan(hierarchies, id, limits)
                .with_context(|| {
                    format!("{}: see `mydocker info`", layout.name())
                }),
            Layout::V2 { root } => {
                v2::plan(root, &v2::available(root)?, id, limits).with_context(
                    || format!("{}: see `mydocker info`", layout.name()),
                )
            }
        }
    }
}
// ANCHOR_END: plan_new

/// A container's cgroup, removed again by `remove` or, at the latest, when
/// the handle is dropped: every way out of `run` cleans up.
pub struct Cgroup {
    leaves: Vec<PathBuf>,
    parents: Vec<PathBuf>,
    removed: bool,
}

// ANCHOR: create
impl Cgroup {
    /// Carry out `plan`: make the directories and write the limits.
    pub fn create(plan: Plan) -> Result<Cgroup> {
        // From here on, whatever happens, drop() removes what exists.
        let cgroup = Cgroup {
            leaves: plan.leaves,
            parents: plan.parents,
            removed: false,
        };
        let mut attempt = 1;
        loop {
            match plan.steps.iter().try_for_each(apply) {
                Ok(()) => return Ok(cgroup),
                // Another container that ended just now may have removed
                // the shared `mydocker` parent between our mkdir and our
                // use of it. Every step can be done twice: start again.
                Err(err)
                    if errno(&err) == Some(Errno::ENOENT) && attempt < 5 =>
                {
                    attempt += 1
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Move process `pid` (and so every process it starts later) into the
    /// cgroup: write its PID into `cgroup.procs` of each directory.
    pub fn add(&self, pid: Pid) -> Result<()> {
        for leaf in &self.leaves {
            write(&leaf.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
    // ANCHOR_END: create

    // ANCHOR: remove
    /// Remove the container's directories, then the `mydocker` parents if
    /// no other container uses them any more.
    pub fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut result = Ok(());
        for leaf in &self.leaves {
            // Try every directory, and report the first failure.
            result = result.and(remove_leaf(leaf));
        }
        for parent in &self.parents {
            match fs::remove_dir(parent).map_err(os) {
                // Busy: another container is in it. Gone: removed by
                // another container that ended at the same time.
                Ok(())
                | Err(Errno::EBUSY | Errno::ENOTEMPTY | Errno::ENOENT) => {}
                Err(err) => {
                    result = result
                        .and(Err(err).with_context(|| rmdir_context(parent)));
                }
            }
        }
        result
    }
}

// ANCHOR: dead
impl Cgroup {
    /// The cgroup of container `id`, whose `run` was killed before it could
    /// remove it (see container.rs): the directories that still exist.
    pub fn of_dead_container(id: &str) -> Result<Cgroup> {
        // Which limits it had, and so which hierarchies it is in, nobody
        // remembers: look in all of them.
        let mounts = match Layout::detect()? {
            Layout::V1 { hierarchies, .. } => {
                hierarchies.into_iter().map(|h| h.mount).collect()
            }
            Layout::V2 { root } => vec![root],
        };
        let parents: Vec<PathBuf> = mounts
            .into_iter()
            .map(|mount| mount.join(PARENT))
            .filter(|parent| parent.exists())
            .collect();
        let leaves = parents
            .iter()
            .map(|parent| parent.join(id))
            .filter(|leaf| leaf.exists())
            .collect();
        Ok(Cgroup {
            leaves,
            parents,
            removed: false,
        })
    }

    /// Kill any process still in it, then remove it. There should be none:
    /// the container dies with its `run`. But a cgroup's own list of its
    /// processes is the one list that no process can leave by forking.
    pub fn kill_and_remove(mut self) -> Result<()> {
        // Stopped first: then no process that a list names can end, and
        // its PID go to another process, before our kill reaches it. v2
        // (Linux 5.14) kills a whole cgroup by itself; v1 freezes it.
        let mut listed = Vec::new();
        for leaf in &self.leaves {
            if write(&leaf.join("cgroup.kill"), "1").is_err() {
                freeze(leaf);
                listed.push(leaf);
            }
        }
        for leaf in listed {
            let procs = read(&leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // A frozen process dies only once thawed (on v1): a commit
            // killed together with its guard leaves the container frozen.
            for (file, thawed) in
                [("freezer.state", "THAWED"), ("cgroup.freeze", "0")]
            {
                if leaf.join(file).exists() {
                    let _ = write(&leaf.join(file), thawed);
                }
            }
        }
        self.remove()
    }
}

/// Freeze a v1 freezer cgroup, and wait (a moment) until it is frozen.
fn freeze(leaf: &Path) {
    let state = leaf.join("freezer.state");
    if write(&state, "FROZEN").is_err() {
        return; // not the freezer's
    }
    for _ in 0..100 {
        if read(&state).map_or(true, |s| s.trim() == "FROZEN") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
// ANCHOR_END: dead

// ANCHOR: procs_files
/// The `cgroup.procs` files of the cgroups that process `pid` is in, in
/// every hierarchy: writing a PID into them puts that process beside it.
pub fn procs_files_of(pid: i32) -> Result<Vec<PathBuf>> {
    let read = |path: String| {
        fs::read_to_string(&path).with_context(|| format!("read {path}"))
    };
    let cgroups = read(format!("/proc/{pid}/cgroup"))?;
    let mountinfo = read("/proc/self/mountinfo".to_string())?;
    procs_files_in(&cgroups, &mountinfo)
}

/// Each line of /proc/PID/cgroup is `ID:CONTROLLERS:PATH`: the process is
/// in cgroup PATH of the hierarchy that has those controllers (or that
/// name, `name=systemd`; none: the v2 hierarchy, `0::PATH`). Its files are
/// under the mount of that hierarchy, found in mountinfo by its super
/// options. All of them, not only `mydocker/ID`: the container's process
/// is also in the hierarchies where mydocker set no limit, where it stayed
/// in the cgroup that `run` was called from.
fn procs_files_in(cgroups: &str, mountinfo: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let wanted: Vec<&str> =
            controllers.split(',').filter(|c| !c.is_empty()).collect();
        match hierarchy_dir(mountinfo, &wanted, path) {
            Some(dir) => files.push(dir.join("cgroup.procs")),
            // mydocker made this one, so it must be there: without it,
            // the command would escape a limit of the container's.
            None if path.starts_with(&format!("/{PARENT}/")) => bail!(
                "cgroup {controllers}:{path}: no such hierarchy in \
                 /proc/self/mountinfo"
            ),
            // Another hierarchy that is not mounted here (a named one
            // of some other program's): it cannot be joined from here.
            None => {}
        }
    }
    Ok(files)
}
// ANCHOR_END: procs_files

// ANCHOR: hierarchy_dir
/// Where cgroup `path` of the hierarchy with controllers `wanted` is seen:
/// a mount of that hierarchy whose root (the 4th field: "/" unless only a
/// part of the tree is mounted there) holds `path`.
fn hierarchy_dir(
    mountinfo: &str,
    wanted: &[&str],
    path: &str,
) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mut mount = mount.split(' ').skip(3);
        let (Some(root), Some(mount_point)) = (mount.next(), mount.next())
        else {
            continue;
        };
        let mut fs = fs.split(' ');
        let (fstype, options) = (fs.next(), fs.nth(1).unwrap_or_default());
        let options: Vec<&str> = options.split(',').collect();
        let same = match fstype {
            Some("cgroup2") => wanted.is_empty(),
            Some("cgroup") => {
                !wanted.is_empty() && wanted.iter().all(|c| options.contains(c))
            }
            _ => false,
        };
        let inside = Path::new(path).strip_prefix(unescape(root)).ok();
        if let (true, Some(inside)) = (same, inside) {
            return Some(PathBuf::from(unescape(mount_point)).join(inside));
        }
    }
    None
}
// ANCHOR_END: hierarchy_dir

// ANCHOR: pids_over
/// A cgroup's pids limit, with its `pids.current` open: so that it can be
/// read later, from wherever the reader is by then.
pub struct PidsLimit {
    pub dir: PathBuf,
    pub max: u64,
    current: fs::File,
}

impl PidsLimit {
    /// The limits of these cgroups, given by their `cgroup.procs` files.
    pub fn of(procs_files: &[PathBuf]) -> Result<Vec<PidsLimit>> {
        let mut limits = Vec::new();
        for dir in procs_files.iter().filter_map(|file| file.parent()) {
            // "max", or no such file (not the pids controller's): no limit.
            let max = read(&dir.join("pids.max")).ok();
            let Some(Ok(max)) = max.map(|max| max.trim().parse()) else {
                continue;
            };
            let path = dir.join("pids.current");
            let current = fs::File::open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            limits.push(PidsLimit {
                dir: dir.to_path_buf(),
                max,
                current,
            });
        }
        Ok(limits)
    }

    /// Whether the cgroup holds more processes than its limit. Moving a
    /// process into a cgroup is never refused for its pids limit, only
    /// fork(2) is: so a process moved in can take a cgroup over it.
    pub fn exceeded(&self) -> Result<bool> {
        let mut buf = [0u8; 32];
        let read = self.current.read_at(&mut buf, 0).map_err(os);
        let len = read.with_context(|| {
            format!("read {}/pids.current", self.dir.display())
        })?;
        let text = String::from_utf8_lossy(&buf[..len]);
        Ok(text.trim().parse::<u64>().is_ok_and(|n| n > self.max))
    }
}
// ANCHOR_END: pids_over

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            eprintln!("mydocker: warning: {err:#}");
        }
    }
}

/// rmdir a container's directory. A cgroup can only be removed once no
/// process is in it: the last ones may need a moment to leave after their
/// parent reaped them, so wait a little for EBUSY to pass.
fn remove_leaf(dir: &Path) -> Result<()> {
    for _ in 0..200 {
        match fs::remove_dir(dir).map_err(os) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => return Err(err).with_context(|| rmdir_context(dir)),
        }
    }
    Err(Errno::EBUSY).with_context(|| {
        format!("{}: processes are still in it", rmdir_context(dir))
    })
}
// ANCHOR_END: remove

fn rmdir_context(dir: &Path) -> String {
    format!("rmdir {}", dir.display())
}

fn apply(step: &Step) -> Result<()> {
    match step {
        Step::Mkdir(dir) => match fs::create_dir(dir).map_err(os) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(err) => {
                Err(err).with_context(|| format!("mkdir {}", dir.display()))
            }
        },
        Step::Write(file, value) => write(file, value),
        Step::WriteIfExists(file, value) if file.exists() => write(file, value),
        Step::WriteIfExists(..) => Ok(()),
        Step::Copy { from, to } => write(to, read(from)?.trim()),
    }
}

/// Write `value` into a control file, in one write(2) as the kernel wants.
/// No O_CREAT: a file missing here is a controller missing, not a file to make.
fn write(file: &Path, value: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(os)
        .with_context(|| format!("write {value:?} to {}", file.display()))
}

fn read(file: &Path) -> Result<String> {
    fs::read_to_string(file)
        .map_err(os)
        .with_context(|| format!("read {}", file.display()))
}

/// The errno of an I/O error: "EBUSY: Device or resource busy" reads better
/// in a message than "Device or resource busy (os error 16)", and matches.
fn os(err: io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(0))
}

fn errno(err: &anyhow::Error) -> Option<Errno> {
    err.root_cause().downcast_ref::<Errno>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mountinfo of this project's CI machine: v1, hybrid, with cpu and
    /// cpuacct in separate hierarchies.
    pub const HYBRID: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/root rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// An older systemd host: pure v1, cpu and cpuacct in one hierarchy.
    const PURE_V1: &str = "\
25 18 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    /// Ubuntu 24.04 (and the QEMU guest): pure v2.
    const PURE_V2: &str = "\
26 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn detects_a_hybrid_host_as_v1() {
        let layout = Layout::from_mountinfo(HYBRID).unwrap();
        let Layout::V1 {
            hierarchies,
            unified,
        } = &layout
        else {
            panic!("expected v1, got {layout:?}");
        };
        assert_eq!(
            unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<String> = hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        // name=systemd has no controller: it is not a hierarchy we can use.
        assert_eq!(names, ["cpu", "cpuacct", "cpuset", "memory", "pids"]);
        assert_eq!(hierarchies[3].mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(layout.name(), "cgroup v1 (hybrid)");
    }

    #[test]
    fn detects_pure_v1_with_joined_controllers() {
        let layout = Layout::from_mountinfo(PURE_V1).unwrap();
        let Layout::V1 {
            hierarchies,
            unified: None,
        } = &layout
        else {
            panic!("expected pure v1, got {layout:?}");
        };
        assert_eq!(hierarchies[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            hierarchies[0].mount,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(layout.name(), "cgroup v1");
    }

    #[test]
    fn detects_v2() {
        assert_eq!(
            Layout::from_mountinfo(PURE_V2).unwrap(),
            Layout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        // systemd's "unified" mode keeps a v1 name=systemd hierarchy, with
        // no controller in it: still v2.
        let text =
            format!("{PURE_V2}40 31 0:37 / /run/systemd rw - cgroup cgroup rw,name=systemd\n");
        assert!(matches!(
            Layout::from_mountinfo(&text),
            Ok(Layout::V2 { .. })
        ));
    }

    #[test]
    fn no_cgroups_is_an_error_and_escapes_are_decoded() {
        let none = "22 1 8:1 / / rw,relatime - ext4 /dev/root rw\n";
        let err = Layout::from_mountinfo(none).unwrap_err();
        assert!(err.to_string().contains("no cgroup filesystem"));
        let text = "35 24 0:30 / /my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Layout::from_mountinfo(text).unwrap(),
            Layout::V2 {
                root: "/my cgroups".into()
            }
        );
    }

    /// Make files in a fake cgroup directory, as the kernel would.
    pub fn fake_files(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, value) in files {
            fs::write(dir.join(name), value).unwrap();
        }
    }

    /// Delete a fake cgroup's files: the kernel would not show them to
    /// rmdir, a real directory does.
    pub fn forget_files(dir: &Path) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::remove_file(path).unwrap();
            }
        }
    }

    pub fn value(file: PathBuf) -> String {
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    #[test]
    fn a_failed_step_names_the_file_and_the_errno() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            steps: vec![Step::Write(dir.path().join("pids.max"), "20".into())],
            leaves: vec![dir.path().join("leaf")],
            parents: vec![],
        };
        let message = format!("{:#}", Cgroup::create(plan).err().unwrap());
        let expected = format!(
            "write \"20\" to {}/pids.max: ENOENT: No such file or directory",
            dir.path().display()
        );
        assert_eq!(message, expected);
    }

    #[test]
    fn finds_a_process_cgroups_in_every_hierarchy() {
        let cgroups = "\
9:name=systemd:/user.slice
4:memory:/mydocker/c1
2:cpuacct:/
1:cpu:/mydocker/c1
0::/user.slice/session-3.scope
";
        let files: Vec<String> = procs_files_in(cgroups, HYBRID)
            .unwrap()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/systemd/user.slice/cgroup.procs",
                "/sys/fs/cgroup/memory/mydocker/c1/cgroup.procs",
                "/sys/fs/cgroup/cpuacct/cgroup.procs",
                "/sys/fs/cgroup/cpu/mydocker/c1/cgroup.procs",
                "/sys/fs/cgroup/unified/user.slice/session-3.scope/cgroup.procs",
            ]
        );
    }

    #[test]
    fn finds_a_cgroup_under_a_mount_of_part_of_the_tree() {
        let mountinfo = "\
35 24 0:30 /mydocker /mnt/cg rw - cgroup2 cgroup2 rw
36 24 0:31 / /mnt/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        let cgroups = "1:cpu,cpuacct:/a\n2:rdma:/a\n0::/mydocker/c1\n";
        assert_eq!(
            procs_files_in(cgroups, mountinfo).unwrap(),
            [
                PathBuf::from("/mnt/cpu,cpuacct/a/cgroup.procs"),
                PathBuf::from("/mnt/cg/c1/cgroup.procs"),
            ]
        );
    }

    #[test]
    fn a_missing_hierarchy_of_mydockers_own_is_an_error() {
        let cgroups = "4:memory:/mydocker/c1\n";
        let mountinfo = "36 24 0:31 / /mnt/cpu rw - cgroup cgroup rw,cpu\n";
        let err = procs_files_in(cgroups, mountinfo).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup memory:/mydocker/c1: no such hierarchy in \
             /proc/self/mountinfo"
        );
    }

    #[test]
    fn a_pids_limit_is_exceeded_only_above_its_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, max, current) in [
            ("none", "max", "9"),
            ("under", "5", "5"),
            ("over", "2", "3"),
        ] {
            let cgroup = dir.path().join(name);
            fs::create_dir(&cgroup).unwrap();
            fs::write(cgroup.join("pids.max"), format!("{max}\n")).unwrap();
            fs::write(cgroup.join("pids.current"), current).unwrap();
            files.push(cgroup.join("cgroup.procs"));
        }
        let limits = PidsLimit::of(&files).unwrap();
        let seen: Vec<(PathBuf, u64, bool)> = limits
            .iter()
            .map(|l| (l.dir.clone(), l.max, l.exceeded().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                (dir.path().join("under"), 5, false),
                (dir.path().join("over"), 2, true)
            ]
        );
    }
}
