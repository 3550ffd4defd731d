//! `cargo xtask grade [--stage N] [--format text|markdown|csv] BIN...`:
//! grade binaries against the stage tests, as an instructor grades a
//! class; `cargo xtask test --stage N [--bin PATH]` grades one, as a
//! learner checks their own.
//!
//! The stage test binaries are built once (`cargo test --no-run`), then
//! every test of stages 1 to N runs against each binary, with
//! `MYDOCKER_STAGE=N`: no stopping at the first failure, and a time limit
//! on each test binary (the harness's own limits fail a hung test long
//! before). libtest's output is parsed into one result per test, and the
//! report ends with a summary: per stage, passed and failed; for each
//! failure, what was expected and the section of the book that teaches it
//! (from `tests/catalog.txt`). Everything printed on stdout is sorted, so
//! the same results always print the same report; progress goes to stderr.
//! Without root, the test binaries run through `sudo`. Each runs in a
//! network namespace of its own (`unshare --net`, see `run_tests`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[path = "../../tests/src/catalog.rs"]
#[allow(dead_code)]
pub mod catalog;

use crate::stages;

/// How long one test binary (one stage's tests) may run. The harness
/// fails a hung test within two minutes; this only catches a test binary
/// that hangs in spite of it.
pub const STAGE_LIMIT: Duration = Duration::from_secs(900);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Passed,
    Failed,
    /// Skipped: a test that did not run never counts as passed.
    Ignored,
    /// No result before the test binary's time limit.
    TimedOut,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Passed => "ok",
            Status::Failed => "FAILED",
            Status::Ignored => "IGNORED",
            Status::TimedOut => "TIMEOUT",
        }
    }
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test file, e.g. `stage01_namespace`.
    pub file: String,
    pub test: String,
    pub status: Status,
    /// What the test printed when it failed (its panic message).
    pub details: String,
}

impl TestResult {
    pub fn name(&self) -> String {
        format!("{}::{}", self.file, self.test)
    }
}

/// The stage a test file belongs to: `stage03_rootfs` is stage 3.
pub fn stage_of(file: &str) -> Option<u32> {
    file.strip_prefix("stage")?.get(..2)?.parse().ok()
}

/// The built stage test binaries and the catalog, ready to grade.
pub struct Grader {
    /// Test file name (`stage01_namespace`) to its test binary.
    pub tests: BTreeMap<String, PathBuf>,
    catalog: Vec<catalog::Entry>,
}

impl Grader {
    /// Build the stage tests (once) and read the catalog.
    pub fn new(root: &Path) -> Result<Grader> {
        let text = std::fs::read_to_string(root.join(catalog::CATALOG_PATH))
            .with_context(|| format!("read {}", catalog::CATALOG_PATH))?;
        let catalog = catalog::parse(&text).map_err(anyhow::Error::msg)?;
        Ok(Grader {
            tests: build_test_binaries(root)?,
            catalog,
        })
    }

    /// The test files of stages 1 to `stage`, in order.
    pub fn files_up_to(&self, stage: u32) -> Vec<(String, PathBuf)> {
        self.tests
            .iter()
            .filter(|(file, _)| stage_of(file).is_some_and(|n| n <= stage))
            .map(|(file, exe)| (file.clone(), exe.clone()))
            .collect()
    }

    /// Every test of stages 1 to `stage` against `bin`.
    pub fn grade(&self, bin: &Path, stage: u32) -> Result<Report> {
        self.grade_from(bin, 1, stage)
    }

    /// The tests of stages `first` to `stage` against `bin`, as stage
    /// `stage`'s program (`--only`: `first` is `stage`).
    pub fn grade_from(&self, bin: &Path, first: u32, stage: u32) -> Result<Report> {
        let mut results = Vec::new();
        for (file, exe) in self.files_up_to(stage) {
            if stage_of(&file).is_some_and(|n| n < first) {
                continue;
            }
            eprintln!("grade: {} against {}", file, bin.display());
            results.extend(run_tests(&file, &exe, bin, stage, &[], STAGE_LIMIT)?);
        }
        results.sort_by(|a, b| (&a.file, &a.test).cmp(&(&b.file, &b.test)));
        Ok(Report {
            bin: bin.to_path_buf(),
            stage,
            results,
        })
    }

    /// The catalog's line for a test, if it has one.
    pub fn entry(&self, file: &str, test: &str) -> Option<&catalog::Entry> {
        self.catalog
            .iter()
            .find(|e| e.file == file && e.test == test)
    }

