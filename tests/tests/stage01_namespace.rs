//! Stage 1: `mydocker run` puts the command in new UTS, PID, mount, IPC and
//! network namespaces, with its arguments intact and its exit code reported.

use std::time::Duration;

use mydocker_stage_tests::{
    alive, children_of, container_cgroups_of, descendants, eventually, host_mounts, signal,
    start_time, wait_with_timeout, Mydocker, Spawned,
};

#[test]
fn the_command_is_pid_1() {
    let md = Mydocker::new();
    let out = md.sh(&[], "echo $$; cat /proc/1/cmdline | tr '\\0' ' '");
    let mut lines = out.success().lines();
    assert_eq!(lines.next(), Some("1"), "the shell must be PID 1");
    assert_eq!(
        lines.next(),
        Some("sh -c echo $$; cat /proc/1/cmdline | tr '\\0' ' ' ")
    );
}

#[test]
fn ps_sees_only_the_containers_processes() {
    let md = Mydocker::new();
    // `busybox ps` exists on the host (busybox-static) and in the image.
    let out = md.sh(&[], "busybox ps -o pid,comm");
    let stdout = out.success();
    let processes: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(
        processes.len() <= 3 && processes[0].split_whitespace().next() == Some("1"),
        "expected only the shell (PID 1) and ps, got:\n{stdout}"
    );
    let test_pid = std::process::id().to_string();
    for line in &processes {
        assert_ne!(line.split_whitespace().next(), Some(test_pid.as_str()));
    }
}

#[test]
fn the_hostname_is_the_containers_own() {
    let md = Mydocker::new();
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = md.sh(&[], "busybox hostname renamed-inside && busybox hostname");
    assert_eq!(out.success(), "renamed-inside\n");
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host_before, host_after, "the host's hostname changed");
}

