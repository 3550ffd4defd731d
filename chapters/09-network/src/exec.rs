//! `mydocker exec`: one more process in a running container.
//!
//! A container is nothing but processes that share namespaces and a
//! cgroup. To add one, a process joins them with setns(2), then forks: the
//! child is the new process in the container, and the parent, which stays
//! on the host's side of the PID namespace, waits for it like a shell.
//!
//! ```text
//!  mydocker exec (host)              the container
//!   | find, check, pidfd of PID 1  -> [PID 1: sh]
//!   | read its cgroups; open their
//!   |   cgroup.procs, pids.current
//!   | our files: close-on-exec
//!   | setns(pidfd, ipc|uts|net|pid|mnt|cgroup)
//!   | fork ----------------------->  [PID n: the command]
//!   | write n into cgroup.procs,       | waits for the go byte
//!   |   check the pids limits          |
//!   | send the go byte  ------------>  | chdir, environment, execve
//!   | wait, exit with its code         |
//! ```

use std::fs::{self, File};
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::unistd::{chdir, dup2, fork, getppid, pipe2, read, write};
use nix::unistd::{ForkResult, Pid};

use crate::cgroups;
use crate::cli::ExecArgs;
use crate::container;
use crate::init;
use crate::lifecycle;
use crate::paths::Paths;
use crate::process::Process;
use crate::record::{Record, State};
use crate::run;
use crate::signals;

// ANCHOR: exec
/// `mydocker exec [-i] [-t] [-e K=V]... [-w DIR] CONTAINER CMD [ARG...]`
pub fn exec(paths: &Paths, args: ExecArgs) -> Result<i32> {
    lifecycle::root_only()?;
    if args.tty && args.interactive && !std::io::stdin().is_terminal() {
        bail!(
            "-t needs a terminal on standard input: \
             drop -t when you pipe into the container"
        );
    }
    let workdir = args.workdir.unwrap_or_else(|| "/".to_string());
    if !workdir.starts_with('/') {
        bail!("-w {workdir:?}: the working directory must be absolute");
    }
    let user_env = run::parse_env(&args.env)?;
    signals::install()?;

    let target = Target::find(paths, &args.container)?;
    let env = environment(&target.env, args.tty, user_env);
    // Opened while this process still sees the host's files: once it is
    // in the container's mount namespace, /sys/fs/cgroup is the
    // container's, or nothing.
    let procs = target.open_procs()?;
    let limits = cgroups::PidsLimit::of(&target.cgroups)?;
    let stdin = match args.interactive {
        true => None,
        false => Some(File::open("/dev/null").context("open /dev/null")?),
    };

    // Every descriptor that mydocker inherited, marked close-on-exec
    // while /proc is still the host's: the container's /proc is whatever
    // the container mounted there (or nothing), and must not decide which
    // of the caller's files reach the command.
    init::close_on_exec()?;
    target.join()?;
    // The child waits on this pipe until the parent has put it into the
    // cgroup. O_CLOEXEC: the command inherits neither end.
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    // SAFETY: mydocker never starts a thread, so the child is a copy of
    // the whole process, with no lock held by a thread left behind, and
    // may run Rust code. (The setns above proves nothing: through a pidfd
    // with several namespaces, it lets a second thread pass.)
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(go_write);
            let command = Command {
                args: &args.command,
                env: &env,
                workdir: &workdir,
                stdin: stdin.as_ref(),
            };
            std::process::exit(command.run(go_read))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(go_read);
            drop(stdin);
            parent(&target, child, procs, limits, go_write)
        }
        // The kernel refuses new processes in a PID namespace whose PID 1
        // has died: the container stopped a moment ago.
        Err(Errno::ENOMEM) if !target.process.alive()? => {
            Err(target.not_running())
        }
        Err(err) => Err(err).context("fork"),
    }
}
// ANCHOR_END: exec

// ANCHOR: target
/// The container to enter: its PID 1, held through a pidfd.
struct Target {
    /// The name the user gave, for the messages.
    name: String,
    pid: i32,
    process: Process,
    /// Whether its user namespace differs from ours.
    own_user_namespace: bool,
    /// The `cgroup.procs` files of its cgroups.
    cgroups: Vec<PathBuf>,
    /// The container's environment.
    env: Vec<String>,
}

