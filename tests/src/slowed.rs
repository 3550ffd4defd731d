//! Run mydocker slowed down, to make a race come out one way every time.
//!
//! Some bugs are races that a correct-looking binary wins on a fast
//! machine: a limit written a millisecond after the container's command
//! started is caught only when the command forks within that millisecond.
//! A test cannot wait for luck. Instead it runs mydocker under ptrace(2),
//! as a debugger would, and once mydocker has started the container's
//! process, holds every system call mydocker itself makes for a moment.
//! The child (the container) is let go at full speed. Whatever mydocker
//! leaves for after the container started now happens long after: a bug
//! that depends on winning the race shows every time, and a binary that
//! orders its steps correctly is merely slower.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use crate::{alive, collect, describe, kill_tree, no_panic, read_all, start_time, Outcome};

/// Run `command` to the end, each of its system calls held for `delay`
/// from the moment it starts a process in namespaces of its own (the
/// container); kill it and fail the test after `timeout`.
pub fn run_slowed(mut command: Command, delay: Duration, timeout: Duration) -> Outcome {
    let what = describe(&command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: PTRACE_TRACEME only makes this process traced by its
    // parent; it allocates nothing, which is all a pre_exec hook may do.
    unsafe {
        command.pre_exec(|| {
            let none = std::ptr::null_mut::<libc::c_void>();
            match libc::ptrace(libc::PTRACE_TRACEME, 0, none, none) {
                -1 => Err(io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
    // The tracer is the thread that started the process: it alone may
    // make ptrace requests about it, so it starts it and traces it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let _ = tx.send(Report::Failed(format!("start it: {err}")));
                return;
            }
        };
        let pid = child.id() as i32;
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        let _ = tx.send(Report::Started(pid, stdout, stderr));
        let _ = tx.send(match trace(pid, delay) {
            Ok(code) => Report::Ended(code),
            Err(err) => Report::Failed(err),
        });
    });
    let (pid, stdout, stderr) = match rx.recv_timeout(timeout) {
        Ok(Report::Started(pid, stdout, stderr)) => (pid, stdout, stderr),
        Ok(Report::Failed(err)) => panic!("{what}: {err}"),
        _ => panic!("{what}: did not start within {} s", timeout.as_secs()),
    };
    let code = match rx.recv_timeout(timeout) {
        Ok(Report::Ended(code)) => code,
        Ok(Report::Failed(err)) => panic!("{what}: {err}"),
        _ => {
            kill_tree(pid as u32);
            panic!(
                "{what} did not finish within {} s under ptrace: killed it and every process it started",
                timeout.as_secs()
            );
        }
    };
    let outcome = Outcome {
        code,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    no_panic(&outcome);
    outcome
}

/// What the tracer thread tells the test.
enum Report {
    Started(i32, Option<Receiver<String>>, Option<Receiver<String>>),
    Ended(Option<i32>),
    Failed(String),
}

/// Follow the traced process `pid` to its end: its exit code, or None when
/// a signal killed it.
fn trace(pid: i32, delay: Duration) -> Result<Option<i32>, String> {
    // A traced process stops after its exec: the first thing to wait for.
    let status = wait(pid)?;
    if !libc::WIFSTOPPED(status) {
        return Err(format!("it did not stop after exec (status {status:#x})"));
    }
    // Report the processes and threads it starts, its execs, and system
    // calls as such; kill it if this thread ends without having seen it
    // end.
    let options = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_EXITKILL;
    request(libc::PTRACE_SETOPTIONS, pid, options as usize)?;
    // Until it starts the container it runs at full speed (PTRACE_CONT
    // stops only for signals and events); while the container runs it
    // stops at every system call (PTRACE_SYSCALL), and is held at each
    // entry; once the container has ended, full speed again. `container`
    // is the container's PID and start time while it runs.
    let mut container = None;
    // A system call's stops alternate: entry, exit. Slowing starts inside
    // the fork, whose entry has passed: the next stop is an exit.
    let mut entering = false;
    let mut signal = 0;
    loop {
        if container.is_some_and(|(pid, started)| !alive(pid, started)) {
            container = None;
        }
        let resume = if container.is_some() {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        request(resume, pid, signal)?;
        signal = 0;
        let status = wait(pid)?;
        if libc::WIFEXITED(status) {
            return Ok(Some(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(None);
        }
        let stopped_by = libc::WSTOPSIG(status);
        let event = status >> 16;
        if stopped_by == libc::SIGTRAP | 0x80 {
            if entering {
                std::thread::sleep(delay);
            }
            entering = !entering;
        } else if matches!(
            event,
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE
        ) {
            // The new process or thread starts traced and stopped: let it
            // go, untraced. The container's process starts the slowing.
            let mut new: libc::c_ulong = 0;
            request(
                libc::PTRACE_GETEVENTMSG,
                pid,
                &mut new as *mut libc::c_ulong as usize,
            )?;
            let new = new as i32;
            let status = wait(new)?;
            if libc::WIFSTOPPED(status) {
                request(libc::PTRACE_DETACH, new, 0)?;
            }
            if is_container(pid, new) {
                container = Some((new as u32, start_time(new as u32)));
                entering = false;
            }
        } else if event == 0 && stopped_by != libc::SIGTRAP && !group_stop(pid) {
            // A signal on its way to the process: deliver it.
            signal = stopped_by as usize;
        }
    }
}

/// Whether `new`, just started by `pid`, is a container: a process in a
/// PID or mount namespace of its own, not a helper program such as those
/// mydocker may run before (they share its namespaces), nor a thread.
fn is_container(pid: i32, new: i32) -> bool {
    let namespace =
        |pid: i32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    ["pid", "mnt"]
        .iter()
        .any(|kind| namespace(pid, kind) != namespace(new, kind))
}

/// Whether the process is stopped by SIGSTOP and the like (a group-stop,
/// which has no signal to deliver) rather than about to receive a signal.
fn group_stop(pid: i32) -> bool {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
    request(libc::PTRACE_GETSIGINFO, pid, info.as_mut_ptr() as usize).is_err()
}

/// waitpid(pid) for a traced process or thread.
fn wait(pid: i32) -> Result<i32, String> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only `status`.
        match unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(format!("waitpid({pid}): {}", io::Error::last_os_error())),
            _ => return Ok(status),
        }
    }
}

/// One ptrace(2) request; `data` is a number or an address, as the request
/// takes it.
fn request(request: libc::c_uint, pid: i32, data: usize) -> Result<(), String> {
    // SAFETY: every request made here writes at most through `data`, which
    // then points at a live local of the right type.
    let (addr, data) = (
        std::ptr::null_mut::<libc::c_void>(),
        data as *mut libc::c_void,
    );
    match unsafe { libc::ptrace(request, pid, addr, data) } {
        -1 => Err(format!(
            "ptrace({request}, {pid}): {}",
            io::Error::last_os_error()
        )),
        _ => Ok(()),
    }
}
