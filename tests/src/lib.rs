//! Support for the black-box stage tests.
//!
//! The tests run a `mydocker` binary and look only at what a user can see:
//! output, exit codes, files, `/proc`. By default that binary is the
//! workspace's own build; `MYDOCKER_BIN=/path/to/mydocker` points the tests at
//! any other, such as the one you wrote yourself, and `MYDOCKER_STAGE=N` says
//! which stage it implements (`cargo xtask test --stage N --bin PATH` sets
//! both).
//!
//! A wrong binary must fail clearly and quickly, never hang: every wait
//! here has a time limit, and running out of time is a failure that says
//! what the test was waiting for. Whatever a test started is killed, by
//! PID, when the test ends without having waited for it.

pub mod catalog;
pub mod json;
pub mod netns;
pub mod old_kernel;
pub mod slowed;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// How long one mydocker command may take before the test calls it hung.
/// A correct binary takes well under a second for any command of these
/// tests; the rest is room for a loaded machine.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for a line it expects from a container, such as
/// `ready`.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most one test may spend waiting in all: a binary that hangs on
/// every command of a test fails it in two minutes, not in an hour.
pub const TEST_BUDGET: Duration = Duration::from_secs(120);

/// The stage of the complete program in mydocker/.
pub const LAST_STAGE: u32 = 9;

/// Stage 3 made `run` take an image before the command.
pub const FIRST_STAGE_WITH_IMAGES: u32 = 3;

/// Stage 7 made containers outlive their `run` (until `rm`) unless `run`
/// is given `--rm`: from there on, the earlier stages' tests run their
/// containers with `--rm` (see [`Mydocker::new`]).
pub const FIRST_STAGE_WITH_RECORDS: u32 = 7;

/// Stage 9 put every container on a network: without `--net`, `run`
/// makes a bridge and NAT rules. From there on, every `run` of the earlier
/// stages' tests gets `--net none` (see [`Mydocker::new`]), so that no test
/// ever makes a bridge or a rule in the machine's own network namespace;
/// the stage 9 tests run theirs in namespaces of their own
/// ([`Mydocker::in_netns`]).
pub const FIRST_STAGE_WITH_NETWORKS: u32 = 9;

/// The files that every container has of its own from stage 9 on,
/// bind-mounted over the image's (or over mount points made in its
/// layer): an earlier stage's test that lists a container's mounts or its
/// /etc finds them there, whatever `--net` (see [`Mydocker::etc_files`]).
pub const ETC_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// The image the tests run their commands in, once images exist.
pub const IMAGE: &str = "busybox";

/// One test's handle on the binary under test, with a state directory of its
/// own. Dropping it checks that nothing of it is left mounted.
pub struct Mydocker {
    bin: PathBuf,
    stage: u32,
    root: tempfile::TempDir,
    deadline: Instant,
    /// Whether every `run` gets `--rm` (see [`Mydocker::new`]).
    add_rm: bool,
    /// Whether every `run` gets `--net none`, whatever else the handle
    /// does (see [`Mydocker::new`]).
    add_net_none: bool,
    /// The network namespace every command runs in, when not the test's
    /// own ([`Mydocker::in_netns`]): its name and an open descriptor.
    netns: Option<(String, Arc<File>)>,
    /// The directory of the script that does all of the above, for
    /// commands the harness does not build itself ([`Mydocker::bin`]);
    /// None when the handle adds nothing.
    wrapper: Option<tempfile::TempDir>,
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
    /// A handle for the tests of one stage, which run against that
    /// stage's binary and every later one's. Where a later stage changes
    /// how the command line must be written, the handle adapts the call,
    /// never the assertion:
    /// - from stage 7 on, a container stays until `rm`, so every `run`
    ///   this handle starts gets `--rm` right after `run` (as the earlier
    ///   stages' containers went when their `run` ended);
    /// - from stage 9 on, `run` puts a container on a network (a bridge,
    ///   NAT rules) unless told `--net none`, so every `run` gets `--net
    ///   none` too: the earlier stages' containers had only `lo`, and no
    ///   test may touch the machine's own network.
    ///
    /// That covers [`Mydocker::command`] and all that uses it, and
    /// [`Mydocker::bin`], which is then a script that adds the options
    /// before it starts the binary under test, for tests that start it
    /// themselves. The stage 7 and 8 tests, which decide about `--rm`
    /// themselves, use [`Mydocker::as_given`].
    pub fn new() -> Mydocker {
        let mut md = Mydocker::as_given();
        md.add_rm = md.stage >= FIRST_STAGE_WITH_RECORDS;
        md.make_wrapper();
        md
    }

    /// A handle that adds no `--rm` (see [`Mydocker::new`]): its commands
    /// run as the test wrote them but for `--net none`, which every `run`
    /// still gets from stage 9 on, whatever way it is started.
    pub fn as_given() -> Mydocker {
        let mut md = Mydocker::exactly();
        md.add_net_none = md.stage >= FIRST_STAGE_WITH_NETWORKS;
        md.make_wrapper();
        md
    }

    /// A handle for the stage 9 tests: every command runs in the network
    /// namespace `netns` (which the test made: see [`netns::NetNs`]),
    /// exactly as the test wrote it. Without `--net`, a container joins
    /// the default network, made in that namespace.
    pub fn in_netns(netns: &netns::NetNs) -> Mydocker {
        let mut md = Mydocker::exactly();
        md.netns = Some((netns.name().to_string(), netns.file()));
        md.make_wrapper();
        md
    }

    /// The handle with nothing added, in the test's own namespaces.
    fn exactly() -> Mydocker {
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
        Mydocker {
            bin,
            stage,
            root,
            deadline: Instant::now() + TEST_BUDGET,
            add_rm: false,
            add_net_none: false,
            netns: None,
            wrapper: None,
        }
    }

