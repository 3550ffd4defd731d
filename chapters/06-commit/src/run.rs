//! `mydocker run`: the parent's side of starting a container.
//!
//! The parent creates the container's first process in new namespaces, tells
//! it what to run through a pipe, then waits and reports how it ended.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid, Uid};

use crate::cgroups::{Cgroup, Layout, Plan};
use crate::cli::RunArgs;
use crate::config::ContainerConfig;
use crate::container::{self, Container};
use crate::id;
use crate::limits::{self, Limits};
use crate::layers::Layers;
use crate::paths::Paths;
use crate::volumes;
use crate::{namespace, signals};

// ANCHOR: run
pub fn run(args: RunArgs, paths: &Paths) -> Result<i32> {
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
    // From here on a signal never kills mydocker half-way: it is passed on
    // to the container or, before there is one, makes `run` stop and clean
    // up.
    signals::install()?;
    // ANCHOR: plan
    // Check every limit and plan the cgroup while nothing exists yet: a bad
    // option, or a controller the host lacks, leaves nothing behind.
    let limits = Limits::from_args(&args, &limits::online_cpus()?)?;
    let id = id::new_id();
    let plan = Plan::new(&Layout::detect()?, &id, &limits)?;
    // ANCHOR_END: plan
    let specs = volumes::parse_all(&args.volumes)?;
    // ANCHOR: container
    // The container's directory, on the image's shared copy; dropping
    // `container` when run() returns, whichever way, removes it again.
    paths.create_root()?;
    // First remove what killed `run`s left behind.
    match container::remove_dead(paths) {
        // Ctrl-C: stop here, as anywhere before the container starts.
        Err(err) if err.is::<signals::Interrupted>() => return Err(err),
        // Something we could not clean must not stop a new container.
        Err(err) => eprintln!("mydocker: warning: {err:#}"),
        Ok(()) => {}
    }
    // ANCHOR: layer
    let layers = Layers::lock(paths)?;
    let layer = layers.get(&args.image)?;
    // ANCHOR: volumes
    // Every mount point, checked against the image before anything is
    // made; then the missing host directories are made.
    volumes::check(&specs, &layer.dir)?;
    let volumes = volumes::prepare(paths, &specs)?;
    // ANCHOR_END: volumes
    // Made while `layers/` is locked: from now on the container's `layer`
    // file keeps its copy from being removed.
    let named = volumes::names(&specs);
    let container = Container::create(paths, &id, &layer, &named)?;
    // Then the copies nobody uses any more: this image's previous one, say.
    if let Err(err) = layers.remove_unused() {
        if err.is::<signals::Interrupted>() {
            return Err(err);
        }
        eprintln!("mydocker: warning: {err:#}");
    }
    drop(layers);
    // ANCHOR_END: layer
    // ANCHOR_END: container
    let config = ContainerConfig {
        command: args.command,
        rootfs: container.rootfs(),
        lower: container.lower(),
        hostname: container.short_id().to_string(),
        env: environment(container.short_id(), args.tty),
        volumes,
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
    // ANCHOR: interrupted
    // A signal that came before forward_to found no container to go to:
    // honour it now, before the command starts.
    if let Err(err) = signals::check_interrupted() {
        return Err(abort(child, err.into()));
    }
    // ANCHOR_END: interrupted
    drop(pipe_read); // the child has its copy

    // Everything the parent must set up before the command starts goes
    // here: init is blocked reading the pipe until we close it.
    // ANCHOR: attach
    // The child is in its cgroup, limits set, before it runs a single
    // instruction of the user's command: no fork can escape, no byte of
    // memory is allocated outside the limit.
    let mut cgroup = match Cgroup::create(plan) {
        Ok(cgroup) => cgroup,
        Err(err) => return Err(abort(child, err)),
    };
    if let Err(err) = cgroup.add(child) {
        // abort() runs first, then `cgroup` is dropped, which removes it:
        // a cgroup can only be removed once no process is left in it.
        return Err(abort(child, err));
    }
    // ANCHOR_END: attach
    let sent = send_config(pipe_write, &config);

    let code = wait_for(child)?;
    // ANCHOR: cleanup
    // The container has ended (however: exit, signal, OOM kill): its
    // cgroup goes too. Failing to remove it does not change the exit code.
    if let Err(err) = cgroup.remove() {
        eprintln!("mydocker: warning: {err:#}");
    }
    // ANCHOR_END: cleanup
    sent?;
    Ok(code)
}
// ANCHOR_END: run

// ANCHOR: environment
/// A clean environment for the command, as Docker gives it: the host's
/// variables (its PATH, HOME, SSH_AUTH_SOCK...) are none of its business.
fn environment(hostname: &str, tty: bool) -> Vec<String> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            .to_string(),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".to_string(),
    ];
    if tty {
        env.push("TERM=xterm".to_string());
    }
    env
}
// ANCHOR_END: environment

// ANCHOR: send_config
/// Write the configuration as JSON and close the pipe, which releases init.
fn send_config(pipe: OwnedFd, config: &ContainerConfig) -> Result<()> {
    // Serialized first, then written at once: serde_json writes each token
    // as it goes, and every small write to a pipe wakes init up again.
    let json = serde_json::to_vec(config).context("serialize the config")?;
    let mut pipe = File::from(pipe);
    pipe.write_all(&json).context("write to the init pipe")?;
    Ok(()) // dropping `pipe` closes it: init reads end-of-file
}
// ANCHOR_END: send_config

// ANCHOR: abort
/// Stop a container that could not be set up: kill its init, which is still
/// waiting for its orders, and reap it. Returns the error that stopped it.
fn abort(child: Pid, err: anyhow::Error) -> anyhow::Error {
    signals::stop_forwarding();
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    err
}
// ANCHOR_END: abort

// ANCHOR: wait
/// Wait until the container's first process ends and turn how it ended into
/// an exit code, the shell's way: its own code, or 128 + the signal number.
fn wait_for(child: Pid) -> Result<i32> {
    // WNOWAIT: learn that it ended, but leave it a zombie. Until it is
    // reaped its PID cannot be reused, so a signal forwarded meanwhile can
    // only reach the dead container, never an unrelated process.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    let code = loop {
        match waitid(Id::Pid(child), flags)
            .with_context(|| format!("waitid({child})"))?
        {
            WaitStatus::Exited(_, code) => break code,
            WaitStatus::Signaled(_, signal, _) => break 128 + signal as i32,
            // Stopped or continued: only reported with WSTOPPED/WCONTINUED,
            // which we do not ask for; the match must still cover them.
            _ => continue,
        }
    };
    signals::stop_forwarding();
    waitpid(child, None).with_context(|| format!("waitpid({child})"))?;
    Ok(code)
}
// ANCHOR_END: wait
