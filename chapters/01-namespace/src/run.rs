//! `mydocker run`: the parent's side of starting a container.
//!
//! The parent creates the container's first process in new namespaces, tells
//! it what to run through a pipe, then waits and reports how it ended.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid, Uid};

use crate::cli::RunArgs;
use crate::config::ContainerConfig;
use crate::{namespace, signals};

// ANCHOR: run
pub fn run(args: RunArgs) -> Result<i32> {
    if !Uid::effective().is_root() {
        bail!(
            "run needs root to create namespaces: try `sudo mydocker run ...`"
        );
    }
    if args.tty && args.interactive && !std::io::stdin().is_terminal() {
        bail!(
            "-t needs a terminal on standard input: \
             drop -t when you pipe into the container"
        );
    }
    // From here on a signal never kills mydocker half-way: it is passed
    // on to the container (and dropped while there is none yet).
    signals::install()?;
    let config = ContainerConfig {
        command: args.command,
    };

    // O_CLOEXEC: no process that we start keeps a copy of these ends by
    // accident. init sees EOF only once *every* write end is closed.
    let (pipe_read, pipe_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    let stdin = if args.interactive {
        None
    } else {
        Some(OwnedFd::from(
            File::open("/dev/null").context("open(/dev/null)")?,
        ))
    };

    let child = namespace::spawn_init(&pipe_read, stdin.as_ref())?;
    signals::forward_to(child);
    drop(pipe_read); // the child has its copy

    // Everything the parent must set up before the command starts goes
    // here: init is blocked reading the pipe until we close it.
    let sent = send_config(pipe_write, &config);

    let code = wait_for(child)?;
    signals::stop_forwarding();
    sent?;
    Ok(code)
}
// ANCHOR_END: run

// ANCHOR: send_config
/// Write the configuration as JSON and close the pipe, which releases init.
fn send_config(pipe: OwnedFd, config: &ContainerConfig) -> Result<()> {
    let mut pipe = File::from(pipe);
    serde_json::to_writer(&mut pipe, config)
        .context("write to the init pipe")?;
    pipe.flush().context("write to the init pipe")?;
    Ok(()) // dropping `pipe` closes it: init reads end-of-file
}
// ANCHOR_END: send_config

// ANCHOR: wait
/// Wait until the container's first process ends and turn how it ended into
/// an exit code, the shell's way: its own code, or 128 + the signal number.
fn wait_for(child: Pid) -> Result<i32> {
    loop {
        match waitpid(child, None)
            .with_context(|| format!("waitpid({child})"))?
        {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, signal, _) => {
                return Ok(128 + signal as i32)
            }
            // Stopped or continued: only reported with WUNTRACED/WCONTINUED,
            // which we do not ask for; the match must still cover them.
            _ => continue,
        }
    }
}
// ANCHOR_END: wait
