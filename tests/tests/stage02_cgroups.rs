//! Stage 2: `run` limits memory, CPU, cpuset and processes with cgroups (v1
//! or v2, whichever the host has), and removes the cgroup when the
//! container ends. Each test looks from inside the container (its
//! /proc/self) and from outside (the host's cgroup files).
//!
//! The commands work with the host's tools (stages 1 and 2) and in the
//! busybox image (stage 3 on): `sh`, and `busybox APPLET` for the rest.

use std::path::Path;
use std::time::Duration;

use mydocker_stage_tests::slowed::run_slowed;
use mydocker_stage_tests::{
    assert_no_cgroup_left, cgroup_layout, cgroup_roots, cgroups_exclusive, cgroups_shared,
    children_of, container_cgroups, descendants, eventually, online_cpus, signal, start_time,
    CgroupLayout, Mydocker,
};

/// Block until the test calls `finish()`, which closes standard input;
/// then end well.
const WAIT: &str = "read x || true";

fn v2() -> bool {
    matches!(cgroup_layout(), CgroupLayout::V2(_))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A `key value` line of a flat-keyed cgroup file such as cpu.stat.
fn stat(path: &Path, key: &str) -> u64 {
    read(path)
        .lines()
        .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
}

/// Allocate `bytes` of memory in the shell itself: a command substitution
/// keeps all of its output in the shell's memory.
fn hog(bytes: u64) -> String {
    format!("x=$(busybox head -c {bytes} /dev/zero | busybox tr '\\0' a); echo ${{#x}}")
}

#[test]
fn the_container_has_a_cgroup_named_after_it() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let running = md.start(&["-m", "64m", "--pids-limit", "100"], WAIT);
    for controller in ["memory", "pids"] {
        let dir = running.cgroup_dir(controller);
        let parent = dir.parent().unwrap();
        assert_eq!(parent.file_name().unwrap(), "mydocker", "{}", dir.display());
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "the cgroup should be named after a 64-hex-digit container ID: {}",
            dir.display()
        );
        // The container's PID 1, as the host sees it, is in there.
        let pid1 = children_of(running.id());
        let procs = read(&dir.join("cgroup.procs"));
        assert!(
            procs.lines().any(|p| pid1.contains(&p.parse().unwrap())),
            "PID 1 ({pid1:?}) is not in {}: {procs}",
            dir.display()
        );
    }
    let dirs = [running.cgroup_dir("memory"), running.cgroup_dir("pids")];
    running.finish().success();
    for dir in dirs {
        assert!(
            !dir.exists(),
            "{} is left after the container ended",
            dir.display()
        );
    }
}

#[test]
fn limits_are_written_before_the_command_runs() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    // Room for one process, the container's PID 1: its very first fork
    // must fail. That holds only if pids.max was 1, and the container in
    // its cgroup, before the command started. A binary that releases the
    // command first and writes the limits after races its own container,
    // and on a fast machine may win that race every time: run_slowed makes
    // it lose. From the moment mydocker starts the container's process,
    // each of mydocker's own system calls waits 30 ms (the container runs
    // at full speed), so a limit written after the release comes a tenth
    // of a second late or more, while the shell forks within
    // milliseconds. A binary that writes the limits first is only slower.
    let run = md.command(&md.run_args(
        &["--pids-limit", "1"],
        &["sh", "-c", "busybox true && echo forked"],
    ));
    let out = run_slowed(run, Duration::from_millis(30), md.timeout());
    assert!(
        !out.stdout.contains("forked"),
        "the shell forked: the limit came after the command started: {out:#?}"
    );
    assert_ne!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stderr.to_lowercase().contains("fork"),
        "the shell should say that it cannot fork: {out:#?}"
    );
    // With room for the test's own commands: every limit, in the kernel's
    // units.
    let options = [
        "-m",
        "32m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--pids-limit",
        "20",
    ];
    let running = md.start(&options, WAIT);
    let file = |controller: &str, name: &str| read(&running.cgroup_dir(controller).join(name));
    if v2() {
        assert_eq!(file("memory", "memory.max"), "33554432");
        assert_eq!(file("cpu", "cpu.max"), "50000 100000");
        // 1 + (512 - 2) * 9999 / 262142, the formula runc documents.
        assert_eq!(file("cpu", "cpu.weight"), "20");
        assert_eq!(file("cpuset", "cpuset.cpus"), "0");
    } else {
        assert_eq!(file("memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(file("cpu", "cpu.shares"), "512");
        assert_eq!(file("cpuset", "cpuset.cpus"), "0");
        assert!(!file("cpuset", "cpuset.mems").is_empty());
    }
    assert_eq!(file("pids", "pids.max"), "20");
    running.finish().success();
}

#[test]
fn a_process_over_the_memory_limit_is_oom_killed() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let out = md.sh(&["-m", "32m"], &hog(64 << 20));
    // The kernel's OOM killer sends SIGKILL: 128 + 9.
    assert_eq!(out.code, Some(137), "{out:#?}");
}

