//! `mydocker run`: the parent's side of starting a container.
//!
//! The parent creates the container's first process in new namespaces, tells
//! it what to run through a pipe, then waits and reports how it ended.

use std::fs::File;
// @before 7
// use std::io::{IsTerminal, Write};
// use std::os::fd::OwnedFd;
// @end
// @stage 7
use std::io::IsTerminal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::SystemTime;
// @end

use anyhow::{bail, Context, Result};
// @stage 7
use nix::errno::Errno;
use nix::sys::socket::{
    shutdown, socketpair, AddressFamily, Shutdown, SockFlag, SockType,
};
// @end
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
// @before 7
// use nix::unistd::{pipe2, Pid, Uid};
// @end
// @stage 7
use nix::unistd::{pipe2, write, Pid, Uid};
// @end

// @stage 2
use crate::cgroups::{Cgroup, Layout, Plan};
// @end
use crate::cli::RunArgs;
use crate::config::ContainerConfig;
// @stage 3
use crate::container::{self, Container};
// @end
// @stage 2
use crate::id;
use crate::limits::{self, Limits};
// @end
// @stage 4
use crate::layers::Layers;
// @end
// @stage 3
use crate::paths::Paths;
// @end
// @stage 5
use crate::volumes;
// @end
use crate::{namespace, signals};
// @stage 9
use crate::network;
// @end
// @stage 7
use crate::monitor::{self, Detached, How, Notify, Output, Watch};
use crate::names;
use crate::record::{Record, State};
// @end

