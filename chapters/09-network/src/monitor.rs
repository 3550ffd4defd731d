//! The monitor: the process that is a container's parent for its whole
//! life, the part that containerd-shim and conmon play for Docker and
//! Podman. It waits for the container, keeps its log, writes in its
//! record when it started and how it ended, and releases what a stopped
//! container no longer holds.
//!
//! A foreground `run` is its container's monitor. `run -d` forks one, in a
//! session of its own, and returns once the monitor says that the command
//! runs (or why it could not start); the monitor lives on.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, fork, pipe2, read, setsid, ForkResult, Pid};

use crate::container::{self, Container};
use crate::logs::{Log, Stream};
use crate::paths::Paths;
use crate::process::{self, Process};
use crate::record::{Record, State};

/// How a container runs: `-d`, `-i`, `-t`.
#[derive(Clone, Copy)]
pub struct How {
    pub detach: bool,
    pub interactive: bool,
    pub tty: bool,
}

// ANCHOR: detach
/// Which side of the fork we are on.
pub enum Detached {
    /// The `run -d` (or `start`) that forked the monitor.
    Caller(Caller),
    /// The monitor, which tells the caller how the start went.
    Monitor(Notify),
}

// ANCHOR: fork_monitor
/// Fork the monitor of a container that runs in the background. It keeps
/// only the descriptors in `keep` (the container's lock) and its own.
pub fn detach(keep: &[RawFd]) -> Result<Detached> {
    let (theirs, ours) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    // SAFETY: mydocker has a single thread, so the child can run Rust
    // code: no lock can be held by a thread that does not exist there.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => Ok(Detached::Caller(Caller {
            pipe: File::from(theirs),
            monitor: child,
        })),
        ForkResult::Child => {
            drop(theirs);
            // A session of its own: no controlling terminal, so closing
            // the caller's terminal sends it no SIGHUP, and Ctrl-C there
            // (SIGINT to the terminal's foreground process group) misses
            // it. fork made sure that it leads no process group, which
            // setsid(2) requires.
            setsid().context("setsid")?;
            // Nothing of the caller's: `run -d ... | cat` must end when
            // `run` does, not when the container does.
            let null = File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("open /dev/null")?;
            for fd in 0..3 {
                dup2(null.as_raw_fd(), fd).context("dup2(/dev/null)")?;
            }
            // Nor any other descriptor of the caller's: one who waits for
            // the end of a pipe it gave `run -d` would wait for the
            // container's end instead.
            let mut keep = keep.to_vec();
            keep.extend([null.as_raw_fd(), ours.as_raw_fd()]);
            close_others(&keep)?;
            Ok(Detached::Monitor(Notify { pipe: Some(ours) }))
        }
    }
}

/// Close every descriptor above 2 but those in `keep`.
fn close_others(keep: &[RawFd]) -> Result<()> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context("read /proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // The directory's own descriptor is closed already: EBADF.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}
// ANCHOR_END: fork_monitor

// ANCHOR: caller
/// The caller's end: waits for the monitor's word.
pub struct Caller {
    pipe: File,
    monitor: Pid,
}

impl Caller {
    /// Wait until the command runs, then say it: the ID on stdout, exit
    /// 0. Or say why it could not start, and exit as a foreground run
    /// would have (127 for an unknown command, say).
    pub fn wait_started(mut self, id: &str, say: &str) -> Result<i32> {
        let mut word = String::new();
        self.pipe
            .read_to_string(&mut word)
            .context("read from the monitor")?;
        match word.split_once('\n') {
            Some(("started", _)) => {
                crate::lifecycle::say(say);
                Ok(0)
            }
            Some((code, message)) if code.parse::<i32>().is_ok() => {
                // The monitor exits once it has said this: reap it.
                let _ = waitpid(self.monitor, None);
                eprint!("{message}");
                Ok(code.parse().unwrap_or(125))
            }
            _ => {
                let _ = waitpid(self.monitor, None);
                bail!("the monitor of container {id} ended before it said why")
            }
        }
    }
}

// ANCHOR_END: caller

// ANCHOR: notify
/// The monitor's end: tells the caller once, then closes.
pub struct Notify {
    pipe: Option<OwnedFd>,
}

impl Notify {
    fn started(&mut self) {
        self.say("started\n");
    }

    /// Why the container could not start: `message` is what init or the
    /// monitor would have printed.
    pub fn failed(&mut self, code: i32, message: &str) {
        self.say(&format!("{code}\n{message}"));
    }

    fn say(&mut self, word: &str) {
        // Said once: closing the pipe tells the caller that was all.
        if let Some(pipe) = self.pipe.take() {
            let _ = File::from(pipe).write_all(word.as_bytes());
        }
    }
}
// ANCHOR_END: notify
// ANCHOR_END: detach

// ANCHOR: output
/// The container's stdout and stderr: pipes that the monitor reads, to
/// write in the log (and, for a foreground run, to copy to its own).
pub struct Output {
    /// Their read ends (ours) and write ends (the container's).
    pub ours: [Option<OwnedFd>; 2],
    pub theirs: [Option<OwnedFd>; 2],
}

impl Output {
    /// Pipes, or, for `run -t`, nothing: the command writes to the
    /// terminal itself, and the log stays empty.
    pub fn new(how: How) -> Result<Output> {
        if how.tty && !how.detach {
            return Ok(Output {
                ours: [None, None],
                theirs: [None, None],
            });
        }
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        Ok(Output {
            ours: [Some(out_r), Some(err_r)],
            theirs: [Some(out_w), Some(err_w)],
        })
    }
}
// ANCHOR_END: output

// ANCHOR: watch
/// Everything the monitor watches while its container runs.
pub struct Watch<'a> {
    pub child: Pid,
    /// Our end of init's pipe: init writes why it failed into it, or
    /// nothing. It closes when init becomes the command (close-on-exec)
    /// or when init ends.
    pub report: Option<OwnedFd>,
    pub output: [Option<OwnedFd>; 2],
    pub echo: bool,
    pub record: &'a mut Record,
    pub container: &'a Container,
    pub notify: Option<&'a mut Notify>,
}