    /// One line for a failed test: what was expected, and where the book
    /// teaches it.
    pub fn failure_line(&self, result: &TestResult) -> String {
        let status = result.status.label();
        match self.entry(&result.file, &result.test) {
            Some(entry) => format!(
                "{status} {}: expected {} -- see {}",
                result.name(),
                entry.expects,
                entry.section()
            ),
            None => format!(
                "{status} {} (no entry in {})",
                result.name(),
                catalog::CATALOG_PATH
            ),
        }
    }
}

/// Build the stage test binaries and find them in cargo's JSON messages.
pub fn build_test_binaries(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    eprintln!("grade: building the stage tests");
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "test",
            "--no-run",
            "--quiet",
            "--message-format=json",
            "--package",
            "mydocker-stage-tests",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !output.status.success() {
        bail!("the stage tests do not build");
    }
    let mut tests = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if is_test && stage_of(name).is_some() {
            tests.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no stage test binary (tests/tests/stageNN_*.rs)");
    }
    Ok(tests)
}

/// The names of the tests a test binary holds (those matching `filters`
/// exactly, when there are filters).
fn list_tests(exe: &Path, filters: &[String]) -> Result<Vec<String>> {
    let mut command = Command::new(exe);
    command.arg("--list");
    if !filters.is_empty() {
        command.args(filters).arg("--exact");
    }
    let output = command
        .output()
        .with_context(|| format!("run {} --list", exe.display()))?;
    if !output.status.success() {
        bail!("{} --list failed", exe.display());
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(String::from)
        .collect();
    names.sort();
    Ok(names)
}

/// Run the tests of one test binary (those named in `filters`, or all)
/// against `bin` as stage `stage`, for at most `limit`, and return one
/// result per test.
pub fn run_tests(
    file: &str,
    exe: &Path,
    bin: &Path,
    stage: u32,
    filters: &[String],
    limit: Duration,
) -> Result<Vec<TestResult>> {
    let expected = list_tests(exe, filters)?;
    if !filters.is_empty() {
        for filter in filters {
            if !expected.contains(filter) {
                bail!("{file} has no test {filter}");
            }
        }
    }
    // The test binary runs in a network namespace of its own: whatever the
    // binary under test does, no bridge, address, route or rule it makes
    // reaches the machine's network. (A stage 9 binary graded as stage 7
    // makes its default bridge on every `run`: the harness adds `--net
    // none` only from stage 9 on.) `lo` is up, and a veth pair stands for
    // the host's links, so that a container that sees "only lo" is not
    // seeing this namespace.
    let mut command = if crate::test::is_root() {
        Command::new("unshare")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("--preserve-env=MYDOCKER_BIN,MYDOCKER_STAGE,RUST_BACKTRACE,RUST_TEST_THREADS")
            .arg("unshare");
        sudo
    };
    command
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"ip link set lo up && ip link add outside0 type veth peer name outside1 && exec "$@""#,
        ])
        .arg("sh")
        .arg(exe);
    if !filters.is_empty() {
        command.args(filters).arg("--exact");
    }
    command
        .env("MYDOCKER_BIN", bin)
        .env("MYDOCKER_STAGE", stage.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: on timeout, the whole group goes.
        .process_group(0);
    // Only fds 0-2 go to the tests, and through them to mydocker, as from
    // a terminal: an fd 3 inherited from the caller (`flock LOCK cargo
    // xtask ...` holds its lock there) would hide the bug of a pipe that
    // must become fd 3 and already is (variant 01-namespace/fd3-flag-left-set).
    // SAFETY: close_range(2) is async-signal-safe, and touches no memory.
    unsafe {
        command.pre_exec(|| {
            let cloexec = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
            if libc::close_range(3, libc::c_uint::MAX, cloexec) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("run {}", exe.display()))?;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("piped stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().context("piped stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + limit;
    let mut status: BTreeMap<String, Status> = BTreeMap::new();
    let mut details: BTreeMap<String, String> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut timed_out = false;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                kill_group(child.id());
                break;
            }
        };
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, outcome)) = rest.rsplit_once(" ... ") {
                let outcome = match outcome {
                    "ok" => Some(Status::Passed),
                    "FAILED" => Some(Status::Failed),
                    o if o.starts_with("ignored") => Some(Status::Ignored),
                    _ => None,
                };
                if let Some(outcome) = outcome {
                    status.insert(name.to_string(), outcome);
                    continue;
                }
            }
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            section = Some(name.to_string());
            continue;
        }
        if line == "failures:" || line == "successes:" {
            section = None;
            continue;
        }
        if let Some(name) = &section {
            if line.starts_with("note: run with `RUST_BACKTRACE=1`") {
                continue;
            }
            let text = details.entry(name.clone()).or_default();
            text.push_str(&without_thread_id(&line));
            text.push('\n');
        }
    }
    let exit = child.wait().context("wait for the test binary")?;
    let stderr = stderr.join().unwrap_or_default();
    let mut results = Vec::new();
    for test in expected {
        let (status, detail) = match status.get(&test) {
            Some(s) => (*s, details.remove(&test).unwrap_or_default()),
            None if timed_out => (
                Status::TimedOut,
                format!(
                    "no result within {} s: xtask killed the test binary",
                    limit.as_secs()
                ),
            ),
            None => (
                Status::Failed,
                format!("no result: the test binary ended ({exit}) before reporting it\n{stderr}"),
            ),
        };
        results.push(TestResult {
            file: file.to_string(),
            test,
            status,
            details: detail.trim().to_string(),
        });
    }
    Ok(results)
}

