//! `stop`, `start` and `rm`: a container over time.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Uid;

use crate::cgroups::{Layout, Plan};
use crate::container::{self, Container};
use crate::id;
use crate::monitor::How;
use crate::overlay;
use crate::paths::Paths;
use crate::process::Process;
use crate::record::{Record, State};
use crate::run;
use crate::signals;

/// How long a monitor may take to record a container's end once its
/// process is gone: it only reads what is left in the pipes, reaps,
/// removes the cgroup and renames a file.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(30);

// ANCHOR: each
/// Do `what` to each container that `names` name, saying each name that
/// went well on stdout, as Docker does, and each failure on stderr.
fn each(names: &[String], what: impl Fn(&str) -> Result<i32>) -> Result<i32> {
    root_only()?;
    // Ctrl-C while we wait stops the wait, not the container.
    signals::install()?;
    let mut failed = 0;
    for name in names {
        match what(name) {
            Ok(0) => {}
            Ok(code) => failed = code,
            Err(err) if err.is::<signals::Interrupted>() => return Err(err),
            Err(err) => {
                eprintln!("mydocker: {err:#}");
                failed = 125;
            }
        }
    }
    Ok(failed)
}

/// Print `name` on stdout; a reader that has gone (`| true`) is fine.
pub fn say(name: &str) {
    let _ = writeln!(std::io::stdout(), "{name}");
}

/// Containers are root's business: their records, their processes.
pub fn root_only() -> Result<()> {
    if !Uid::effective().is_root() {
        bail!("containers are root's: try sudo");
    }
    Ok(())
}
// ANCHOR_END: each

// ANCHOR: stop
/// `mydocker stop [-t SECS] CONTAINER...`
pub fn stop(paths: &Paths, names: &[String], secs: u64) -> Result<i32> {
    each(names, |name| {
        let id = container::find(paths, name)?;
        stop_id(paths, &id, Some(Duration::from_secs(secs)))?;
        say(name);
        Ok(0)
    })
}

// ANCHOR: stop_id
/// Stop container `id` and return once its end is recorded: SIGTERM,
/// then SIGKILL after `grace`; SIGKILL at once without one.
pub fn stop_id(paths: &Paths, id: &str, grace: Option<Duration>) -> Result<()> {
    let dir = paths.container(id);
    let deadline = Instant::now() + MONITOR_TIMEOUT;
    loop {
        if !container::is_running(paths, id)? {
            // Stopped already; if its monitor was killed, say so now.
            if let Some(_change) = container::change(paths, id)? {
                container::settle(paths, id)?;
            }
            return Ok(());
        }
        let Some(record) = Record::load_if_there(&dir)? else {
            return Ok(()); // a `--rm` container, removed meanwhile
        };
        if let (State::Running, Some(pid), Some(started)) =
            (record.state, record.pid, record.pid_started)
        {
            // None: it has ended, or its PID is another process's now.
            if let Some(process) = Process::verified(pid, started)? {
                kill(&process, grace)?;
            }
            // Its monitor writes how it ended, then lets the lock go.
            return wait_for_monitor(paths, id, deadline);
        }
        // Still starting, or its monitor is writing how it ended.
        if Instant::now() > deadline {
            bail!("container {} is neither running nor stopped", id::short(id));
        }
        signals::check_interrupted()?;
        thread::sleep(Duration::from_millis(10));
    }
}
// ANCHOR_END: stop_id

// ANCHOR: kill
/// SIGTERM, a grace period, SIGKILL: a PID 1 that ignores SIGTERM (one
/// without a handler for it does: see chapter 1) ends all the same.
fn kill(process: &Process, grace: Option<Duration>) -> Result<()> {
    if let Some(grace) = grace {
        process.signal(Signal::SIGTERM)?;
        if process.wait_exit(grace)? {
            return Ok(());
        }
    }
    process.signal(Signal::SIGKILL)?;
    // SIGKILL cannot be ignored; only a process stuck in the kernel (a
    // dead NFS server) takes long, and then there is nothing more to do.
    process.wait_exit(MONITOR_TIMEOUT)?;
    Ok(())
}
// ANCHOR_END: kill

// ANCHOR: wait_for_monitor
/// Wait until container `id`'s monitor has let its lock go: it has
/// recorded the container's end.
fn wait_for_monitor(paths: &Paths, id: &str, deadline: Instant) -> Result<()> {
    // A `--rm` container's monitor removes it: then it is gone.
    while paths.container(id).exists() && container::is_running(paths, id)? {
        if Instant::now() > deadline {
            bail!("the monitor of container {} does not end", id::short(id));
        }
        signals::check_interrupted()?;
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
// ANCHOR_END: wait_for_monitor
// ANCHOR_END: stop

// ANCHOR: start
/// `mydocker start CONTAINER...`
pub fn start(paths: &Paths, names: &[String]) -> Result<i32> {
    each(names, |name| {
        let id = container::find(paths, name)?;
        // Held until the new monitor says the command runs.
        let Some(_change) = container::change(paths, &id)? else {
            bail!("no such container: {name}");
        };
        if container::is_running(paths, &id)? {
            say(name); // running already: nothing to do
            return Ok(0);
        }
        container::settle(paths, &id)?;
        let dir = paths.container(&id);
        let Some(mut record) = Record::load_if_there(&dir)? else {
            bail!("no such container: {name}"); // it was `--rm`
        };
        let lock = container::take_for_monitor(paths, &id)?;
        // "Starting": if we are killed before the command runs, the next
        // command that looks settles it (and removes its cgroup).
        record.state = State::Created;
        record.save(&dir)?;
        // The same container, with a new cgroup, process and monitor.
        overlay::reuse(&dir)?;
        let container = Container::open(paths, &id, lock)?;
        let plan = Plan::new(&Layout::detect()?, &id, &record.limits)?;
        let how = How {
            detach: true,
            interactive: record.interactive,
            tty: false,
        };
        run::launch(paths, container, record, plan, how, name)
    })
}
// ANCHOR_END: start

// ANCHOR: rm
/// `mydocker rm [-f] CONTAINER...`
pub fn rm(paths: &Paths, names: &[String], force: bool) -> Result<i32> {
    each(names, |name| {
        let id = container::find(paths, name)?;
        loop {
            let Some(change) = container::change(paths, &id)? else {
                break; // a `--rm` container, removed by its monitor
            };
            if !container::is_running(paths, &id)? {
                container::remove(paths, &id)
                    .with_context(|| format!("remove container {name}"))?;
                break;
            }
            drop(change);
            if !force {
                bail!(
                    "container {} is running: stop it first, or use rm -f",
                    id::short(&id)
                );
            }
            stop_id(paths, &id, None)?;
        }
        say(name);
        Ok(0)
    })
}
// ANCHOR_END: rm
