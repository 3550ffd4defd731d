//! Stage 8: `mydocker exec`, one more process in a running container. It
//! joins the container's namespaces (setns(2)) and its cgroup, forks, and
//! the child runs the command: a process *in* the container, which sees
//! the container's files, hostname, network and processes, counts against
//! its limits, and dies with it.
//!
//! The tests look from both sides: what the exec'd command prints about
//! itself (its /proc/self, `ps`, `hostname`, its environment), and what the
//! host sees (its host PID in the container's cgroup, the namespaces
//! behind /proc/PID/ns, marker files that must not appear on the host).
//! Every container runs a command that carries the test's token (`sh -c
//! SCRIPT TOKEN`), every exec'd shell the token `exec-TOKEN`, so that the
//! test tells its processes from anyone else's. A test removes what it
//! made with `rm -f`; when it fails, [`T`]'s drop removes the rest.
//!
//! Two tests emulate a kernel older than 5.8, where setns(2) does not take
//! a pidfd (see tests/src/old_kernel.rs): `exec` must fall back to the
//! files in /proc/PID/ns and behave exactly the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use mydocker_stage_tests::slowed::run_slowed;
use mydocker_stage_tests::{
    alive, cgroups_of_container, children_of, container_processes, eventually, host_mounts,
    kill_and_unmount, old_kernel, parent_of, pids_with, processes_in, quietly, signal, start_time,
    unique_token, Mydocker, Outcome, Spawned, IMAGE,
};

// ---------------------------------------------------------------------
// The test's handle
// ---------------------------------------------------------------------

/// One test: the binary under test with a state root of its own, called
/// exactly as written (no `--rm` added), a token for its containers'
/// command lines, and the full IDs of the containers it made.
struct T {
    md: Mydocker,
    token: String,
    ids: Mutex<BTreeSet<String>>,
}

impl T {
    fn new() -> T {
        T {
            md: Mydocker::as_given(),
            token: unique_token(),
            ids: Mutex::new(BTreeSet::new()),
        }
    }

    /// `mydocker ARGS...` to the end.
    fn exec(&self, args: &[&str]) -> Outcome {
        self.md.exec(args)
    }

    /// Remember a container to remove if the test fails.
    fn made(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    /// A short piece of the token, for names and marker files.
    fn tag(&self) -> &str {
        &self.token[..12]
    }

    /// The token of the test's exec'd shells (it holds the test's token).
    fn exec_token(&self) -> String {
        format!("exec-{}", self.token)
    }

    /// A container command that runs until stopped, with the test's token
    /// in the command line of the container's PID 1.
    fn busy(&self) -> Vec<String> {
        self.sh("while :; do sleep 1; done")
    }

    /// `sh -c SCRIPT TOKEN`, for a container's PID 1.
    fn sh(&self, script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into(), self.token.clone()]
    }

    /// `sh -c SCRIPT exec-TOKEN`, for an exec'd command.
    fn xsh(&self, script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into(), self.exec_token()]
    }

    /// `run -d OPTIONS busybox COMMAND...`, which must succeed: the full ID
    /// it printed.
    fn run_d<S: AsRef<str>>(&self, options: &[&str], command: &[S]) -> String {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(options);
        args.push(IMAGE);
        args.extend(command.iter().map(AsRef::as_ref));
        let out = self.exec(&args);
        let id = out.success().trim_end().to_string();
        assert!(
            is_full_id(&id),
            "`run -d` prints the container's full ID: {out:#?}"
        );
        self.made(&id);
        id
    }

    /// A running container whose PID 1 ran `script` (as `sh -c`) before it
    /// went on forever: returns once the script is done, seen through a
    /// file the container makes in a volume, `/ready`.
    fn run_ready(&self, options: &[&str], script: &str) -> (String, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix("mydocker-exec-ready-")
            .tempdir()
            .expect("a directory for the volume");
        let volume = format!("{}:/ready", dir.path().display());
        let mut all = vec!["-v", volume.as_str()];
        all.extend_from_slice(options);
        let id = self.run_d(
            &all,
            &self.sh(&format!(
                "{script}\ntouch /ready/ready; while :; do sleep 1; done"
            )),
        );
        let flag = dir.path().join("ready");
        assert!(
            eventually(Duration::from_secs(10), || flag.exists()),
            "the container's PID 1 should have run its script within 10 s: {:#?}",
            self.exec(&["logs", &id])
        );
        (id, dir)
    }

    /// `mydocker exec OPTIONS CONTAINER COMMAND...`, ready to run.
    fn exec_command<S: AsRef<str>>(
        &self,
        options: &[&str],
        container: &str,
        command: &[S],
    ) -> Command {
        let mut args = vec!["exec"];
        args.extend_from_slice(options);
        args.push(container);
        args.extend(command.iter().map(AsRef::as_ref));
        self.md.command_as_given(&args)
    }

    /// `mydocker exec OPTIONS CONTAINER COMMAND...` to the end.
    fn exec_in<S: AsRef<str>>(&self, options: &[&str], container: &str, command: &[S]) -> Outcome {
        self.md
            .finish(self.exec_command(options, container, command))
    }

    /// [`T::exec_in`] that must succeed: its standard output.
    fn output<S: AsRef<str>>(&self, container: &str, command: &[S]) -> String {
        let out = self.exec_in(&[], container, command);
        assert!(
            out.code == Some(0),
            "`exec {container} {}` should succeed: {out:#?}",
            command
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" ")
        );
        out.stdout
    }

    /// Start `mydocker exec OPTIONS CONTAINER COMMAND...` and return at
    /// once, its input piped when `stdin`.
    fn spawn_exec<S: AsRef<str>>(
        &self,
        options: &[&str],
        container: &str,
        command: &[S],
        stdin: bool,
    ) -> Spawned {
        let command = self.exec_command(options, container, command);
        match stdin {
            true => self.md.spawn_with_stdin(command),
            false => self.md.spawn_command(command),
        }
    }

    /// The short IDs `ps -q` lists: the running containers.
    fn running(&self) -> Vec<String> {
        self.exec(&["ps", "-q"])
            .success()
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Every path under the state root, the image store aside.
    fn paths(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        self.md.walk_outside_images(&mut |path, _| {
            found.insert(path.to_path_buf());
        });
        found
    }

    /// Make the state root what it is once a container has come and gone,
    /// and return every path below it but the image store.
    fn warm_up(&self) -> BTreeSet<PathBuf> {
        self.exec(&["run", "--rm", IMAGE, "true"]).success();
        self.paths()
    }

    /// Assert that nothing of container `id` is left: not in `ps -a`, no
    /// cgroup, none of `procs` (PID, start time) alive and no process with
    /// the test's token, no mount under the state root, and (given
    /// `before`, from [`T::warm_up`]) no new path under the state root.
    fn assert_gone(
        &self,
        id: &str,
        procs: &[(u32, Option<u64>)],
        before: Option<&BTreeSet<PathBuf>>,
    ) {
        let short = &id[..12];
        let listed = self.exec(&["ps", "-aq"]);
        assert!(
            !listed.success().contains(short),
            "container {short} was removed, yet `ps -a` lists it: {listed:#?}"
        );
        assert!(
            eventually(Duration::from_secs(3), || cgroups_of_container(id)
                .is_empty()),
            "container {short} was removed, yet its cgroups are still there: {:?}",
            cgroups_of_container(id)
        );
        let living: Vec<_> = procs.iter().filter(|(p, s)| alive(*p, *s)).collect();
        assert!(
            living.is_empty(),
            "container {short} was removed, yet its processes {living:?} live"
        );
        assert!(
            eventually(Duration::from_secs(3), || pids_with(&self.token)
                .is_empty()),
            "container {short} was removed, yet processes of the test's containers or execs live: {:?}",
            pids_with(&self.token)
        );
        let mounts = self.md.mounts_left();
        assert!(
            mounts.is_empty(),
            "container {short} was removed, yet mounts under the state root remain:\n{}",
            mounts.join("\n")
        );
        if let Some(before) = before {
            let now = self.paths();
            let added: Vec<_> = now.difference(before).collect();
            assert!(
                added.is_empty(),
                "container {short} was removed, yet these paths remain under the state root: {added:#?}"
            );
        }
    }
}