/// libtest's `thread 'NAME' (ID) panicked at`, without the thread's ID,
/// which differs from run to run.
fn without_thread_id(line: &str) -> String {
    let parsed = line.strip_prefix("thread '").and_then(|rest| {
        let (name, rest) = rest.split_once("' (")?;
        let (id, rest) = rest.split_once(") ")?;
        id.chars()
            .all(|c| c.is_ascii_digit())
            .then(|| format!("thread '{name}' {rest}"))
    });
    parsed.unwrap_or_else(|| line.to_string())
}

/// Kill a process group with SIGKILL (the test binary and everything it
/// started that stayed in its group).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

/// One binary's results for stages 1 to `stage`.
pub struct Report {
    pub bin: PathBuf,
    pub stage: u32,
    pub results: Vec<TestResult>,
}

impl Report {
    /// (passed, failed) among the tests of stage `n`.
    pub fn counts(&self, n: u32) -> (usize, usize) {
        let of_stage = self.results.iter().filter(|r| stage_of(&r.file) == Some(n));
        let passed = of_stage
            .clone()
            .filter(|r| r.status == Status::Passed)
            .count();
        (passed, of_stage.count() - passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| r.status != Status::Passed)
    }

    pub fn all_passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The stages with tests in this report.
    fn stages(&self) -> Vec<u32> {
        let mut stages: Vec<u32> = self
            .results
            .iter()
            .filter_map(|r| stage_of(&r.file))
            .collect();
        stages.dedup();
        stages
    }
}

/// The full report for one binary, as a learner reads it: every test, the
/// details of each failure, then the summary.
pub fn learner_report(grader: &Grader, report: &Report) -> String {
    let mut out = String::new();
    for n in report.stages() {
        let results: Vec<&TestResult> = report
            .results
            .iter()
            .filter(|r| stage_of(&r.file) == Some(n))
            .collect();
        let file = &results[0].file;
        out.push_str(&format!(
            "== stage {n}: tests/tests/{file}.rs, {} tests\n",
            results.len()
        ));
        for r in results {
            out.push_str(&format!("{:<8}{}\n", r.status.label(), r.test));
        }
        out.push('\n');
    }
    if !report.all_passed() {
        out.push_str("== failures\n");
        for r in report.failures() {
            out.push_str(&format!("---- {}\n{}\n\n", r.name(), r.details));
        }
    }
    out.push_str(&summary(grader, report));
    out
}