impl Target {
    /// Find container `name` and make sure that it runs, and that the
    /// process we are about to enter is its PID 1, not a process that got
    /// the same PID after it died.
    fn find(paths: &Paths, name: &str) -> Result<Target> {
        let id = container::find(paths, name)?;
        let not_running = || anyhow!("container {name} is not running");
        // Its monitor holds the lock while it runs, and the record names
        // its PID 1 and when that process started.
        if !container::is_running(paths, &id)? {
            return Err(not_running());
        }
        let record = Record::load_if_there(&paths.container(&id))?
            .ok_or_else(not_running)?;
        let (State::Running, Some(pid), Some(started)) =
            (record.state, record.pid, record.pid_started)
        else {
            return Err(not_running());
        };
        // The pidfd first, then the start time: see process.rs.
        let process =
            Process::verified(pid, started)?.ok_or_else(not_running)?;
        // A container's PID 1 is the first of a PID namespace of its own:
        // a process in ours is no container, whatever a record says.
        let host = same_namespace(pid, "pid")?;
        let own_user_namespace = !same_namespace(pid, "user")?;
        let cgroups = cgroups::procs_files_of(pid)?;
        // Those files were the right process's only if it still runs now:
        // a PID goes to another process only once its process is gone.
        if host || !process.alive()? {
            return Err(not_running());
        }
        Ok(Target {
            name: name.to_string(),
            pid,
            process,
            own_user_namespace,
            cgroups,
            env: record.config.env,
        })
    }

    fn not_running(&self) -> anyhow::Error {
        anyhow!("container {} is not running", self.name)
    }
}

/// Whether process `pid` is in the same namespace of kind `kind` as we
/// are: the same file behind /proc/PID/ns/KIND (its inode number names
/// the namespace).
fn same_namespace(pid: i32, kind: &str) -> Result<bool> {
    let inode = |path: &str| {
        fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .with_context(|| format!("stat {path}"))
    };
    Ok(inode(&format!("/proc/{pid}/ns/{kind}"))?
        == inode(&format!("/proc/self/ns/{kind}"))?)
}
// ANCHOR_END: target

// ANCHOR: cgroup_files
impl Target {
    /// The cgroup.procs files of its PID 1's cgroups, opened for writing.
    fn open_procs(&self) -> Result<Vec<File>> {
        let mut files = Vec::new();
        for path in &self.cgroups {
            match File::options().write(true).open(path) {
                Ok(file) => files.push(file),
                // Its cgroup is removed once it has stopped.
                Err(_) if !self.process.alive()? => {
                    return Err(self.not_running())
                }
                Err(err) => {
                    return Err(err).context(format!("open {}", path.display()))
                }
            }
        }
        Ok(files)
    }
}
// ANCHOR_END: cgroup_files

// ANCHOR: join
/// The namespaces a container has, and `exec` joins. The user namespace
/// only if it is not ours: joining one's own user namespace is an error
/// (EINVAL), and so is asking to.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    // First: in the container's user namespace we get the capabilities
    // that joining the others requires (there, not on the host).
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    // Only our children will be in it: see `exec`'s fork.
    ("pid", CloneFlags::CLONE_NEWPID),
    // Last: it changes our root and working directory to the container's.
    ("mnt", CloneFlags::CLONE_NEWNS),
];

impl Target {
    /// Enter the container's namespaces (but the PID namespace, which
    /// only our children will be in).
    fn join(&self) -> Result<()> {
        let flags = NAMESPACES
            .iter()
            .filter(|(kind, _)| *kind != "user" || self.own_user_namespace)
            .fold(CloneFlags::empty(), |all, (_, flag)| all | *flag);
        // With a pidfd (Linux 5.8), all of them in one call, and all or
        // none: no half-joined state if one fails.
        match setns(self.process.pidfd(), flags) {
            Ok(()) => Ok(()),
            // Ended since we checked: the pidfd is of that process, so it
            // can only be that one that is gone.
            Err(Errno::ESRCH) => Err(self.not_running()),
            // An older kernel takes only namespace files.
            Err(Errno::EINVAL) => self.join_files(flags),
            Err(err) => Err(err)
                .context(format!("setns(pidfd of {}, {flags:?})", self.pid)),
        }
    }
    // ANCHOR_END: join

    // ANCHOR: join_files
    /// Enter them one by one, through the files in /proc/PID/ns.
    fn join_files(&self, flags: CloneFlags) -> Result<()> {
        // Every file opened first: once we are in the container's mount
        // namespace, "/proc/PID" is looked up in the container's /proc,
        // where PID is another process, or none.
        let mut files = Vec::new();
        for (kind, flag) in NAMESPACES {
            if flags.contains(flag) {
                let path = format!("/proc/{}/ns/{kind}", self.pid);
                let file = match File::open(&path) {
                    Ok(file) => file,
                    Err(_) if !self.process.alive()? => {
                        return Err(self.not_running())
                    }
                    Err(err) => {
                        return Err(err).context(format!("open {path}"))
                    }
                };
                files.push((path, file, flag));
            }
        }
        // Opened from the container's PID 1 only if it still runs now.
        if !self.process.alive()? {
            return Err(self.not_running());
        }
        for (path, file, flag) in files {
            setns(file.as_fd(), flag)
                .with_context(|| format!("setns({path})"))?;
        }
        Ok(())
    }
    // ANCHOR_END: join_files
}

