//! Ctrl-C while transcripts run: note it, so that the wait in progress
//! stops and the sandbox is taken down on the way out, instead of leaving a
//! tmux server and its shells behind. A second Ctrl-C exits at once (the
//! sandbox's tmux server then dies with us, see `sandbox.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// While alive, SIGINT, SIGTERM and SIGHUP only set a flag.
pub struct Guard {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

pub fn catch() -> Guard {
    INTERRUPTED.store(false, Ordering::SeqCst);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let previous = SIGNALS
        .iter()
        // SAFETY: the handler only touches an atomic (and may call _exit).
        .map(|&signal| (signal, unsafe { libc::signal(signal, handler) }))
        .collect();
    Guard { previous }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for &(signal, handler) in &self.previous {
            // SAFETY: puts back the disposition `catch` replaced.
            unsafe { libc::signal(signal, handler) };
        }
    }
}

/// Fail if a signal asked us to stop.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
