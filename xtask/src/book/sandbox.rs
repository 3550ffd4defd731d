//! The sandbox a page's transcripts run in, leaving the host as it was.
//!
//! A private mount namespace (and a UTS, IPC and network namespace of its
//! own), in which three directories are fresh scratch directories,
//! bind-mounted from `target/transcripts/PID/`:
//!
//! | in the sandbox        | from             | why                                       |
//! | --------------------- | ---------------- | ----------------------------------------- |
//! | `/var/lib/mydocker`   | `state/`         | pages name the real paths, and start empty |
//! | `/tmp` (mode 1777)    | `tmp/`           | pages use `/tmp/x` freely                  |
//! | `/usr/local/bin`      | `bin/`           | `mydocker` is the chapter's binary, `sudo` a shim |
//!
//! `/dev/pts` is a devpts instance of its own, so the first terminal is
//! `/dev/pts/0`, as in a reader's first ssh session. The hostname is `vm`
//! (the machine the book was written on), so `hostname` prints the same
//! everywhere.
//!
//! The network namespace holds only `lo`, up. What a page plugs in (from
//! stage 9, `mydocker run` makes a bridge, veths, iptables rules and sets
//! `net.ipv4.ip_forward`) is made there, never in the machine's network,
//! and goes with the namespace when the page ends. `/run/netns` is an empty
//! tmpfs, so that `ip netns add` (the stage 9 tests use it) leaves no file
//! on the host either. Nothing in the sandbox reaches another machine:
//! cargo finds the crates that the workspace's own build downloaded first,
//! and a page must not need more. (`/sys` is the host's: its
//! `/sys/class/net` still lists the host's devices; `ip`, `/proc/net` and
//! `/proc/sys/net` show the sandbox's.)
//!
//! The checkout itself is read-only in the sandbox, but for its ignored
//! build output (`target/`, ...): a transcript that writes into the
//! repository fails with "Read-only file system", which the page's diff
//! then shows.
//!
//! The namespaces are held by a tmux server started inside them; every
//! shell, and everything a transcript starts, is its descendant. The server
//! is our direct child with a parent-death signal, so it dies with us even
//! on SIGKILL. When the page is done, `close` kills the server, then ends
//! (by PID, leaves first) every process still in the sandbox's mount or
//! network namespace or below one, and removes the scratch directories;
//! the mounts vanish with the mount namespace, the interfaces and firewall
//! rules with the network namespace, once no process is left in them.
//! Each run has its own directory and tmux socket, so runs in parallel do
//! not meet.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::terminal::{Shell, Tmux, User};

/// The sandbox's hostname.
pub const HOSTNAME: &str = "vm";
/// Where the classroom VM has the checkout: how its path is shown.
pub const READER_CHECKOUT: &str = "/home/vagrant/mydocker";
/// sudo's secure_path on Debian, and the root shell's PATH.
const SECURE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `sudo COMMAND [ARG...]` for a check that already runs as root: reset the
/// environment as sudo does (env_reset, secure_path), then run COMMAND.
const SUDO_SHIM: &str = r#"#!/bin/sh
# sudo, as the book's transcripts need it (xtask/src/book/sandbox.rs): the
# check runs as root, so only sudo's reset of the environment is left to do.
case "$1" in
-*) echo "sudo (book transcript shim): option $1 is not supported: write 'sudo COMMAND [ARG...]'" >&2
    exit 1 ;;
"") echo "usage: sudo COMMAND [ARG...]" >&2
    exit 1 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "sudo (book transcript shim): $(id -un) may not run sudo here" >&2
    exit 1
fi
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
case "$1" in
*=*) ;;
*) if ! PATH=$path command -v "$1" >/dev/null; then
       echo "sudo: $1: command not found" >&2
       exit 1
   fi ;;
esac
exec env -i PATH="$path" HOME=/root SHELL=/bin/bash LOGNAME=root USER=root \
    MAIL=/var/mail/root SUDO_USER=root SUDO_UID=0 SUDO_GID=0 \
    ${TERM:+TERM="$TERM"} ${LANG:+LANG="$LANG"} ${LANGUAGE:+LANGUAGE="$LANGUAGE"} \
    ${LC_ALL:+LC_ALL="$LC_ALL"} "$@"
"#;

