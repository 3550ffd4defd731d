//! Stage 7: containers that outlive their `run`. `run -d` starts a
//! container in the background and prints its ID; a monitor process per
//! container waits for it, records how it ended and keeps its log; `ps`,
//! `logs`, `stop`, `start` and `rm` look at it and act on it later, by
//! name, full ID or unique ID prefix.
//!
//! The tests look at what a user sees: the commands' output and exit
//! codes, `ps`'s table, the processes in /proc and the container's cgroup
//! (`<hierarchy>/mydocker/<full ID>`, as from stage 6). Every container
//! runs a command that carries a token of the test's own (`sh -c SCRIPT
//! TOKEN`: the token is the shell's `$0`, in its command line), so that
//! the test can tell its processes from anyone else's. A test removes
//! what it made with `rm`; when it fails, [`T`]'s drop removes the rest
//! (`rm -f`, then by PID whatever of its containers still runs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Barrier, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mydocker_stage_tests::{
    alive, cgroup_roots, cgroups_of_container, container_cgroups_of, container_processes,
    eventually, kill_and_unmount, parent_of, pids_with, signal, start_time, stat_field,
    unique_token, walk, Mydocker, Outcome, IMAGE,
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
    _turn: Turn,
}

/// Most tests run side by side; the one that needs a PID nobody else
/// takes runs alone (no other test of this file starts processes then).
static TURNS: RwLock<()> = RwLock::new(());

#[allow(dead_code)] // held, never read
enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

impl T {
    fn new() -> T {
        let turn = Turn::Shared(TURNS.read().unwrap_or_else(|e| e.into_inner()));
        T::with(turn)
    }

    /// A test that no other test of this file runs beside.
    fn alone() -> T {
        let turn = Turn::Alone(TURNS.write().unwrap_or_else(|e| e.into_inner()));
        T::with(turn)
    }

    fn with(turn: Turn) -> T {
        T {
            md: Mydocker::as_given(),
            token: unique_token(),
            ids: Mutex::new(BTreeSet::new()),
            _turn: turn,
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

    /// A command that runs until stopped, with the test's token in the
    /// command line of the container's PID 1 (a shell, which as PID 1
    /// ignores SIGTERM: it sets no handler).
    fn busy(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            "while :; do sleep 1; done".into(),
            self.token.clone(),
        ]
    }

    /// `sh -c SCRIPT TOKEN`.
    fn sh(&self, script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into(), self.token.clone()]
    }

    /// `run -d OPTIONS busybox COMMAND...`, which must succeed: the full ID
    /// it printed.
    fn run_d<S: AsRef<str>>(&self, options: &[&str], command: &[S]) -> String {
        let args = run_args(&["-d"], options, command);
        let out = self.exec(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stdout = out.success();
        let id = stdout.strip_suffix('\n').unwrap_or(stdout);
        assert!(
            is_full_id(id) && stdout.ends_with('\n'),
            "`run -d` prints the container's full ID (64 hex digits) and a newline, nothing else: {out:#?}"
        );
        self.made(id);
        id.to_string()
    }

    /// A foreground `run OPTIONS busybox COMMAND...` (no `--rm`: the
    /// container stays) to the end.
    fn run_fg<S: AsRef<str>>(&self, options: &[&str], command: &[S]) -> Outcome {
        let args = run_args(&[], options, command);
        self.exec(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The rows of `ps ARGS...`, which must succeed and print Docker's
    /// table.
    fn ps(&self, args: &[&str]) -> Vec<Row> {
        let mut full = vec!["ps"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        parse_ps(&out, &format!("ps {}", args.join(" ")))
    }

    /// The row of `ps -a` of the container whose ID starts with `id`.
    fn row(&self, id: &str) -> Option<Row> {
        self.ps(&["-a"]).into_iter().find(|r| id.starts_with(&r.id))
    }

    /// The status of the container `id` in `ps -a` (it must be listed).
    fn status(&self, id: &str) -> String {
        match self.row(id) {
            Some(row) => row.status,
            None => panic!(
                "container {id} is not in `ps -a`: {:#?}",
                self.exec(&["ps", "-a"])
            ),
        }
    }

    /// Wait (10 s at most) until `ps -a` shows container `id` exited; its
    /// exit code.
    fn wait_exited(&self, id: &str) -> i32 {
        let mut last = String::new();
        let done = eventually(Duration::from_secs(10), || {
            last = self.status(id);
            exit_code(&last).is_some()
        });
        assert!(
            done,
            "container {} should have ended by now; `ps -a` says `{last}`",
            &id[..12.min(id.len())]
        );
        exit_code(&last).unwrap()
    }

    /// `logs ARGS...`, which must succeed.
    fn logs(&self, args: &[&str]) -> Outcome {
        let mut full = vec!["logs"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        assert_eq!(out.code, Some(0), "`logs {}`: {out:#?}", args.join(" "));
        out
    }

    /// Make the state root what it is once a container has come and gone
    /// (the image unpacked, mydocker's directories made), and return
    /// every path below it but the image store: after `rm`, a container
    /// leaves it exactly so.
    fn warm_up(&self) -> BTreeSet<PathBuf> {
        self.exec(&["run", "--rm", IMAGE, "true"]).success();
        assert!(
            self.ps(&["-a"]).is_empty(),
            "`run --rm` leaves no container in `ps -a`"
        );
        self.paths()
    }

    /// Every path under the state root, the image store aside.
    fn paths(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        self.md.walk_outside_images(&mut |path, _| {
            found.insert(path.to_path_buf());
        });
        found
    }

    /// Assert that nothing of container `id` is left: not in `ps -a`,
    /// unknown to `logs`, no cgroup, none of its processes (`seen`) and no
    /// process with the test's token, no mount under the state root, and
    /// (given `before`, from [`T::warm_up`]) no path under the state root
    /// that was not there before.
    fn assert_gone(&self, id: &str, seen: Option<&Seen>, before: Option<&BTreeSet<PathBuf>>) {
        let short = &id[..12];
        assert!(
            self.row(id).is_none(),
            "container {short} was removed, yet `ps -a` lists it"
        );
        let out = self.exec(&["logs", id]);
        let stderr = out.one_line_failure();
        assert!(
            stderr.contains("no such container"),
            "`logs` of a removed container: `no such container: ID`: {out:#?}"
        );
        let cgroups = cgroups_of_container(id);
        assert!(
            cgroups.is_empty(),
            "container {short} was removed, yet its cgroups are still there: {cgroups:?}"
        );
        if let Some(seen) = seen {
            let living: Vec<_> = seen
                .procs
                .iter()
                .filter(|(pid, started)| alive(*pid, *started))
                .collect();
            assert!(
                living.is_empty(),
                "container {short} was removed, yet its processes {living:?} live"
            );
        }
        let tokened = pids_with(&self.token);
        assert!(
            tokened.is_empty(),
            "container {short} was removed, yet processes of the test's containers live: {tokened:?}"
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
                "container {short} was removed, yet these paths it made remain under the state root: {added:#?}"
            );
        }
    }
}

impl Drop for T {
    /// After a failure only: remove what the test made, so that a failing
    /// binary leaves nothing running (`rm -f`, then SIGKILL by PID to what
    /// still runs in the test's containers' cgroups or carries its token).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // The test passed: nothing of its containers may be left.
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let left =
                || -> Vec<PathBuf> { ids.iter().flat_map(|id| cgroups_of_container(id)).collect() };
            assert!(
                eventually(Duration::from_secs(3), || left().is_empty()),
                "the test's containers are gone, but their cgroups are not: {:?}",
                left()
            );
            let tokened = pids_with(&self.token);
            assert!(
                tokened.is_empty(),
                "the test's containers are gone, but processes of theirs live: {tokened:?}"
            );
            return;
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
        let shorts: Vec<String> = quietly(self.md.command(&["ps", "-aq"]))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| l.len() >= 12 && l.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        for root in cgroup_roots() {
            if let Ok(entries) = std::fs::read_dir(root.join("mydocker")) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if shorts.iter().any(|s| name.starts_with(s.as_str())) {
                        ids.insert(name);
                    }
                }
            }
        }
        if !ids.is_empty() {
            // Plain `rm` first: a broken binary may signal through stale
            // PIDs, and `rm` of a container that has ended signals nothing.
            quietly(self.md.command(&["ps", "-a"]));
            let mut args = vec!["rm".to_string()];
            args.extend(ids.iter().cloned());
            quietly(self.md.command(&args));
            args.insert(1, "-f".to_string());
            quietly(self.md.command(&args));
        }
        kill_and_unmount(&ids, &self.token, self.md.root());
    }
}

/// Run a command for the clean-up after a failure: its standard output,
/// or None when it failed to start or took more than 10 s (then it is
/// killed, by its PID). Never panics.
fn quietly(mut command: Command) -> Option<String> {
    use std::io::Read;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    reader.join().ok()
}

/// `["run", FIRST..., OPTIONS..., busybox, COMMAND...]`.
fn run_args<S: AsRef<str>>(first: &[&str], options: &[&str], command: &[S]) -> Vec<String> {
    let mut args = vec!["run".to_string()];
    args.extend(first.iter().map(|s| s.to_string()));
    args.extend(options.iter().map(|s| s.to_string()));
    args.push(IMAGE.to_string());
    args.extend(command.iter().map(|s| s.as_ref().to_string()));
    args
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64 && is_hex(s)
}

/// A process a test started on the host itself; killed (by its PID) when
/// dropped.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------
// What the host shows of a running container
// ---------------------------------------------------------------------

/// A running container as /proc shows it.
#[derive(Debug)]
struct Seen {
    /// The host PID of the container's PID 1, and its start time.
    init: u32,
    init_start: u64,
    /// Its parent: the container's monitor.
    monitor: u32,
    monitor_start: u64,
    /// Every process in the container's cgroups, with its start time.
    procs: Vec<(u32, Option<u64>)>,
}

/// Find the running container `id` on the host: the processes in its
/// cgroups, the one that is PID 1 of a PID namespace, and its parent.
fn look_at(id: &str) -> Seen {
    let (init, procs) = container_processes(id);
    let init_start = start_time(init).expect("the container's PID 1 has a start time");
    let monitor = parent_of(init).expect("the container's PID 1 has a parent");
    let monitor_start = start_time(monitor).expect("the monitor has a start time");
    Seen {
        init,
        init_start,
        monitor,
        monitor_start,
        procs: procs.iter().map(|p| (*p, start_time(*p))).collect(),
    }
}

/// The full ID of the container whose PID 1 carries `token`: the name of
/// its cgroup directory.
fn id_by_token(token: &str) -> String {
    let mut id = None;
    let ok = eventually(Duration::from_secs(5), || {
        for pid in pids_with(token) {
            for dir in container_cgroups_of(pid) {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if is_full_id(&name) {
                    id = Some(name);
                    return true;
                }
            }
        }
        false
    });
    assert!(
        ok,
        "no process with the test's token is in a cgroup mydocker/<full ID>"
    );
    id.unwrap()
}

// ---------------------------------------------------------------------
// ps
// ---------------------------------------------------------------------

const COLUMNS: [&str; 6] = [
    "CONTAINER ID",
    "IMAGE",
    "COMMAND",
    "CREATED",
    "STATUS",
    "NAMES",
];

/// One row of `ps`.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    image: String,
    command: String,
    created: String,
    status: String,
    name: String,
}

