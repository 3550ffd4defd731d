//! Support for the black-box stage tests.
//!
//! The tests run a `mydocker` binary and look only at what a user can see:
//! output, exit codes, files, `/proc`. By default that binary is the
//! workspace's own build; `MYDOCKER_BIN=/path/to/mydocker` points the tests at
//! any other, such as the one you wrote yourself, and `MYDOCKER_STAGE=N` says
//! which stage it implements (`cargo xtask test --stage N --bin PATH` sets
//! both).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// How long one mydocker command may take before the test calls it hung.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The stage of the complete program in mydocker/.
pub const LAST_STAGE: u32 = 3;

/// Stage 3 made `run` take an image before the command.
const FIRST_STAGE_WITH_IMAGES: u32 = 3;

/// The image the tests run their commands in, once images exist.
pub const IMAGE: &str = "busybox";

/// One test's handle on the binary under test, with a state directory of its
/// own. Dropping it checks that nothing of it is left mounted.
pub struct Mydocker {
    bin: PathBuf,
    stage: u32,
    root: tempfile::TempDir,
}

/// How a finished command ended, and what it printed.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Mydocker {
    pub fn new() -> Mydocker {
        require_root();
        let bin = match std::env::var_os("MYDOCKER_BIN") {
            Some(path) => PathBuf::from(path),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mydocker"),
        };
        assert!(
            bin.is_file(),
            "no mydocker binary at {} (build it, or set MYDOCKER_BIN)",
            bin.display()
        );
        let stage = match std::env::var("MYDOCKER_STAGE") {
            Ok(stage) => stage
                .parse()
                .expect("MYDOCKER_STAGE must be a stage number"),
            Err(_) => LAST_STAGE,
        };
        let root = tempfile::Builder::new()
            .prefix("mydocker-test-")
            .tempdir()
            .expect("create a temporary state directory");
        Mydocker { bin, stage, root }
    }

    /// The binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The stage the binary under test implements.
    pub fn stage(&self) -> u32 {
        self.stage
    }

    /// This test's state directory (`MYDOCKER_ROOT`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The image store: `$MYDOCKER_ROOT/images/NAME.tar` (stage 3 on).
    pub fn images(&self) -> PathBuf {
        self.root.path().join("images")
    }

    /// Put a tarball into the image store as image `name`.
    pub fn add_image(&self, name: &str, tarball: &[u8]) {
        std::fs::create_dir_all(self.images()).expect("create the image store");
        std::fs::write(self.images().join(format!("{name}.tar")), tarball).expect("write an image");
    }

    /// The containers' directories (`$MYDOCKER_ROOT/containers`) still there.
    pub fn containers_left(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path().join("containers"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `mydocker ARGS...` with this test's state directory, ready to run.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args.iter().map(AsRef::as_ref));
        command.env("MYDOCKER_ROOT", self.root.path());
        command.stdin(Stdio::null());
        command
    }

    /// The arguments of `mydocker run OPTIONS [IMAGE] COMMAND...`: the image
    /// only from the stage that introduced images on.
    pub fn run_args(&self, options: &[&str], command: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(options.iter().map(|s| s.to_string()));
        if self.stage >= FIRST_STAGE_WITH_IMAGES {
            args.push(IMAGE.to_string());
        }
        args.extend(command.iter().map(|s| s.to_string()));
        args
    }

    /// Run `mydocker ARGS...` to the end.
    pub fn exec<S: AsRef<str>>(&self, args: &[S]) -> Outcome {
        finish(self.command(args))
    }

    /// Run a container to the end: `mydocker run OPTIONS [IMAGE] COMMAND...`.
    pub fn run(&self, options: &[&str], command: &[&str]) -> Outcome {
        self.exec(&self.run_args(options, command))
    }

    /// Run a shell script in a container.
    pub fn sh(&self, options: &[&str], script: &str) -> Outcome {
        self.run(options, &["sh", "-c", script])
    }

    /// Start `sh -c SCRIPT` in a container with `-i` and return once it
    /// runs, knowing its cgroups. The script may `read x` to wait until the
    /// test calls [`Running::finish`], which closes its standard input.
    pub fn start(&self, options: &[&str], script: &str) -> Running {
        let mut options = options.to_vec();
        options.insert(0, "-i");
        let script = format!("cat /proc/self/cgroup; echo ready; {script}");
        let mut child = self
            .command(&self.run_args(&options, &["sh", "-c", &script]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mydocker");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut cgroups = String::new();
        loop {
            let mut line = String::new();
            let read = stdout
                .read_line(&mut line)
                .expect("read the container's output");
            if read == 0 {
                let out = wait_with_timeout(child, TIMEOUT);
                panic!("the container ended before it was ready: {cgroups}{out:#?}");
            }
            if line == "ready\n" {
                break;
            }
            cgroups.push_str(&line);
        }
        Running {
            child,
            stdin,
            stdout,
            cgroups,
        }
    }

    /// Start a container and return at once, with its output piped.
    pub fn spawn(&self, options: &[&str], command: &[&str]) -> Child {
        self.command(&self.run_args(options, command))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mydocker")
    }
}

impl Default for Mydocker {
    fn default() -> Self {
        Mydocker::new()
    }
}

impl Drop for Mydocker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // the test failed already; do not hide why
        }
        let root = self.root.path().to_string_lossy().into_owned();
        let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&root))
            .map(String::from)
            .collect();
        assert!(
            left.is_empty(),
            "mounts left on the host:\n{}",
            left.join("\n")
        );
        // Every container has ended: none of their files may remain, and no
        // half-written image either.
        let containers = self.containers_left();
        assert!(
            containers.is_empty(),
            "container directories left: {containers:?}"
        );
        let partial: Vec<String> = std::fs::read_dir(self.images())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(partial.is_empty(), "half-written images left: {partial:?}");
    }
}