impl Drop for T {
    /// After a failure, or when the test left something: remove what the
    /// test made, so that a failing binary leaves nothing running (`rm -f`,
    /// then SIGKILL by PID to what still runs in the test's containers'
    /// cgroups or carries its token).
    fn drop(&mut self) {
        // A test that passed: check that nothing of it is left, and if
        // something is, clean up first, then fail.
        let mut left_over = None;
        if !std::thread::panicking() {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let left =
                || -> Vec<PathBuf> { ids.iter().flat_map(|id| cgroups_of_container(id)).collect() };
            let tokened = pids_with(&self.token);
            if !eventually(Duration::from_secs(3), || left().is_empty()) {
                left_over = Some(format!(
                    "the test's containers are gone, but their cgroups are not: {:?}",
                    left()
                ));
            } else if !tokened.is_empty() {
                left_over = Some(format!(
                    "the test's containers are gone, but processes of theirs live: {tokened:?}"
                ));
            } else {
                return;
            }
        }
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Ok(entries) = std::fs::read_dir(self.md.root().join("containers")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_full_id(&name) {
                    ids.insert(name);
                }
            }
        }
        if !ids.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".to_string()];
            args.extend(ids.iter().cloned());
            quietly(self.md.command(&args));
        }
        kill_and_unmount(&ids, &self.token, self.md.root());
        if let Some(message) = left_over {
            panic!("{message}");
        }
    }
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------
// What the host shows
// ---------------------------------------------------------------------

/// The running container `id` as /proc shows it: the host PID of its PID
/// 1, and every process in its cgroups (PID, start time).
struct Seen {
    init: u32,
    procs: Vec<(u32, Option<u64>)>,
}

fn look_at(id: &str) -> Seen {
    let (init, procs) = container_processes(id);
    Seen {
        init,
        procs: procs.iter().map(|p| (*p, start_time(*p))).collect(),
    }
}

/// Whether process `pid` is in a PID namespace below the host's (its
/// `NSpid:` line has more than one number).
fn in_a_child_pid_namespace(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
            Some(line["NSpid:".len()..].split_whitespace().count() > 1)
        })
        .unwrap_or(false)
}

/// The host PID of the command that `mydocker exec` (`exec`, started by
/// the test) runs: its one child, a process of a PID namespace below the
/// host's (the container's), since exec forks after setns. Its command
/// line carries `token`.
fn the_exec_pid(exec: &Spawned, token: &str) -> u32 {
    let mut found = Vec::new();
    eventually(Duration::from_secs(5), || {
        found = children_of(exec.id());
        found.len() == 1
    });
    assert!(
        found.len() == 1 && in_a_child_pid_namespace(found[0]),
        "`mydocker exec` (PID {}) should have one child, the command, in the container's PID namespace (setns, then fork); its children: {found:?}",
        exec.id()
    );
    let pid = found[0];
    assert!(
        pids_with(token).contains(&pid),
        "the child of `mydocker exec` ({pid}) should be the command, `sh -c ... {token}`"
    );
    pid
}

/// The namespace behind /proc/PID/ns/KIND as the host sees it
/// (`net:[4026532]`).
fn namespace_of(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
}