/// Parse `ps`'s table, checking Docker's layout: the header, each column
/// as wide as its widest cell and 3 spaces (10 at least), the last one not
/// padded.
fn parse_ps(out: &Outcome, what: &str) -> Vec<Row> {
    let text = out.success();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    for column in COLUMNS {
        match header.find(column) {
            Some(at) => starts.push(at),
            None => panic!("`{what}`: the header should name the columns {COLUMNS:?}: {out:#?}"),
        }
    }
    assert!(
        starts[0] == 0 && starts.windows(2).all(|w| w[0] < w[1]),
        "`{what}`: columns in Docker's order, from the first character: {out:#?}"
    );
    let mut cells: Vec<Vec<String>> = Vec::new();
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        assert!(
            chars.len() > starts[5] && !line.ends_with(' '),
            "`{what}`: a row shorter than the header's columns, or padded at its end: `{line}`\n{text}"
        );
        let mut row = Vec::new();
        for i in 0..6 {
            let end = if i == 5 { chars.len() } else { starts[i + 1] };
            if i > 0 {
                assert!(
                    chars[starts[i] - 1] == ' ' && chars[starts[i]] != ' ',
                    "`{what}`: the cells of column {} should start where its header does: `{line}`\n{text}",
                    COLUMNS[i]
                );
            }
            let cell: String = chars[starts[i]..end].iter().collect();
            row.push(cell.trim_end().to_string());
        }
        cells.push(row);
    }
    for i in 0..5 {
        let widest = cells
            .iter()
            .map(|r| r[i].chars().count())
            .chain([COLUMNS[i].len()])
            .max()
            .unwrap();
        assert_eq!(
            starts[i + 1] - starts[i],
            (widest + 3).max(10),
            "`{what}`: column {} should be as wide as its widest cell and 3 spaces, 10 at least:\n{text}",
            COLUMNS[i]
        );
    }
    cells
        .into_iter()
        .map(|r| {
            let row = Row {
                id: r[0].clone(),
                image: r[1].clone(),
                command: r[2].clone(),
                created: r[3].clone(),
                status: r[4].clone(),
                name: r[5].clone(),
            };
            assert!(
                row.id.len() == 12 && is_hex(&row.id),
                "`{what}`: CONTAINER ID is 12 hex digits: {row:?}\n{text}"
            );
            row
        })
        .collect()
}

/// The header of an empty `ps`.
const EMPTY_PS: &str = "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    NAMES\n";

/// A duration of less than a minute or so, in Docker's words.
fn is_recent(words: &str) -> bool {
    words == "Less than a second"
        || words == "1 second"
        || words == "About a minute"
        || words
            .strip_suffix(" seconds")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (2..60).contains(&n))
}

fn is_up(status: &str) -> bool {
    status.strip_prefix("Up ").is_some_and(is_recent)
}

/// The exit code in `Exited (CODE) N seconds ago`.
fn exit_code(status: &str) -> Option<i32> {
    let rest = status.strip_prefix("Exited (")?;
    let (code, age) = rest.split_once(") ")?;
    let age = age.strip_suffix(" ago")?;
    if !is_recent(age) {
        return None;
    }
    code.parse().ok()
}

/// Docker's COMMAND cell: the command and its arguments joined by spaces
/// (an argument with a space in single quotes), cut to 19 characters and
/// `…` when longer than 20, in double quotes.
fn docker_command<S: AsRef<str>>(args: &[S]) -> String {
    let joined = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a = a.as_ref();
            if i > 0 && a.contains(' ') {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let chars: Vec<char> = joined.chars().collect();
    let cut = if chars.len() > 20 {
        chars[..19].iter().collect::<String>() + "…"
    } else {
        joined
    };
    format!("\"{cut}\"")
}

/// A name mydocker made up: `adjective_surname`, lowercase letters and
/// one `_`.
fn is_made_up_name(name: &str) -> bool {
    match name.split_once('_') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_lowercase())
                && b.bytes().all(|c| c.is_ascii_lowercase())
        }
        None => false,
    }
}

// ---------------------------------------------------------------------
// run -d
// ---------------------------------------------------------------------

#[test]
fn run_d_prints_the_full_id_and_returns_while_the_container_runs_on_its_own() {
    let t = T::new();
    // Through a pipe: `| cat` ends only once no process holds the pipe, so
    // a container (or monitor) that kept run's standard output would hang.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("\"$0\" run -d busybox sh -c 'echo started; while :; do sleep 1; done' \"$1\" | cat")
        .arg(t.md.bin())
        .arg(&t.token)
        .env("MYDOCKER_ROOT", t.md.root())
        .stdin(Stdio::null());
    let mut piped = t.md.spawn_command(command);
    let started = Instant::now();
    let returned = eventually(Duration::from_secs(10), || !piped.is_running());
    let elapsed = started.elapsed();
    let out = piped.wait();
    if !returned {
        // Find the container to clean it up, then fail.
        t.made(&id_by_token(&t.token));
        panic!("`run -d ... | cat` did not return within 10 s: the container or its monitor keeps run's standard output (or run waits for the container): {out:#?}");
    }
    let id = out.success().trim_end().to_string();
    assert!(
        is_full_id(&id) && out.stdout == format!("{id}\n"),
        "`run -d` prints the full ID (64 hex digits) and a newline: {out:#?}"
    );
    t.made(&id);
    assert!(elapsed < Duration::from_secs(10), "run -d took {elapsed:?}");
    // It returned once the command ran: its PID 1 is the command already.
    let with_token = pids_with(&t.token);
    assert!(
        !with_token.is_empty(),
        "when `run -d` returns the container's command runs (exec done); no process has its arguments yet"
    );
    let seen = look_at(&id);
    assert!(
        with_token.contains(&seen.init),
        "the container's PID 1 ({}) should be its command, `sh -c ... TOKEN`; processes with the token: {with_token:?}",
        seen.init
    );
    // Detached: the monitor is in a session of its own, with no terminal.
    let our_session = stat_field(std::process::id(), 6).unwrap();
    let monitor_session = stat_field(seen.monitor, 6).unwrap_or_default();
    assert_ne!(
        monitor_session, our_session,
        "the monitor ({}) of a detached container is in a new session, not its caller's",
        seen.monitor
    );
    for (what, pid) in [("monitor", seen.monitor), ("PID 1", seen.init)] {
        assert_eq!(
            stat_field(pid, 7).as_deref(),
            Some("0"),
            "the container's {what} ({pid}) has no controlling terminal"
        );
    }
    // It runs on: Up in `ps`, and its output reaches its log.
    let rows = t.ps(&[]);
    assert!(
        rows.len() == 1 && id.starts_with(&rows[0].id) && is_up(&rows[0].status),
        "`ps` lists the running container, Up: {rows:#?}"
    );
    let mut logged = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            logged = t.logs(&[&id]).stdout;
            logged == "started\n"
        }),
        "`logs ID` of the detached container should show `started`: {logged:?}"
    );
    assert!(
        alive(seen.init, Some(seen.init_start)),
        "the container still runs"
    );
    assert_eq!(t.exec(&["rm", "-f", &id]).success(), format!("{id}\n"));
    t.assert_gone(&id, Some(&seen), None);
}