// ANCHOR: run
// @before 3
// pub fn run(args: RunArgs) -> Result<i32> {
// @end
// @stage 3
pub fn run(args: RunArgs, paths: &Paths) -> Result<i32> {
    // @end
    if !Uid::effective().is_root() {
        bail!(
            "run needs root to create namespaces: try `sudo mydocker run ...`"
        );
    }
    // @before 7
    // if args.tty && args.interactive && !std::io::stdin().is_terminal() {
    // @end
    // @stage 7
    let foreground = !args.detach;
    if foreground
        && args.tty
        && args.interactive
        && !std::io::stdin().is_terminal()
    {
        // @end
        bail!(
            "-t needs a terminal on standard input: \
             drop -t when you pipe into the container"
        );
    }
    // @before 3
    // // From here on a signal never kills mydocker half-way: it is passed
    // // on to the container or, before there is one, stops `run` before
    // // the command starts.
    // @end
    // @stage 3
    // From here on a signal never kills mydocker half-way: it is passed on
    // to the container or, before there is one, makes `run` stop and clean
    // up.
    // @end
    signals::install()?;
    // @stage 2
    // ANCHOR: plan
    // Check every limit and plan the cgroup while nothing exists yet: a bad
    // option, or a controller the host lacks, leaves nothing behind.
    let limits = Limits::from_args(&args, &limits::online_cpus()?)?;
    let id = id::new_id();
    let plan = Plan::new(&Layout::detect()?, &id, &limits)?;
    // ANCHOR_END: plan
    // @end
    // @stage 5
    let specs = volumes::parse_all(&args.volumes)?;
    // @end
    // @stage 7
    let env = parse_env(&args.env)?;
    if let Some(name) = &args.name {
        names::check(name)?;
    }
    // @end
    // @stage 9
    let net = network::settings(paths, &args.net, &args.publish)?;
    // @end
    // @stage 3
    // ANCHOR: container
    // @before 4
    // // The image, unpacked for this container; dropping `container` when
    // // run() returns, whichever way, removes it again.
    // @end
    // @stage 4
    // The container's directory, on the image's shared copy; dropping
    // `container` when run() returns, whichever way, removes it again.
    // @end
    paths.create_root()?;
    // First remove what killed `run`s left behind.
    match container::remove_dead(paths) {
        // Ctrl-C: stop here, as anywhere before the container starts.
        Err(err) if err.is::<signals::Interrupted>() => return Err(err),
        // Something we could not clean must not stop a new container.
        Err(err) => eprintln!("mydocker: warning: {err:#}"),
        Ok(()) => {}
    }
    // @before 4
    // let container = Container::create(paths, &id, &args.image)?;
    // @end
    // @stage 4
    // ANCHOR: layer
    let layers = Layers::lock(paths)?;
    let layer = layers.get(&args.image)?;
    // @stage 5
    // ANCHOR: volumes
    // Every mount point, checked against the image before anything is
    // made; then the missing host directories are made.
    volumes::check(&specs, &layer.dir)?;
    let volumes = volumes::prepare(paths, &specs)?;
    // ANCHOR_END: volumes
    // @end
    // Made while `layers/` is locked: from now on the container's `layer`
    // file keeps its copy from being removed.
    // @before 5
    // let container = Container::create(paths, &id, &layer)?;
    // @end
    // @stage 5
    let named = volumes::names(&specs);
    // @before 7
    // let container = Container::create(paths, &id, &layer, &named)?;
    // @end
    // @end
    // @stage 7
    // Chosen while `layers/` is locked, which no other `run` can take:
    // nobody else can choose the same random name meanwhile.
    let name = match &args.name {
        Some(name) => name.clone(),
        None => names::random(paths),
    };
    let container = Container::create(paths, &id, &layer, &named, &name)?;
    // @end
    // Then the copies nobody uses any more: this image's previous one, say.
    if let Err(err) = layers.remove_unused() {
        if err.is::<signals::Interrupted>() {
            return Err(err);
        }
        eprintln!("mydocker: warning: {err:#}");
    }
    drop(layers);
    // ANCHOR_END: layer
    // @end
    // ANCHOR_END: container
    // @end
    let config = ContainerConfig {
        command: args.command,
        // @stage 3
        rootfs: container.rootfs(),
        // @stage 4
        lower: container.lower(),
        // @end
        hostname: container.short_id().to_string(),
        // @before 7
        // env: environment(container.short_id(), args.tty),
        // @end
        // @stage 7
        env: environment(container.short_id(), args.tty, env),
        // @end
        // @stage 5
        volumes,
        // @end
        // @stage 9
        etc: Vec::new(), // written once its address is known
                         // @end
                         // @end
    };
    // @stage 7
    // ANCHOR: record
    let record = Record {
        id: id.clone(),
        name,
        image: args.image,
        created: SystemTime::now(),
        state: State::Created,
        started: None,
        finished: None,
        exit_code: None,
        pid: None,
        pid_started: None,
        auto_remove: args.rm,
        interactive: args.interactive,
        config,
        limits,
        // @stage 9
        net,
        // @end
    };
    record.save(container.dir())?;
    let how = How {
        detach: args.detach,
        interactive: args.interactive,
        tty: args.tty,
    };
    // `run -d` prints the ID, as Docker's does.
    launch(paths, container, record, plan, how, &id)
}
// ANCHOR_END: record

// ANCHOR: launch
/// Start container `record`: in this process, which is then its monitor,
/// or, with `-d`, in a new monitor, once it says that the command runs.
/// Then print `say`. (`run` and `start` both come here.)
pub fn launch(
    paths: &Paths,
    mut container: Container,
    mut record: Record,
    plan: Plan,
    how: How,
    say: &str,
) -> Result<i32> {
    let mut notify = None;
    if how.detach {
        match monitor::detach(&[container.lock().as_raw_fd()])? {
            Detached::Caller(caller) => {
                // The monitor has the container now; we only wait.
                container.kept = true;
                return caller.wait_started(&record.id, say);
            }
            Detached::Monitor(monitor) => notify = Some(monitor),
        }
    }
    let result =
        supervise(paths, container, &mut record, plan, how, notify.as_mut());
    if let (Err(err), Some(notify)) = (&result, notify.as_mut()) {
        notify.failed(crate::exit_code(err), &format!("mydocker: {err:#}\n"));
    }
    result
}
// ANCHOR_END: launch

