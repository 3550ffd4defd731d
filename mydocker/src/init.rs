//! `mydocker init`: the container's PID 1, running inside the new namespaces.
//!
//! It reads its orders from the pipe, prepares the container's view of the
//! system, and finally replaces itself with the user's command.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
// @before 7
// use std::os::fd::FromRawFd;
// @end
// @stage 7
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd};
// @end
// @stage 3
use std::path::Path;
// @end

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
// @before 3
// use nix::unistd::{execvp, getpid};
// @end
// @stage 3
use nix::unistd::{execvp, getpid, sethostname};
// @end

use crate::config::ContainerConfig;
use crate::namespace::PIPE_FD;
use crate::signals;
// @stage 4
use crate::overlay;
// @end
// @stage 3
use crate::rootfs;
// @end
// @stage 5
use crate::volumes;
// @end

// ANCHOR: init
pub fn init() -> Result<i32> {
    // The kernel drops every signal that a PID namespace's init has no
    // handler for: catch them until the command takes over (see below).
    signals::install()?;
    let config = read_config()?;
    make_mounts_private()?;
    // @stage 4
    overlay::mount_root(&config.rootfs, &config.lower)?;
    // @end
    // @stage 5
    // The volumes' host sides, opened while host paths lead to the host.
    let trees = volumes::open_sources(&config.volumes)?;
    // @end
    // @stage 9
    // And its /etc/hosts and friends, in its directory on the host.
    let etc = volumes::open_sources(&config.etc)?;
    // @end
    // @stage 3
    rootfs::pivot_into(&config.rootfs)?;
    rootfs::mkdir(Path::new("/proc"))?;
    // @end
    mount_proc()?;
    // @stage 3
    rootfs::mount_dev()?;
    rootfs::mount_sys()?;
    // @end
    // @stage 9
    // Before the volumes: a volume on /etc covers them, and their mount
    // points are made in the container's layer, never in a volume.
    // One at a time: an image whose /etc/resolv.conf is a symlink to
    // nowhere (systemd's stub) keeps its own, and still runs.
    for (file, tree) in config.etc.iter().zip(etc) {
        let one = std::slice::from_ref(file);
        if let Err(err) = volumes::attach(one, vec![tree]) {
            let left = "the image's own file is left in place";
            eprintln!("mydocker: warning: {err:#}: {left}");
        }
    }
    // @end
    // @stage 5
    // Last, so that a volume in /dev is not hidden by the /dev mounted
    // above, and found in the container's root, where the host is gone.
    volumes::attach(&config.volumes, trees)?;
    // @end
    // @stage 3
    sethostname(&config.hostname).context("sethostname")?;
    set_environment(&config.env);
    // @end
    hand_over()?;
    // A signal forwarded to us while we prepared was meant for the command:
    // it asked to stop, so the command never starts. (execve(2) resets the
    // handlers: the command gets the default dispositions.)
    signals::check_interrupted()?;
    exec(&config.command)
}
// ANCHOR_END: init

// @stage 7
// ANCHOR: report
/// `mydocker init`, whose failure goes to the monitor rather than only to
/// stderr: the container's stderr is its log, and `run -d` must say why a
/// container could not start. The monitor reads init's socket (fd 3)
/// after sending the orders: nothing but end-of-file means the command
/// started; anything else is why it did not.
pub fn main() -> i32 {
    match init() {
        Ok(code) => code,
        Err(err) => {
            report(&format!("mydocker: {err:#}\n"));
            crate::exit_code(&err)
        }
    }
}

/// Tell the monitor why the command did not start: through fd 3 when a
/// monitor started us, else on stderr.
fn report(message: &str) {
    if getpid().as_raw() == 1 && fcntl(PIPE_FD, FcntlArg::F_GETFD).is_ok() {
        // SAFETY: fd 3 is open (checked just above) and stays open.
        let pipe = unsafe { BorrowedFd::borrow_raw(PIPE_FD) };
        if nix::unistd::write(pipe, message.as_bytes()).is_ok() {
            return;
        }
    }
    eprint!("{message}");
}
// ANCHOR_END: report