pub struct Sandbox {
    root: PathBuf,
    /// target/transcripts/PID: everything this run creates.
    pub dir: PathBuf,
    tmux: Tmux,
    server: Option<Child>,
    /// The sandbox's mount namespace, as /proc/PID/ns/mnt names it.
    namespace: String,
    /// Its network namespace, as /proc/PID/ns/net names it.
    network: String,
    shells: usize,
    closed: bool,
}

impl Sandbox {
    /// Make the scratch directories and start the tmux server inside the
    /// new namespaces.
    pub fn create(root: &Path) -> Result<Sandbox> {
        let base = root.join("target/transcripts");
        remove_stale(&base);
        let dir = base.join(std::process::id().to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        for (sub, mode) in [
            ("state", 0o755),
            ("tmp", 0o1777),
            ("bin", 0o755),
            ("shells", 0o755),
        ] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let sudo = dir.join("bin/sudo");
        fs::write(&sudo, SUDO_SHIM)?;
        fs::set_permissions(&sudo, fs::Permissions::from_mode(0o755))?;
        let mut sandbox = Sandbox {
            root: root.to_path_buf(),
            tmux: Tmux {
                socket: dir.join("tmux.sock"),
            },
            dir,
            server: None,
            namespace: String::new(),
            network: String::new(),
            shells: 0,
            closed: false,
        };
        sandbox.start_server()?;
        Ok(sandbox)
    }

    fn start_server(&mut self) -> Result<()> {
        // (A checkout under /tmp is bound back into the new /tmp below.)
        for (place, what) in [
            ("/usr/local/bin", "/usr/local/bin"),
            ("/var/lib/mydocker", "/var/lib/mydocker"),
        ] {
            if self.root.starts_with(place) {
                bail!(
                    "the checkout is under {what}, which the sandbox replaces: \
                     clone it somewhere else to run the transcripts"
                );
            }
        }
        // The mount points must exist. mydocker creates the first on its
        // first run anyway, `ip netns add` the second; an empty directory is
        // all the host gets.
        for point in ["/var/lib/mydocker", "/run/netns"] {
            if !Path::new(point).exists() {
                fs::create_dir_all(point)
                    .with_context(|| format!("create {point}, a mount point"))?;
            }
        }
        if self.tmux.socket.as_os_str().len() > 100 {
            bail!(
                "the tmux socket path {} is too long for a socket; use a shorter checkout path",
                self.tmux.socket.display()
            );
        }
        let quote = |p: &Path| -> Result<String> {
            let text = p.to_str().context("a UTF-8 path")?;
            if text.contains('\'') {
                bail!("{text}: a path with a quote");
            }
            Ok(format!("'{text}'"))
        };
        // The checkout read-only, but for its ignored build output.
        let root = quote(&self.root)?;
        let mut read_only = format!(
            "mount --rbind {root} {root}\n\
             mount -o remount,bind,ro {root}\n"
        );
        for path in writable_paths(&self.root)? {
            let path = quote(&path)?;
            read_only.push_str(&format!(
                "mount --bind {path} {path}\n\
                 mount -o remount,bind,rw {path}\n"
            ));
        }
        // A checkout under /tmp (CI may clone there) disappears when the
        // scratch /tmp is mounted: keep a descriptor of it, then bind it
        // back at its own path in the new /tmp. --no-canonicalize, or mount
        // would resolve /proc/self/fd/9 to that path, now empty.
        let checkout_back = if self.root.starts_with("/tmp") {
            format!(
                "mkdir -p {root}\n\
                 mount --no-canonicalize --bind /proc/self/fd/9 {root}\n"
            )
        } else {
            String::new()
        };
        let script = format!(
            "set -e\n\
             exec 9< {root}\n\
             mount --bind {state} /var/lib/mydocker\n\
             mount --bind {bin} /usr/local/bin\n\
             mount --bind {tmp} /tmp\n\
             {checkout_back}\
             exec 9<&-\n\
             mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts\n\
             mount -t tmpfs -o mode=0755 netns /run/netns\n\
             {read_only}\
             hostname {HOSTNAME}\n\
             ip link set lo up\n\
             exec tmux -S {socket} -f /dev/null -D\n",
            state = quote(&self.dir.join("state"))?,
            tmp = quote(&self.dir.join("tmp"))?,
            bin = quote(&self.dir.join("bin"))?,
            socket = quote(&self.tmux.socket)?,
        );
        let log = self.dir.join("server.log");
        let log_file = fs::File::create(&log)?;
        let child = Command::new("setpriv")
            // If xtask dies, even by SIGKILL, so does the server, and with
            // it the shells (their terminals hang up).
            .args(["--pdeathsig", "KILL", "--"])
            .args([
                "unshare",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--propagation",
                "private",
            ])
            .args(["--", "/bin/sh", "-c", &script])
            .env_clear()
            .env("PATH", SECURE_PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Out of our process group: Ctrl-C is ours to handle, in order.
            .process_group(0)
            .spawn()
            .context("start the sandbox: setpriv and unshare (util-linux), tmux")?;
        let pid = child.id();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            super::interrupt::check()?;
            if let Some(child) = self.server.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.server = None;
                    bail!(
                        "the sandbox did not start ({status}): {}",
                        fs::read_to_string(&log).unwrap_or_default().trim()
                    );
                }
            }
            if self.tmux.socket.exists()
                && self
                    .tmux
                    .run(&["set-option", "-g", "history-limit", "100000"])
                    .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the sandbox's tmux server did not start within 10s");
            }
            sleep(Duration::from_millis(10));
        }
        for (kind, field) in [("mnt", &mut self.namespace), ("net", &mut self.network)] {
            *field = namespace_of(pid, kind)
                .with_context(|| format!("read the sandbox's {kind} namespace"))?;
            if *field == namespace_of(std::process::id(), kind)? {
                bail!("the sandbox's tmux server is in our own {kind} namespace");
            }
        }
        // For the next run, should this one die without cleaning up.
        fs::write(self.dir.join("namespace"), &self.namespace)?;
        fs::write(self.dir.join("network"), &self.network)?;
        Ok(())
    }

    /// Make `binary` the sandbox's `/usr/local/bin/mydocker`.
    pub fn install(&self, binary: &Path) -> Result<()> {
        let dest = self.installed();
        let temporary = self.dir.join("bin/.mydocker.new");
        fs::copy(binary, &temporary)
            .with_context(|| format!("copy {} into the sandbox", binary.display()))?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))?;
        fs::rename(&temporary, &dest)?;
        Ok(())
    }

    /// The sandbox's `/usr/local/bin/mydocker`, as we see it.
    pub fn installed(&self) -> PathBuf {
        self.dir.join("bin/mydocker")
    }

    /// `line` as the reader would see it: the scratch directories under
    /// their sandbox names (a mount table shows where a bind mount comes
    /// from), and the checkout where the classroom VM has it.
    pub fn as_reader_sees(&self, line: &str) -> String {
        let mut line = line.to_string();
        for (ours, theirs) in [
            (self.dir.join("state"), "/var/lib/mydocker"),
            (self.dir.join("tmp"), "/tmp"),
            (self.dir.join("bin"), "/usr/local/bin"),
            (self.root.clone(), READER_CHECKOUT),
        ] {
            line = replace_path(&line, &ours.to_string_lossy(), theirs);
        }
        line
    }

    /// A new bash, in the checkout, as the reader's terminal would start it.
    pub fn shell(&mut self, prompt: &str, user: User) -> Result<Shell> {
        self.shells += 1;
        let name = format!("shell{}", self.shells);
        let done = self.dir.join("shells").join(&name);
        Shell::start(
            &self.tmux,
            &name,
            &done,
            &self.root,
            &environment(user),
            user,
            prompt,
        )
    }

    /// Close a shell and end what it still runs.
    pub fn end_shell(&self, shell: Shell) -> Result<()> {
        let tree = match shell.pid() {
            Ok(pid) => descendants(&processes(), |p| p.pid == pid),
            Err(_) => Vec::new(),
        };
        // SIGHUP to the shell, which passes it to its jobs.
        let _ = self.tmux.run(&["kill-session", "-t", &shell.name]);
        end(tree, Duration::from_secs(2))
    }

    /// Take everything down: the tmux server, every process left in the
    /// sandbox, the scratch directories.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let _ = self.tmux.run(&["kill-server"]);
        if let Some(mut child) = self.server.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                sleep(Duration::from_millis(10));
            }
        }
        if !self.namespace.is_empty() {
            let left = inside(&processes(), &self.namespace, &self.network);
            end(left, Duration::from_secs(2))?;
            // Nothing may hold the namespaces: the network namespace, with
            // what a page plugged in, is freed with its last process.
            let still: Vec<String> = inside(&processes(), &self.namespace, &self.network)
                .iter()
                .map(|p| p.pid.to_string())
                .collect();
            if !still.is_empty() {
                bail!(
                    "processes are still in the sandbox's namespaces ({}, {}): {}",
                    self.namespace,
                    self.network,
                    still.join(", ")
                );
            }
        }
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("remove {}", self.dir.display()))?;
        }
        let base = self.root.join("target/transcripts");
        let _ = fs::remove_dir(&base); // only if empty: another run may use it
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(err) = self.teardown() {
                eprintln!(
                    "book: cleaning up the sandbox {}: {err:#}",
                    self.dir.display()
                );
            }
        }
    }
}