// ANCHOR: supervise
/// The monitor's work: the container's first process, its cgroup, its
/// output, its end.
fn supervise(
    paths: &Paths,
    container: Container,
    record: &mut Record,
    plan: Plan,
    how: How,
    mut notify: Option<&mut Notify>,
) -> Result<i32> {
    // @end
    // @before 7
    //
    // // O_CLOEXEC: no process that we start keeps a copy of these ends by
    // // accident. init sees EOF only once *every* write end is closed.
    // let (pipe_read, pipe_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    // let stdin = if args.interactive {
    //     None
    // } else {
    //     Some(OwnedFd::from(
    //         File::open("/dev/null").context("open(/dev/null)")?,
    //     ))
    // };
    //
    // let child = namespace::spawn_init(&pipe_read, stdin.as_ref())?;
    // @end
    // @stage 7
    // ANCHOR: stdio
    // A socket rather than a pipe: init reads its orders from it, then
    // writes back why it failed, if it does (see init.rs). CLOEXEC: no
    // process that we start keeps a copy of these ends by accident.
    let (pipe_read, pipe_write) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    // -d -i: a pipe that nobody writes to (until `attach` exists), so
    // that `sh` waits for its input instead of ending.
    let (stdin, _keep_open) = match (how.interactive, how.detach) {
        (true, false) => (None, None),
        (true, true) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
            (Some(read), Some(write))
        }
        (false, _) => (
            Some(OwnedFd::from(
                File::open("/dev/null").context("open(/dev/null)")?,
            )),
            None,
        ),
    };
    let mut output = Output::new(how)?;
    let [stdout, stderr] = &output.theirs;
    let stdio = [stdin.as_ref(), stdout.as_ref(), stderr.as_ref()];

    // @before 9
    // let child = namespace::spawn_init(&pipe_read, stdio)?;
    // @end
    // @stage 9
    let child = network::spawn_in(paths, &record.net.mode, |new_net| {
        namespace::spawn_init(&pipe_read, stdio, new_net)
    })?;
    // @end
    // ANCHOR_END: stdio
    // The child has its copies: our write ends must go, or we would never
    // read end-of-file.
    output.theirs = [None, None];
    // @end
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
    // @stage 2
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
    // @end
    // @stage 9
    // ANCHOR: network
    // Its network too: `lo` up, its endpoint, its /etc/hosts.
    let mut attached = match network::attach(paths, record, child) {
        Ok(attached) => attached,
        Err(err) => return Err(abort(child, err)),
    };
    // ANCHOR_END: network
    // @end
    // @before 7
    // let sent = send_config(pipe_write, &config);
    //
    // let code = wait_for(child)?;
    // @end
    // @stage 7
    // ANCHOR: watched
    let sent = send_config(&pipe_write, &record.config);
    let watched = Watch {
        child,
        report: Some(pipe_write),
        output: std::mem::take(&mut output.ours),
        echo: !how.detach,
        record: &mut *record,
        container: &container,
        notify: notify.as_deref_mut(),
    }
    .watch();
    if watched.is_err() {
        // Nobody would read its output any more: it must not run on.
        // (Our child, not reaped yet: its PID is still its own.)
        let _ = kill(child, Signal::SIGKILL);
    }
    let code = wait_for(child)?;
    let failure = watched?;
    // @end
    // @stage 2
    // ANCHOR: cleanup
    // The container has ended (however: exit, signal, OOM kill): its
    // cgroup goes too. Failing to remove it does not change the exit code.
    if let Err(err) = cgroup.remove() {
        eprintln!("mydocker: warning: {err:#}");
    }
    // ANCHOR_END: cleanup
    // @end
    // @stage 9
    // ANCHOR: release
    // And it leaves its network: its address is free for the next one.
    if let Err(err) = attached.release() {
        eprintln!("mydocker: warning: {err:#}");
    }
    // ANCHOR_END: release
    // @end
    sent?;
    // @stage 7
    // Why init failed, if it did: ours to print, or the caller's of `-d`.
    if let Some(message) = failure {
        match notify {
            Some(notify) => notify.failed(code, &message),
            None => eprint!("{message}"),
        }
    }
    monitor::finish(paths, container, record, code)?;
    // ANCHOR_END: watched
    // @end
    Ok(code)
}
// @stage 7
// ANCHOR_END: supervise
// @end
// ANCHOR_END: run