/// The interfaces named in the text of a /proc/net/dev.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// `ps` (busybox's: `PID USER COMMAND`) as (PID, command line) pairs.
fn parse_ps(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("PID"))
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pid = words.next()?.parse().ok()?;
            let _user = words.next()?;
            Some((pid, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The value of field `name` (`PPid`, `Pid`, ...) in the text of a
/// /proc/PID/status.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

/// Assert what a `sh -c 'echo "me $$"; ps' exec-TOKEN` run by exec
/// printed: the container's PID 1 (its command, with the test's token),
/// the exec'd shell itself (a PID that is not 1), and nothing of the host.
/// The exec'd shell's PID in the container.
fn check_ps(out: &Outcome, token: &str, exec_token: &str) -> u32 {
    let text = out.success();
    let me: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("me "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the exec'd shell should print its PID: {out:#?}"));
    let rows = parse_ps(text);
    let pid1 = rows.iter().find(|(pid, _)| *pid == 1);
    assert!(
        pid1.is_some_and(|(_, cmd)| cmd.contains(token) && !cmd.contains(exec_token)),
        "`ps` in the exec'd command lists the container's PID 1, its command (`sh -c ... TOKEN`): {out:#?}"
    );
    assert_ne!(
        me, 1,
        "the exec'd command is not PID 1 of anything: it joined the container's PID namespace, where PID 1 is the container's command: {out:#?}"
    );
    assert!(
        rows.iter()
            .any(|(pid, cmd)| *pid == me && cmd.contains(exec_token)),
        "`ps` in the exec'd command lists the exec'd shell itself (PID {me}): after setns(CLONE_NEWPID) only a child (fork) is in the container's PID namespace, so $$ must be one of its PIDs: {out:#?}"
    );
    let strangers: Vec<_> = rows
        .iter()
        .filter(|(_, cmd)| !cmd.contains(token) && !cmd.starts_with("sleep"))
        .collect();
    assert!(
        strangers.is_empty(),
        "`ps` in the exec'd command shows only the container's processes (its command and `sleep`, the exec'd shell and `ps`), nothing of the host; also: {strangers:?}\n{out:#?}"
    );
    me
}

/// Replace the value of `"key":` in a pretty-printed JSON record with
/// `value` (JSON text).
fn set_json_field(json: &str, key: &str, value: &str) -> String {
    let needle = format!("\"{key}\":");
    let at = json.find(&needle).unwrap_or_else(|| {
        panic!("the container's record (containers/ID/config.json, as the book's record.rs writes it) has no field {key:?}:\n{json}")
    });
    let start = at + needle.len();
    let rest = &json[start..];
    let end = start + rest.find([',', '\n', '}']).unwrap_or(rest.len());
    format!("{} {value}{}", &json[..start], &json[end..])
}

/// Replace a file as mydocker replaces its records: a temporary file,
/// renamed over the old one.
fn replace_file(path: &Path, content: &str) {
    let temp = path.with_extension("test-edit");
    std::fs::write(&temp, content).expect("write the edited record");
    std::fs::rename(&temp, path).expect("rename the edited record into place");
}

/// An exclusive flock(2) of `path`, taken at once (or the test fails),
/// held until the file is dropped: what a live monitor holds.
fn hold_lock(path: &Path) -> File {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: flock(2) takes only a descriptor, which `file` keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(
        locked,
        0,
        "flock({}): {} (the container's monitor should be dead, and nobody else holds its lock)",
        path.display(),
        std::io::Error::last_os_error()
    );
    file
}

/// Assert that `out` is exec's refusal: exit 125, the one line `want` on
/// stderr, nothing on stdout.
fn assert_refused(out: &Outcome, want: &str, what: &str) {
    assert_eq!(
        (out.code, out.stderr.as_str(), out.stdout.as_str()),
        (Some(125), want, ""),
        "{what}: exec refuses with exit code 125 and one line, `{}`, and runs nothing: {out:#?}",
        want.trim_end()
    );
}

/// A file on the host that the test's commands try to make: it must never
/// appear. Removed if it did.
struct Marker {
    name: String,
    host: PathBuf,
}

impl Marker {
    fn new(t: &T, what: &str) -> Marker {
        let name = format!("marker-{what}-{}", t.tag());
        Marker {
            host: Path::new("/tmp").join(&name),
            name,
        }
    }

    /// The path the command writes: `/tmp/NAME`, in whatever root it has.
    fn path(&self) -> String {
        self.host.to_string_lossy().into_owned()
    }

    /// Assert that no command made it: not on the host, not anywhere
    /// under the state root (the containers' own files).
    fn assert_absent(&self, t: &T, what: &str) {
        assert!(
            !self.host.exists(),
            "{what}: a command that must not run made {} on the host",
            self.host.display()
        );
        let made = t.md.paths_named(&self.name);
        assert!(
            made.is_empty(),
            "{what}: a command that must not run made {} in a container: {made:?}",
            self.path()
        );
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host);
    }
}

// ---------------------------------------------------------------------
// Inside: files, hostname, network, namespaces
// ---------------------------------------------------------------------

#[test]
fn the_command_sees_the_containers_files_hostname_and_network() {
    let t = T::new();
    let before = t.warm_up();
    let vol = tempfile::Builder::new()
        .prefix("mydocker-exec-vol-")
        .tempdir()
        .unwrap();
    std::fs::write(vol.path().join("from-host"), "from the host\n").unwrap();
    let volume = format!("{}:/vol", vol.path().display());
    let (id, _ready) = t.run_ready(&["-v", &volume], "echo made-by-pid-1 > /made");
    let seen = look_at(&id);
    // Its files: its own layer, its volumes; nothing of the host's.
    assert_eq!(
        t.output(&id, &["cat", "/made"]),
        "made-by-pid-1\n",
        "the exec'd command sees the file the container's PID 1 wrote: it joined the container's mount namespace"
    );
    assert_eq!(
        t.output(&id, &["cat", "/vol/from-host"]),
        "from the host\n",
        "the exec'd command sees the container's volumes"
    );
    let mine = format!("exec-wrote-{}", t.tag());
    t.output(
        &id,
        &t.xsh(&format!(
            "echo from-exec > /vol/from-exec; echo x > /{mine}"
        )),
    );
    assert_eq!(
        std::fs::read_to_string(vol.path().join("from-exec")).unwrap_or_default(),
        "from-exec\n",
        "what the exec'd command writes into a volume reaches the host's directory"
    );
    assert!(
        !Path::new("/").join(&mine).exists() && !t.md.paths_named(&mine).is_empty(),
        "what the exec'd command writes to / lands in the container's layer under the state root, not in the host's /"
    );
    let host_only = Path::new("/tmp").join(format!("host-only-{}", t.tag()));
    std::fs::write(&host_only, "x").unwrap();
    let out = t.exec_in(&[], &id, &["test", "-e", &host_only.to_string_lossy()]);
    std::fs::remove_file(&host_only).unwrap();
    assert_eq!(
        out.code,
        Some(1),
        "a file of the host's /tmp is not in the container's: {out:#?}"
    );
    // Its hostname: the short ID.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        t.output(&id, &["hostname"]),
        format!("{}\n", &id[..12]),
        "the exec'd command has the container's hostname (its short ID): it joined the UTS namespace"
    );
    // Its network: only lo.
    let dev = t.output(&id, &["cat", "/proc/net/dev"]);
    assert_eq!(
        interfaces(&dev),
        ["lo"],
        "the exec'd command sees the container's network interfaces, only lo: it joined the network namespace\n{dev}"
    );
    let links = t.output(&id, &["ip", "-o", "link"]);
    assert!(
        links.lines().count() == 1 && links.contains(" lo:"),
        "`ip link` in the exec'd command lists lo alone: {links}"
    );
    // Every namespace is the container's PID 1's, as the host names them.
    let script = "for n in ipc uts net pid mnt cgroup; do echo \"$n $(readlink /proc/self/ns/$n) $(readlink /proc/1/ns/$n)\"; done";
    let out = t.output(&id, &t.xsh(script));
    for line in out.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let [kind, own, pid1] = words[..] else {
            panic!("unexpected output: {out}");
        };
        let host_view = namespace_of(seen.init, kind);
        assert!(
            own == pid1 && own == host_view,
            "the exec'd command's {kind} namespace ({own}) is the container's PID 1's ({pid1} inside, {host_view} from the host):\n{out}"
        );
    }
    assert_eq!(out.lines().count(), 6, "{out}");
    // A container that set a hostname of its own.
    let named = format!("b-{}", t.tag());
    let (other, _ready2) = t.run_ready(&[], &format!("hostname {named}"));
    assert_eq!(
        t.output(&other, &["hostname"]),
        format!("{named}\n"),
        "the exec'd command has the hostname the container set"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name,
        "the host's hostname is untouched"
    );
    t.exec(&["rm", "-f", &id, &other]).success();
    t.assert_gone(&id, &seen.procs, None);
    t.assert_gone(&other, &[], Some(&before));
}

#[test]
fn the_command_is_in_the_containers_pid_namespace_and_sees_nothing_of_the_host() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let seen = look_at(&id);
    let out = t.exec_in(&[], &id, &t.xsh("echo \"me $$\"; ps"));
    let me = check_ps(&out, &t.token, &t.exec_token());
    // Its own /proc/self: a process of the container's PID namespace, its
    // parent (`mydocker exec`) outside it.
    let status = t.output(&id, &["cat", "/proc/self/status"]);
    let pid: u32 = status_field(&status, "Pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("/proc/self/status has no Pid: {status}"));
    assert!(
        pid > 1 && pid != me,
        "the exec'd command has a PID of its own in the container (not 1): {status}"
    );
    assert_eq!(
        status_field(&status, "PPid"),
        Some("0"),
        "the exec'd command's parent, `mydocker exec`, is outside the container's PID namespace: PPid 0\n{status}"
    );
    // The same from the host: a process in the container's PID namespace.
    let mut exec = t.spawn_exec(
        &[],
        &id,
        &t.xsh("echo ready; while :; do sleep 1; done"),
        false,
    );
    exec.expect_line("ready");
    let host_pid = the_exec_pid(&exec, &t.exec_token());
    assert_eq!(
        namespace_of(host_pid, "pid"),
        namespace_of(seen.init, "pid"),
        "the exec'd command's PID namespace is the container's"
    );
    signal(exec.id(), libc::SIGTERM);
    let out = exec.wait();
    assert_eq!(out.code, Some(143), "{out:#?}");
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
}