#[test]
fn run_d_of_a_command_that_cannot_start_fails_as_a_foreground_run_does() {
    let t = T::new();
    let out = t.exec(&["run", "-d", IMAGE, "no-such-command"]);
    assert_eq!(out.code, Some(127), "{out:#?}");
    assert_eq!(
        out.stderr, "mydocker: exec \"no-such-command\": executable file not found in $PATH\n",
        "the same one line as a foreground run: {out:#?}"
    );
    let out = t.exec(&["run", "-d", IMAGE, "/etc/passwd"]);
    assert_eq!(out.code, Some(126), "{out:#?}");
    assert_eq!(
        out.stderr, "mydocker: exec \"/etc/passwd\": permission denied\n",
        "{out:#?}"
    );
    // Both are recorded as exited with that code, newest first.
    let rows = t.ps(&["-a"]);
    let codes: Vec<Option<i32>> = rows.iter().map(|r| exit_code(&r.status)).collect();
    assert_eq!(
        codes,
        [Some(126), Some(127)],
        "`ps -a` shows both containers Exited (126) and Exited (127), newest first: {rows:#?}"
    );
    assert!(t.ps(&[]).is_empty(), "neither runs");
    // With --rm, nothing is left of it.
    let out = t.exec(&["run", "-d", "--rm", IMAGE, "no-such-command"]);
    assert_eq!(out.code, Some(127), "{out:#?}");
    assert_eq!(
        t.ps(&["-a"]).len(),
        2,
        "`run -d --rm` of a command that cannot start leaves no container"
    );
    let (a, b) = (rows[0].id.clone(), rows[1].id.clone());
    assert_eq!(
        t.exec(&["rm", &a, &b]).success(),
        format!("{a}\n{b}\n"),
        "rm prints each argument"
    );
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
}

#[test]
fn run_di_keeps_standard_input_open_and_run_dt_gets_no_terminal() {
    let t = T::new();
    // Nobody writes to a -di container's input, and nobody closes it:
    // `sh` waits for commands (as `docker run -dit busybox sh` does).
    let shell = t.run_d(&["-i"], &["sh"]);
    let seen = look_at(&shell);
    let stdin = std::fs::read_link(format!("/proc/{}/fd/0", seen.init))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        stdin.starts_with("pipe:"),
        "with -d -i the container's standard input is a pipe: {stdin}"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        is_up(&t.status(&shell)) && alive(seen.init, Some(seen.init_start)),
        "`run -di busybox sh` stays up: {:#?}",
        t.logs(&[&shell])
    );
    // -d -t: allowed, TERM=xterm, no terminal.
    let dir = tempfile::tempdir().unwrap();
    let volume = format!("{}:/out", dir.path().display());
    let id = t.run_d(
        &["-t", "-v", &volume],
        &t.sh("echo \"$TERM\" > /out/term; if [ -t 0 ] || [ -t 1 ]; then echo tty; else echo none; fi > /out/tty"),
    );
    assert_eq!(t.wait_exited(&id), 0, "{:#?}", t.logs(&[&id]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("term")).unwrap_or_default(),
        "xterm\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tty")).unwrap_or_default(),
        "none\n",
        "run -dt gives the container no terminal (a pseudo-terminal comes later)"
    );
    t.exec(&["rm", "-f", &shell, &id]).success();
    t.assert_gone(&shell, Some(&seen), None);
    t.assert_gone(&id, None, None);
}

// ---------------------------------------------------------------------
// ps
// ---------------------------------------------------------------------

#[test]
fn ps_lists_running_containers_and_ps_a_all_newest_first_in_dockers_columns() {
    let t = T::new();
    assert_eq!(
        t.exec(&["ps"]).success(),
        EMPTY_PS,
        "no container: the header"
    );
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
    assert_eq!(t.exec(&["ps", "-q"]).success(), "");
    let name = format!("alpha-{}", &t.token[..8]);
    let looping = t.sh("while :; do sleep 1; done");
    let a = t.run_d(&["--name", &name], &looping);
    let out = t.run_fg(&[], &["sh", "-c", "exit 3"]);
    assert_eq!(out.code, Some(3), "{out:#?}");
    let c = t.run_d(&[], &["sleep", "1000"]);

    let running = t.ps(&[]);
    let all = t.ps(&["-a"]);
    let ids = |rows: &[Row]| rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&running),
        [c[..12].to_string(), a[..12].to_string()],
        "`ps`: the running containers, newest first: {running:#?}"
    );
    assert_eq!(all.len(), 3, "`ps -a`: all three: {all:#?}");
    assert_eq!(
        [all[0].id.as_str(), all[2].id.as_str()],
        [&c[..12], &a[..12]],
        "`ps -a`: newest first: {all:#?}"
    );
    let b = &all[1];
    assert_eq!(
        t.exec(&["ps", "-q"]).success(),
        format!("{}\n{}\n", &c[..12], &a[..12]),
        "`ps -q`: the short IDs of the running containers"
    );
    let quiet_all = format!("{}\n{}\n{}\n", &c[..12], b.id, &a[..12]);
    assert_eq!(t.exec(&["ps", "-a", "-q"]).success(), quiet_all);
    assert_eq!(t.exec(&["ps", "-aq"]).success(), quiet_all);

    for row in &all {
        assert_eq!(row.image, IMAGE, "IMAGE as given to run: {row:?}");
        assert!(
            row.created.strip_suffix(" ago").is_some_and(is_recent),
            "CREATED in Docker's words (`Less than a second ago`, `N seconds ago`): {row:?}"
        );
    }
    assert_eq!(all[2].command, docker_command(&looping), "{:?}", all[2]);
    assert!(
        all[2].command.ends_with("…\"") && all[2].command.chars().count() == 22,
        "a long COMMAND is cut to 19 characters and …, in quotes: {:?}",
        all[2]
    );
    assert_eq!(all[1].command, "\"sh -c 'exit 3'\"", "{:?}", all[1]);
    assert_eq!(all[0].command, "\"sleep 1000\"", "{:?}", all[0]);
    assert!(is_up(&all[0].status), "STATUS `Up N seconds`: {:?}", all[0]);
    assert!(is_up(&all[2].status), "{:?}", all[2]);
    assert_eq!(
        exit_code(&all[1].status),
        Some(3),
        "STATUS `Exited (3) N seconds ago`: {:?}",
        all[1]
    );
    assert_eq!(all[2].name, name, "NAMES: the --name given");
    assert!(
        is_made_up_name(&all[0].name) && is_made_up_name(&all[1].name),
        "without --name, a made-up name like Docker's (adjective_surname): {all:#?}"
    );
    assert_ne!(all[0].name, all[1].name, "names are unique");

    t.exec(&["rm", "-f", &a, &c, &b.id]).success();
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
}

// ---------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------

/// A script that writes to both streams: tabs, blank lines, spaces at the
/// end of a line, UTF-8, a 70 000-byte line, and a last line without a
/// newline on each.
const BOTH_STREAMS: &str = "printf 'out one\\n'; printf 'err one\\n' >&2; \
    printf '\\tspaced  out  \\n\\n'; printf 'ünïcödé\\n' >&2; \
    head -c 70000 /dev/zero | tr '\\0' x; echo; \
    printf 'err tail' >&2; printf 'out tail'";

fn both_streams_stdout() -> String {
    format!(
        "out one\n\tspaced  out  \n\n{}\nout tail",
        "x".repeat(70000)
    )
}

