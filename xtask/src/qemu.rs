//! The stage tests on a real cgroup v2 kernel, when this host is not one.
//!
//! mydocker picks its cgroup code at run time, so a v1 (or hybrid) host only
//! ever exercises the v1 code. Here tests/qemu/run-v2.sh boots Debian's
//! cloud kernel under QEMU with `cgroup_no_v1=all`, copies the test
//! binaries and the mydocker binaries into it, and runs the stage tests
//! whose subject is cgroups there, one at a time: stages 1 and 2 whole,
//! and the cgroup tests of later stages (`exec` joins a cgroup).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::stages;

/// The tests of stages 1..=V2_STAGES run in the guest: those are the
/// stages whose behaviour depends on the cgroup layout.
const V2_STAGES: u32 = 2;

/// Tests of later stages that depend on the layout too: (stage, the
/// filter that picks them, by name).
const V2_LATER: &[(u32, &str)] = &[(8, "cgroup")];

/// One test executable, the stage it belongs to, and which of its tests
/// to run (all without a filter).
struct Tests {
    path: PathBuf,
    stage: u32,
    filter: Option<&'static str>,
}

pub fn v2_tests(root: &Path) -> Result<()> {
    println!("\n== cgroup v2 tests");
    if host_is_pure_v2()? {
        println!("this host has cgroup v2 only: the runs above exercised the v2 code");
        return Ok(());
    }
    println!("this host has cgroup v1: running the tests of stages 1-{V2_STAGES} on a pure cgroup v2 kernel under QEMU");
    let start = Instant::now();
    let cache = root.join(".cache/qemu");
    let status = as_root(root, "tests/qemu/fetch.sh")
        .arg(&cache)
        .stdout(Stdio::null())
        .status()
        .context("run tests/qemu/fetch.sh")?;
    if !status.success() {
        bail!("tests/qemu/fetch.sh could not fetch the v2 kernel and QEMU");
    }

    // The mydocker binaries under test, each with the stage it implements:
    // the complete program, and the chapter of the last stage tested here.
    let stage = stages::find(V2_STAGES).context("no such stage")?;
    let bin_dir = root.join("target/qemu");
    fs::create_dir_all(&bin_dir)?;
    let chapter = bin_dir.join(format!("mydocker-{}", stage.slug));
    fs::copy(
        root.join("target/stages").join(stage.slug).join("mydocker"),
        &chapter,
    )
    .with_context(|| format!("copy the binary of chapters/{}", stage.slug))?;
    let subjects = [
        (root.join("target/debug/mydocker"), stages::last()),
        (chapter, stage.number),
    ];
    let tests = test_binaries(root)?;

    let mut command = as_root(root, "tests/qemu/run-v2.sh");
    command.arg("--cache").arg(&cache);
    let test_paths = tests.iter().map(|t| &t.path);
    for path in subjects.iter().map(|(p, _)| p).chain(test_paths) {
        command.arg("--bin").arg(path);
    }
    command.args(["--", "sh", "-c", &guest_script(&subjects, &tests)]);
    let status = command.status().context("run tests/qemu/run-v2.sh")?;
    if !status.success() {
        bail!("the stage tests failed on cgroup v2 (tests/qemu/run-v2.sh exited with {status})");
    }
    println!(
        "cgroup v2: stages 1-{V2_STAGES} passed under QEMU in {:.0?}",
        start.elapsed()
    );
    Ok(())
}

/// What the guest runs: every test binary against every subject, one test
/// at a time (the guest is slow, and has two CPUs).
fn guest_script(subjects: &[(PathBuf, u32)], tests: &[Tests]) -> String {
    let name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let mut script = String::from("set -e; mydocker info\n");
    for (bin, stage) in subjects {
        for test in tests.iter().filter(|t| t.stage <= *stage) {
            script.push_str(&format!(
                "echo '== {test} {filter} against {bin} (stage {stage}) on cgroup v2'\n\
                 MYDOCKER_BIN=/opt/bin/{bin} MYDOCKER_STAGE={stage} /opt/bin/{test} --test-threads=1 {filter}\n",
                bin = name(bin),
                test = name(&test.path),
                filter = test.filter.unwrap_or_default(),
            ));
        }
    }
    script
}

/// Build the stage tests and return the executables of stages
/// 1..=V2_STAGES and of V2_LATER.
fn test_binaries(root: &Path) -> Result<Vec<Tests>> {
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["test", "--no-run", "--message-format=json"])
        .args(["--package", "mydocker-stage-tests"])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !output.status.success() {
        bail!("the stage tests do not build");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        let stage = name
            .strip_prefix("stage")
            .and_then(|s| s.get(..2))
            .and_then(|n| n.parse::<u32>().ok());
        let Some(stage) = stage else { continue };
        let later = V2_LATER.iter().find(|(n, _)| *n == stage);
        if let Some((_, filter)) = later {
            // A filter that picks no test would pass with nothing run.
            let listed = Command::new(executable)
                .args(["--list", filter])
                .output()
                .with_context(|| format!("run {executable} --list"))?;
            let count = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .filter(|line| line.ends_with(": test"))
                .count();
            if count == 0 {
                bail!("no test of {name} has {filter:?} in its name");
            }
        }
        if stage <= V2_STAGES || later.is_some() {
            found.push(Tests {
                path: PathBuf::from(executable),
                stage,
                filter: later.map(|(_, filter)| *filter),
            });
        }
    }
    found.sort_by_key(|t| t.stage);
    let expected = V2_STAGES as usize + V2_LATER.len();
    if found.len() != expected {
        let paths: Vec<_> = found.iter().map(|t| &t.path).collect();
        bail!("expected {expected} stage test binaries, found {paths:?}");
    }
    Ok(found)
}

/// True when /proc/self/mountinfo shows cgroup2 and no v1 controller.
fn host_is_pure_v2() -> Result<bool> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let mut v2 = false;
    for line in text.lines() {
        let Some((_, fs)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = fs.split(' ').collect();
        match fields.first() {
            Some(&"cgroup2") => v2 = true,
            // A v1 hierarchy with a controller; name=systemd alone has none.
            Some(&"cgroup")
                if fields.get(2).is_some_and(|options| {
                    options
                        .split(',')
                        .any(|o| o != "rw" && o != "ro" && !o.contains('=') && o != "xattr")
                }) =>
            {
                return Ok(false)
            }
            _ => {}
        }
    }
    Ok(v2)
}

/// A script of tests/qemu, run as root: through sudo unless we are root.
fn as_root(root: &Path, script: &str) -> Command {
    let path = root.join(script);
    if crate::test::is_root() {
        Command::new(path)
    } else {
        let mut command = Command::new("sudo");
        command.arg(path);
        command
    }
}