impl Watch<'_> {
    /// Until the container has ended and said all it had to say: record
    /// that it runs, log its output, and return what init reported.
    pub fn watch(mut self) -> Result<Option<String>> {
        let mut log = match self.output.iter().any(Option::is_some) {
            true => Some(Log::open(self.container.dir())?),
            false => None,
        };
        let pidfd = Process::child(self.child.as_raw())?;
        let mut report = self.report.take();
        let mut message = Vec::new();
        let mut ended = false;
        let mut buffer = vec![0u8; 64 * 1024];
        while report.is_some()
            || self.output.iter().any(Option::is_some)
            || !ended
        {
            // ANCHOR: watch_poll
            // Poll what is still open; a slot that is closed polls nothing.
            let fds = [
                report.as_ref().map(|fd| fd.as_fd()),
                self.output[0].as_ref().map(|fd| fd.as_fd()),
                self.output[1].as_ref().map(|fd| fd.as_fd()),
                (!ended).then(|| pidfd.pidfd().as_fd()),
            ];
            let mut polled: Vec<(usize, PollFd)> = fds
                .iter()
                .enumerate()
                .filter_map(|(i, fd)| {
                    fd.map(|fd| (i, PollFd::new(fd, PollFlags::POLLIN)))
                })
                .collect();
            let mut raw: Vec<PollFd> = polled.iter().map(|(_, p)| *p).collect();
            match poll(&mut raw, PollTimeout::NONE) {
                Ok(_) => {}
                // A signal, which the handler forwarded: go on.
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err).context("poll"),
            }
            let ready: Vec<usize> = polled
                .drain(..)
                .zip(&raw)
                .filter(|(_, p)| p.any().unwrap_or(true))
                .map(|((i, _), _)| i)
                .collect();
            // ANCHOR_END: watch_poll
            // ANCHOR: watch_ready
            for slot in ready {
                match slot {
                    0 => {
                        let Some(fd) = &report else { continue };
                        let n = read_some(fd, &mut buffer)?;
                        message.extend_from_slice(&buffer[..n]);
                        if n == 0 {
                            report = None;
                            if message.is_empty() {
                                self.running()?;
                            }
                        }
                    }
                    1 | 2 => {
                        let stream = [Stream::Stdout, Stream::Stderr][slot - 1];
                        let Some(fd) = &self.output[slot - 1] else {
                            continue;
                        };
                        let n = read_some(fd, &mut buffer)?;
                        if n == 0 {
                            self.output[slot - 1] = None;
                            continue;
                        }
                        if let Some(writer) = &mut log {
                            // A full disk must not stop the container:
                            // its output is then not logged any more.
                            if let Err(err) = writer.write(stream, &buffer[..n])
                            {
                                eprintln!("mydocker: warning: {err:#}");
                                log = None;
                            }
                        }
                        if self.echo && !echo(stream, &buffer[..n]) {
                            // Our reader is gone (`run ... | head -1`):
                            // so is the command's, as without us.
                            self.output[slot - 1] = None;
                        }
                    }
                    _ => ended = true,
                }
            }
            // ANCHOR_END: watch_ready
        }
        if let Some(log) = &mut log {
            if let Err(err) = log.flush() {
                eprintln!("mydocker: warning: {err:#}");
            }
        }
        Ok((!message.is_empty())
            .then(|| String::from_utf8_lossy(&message).into_owned()))
    }

    // ANCHOR: running
    /// The command runs: say so in the record, and to the caller.
    fn running(&mut self) -> Result<()> {
        let pid = self.child.as_raw();
        self.record.state = State::Running;
        self.record.pid = Some(pid);
        self.record.pid_started = process::start_time(pid);
        self.record.started = Some(SystemTime::now());
        self.record.save(self.container.dir())?;
        if let Some(notify) = self.notify.as_deref_mut() {
            notify.started();
        }
        Ok(())
    }
    // ANCHOR_END: running
}

/// read(2), again after a signal.
fn read_some(fd: &OwnedFd, buffer: &mut [u8]) -> Result<usize> {
    loop {
        match read(fd.as_raw_fd(), buffer) {
            Err(Errno::EINTR) => continue,
            // A peer that closed with data unread gives ECONNRESET.
            Err(Errno::ECONNRESET) => return Ok(0),
            other => return other.context("read the container's output"),
        }
    }
}

/// Copy to our own stdout or stderr; false once that is closed.
fn echo(stream: Stream, bytes: &[u8]) -> bool {
    let written = match stream {
        Stream::Stdout => {
            io::stdout().write_all(bytes).and(io::stdout().flush())
        }
        Stream::Stderr => io::stderr().write_all(bytes),
    };
    written.is_ok()
}
// ANCHOR_END: watch

// ANCHOR: finish
/// The container has ended with `code`, and its cgroup is gone: write it
/// in the record, or, with `--rm`, remove the container.
pub fn finish(
    paths: &Paths,
    mut container: Container,
    record: &mut Record,
    code: i32,
) -> Result<()> {
    // From now on the record says what becomes of the directory.
    container.kept = true;
    if record.auto_remove {
        return container::remove(paths, &record.id);
    }
    record.state = State::Exited;
    record.exit_code = Some(code);
    record.finished = Some(SystemTime::now());
    record.pid = None;
    record.pid_started = None;
    record.save(container.dir())
}
// ANCHOR_END: finish