// ANCHOR: environment
/// The container's environment, then TERM for `-t`, then the user's `-e`:
/// a later value for a name replaces an earlier one.
fn environment(
    container: &[String],
    tty: bool,
    user: Vec<String>,
) -> Vec<String> {
    let mut env = container.to_vec();
    let term = tty.then(|| "TERM=xterm".to_string());
    for pair in term.into_iter().chain(user) {
        let name = pair.split('=').next().unwrap_or_default().to_string();
        env.retain(|old| old.split('=').next() != Some(name.as_str()));
        env.push(pair);
    }
    env
}
// ANCHOR_END: environment

// ANCHOR: parent
/// The parent's side: put the child into the container's cgroup, let it
/// go, pass signals on, and return its exit code.
fn parent(
    target: &Target,
    child: Pid,
    procs: Vec<File>,
    limits: Vec<cgroups::PidsLimit>,
    go: OwnedFd,
) -> Result<i32> {
    signals::forward_to(child);
    if let Err(err) = signals::check_interrupted() {
        return Err(run::abort(child, err.into()));
    }
    // Before the command runs a single instruction: its limits apply to
    // it, and every process it forks is in the cgroup too.
    if let Err(err) = into_cgroups(target, child, procs, limits) {
        return Err(run::abort(child, err));
    }
    // A child that died already (killed with the container) is no error:
    // waiting says how it ended.
    let _ = write(&go, b"g");
    drop(go);
    run::wait_for(child)
}

/// Write the child's PID into the container's cgroups, and make sure that
/// there was room for it.
fn into_cgroups(
    target: &Target,
    child: Pid,
    procs: Vec<File>,
    limits: Vec<cgroups::PidsLimit>,
) -> Result<()> {
    for (mut file, path) in procs.into_iter().zip(&target.cgroups) {
        if let Err(err) = file.write_all(child.to_string().as_bytes()) {
            if !target.process.alive()? {
                return Err(target.not_running());
            }
            return Err(err).context(format!("write {}", path.display()));
        }
    }
    // The kernel counts a process moved in, but does not refuse it: one
    // exec too many would take the container over its --pids-limit, and
    // its own next fork would fail.
    for limit in limits {
        if limit.exceeded()? {
            bail!(
                "container {} is at its pids limit ({} in {}): \
                 the command cannot start",
                target.name,
                limit.max,
                limit.dir.display()
            );
        }
    }
    Ok(())
}
// ANCHOR_END: parent

// ANCHOR: child
/// What the child runs, in the container.
struct Command<'a> {
    args: &'a [String],
    env: &'a [String],
    workdir: &'a str,
    stdin: Option<&'a File>,
}

impl Command<'_> {
    /// Become the command; the exit code if that fails.
    fn run(self, go: OwnedFd) -> i32 {
        // `kill -9` of `mydocker exec` ends the command too, as it ends a
        // foreground container. Our parent is outside our PID namespace,
        // so getppid() says 0 while it lives, 1 (the container's PID 1,
        // which adopts orphans) once it has died.
        if set_pdeathsig(Signal::SIGKILL).is_err() || getppid().as_raw() != 0 {
            return 125;
        }
        // Wait for the parent to put us into the cgroup. End of file
        // without the byte: it failed, and says why.
        let mut byte = [0u8];
        loop {
            match read(go.as_raw_fd(), &mut byte) {
                Ok(1) => break,
                Err(Errno::EINTR) => continue,
                _ => return 125,
            }
        }
        match self.exec() {
            Ok(code) => code,
            Err(err) => {
                eprintln!("mydocker: {err:#}");
                crate::exit_code(&err)
            }
        }
    }

    fn exec(self) -> Result<i32> {
        if let Some(stdin) = self.stdin {
            dup2(stdin.as_raw_fd(), 0).context("dup2(/dev/null, 0)")?;
        }
        if let Err(err) = chdir(Path::new(self.workdir)) {
            // As for a command that cannot run: 126.
            eprintln!("mydocker: chdir({:?}): {}", self.workdir, err.desc());
            return Ok(126);
        }
        init::set_environment(self.env);
        init::default_sigpipe()?;
        // A signal that came before the command: it never starts.
        signals::check_interrupted()?;
        init::exec(self.args)
    }
}
// ANCHOR_END: child
