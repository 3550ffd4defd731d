//! mydocker: a small container runtime, written stage by stage.
//!
//! `main` only parses the command line and turns errors into one line on
//! stderr and an exit code; every concept lives in a module of its own.

// @stage 3
mod busybox;
// @end
// @stage 2
mod cgroups;
// @end
mod cli;
// @stage 6
mod commit;
// @end
mod config;
// @stage 3
mod container;
// @end
// @stage 8
mod exec;
// @end
// @stage 2
mod id;
// @end
// @stage 3
mod image;
// @end
// @stage 6
mod images;
// @end
// @stage 4
mod layers;
// @end
// @stage 7
mod lifecycle;
mod logs;
mod monitor;
mod names;
mod process;
mod ps;
mod record;
// @end
// @stage 2
mod info;
// @end
mod init;
// @stage 2
mod limits;
// @end
mod namespace;
// @stage 9
mod network;
// @end
// @stage 4
mod overlay;
// @end
// @stage 3
mod paths;
mod rootfs;
// @end
mod run;
mod signals;
// @stage 5
mod volumes;
// @end

use clap::Parser;
use cli::{Cli, Command};

// ANCHOR: main
fn main() {
    let cli = Cli::parse();
    // @stage 7
    quiet_on_closed_output(&cli.command);
    // @end
    let result = match cli.command {
        // @before 3
        // Command::Run(args) => run::run(args),
        // @end
        // @stage 3
        Command::Run(args) => run::run(args, &paths::Paths::new(cli.root)),
        // @end
        // @stage 2
        Command::Info => info::info(),
        // @end
        // @stage 5
        Command::Volume(command) => {
            volumes::named::command(command, &paths::Paths::new(cli.root))
        }
        // @end
        // @stage 6
        Command::Commit { container, image } => {
            commit::commit(&paths::Paths::new(cli.root), &container, &image)
        }
        Command::Images { quiet } => {
            images::images(&paths::Paths::new(cli.root), quiet)
        }
        Command::Rmi { images } => {
            images::rmi(&paths::Paths::new(cli.root), &images)
        }
        Command::Import { file, image } => {
            images::import(&paths::Paths::new(cli.root), &file, &image)
        }
        Command::Export { container, output } => commit::export(
            &paths::Paths::new(cli.root),
            &container,
            output.as_deref(),
        ),
        // @end
        // @stage 7
        Command::Ps { all, quiet } => {
            ps::ps(&paths::Paths::new(cli.root), all, quiet)
        }
        Command::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => logs::parse_tail(&tail).and_then(|tail| {
            let paths = paths::Paths::new(cli.root);
            logs::logs(&paths, &container, follow, tail, timestamps)
        }),
        Command::Stop { time, containers } => {
            lifecycle::stop(&paths::Paths::new(cli.root), &containers, time)
        }
        Command::Start { containers } => {
            lifecycle::start(&paths::Paths::new(cli.root), &containers)
        }
        Command::Rm { force, containers } => {
            lifecycle::rm(&paths::Paths::new(cli.root), &containers, force)
        }
        // @end
        // @stage 8
        Command::Exec(args) => exec::exec(&paths::Paths::new(cli.root), args),
        // @end
        // @stage 9
        Command::Network(command) => {
            network::commands::command(command, &paths::Paths::new(cli.root))
        }
        // @end
        // @before 7
        // Command::Init => init::init(),
        // @end
        // @stage 7
        Command::Init => Ok(init::main()),
        // @end
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // `{:#}` prints the whole chain of context on one line:
            // "mydocker: mount(proc, /proc): EPERM: Operation not permitted".
            eprintln!("mydocker: {err:#}");
            std::process::exit(exit_code(&err));
        }
    }
}
// ANCHOR_END: main

// @stage 7
// ANCHOR: sigpipe
/// `mydocker ps -a | head -1`: once `head` has gone, a write to the pipe
/// fails, and Rust, which ignores SIGPIPE, would panic in `println!`. A
/// command that only prints ends quietly instead, killed by SIGPIPE, as
/// `ls | head` does. Not `run`, `start` or `init`: a monitor must outlive
/// its readers, and passes the failure on to its container (monitor.rs).
fn quiet_on_closed_output(command: &Command) {
    use nix::sys::signal::{signal, SigHandler, Signal};
    let prints = matches!(
        command,
        Command::Ps { .. }
            | Command::Logs { .. }
            | Command::Stop { .. }
            | Command::Rm { .. }
            | Command::Images { .. }
            | Command::Volume(_)
            // @stage 9
            | Command::Network(_)
            // @end
            | Command::Info
    );
    if prints {
        // SAFETY: the default disposition installs no handler.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
}
// ANCHOR_END: sigpipe

// @end
// ANCHOR: exit_code
/// 125, like Docker: the error is mydocker's own, not the command's. But a
/// signal that stopped mydocker before the command started ends it like a
/// signal ends a command: 128 + its number.
fn exit_code(err: &anyhow::Error) -> i32 {
    match err.downcast_ref::<signals::Interrupted>() {
        Some(signals::Interrupted(signal)) => 128 + *signal as i32,
        None => 125,
    }
}
// ANCHOR_END: exit_code