// ---------------------------------------------------------------------
// The cgroup
// ---------------------------------------------------------------------

#[test]
fn the_command_is_in_the_containers_cgroup_and_its_pids_limit_counts_it() {
    let t = T::new();
    let id = t.run_d(&["--pids-limit", "5"], &t.busy());
    let seen = look_at(&id);
    let out = t.output(
        &id,
        &t.xsh("cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup"),
    );
    let (own, pid1) = out.split_once("---\n").unwrap_or((&out, ""));
    assert_eq!(
        own, pid1,
        "the exec'd command's /proc/self/cgroup is exactly the container's PID 1's /proc/1/cgroup"
    );
    // From the host: its PID in the container's cgroup.procs, in every
    // hierarchy where the container has a directory.
    let mut exec = t.spawn_exec(&["-i"], &id, &t.xsh("echo ready; read x; echo bye"), true);
    exec.expect_line("ready");
    let host_pid = the_exec_pid(&exec, &t.exec_token());
    let cgroups = cgroups_of_container(&id);
    assert!(!cgroups.is_empty());
    for dir in &cgroups {
        assert!(
            processes_in(std::slice::from_ref(dir)).contains(&host_pid),
            "the exec'd command (host PID {host_pid}) is in the container's cgroup {}",
            dir.display()
        );
    }
    exec.send_line("go");
    exec.expect_line("bye");
    assert_eq!(exec.wait().code, Some(0));
    // The limit counts it: 5 processes at most, and the container has 2
    // (sh and, most of the time, sleep), the exec'd shell a third. Of 8
    // background sleeps, 3 could start at the very most. (They must not
    // keep exec's output open: the test reads it to its end.)
    let out = t.exec_in(
        &[],
        &id,
        &t.xsh(
            "pids=; for i in 1 2 3 4 5 6 7 8; do sleep 30 >/dev/null 2>&1 & pids=\"$pids $!\"; done; kill $pids",
        ),
    );
    assert!(
        out.stderr.contains("can't fork"),
        "a fork loop in an exec'd command is stopped by the container's --pids-limit (`sh: can't fork`): the exec'd process must join the container's cgroup before it runs: {out:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
}

#[test]
fn the_cgroups_pids_limit_refuses_an_exec_beyond_it() {
    let t = T::new();
    // A PID 1 that never forks: the container holds exactly 1 process.
    let id = t.run_d(&["--pids-limit", "2"], &["sleep", "1000"]);
    let seen = look_at(&id);
    let mut first = t.spawn_exec(&[], &id, &t.xsh("echo ready; exec sleep 60"), false);
    first.expect_line("ready");
    // 2 of 2. Moving a third process in is not refused by the kernel (only
    // a fork is): exec must check, and start nothing.
    let marker = Marker::new(&t, "pids");
    let out = t.exec_in(&[], &id, &["touch", &marker.path()]);
    assert!(
        out.code == Some(125)
            && out.stderr.lines().count() == 1
            && out.stderr.contains("pids limit"),
        "an exec that would take the container over its --pids-limit (2, with its PID 1 and one exec'd sleep) is refused with one line naming the pids limit, exit 125: {out:#?}"
    );
    signal(first.id(), libc::SIGTERM);
    assert_eq!(
        first.wait().code,
        Some(143),
        "SIGTERM to the first exec ends its sleep"
    );
    let out = t.exec_in(&[], &id, &["ls", "/tmp"]);
    assert!(
        out.code == Some(0) && !out.stdout.contains(&marker.name),
        "the refused command never ran (no {} in the container), and with a process free again, exec works: {out:#?}",
        marker.path()
    );
    marker.assert_absent(&t, "a refused exec");
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
}

#[test]
fn the_command_is_in_the_containers_cgroup_from_its_first_instruction() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let pid1 = t.output(&id, &["cat", "/proc/1/cgroup"]);
    // A binary that lets the command go first and writes it into the
    // cgroup after races its own command, and on a fast machine may win
    // every time: run_slowed makes it lose. From the moment `mydocker
    // exec` has forked the command's process, each of exec's own system
    // calls waits 30 ms (the command runs at full speed): a write into
    // cgroup.procs after the release comes long after `cat` has read its
    // /proc/self/cgroup. A binary that writes it first is only slower.
    let command = t.exec_command(&[], &id, &["cat", "/proc/self/cgroup"]);
    let out = run_slowed(command, Duration::from_millis(30), t.md.timeout());
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), pid1.as_str()),
        "the exec'd command is in the container's cgroup before it runs a single instruction (/proc/self/cgroup read first thing is the container's PID 1's): write its PID into cgroup.procs, then let it go: {out:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

/// Cgroups of the test's own, a new one at the top of every hierarchy
/// the host mounts (controllers, named ones such as name=systemd, the
/// unified one): a caller of `exec` moved there is in other cgroups than
/// the container's PID 1 in every hierarchy, as one started from another
/// login session or service would be. Removed when dropped (once empty).
struct ElsewhereCgroups {
    dirs: Vec<PathBuf>,
    /// Their `cgroup.procs` files, ready for a pre_exec hook.
    procs: Vec<std::ffi::CString>,
}

impl ElsewhereCgroups {
    fn new() -> ElsewhereCgroups {
        let name = format!("mydocker-exec-test-{}", &unique_token()[..12]);
        let mut found = ElsewhereCgroups {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        for line in host_mounts().lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
                continue;
            }
            let mount = PathBuf::from(left.split(' ').nth(4).unwrap_or_default());
            let dir = mount.join(&name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            found.dirs.push(dir.clone());
            // A v1 cpuset cgroup takes no process before it has CPUs and
            // memory nodes: those of the hierarchy's root.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(mount.join(file)) {
                    std::fs::write(dir.join(file), value.trim())
                        .unwrap_or_else(|e| panic!("write {}/{file}: {e}", dir.display()));
                }
            }
            let procs = dir.join("cgroup.procs");
            found.procs.push(
                std::ffi::CString::new(procs.to_string_lossy().into_owned())
                    .expect("a path without NUL"),
            );
        }
        found
    }

    /// Make `command` start in these cgroups: its process moves itself
    /// there (writes 0 into each cgroup.procs) before it executes.
    fn enter(&self, command: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the hook makes only system calls (open, write, close) on
        // strings made before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, move || {
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
    }
}

impl Drop for ElsewhereCgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let removed = eventually(Duration::from_secs(5), || {
                !dir.exists() || std::fs::remove_dir(dir).is_ok()
            });
            if !removed && !std::thread::panicking() {
                panic!("could not remove the test's cgroup {}", dir.display());
            }
        }
    }
}

