//! Passing the signals that mydocker receives on to the container.
//!
//! `kill <mydocker>` or Ctrl-C should reach the container's process, the
//! way `docker run` forwards signals. (Whether the process dies of it is its
//! own business: a PID 1 without a handler ignores SIGTERM and SIGINT.)
//! Every signal is forwarded, the second as the first: like Docker's CLI,
//! mydocker never gives up on a container that ignores them. SIGKILL cannot
//! be caught, so it cannot be forwarded: for that case, see namespace.rs.
//!
//! A signal that comes before there is a command to receive it stops
//! everything instead: `run` and init both catch it, and the command never
//! starts.

use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{
    sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal,
};
use nix::unistd::Pid;

// ANCHOR: forward
// ANCHOR: handler
/// The container's PID as the host sees it; 0 until it is known.
static CONTAINER: AtomicI32 = AtomicI32::new(0);

/// The signal that arrived while there was nobody to pass it to; 0 if none.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// The signals we forward.
const FORWARDED: [Signal; 3] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn forward(signal: libc::c_int) {
    // Only async-signal-safe calls here: atomics and kill(2). kill may set
    // errno, which the code we interrupted may be about to read: keep it.
    let errno = Errno::last_raw();
    let pid = CONTAINER.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and has no memory arguments.
        unsafe { libc::kill(pid, signal) };
    } else {
        INTERRUPTED.store(signal, Ordering::SeqCst);
    }
    Errno::set_raw(errno);
}
// ANCHOR_END: handler

// ANCHOR: install
/// Catch the forwarded signals from now on, before the child exists: with
/// their default action, they would kill mydocker before it could pass them
/// on.
pub fn install() -> Result<()> {
    // SA_RESTART: a wait(2) call interrupted by the signal resumes by itself.
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in FORWARDED {
        // SAFETY: the handler only performs async-signal-safe operations.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("sigaction({signal})"))?;
    }
    Ok(())
}

/// Send every forwarded signal to `pid` from now on.
pub fn forward_to(pid: Pid) {
    CONTAINER.store(pid.as_raw(), Ordering::SeqCst);
}

/// Stop forwarding, before the container is reaped: its PID may then soon
/// belong to an unrelated process.
pub fn stop_forwarding() {
    CONTAINER.store(0, Ordering::SeqCst);
}
// ANCHOR_END: install
// ANCHOR_END: forward

// ANCHOR: interrupted
/// A signal asked mydocker to stop before the command started: mydocker
/// exits with 128 + its number, as if it had ended the command.
#[derive(Debug)]
pub struct Interrupted(pub Signal);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "interrupted by {} before the container started", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// An error if a signal came while there was nobody to forward it to.
/// `run` checks right after `forward_to`, so a signal is either forwarded
/// or seen here; init checks right before it becomes the command.
pub fn check_interrupted() -> Result<(), Interrupted> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        n => Err(Interrupted(Signal::try_from(n).unwrap_or(Signal::SIGTERM))),
    }
}
// ANCHOR_END: interrupted