#[test]
fn only_loopback_exists_in_the_network_namespace() {
    let md = Mydocker::new();
    // /proc/net/dev lists the interfaces of the reader's network namespace.
    let out = md.sh(&[], "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(out.success(), "lo\n");
}

#[test]
fn every_namespace_differs_from_the_hosts() {
    let md = Mydocker::new();
    let kinds = ["uts", "pid", "mnt", "ipc", "net"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let out = md.sh(&[], &script);
    let inside: Vec<&str> = out.success().lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out:#?}");
    for (kind, link) in kinds.iter().zip(inside) {
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        assert_ne!(
            host.to_string_lossy(),
            link,
            "the container shares the host's {kind} namespace"
        );
    }
}

#[test]
fn the_exit_code_is_the_commands() {
    let md = Mydocker::new();
    assert_eq!(md.sh(&[], "exit 3").code, Some(3));
    assert_eq!(md.sh(&[], "exit 0").code, Some(0));
    assert_eq!(md.run(&[], &["false"]).code, Some(1));
}

#[test]
fn a_killed_container_exits_128_plus_the_signal() {
    let md = Mydocker::new();
    let mut child = md.spawn(&[], &["sh", "-c", "echo ready; while :; do sleep 1; done"]);
    child.expect_line("ready");
    // The container's PID 1 is mydocker's child, as the host sees it. Only
    // SIGKILL from outside can end a PID 1 that has no handler for a signal.
    kill_pid_1(child);
}

#[test]
fn signals_to_mydocker_reach_the_container() {
    let md = Mydocker::new();
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let mut child = md.spawn(&[], &["sh", "-c", script]);
    child.expect_line("ready");
    signal(child.id(), libc::SIGTERM);
    child.expect_line("got TERM");
    let out = child.wait();
    assert_eq!(out.code, Some(7), "{out:#?}");
}

/// Ctrl-C sends SIGINT, closing the terminal SIGHUP: `docker run` passes
/// both on, like SIGTERM, and does not die of them itself.
#[test]
fn sigint_and_sighup_reach_the_container_like_sigterm() {
    let md = Mydocker::new();
    let script = "trap 'echo got INT' INT; trap 'echo got HUP' HUP; echo ready; \
                  while :; do sleep 0.1; done";
    let mut child = md.spawn(&[], &["sh", "-c", script]);
    child.expect_line("ready");
    for (number, name) in [(libc::SIGINT, "INT"), (libc::SIGHUP, "HUP")] {
        signal(child.id(), number);
        child.expect_line(&format!("got {name}"));
        assert!(
            child.is_running(),
            "mydocker died of SIG{name} while its container ran"
        );
    }
    // The container handled both and runs on; end it from the host.
    kill_pid_1(child);
}

/// A container may ignore SIGTERM, or handle it and go on: mydocker passes
/// on every signal, the third as the first, and waits (a second Ctrl-C to
/// `docker run` does not kill it either). Only SIGKILL ends such a
/// container.
#[test]
fn a_container_that_ignores_sigterm_gets_every_one_and_mydocker_waits() {
    let md = Mydocker::new();
    let script = "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done";
    let mut child = md.spawn(&[], &["sh", "-c", script]);
    child.expect_line("ready");
    for _ in 0..3 {
        signal(child.id(), libc::SIGTERM);
        child.expect_line("got TERM");
    }
    assert!(child.is_running(), "mydocker gave up on its container");
    kill_pid_1(child);

    // A PID 1 without a handler: the kernel drops SIGTERM for it, and
    // mydocker keeps waiting for it.
    let mut child = md.spawn(&[], &["sh", "-c", "echo ready; exec sleep 1000"]);
    child.expect_line("ready");
    for _ in 0..3 {
        signal(child.id(), libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.is_running(),
        "mydocker exited while its container still ran"
    );
    let pid = children_of(child.id());
    assert_eq!(pid.len(), 1, "mydocker should have one child: {pid:?}");
    assert!(
        alive(pid[0], None),
        "the container ended of an ignored SIGTERM"
    );
    signal(pid[0], libc::SIGKILL);
    assert_eq!(child.wait().code, Some(128 + 9));
}

/// SIGKILL cannot be caught or passed on: when mydocker is killed, the
/// kernel must end its container (PR_SET_PDEATHSIG), or it runs on with
/// no one to wait for it.
#[test]
fn the_container_dies_with_mydocker() {
    let md = Mydocker::new();
    let mut child = md.spawn(&[], &["sh", "-c", "sleep 1000 & echo ready; wait"]);
    child.expect_line("ready");
    let processes = descendants(child.id());
    assert!(
        processes.len() >= 2,
        "expected at least the container's shell and its sleep: {processes:?}"
    );
    let started: Vec<(u32, Option<u64>)> = processes.iter().map(|p| (*p, start_time(*p))).collect();
    let cgroups: Vec<_> = processes
        .iter()
        .flat_map(|p| container_cgroups_of(*p))
        .collect();
    signal(child.id(), libc::SIGKILL);
    let out = child.wait();
    assert_eq!(
        out.code, None,
        "mydocker should have died of SIGKILL: {out:#?}"
    );
    let gone = eventually(Duration::from_secs(5), || {
        started.iter().all(|(p, t)| !alive(*p, *t))
    });
    let survivors: Vec<u32> = started
        .iter()
        .filter(|(p, t)| alive(*p, *t))
        .map(|(p, _)| *p)
        .collect();
    // Whatever the verdict, leave nothing running.
    for p in &survivors {
        signal(*p, libc::SIGKILL);
    }
    eventually(Duration::from_secs(5), || {
        started.iter().all(|(p, t)| !alive(*p, *t))
    });
    md.forget_killed_run(&cgroups);
    assert!(
        gone,
        "the container's processes {survivors:?} still ran 5 s after mydocker was killed"
    );
}

#[test]
fn arguments_arrive_intact() {
    let md = Mydocker::new();
    assert_eq!(md.sh(&[], "echo hi there").success(), "hi there\n");
    // Empty arguments, spaces, quotes and words that look like mydocker's
    // own flags all belong to the container's command.
    let out = md.run(
        &[],
        &[
            "printf", "[%s]", "a  b", "", "it's", "-i", "--tty", "-m", "1g",
        ],
    );
    assert_eq!(out.success(), "[a  b][][it's][-i][--tty][-m][1g]");
}

#[test]
fn stdin_is_attached_only_with_i() {
    use std::io::Write;
    use std::process::Stdio;
    let md = Mydocker::new();
    for (options, expected) in [(&["-i"][..], "hello from the host\n"), (&[][..], "")] {
        let mut child = md
            .command(&md.run_args(options, &["cat"]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Without -i the container may end before we write: ignore EPIPE.
        let _ = stdin.write_all(b"hello from the host\n");
        drop(stdin);
        let out = wait_with_timeout(child, md.timeout());
        assert_eq!(out.success(), expected, "run {options:?} cat");
    }
}

#[test]
fn a_missing_command_fails_with_127_and_names_it() {
    let md = Mydocker::new();
    let out = md.run(&[], &["no-such-command-xyz", "arg"]);
    assert_eq!(out.code, Some(127), "{out:#?}");
    assert!(out.stderr.contains("no-such-command-xyz"), "{out:#?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:#?}");
}

#[test]
fn a_file_that_is_not_executable_exits_126() {
    let md = Mydocker::new();
    // /etc/passwd exists, on the host and in the busybox image, but is no
    // program: execve fails with EACCES, which a shell reports as 126.
    let out = md.run(&[], &["/etc/passwd"]);
    assert_eq!(out.code, Some(126), "{out:#?}");
    assert!(out.stderr.contains("/etc/passwd"), "{out:#?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:#?}");
}

#[test]
fn run_without_a_command_is_a_usage_error() {
    let md = Mydocker::new();
    let args: Vec<String> = md.run_args(&[], &[]);
    let out = md.exec(&args);
    assert!(out.failure().to_lowercase().contains("usage"), "{out:#?}");
}

#[test]
fn run_needs_root_and_says_so() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let md = Mydocker::new();
    // A copy that `nobody` can reach: the binary under test may live in a
    // home directory that other users cannot enter.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("mydocker");
    std::fs::copy(md.real_bin(), &copy).unwrap();
    let mut command = std::process::Command::new(&copy);
    command
        .args(md.adapted(&md.run_args(&[], &["true"])))
        .env("MYDOCKER_ROOT", md.root())
        .stdin(std::process::Stdio::null());
    command.uid(65534).gid(65534); // nobody
    let out = md.finish(command);
    let stderr = out.failure();
    assert!(stderr.contains("root"), "{out:#?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {out:#?}");
}

#[test]
fn the_host_is_untouched_after_runs() {
    let md = Mydocker::new();
    let mounts_before = host_mounts();
    md.sh(&[], "echo ok").success();
    md.run(&[], &["no-such-command-xyz"]).failure();
    md.sh(&[], "exit 5");
    // The host's /proc is still the host's: /proc/self is this process.
    let me = std::fs::read_link("/proc/self").unwrap();
    assert_eq!(me.to_string_lossy(), std::process::id().to_string());
    assert!(
        eventually(Duration::from_secs(5), || host_mounts() == mounts_before),
        "the host's mount table changed:\nbefore:\n{mounts_before}\nafter:\n{}",
        host_mounts()
    );
}

/// On a systemd host `/` is a *shared* mount: a container that mounts before
/// making its mounts private would mount on the host too. This host may not
/// be like that, so the test builds such a world: a mount namespace of its
/// own whose mounts are shared, and runs mydocker in there. The namespace
/// is made private first, then shared: its mounts are peers of each other,
/// never of the real host's, so even a broken binary cannot reach the host
/// from there (on a systemd host, `unshare --propagation shared` alone
/// would leave them peers of the host's own mounts).
#[test]
fn mounts_never_propagate_out_even_from_shared_mounts() {
    let md = Mydocker::new();
    let run = md.run_args(&[], &["sh", "-c", "echo inside"]);
    let script = format!(
        "mount --make-rshared / || exit 99; before=$(wc -l < /proc/self/mountinfo); \"$0\" {} >/dev/null; echo \"$before $(wc -l < /proc/self/mountinfo)\"",
        run.iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(md.bin())
        .env("MYDOCKER_ROOT", md.root())
        .stdin(std::process::Stdio::null());
    let out = md.finish(command);
    let counts: Vec<&str> = out.success().split_whitespace().collect();
    assert_eq!(counts.len(), 2, "{out:#?}");
    assert_eq!(
        counts[0], counts[1],
        "mounts made in the container appeared outside it: {out:#?}"
    );
}

#[test]
fn the_command_starts_with_default_signals_and_no_stray_files() {
    let md = Mydocker::new();
    // `yes` dies quietly of SIGPIPE when `head` exits, unless SIGPIPE is
    // ignored (Rust programs ignore it, and exec keeps that).
    let out = md.sh(&[], "yes | head -n 1");
    assert_eq!(out.success(), "y\n");
    assert_eq!(out.stderr, "", "{out:#?}");
    // A descriptor open in mydocker's caller must not reach the container.
    let run: Vec<String> = md.run_args(&[], &["ls", "/proc/self/fd"]);
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("exec 7</dev/null; exec \"$@\"")
        .arg("sh")
        .arg(md.bin())
        .args(&run)
        .env("MYDOCKER_ROOT", md.root())
        .stdin(std::process::Stdio::null());
    let out = md.finish(command);
    let fds: Vec<&str> = out.success().split_whitespace().collect();
    // 0, 1, 2, and the directory ls itself is reading.
    assert_eq!(fds, ["0", "1", "2", "3"], "{out:#?}");
}

#[test]
fn init_refuses_to_run_by_hand() {
    let md = Mydocker::new();
    // Even with a file on fd 3, init outside a new PID namespace must not
    // pivot or rename anything: it is not PID 1.
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "exec 3</dev/null; exec \"$0\" init"])
        .arg(md.bin())
        .env("MYDOCKER_ROOT", md.root())
        .stdin(std::process::Stdio::null());
    let out = md.finish(command);
    assert!(out.failure().contains("mydocker run"), "{out:#?}");
}

/// End a container from the host with SIGKILL to its PID 1 (mydocker's one
/// child): the only signal such a PID 1 cannot ignore. mydocker exits 137.
fn kill_pid_1(child: Spawned) {
    let pid = children_of(child.id());
    assert_eq!(pid.len(), 1, "mydocker should have one child: {pid:?}");
    signal(pid[0], libc::SIGKILL);
    let out = child.wait();
    assert_eq!(out.code, Some(128 + 9), "{out:#?}");
}