// @stage 3
// ANCHOR: environment
/// A clean environment for the command, as Docker gives it: the host's
/// variables (its PATH, HOME, SSH_AUTH_SOCK...) are none of its business.
// @before 7
// fn environment(hostname: &str, tty: bool) -> Vec<String> {
// @end
// @stage 7
/// Then the user's `-e`: a later value for a name replaces an earlier one.
fn environment(hostname: &str, tty: bool, user: Vec<String>) -> Vec<String> {
    // @end
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            .to_string(),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".to_string(),
    ];
    if tty {
        env.push("TERM=xterm".to_string());
    }
    // @stage 7
    for pair in user {
        let name = pair.split('=').next().unwrap_or_default().to_string();
        env.retain(|old| old.split('=').next() != Some(name.as_str()));
        env.push(pair);
    }
    // @end
    env
}
// ANCHOR_END: environment
// @stage 7

// ANCHOR: parse_env
/// `-e NAME=VALUE`, or `-e NAME` for our own value of NAME (none if we
/// have none, as in Docker), checked before anything is made.
// @before 8
// fn parse_env(options: &[String]) -> Result<Vec<String>> {
// @end
// @stage 8
pub fn parse_env(options: &[String]) -> Result<Vec<String>> {
    // @end
    let mut env = Vec::new();
    for option in options {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (option.as_str(), None),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!(
                "-e {option:?}: a variable's name must be a word, \
                 without spaces: -e NAME=VALUE"
            );
        }
        let value = match value {
            Some(value) => value,
            None => match std::env::var(name) {
                Ok(value) => value,
                Err(_) => continue,
            },
        };
        env.push(format!("{name}={value}"));
    }
    Ok(env)
}
// ANCHOR_END: parse_env
// @end

// @end
// ANCHOR: send_config
// @before 7
// /// Write the configuration as JSON and close the pipe, which releases init.
// fn send_config(pipe: OwnedFd, config: &ContainerConfig) -> Result<()> {
// @end
// @stage 7
/// Write the configuration as JSON and shut our sending side, which
/// releases init. We keep the socket, to hear from init.
fn send_config(pipe: &OwnedFd, config: &ContainerConfig) -> Result<()> {
    // @end
    // Serialized first, then written at once: serde_json writes each token
    // as it goes, and every small write to a pipe wakes init up again.
    let json = serde_json::to_vec(config).context("serialize the config")?;
    // @before 7
    // let mut pipe = File::from(pipe);
    // pipe.write_all(&json).context("write to the init pipe")?;
    // Ok(()) // dropping `pipe` closes it: init reads end-of-file
    // @end
    // @stage 7
    let mut written = &json[..];
    while !written.is_empty() {
        match write(pipe, written) {
            Ok(n) => written = &written[n..],
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err).context("write to init's socket"),
        }
    }
    // init reads end-of-file, as when a pipe is closed.
    shutdown(pipe.as_raw_fd(), Shutdown::Write).context("shutdown")
    // @end
}
// ANCHOR_END: send_config

// ANCHOR: abort
/// Stop a container that could not be set up: kill its init, which is still
/// waiting for its orders, and reap it. Returns the error that stopped it.
// @before 8
// fn abort(child: Pid, err: anyhow::Error) -> anyhow::Error {
// @end
// @stage 8
pub fn abort(child: Pid, err: anyhow::Error) -> anyhow::Error {
    // @end
    signals::stop_forwarding();
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    err
}
// ANCHOR_END: abort

// ANCHOR: wait
/// Wait until the container's first process ends and turn how it ended into
/// an exit code, the shell's way: its own code, or 128 + the signal number.
// @before 8
// fn wait_for(child: Pid) -> Result<i32> {
// @end
// @stage 8
pub fn wait_for(child: Pid) -> Result<i32> {
    // @end
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
