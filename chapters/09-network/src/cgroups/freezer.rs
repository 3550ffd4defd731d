//! The freezer: stop every process of a cgroup at once, and let them go on
//! later as if nothing had happened.
//!
//! Unlike SIGSTOP, which a process's parent sees and which reaches one
//! process at a time, the freezer stops the whole group between two
//! instructions, with no signal and no trace: `commit` copies a container
//! that cannot change under it, as `docker commit` pauses one.
//!
//! - v1: the `freezer` hierarchy. Writing FROZEN into `freezer.state`
//!   starts it; the file reads FREEZING until every process has stopped,
//!   then FROZEN. THAWED lets them go.
//! - v2: every cgroup but the root has `cgroup.freeze`. Writing 1 starts
//!   it; `cgroup.events` says `frozen 1` once every process has stopped.
//!   0 lets them go.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, read as read_fd, setsid, ForkResult, Pid};

use super::{read, write, Layout, PARENT};
use crate::id;
use crate::signals;

/// The v1 hierarchy with the freezer.
pub const FREEZER: &str = "freezer";

/// How long the processes have to stop. One in an uninterruptible sleep
/// (a hung NFS server, say) may never stop: then we give up and thaw.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

// ANCHOR: freezer
/// The freezer of one container's cgroup.
pub struct Freezer {
    dir: PathBuf,
    v2: bool,
}

impl Freezer {
    /// The freezer of container `id`: the cgroup `run` made for it.
    pub fn of_container(id: &str) -> Result<Freezer> {
        let (dir, v2) = match Layout::detect()? {
            Layout::V1 { hierarchies, .. } => {
                let freezer =
                    hierarchies.iter().find(|h| h.has(FREEZER)).context(
                        "this host's cgroup v1 has no freezer hierarchy: \
                         the container cannot be paused",
                    )?;
                (freezer.mount.join(PARENT).join(id), false)
            }
            Layout::V2 { root } => (root.join(PARENT).join(id), true),
        };
        if !dir.is_dir() {
            bail!(
                "container {} has no cgroup {}: it is starting or ending \
                 (try again), or an older mydocker started it",
                id::short(id),
                dir.display()
            );
        }
        Ok(Freezer { dir, v2 })
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
    // ANCHOR_END: freezer

    // ANCHOR: freeze
    /// Freeze the cgroup, and wait until the kernel says that every
    /// process has stopped. Dropping the result thaws it; so does the
    /// guard, a process of ours, if we die first.
    pub fn freeze(&self) -> Result<Frozen<'_>> {
        // The guard first: whatever happens from here, the cgroup thaws.
        let frozen = Frozen {
            freezer: self,
            guard: Guard::start(self)?,
        };
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            // v1 stops the processes it can and says FREEZING until it
            // has them all; writing FROZEN again makes it try the others
            // again (runc does the same). On v2 one write is enough, and a
            // second one changes nothing.
            if self.v2 {
                write(&self.dir.join("cgroup.freeze"), "1")?;
            } else {
                write(&self.dir.join("freezer.state"), "FROZEN")?;
            }
            if self.is_frozen()? {
                return Ok(frozen);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the container's processes did not all stop within \
                     {} s",
                    self.dir.display(),
                    FREEZE_TIMEOUT.as_secs()
                );
            }
            signals::check_interrupted()?;
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether every process of the cgroup has stopped.
    fn is_frozen(&self) -> Result<bool> {
        Ok(if self.v2 {
            read(&self.dir.join("cgroup.events"))?
                .lines()
                .any(|line| line == "frozen 1")
        } else {
            read(&self.dir.join("freezer.state"))?.trim() == "FROZEN"
        })
    }