const BOTH_STREAMS_STDERR: &str = "err one\nünïcödé\nerr tail";

#[test]
fn logs_gives_back_each_stream_byte_for_byte() {
    let t = T::new();
    // A detached container's log.
    let d = t.run_d(&[], &t.sh(BOTH_STREAMS));
    assert_eq!(t.wait_exited(&d), 0);
    let out = t.logs(&[&d]);
    assert!(
        out.stdout == both_streams_stdout(),
        "`logs` writes the container's standard output lines, and only them, to standard output, byte for byte (a last line without a newline stays without); got {:?}",
        out.stdout.chars().take(300).collect::<String>()
    );
    assert_eq!(
        out.stderr, BOTH_STREAMS_STDERR,
        "`logs` writes the container's standard error lines to standard error"
    );
    // A foreground run writes its log too, and its own output is unchanged.
    let out = t.run_fg(&[], &t.sh(BOTH_STREAMS));
    assert!(
        out.code == Some(0) && out.stdout == both_streams_stdout(),
        "a foreground run still writes the container's output: {:?}",
        out.stdout.chars().take(300).collect::<String>()
    );
    assert_eq!(out.stderr, BOTH_STREAMS_STDERR);
    let rows = t.ps(&["-a"]);
    assert_eq!(rows.len(), 2, "the foreground run stays too: {rows:#?}");
    let fg = rows[0].id.clone();
    let out = t.logs(&[&fg]);
    assert!(
        out.stdout == both_streams_stdout() && out.stderr == BOTH_STREAMS_STDERR,
        "the log of a foreground run: {:?} / {:?}",
        out.stdout.chars().take(300).collect::<String>(),
        out.stderr
    );
    t.exec(&["rm", &d, &fg]).success();
}

#[test]
fn logs_f_prints_new_lines_and_ends_when_the_container_does() {
    let t = T::new();
    let ctl = tempfile::tempdir().unwrap();
    let volume = format!("{}:/ctl", ctl.path().display());
    let id = t.run_d(
        &["-v", &volume],
        &t.sh("echo first; while [ ! -e /ctl/go ]; do sleep 0.1; done; \
               echo second; echo err-second >&2; sleep 0.3; echo third"),
    );
    let mut follow = t.md.spawn_command(t.md.command(&["logs", "-f", &id]));
    follow.expect_line("first");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        follow.is_running(),
        "`logs -f` follows a running container: it must not return before the container ends"
    );
    std::fs::write(ctl.path().join("go"), "").unwrap();
    follow.expect_line("second");
    follow.expect_line("third");
    let ended = eventually(Duration::from_secs(5), || !follow.is_running());
    let out = follow.wait();
    assert!(
        ended,
        "`logs -f` returns once the container has ended: {out:#?}"
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "first\nsecond\nthird\n", "{out:#?}");
    assert_eq!(out.stderr, "err-second\n", "{out:#?}");
    assert_eq!(t.wait_exited(&id), 0);
    // Of an exited container: everything, at once.
    let started = Instant::now();
    let out = t.logs(&["-f", &id]);
    assert!(started.elapsed() < Duration::from_secs(5), "{out:#?}");
    assert_eq!(out.stdout, "first\nsecond\nthird\n");
    assert_eq!(t.logs(&["-f", "--tail", "1", &id]).stdout, "third\n");
    t.exec(&["rm", &id]).success();
}

#[test]
fn logs_tail_counts_the_lines_of_both_streams() {
    let t = T::new();
    // The pauses keep the order between the streams unambiguous.
    let out = t.run_fg(
        &[],
        &t.sh("for i in 1 2 3 4 5 6 7 8; do echo $i; done; sleep 0.3; \
               echo e9 >&2; sleep 0.3; printf 10"),
    );
    out.success();
    let id = t.exec(&["ps", "-aq"]).success().trim().to_string();
    let all_out = "1\n2\n3\n4\n5\n6\n7\n8\n10";
    let cases: &[(&[&str], &str, &str)] = &[
        (&[], all_out, "e9\n"),
        (&["--tail", "all"], all_out, "e9\n"),
        (&["--tail", "100"], all_out, "e9\n"),
        (&["--tail", "0"], "", ""),
        (&["--tail", "1"], "10", ""),
        (&["--tail", "2"], "10", "e9\n"),
        (&["--tail", "3"], "8\n10", "e9\n"),
        (&["--tail", "5"], "6\n7\n8\n10", "e9\n"),
    ];
    for (options, stdout, stderr) in cases {
        let mut args = options.to_vec();
        args.push(&id);
        let out = t.logs(&args);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            (*stdout, *stderr),
            "`logs {}`: the last lines of both streams together",
            args.join(" ")
        );
    }
    t.exec(&["rm", &id]).success();
}

/// Nanoseconds since the epoch of `2026-11-24T10:11:12.123456789Z`.
fn parse_rfc3339_nanos(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    if b.len() != 30
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[29] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = &text[from..to];
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, nanos) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 29)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

#[test]
fn logs_t_prefixes_each_line_with_the_time_it_was_written() {
    let t = T::new();
    let before = now_nanos();
    t.run_fg(&[], &t.sh("echo one; echo two >&2; sleep 1.2; echo three"))
        .success();
    let after = now_nanos();
    let id = t.exec(&["ps", "-aq"]).success().trim().to_string();
    let out = t.logs(&["-t", &id]);
    let stamped = |text: &str| -> Vec<(i128, String)> {
        text.lines()
            .map(|line| {
                let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
                let nanos = parse_rfc3339_nanos(time).unwrap_or_else(|| {
                    panic!("`logs -t`: each line starts with its time, RFC 3339 with 9 decimals in UTC (`2026-11-24T10:11:12.123456789Z`) and a space: `{line}`")
                });
                (nanos, rest.to_string())
            })
            .collect()
    };
    let stdout = stamped(&out.stdout);
    let stderr = stamped(&out.stderr);
    let texts: Vec<&str> = stdout.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(texts, ["one", "three"], "{out:#?}");
    assert_eq!(
        stderr.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["two"],
        "{out:#?}"
    );
    for (nanos, text) in stdout.iter().chain(&stderr) {
        assert!(
            before - 1_000_000_000 <= *nanos && *nanos <= after + 1_000_000_000,
            "the time of `{text}` is when the container wrote it, in UTC: {out:#?}"
        );
    }
    assert!(
        stdout[1].0 - stdout[0].0 >= 1_000_000_000,
        "`three` was written 1.2 s after `one`: each line has its own time: {out:#?}"
    );
    let out = t.logs(&["-t", "--tail", "1", &id]);
    assert!(
        out.stdout.ends_with(" three\n") && out.stdout.lines().count() == 1,
        "{out:#?}"
    );
    t.exec(&["rm", &id]).success();
}

// ---------------------------------------------------------------------
// stop
// ---------------------------------------------------------------------

#[test]
fn stop_kills_a_pid_1_that_ignores_sigterm_once_the_timeout_is_over() {
    let t = T::new();
    let id = t.run_d(&[], &t.sh("trap '' TERM; while :; do sleep 1; done"));
    let seen = look_at(&id);
    let stopped = Mutex::new(false);
    let lies = Mutex::new(Vec::new());
    let (out, elapsed) = std::thread::scope(|scope| {
        // Meanwhile: `ps -a` never says Exited while the process lives.
        scope.spawn(|| {
            while !*stopped.lock().unwrap() {
                let out = t.exec(&["ps", "-a"]);
                let row = parse_ps(&out, "ps -a")
                    .into_iter()
                    .find(|r| id.starts_with(&r.id));
                if let Some(row) = row {
                    if row.status.starts_with("Exited") && alive(seen.init, Some(seen.init_start)) {
                        lies.lock().unwrap().push(row.status);
                    }
                }
            }
        });
        let started = Instant::now();
        let out = t.exec(&["stop", "-t", "1", &id]);
        let elapsed = started.elapsed();
        let gone = !alive(seen.init, Some(seen.init_start));
        *stopped.lock().unwrap() = true;
        assert!(
            gone,
            "`stop` returned ({out:?}) while the container's PID 1 ({}) still runs: a PID 1 that ignores SIGTERM needs SIGKILL after the timeout",
            seen.init
        );
        (out, elapsed)
    });
    assert_eq!(out.success(), format!("{id}\n"), "stop prints its argument");
    assert!(
        elapsed >= Duration::from_millis(800),
        "stop -t 1 gives the container 1 s after SIGTERM before SIGKILL; it returned after {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(3),
        "stop -t 1 returns within 1 + 2 s; it took {elapsed:?}"
    );
    let living: Vec<_> = seen.procs.iter().filter(|(p, s)| alive(*p, *s)).collect();
    assert!(
        living.is_empty(),
        "after stop none of the container's processes runs: {living:?}"
    );
    let lies = lies.into_inner().unwrap();
    assert!(
        lies.is_empty(),
        "`ps -a` said the container had exited while its PID 1 still ran: {lies:?}"
    );
    assert_eq!(
        exit_code(&t.status(&id)),
        Some(137),
        "a PID 1 killed by SIGKILL: Exited (137)"
    );
    assert!(t.ps(&[]).is_empty(), "`ps` no longer lists it");
    assert!(
        eventually(Duration::from_secs(5), || cgroups_of_container(&id)
            .is_empty()),
        "a stopped container's cgroup goes: {:?}",
        cgroups_of_container(&id)
    );
    t.exec(&["rm", &id]).success();
    t.assert_gone(&id, Some(&seen), None);
}