/// The summary: each failure in one line, then passed and failed per stage.
pub fn summary(grader: &Grader, report: &Report) -> String {
    let mut out = format!(
        "== {} graded as stage {}\n",
        report.bin.display(),
        report.stage
    );
    for r in report.failures() {
        out.push_str(&grader.failure_line(r));
        out.push('\n');
    }
    for n in report.stages() {
        let (passed, failed) = report.counts(n);
        out.push_str(&format!("stage {n}: {passed} passed, {failed} failed\n"));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Markdown,
    Csv,
}

/// The class table: binary × stage, passed and failed.
fn table(reports: &[Report], stage: u32, format: Format) -> String {
    let stages: Vec<u32> = (1..=stage).collect();
    let mut out = String::new();
    match format {
        Format::Csv => {
            out.push_str("binary,stage,passed,failed,failed_tests\n");
            for report in reports {
                for &n in &stages {
                    let (passed, failed) = report.counts(n);
                    let names: Vec<String> = report
                        .failures()
                        .filter(|r| stage_of(&r.file) == Some(n))
                        .map(|r| r.test.clone())
                        .collect();
                    out.push_str(&format!(
                        "{},{n},{passed},{failed},{}\n",
                        csv_field(&report.bin.to_string_lossy()),
                        csv_field(&names.join(" "))
                    ));
                }
            }
        }
        Format::Markdown => {
            out.push_str("| binary |");
            for n in &stages {
                out.push_str(&format!(" stage {n} |"));
            }
            out.push_str("\n| --- |");
            for _ in &stages {
                out.push_str(" --- |");
            }
            out.push('\n');
            for report in reports {
                out.push_str(&format!("| `{}` |", report.bin.display()));
                for &n in &stages {
                    let (passed, failed) = report.counts(n);
                    out.push_str(&format!(" {passed} passed, {failed} failed |"));
                }
                out.push('\n');
            }
            let failing: Vec<&Report> = reports.iter().filter(|r| !r.all_passed()).collect();
            if !failing.is_empty() {
                out.push_str("\nFailed tests:\n\n");
                for report in failing {
                    let names: Vec<String> = report
                        .failures()
                        .map(|r| format!("`{}`", r.name()))
                        .collect();
                    out.push_str(&format!(
                        "- `{}`: {}\n",
                        report.bin.display(),
                        names.join(", ")
                    ));
                }
            }
        }
        Format::Text => {
            let width = reports
                .iter()
                .map(|r| r.bin.to_string_lossy().len())
                .max()
                .unwrap_or(6)
                .max(6);
            out.push_str(&format!("{:<width$}", "binary"));
            for n in &stages {
                out.push_str(&format!("  {:<20}", format!("stage {n}")));
            }
            out.push('\n');
            for report in reports {
                out.push_str(&format!("{:<width$}", report.bin.display().to_string()));
                for &n in &stages {
                    let (passed, failed) = report.counts(n);
                    out.push_str(&format!(
                        "  {:<20}",
                        format!("{passed} passed, {failed} failed")
                    ));
                }
                out.push('\n');
            }
        }
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

const USAGE: &str = "usage: cargo xtask grade [--stage N] [--format text|markdown|csv] BIN...";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let mut stage = stages::last();
    let mut format = Format::Text;
    let mut bins: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stage" => {
                let n = args.next().context("--stage needs a number")?;
                stage = n
                    .parse()
                    .with_context(|| format!("--stage {n}: not a number"))?;
                if stages::find(stage).is_none() {
                    bail!("--stage {n}: stages are 1 to {}", stages::last());
                }
            }
            "--format" => {
                format = match args.next().map(String::as_str) {
                    Some("text") => Format::Text,
                    Some("markdown") => Format::Markdown,
                    Some("csv") => Format::Csv,
                    Some(other) => bail!("--format {other:?}: text, markdown or csv\n{USAGE}"),
                    None => bail!("--format needs a value: text, markdown or csv\n{USAGE}"),
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}\n{USAGE}"),
            bin => bins.push(bin.to_string()),
        }
    }
    if bins.is_empty() {
        bail!("no binary to grade\n{USAGE}");
    }
    bins.sort();
    bins.dedup();
    let mut paths = Vec::new();
    for bin in &bins {
        let path = std::fs::canonicalize(bin).with_context(|| format!("binary {bin}"))?;
        if !path.is_file() {
            bail!("{bin} is not a file");
        }
        paths.push((bin.clone(), path));
    }
    let grader = Grader::new(root)?;
    let mut reports = Vec::new();
    for (name, path) in &paths {
        let mut report = grader.grade(path, stage)?;
        // The table names binaries as they were given.
        report.bin = PathBuf::from(name);
        reports.push(report);
    }
    if reports.len() == 1 && format == Format::Text {
        print!("{}", learner_report(&grader, &reports[0]));
    } else {
        if format == Format::Text {
            for report in &reports {
                println!("{}", summary(&grader, report));
            }
        }
        print!("{}", table(&reports, stage, format));
    }
    let failed = reports.iter().filter(|r| !r.all_passed()).count();
    if failed > 0 {
        bail!("{failed} of {} binaries failed stage tests", reports.len());
    }
    Ok(())
}

/// `cargo xtask test --stage N --bin PATH`, and every e2e run of CI: grade
/// one binary, print the learner's report, fail when a test failed.
pub fn grade_one(grader: &Grader, bin: &Path, first: u32, stage: u32) -> Result<()> {
    let report = grader.grade_from(bin, first, stage)?;
    print!("{}", learner_report(grader, &report));
    if !report.all_passed() {
        bail!(
            "{} stage tests failed against {}",
            report.failures().count(),
            bin.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids_are_dropped() {
        assert_eq!(
            without_thread_id("thread 'a_b' (24195) panicked at tests/x.rs:1:2:"),
            "thread 'a_b' panicked at tests/x.rs:1:2:"
        );
        assert_eq!(without_thread_id("other (1) line"), "other (1) line");
    }

    #[test]
    fn stages_come_from_file_names() {
        assert_eq!(stage_of("stage03_rootfs"), Some(3));
        assert_eq!(stage_of("helpers"), None);
    }
}