#[test]
fn the_command_is_in_the_cgroups_of_the_containers_pid_1_whoever_calls_exec() {
    // Made first, dropped last: once the test's processes are gone.
    let elsewhere = ElsewhereCgroups::new();
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    // The container's PID 1 is in the cgroups its `run` gave it, and in
    // those of `run`'s caller in every hierarchy where mydocker made none
    // for it. `mydocker exec` is called from other cgroups everywhere.
    let mut command = t.exec_command(
        &[],
        &id,
        &t.xsh("cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup"),
    );
    elsewhere.enter(&mut command);
    let out = t.md.finish(command);
    let text = out.success();
    let (own, pid1) = text.split_once("---\n").unwrap_or((text, ""));
    let differ: Vec<String> = own
        .lines()
        .zip(pid1.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("{a}   (PID 1: {b})"))
        .collect();
    assert!(
        own == pid1,
        "the exec'd command is in exactly the cgroups of the container's PID 1, in every hierarchy (its /proc/self/cgroup is the container's /proc/1/cgroup), whatever cgroups `mydocker exec` itself was started in. These lines differ:\n{}\n{out:#?}",
        differ.join("\n")
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

// ---------------------------------------------------------------------
// Environment, working directory, exit codes, arguments
// ---------------------------------------------------------------------

/// The variables `env` printed, name to value; each name once.
fn env_of(out: &Outcome) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in out.success().lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        assert!(
            vars.insert(k.to_string(), v.to_string()).is_none(),
            "{k} is in the environment twice: {out:#?}"
        );
    }
    vars
}

#[test]
fn the_environment_is_the_containers_then_execs_own() {
    let t = T::new();
    let env = ["/bin/busybox", "env"];
    let id = t.run_d(
        &["-e", "A=run", "-e", "B=run", "-e", "SPACED=x y"],
        &t.busy(),
    );
    let base = env_of(&t.exec_in(&[], &id, &env));
    let names: Vec<&str> = base.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["A", "B", "HOME", "HOSTNAME", "PATH", "SPACED"],
        "the exec'd command gets the container's environment (PATH, HOSTNAME, HOME and run's -e), nothing of the caller's: {base:#?}"
    );
    assert_eq!(base["A"], "run");
    assert_eq!(base["SPACED"], "x y");
    assert_eq!(base["HOSTNAME"], id[..12]);
    // exec's own -e: added, or replacing; the last one wins; -e K takes
    // the caller's K, nothing if the caller has none.
    let absent = format!("ABSENT_{}", t.tag());
    let mut command = t.exec_command(
        &[
            "-e",
            "B=exec",
            "-e",
            "C=1",
            "--env",
            "C=2",
            "-e",
            "FROM_CALLER",
            "-e",
            &absent,
            "-e",
            "PATH=/x:/bin",
            "-e",
            "EMPTY=",
            "-e",
            "EQ=a=b",
        ],
        &id,
        &env,
    );
    command
        .env("FROM_CALLER", "the caller's value")
        .env_remove(&absent)
        .env("NOT_PASSED", "x");
    let vars = env_of(&t.md.finish(command));
    let mut want = base.clone();
    for (k, v) in [
        ("B", "exec"),
        ("C", "2"),
        ("FROM_CALLER", "the caller's value"),
        ("PATH", "/x:/bin"),
        ("EMPTY", ""),
        ("EQ", "a=b"),
    ] {
        want.insert(k.to_string(), v.to_string());
    }
    assert_eq!(
        vars, want,
        "exec -e adds to the container's environment or replaces a value (the last -e wins, -e K takes the caller's K), and nothing else of the caller's"
    );
    // -t adds TERM=xterm (no terminal is needed without -i).
    let vars = env_of(&t.exec_in(&["-t"], &id, &env));
    let mut want = base.clone();
    want.insert("TERM".into(), "xterm".into());
    assert_eq!(vars, want, "exec -t adds TERM=xterm");
    // -t -i needs a terminal on standard input.
    let marker = Marker::new(&t, "ti");
    let out = t.exec_in(&["-t", "-i"], &id, &["touch", &marker.path()]);
    assert_eq!(
        out.code,
        Some(125),
        "exec -ti with a standard input that is not a terminal is refused: {out:#?}"
    );
    out.one_line_failure();
    // Bad -e: refused like run's, before anything runs.
    for bad in ["=x", "", "a b=1", "A\tB=1"] {
        let out = t.exec_in(&[&format!("--env={bad}")], &id, &["touch", &marker.path()]);
        assert_eq!(
            out.code,
            Some(125),
            "exec -e {bad:?} is refused with 125: {out:#?}"
        );
        out.one_line_failure();
    }
    marker.assert_absent(&t, "refused exec -ti and -e");
    let out = t.exec_in(&[], &id, &["test", "-e", &marker.path()]);
    assert_eq!(
        out.code,
        Some(1),
        "and nothing ran in the container: {out:#?}"
    );
    // A container run with -t has TERM=xterm: its exec'd commands too.
    let tty = t.run_d(&["-t"], &t.busy());
    let vars = env_of(&t.exec_in(&[], &tty, &env));
    assert_eq!(
        vars.get("TERM").map(String::as_str),
        Some("xterm"),
        "a container run with -t has TERM=xterm, and so has what exec runs in it: {vars:#?}"
    );
    t.exec(&["rm", "-f", &id, &tty]).success();
    t.assert_gone(&id, &[], None);
    t.assert_gone(&tty, &[], None);
}

