//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mydocker",
    version,
    about = "A small container runtime, written stage by stage"
)]
pub struct Cli {
    // ANCHOR: root
    /// Where mydocker keeps images and containers [default: /var/lib/mydocker]
    #[arg(long, global = true, env = "MYDOCKER_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    // ANCHOR_END: root

    #[command(subcommand)]
    pub command: Command,
}

// ANCHOR: commands
#[derive(Subcommand)]
pub enum Command {
    /// Run a command in a new container
    Run(RunArgs),
    /// Show how this host's cgroups are laid out
    Info,
    // ANCHOR: volume_commands
    /// Manage named volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    // ANCHOR_END: volume_commands
    // ANCHOR: image_commands
    /// Make an image of a running container's files
    Commit {
        /// The container: its name, its ID, or the start of its ID
        container: String,
        /// The new image: NAME[:TAG]
        image: String,
    },
    /// List the images
    Images {
        /// Only the image IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images that no running container uses
    Rmi {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Make an image of a tarball (`-` reads standard input)
    Import {
        #[arg(value_name = "FILE|-", allow_hyphen_values = true)]
        file: PathBuf,
        /// The new image: NAME[:TAG]
        image: String,
    },
    /// Write a running container's files as a tarball
    Export {
        /// The container: its name, its ID, or the start of its ID
        container: String,
        /// Write to FILE instead of standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    // ANCHOR_END: image_commands
    // ANCHOR: container_commands
    /// List the containers
    Ps {
        /// All the containers, not only the running ones
        #[arg(short, long)]
        all: bool,
        /// Only the IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show what a container wrote to stdout and stderr
    Logs {
        /// Go on showing what it writes, until it stops
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (or all)
        #[arg(long, value_name = "N", default_value = "all")]
        tail: String,
        /// Show when each line was written
        #[arg(short, long)]
        timestamps: bool,
        /// The container: its name, its ID, or the start of its ID
        container: String,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after a time
    Stop {
        /// Seconds to wait for it to end before killing it
        #[arg(short, long, value_name = "SECS", default_value_t = 10)]
        time: u64,
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Start stopped containers again
    Start {
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Remove stopped containers (-f: running ones too)
    Rm {
        /// Kill a running container first
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    // ANCHOR_END: container_commands
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// The container's first process (started by `run`, not by you)
    #[command(hide = true)]
    Init,
}
// ANCHOR_END: commands

// ANCHOR: volume_command
#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Make a named volume (`run -v NAME:PATH` makes one too)
    Create { name: String },
    /// List the named volumes
    Ls {
        /// Only the names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove named volumes that no running container uses
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}
// ANCHOR_END: volume_command

// ANCHOR: network_command
#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Make a network: a bridge on the host, a subnet for its containers
    Create {
        /// What makes it real on the host
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Its addresses, as CIDR: 172.30.0.0/16
        #[arg(long, value_name = "CIDR", allow_hyphen_values = true)]
        subnet: String,
        /// The bridge's address, the containers' router (default: the
        /// subnet's first address)
        #[arg(long, value_name = "IP", allow_hyphen_values = true)]
        gateway: Option<String>,
        name: String,
    },
    /// List the networks
    Ls {
        /// Only the names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks and their containers, as JSON
    Inspect {
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Remove networks that no container uses
    Rm {
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
}
// ANCHOR_END: network_command

// ANCHOR: run_args
#[derive(Args)]
pub struct RunArgs {
    /// Keep standard input attached to the container
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the container the terminal (for an interactive shell: -ti)
    #[arg(short, long)]
    pub tty: bool,

    // ANCHOR: detach_args
    /// Run the container in the background and print its ID
    #[arg(short, long)]
    pub detach: bool,

    /// A name for the container (default: a random one)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Remove the container once it ends
    #[arg(long)]
    pub rm: bool,

    /// Set an environment variable: KEY=VALUE, or KEY for this shell's
    #[arg(
        short,
        long = "env",
        value_name = "KEY=VALUE",
        allow_hyphen_values = true
    )]
    pub env: Vec<String>,

    // ANCHOR_END: detach_args

    // ANCHOR: limit_args
    // The limits are parsed by limits.rs, not by clap, so that a bad value
    // gets the same one-line error as every other mistake (and so clap must
    // hand over values like "-5" instead of taking them for flags).
    /// Memory limit: bytes, or a number with k, m or g (64m, 1g)
    #[arg(short, long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory: Option<String>,

    /// CPU time, in CPUs: 0.5 is half of one CPU (over each 100 ms)
    #[arg(long, value_name = "NUMBER", allow_hyphen_values = true)]
    pub cpus: Option<String>,

    /// CPU weight relative to other containers (2 to 262144, default 1024)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub cpu_shares: Option<String>,

    /// The CPUs the container may run on, like 0-2,4
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub cpuset_cpus: Option<String>,

    /// How many processes the container may have at once
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    // ANCHOR_END: limit_args
    // ANCHOR: volume_args
    /// Mount a host path or a named volume: HOST:PATH[:ro|:rw], repeatable
    #[arg(
        short = 'v',
        long = "volume",
        value_name = "HOST:PATH",
        allow_hyphen_values = true
    )]
    pub volumes: Vec<String>,

    // ANCHOR_END: volume_args
    // ANCHOR: network_args
    /// The network: bridge (the default), NAME, none, host, container:NAME
    #[arg(
        long = "net",
        alias = "network",
        value_name = "NETWORK",
        default_value = "bridge",
        allow_hyphen_values = true
    )]
    pub net: String,

    /// Publish a port of the container on the host:
    /// [IP:]HOST:CONTAINER[/tcp|/udp], repeatable
    #[arg(
        short,
        long = "publish",
        value_name = "[IP:]HOST:CTR",
        allow_hyphen_values = true
    )]
    pub publish: Vec<String>,

    // ANCHOR_END: network_args
    /// The image to run (busybox is built in)
    pub image: String,

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

// ANCHOR: exec_args
#[derive(Args)]
pub struct ExecArgs {
    /// Keep standard input attached to the command
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the command the terminal (for an interactive shell: -ti)
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable: KEY=VALUE, or KEY for this shell's
    #[arg(
        short,
        long = "env",
        value_name = "KEY=VALUE",
        allow_hyphen_values = true
    )]
    pub env: Vec<String>,

    /// The directory to run the command in (absolute; default: /)
    #[arg(short, long, value_name = "DIR", allow_hyphen_values = true)]
    pub workdir: Option<String>,

    /// The container: its name, its ID, or the start of its ID
    pub container: String,

    /// The command to run in the container, and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}
// ANCHOR_END: exec_args