    /// The options this handle adds right after `run`: with `all`, every
    /// one (as [`Mydocker::command`] does), else only those that no test
    /// may do without (as [`Mydocker::command_as_given`] does).
    fn added(&self, all: bool) -> Vec<&'static str> {
        let mut added = Vec::new();
        if all && self.add_rm {
            added.push("--rm");
        }
        if self.add_net_none {
            added.extend(["--net", "none"]);
        }
        added
    }

    /// Write the script behind [`Mydocker::bin`], when the handle adds
    /// something to the commands the test starts itself.
    fn make_wrapper(&mut self) {
        let added = self.added(true);
        let netns = self.netns.as_ref().map(|(name, _)| netns::path_of(name));
        self.wrapper = match (added.is_empty(), &netns) {
            (true, None) => None,
            _ => Some(wrapper(&self.bin, &added, netns.as_deref())),
        };
    }

    /// `args` as this handle runs them with [`Mydocker::command`]: the
    /// options it adds right after `run` (nothing for other commands).
    /// For tests that start the binary themselves and cannot use
    /// [`Mydocker::bin`].
    pub fn adapted<S: AsRef<str>>(&self, args: &[S]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        with_run_options(&args, &self.added(true))
    }

    /// The binary under test, to start it without [`Mydocker::command`]:
    /// on a handle that adds options to `run` ([`Mydocker::new`] from
    /// stage 7 on, [`Mydocker::as_given`] from stage 9 on) or runs in a
    /// network namespace ([`Mydocker::in_netns`]), a script that does so
    /// and then execs the binary under test (the same PID, arguments,
    /// environment and descriptors).
    pub fn bin(&self) -> PathBuf {
        match &self.wrapper {
            Some(dir) => dir.path().join("mydocker"),
            None => self.bin.clone(),
        }
    }

    /// The binary under test itself, whatever the handle adds. A `run`
    /// started with it must get [`Mydocker::adapted`] arguments.
    pub fn real_bin(&self) -> &Path {
        &self.bin
    }

    /// The stage the binary under test implements.
    pub fn stage(&self) -> u32 {
        self.stage
    }

    /// The files of its own that every container of this stage has in
    /// /etc, bind-mounted: [`ETC_FILES`] from stage 9 on, none before.
    pub fn etc_files(&self) -> &'static [&'static str] {
        if self.stage >= FIRST_STAGE_WITH_NETWORKS {
            &ETC_FILES
        } else {
            &[]
        }
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
        let mut left: Vec<String> = std::fs::read_dir(self.root.path().join("containers"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        left
    }

    /// How long the next wait may last: [`TIMEOUT`], or less when the
    /// test's budget is nearly spent.
    pub fn timeout(&self) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "this test has spent its {} s of waiting: the binary under test is too slow or hangs",
            TEST_BUDGET.as_secs()
        );
        left.min(TIMEOUT)
    }

    /// `mydocker ARGS...` with this test's state directory, ready to run;
    /// `run` gets what the handle adds (see [`Mydocker::new`]).
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        self.command_with(&self.adapted(args))
    }

    /// `mydocker ARGS...` as given: no `--rm` added, but `--net none`
    /// still when the handle adds it (see [`Mydocker::as_given`]).
    pub fn command_as_given<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        self.command_with(&with_run_options(&args, &self.added(false)))
    }

    /// `mydocker ARGS...`, with the state directory and the network
    /// namespace of this handle.
    fn command_with(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args);
        command.env("MYDOCKER_ROOT", self.root.path());
        command.stdin(Stdio::null());
        self.enter_netns(&mut command);
        command
    }

    /// Make `command` start in this handle's network namespace, if it
    /// has one (setns(2) between fork and exec).
    pub fn enter_netns(&self, command: &mut Command) {
        if let Some((_, file)) = &self.netns {
            netns::enter(command, file.clone());
        }
    }

    /// Run `mydocker ARGS...`, as given ([`Mydocker::command_as_given`]), to the end.
    pub fn exec_as_given<S: AsRef<str>>(&self, args: &[S]) -> Outcome {
        self.finish(self.command_as_given(args))
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
        self.finish(self.command(args))
    }

    /// Run a prepared command to the end, within this test's time limits.
    pub fn finish(&self, command: Command) -> Outcome {
        Spawned::new(command, false).wait_within(self.timeout())
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
        let command = self.command(&self.run_args(&options, &["sh", "-c", &script]));
        let mut process = Spawned::new(command, true);
        process.deadline = self.deadline;
        let cgroups = process.read_until("ready");
        Running { process, cgroups }
    }

    /// [`Mydocker::start`] in image `image` instead of busybox: `run -i
    /// OPTIONS IMAGE sh -c SCRIPT`. The image needs `sh` and `cat` on its
    /// PATH (an [`ImageTar::busybox`] image has them).
    pub fn start_in(&self, image: &str, options: &[&str], script: &str) -> Running {
        let script = format!("cat /proc/self/cgroup; echo ready; {script}");
        let mut args = vec!["run", "-i"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[image, "sh", "-c", &script]);
        let mut process = Spawned::new(self.command(&args), true);
        process.deadline = self.deadline;
        let cgroups = process.read_until("ready");
        Running { process, cgroups }
    }

    /// Every regular file under the state root, outside the image store,
    /// whose content is `content`: the copies of an image's file that
    /// mydocker keeps, wherever its layout puts them.
    pub fn copies_of(&self, content: &[u8]) -> Vec<PathBuf> {
        let mut found = Vec::new();
        self.walk_outside_images(&mut |path, meta| {
            if meta.is_file()
                && meta.len() == content.len() as u64
                && std::fs::read(path).is_ok_and(|bytes| bytes == content)
            {
                found.push(path.to_path_buf());
            }
        });
        found.sort();
        found
    }

    /// Every path under the state root, outside the image store, whose
    /// file name is `name`.
    pub fn paths_named(&self, name: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        self.walk_outside_images(&mut |path, _| {
            if path.file_name().is_some_and(|n| n == name) {
                found.push(path.to_path_buf());
            }
        });
        found.sort();
        found
    }

    /// Call `visit` for everything below the state root except `images/`
    /// and what is below it; symlinks are not followed.
    pub fn walk_outside_images(&self, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
        let images = self.images();
        let mut dirs = vec![self.root().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // removed meanwhile, by a run that cleans up
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path == images {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                visit(&path, &meta);
                if meta.is_dir() {
                    dirs.push(path);
                }
            }
        }
    }

    /// The lines of the host's mount table that mention this test's state
    /// root: mounts that mydocker left on the host.
    pub fn mounts_left(&self) -> Vec<String> {
        let root = self.root.path().to_string_lossy().into_owned();
        host_mounts()
            .lines()
            .filter(|line| line.contains(&root))
            .map(String::from)
            .collect()
    }

    /// Run `sh -c SCRIPT sh ARGS...` in a mount namespace of its own
    /// (`unshare --mount --propagation private`), with `$MYDOCKER` the
    /// binary under test ([`Mydocker::bin`]: `run` gets what the handle
    /// adds) and `MYDOCKER_ROOT` this test's state root. The
    /// mounts the script makes (a tmpfs to use as a volume, say) live and
    /// die with that namespace: the host never sees them, and nothing is
    /// left to unmount.
    pub fn in_mount_namespace<S: AsRef<std::ffi::OsStr>>(
        &self,
        script: &str,
        args: &[S],
    ) -> Outcome {
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .args(args)
            .env("MYDOCKER", self.bin())
            .env("MYDOCKER_ROOT", self.root.path())
            .stdin(Stdio::null());
        self.enter_netns(&mut command);
        self.finish(command)
    }

    /// Start a container and return at once, with its output piped and
    /// its standard input from /dev/null.
    pub fn spawn(&self, options: &[&str], command: &[&str]) -> Spawned {
        self.spawn_command(self.command(&self.run_args(options, command)))
    }

    /// Start a prepared command and return at once, with its output piped.
    pub fn spawn_command(&self, command: Command) -> Spawned {
        let mut process = Spawned::new(command, false);
        process.deadline = self.deadline;
        process
    }

    /// [`Mydocker::spawn_command`] with its standard input piped too, for
    /// [`Spawned::send_line`] and [`Spawned::close_stdin`].
    pub fn spawn_with_stdin(&self, command: Command) -> Spawned {
        let mut process = Spawned::new(command, true);
        process.deadline = self.deadline;
        process
    }

    /// After a test killed mydocker with SIGKILL on purpose: remove what
    /// the killed run could not, so that the checks at the end of the test
    /// look only at what the test is about. `cgroups` are the directories
    /// of the killed container's cgroups.
    pub fn forget_killed_run(&self, cgroups: &[PathBuf]) {
        if let Ok(entries) = std::fs::read_dir(self.root().join("containers")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        remove_cgroups(cgroups);
    }
}