#[test]
fn the_working_directory_is_w_or_the_root() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    assert_eq!(t.output(&id, &["pwd"]), "/\n", "without -w: /");
    let out = t.exec_in(&["-w", "/tmp"], &id, &["pwd"]);
    assert_eq!(out.success(), "/tmp\n");
    // A directory only the container has: chdir happens in its files.
    let dir = format!("/only-in-the-container-{}", t.tag());
    t.output(&id, &["mkdir", &dir]);
    assert!(!Path::new(&dir).exists());
    let out = t.exec_in(&["--workdir", &dir], &id, &["pwd"]);
    assert_eq!(
        out.success(),
        format!("{dir}\n"),
        "-w names a directory in the container's files"
    );
    // Relative: refused before anything runs.
    let marker = Marker::new(&t, "workdir");
    for relative in ["tmp", "./tmp", ""] {
        let out = t.exec_in(
            &[&format!("--workdir={relative}")],
            &id,
            &["touch", &marker.path()],
        );
        assert_eq!(
            out.code,
            Some(125),
            "-w {relative:?} (not absolute) is refused with 125: {out:#?}"
        );
        out.one_line_failure();
    }
    // Missing: the command cannot start there, 126.
    let missing = format!("/nope-{}", t.tag());
    let out = t.exec_in(&["-w", &missing], &id, &["touch", &marker.path()]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(126),
            format!("mydocker: chdir({missing:?}): No such file or directory\n").as_str()
        ),
        "a -w that does not exist in the container: one line and 126: {out:#?}"
    );
    marker.assert_absent(&t, "exec with a bad -w");
    let out = t.exec_in(&[], &id, &["test", "-e", &marker.path()]);
    assert_eq!(
        out.code,
        Some(1),
        "and nothing ran in the container: {out:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

#[test]
fn exit_codes_are_the_commands_and_arguments_arrive_intact() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let cases: [(&[&str], i32); 5] = [
        (&["true"], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 42"], 42),
        (&["sh", "-c", "kill -TERM $$"], 143),
        (&["sh", "-c", "kill -KILL $$"], 137),
    ];
    for (command, code) in cases {
        let out = t.exec_in(&[], &id, command);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(code), "", ""),
            "`exec {}` exits with the command's code, or 128 + the signal that killed it: {out:#?}",
            command.join(" ")
        );
    }
    let out = t.exec_in(&[], &id, &["no-such-command"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(127),
            "mydocker: exec \"no-such-command\": executable file not found in $PATH\n"
        ),
        "{out:#?}"
    );
    let out = t.exec_in(&[], &id, &["/etc"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(126), "mydocker: exec \"/etc\": permission denied\n"),
        "{out:#?}"
    );
    // Everything from the command on is the command's, flags like exec's
    // own included.
    let args = [
        "a b", "", "\"q\"", "it's", "-x", "--flag", "-i", "-e", "K=V", "-w", "/", "$HOME", "*",
        "--",
    ];
    let mut command = vec!["printf", "<%s>\\n"];
    command.extend_from_slice(&args);
    let out = t.exec_in(&[], &id, &command);
    let want: String = args.iter().map(|a| format!("<{a}>\n")).collect();
    assert_eq!(
        out.success(),
        want,
        "the arguments reach the command exactly (spaces, empty ones, quotes, flags)"
    );
    let out = t.exec_in(&[], &id, &["ls", "-ld", "/"]);
    assert!(
        out.success().starts_with('d'),
        "`exec C ls -ld /` passes -ld to ls: {out:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

// ---------------------------------------------------------------------
// Input, output, signals
// ---------------------------------------------------------------------

#[test]
fn i_pipes_standard_input_in_and_without_it_the_command_reads_dev_null() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    // -i: the caller's input, as it comes.
    let mut exec = t.spawn_exec(
        &["-i"],
        &id,
        &t.xsh("while read l; do echo \"got $l\"; done; echo end"),
        true,
    );
    exec.send_line("one");
    exec.expect_line("got one");
    exec.send_line("two words");
    exec.expect_line("got two words");
    exec.close_stdin();
    exec.expect_line("end");
    assert_eq!(exec.wait().code, Some(0));
    // A bigger input, through a file.
    let data: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let mut command = t.exec_command(&["-i"], &id, &["cat"]);
    command.stdin(File::open(file.path()).unwrap());
    let out = t.md.finish(command);
    assert!(
        out.code == Some(0) && out.stdout == data,
        "`exec -i C cat` copies its input whole ({} bytes in, {} out): {:?}",
        data.len(),
        out.stdout.len(),
        out.stderr
    );
    // Without -i: /dev/null, even when the caller's input is a pipe that
    // stays open. (Nothing is written to it: exec may well have ended
    // before the test could write.)
    let mut exec = t.spawn_exec(
        &[],
        &id,
        &t.xsh("readlink /proc/self/fd/0; cat; echo end"),
        true,
    );
    let ended = eventually(Duration::from_secs(10), || !exec.is_running());
    let out = exec.wait();
    assert!(
        ended,
        "without -i the command's standard input is /dev/null: `cat` ends at once; it still waited for input after 10 s: {out:#?}"
    );
    assert_eq!(
        out.stdout, "/dev/null\nend\n",
        "without -i the command's standard input is /dev/null, not the caller's: {out:#?}"
    );
    // What exec prints is the caller's, not the container's log.
    let out = t.exec_in(&[], &id, &["echo", "not-for-the-log"]);
    assert_eq!(out.success(), "not-for-the-log\n");
    let logs = t.exec(&["logs", &id]);
    assert!(
        !logs.stdout.contains("not-for-the-log") && !logs.stdout.contains("got one"),
        "exec's output goes to its caller, not to the container's log: {logs:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

#[test]
fn descriptors_of_the_caller_never_reach_the_command() {
    let t = T::new();
    // A file the caller has open on fd 7, not close-on-exec (as a shell
    // leaves `exec 7<FILE`).
    let secret = tempfile::NamedTempFile::new().expect("a temporary file");
    let text = format!("secret-{}", t.tag());
    std::fs::write(secret.path(), &text).expect("write the secret");
    let plain = t.run_d(&[], &t.busy());
    // A container whose /proc is a fake one, with an empty self/fd: exec
    // must not ask the container which descriptors it has.
    let (faked, _ready) = t.run_ready(&[], "mkdir -p /fake/self/fd && mount -o bind /fake /proc");
    for (id, what) in [(&plain, "its own /proc"), (&faked, "a fake /proc")] {
        let mut args = vec!["exec".to_string(), id.clone()];
        args.extend(t.xsh("if cat <&7; then echo; echo leaked; else echo closed; fi"));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("exec 7<\"$0\"; exec \"$@\"")
            .arg(secret.path())
            .arg(t.md.bin())
            .args(&args)
            .env("MYDOCKER_ROOT", t.md.root())
            .stdin(Stdio::null());
        let out = t.md.finish(command);
        assert!(
            out.code == Some(0) && out.stdout == "closed\n" && !out.stdout.contains(&text),
            "in a container with {what}: a descriptor open in exec's caller (fd 7) must not reach the command (mark them close-on-exec from the host's /proc, before setns): {out:#?}"
        );
    }
    t.exec(&["rm", "-f", &plain, &faked]).success();
    t.assert_gone(&plain, &[], None);
    t.assert_gone(&faked, &[], None);
}

#[test]
fn signals_to_exec_reach_the_command() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let cases = [
        (libc::SIGTERM, "TERM", 7),
        (libc::SIGINT, "INT", 8),
        (libc::SIGHUP, "HUP", 9),
    ];
    let mut execs: Vec<Spawned> = cases
        .iter()
        .map(|(_, name, code)| {
            let script =
                format!("trap 'exit {code}' {name}; echo ready; while :; do sleep 0.1; done");
            t.spawn_exec(&[], &id, &t.xsh(&script), false)
        })
        .collect();
    for exec in &mut execs {
        exec.expect_line("ready");
    }
    for (exec, (sig, _, _)) in execs.iter().zip(cases) {
        signal(exec.id(), sig);
    }
    for (exec, (_, name, code)) in execs.into_iter().zip(cases) {
        let out = exec.wait();
        assert_eq!(
            out.code,
            Some(code),
            "SIG{name} sent to `mydocker exec` reaches the command, which exits {code} from its trap (and exec with it): {out:#?}"
        );
    }
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

#[test]
fn kill_9_of_exec_kills_its_command_and_the_container_runs_on() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let seen = look_at(&id);
    let mut exec = t.spawn_exec(
        &[],
        &id,
        &t.xsh("echo ready; while :; do sleep 1; done"),
        false,
    );
    exec.expect_line("ready");
    let host_pid = the_exec_pid(&exec, &t.exec_token());
    let started = start_time(host_pid);
    signal(exec.id(), libc::SIGKILL);
    let out = exec.wait();
    assert_eq!(out.code, None, "exec was killed: {out:#?}");
    assert!(
        eventually(Duration::from_secs(5), || !alive(host_pid, started)),
        "kill -9 of `mydocker exec` ends its command too (PR_SET_PDEATHSIG), as it would end a foreground container: {host_pid} still runs"
    );
    assert!(
        alive(
            seen.init,
            seen.procs
                .iter()
                .find(|p| p.0 == seen.init)
                .and_then(|p| p.1)
        ),
        "the container runs on: its PID 1 lives"
    );
    assert!(
        t.running().iter().any(|s| id.starts_with(s.as_str())),
        "the container is still running (`ps`)"
    );
    let out = t.exec_in(&[], &id, &["ps"]);
    assert!(
        !out.success().contains(&t.exec_token()),
        "nothing of the killed exec runs in the container: {out:#?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
}

// ---------------------------------------------------------------------
// Containers that do not run
// ---------------------------------------------------------------------

#[test]
fn exec_into_a_container_that_does_not_run_is_refused_and_runs_nothing() {
    let t = T::new();
    let marker = Marker::new(&t, "stopped");
    let touch = ["sh", "-c", &format!("touch {}", marker.path())];
    // Stopped.
    let name = format!("stopped-{}", t.tag());
    let id = t.run_d(&["--name", &name], &t.busy());
    assert_eq!(
        t.exec(&["stop", "-t", "0", &name]).success(),
        format!("{name}\n")
    );
    for key in [name.as_str(), &id[..12], id.as_str()] {
        let out = t.exec_in(&[], key, &touch);
        assert_refused(
            &out,
            &format!("mydocker: container {key} is not running\n"),
            "exec into a stopped container",
        );
    }
    // Ended by itself.
    let ended = t.run_d(&[], &["true"]);
    assert!(
        eventually(Duration::from_secs(10), || !t
            .running()
            .iter()
            .any(|s| ended.starts_with(s.as_str()))),
        "`run -d busybox true` should have ended by now"
    );
    let out = t.exec_in(&[], &ended, &touch);
    assert_refused(
        &out,
        &format!("mydocker: container {ended} is not running\n"),
        "exec into a container that has exited",
    );
    marker.assert_absent(&t, "exec into a container that does not run");
    // Removed, and never known.
    t.exec(&["rm", &name, &ended]).success();
    for key in [name.as_str(), &id[..12], &format!("nosuch-{}", t.tag())] {
        let out = t.exec_in(&[], key, &touch);
        assert_refused(
            &out,
            &format!("mydocker: no such container: {key}\n"),
            "exec into a removed or unknown container",
        );
    }
    marker.assert_absent(&t, "exec into a container that does not exist");
    t.assert_gone(&id, &[], None);
    t.assert_gone(&ended, &[], None);
}

/// A process of the test's own that looks like a container's PID 1: the
/// first process of new PID, mount, UTS, IPC and network namespaces, with
/// a tmpfs of its own on /tmp and the hostname `decoy`. A command that
/// wrongly enters its namespaces leaves its marker in that /tmp.
struct Decoy {
    _unshare: Spawned,
    pid: u32,
    started: u64,
}

impl Decoy {
    fn start(t: &T) -> Decoy {
        let mut command = Command::new("unshare");
        command
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs decoy /tmp && hostname decoy && echo ready && exec sleep 1000",
            ])
            // Not the test's token: the decoy is no container of the test.
            .arg(format!("decoy-{}", unique_token()))
            .stdin(Stdio::null());
        let mut unshare = t.md.spawn_command(command);
        unshare.expect_line("ready");
        let children = children_of(unshare.id());
        let [pid] = children[..] else {
            panic!("unshare --fork should have one child: {children:?}");
        };
        let started = start_time(pid).expect("the decoy's start time");
        Decoy {
            _unshare: unshare,
            pid,
            started,
        }
    }

    fn alive(&self) -> bool {
        alive(self.pid, Some(self.started))
    }

    /// Its /tmp/NAME, seen from the host.
    fn tmp(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/tmp/{name}", self.pid))
    }
}