impl Outcome {
    /// Assert that the command exited 0, and return its standard output.
    pub fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success, got {self:#?}");
        &self.stdout
    }

    /// Assert a failure: a non-zero exit code, one clear message on stderr.
    pub fn failure(&self) -> &str {
        assert!(
            matches!(self.code, Some(code) if code != 0),
            "expected a failure, got {self:#?}"
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "a failure must say why: {self:#?}"
        );
        &self.stderr
    }
}

/// Wait for a command with a time limit; kill it (by its PID) when hung.
pub fn finish(mut command: Command) -> Outcome {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    wait_with_timeout(child, TIMEOUT)
}

/// Collect a started child's output and status, killing it after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Outcome {
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mydocker") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mydocker did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let outcome = Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    // Whatever else a test checks: mydocker never panics at its users.
    assert!(
        !outcome.stderr.contains("panicked at") && !outcome.stderr.contains("RUST_BACKTRACE"),
        "mydocker panicked: {outcome:#?}"
    );
    outcome
}

/// The stage tests create namespaces, mounts and cgroups: they need root. A
/// test without it fails, loudly; it is never skipped.
pub fn require_root() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the stage tests need root: run them with `cargo xtask test` or `sudo -E cargo test`"
    );
}

/// The host's mount table as this process sees it.
pub fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo")
}

/// The host PIDs of the children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Poll `condition` for up to `timeout`; true as soon as it holds.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// A container started by [`Mydocker::start`], still running.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// What the container read in /proc/self/cgroup.
    pub cgroups: String,
}

impl Running {
    /// The PID of mydocker itself.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The host's directory of the container's cgroup for `controller`.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        cgroup_dir(&self.cgroups, controller)
    }

    /// Close the container's standard input and wait for it to end.
    pub fn finish(mut self) -> Outcome {
        drop(self.stdin.take());
        let early = String::from_utf8_lossy(self.stdout.buffer()).into_owned();
        self.child.stdout = Some(self.stdout.into_inner());
        let mut out = wait_with_timeout(self.child, TIMEOUT);
        out.stdout.insert_str(0, &early);
        out
    }
}

/// How the host's cgroups are laid out, found the way mydocker must find
/// it: from the mount table. A hybrid host counts as v1.
#[derive(Debug)]
pub enum CgroupLayout {
    /// Each hierarchy's controllers and mount point.
    V1(Vec<(Vec<String>, PathBuf)>),
    /// Where the unified hierarchy is mounted.
    V2(PathBuf),
}