/// The global options that take a value in the next argument: what comes
/// before the subcommand.
const OPTIONS_WITH_A_VALUE: &[&str] = &["--root"];

/// `args` with `--rm` right after the subcommand when that is `run`
/// (global options such as `--root DIR` may come before it); any other
/// command line as it is.
pub fn with_rm(args: &[String]) -> Vec<String> {
    with_run_options(args, &["--rm"])
}

/// `args` with `added` right after the subcommand when that is `run`
/// (global options such as `--root DIR` may come before it); any other
/// command line as it is.
pub fn with_run_options(args: &[String], added: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + added.len());
    let mut value_next = false;
    let mut done = false;
    for arg in args {
        out.push(arg.clone());
        if done {
            continue;
        }
        if value_next {
            value_next = false;
        } else if OPTIONS_WITH_A_VALUE.contains(&arg.as_str()) {
            value_next = true;
        } else if !arg.starts_with('-') {
            done = true;
            if arg == "run" {
                out.extend(added.iter().map(|a| a.to_string()));
            }
        }
    }
    out
}

/// The text of a script that does what [`with_rm`] does to its arguments,
/// then execs `bin` with them.
pub fn rm_wrapper_script(bin: &Path) -> String {
    wrapper_script(bin, &["--rm"], None)
}

/// The text of a script that does what [`with_run_options`] does to its
/// arguments with `added`, then execs `bin` with them, in the network
/// namespace bound at `netns` when given (by `nsenter --net`, which execs
/// too: the binary under test gets the script's PID).
pub fn wrapper_script(bin: &Path, added: &[&str], netns: Option<&Path>) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
    let added: Vec<String> = added.iter().map(|a| quote(a)).collect();
    let bin = quote(&bin.to_string_lossy());
    let exec = match netns {
        Some(path) => format!(
            "exec nsenter --net={} {bin} \"$@\"",
            quote(&path.to_string_lossy())
        ),
        None => format!("exec {bin} \"$@\""),
    };
    format!(
        r#"#!/bin/sh
# The stage tests' harness: from stage 7 on, the earlier stages' `run`
# gets --rm (their containers went when `run` ended), from stage 9 on
# --net none too (their containers had only lo), and the stage 9 tests'
# commands run in a network namespace of the test's; nothing else
# changes: the binary under test replaces this script (same PID).
state=options
for arg do
    shift
    case $state in
    value) state=options ;;
    options)
        case $arg in
        {options}) state=value ;;
        -*) ;;
        run) set -- "$@" run{added}; state=done; continue ;;
        *) state=done ;;
        esac ;;
    esac
    set -- "$@" "$arg"
done
{exec}
"#,
        options = OPTIONS_WITH_A_VALUE.join("|"),
        added = added.iter().map(|a| format!(" {a}")).collect::<String>(),
    )
}