#[test]
fn stop_records_the_code_of_a_pid_1_that_handles_sigterm_and_a_second_stop_changes_nothing() {
    let t = T::new();
    let a = t.run_d(
        &[],
        &t.sh("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    assert!(
        eventually(Duration::from_secs(5), || t.logs(&[&a]).stdout == "ready\n"),
        "the container should print ready: {:#?}",
        t.logs(&[&a])
    );
    let started = Instant::now();
    assert_eq!(
        t.exec(&["stop", &a[..12]]).success(),
        format!("{}\n", &a[..12])
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a PID 1 that exits on SIGTERM is not waited for the whole timeout (10 s): {:?}",
        started.elapsed()
    );
    assert_eq!(
        exit_code(&t.status(&a)),
        Some(7),
        "stop records the code the container exited with"
    );
    assert_eq!(t.logs(&[&a]).stdout, "ready\ngot TERM\n");
    // Stopping it again: success, and nothing changes.
    let out = t.exec(&["stop", "-t", "1", &a]);
    assert_eq!(out.success(), format!("{a}\n"));
    assert_eq!(
        exit_code(&t.status(&a)),
        Some(7),
        "a second stop changes nothing"
    );
    assert_eq!(t.logs(&[&a]).stdout, "ready\ngot TERM\n");
    // An unknown container among others: one line for it, the others are
    // handled, and the exit code says something failed.
    let b = t.run_d(&[], &t.busy());
    let out = t.exec(&["stop", "-t", "0", "nosuch-container", &b[..12]]);
    assert!(
        matches!(out.code, Some(c) if c != 0),
        "stop fails when one of its containers is unknown: {out:#?}"
    );
    assert_eq!(out.stdout, format!("{}\n", &b[..12]), "{out:#?}");
    assert!(
        out.stderr.lines().count() == 1
            && out.stderr.starts_with("mydocker: ")
            && out.stderr.contains("no such container: nosuch-container"),
        "one line for the unknown container: {out:#?}"
    );
    assert_eq!(
        exit_code(&t.status(&b)),
        Some(137),
        "stop -t 0 kills at once"
    );
    t.exec(&["rm", &a, &b]).success();
    t.assert_gone(&a, None, None);
    t.assert_gone(&b, None, None);
}

// ---------------------------------------------------------------------
// Containers that end
// ---------------------------------------------------------------------

#[test]
fn a_container_that_ends_keeps_its_exit_code_and_its_cgroup_and_monitor_go() {
    let t = T::new();
    // By itself, once the test has seen it run.
    let ctl = tempfile::tempdir().unwrap();
    let volume = format!("{}:/ctl", ctl.path().display());
    let a = t.run_d(
        &["-v", &volume],
        &t.sh("while [ ! -e /ctl/go ]; do sleep 0.05; done; exit 42"),
    );
    let seen_a = look_at(&a);
    std::fs::write(ctl.path().join("go"), "").unwrap();
    assert_eq!(
        t.wait_exited(&a),
        42,
        "`ps -a` shows the exit code of a container that ended by itself"
    );
    assert!(
        eventually(Duration::from_secs(5), || cgroups_of_container(&a)
            .is_empty()),
        "the cgroup of a container that ended goes: {:?}",
        cgroups_of_container(&a)
    );
    assert!(
        eventually(Duration::from_secs(5), || !alive(
            seen_a.monitor,
            Some(seen_a.monitor_start)
        )),
        "the monitor exits once the container has ended and is recorded"
    );
    // Killed by a signal: 128 + its number.
    let b = t.run_d(&[], &t.busy());
    let seen_b = look_at(&b);
    signal(seen_b.init, libc::SIGKILL);
    assert_eq!(
        t.wait_exited(&b),
        137,
        "a container whose PID 1 was killed by SIGKILL: Exited (137)"
    );
    // A foreground run: its code, and the record says so when run returns.
    let out = t.run_fg(&[], &["sh", "-c", "exit 3"]);
    assert_eq!(out.code, Some(3), "{out:#?}");
    let rows = t.ps(&["-a"]);
    assert_eq!(
        exit_code(&rows[0].status),
        Some(3),
        "once a foreground run returned, `ps -a` shows its container Exited (3): {rows:#?}"
    );
    assert!(t.ps(&[]).is_empty(), "none of them runs");
    let c = rows[0].id.clone();
    t.exec(&["rm", &a, &b, &c]).success();
    t.assert_gone(&a, Some(&seen_a), None);
    t.assert_gone(&b, Some(&seen_b), None);
}

#[test]
fn a_foreground_run_is_recorded_and_logged_and_with_rm_leaves_nothing() {
    let t = T::new();
    let before = t.warm_up();
    let script = "cat; echo err >&2; exit 5";
    let run = |rm: bool| -> Outcome {
        use std::io::Write;
        let mut args = vec!["run", "-i"];
        if rm {
            args.push("--rm");
        }
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let mut command = t.md.command(&args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\nworld\n").unwrap();
        drop(stdin);
        mydocker_stage_tests::wait_with_timeout(child, t.md.timeout())
    };
    let out = run(false);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(5), "hello\nworld\n", "err\n"),
        "a foreground run -i keeps its input, output and exit code: {out:#?}"
    );
    let rows = t.ps(&["-a"]);
    assert!(
        rows.len() == 1 && exit_code(&rows[0].status) == Some(5),
        "without --rm the container stays, Exited (5): {rows:#?}"
    );
    let id = rows[0].id.clone();
    let logs = t.logs(&[&id]);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("hello\nworld\n", "err\n")
    );
    t.exec(&["rm", &id]).success();
    assert!(t.ps(&["-a"]).is_empty());
    let out = run(true);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(5), "hello\nworld\n", "err\n"),
        "{out:#?}"
    );
    assert!(
        t.ps(&["-a"]).is_empty(),
        "with --rm the container is gone when run returns"
    );
    let now = t.paths();
    let added: Vec<_> = now.difference(&before).collect();
    assert!(
        added.is_empty(),
        "`run --rm` and `rm` leave nothing under the state root: {added:#?}"
    );
}

// ---------------------------------------------------------------------
// start
// ---------------------------------------------------------------------

#[test]
fn start_runs_an_exited_container_again_with_its_files_and_appends_to_its_log() {
    let t = T::new();
    let name = format!("keep-{}", &t.token[..8]);
    let id = t.run_d(
        &["--name", &name, "-e", "KEEP=kept"],
        &t.sh(
            "n=$(cat /n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /n; \
               echo \"round $n $KEEP\"; echo \"err $n\" >&2; \
               if [ $n -ge 2 ]; then while :; do sleep 1; done; fi",
        ),
    );
    assert_eq!(t.wait_exited(&id), 0);
    assert_eq!(t.logs(&[&name]).stdout, "round 1 kept\n");
    let out = t.exec(&["start", &name]);
    assert_eq!(
        out.success(),
        format!("{name}\n"),
        "start prints its argument"
    );
    let row = t.row(&id).expect("the started container is in ps -a");
    assert!(
        is_up(&row.status) && row.name == name && id.starts_with(&row.id),
        "once start returns the container runs, with the same ID and name: {row:?}"
    );
    let mut logs = t.logs(&[&id]);
    assert!(
        eventually(Duration::from_secs(5), || {
            logs = t.logs(&[&id]);
            logs.stdout.contains("round 2")
        }),
        "the started container should print `round 2` (its file /n kept 1): {logs:#?}"
    );
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("round 1 kept\nround 2 kept\n", "err 1\nerr 2\n"),
        "the container kept its files (/n) and environment, and its log goes on"
    );
    let seen = look_at(&id);
    // Starting a running container: success, nothing changes.
    assert_eq!(t.exec(&["start", &id]).success(), format!("{id}\n"));
    std::thread::sleep(Duration::from_millis(300));
    let again = look_at(&id);
    assert_eq!(
        (again.init, again.init_start),
        (seen.init, seen.init_start),
        "start of a running container starts nothing"
    );
    assert_eq!(t.logs(&[&id]).stdout, "round 1 kept\nround 2 kept\n");
    assert_eq!(t.ps(&["-a"]).len(), 1, "still one container");
    t.exec(&["rm", "-f", &name]).success();
    t.assert_gone(&id, Some(&seen), None);
}

