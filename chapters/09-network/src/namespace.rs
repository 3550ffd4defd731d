//! Starting the container's first process in new namespaces.
//!
//! A namespace gives a process its own view of one kernel resource. We ask
//! for the new namespaces in the same system call that creates the process,
//! clone(2), so the process never runs a single instruction in the host's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sched::{clone, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::unistd::{dup2, execv, Pid};

// ANCHOR: flags
/// The namespaces every container gets, each a new and empty instance.
pub const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUTS // host name
    .union(CloneFlags::CLONE_NEWPID) // process IDs: the child is PID 1
    .union(CloneFlags::CLONE_NEWNS) // the mount table
    .union(CloneFlags::CLONE_NEWIPC) // System V IPC, POSIX message queues
    .union(CloneFlags::CLONE_NEWNET); // network devices, addresses, ports

// ANCHOR_END: flags

// ANCHOR: pipe_fd
/// The file descriptor on which init finds its end of the pipe.
pub const PIPE_FD: i32 = 3;
// ANCHOR_END: pipe_fd

/// Stack for the cloned child until it calls execv(2). It only runs a few
/// system calls, so a small stack is plenty.
const STACK_SIZE: usize = 256 * 1024;

// ANCHOR: spawn
// ANCHOR: spawn_prepare
/// Clone a child into new namespaces and make it execute `mydocker init`.
///
/// `pipe` becomes the child's file descriptor 3: init reads its orders there.
/// `stdio` replace the child's standard input, output and error when given
/// (`/dev/null` unless the user asked for `-i`; the monitor's pipes).
/// Without `new_net`, the child stays in our network namespace.
pub fn spawn_init(
    pipe: &OwnedFd,
    stdio: [Option<&OwnedFd>; 3],
    new_net: bool,
) -> Result<Pid> {
    // Re-execute ourselves: /proc/self/exe is always the running binary,
    // wherever it was installed. Its `init` subcommand runs inside the new
    // namespaces, and is the container's PID 1.
    let exe = CString::new("/proc/self/exe")?;
    let argv = [CString::new("mydocker")?, CString::new("init")?];

    // Prepare everything before clone: the child makes only system calls.
    let pipe_fd = pipe.as_raw_fd();
    let stdio_fds = stdio.map(|fd| fd.map(AsRawFd::as_raw_fd));
    let mut stack = vec![0u8; STACK_SIZE];
    // ANCHOR_END: spawn_prepare

    // ANCHOR: spawn_child
    let child = move || -> isize {
        // SIGKILL cannot be caught, so mydocker cannot forward it: ask the
        // kernel to kill the container when mydocker dies, however it dies.
        // (If mydocker is gone already, init finds the pipe empty and
        // stops.) The setting survives execv, for init and the command,
        // but not a change of user: a command that runs `su` or a setuid
        // program loses it (see prctl(2)), and outlives a killed mydocker.
        if set_pdeathsig(Signal::SIGKILL).is_err() {
            return 125;
        }
        // dup2 clears close-on-exec on the copy: fd 3 survives execv while
        // every other pipe end (opened with O_CLOEXEC) is closed. When the
        // pipe already *is* fd 3, dup2 does nothing, so clear the flag.
        let moved = if pipe_fd == PIPE_FD {
            fcntl(PIPE_FD, FcntlArg::F_SETFD(FdFlag::empty())).map(drop)
        } else {
            dup2(pipe_fd, PIPE_FD).map(drop)
        };
        if moved.is_err() {
            return 125;
        }
        for (target, fd) in stdio_fds.iter().enumerate() {
            if let Some(fd) = fd {
                if dup2(*fd, target as i32).is_err() {
                    return 125;
                }
            }
        }
        let _ = execv(&exe, &argv);
        // Only reached when execv failed. Write with write(2) directly: no
        // allocation, no lock, between clone and exec.
        let _ = nix::unistd::write(
            std::io::stderr(),
            b"mydocker: cannot re-execute /proc/self/exe\n",
        );
        125
    };
    // ANCHOR_END: spawn_child

    // ANCHOR: spawn_clone
    // SAFETY: the child runs on its own copy of our memory (no CLONE_VM), and
    // this process has a single thread, so no lock can be held by another.
    // SIGCHLD: the parent is told when the child ends, like after fork(2).
    let mut namespaces = NAMESPACES;
    if !new_net {
        namespaces.remove(CloneFlags::CLONE_NEWNET);
    }
    let pid = unsafe {
        clone(
            Box::new(child),
            &mut stack,
            namespaces,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .context("clone(CLONE_NEW{UTS,PID,NS,IPC,NET})")?;
    Ok(pid)
}
// ANCHOR_END: spawn_clone
// ANCHOR_END: spawn