#[test]
fn a_record_pointing_at_another_process_is_refused_and_nothing_runs_in_it() {
    let t = T::new();
    let decoy = Decoy::start(&t);
    let marker = Marker::new(&t, "decoy");
    let touch = ["sh", "-c", &format!("touch {}; hostname", marker.path())];
    let id = t.run_d(&[], &t.busy());
    let short = id[..12].to_string();
    let refused = |what: &str| {
        let out = t.exec_in(&[], &short, &touch);
        assert!(
            !decoy.tmp(&marker.name).exists() && !out.stdout.contains("decoy"),
            "{what}: the command ran in the namespaces of the process the record points at (a host process of the test's, hostname `decoy`, whose /tmp got {}): {out:#?}",
            marker.path()
        );
        marker.assert_absent(&t, what);
        assert_refused(
            &out,
            &format!("mydocker: container {short} is not running\n"),
            what,
        );
        assert!(decoy.alive(), "{what}: the decoy process lives on");
    };
    let seen = look_at(&id);
    let monitor = parent_of(seen.init).expect("the container's PID 1 has a parent, its monitor");
    let dir = t.md.root().join("containers").join(&id);
    let record = dir.join("config.json");
    let original = std::fs::read_to_string(&record)
        .unwrap_or_else(|e| panic!("read the container's record, {}: {e}", record.display()));
    // The monitor dies, and its container with it; its record still says
    // running, with the PID of its PID 1.
    signal(monitor, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || seen
            .procs
            .iter()
            .all(|(p, s)| !alive(*p, *s))),
        "the container's processes die with its monitor"
    );
    // 1. The record says running, and names the decoy with its true start
    // time; but no monitor holds the container's lock: it does not run.
    let edited = set_json_field(&original, "state", "\"running\"");
    let edited = set_json_field(&edited, "pid", &decoy.pid.to_string());
    let edited = set_json_field(&edited, "pid_started", &decoy.started.to_string());
    replace_file(&record, &edited);
    refused("a record that says running, naming a live process, while no monitor holds the container's lock");
    // 2. A live monitor (the test holds its lock) whose record names the
    // decoy, with another start time: the PID was reused.
    let lock = hold_lock(&dir.join("lock"));
    let edited = set_json_field(&edited, "pid_started", &(decoy.started + 1).to_string());
    replace_file(&record, &edited);
    refused("a record whose PID belongs to another process now (another start time)");
    // 3. A live monitor whose container's PID 1 has just died: the record
    // as the monitor wrote it, the process gone.
    replace_file(&record, &original);
    refused("a container whose PID 1 has died while its monitor still holds the lock");
    // 4. A live monitor whose record names a process of the host's own
    // PID namespace, with its true start time: no container's PID 1 is
    // in ours, whatever a record says.
    let host = t.md.spawn_command({
        let mut sleep = Command::new("sleep");
        sleep.arg("1000").stdin(Stdio::null());
        sleep
    });
    let host_started = start_time(host.id()).expect("the host sleep's start time");
    let edited = set_json_field(&original, "pid", &host.id().to_string());
    let edited = set_json_field(&edited, "pid_started", &host_started.to_string());
    replace_file(&record, &edited);
    refused("a record naming a process of the host's PID namespace, with its true start time");
    assert!(
        alive(host.id(), Some(host_started)),
        "the host process the record named lives on"
    );
    drop(host);
    drop(lock);
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
    assert!(decoy.alive(), "rm -f left the decoy alone");
}

// ---------------------------------------------------------------------
// Many at once; the container ends
// ---------------------------------------------------------------------