    /// Let the processes go on. A cgroup that is gone has nobody to thaw:
    /// the container ended, and `run` removed it.
    fn thaw(&self) -> Result<()> {
        let thawed = if self.v2 {
            write(&self.dir.join("cgroup.freeze"), "0")
        } else {
            write(&self.dir.join("freezer.state"), "THAWED")
        };
        match thawed {
            Err(err) if super::errno(&err) == Some(Errno::ENOENT) => Ok(()),
            thawed => thawed,
        }
    }
}
// ANCHOR_END: freeze

// ANCHOR: frozen
/// A frozen cgroup: thawed when this is dropped, however we leave the
/// function that froze it (an error, Ctrl-C, a panic).
pub struct Frozen<'a> {
    freezer: &'a Freezer,
    guard: Guard,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.freezer.thaw() {
            eprintln!("mydocker: warning: thaw: {err:#}");
        }
        self.guard.release();
    }
}
// ANCHOR_END: frozen

// ANCHOR: guard
/// A child process that thaws the cgroup once we are gone.
///
/// Nothing in the cgroup interface thaws by itself: killed with SIGKILL,
/// `commit` would leave the container frozen for good. So the guard waits
/// on a pipe whose only write end is ours. The kernel closes that end when
/// we exit, however we exit, and the guard's read returns: it thaws, and
/// exits too. It also inherits our descriptors, the lock that lets one
/// commit at a time freeze the container among them: the next commit
/// waits until the guard has thawed, and exited.
struct Guard {
    pid: Pid,
    /// Our end of the pipe; None once released.
    pipe: Option<OwnedFd>,
}

impl Guard {
    fn start(freezer: &Freezer) -> Result<Guard> {
        // O_CLOEXEC: no program that we start may keep the write end open.
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        // SAFETY: mydocker has a single thread, so the child starts with
        // everything in a consistent state.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop(write_end);
                // A session of its own: Ctrl-C in the terminal, or a kill
                // of our process group, does not reach it.
                let _ = setsid();
                let mut byte = [0u8; 1];
                // Returns 0 (end of file) when the write end is closed.
                while read_fd(read_end.as_raw_fd(), &mut byte)
                    == Err(Errno::EINTR)
                {}
                let _ = freezer.thaw();
                // SAFETY: _exit ends the child without running the
                // parent's clean-ups (its Drops) a second time.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => Ok(Guard {
                pid: child,
                pipe: Some(write_end),
            }),
        }
    }

    /// We are done: close our end, and reap the guard, which exits.
    fn release(&mut self) {
        if self.pipe.take().is_some() {
            let _ = waitpid(self.pid, None);
        }
    }
}
// ANCHOR_END: guard

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The v2 side, which the stage tests cannot reach on a cgroup v1 host:
    /// a hybrid host also mounts a v2 tree (without controllers), and
    /// cgroup.freeze needs none. (Needs root, as the stage tests do.)
    #[test]
    fn a_v2_cgroup_freezes_and_thaws() {
        let root = match Layout::detect().unwrap() {
            Layout::V1 { unified, .. } => {
                unified.expect("a cgroup2 mount, to test the v2 freezer")
            }
            Layout::V2 { root } => root,
        };
        let dir = root.join(format!("mydocker-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let mut sleep = Command::new("sleep").arg("10").spawn().unwrap();
        let freezer = Freezer { dir, v2: true };
        let frozen = (|| -> Result<bool> {
            write(&freezer.dir.join("cgroup.procs"), &sleep.id().to_string())?;
            write(&freezer.dir.join("cgroup.freeze"), "1")?;
            for _ in 0..1000 {
                if freezer.is_frozen()? {
                    freezer.thaw()?;
                    for _ in 0..1000 {
                        if !freezer.is_frozen()? {
                            return Ok(true);
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                    return Ok(false);
                }
                thread::sleep(Duration::from_millis(1));
            }
            Ok(false)
        })();
        let _ = sleep.kill();
        let _ = sleep.wait();
        std::fs::remove_dir(&freezer.dir).unwrap();
        assert!(frozen.unwrap(), "frozen within a second, then thawed");
    }
}