pub fn cgroup_layout() -> CgroupLayout {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in host_mounts().lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = PathBuf::from(left.split(' ').nth(4).unwrap_or_default());
        let fields: Vec<&str> = right.split(' ').collect();
        match fields.first() {
            Some(&"cgroup2") if v2.is_none() => v2 = Some(mount),
            Some(&"cgroup") => {
                let controllers: Vec<String> = fields
                    .get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|o| {
                        !o.contains('=')
                            && !["rw", "ro", "xattr", "noprefix", "clone_children"].contains(o)
                    })
                    .map(String::from)
                    .collect();
                if !controllers.is_empty() {
                    v1.push((controllers, mount));
                }
            }
            _ => {}
        }
    }
    match v2 {
        Some(root) if v1.is_empty() => CgroupLayout::V2(root),
        _ => CgroupLayout::V1(v1),
    }
}

/// The host directory of a process's cgroup for `controller`, from the
/// text of that process's /proc/PID/cgroup (`ID:CONTROLLERS:PATH` lines;
/// v2 has one line, `0::PATH`).
pub fn cgroup_dir(proc_cgroup: &str, controller: &str) -> PathBuf {
    let path_for = |wanted: &dyn Fn(&str) -> bool| {
        proc_cgroup
            .lines()
            .filter_map(|line| line.split_once(':')?.1.split_once(':'))
            .find(|(controllers, _)| wanted(controllers))
            .map(|(_, path)| path.trim_start_matches('/').to_string())
            .unwrap_or_else(|| panic!("no {controller} cgroup in:\n{proc_cgroup}"))
    };
    match cgroup_layout() {
        CgroupLayout::V2(root) => root.join(path_for(&|c| c.is_empty())),
        CgroupLayout::V1(hierarchies) => {
            let (_, mount) = hierarchies
                .iter()
                .find(|(cs, _)| cs.iter().any(|c| c == controller))
                .unwrap_or_else(|| panic!("no {controller} hierarchy on this host"));
            mount.join(path_for(&|cs| cs.split(',').any(|c| c == controller)))
        }
    }
}

/// The mount point of every hierarchy, where mydocker makes its
/// `mydocker` parent.
pub fn cgroup_roots() -> Vec<PathBuf> {
    match cgroup_layout() {
        CgroupLayout::V1(hierarchies) => hierarchies.into_iter().map(|(_, m)| m).collect(),
        CgroupLayout::V2(root) => vec![root],
    }
}

/// Every container cgroup on the host now: the directories below each
/// hierarchy's `mydocker` parent.
pub fn container_cgroups() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for root in cgroup_roots() {
        if let Ok(entries) = std::fs::read_dir(root.join("mydocker")) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    found.insert(entry.path());
                }
            }
        }
    }
    found
}

/// Assert that no container cgroup appeared since `before` was taken and
/// stayed. Someone else may run containers on this machine: a cgroup with
/// processes in it is theirs, and one that is there only for a moment
/// (between mkdir and its process joining, or exit and rmdir) too.
pub fn assert_no_cgroup_left(before: &BTreeSet<PathBuf>, what: &str) {
    let left = || -> Vec<PathBuf> {
        container_cgroups()
            .into_iter()
            .filter(|dir| !before.contains(dir))
            .filter(|dir| {
                std::fs::read_to_string(dir.join("cgroup.procs"))
                    .map(|procs| procs.trim().is_empty())
                    .unwrap_or(false)
            })
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(3), || left().is_empty()),
        "{what} left cgroups behind: {:?}",
        left()
    );
}

/// Tests that start containers hold this shared; a test that checks that
/// no cgroup was left behind holds it alone, so no other test's container
/// comes or goes while it looks.
static CGROUPS: RwLock<()> = RwLock::new(());

pub fn cgroups_shared() -> RwLockReadGuard<'static, ()> {
    CGROUPS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn cgroups_exclusive() -> RwLockWriteGuard<'static, ()> {
    CGROUPS.write().unwrap_or_else(|e| e.into_inner())
}

/// The numbers of the CPUs that are online, from a list like `0-3,6`.
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("read online CPUs");
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap());
    }
    cpus
}