#[test]
fn a_process_under_the_memory_limit_finishes() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let out = md.sh(&["-m", "32m"], &hog(8 << 20));
    assert_eq!(out.success(), format!("{}\n", 8 << 20));
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    // Print a count after each process started; fork fails at the limit
    // (EAGAIN), and the shell gives up.
    let script = "i=0; while [ $i -lt 40 ]; do busybox sleep 30 & i=$((i+1)); echo $i; done";
    let out = md.sh(&["--pids-limit", "20"], script);
    let started = out.stdout.lines().last().unwrap_or("0");
    let started: u32 = started.parse().unwrap();
    // The shell itself counts: at most 19 more.
    assert!(started < 20, "{started} processes started: {out:#?}");
    assert!(started >= 10, "only {started} processes started: {out:#?}");
    assert_ne!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.to_lowercase().contains("fork"), "{out:#?}");
}

#[test]
fn cpus_throttles_a_busy_loop() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let running = md.start(&["--cpus", "0.2"], &format!("while :; do :; done & {WAIT}"));
    let cpu_stat = running.cgroup_dir("cpu").join("cpu.stat");
    let throttled = || stat(&cpu_stat, "nr_throttled");
    assert!(
        eventually(Duration::from_secs(30), || throttled() > 0),
        "a busy loop under --cpus 0.2 is never throttled: {}",
        read(&cpu_stat)
    );
    let first = throttled();
    assert!(
        eventually(Duration::from_secs(30), || throttled() > first),
        "nr_throttled does not grow: {}",
        read(&cpu_stat)
    );
    running.finish().success();
}

#[test]
fn cpuset_cpus_shows_inside() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let cpus = online_cpus();
    let last = cpus.last().unwrap().to_string();
    for cpu in ["0", &last] {
        let out = md.sh(
            &["--cpuset-cpus", cpu],
            "busybox grep Cpus_allowed_list /proc/self/status",
        );
        assert_eq!(out.success(), format!("Cpus_allowed_list:\t{cpu}\n"));
    }
}

#[test]
fn the_cgroup_is_removed_when_the_container_is_killed() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let running = md.start(&["-m", "64m"], WAIT);
    let dir = running.cgroup_dir("memory");
    assert!(dir.is_dir());
    let pid1 = children_of(running.id());
    assert_eq!(pid1.len(), 1, "mydocker should have one child: {pid1:?}");
    assert_eq!(unsafe { libc::kill(pid1[0] as i32, libc::SIGKILL) }, 0);
    let out = running.finish();
    assert_eq!(out.code, Some(137), "{out:#?}");
    assert!(!dir.exists(), "{} is left after a kill", dir.display());
}

/// When mydocker is killed with SIGKILL, the kernel ends its container
/// (PR_SET_PDEATHSIG): no process keeps running in its cgroup.
#[test]
fn killing_mydocker_empties_the_containers_cgroup() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    let running = md.start(
        &["-m", "64m", "--pids-limit", "50"],
        "busybox sleep 1000 & wait",
    );
    let dirs = running.container_cgroups();
    let memory = running.cgroup_dir("memory");
    let procs = || {
        std::fs::read_to_string(memory.join("cgroup.procs"))
            .map(|p| p.split_whitespace().map(String::from).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(5), || procs().len() >= 2),
        "the shell and its sleep should be in {}: {:?}",
        memory.display(),
        procs()
    );
    let processes: Vec<(u32, Option<u64>)> = descendants(running.id())
        .into_iter()
        .map(|p| (p, start_time(p)))
        .collect();
    signal(running.id(), libc::SIGKILL);
    let out = running.finish();
    assert_eq!(
        out.code, None,
        "mydocker should have died of SIGKILL: {out:#?}"
    );
    let emptied = eventually(Duration::from_secs(5), || procs().is_empty());
    let left = procs();
    // Whatever the verdict, leave nothing running and no cgroup behind.
    for (p, t) in &processes {
        if mydocker_stage_tests::alive(*p, *t) {
            signal(*p, libc::SIGKILL);
        }
    }
    eventually(Duration::from_secs(5), || procs().is_empty());
    md.forget_killed_run(&dirs);
    assert!(
        emptied,
        "5 s after mydocker was killed, processes {left:?} still ran in {}",
        memory.display()
    );
}