// ---------------------------------------------------------------------
// rm
// ---------------------------------------------------------------------

#[test]
fn rm_refuses_a_running_container_and_rm_f_removes_everything_of_it() {
    let t = T::new();
    let before = t.warm_up();
    let name = format!("victim-{}", &t.token[..8]);
    let id = t.run_d(
        &["--name", &name],
        &t.sh("echo data > /written; while :; do sleep 1; done"),
    );
    let seen = look_at(&id);
    let out = t.exec(&["rm", &name]);
    let stderr = out.one_line_failure();
    assert!(
        stderr.contains(&id[..12]) && stderr.contains("running"),
        "rm of a running container is refused in one line naming it (`container <short ID> is running: stop it first, or use rm -f`): {out:#?}"
    );
    assert!(
        alive(seen.init, Some(seen.init_start)) && is_up(&t.status(&id)),
        "a refused rm leaves the container running"
    );
    assert_eq!(t.exec(&["rm", "-f", &name]).success(), format!("{name}\n"));
    t.assert_gone(&id, Some(&seen), Some(&before));
    // An exited one: plain rm, and its name is free again.
    let out = t.run_fg(&["--name", &name], &["sh", "-c", "echo data > /written"]);
    out.success();
    let id2 = t.exec(&["ps", "-aq"]).success().trim().to_string();
    assert_eq!(t.exec(&["rm", &name]).success(), format!("{name}\n"));
    let full2 = t.paths();
    let added: Vec<_> = full2.difference(&before).collect();
    assert!(added.is_empty(), "rm leaves nothing: {added:#?}");
    t.exec(&["run", "--rm", "--name", &name, IMAGE, "true"])
        .success();
    // Unknown containers among others: the others are removed.
    let a = t.run_d(&[], &["true"]);
    t.wait_exited(&a);
    let out = t.exec(&["rm", "nosuch-container", &a]);
    assert!(matches!(out.code, Some(c) if c != 0), "{out:#?}");
    assert_eq!(out.stdout, format!("{a}\n"));
    assert!(
        out.stderr.lines().count() == 1
            && out.stderr.contains("no such container: nosuch-container"),
        "{out:#?}"
    );
    t.assert_gone(&a, None, Some(&before));
    assert!(
        t.row(&id2).is_none(),
        "the container removed before is not back"
    );
}

// ---------------------------------------------------------------------
// Whatever dies
// ---------------------------------------------------------------------

#[test]
fn after_kill_9_of_the_monitor_the_container_is_gone_and_rm_f_cleans_up() {
    let t = T::new();
    let before = t.warm_up();
    let id = t.run_d(&[], &t.busy());
    let seen = look_at(&id);
    signal(seen.monitor, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || {
            seen.procs.iter().all(|(p, s)| !alive(*p, *s))
                && !alive(seen.monitor, Some(seen.monitor_start))
        }),
        "when its monitor is killed the container's processes die with it: {:?}",
        seen.procs
            .iter()
            .filter(|(p, s)| alive(*p, *s))
            .collect::<Vec<_>>()
    );
    let status = t.status(&id);
    assert_eq!(
        exit_code(&status),
        Some(255),
        "a container whose monitor died is never shown Up: `Exited (255) ...` (its exit code is unknown); got `{status}`"
    );
    assert!(t.ps(&[]).is_empty(), "`ps` does not list it");
    assert!(
        eventually(Duration::from_secs(3), || cgroups_of_container(&id)
            .is_empty()),
        "once a command noticed the dead container its cgroup goes: {:?}",
        cgroups_of_container(&id)
    );
    assert_eq!(t.exec(&["rm", "-f", &id]).success(), format!("{id}\n"));
    t.assert_gone(&id, Some(&seen), Some(&before));
    // With --rm: the next command that looks removes it.
    let id = t.run_d(&["--rm"], &t.busy());
    let seen = look_at(&id);
    signal(seen.monitor, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || seen
            .procs
            .iter()
            .all(|(p, s)| !alive(*p, *s))),
        "the processes of a --rm container die with its monitor"
    );
    assert!(
        t.row(&id).is_none(),
        "a --rm container whose monitor died is removed by the next command that looks (ps -a)"
    );
    t.assert_gone(&id, Some(&seen), Some(&before));
}

#[test]
fn after_kill_9_of_a_foreground_run_the_container_is_gone_and_rm_f_cleans_up() {
    let t = T::new();
    let before = t.warm_up();
    for rm in [false, true] {
        let name = format!("fg-{}-{rm}", &t.token[..8]);
        let mut args = vec!["run"];
        if rm {
            args.push("--rm");
        }
        args.extend_from_slice(&["--name", &name, IMAGE]);
        let script = t.sh("echo ready; while :; do sleep 1; done");
        args.extend(script.iter().map(String::as_str));
        let mut run = t.md.spawn_command(t.md.command(&args));
        run.expect_line("ready");
        let id = id_by_token(&t.token);
        t.made(&id);
        let seen = look_at(&id);
        signal(run.id(), libc::SIGKILL);
        let out = run.wait();
        assert_eq!(out.code, None, "run was killed: {out:#?}");
        assert!(
            eventually(Duration::from_secs(5), || seen
                .procs
                .iter()
                .all(|(p, s)| !alive(*p, *s))),
            "the container's processes die with its foreground run (rm: {rm}): {:?}",
            seen.procs
        );
        if rm {
            assert!(
                t.row(&id).is_none(),
                "a `run --rm` killed with -9: the next command that looks (ps -a) removes its container"
            );
        } else {
            let status = t.status(&id);
            assert_eq!(
                exit_code(&status),
                Some(255),
                "a container whose run was killed is never shown Up: `Exited (255) ...`; got `{status}`"
            );
            assert_eq!(t.exec(&["rm", "-f", &name]).success(), format!("{name}\n"));
        }
        t.assert_gone(&id, Some(&seen), Some(&before));
    }
}

#[test]
fn a_pid_reused_by_another_process_is_never_signalled() {
    let t = T::alone();
    // A container whose monitor dies (its container with it), and a host
    // process of the test's that gets its PID 1's PID: the kernel gives
    // ns_last_pid + 1 to the next process, if that PID is free. Another
    // process may be faster, and keep it: then again with another
    // container.
    let mut found = None;
    for _ in 0..3 {
        let id = t.run_d(&[], &t.busy());
        let seen = look_at(&id);
        let pid = seen.init;
        signal(seen.monitor, libc::SIGKILL);
        assert!(
            eventually(Duration::from_secs(5), || !Path::new(&format!(
                "/proc/{pid}"
            ))
            .exists()),
            "the container's PID 1 ({pid}) should be gone (and reaped) once its monitor died"
        );
        let mut sleeper = None;
        for _ in 0..100 {
            if Path::new(&format!("/proc/{pid}")).exists() {
                break; // another process has it
            }
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
                .expect("write /proc/sys/kernel/ns_last_pid (root, CONFIG_CHECKPOINT_RESTORE)");
            let child = HostProcess(
                Command::new("sleep")
                    .arg("1000")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start sleep"),
            );
            if child.0.id() == pid {
                sleeper = Some(child);
                break;
            }
        }
        match sleeper {
            Some(sleeper) => {
                found = Some((id, seen, sleeper));
                break;
            }
            // Someone else's process has the PID: leave it alone (ps -a
            // notices the dead container, plain rm signals nothing).
            None => {
                t.exec(&["ps", "-a"]).success();
                t.exec(&["rm", &id]).success();
            }
        }
    }
    let Some((id, seen, sleeper)) = found else {
        panic!("three times, another process took the PID of the test's dead container before a `sleep` of the test's could: the test cannot check PID reuse on this machine now; run it again on a quieter one");
    };
    let pid = seen.init;
    let started = start_time(pid).expect("the sleep's start time");
    let out = t.exec(&["stop", "-t", "1", &id]);
    assert!(
        alive(pid, Some(started)),
        "stop signalled PID {pid}, which the dead container's PID 1 had and a host process has now: {out:#?}"
    );
    assert_eq!(
        out.success(),
        format!("{id}\n"),
        "the container has ended already: stop succeeds"
    );
    let status = t.status(&id);
    assert_eq!(
        exit_code(&status),
        Some(255),
        "its PID lives, but it is another process: the container is not Up: `{status}`"
    );
    let out = t.exec(&["rm", "-f", &id]);
    assert!(
        alive(pid, Some(started)),
        "rm -f signalled PID {pid}, which belongs to a host process now: {out:#?}"
    );
    out.success();
    t.assert_gone(&id, Some(&seen), None);
    assert!(alive(pid, Some(started)), "the host's sleep lives");
    drop(sleeper);
}