/// A directory of its own (open to every user, as the binary's may be)
/// holding `mydocker`, the [`wrapper_script`] of `bin`.
fn wrapper(bin: &Path, added: &[&str], netns: Option<&Path>) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("mydocker-harness-")
        .tempdir()
        .expect("create a directory for the harness's script");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the harness script's directory");
    let script = dir.path().join("mydocker");
    std::fs::write(&script, wrapper_script(bin, added, netns)).expect("write the harness's script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the harness's script");
    dir
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

    /// Assert a failure with exactly one line on stderr.
    pub fn one_line_failure(&self) -> &str {
        let stderr = self.failure();
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "a failure says why in one line: {self:#?}"
        );
        stderr
    }
}

/// Start `command`. A script the harness has just written (its wrapper)
/// may fail to start with ETXTBSY ("Text file busy") for a moment: a
/// process forked by another test's thread while the script was open for
/// writing holds that descriptor until it execs. Try again then, for up to
/// a second.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let start = Instant::now();
    loop {
        match command.spawn() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && start.elapsed() < Duration::from_secs(1) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// Wait for a command with [`TIMEOUT`]; kill it (by its PID) when hung.
pub fn finish(command: Command) -> Outcome {
    Spawned::new(command, false).wait_within(TIMEOUT)
}

/// Collect a started child's output and status, killing it (and whatever
/// it started) after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Outcome {
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let what = format!("process {}", child.id());
    let status = wait_or_kill(&mut child, timeout, &what);
    let outcome = Outcome {
        code: status.code(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    no_panic(&outcome);
    outcome
}

/// Whatever else a test checks: mydocker never panics at its users.
fn no_panic(outcome: &Outcome) {
    assert!(
        !outcome.stderr.contains("panicked at") && !outcome.stderr.contains("RUST_BACKTRACE"),
        "mydocker panicked: {outcome:#?}"
    );
}

/// Read a pipe to its end on a thread; the text arrives on the channel.
fn read_all(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// What a reader thread collected. Once the process has ended its pipes
/// close, unless something it started still holds them: give that a
/// moment, then take what there is.
fn collect(text: Option<Receiver<String>>) -> String {
    text.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
        .unwrap_or_default()
}

/// Wait for `child` to end, for at most `timeout`; when it does not, kill
/// it and everything it started, and fail the test saying what hung.
fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for mydocker") {
            return status;
        }
        if start.elapsed() > timeout {
            kill_tree(child.id());
            let _ = child.wait();
            panic!(
                "{what} did not finish within {} s: killed it and every process it started",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process that a test started, with its output read by threads so that
/// every read has a time limit. When the test ends without waiting for it
/// (a failed assertion, say), the process and everything it started are
/// killed by PID.
pub struct Spawned {
    child: Option<Child>,
    pid: u32,
    what: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line of standard output read so far.
    seen: String,
    stderr: Option<Receiver<String>>,
    deadline: Instant,
}

impl Spawned {
    /// Start `command` with its output piped, and its standard input piped
    /// too when `stdin` is true.
    pub fn new(mut command: Command, stdin: bool) -> Spawned {
        let what = describe(&command);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin {
            command.stdin(Stdio::piped());
        }
        let mut child = spawn(&mut command).unwrap_or_else(|e| panic!("start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = child.stderr.take().map(read_all);
        Spawned {
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            what,
            lines,
            seen: String::new(),
            stderr,
            deadline: Instant::now() + TEST_BUDGET,
        }
    }

    /// The PID of the process (mydocker itself).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("wait for mydocker").is_none(),
            None => false,
        }
    }

    /// The next line of standard output (without its newline), waiting at
    /// most `timeout`; None at the end of the output. `awaited` says what
    /// the test waits for, for the message when none comes.
    pub fn next_line(&mut self, timeout: Duration, awaited: &str) -> Option<String> {
        let budget = self.deadline.saturating_duration_since(Instant::now());
        let why = if budget < timeout {
            format!(
                " (all this test had left of its {} s)",
                TEST_BUDGET.as_secs()
            )
        } else {
            String::new()
        };
        let timeout = timeout.min(budget);
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push_str(&line);
                Some(line.trim_end_matches('\n').to_string())
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let seen = std::mem::take(&mut self.seen);
                let stderr = self.kill_and_collect();
                panic!(
                    "waited {} s{why} for {awaited}; killed it. The command: {}\nits output so far:\n{seen}\nits errors:\n{stderr}",
                    timeout.as_secs(),
                    self.what
                );
            }
        }
    }

    /// Read lines until one is `want`, and return the lines before it.
    /// The container ending first, or not printing it within
    /// [`LINE_TIMEOUT`], fails the test.
    pub fn read_until(&mut self, want: &str) -> String {
        let mut before = String::new();
        let awaited = format!("the container to print `{want}`");
        loop {
            match self.next_line(LINE_TIMEOUT, &awaited) {
                Some(line) if line == want => return before,
                Some(line) => {
                    before.push_str(&line);
                    before.push('\n');
                }
                None => {
                    let out = self.take().wait_within(TIMEOUT);
                    panic!("the container ended before it printed `{want}`: {out:#?}");
                }
            }
        }
    }

    /// Assert that the next line is `want`.
    pub fn expect_line(&mut self, want: &str) {
        let awaited = format!("the container to print `{want}`");
        match self.next_line(LINE_TIMEOUT, &awaited) {
            Some(line) => {
                if line != want {
                    let seen = self.seen.clone();
                    self.kill_and_collect();
                    panic!("expected the line `{want}`, got `{line}`; output so far:\n{seen}");
                }
            }
            None => {
                let out = self.take().wait_within(TIMEOUT);
                panic!("the container ended before it printed `{want}`: {out:#?}");
            }
        }
    }

    /// Close its standard input (with `-i`, the container reads end-of-file).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Write `line` and a newline to its standard input (piped, as
    /// [`Mydocker::start`] does): a container that reads its input gets it.
    /// A process that no longer reads (it ended) fails the test.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("its standard input is closed")),
        };
        if let Err(e) = written {
            let seen = std::mem::take(&mut self.seen);
            let stderr = self.kill_and_collect();
            panic!(
                "could not send `{line}` to {}: {e}; its output so far:\n{seen}\nits errors:\n{stderr}",
                self.what
            );
        }
    }

    /// Wait for it to end, for at most [`TIMEOUT`].
    pub fn wait(self) -> Outcome {
        self.wait_within(TIMEOUT)
    }

    /// Wait for it to end, for at most `timeout`: kill it and fail the
    /// test when it does not.
    pub fn wait_within(mut self, timeout: Duration) -> Outcome {
        self.close_stdin();
        let timeout = timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        let mut child = self.child.take().expect("a process is waited for once");
        let what = self.what.clone();
        let status = wait_or_kill(&mut child, timeout, &what);
        // The rest of standard output, once the pipe closes.
        let limit = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .lines
            .recv_timeout(limit.saturating_duration_since(Instant::now()))
        {
            self.seen.push_str(&line);
        }
        let outcome = Outcome {
            code: status.code(),
            stdout: std::mem::take(&mut self.seen),
            stderr: collect(self.stderr.take()),
        };
        no_panic(&outcome);
        outcome
    }

    /// Move the live process out of `self`, which is left empty (its drop
    /// then does nothing).
    fn take(&mut self) -> Spawned {
        let (_, lines) = mpsc::channel();
        Spawned {
            child: self.child.take(),
            pid: self.pid,
            what: self.what.clone(),
            stdin: self.stdin.take(),
            lines: std::mem::replace(&mut self.lines, lines),
            seen: std::mem::take(&mut self.seen),
            stderr: self.stderr.take(),
            deadline: self.deadline,
        }
    }

    /// Kill it and all it started; return what it wrote on stderr.
    fn kill_and_collect(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id());
            let _ = child.wait();
        }
        collect(self.stderr.take())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                kill_tree(child.id());
            }
            let _ = child.wait();
        }
    }
}

