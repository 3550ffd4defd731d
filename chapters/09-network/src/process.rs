//! Signalling a process that only a record remembers.
//!
//! A PID names a process only while it lives, and until its parent reaps
//! it: then the kernel may give the number to the next process that
//! starts. `kill(pid)` after reading a PID from a file may so reach an
//! unrelated process. Two things make it safe:
//! - A pidfd (pidfd_open(2), Linux 5.3) is a descriptor of one process,
//!   not of a number: a signal sent through it never reaches another, and
//!   poll(2) says when that process has ended.
//! - The process's start time (the 22nd field of /proc/PID/stat, in clock
//!   ticks since boot) tells whether the PID still belongs to the process
//!   the record was written for. Checked *after* the pidfd is open, the
//!   pidfd is known to be of the right process.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

// ANCHOR: process
/// One process, held through a pidfd.
pub struct Process {
    pidfd: OwnedFd,
}

impl Process {
    // ANCHOR: verified
    /// Process `pid`, if it is still the one that started at `started`;
    /// None once it has ended (or its PID belongs to another process).
    pub fn verified(pid: i32, started: u64) -> Result<Option<Process>> {
        let pidfd = match pidfd_open(pid) {
            Ok(pidfd) => pidfd,
            Err(Errno::ESRCH) => return Ok(None),
            Err(err) => return Err(err).context(format!("pidfd_open({pid})")),
        };
        // Read after pidfd_open: if the PID is still the same process
        // now, the pidfd is of that process, whatever happens next.
        if start_time(pid) != Some(started) {
            return Ok(None);
        }
        Ok(Some(Process { pidfd }))
    }
    // ANCHOR_END: verified

    /// Our own child `pid`: not reaped yet, so its PID is still its own.
    pub fn child(pid: i32) -> Result<Process> {
        let pidfd =
            pidfd_open(pid).with_context(|| format!("pidfd_open({pid})"))?;
        Ok(Process { pidfd })
    }

    // ANCHOR: signal
    /// Send `signal`; a process that has ended meanwhile is not an error.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        // SAFETY: pidfd_send_signal(2) reads only its arguments; no
        // siginfo is passed.
        let sent = Errno::result(unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        });
        match sent {
            Ok(_) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => {
                Err(err).context(format!("pidfd_send_signal({signal})"))
            }
        }
    }
    // ANCHOR_END: signal

    // ANCHOR: wait_exit
    /// Wait until the process has ended, at most `timeout`; whether it has.
    pub fn wait_exit(&self, timeout: Duration) -> Result<bool> {
        // `stop -t 99999999999`: as good as for ever.
        let timeout = timeout.min(Duration::from_secs(100 * 365 * 86_400));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms.max(0) as u16)) {
                // A pidfd is readable once its process has ended.
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) if left.is_zero() => return Ok(false),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("poll(pidfd)"),
            }
        }
    }
    // ANCHOR_END: wait_exit

    /// Whether the process still runs (one that has ended but is not
    /// reaped yet, a zombie, has ended).
    pub fn alive(&self) -> Result<bool> {
        Ok(!self.wait_exit(Duration::ZERO)?)
    }

    pub fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }
}
// ANCHOR_END: process

fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open(2) takes two integers and returns a new
    // descriptor, which the OwnedFd then owns.
    let fd =
        Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// ANCHOR: start_time
/// When process `pid` started, in clock ticks since boot; None if there
/// is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMMAND) STATE PPID ...": the command may hold spaces and
    // parentheses, so count the fields from the last ')'. It is followed
    // by field 3; the start time is field 22.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}
// ANCHOR_END: start_time

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_read_and_checked() {
        let me = std::process::id() as i32;
        let started = start_time(me).expect("our own start time");
        assert!(Process::verified(me, started).unwrap().is_some());
        assert!(Process::verified(me, started + 1).unwrap().is_none());
    }
}