// ---------------------------------------------------------------------
// Names, IDs and prefixes
// ---------------------------------------------------------------------

#[test]
fn parallel_runs_get_distinct_ids_and_names() {
    let t = T::new();
    let barrier = Barrier::new(20);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    t.run_d(&[], &["true"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 20, "20 runs, 20 IDs: {ids:#?}");
    assert!(
        eventually(Duration::from_secs(20), || t.ps(&[]).is_empty()),
        "the 20 containers of `true` end"
    );
    let rows = t.ps(&["-a"]);
    let shorts: BTreeSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let expected: BTreeSet<String> = ids.iter().map(|id| id[..12].to_string()).collect();
    assert_eq!(shorts, expected, "`ps -a` lists the 20 containers");
    let names: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 20, "20 distinct names: {rows:#?}");
    assert!(
        names.iter().all(|n| is_made_up_name(n)),
        "made-up names: {names:?}"
    );
    for row in &rows {
        assert_eq!(exit_code(&row.status), Some(0), "{row:?}");
    }
    let mut args = vec!["rm"];
    args.extend(ids.iter().map(String::as_str));
    let out = t.exec(&args);
    assert_eq!(out.success().lines().count(), 20);
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
}

#[test]
fn of_parallel_runs_with_the_same_name_exactly_one_wins() {
    let t = T::new();
    let before = t.warm_up();
    for round in 0..8 {
        let name = format!("same-{}-{round}", &t.token[..8]);
        let barrier = Barrier::new(3);
        let outs: Vec<Outcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        t.exec(&["run", "-d", "--name", &name, IMAGE, "true"])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&Outcome> = outs.iter().filter(|o| o.code == Some(0)).collect();
        for out in &winners {
            let id = out.stdout.trim();
            if is_full_id(id) {
                t.made(id);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "3 parallel `run --name {name}`: exactly one wins: {outs:#?}"
        );
        let winner = winners[0].stdout.trim().to_string();
        for out in outs.iter().filter(|o| o.code != Some(0)) {
            let stderr = out.one_line_failure();
            assert!(
                stderr.contains(&format!("\"{name}\" is already in use")) && stderr.contains(&winner[..12]),
                "the losers say in one line that the name is taken, and by which container: {out:#?}"
            );
        }
        let rows = t.ps(&["-a"]);
        assert!(
            rows.len() == 1 && rows[0].name == name && winner.starts_with(&rows[0].id),
            "nothing of the losers is left: {rows:#?}"
        );
        t.wait_exited(&winner);
        assert_eq!(t.exec(&["rm", &name]).success(), format!("{name}\n"));
        t.assert_gone(&winner, None, Some(&before));
    }
}

#[test]
fn containers_are_found_by_name_full_id_or_unique_id_prefix() {
    let t = T::new();
    // Containers until two IDs start with the same hex digit.
    let mut ids: Vec<String> = Vec::new();
    let (x, y) = loop {
        assert!(ids.len() < 17, "17 IDs with distinct first digits?");
        let n = ids.len();
        let id = t.run_d(&[], &["echo", &format!("i-am-{n}")]);
        if let Some(other) = ids.iter().position(|o| o.as_bytes()[0] == id.as_bytes()[0]) {
            ids.push(id);
            break (other, n);
        }
        ids.push(id);
    };
    for id in &ids {
        t.wait_exited(id);
    }
    let digit = &ids[x][..1];
    let sharing: Vec<&String> = ids.iter().filter(|id| id.starts_with(digit)).collect();
    let out = t.exec(&["logs", digit]);
    let stderr = out.one_line_failure();
    for id in &sharing {
        assert!(
            stderr.contains(&id[..12]),
            "an ambiguous prefix is refused in one line naming the short ID of each container it starts: {out:#?}"
        );
    }
    assert!(out.stdout.is_empty(), "{out:#?}");
    // The shortest unique prefix, the short ID and the full ID all work.
    let unique_prefix = |i: usize| -> &str {
        let id = &ids[i];
        (1..=64)
            .map(|k| &id[..k])
            .find(|p| ids.iter().filter(|o| o.starts_with(p)).count() == 1)
            .unwrap()
    };
    for i in [x, y] {
        let want = format!("i-am-{i}\n");
        for key in [unique_prefix(i), &ids[i][..12], ids[i].as_str()] {
            assert_eq!(
                t.logs(&[key]).stdout,
                want,
                "`logs {key}` finds container {}",
                &ids[i][..12]
            );
        }
    }
    // A name, even one that looks like the start of an ID, comes before
    // ID prefixes.
    let decoy = ids[x][..4].to_string();
    let d = t.run_d(&["--name", &decoy], &["echo", "i-am-the-decoy"]);
    t.wait_exited(&d);
    assert_eq!(
        t.logs(&[&decoy]).stdout,
        "i-am-the-decoy\n",
        "an exact name comes before an ID prefix"
    );
    ids.push(d);
    // No match.
    let unused = (0..=255u32)
        .map(|n| format!("{n:02x}"))
        .find(|p| ids.iter().all(|id| !id.starts_with(p.as_str())))
        .unwrap();
    for key in [unused.as_str(), "nosuch-container"] {
        let out = t.exec(&["logs", key]);
        assert_eq!(
            out.one_line_failure(),
            format!("mydocker: no such container: {key}\n"),
            "{out:#?}"
        );
    }
    // Every command takes names: stop, start, commit (a running container
    // only), rm.
    let name = format!("named-{}", &t.token[..8]);
    let n = t.run_d(&["--name", &name], &t.busy());
    let image = format!("img-{}", &t.token[..8]);
    let out = t.exec(&["commit", &name, &image]);
    assert!(out.success().starts_with("sha256:"), "{out:#?}");
    t.exec(&["rmi", &image]).success();
    assert_eq!(
        t.exec(&["stop", "-t", "0", &name]).success(),
        format!("{name}\n")
    );
    let out = t.exec(&["commit", &name, &image]);
    assert!(
        out.one_line_failure().contains("is not running"),
        "commit of an exited container: `container X is not running`: {out:#?}"
    );
    assert_eq!(t.exec(&["start", &name]).success(), format!("{name}\n"));
    assert!(is_up(&t.status(&n)));
    let mut args = vec!["rm", "-f", &name];
    args.extend(ids.iter().map(String::as_str));
    t.exec(&args).success();
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
}

#[test]
fn bad_names_are_refused_and_make_nothing() {
    let t = T::new();
    let before = t.warm_up();
    let long_ok = "n".repeat(128);
    let long_bad = "n".repeat(129);
    let bad = [
        "",
        "a",
        "_x",
        ".x",
        "-x",
        "a b",
        "a/b",
        "../x",
        "x!",
        "é1",
        "a\tb",
        "x:y",
        long_bad.as_str(),
    ];
    for name in bad {
        let out = t.exec(&["run", "-d", &format!("--name={name}"), IMAGE, "true"]);
        assert_eq!(
            out.code,
            Some(125),
            "--name {name:?} is refused with 125: {out:#?}"
        );
        out.one_line_failure();
        assert!(
            t.ps(&["-a"]).is_empty() && t.paths() == before,
            "a refused name makes nothing ({name:?})"
        );
    }
    let good = ["ab", "A_b.c-d", "0x", "web.1", long_ok.as_str()];
    let mut ids = Vec::new();
    for name in good {
        ids.push(t.run_d(&["--name", name], &["true"]));
    }
    let rows = t.ps(&["-a"]);
    let names: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, good.into_iter().collect(), "{rows:#?}");
    // Taken, by an exited container too.
    t.wait_exited(&ids[0]);
    let out = t.exec(&["run", "-d", "--name", "ab", IMAGE, "true"]);
    let stderr = out.one_line_failure();
    assert!(
        stderr.contains("\"ab\" is already in use") && stderr.contains(&ids[0][..12]),
        "a taken name is refused, naming the container that has it: {out:#?}"
    );
    assert_eq!(t.ps(&["-a"]).len(), good.len(), "and nothing is made");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    t.exec(&args).success();
    assert_eq!(t.paths(), before, "rm leaves nothing of them");
}

// ---------------------------------------------------------------------
// -e
// ---------------------------------------------------------------------