#[test]
fn ten_parallel_execs_all_work() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let barrier = Barrier::new(10);
    let outs: Vec<(usize, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (t, id, barrier) = (&t, &id, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let out = t.exec_in(
                        &["-e", &format!("N={i}")],
                        id,
                        &t.xsh("echo \"$N $$ $(hostname)\"; exit $N"),
                    );
                    (i, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut pids = BTreeSet::new();
    for (i, out) in &outs {
        assert_eq!(out.code, Some(*i as i32), "exec number {i}: {out:#?}");
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        assert!(
            words.len() == 3 && words[0] == i.to_string() && words[2] == &id[..12],
            "exec number {i} ran in the container: {out:#?}"
        );
        pids.insert(words[1].to_string());
    }
    assert_eq!(pids.len(), 10, "10 execs, 10 processes: {outs:#?}");
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
}

#[test]
fn stop_or_rm_f_while_an_exec_runs_kill_it_and_leave_nothing() {
    let t = T::new();
    let before = t.warm_up();
    for how in ["stop", "rm -f"] {
        let id = t.run_d(&[], &t.busy());
        let seen = look_at(&id);
        let mut exec = t.spawn_exec(
            &[],
            &id,
            &t.xsh("trap '' TERM INT HUP; echo ready; while :; do sleep 1; done"),
            false,
        );
        exec.expect_line("ready");
        let host_pid = the_exec_pid(&exec, &t.exec_token());
        let mut procs = seen.procs.clone();
        procs.push((host_pid, start_time(host_pid)));
        let out = match how {
            "stop" => t.exec(&["stop", "-t", "0", &id]),
            _ => t.exec(&["rm", "-f", &id]),
        };
        assert_eq!(
            out.success(),
            format!("{id}\n"),
            "`{how}` of a container with an exec running returns normally"
        );
        let out = exec.wait();
        assert_eq!(
            out.code,
            Some(137),
            "`{how}` kills the exec'd command with the container (it is in its PID namespace): exec exits 137: {out:#?}"
        );
        assert!(
            !alive(host_pid, procs.last().unwrap().1),
            "the exec'd command is gone"
        );
        if how == "stop" {
            t.exec(&["rm", &id]).success();
        }
        t.assert_gone(&id, &procs, Some(&before));
    }
}

// ---------------------------------------------------------------------
// Kernels before 5.8
// ---------------------------------------------------------------------

/// The checks that matter most, through `exec` as it is called (`emulate`
/// false) or under the old-kernel filter (true). The container was made
/// by [`T::run_ready`] with `echo made-by-pid-1 > /made`.
fn the_important_checks(t: &T, id: &str, init: u32, emulate: bool) {
    let how = if emulate {
        "with setns(pidfd, several namespaces) failing as before Linux 5.8"
    } else {
        "on this kernel"
    };
    let run = |command: &[&str]| -> Outcome {
        let mut command = t.exec_command(&[], id, command);
        if emulate {
            old_kernel::emulate(&mut command);
        }
        t.md.finish(command)
    };
    let ok = |command: &[&str]| -> String {
        let out = run(command);
        assert_eq!(
            out.code,
            Some(0),
            "`exec {}` {how}: {out:#?}",
            command.join(" ")
        );
        out.stdout
    };
    assert_eq!(ok(&["hostname"]), format!("{}\n", &id[..12]), "{how}");
    assert_eq!(ok(&["cat", "/made"]), "made-by-pid-1\n", "{how}");
    let script =
        "for n in ipc uts net pid mnt cgroup; do echo \"$n $(readlink /proc/self/ns/$n)\"; done";
    let xsh = t.xsh(script);
    let out = ok(&xsh.iter().map(String::as_str).collect::<Vec<_>>());
    for line in out.lines() {
        let (kind, ns) = line.split_once(' ').unwrap();
        assert_eq!(
            ns,
            namespace_of(init, kind),
            "{how}: the exec'd command is in the container's {kind} namespace"
        );
    }
    assert_eq!(out.lines().count(), 6, "{how}: {out}");
    let xsh = t.xsh("echo \"me $$\"; ps");
    let out = run(&xsh.iter().map(String::as_str).collect::<Vec<_>>());
    check_ps(&out, &t.token, &t.exec_token());
    let xsh = t.xsh("cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup");
    let out = ok(&xsh.iter().map(String::as_str).collect::<Vec<_>>());
    let (own, pid1) = out.split_once("---\n").unwrap_or((&out, ""));
    assert!(
        own == pid1,
        "{how}: the exec'd command is in the container's cgroup:\n{out}"
    );
    let out = run(&["sh", "-c", "exit 42"]);
    assert_eq!(out.code, Some(42), "{how}: {out:#?}");
    let out = run(&["no-such-command"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(127),
            "mydocker: exec \"no-such-command\": executable file not found in $PATH\n"
        ),
        "{how}: {out:#?}"
    );
}

/// How many seccomp filters the exec'd command runs under
/// (`Seccomp_filters:` of its /proc/self/status).
fn seccomp_filters(t: &T, id: &str, emulate: bool) -> u32 {
    let mut command = t.exec_command(&[], id, &["cat", "/proc/self/status"]);
    if emulate {
        old_kernel::emulate(&mut command);
    }
    let out = t.md.finish(command);
    status_field(out.success(), "Seccomp_filters")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Seccomp_filters in /proc/self/status: {out:#?}"))
}

#[test]
fn on_a_kernel_before_5_8_exec_falls_back_to_the_namespace_files() {
    let t = T::new();
    let (id, _ready) = t.run_ready(&[], "echo made-by-pid-1 > /made");
    let seen = look_at(&id);
    the_important_checks(&t, &id, seen.init, false);
    the_important_checks(&t, &id, seen.init, true);
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &seen.procs, None);
}

#[test]
fn the_old_kernel_emulation_fails_setns_with_several_namespaces() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    // The filter is on `mydocker exec` (where the test installs it before
    // it executes) and on what it starts: one more filter for its
    // command's process than without.
    assert_eq!(
        seccomp_filters(&t, &id, true),
        seccomp_filters(&t, &id, false) + 1,
        "the old-kernel filter should be installed in `mydocker exec` (and inherited by its command)"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, &[], None);
    // What it does, tried in a child process of the test's.
    let probe = old_kernel::probe();
    assert!(
        probe.known_architecture,
        "the old-kernel filter knows the system call numbers of x86_64 and aarch64 only: on this machine it would let everything through, and the fallback tests would test nothing"
    );
    assert_eq!(
        probe.pidfd_two_flags_before, 0,
        "without the filter, this kernel joins two namespaces through a pidfd (Linux 5.8 or later is needed to test the fallback by emulation): {probe:?}"
    );
    assert_eq!(
        probe.pidfd_two_flags,
        libc::EINVAL,
        "with the filter, setns(pidfd, CLONE_NEWUTS | CLONE_NEWIPC) fails with EINVAL, as before Linux 5.8: {probe:?}"
    );
    assert_eq!(
        (
            probe.pidfd_one_flag,
            probe.file_one_flag,
            probe.file_no_flag
        ),
        (0, 0, 0),
        "with the filter, setns with one namespace flag, or none, goes through: {probe:?}"
    );
}