#[test]
fn parallel_containers_get_cgroups_of_their_own() {
    let _lock = cgroups_shared();
    let md = Mydocker::new();
    // Containers that start and end together also create and remove the
    // shared parent together: none may fail for it.
    let children: Vec<_> = (0..8)
        .map(|_| {
            md.spawn(
                &["-m", "64m", "--cpuset-cpus", "0", "--pids-limit", "50"],
                &["busybox", "cat", "/proc/self/cgroup"],
            )
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait();
        let line = out
            .success()
            .lines()
            .find(|l| l.contains("mydocker/"))
            .unwrap_or_else(|| panic!("no mydocker cgroup: {out:#?}"))
            .to_string();
        assert!(seen.insert(line.clone()), "two containers in {line}");
    }
}

#[test]
fn bad_limits_fail_with_one_line_and_leave_nothing() {
    let _lock = cgroups_exclusive();
    let md = Mydocker::new();
    let beyond = (online_cpus().last().unwrap() + 1).to_string();
    let cases: [&[&str]; 9] = [
        &["-m", "64x"],
        &["--memory", "lots"],
        &["--cpus", "abc"],
        &["--cpus", "0"],
        &["--cpuset-cpus", &beyond],
        // Refused at once, not expanded into four billion CPUs first.
        &["--cpuset-cpus", "0-4294967295"],
        &["--cpuset-cpus", "zero"],
        &["--cpu-shares", "many"],
        &["--pids-limit", "-5"],
    ];
    let before = container_cgroups();
    for options in cases {
        let out = md.run(options, &["sh", "-c", "echo started"]);
        let stderr = out.failure();
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one line for {options:?}: {out:#?}"
        );
        assert!(!out.stdout.contains("started"), "{options:?} ran: {out:#?}");
        assert_no_cgroup_left(&before, &format!("run {options:?}"));
    }
}

#[test]
fn a_limit_the_kernel_refuses_leaves_nothing() {
    let _lock = cgroups_exclusive();
    let md = Mydocker::new();
    let before = container_cgroups();
    // pids.max takes at most 4194304 (PID_MAX_LIMIT): whether mydocker
    // checks that itself or the kernel refuses the write, the run fails
    // cleanly and its half-made cgroup is gone.
    let out = md.run(
        &["--pids-limit", "99999999999"],
        &["sh", "-c", "echo started"],
    );
    let stderr = out.failure();
    assert_eq!(stderr.trim().lines().count(), 1, "{out:#?}");
    assert!(!out.stdout.contains("started"), "{out:#?}");
    assert_no_cgroup_left(&before, "a refused --pids-limit");
}

#[test]
fn nothing_is_left_after_containers_end() {
    let _lock = cgroups_exclusive();
    let md = Mydocker::new();
    let before = container_cgroups();
    assert_eq!(
        md.sh(&["-m", "64m", "--pids-limit", "50"], "exit 3").code,
        Some(3)
    );
    md.run(&["-m", "64m"], &["no-such-command-xyz"]).failure();
    assert_eq!(md.sh(&["-m", "32m"], &hog(64 << 20)).code, Some(137));
    assert_no_cgroup_left(&before, "containers that ended");
    // With no other container running, the shared parent is gone too.
    // (Someone else's containers on this machine keep it, rightly.)
    if !container_cgroups().is_empty() {
        return;
    }
    for root in cgroup_roots() {
        let parent = root.join("mydocker");
        assert!(
            !parent.exists(),
            "{} is left: {:?}",
            parent.display(),
            container_cgroups()
        );
    }
}

#[test]
fn info_names_the_cgroup_layout() {
    let md = Mydocker::new();
    let out = md.exec(&["info"]);
    let stdout = out.success();
    if v2() {
        assert!(stdout.contains("v2") && !stdout.contains("v1"), "{stdout}");
    } else {
        assert!(stdout.contains("v1"), "{stdout}");
    }
    assert!(stdout.contains("memory"), "{stdout}");
}