#[test]
fn e_adds_environment_variables_and_the_last_value_wins() {
    let t = T::new();
    let absent = format!("ABSENT_{}", &t.token[..8]);
    let mut command = t.md.command(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-e",
        "FROM_CALLER",
        "-e",
        &absent,
        "-e",
        "SPACED=a b=c",
        "-e",
        "EMPTY=",
        "-e",
        "PATH=/x:/bin",
        "--env",
        "A=2",
        IMAGE,
        "/bin/busybox",
        "env",
    ]);
    command
        .env("FROM_CALLER", "the caller's value")
        .env_remove(&absent)
        .env("NOT_PASSED", "x");
    let out = t.md.finish(command);
    let vars: Vec<(&str, &str)> = out
        .success()
        .lines()
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .collect();
    let get = |k: &str| -> Vec<&str> {
        vars.iter()
            .filter(|(name, _)| *name == k)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(get("A"), ["2"], "a later -e wins: {out:#?}");
    assert_eq!(
        get("FROM_CALLER"),
        ["the caller's value"],
        "-e K takes the caller's value: {out:#?}"
    );
    assert_eq!(
        get(&absent),
        Vec::<&str>::new(),
        "-e K without a value in the caller sets nothing: {out:#?}"
    );
    assert_eq!(get("SPACED"), ["a b=c"], "{out:#?}");
    assert_eq!(get("EMPTY"), [""], "{out:#?}");
    assert_eq!(
        get("PATH"),
        ["/x:/bin"],
        "-e PATH replaces the default PATH: {out:#?}"
    );
    assert_eq!(
        get("NOT_PASSED"),
        Vec::<&str>::new(),
        "only what -e names reaches the container: {out:#?}"
    );
    assert_eq!(get("HOME").len(), 1, "the defaults stay: {out:#?}");
    let hostname = get("HOSTNAME");
    assert!(
        hostname.len() == 1 && hostname[0].len() == 12 && is_hex(hostname[0]),
        "HOSTNAME is the short ID: {out:#?}"
    );
    // A detached container too.
    let id = t.run_d(&["-e", "X=y z"], &["sh", "-c", "echo \"$X\""]);
    t.wait_exited(&id);
    assert_eq!(t.logs(&[&id]).stdout, "y z\n");
    t.exec(&["rm", &id]).success();
    let before = t.paths();
    for bad in ["=x", "", "a b=1", " A=1", "A\tB=1", "A B"] {
        let out = t.exec(&["run", "-d", &format!("--env={bad}"), IMAGE, "true"]);
        assert_eq!(
            out.code,
            Some(125),
            "-e {bad:?} is refused with 125: {out:#?}"
        );
        out.one_line_failure();
        assert!(
            t.ps(&["-a"]).is_empty() && t.paths() == before,
            "a refused -e makes nothing ({bad:?})"
        );
    }
}

// ---------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------

/// Every regular file under `root` (not following symlinks): its path,
/// inode and content.
fn regular_files(root: &Path) -> BTreeMap<PathBuf, (u64, u64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = BTreeMap::new();
    for (path, meta) in walk(root) {
        if meta.is_file() {
            if let Ok(content) = std::fs::read(&path) {
                found.insert(path, (meta.dev(), meta.ino(), content));
            }
        }
    }
    found
}

/// The files that were rewritten in place between two looks: the same
/// inode, and the old content is not the start of the new one.
fn rewritten(
    before: &BTreeMap<PathBuf, (u64, u64, Vec<u8>)>,
    after: &BTreeMap<PathBuf, (u64, u64, Vec<u8>)>,
) -> Vec<String> {
    let mut found = Vec::new();
    for (path, (dev, ino, old)) in before {
        if let Some((dev2, ino2, new)) = after.get(path) {
            if (dev, ino) == (dev2, ino2) && !new.starts_with(old) {
                let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
                found.push(format!(
                    "{}:\n  before: {}\n  after:  {}",
                    path.display(),
                    show(old),
                    show(new)
                ));
            }
        }
    }
    found
}

#[test]
fn state_files_are_replaced_or_appended_to_never_rewritten_in_place() {
    let t = T::new();
    let id = t.run_d(&[], &t.busy());
    let containers = t.md.root().join("containers");
    let mut look = regular_files(&containers);
    let mut statuses = vec![t.status(&id)];
    let steps: [&[&str]; 4] = [
        &["stop", "-t", "0", &id],
        &["start", &id],
        &["stop", "-t", "1", &id],
        &["start", &id],
    ];
    for step in steps {
        t.exec(step).success();
        let after = regular_files(&containers);
        let bad = rewritten(&look, &after);
        assert!(
            bad.is_empty(),
            "`{}` rewrote files in place (same inode, the old content not kept at its start): a reader at the wrong moment sees half a record. Write a temporary file and rename it over the old one (a log may only grow):\n{}",
            step.join(" "),
            bad.join("\n")
        );
        look = after;
        statuses.push(t.status(&id));
    }
    let ups: Vec<bool> = statuses.iter().map(|s| is_up(s)).collect();
    assert_eq!(
        ups,
        [true, false, true, false, true],
        "the container went up and down: {statuses:?}"
    );
    t.exec(&["rm", "-f", &id]).success();
    t.assert_gone(&id, None, None);
}

#[test]
fn ps_never_fails_while_containers_start_and_stop() {
    let t = T::new();
    let known: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let done = Mutex::new(false);
    let looks = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut looks = 0;
            while !*done.lock().unwrap() {
                let listed_before: Vec<String> = known.lock().unwrap().clone();
                let out = t.exec(&["ps", "-a"]);
                assert!(
                    out.code == Some(0) && out.stderr.is_empty(),
                    "`ps -a` failed while containers started and stopped: {out:#?}"
                );
                let rows = parse_ps(&out, "ps -a");
                for id in &listed_before {
                    assert!(
                        rows.iter().any(|r| id.starts_with(&r.id)),
                        "`ps -a` left out container {} (a record being written?): {out:#?}",
                        &id[..12]
                    );
                }
                for row in &rows {
                    assert!(
                        is_up(&row.status)
                            || exit_code(&row.status).is_some()
                            || row.status == "Created",
                        "a STATUS of Docker's: {row:?}"
                    );
                }
                looks += 1;
            }
            looks
        });
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let id = t.run_d(&[], &t.busy());
                        known.lock().unwrap().push(id.clone());
                        t.exec(&["stop", "-t", "0", &id]).success();
                    }
                })
            })
            .collect();
        let mut failed = None;
        for w in workers {
            if let Err(e) = w.join() {
                failed = Some(e);
            }
        }
        *done.lock().unwrap() = true;
        let looks = watcher.join();
        if let Some(e) = failed {
            std::panic::resume_unwind(e);
        }
        looks.unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    assert!(looks >= 5, "ps -a ran {looks} times only");
    let ids = known.into_inner().unwrap();
    let rows = t.ps(&["-a"]);
    assert_eq!(rows.len(), 20, "{rows:#?}");
    for row in &rows {
        assert_eq!(exit_code(&row.status), Some(137), "{row:?}");
    }
    let mut args = vec!["rm"];
    args.extend(ids.iter().map(String::as_str));
    t.exec(&args).success();
    assert_eq!(t.exec(&["ps", "-a"]).success(), EMPTY_PS);
}

// ---------------------------------------------------------------------
// The earlier stages' tests
// ---------------------------------------------------------------------

#[test]
fn the_harness_runs_the_earlier_stages_containers_with_rm() {
    // Mydocker::new(), as the earlier stages' tests use it: `run` gets
    // --rm, however it is started, and nothing else changes.
    let _turn = TURNS.read().unwrap_or_else(|e| e.into_inner());
    let md = Mydocker::new();
    assert_eq!(md.run(&[], &["sh", "-c", "exit 3"]).code, Some(3));
    assert_eq!(md.sh(&[], "echo 'hi there'").success(), "hi there\n");
    let running = md.start(&[], "read x; echo done");
    assert_eq!(running.finish().success(), "done\n");
    let root = md.root().to_string_lossy().into_owned();
    let mut command = Command::new(md.bin());
    command
        .args([
            "--root",
            &root,
            "run",
            IMAGE,
            "sh",
            "-c",
            "echo \"$0 $1\"",
            "a b",
            "run",
        ])
        .stdin(Stdio::null());
    assert_eq!(md.finish(command).success(), "a b run\n");
    let out = md.in_mount_namespace(
        "\"$MYDOCKER\" run busybox sh -c 'exit 4'; echo \"rc=$?\"",
        &[] as &[&str],
    );
    assert_eq!(out.success(), "rc=4\n");
    assert_eq!(
        md.exec_as_given(&["ps", "-a"]).success(),
        EMPTY_PS,
        "every container the earlier stages' tests run is removed when it ends"
    );
}