/// The environment of the reader's shell: a login's, with cargo on PATH
/// (`cargo xtask ...` works in the sandbox) and where rustup keeps its
/// toolchains.
fn environment(user: User) -> Vec<(String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut env = vec![
        ("TERM".to_string(), "screen".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("SHELL".to_string(), "/bin/bash".to_string()),
    ];
    match user {
        User::Root => {
            let home = var("HOME").unwrap_or_else(|| "/root".into());
            let cargo_home = var("CARGO_HOME").unwrap_or_else(|| format!("{home}/.cargo"));
            let rustup_home = var("RUSTUP_HOME").unwrap_or_else(|| format!("{home}/.rustup"));
            // rustup's proxies, or else the directory of the cargo running us.
            let cargo_bin = if Path::new(&cargo_home).join("bin/cargo").exists() {
                Some(format!("{cargo_home}/bin"))
            } else {
                var("CARGO").and_then(|c| Path::new(&c).parent().map(|p| p.display().to_string()))
            };
            let path = match cargo_bin {
                Some(bin) => format!("{bin}:{SECURE_PATH}"),
                None => SECURE_PATH.to_string(),
            };
            env.extend([
                ("HOME".to_string(), home),
                ("USER".to_string(), "root".to_string()),
                ("LOGNAME".to_string(), "root".to_string()),
                ("PATH".to_string(), path),
                ("CARGO_HOME".to_string(), cargo_home),
                ("RUSTUP_HOME".to_string(), rustup_home),
            ]);
        }
        User::Nobody => env.extend([
            ("HOME".to_string(), "/nonexistent".to_string()),
            ("USER".to_string(), "nobody".to_string()),
            ("LOGNAME".to_string(), "nobody".to_string()),
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
        ]),
    }
    env
}

/// What a transcript may write in the checkout: its ignored build output
/// (`target/`, a chapter's `target/` and `Cargo.lock`, ...), as git lists
/// it. A chapter crate's `target/` and `Cargo.lock` are made first when
/// missing (as `build_chapter` makes them), so that `cargo build` in a
/// chapter works as it does for the reader.
fn writable_paths(root: &Path) -> Result<Vec<PathBuf>> {
    let git = |args: &[&str]| -> Result<std::process::Output> {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .context("run git")
    };
    for stage in crate::stages::STAGES {
        let chapter = Path::new("chapters").join(stage.slug);
        if !root.join(&chapter).is_dir() {
            continue;
        }
        for (name, is_dir) in [("target", true), ("Cargo.lock", false)] {
            let path = chapter.join(name);
            let text = path.to_string_lossy();
            if root.join(&path).exists() || !git(&["check-ignore", "-q", &text])?.status.success() {
                continue;
            }
            if is_dir {
                fs::create_dir_all(root.join(&path))?;
            } else {
                fs::copy(root.join("Cargo.lock"), root.join(&path))?;
            }
        }
    }
    let output = git(&[
        "ls-files",
        "-z",
        "--others",
        "--ignored",
        "--exclude-standard",
        "--directory",
    ])?;
    if !output.status.success() {
        bail!(
            "git ls-files: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(|p| root.join(p.trim_end_matches('/')))
        .collect())
}

/// Replace the path `from` by `to` where it is a whole path or a prefix of
/// one (followed by `/`, not by more of a name).
fn replace_path(line: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        let whole =
            !after.starts_with(|c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Clean up after runs that died without cleaning up (SIGKILL): their
/// tmux server died with them, but a container may have outlived its
/// terminal. End what is left in their sandbox's mount or network namespace
/// (saved in `namespace` and `network`), then remove their directory.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a run in progress
        }
        if let Ok(namespace) = fs::read_to_string(entry.path().join("namespace")) {
            let network = fs::read_to_string(entry.path().join("network")).unwrap_or_default();
            let left = inside(&processes(), namespace.trim(), network.trim());
            if let Err(err) = end(left, Duration::ZERO) {
                eprintln!("book: a run that died left processes: {err:#}");
                continue;
            }
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// A process, as /proc shows it.
#[derive(Debug, Clone)]
struct Process {
    pid: u32,
    ppid: u32,
    /// Start time in clock ticks since boot: with the PID, it names one
    /// process even if the PID is reused.
    start: u64,
    mount_ns: Option<String>,
    net_ns: Option<String>,
}

fn processes() -> Vec<Process> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((ppid, start)) = stat(pid) else {
            continue;
        };
        found.push(Process {
            pid,
            ppid,
            start,
            mount_ns: namespace_of(pid, "mnt").ok(),
            net_ns: namespace_of(pid, "net").ok(),
        });
    }
    found
}

/// The namespace of `kind` (`mnt`, `net`) that `pid` is in, as
/// /proc/PID/ns/KIND names it: `net:[4026532327]`.
fn namespace_of(pid: u32, kind: &str) -> Result<String> {
    let link = format!("/proc/{pid}/ns/{kind}");
    Ok(fs::read_link(&link)
        .with_context(|| format!("readlink {link}"))?
        .to_string_lossy()
        .into_owned())
}

/// The processes in the mount namespace `mount` or the network namespace
/// `network` (either may be empty: unknown), and all their descendants.
fn inside(all: &[Process], mount: &str, network: &str) -> Vec<Process> {
    let is = |ns: &Option<String>, name: &str| !name.is_empty() && ns.as_deref() == Some(name);
    descendants(all, |p| is(&p.mount_ns, mount) || is(&p.net_ns, network))
}

/// The parent PID and start time of `pid`, from /proc/PID/stat; None for a
/// process that is gone or a zombie.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields start after
    // the last ')'. Then: state, ppid, ..., starttime is field 22.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// The processes that match `seed`, and all their descendants.
fn descendants(all: &[Process], seed: impl Fn(&Process) -> bool) -> Vec<Process> {
    let mut children: HashMap<u32, Vec<&Process>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut found: Vec<Process> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&Process> = all.iter().filter(|p| seed(p)).collect();
    while let Some(p) = todo.pop() {
        if !seen.insert(p.pid) || p.pid == std::process::id() {
            continue;
        }
        found.push(p.clone());
        todo.extend(children.get(&p.pid).into_iter().flatten());
    }
    found
}

/// End `tree`: give it `grace` to exit on its own (after SIGHUP from its
/// terminal), then SIGKILL the leaves first, so that a parent such as
/// `mydocker run` sees its container end and cleans up after it.
fn end(tree: Vec<Process>, grace: Duration) -> Result<()> {
    let alive = |p: &Process| stat(p.pid).is_some_and(|(_, start)| start == p.start);
    let mut left: Vec<Process> = tree;
    let grace_end = Instant::now() + grace;
    let deadline = grace_end + Duration::from_secs(10);
    loop {
        left.retain(alive);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let pids: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
            bail!(
                "processes of the sandbox would not end: {}",
                pids.join(", ")
            );
        }
        if Instant::now() > grace_end {
            let parents: BTreeSet<u32> = left.iter().map(|p| p.ppid).collect();
            for p in left.iter().filter(|p| !parents.contains(&p.pid)) {
                // SAFETY: kill(2) with a PID we checked is still the process
                // we started (same start time).
                unsafe { libc::kill(p.pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        sleep(Duration::from_millis(50));
    }
}

/// The state of the checkout a transcript must not change: `git status
/// --porcelain` and the tags, as a set of lines.
pub fn checkout_status(root: &Path) -> Result<BTreeSet<String>> {
    let mut lines = BTreeSet::new();
    for args in [
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=all",
        ][..],
        &[
            "for-each-ref",
            "--format=tag %(refname:short) %(objectname)",
            "refs/tags",
        ][..],
    ] {
        let output = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .context("run git")?;
        if !output.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        lines.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(String::from),
        );
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::replace_path;

    #[test]
    fn replaces_whole_paths_only() {
        let line = "/work/main/x /work/mainline (/work/main) /work/main";
        assert_eq!(
            replace_path(line, "/work/main", "/home/v/m"),
            "/home/v/m/x /work/mainline (/home/v/m) /home/v/m"
        );
    }
}