/// A command as a user would type it, for messages.
fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '$', ';']) {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a.into_owned()
        }
    }));
    words.join(" ")
}

/// Kill a process that a test started and every process below it, by
/// PID: stop it first so that it starts no more, SIGKILL every process
/// below it (the container's PID 1 takes its whole PID namespace along),
/// then let it go on for a moment, so that it reaps its container and
/// cleans up after it as it would after any container's death, and only
/// then SIGKILL it too. The container cgroups of the killed processes go
/// as well.
pub fn kill_tree(pid: u32) {
    let Some(started) = start_time(pid) else {
        return; // gone already (and reaped)
    };
    let started = Some(started);
    // SAFETY: kill(2) touches no memory.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let below = descendants(pid);
    let cgroups: Vec<PathBuf> = below
        .iter()
        .flat_map(|p| container_cgroups_of(*p))
        .collect();
    for p in &below {
        // SAFETY: as above.
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    if !eventually(Duration::from_secs(3), || !alive(pid, started)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for p in &below {
        eventually(Duration::from_secs(5), || !alive(*p, None));
    }
    remove_cgroups(&cgroups);
}

/// Every process below `pid`, parents before their children.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            for child in std::fs::read_to_string(task.join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// The start time of a process (field 22 of /proc/PID/stat), which tells
/// it apart from a later process that got the same PID.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

/// Whether process `pid` still lives (a zombie does not count), and is the
/// same process as the one that started at `started`, when given.
pub fn alive(pid: u32, started: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return false;
    }
    match started {
        Some(t) => fields.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(t),
        None => true,
    }
}

/// The container cgroups (directories below a `mydocker` parent) that
/// process `pid` is in.
pub fn container_cgroups_of(pid: u32) -> Vec<PathBuf> {
    container_cgroups_in(
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
    )
}

/// The clean-up after a failed test, once `rm -f` has had its chance:
/// SIGKILL, by PID, to every process in the cgroups of containers `ids`
/// and to every process whose command line holds `token`; then remove
/// those cgroups, and detach whatever is still mounted under `root`.
pub fn kill_and_unmount(ids: &BTreeSet<String>, token: &str, root: &Path) {
    let mut cgroups = Vec::new();
    for id in ids {
        cgroups.extend(cgroups_of_container(id));
    }
    let mut victims: BTreeSet<u32> = processes_in(&cgroups);
    victims.extend(pids_with(token));
    for pid in &victims {
        // SAFETY: kill(2) touches no memory.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    eventually(Duration::from_secs(5), || {
        victims.iter().all(|p| !alive(*p, None))
    });
    remove_cgroups(&cgroups);
    let root = root.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = host_mounts()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&root))
        .map(String::from)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for point in mounts {
        if let Ok(path) = std::ffi::CString::new(point) {
            // SAFETY: a valid C string; umount2 touches nothing else.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Remove container cgroups left by a process a test killed (they are
/// empty once it is gone; wait a little for the kernel to agree).
pub fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        eventually(Duration::from_secs(2), || {
            !dir.exists() || std::fs::remove_dir(dir).is_ok()
        });
    }
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
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// Send `signal` to process `pid`, asserting that it was delivered.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) touches no memory.
    let sent = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        sent,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A container started by [`Mydocker::start`], still running.
pub struct Running {
    process: Spawned,
    /// What the container read in /proc/self/cgroup.
    pub cgroups: String,
}

impl Running {
    /// The PID of mydocker itself.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// mydocker's process, to read more of the container's output.
    pub fn process(&mut self) -> &mut Spawned {
        &mut self.process
    }

    /// The host's directory of the container's cgroup for `controller`.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        cgroup_dir(&self.cgroups, controller)
    }

    /// The host's directories of every container cgroup the container
    /// named in its /proc/self/cgroup.
    pub fn container_cgroups(&self) -> Vec<PathBuf> {
        container_cgroups_in(&self.cgroups)
    }

    /// Close the container's standard input and wait for it to end.
    pub fn finish(self) -> Outcome {
        let mut out = self.process.wait();
        out.stdout = out
            .stdout
            .split_once("ready\n")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(out.stdout);
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
    try_cgroup_dir(proc_cgroup, controller).unwrap_or_else(|| {
        panic!(
            "no {controller} cgroup (or no {controller} hierarchy on this host) in:\n{proc_cgroup}"
        )
    })
}

/// [`cgroup_dir`], or None when there is no such cgroup.
pub fn try_cgroup_dir(proc_cgroup: &str, controller: &str) -> Option<PathBuf> {
    let path_for = |wanted: &dyn Fn(&str) -> bool| {
        proc_cgroup
            .lines()
            .filter_map(|line| line.split_once(':')?.1.split_once(':'))
            .find(|(controllers, _)| wanted(controllers))
            .map(|(_, path)| path.trim_start_matches('/').to_string())
    };
    match cgroup_layout() {
        CgroupLayout::V2(root) => Some(root.join(path_for(&|c| c.is_empty())?)),
        CgroupLayout::V1(hierarchies) => {
            let (_, mount) = hierarchies
                .iter()
                .find(|(cs, _)| cs.iter().any(|c| c == controller))?;
            Some(mount.join(path_for(&|cs| cs.split(',').any(|c| c == controller))?))
        }
    }
}

/// The container cgroups (directories below a `mydocker` parent) named in
/// the text of a /proc/PID/cgroup.
pub fn container_cgroups_in(proc_cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in proc_cgroup.lines() {
        let Some(controllers) = line.split(':').nth(1) else {
            continue;
        };
        if !line.contains("/mydocker/") {
            continue;
        }
        let controller = controllers
            .split(',')
            .find(|c| !c.is_empty() && !c.contains('='))
            .unwrap_or("");
        if let Some(dir) = try_cgroup_dir(line, controller) {
            if dir.parent().and_then(|p| p.file_name()) == Some("mydocker".as_ref())
                && !dirs.contains(&dir)
            {
                dirs.push(dir);
            }
        }
    }
    dirs
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

/// A random string of 32 hexadecimal digits, for content and names that
/// nothing else on the machine has.
pub fn unique_token() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The applets an [`ImageTar::busybox`] image links to busybox in `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "stat", "rm", "rmdir", "mkdir", "mv", "ln", "touch", "chmod",
    "chown", "test", "find", "sort", "xargs", "md5sum", "wc", "grep", "truncate", "sleep", "true",
];

/// An image tarball written in memory, entry by entry, owned by root and
/// dated 0 unless said otherwise.
pub struct ImageTar {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for ImageTar {
    fn default() -> Self {
        ImageTar::new()
    }
}

impl ImageTar {
    pub fn new() -> ImageTar {
        ImageTar {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    /// The entry `./`: the image's root directory, with its mode and owner.
    pub fn root_dir(mut self, mode: u32, uid: u64, gid: u64) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.tar
            .append_data(&mut header, "./", std::io::empty())
            .expect("append ./");
        self
    }

    /// A directory (`path` without a trailing slash).
    pub fn dir(mut self, path: &str, mode: u32) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0, 0, 0);
        self.tar
            .append_data(&mut header, format!("{path}/"), std::io::empty())
            .expect("append a directory");
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Regular, mode, 0, 0, data.len() as u64);
        self.tar
            .append_data(&mut header, path, data)
            .expect("append a file");
        self
    }

    /// A regular file with its owner.
    pub fn file_owned(
        mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.tar
            .append_data(&mut header, path, data)
            .expect("append a file");
        self
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar
            .append_link(&mut header, path, target)
            .expect("append a symlink");
        self
    }

    /// A hard link at `path` to the file `target` (a path in the archive,
    /// added before).
    pub fn hard_link(mut self, path: &str, target: &str) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.tar
            .append_link(&mut header, path, target)
            .expect("append a hard link");
        self
    }

    /// A FIFO (named pipe).
    pub fn fifo(mut self, path: &str, mode: u32) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Fifo, mode, 0, 0, 0);
        self.tar
            .append_data(&mut header, path, std::io::empty())
            .expect("append a FIFO");
        self
    }

    /// A character device `major`:`minor`.
    pub fn char_device(mut self, path: &str, mode: u32, major: u32, minor: u32) -> ImageTar {
        let mut header = Self::header(tar::EntryType::Char, mode, 0, 0, 0);
        header.set_device_major(major).expect("a device number");
        header.set_device_minor(minor).expect("a device number");
        self.tar
            .append_data(&mut header, path, std::io::empty())
            .expect("append a device");
        self
    }

    /// PAX records (`KEY`, value) for the entry appended next, such as
    /// `SCHILY.xattr.user.x` for an extended attribute `user.x`.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> ImageTar {
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .expect("append PAX records");
        self
    }

    /// More links to busybox in `/bin` (after [`ImageTar::busybox`]), for
    /// applets that [`APPLETS`] lacks.
    pub fn applets(mut self, applets: &[&str]) -> ImageTar {
        for applet in applets {
            self = self.symlink(&format!("bin/{applet}"), "busybox");
        }
        self
    }

    /// `/bin/busybox` (the host's static busybox) and, in `/bin`, a link
    /// to it for each of the [`APPLETS`].
    pub fn busybox(self) -> ImageTar {
        let busybox = std::fs::read("/bin/busybox")
            .expect("the host's static busybox, /bin/busybox (apt-get install busybox-static)");
        let mut image = self.dir("bin", 0o755).file("bin/busybox", 0o755, &busybox);
        for applet in APPLETS {
            image = image.symlink(&format!("bin/{applet}"), "busybox");
        }
        image
    }

    /// The archive's bytes without its end marker, for appending entries
    /// that the tar crate refuses to write (see [`raw_entry`]).
    pub fn into_entries(self) -> Vec<u8> {
        let mut bytes = self.into_bytes();
        bytes.truncate(bytes.len() - 1024);
        bytes
    }

    /// The whole archive, end marker included.
    pub fn into_bytes(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish the archive")
    }
}

/// One tar entry written byte by byte (the tar crate refuses to write
/// hostile paths): a ustar header with `path`, the type flag `kind`
/// (`b'0'` file, `b'2'` symlink, `b'5'` directory), the link target
/// `link`, then `data` padded to 512 bytes.
pub fn raw_entry(path: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..107].copy_from_slice(b"0000755");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut entry = header.to_vec();
    entry.extend_from_slice(data);
    entry.resize(entry.len().div_ceil(512) * 512, 0);
    entry
}

/// The SHA-256 of a file, in hexadecimal (by `sha256sum`).
pub fn sha256_hex(path: &Path) -> String {
    let out = finish({
        let mut command = Command::new("sha256sum");
        command.arg(path).stdin(Stdio::null());
        command
    });
    assert_eq!(out.code, Some(0), "sha256sum {}: {out:#?}", path.display());
    let hex = out.stdout.split_whitespace().next().unwrap_or_default();
    assert_eq!(hex.len(), 64, "sha256sum {}: {out:#?}", path.display());
    hex.to_string()
}

/// The end of a tar archive: two blocks of zeros.
pub const TAR_END: [u8; 1024] = [0; 1024];

/// `data`, gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).expect("gzip in memory");
    gz.finish().expect("gzip in memory")
}

/// What a directory tree on the host holds, path by path (relative to its
/// root): type and mode, owner, size, modification time, inode, and the
/// content of files and links. Compare two with [`differences`].
pub type Snapshot = BTreeMap<PathBuf, (u32, u32, u32, u64, i64, u64, Vec<u8>)>;

pub fn snapshot(root: &Path) -> Snapshot {
    use std::os::unix::fs::MetadataExt;
    let mut found = Snapshot::new();
    for (path, meta) in walk(root) {
        let content = if meta.is_file() {
            std::fs::read(&path).unwrap()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        let size = if meta.is_dir() { 0 } else { meta.len() };
        found.insert(
            path.strip_prefix(root).unwrap().to_path_buf(),
            (
                meta.mode(),
                meta.uid(),
                meta.gid(),
                size,
                meta.mtime(),
                meta.ino(),
                content,
            ),
        );
    }
    found
}

/// Everything below `root` (not `root` itself), symlinks not followed:
/// each path with its metadata. A directory that cannot be read, or an
/// entry gone meanwhile, is passed over.
pub fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path.clone());
            }
            found.push((path, meta));
        }
    }
    found
}

/// Add an entry to a tarball being built: owned by root, dated 0; `data`
/// is a symlink's target.
pub fn tar_append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    kind: tar::EntryType,
    path: &str,
    mode: u32,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    if kind == tar::EntryType::Symlink {
        header.set_size(0);
        tar.append_link(&mut header, path, std::str::from_utf8(data).unwrap())
            .unwrap();
    } else {
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data).unwrap();
    }
}

/// A tarball's entries, gzipped or not (its first bytes tell).
pub fn tar_archive(bytes: &[u8]) -> tar::Archive<Box<dyn Read + '_>> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    tar::Archive::new(reader)
}

/// The differences between two snapshots, for a message.
pub fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => lines.push(format!("removed: {}", path.display())),
            Some(new) if new != old => lines.push(format!(
                "changed: {} (mode, uid, gid, size, mtime, inode) {:o} {} {} {} {} {} -> {:o} {} {} {} {} {}",
                path.display(),
                old.0, old.1, old.2, old.3, old.4, old.5,
                new.0, new.1, new.2, new.3, new.4, new.5
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        lines.push(format!("added: {}", path.display()));
    }
    lines
}

/// SIGKILL each of `processes` (PID and start time) that still lives, and
/// wait up to 5 s until none does: false if one outlived that.
pub fn kill_survivors(processes: &[(u32, Option<u64>)]) -> bool {
    for (p, t) in processes {
        if alive(*p, *t) {
            signal(*p, libc::SIGKILL);
        }
    }
    eventually(Duration::from_secs(5), || {
        processes.iter().all(|(p, t)| !alive(*p, *t))
    })
}

/// Field `n` (numbered from 1, as in proc(5)) of /proc/PID/stat, from the
/// state (field 3) on: the command's name may hold spaces and parentheses.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    assert!(n >= 3, "fields 1 and 2 are the PID and the name");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(n - 3).map(str::to_string)
}

/// The parent of process `pid` (field 4 of /proc/PID/stat).
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 4)?.parse().ok()
}

/// Every process whose command line (/proc/PID/cmdline, its arguments
/// joined by spaces) holds `token`; this test process aside.
pub fn pids_with(token: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|bytes| {
                        let line: Vec<u8> = bytes
                            .iter()
                            .map(|b| if *b == 0 { b' ' } else { *b })
                            .collect();
                        String::from_utf8_lossy(&line).contains(token)
                    })
                })
                .filter(|pid| alive(*pid, None))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The processes of running container `id` (full ID), as its cgroups
/// hold them: the host PID of its PID 1 (the one that is first in a PID
/// namespace of its own), and all of them. Waits up to 5 s for them.
pub fn container_processes(id: &str) -> (u32, BTreeSet<u32>) {
    let mut found = None;
    let ok = eventually(Duration::from_secs(5), || {
        let procs = processes_in(&cgroups_of_container(id));
        match namespace_init_among(&procs) {
            Some(init) => {
                found = Some((init, procs));
                true
            }
            None => false,
        }
    });
    assert!(
        ok,
        "container {} runs, so its cgroups (`<hierarchy>/mydocker/{id}`) should hold its PID 1; found the cgroups {:?}",
        &id[..12],
        cgroups_of_container(id)
    );
    let (init, procs) = found.unwrap();
    (init, procs)
}

/// The cgroup directories of the container with the full ID `id` that
/// exist now: `<hierarchy>/mydocker/<ID>` in every hierarchy (from stage 6
/// every container has one at least).
pub fn cgroups_of_container(id: &str) -> Vec<PathBuf> {
    cgroup_roots()
        .into_iter()
        .map(|root| root.join("mydocker").join(id))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// The processes in the cgroups `dirs` (their cgroup.procs).
pub fn processes_in(dirs: &[PathBuf]) -> BTreeSet<u32> {
    dirs.iter()
        .flat_map(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Of `pids` (host PIDs), the one that is PID 1 of a PID namespace below
/// this one: the last number of its `NSpid:` line in /proc/PID/status is 1.
pub fn namespace_init_among(pids: &BTreeSet<u32>) -> Option<u32> {
    pids.iter().copied().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
                let numbers: Vec<&str> = line["NSpid:".len()..].split_whitespace().collect();
                Some(numbers.len() > 1 && numbers.last() == Some(&"1"))
            })
            .unwrap_or(false)
    })
}

/// Run a command for the clean-up after a failure; never panics, never
/// waits more than 10 s (then it is killed, by its PID).
pub fn quietly(mut command: Command) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = spawn(&mut command) else {
        return;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_gets_rm_right_after_it_and_nothing_else_changes() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["run", "busybox", "true"],
                &["run", "--rm", "busybox", "true"],
            ),
            (
                &["run", "-i", "busybox", "run", "x"],
                &["run", "--rm", "-i", "busybox", "run", "x"],
            ),
            (
                &["--root", "run", "run", "img", "ls"],
                &["--root", "run", "run", "--rm", "img", "ls"],
            ),
            (
                &["--root=/x", "run", "a"],
                &["--root=/x", "run", "--rm", "a"],
            ),
            (&["volume", "rm", "run"], &["volume", "rm", "run"]),
            (&["ps", "-a"], &["ps", "-a"]),
            (&["commit", "run", "img"], &["commit", "run", "img"]),
            (&["init"], &["init"]),
            (&[], &[]),
        ];
        for (args, want) in cases {
            assert_eq!(with_rm(&strings(args)), strings(want), "{args:?}");
        }
    }

    #[test]
    fn from_stage_9_run_gets_net_none_too_and_nothing_else_changes() {
        let added = ["--rm", "--net", "none"];
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["run", "busybox", "true"],
                &["run", "--rm", "--net", "none", "busybox", "true"],
            ),
            (
                &["--root", "run", "run", "-d", "img", "run"],
                &[
                    "--root", "run", "run", "--rm", "--net", "none", "-d", "img", "run",
                ],
            ),
            (&["exec", "c", "run"], &["exec", "c", "run"]),
            (&["network", "ls"], &["network", "ls"]),
        ];
        for (args, want) in cases {
            assert_eq!(
                with_run_options(&strings(args), &added),
                strings(want),
                "{args:?}"
            );
        }
        assert_eq!(
            with_run_options(&strings(&["run", "x"]), &[]),
            strings(&["run", "x"])
        );
    }

    #[test]
    fn the_harness_script_adds_what_with_run_options_adds() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake");
        std::fs::write(&fake, "#!/bin/sh\nfor a do printf '<%s>\\n' \"$a\"; done\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        for added in [&["--net", "none"][..], &["--rm", "--net", "none"], &[]] {
            let wrapper = wrapper(&fake, added, None);
            for args in [
                &["run", "-d", "busybox", "sh", "-c", "a 'b'"][..],
                &["--root", "/r", "run", "busybox"],
                &["ps", "-a"],
            ] {
                let mut command = Command::new(wrapper.path().join("mydocker"));
                command.args(args).stdout(Stdio::piped());
                let out = spawn(&mut command).unwrap().wait_with_output().unwrap();
                let want: String = with_run_options(&strings(args), added)
                    .iter()
                    .map(|a| format!("<{a}>\n"))
                    .collect();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    want,
                    "{added:?} {args:?}"
                );
            }
        }
        let script = wrapper_script(&fake, &[], Some(Path::new("/run/netns/it's")));
        assert!(
            script.contains("exec nsenter --net='/run/netns/it'\\''s' "),
            "{script}"
        );
    }

    #[test]
    fn the_rm_script_adds_what_with_rm_adds_and_keeps_every_argument() {
        let dir = tempfile::tempdir().unwrap();
        // A "binary" that prints its arguments, one per line, between < >.
        let fake = dir.path().join("it's fake");
        std::fs::write(&fake, "#!/bin/sh\nfor a do printf '<%s>\\n' \"$a\"; done\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wrapper = wrapper(&fake, &["--rm"], None);
        let cases: &[&[&str]] = &[
            &[
                "run",
                "busybox",
                "sh",
                "-c",
                "echo 'hi there'; echo \"$x\"",
                "",
            ],
            &["--root", "/a b", "run", "-v", "x:/y", "busybox", "*"],
            &["--root=run", "volume", "create", "run"],
            &["ps", "-a", "-q"],
            &["run"],
            &[],
        ];
        for args in cases {
            let mut command = Command::new(wrapper.path().join("mydocker"));
            command.args(*args).stdout(Stdio::piped());
            let out = spawn(&mut command).unwrap().wait_with_output().unwrap();
            let printed = String::from_utf8_lossy(&out.stdout).into_owned();
            let want: String = with_rm(&strings(args))
                .iter()
                .map(|a| format!("<{a}>\n"))
                .collect();
            assert_eq!(printed, want, "{args:?}: {out:?}");
        }
    }
}
