//! The command line, declared with clap's derive API.

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mydocker",
    version,
    about = "A small container runtime, written stage by stage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// ANCHOR: commands
#[derive(Subcommand)]
pub enum Command {
    /// Run a command in a new container
    Run(RunArgs),
    /// The container's first process (started by `run`, not by you)
    #[command(hide = true)]
    Init,
}
// ANCHOR_END: commands

// ANCHOR: run_args
#[derive(Args)]
pub struct RunArgs {
    /// Keep standard input attached to the container
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the container the terminal (for an interactive shell: -ti)
    #[arg(short, long)]
    pub tty: bool,

    /// The command to run in the container, and its arguments
    // `trailing_var_arg`: everything from the first positional argument on
    // belongs to the container, even words that look like our flags, so
    // `mydocker run ls -la /` passes `-la` to ls.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}
// ANCHOR_END: run_args