// @end
// ANCHOR: read_config
/// Read the configuration that the parent writes into the pipe. This blocks
/// until the parent closes its end, which is how the parent holds the
/// container back until everything is ready.
fn read_config() -> Result<ContainerConfig> {
    // Run by hand, init would remount the mounts of whoever started it: it
    // must be the first process of a new PID namespace, with a pipe on fd 3.
    if getpid().as_raw() != 1 || fcntl(PIPE_FD, FcntlArg::F_GETFD).is_err() {
        bail!("init is started by `mydocker run`, not by hand");
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process
    // uses it; the File owns and closes it.
    let mut pipe = unsafe { File::from_raw_fd(PIPE_FD) };
    let mut json = String::new();
    pipe.read_to_string(&mut json)
        .context("read from the init pipe")?;
    // @stage 7
    // Kept open, to report a failure (see `main`); close-on-exec, like
    // every descriptor of ours (`hand_over`), so the monitor reads
    // end-of-file when the command starts.
    let _ = pipe.into_raw_fd();
    // @end
    serde_json::from_str(&json)
        .context("parse the configuration from the init pipe")
}
// ANCHOR_END: read_config

// ANCHOR: private
/// Stop mount events from travelling between the container and the host.
///
/// The new mount namespace starts as a copy of the host's, and a copied mount
/// stays in the same *peer group* when it is shared: mounting /proc below
/// would then also happen on the host (systemd makes `/` shared at boot).
/// MS_PRIVATE cuts that link, MS_REC does it for every mount below `/` too.
fn make_mounts_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("mount(/, MS_REC|MS_PRIVATE)")
}
// ANCHOR_END: private

// ANCHOR: proc
/// Mount a fresh procfs. /proc shows the processes of the PID namespace of
/// whoever mounts it, so `ps` in the container sees only the container.
fn mount_proc() -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
        .context("mount(proc, /proc)")
}
// ANCHOR_END: proc

// ANCHOR: hand_over
/// Leave the command nothing of mydocker's: signal dispositions and open
/// files survive execve(2).
// @before 8
// fn hand_over() -> Result<()> {
// @end
// @stage 8
pub fn hand_over() -> Result<()> {
    default_sigpipe()?;
    close_on_exec()
}

/// SIGPIPE back to its default action.
pub fn default_sigpipe() -> Result<()> {
    // @end
    // Rust's runtime ignores SIGPIPE (it turns EPIPE into an error instead).
    // An ignored signal stays ignored across exec: `yes | head -1` would
    // print "Broken pipe" instead of ending quietly.
    // SAFETY: restoring the default disposition installs no handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .context("signal(SIGPIPE)")?;
    // @stage 8
    Ok(())
}

/// Every descriptor but 0, 1 and 2 closed on execve(2). It reads
/// /proc/self/fd: the /proc of the process's mount namespace.
pub fn close_on_exec() -> Result<()> {
    // @end
    // Descriptors that mydocker inherited from whoever started it, beyond
    // stdin, stdout and stderr, must not reach the container: mark them
    // close-on-exec.
    let open: Vec<i32> = fs::read_dir("/proc/self/fd")
        .context("read /proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2) {
        // The directory's own descriptor is already closed: ignore EBADF.
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    Ok(())
}
// ANCHOR_END: hand_over

// @stage 3
// ANCHOR: environment
/// Replace the environment inherited from the host with the container's.
/// (execvp searches the PATH of *this* environment, so set it first.)
// @before 8
// fn set_environment(env: &[String]) {
// @end
// @stage 8
pub fn set_environment(env: &[String]) {
    // @end
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    for pair in env {
        if let Some((key, value)) = pair.split_once('=') {
            std::env::set_var(key, value);
        }
    }
}
// ANCHOR_END: environment

// @end
// ANCHOR: exec
/// Replace init with the user's command, looked up in $PATH like a shell
/// does. On success this never returns: the command *is* PID 1 now.
// @before 8
// fn exec(command: &[String]) -> Result<i32> {
// @end
// @stage 8
pub fn exec(command: &[String]) -> Result<i32> {
    // @end
    let args = command
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("an argument contains a NUL byte")?;
    let Some(program) = args.first() else {
        bail!("no command to run");
    };
    let Err(err) = execvp(program, &args);
    // Exit codes like a shell's: 127 not found, 126 found but not runnable.
    // A path given with a `/` is not searched: ENOENT then means the file,
    // or the ELF interpreter it asks for, is missing.
    let (code, why) = match err {
        Errno::ENOENT if command[0].contains('/') => {
            (127, "no such file, or its dynamic loader is missing")
        }
        Errno::ENOENT => (127, "executable file not found in $PATH"),
        Errno::EACCES => (126, "permission denied"),
        other => (126, other.desc()),
    };
    // @before 7
    // eprintln!("mydocker: exec {:?}: {why}", command[0]);
    // @end
    // @stage 7
    report(&format!("mydocker: exec {:?}: {why}\n", command[0]));
    // @end
    Ok(code)
}
// ANCHOR_END: exec
