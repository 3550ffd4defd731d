//! `cargo xtask broken [--stage N] [--list] [NAME...]`: prove that the
//! stage tests catch the bugs a learner would really write.
//!
//! Each broken variant is a small patch against one chapter crate,
//! `tests/broken/NN-slug/NAME.patch`, whose header says what the bug is,
//! which stage tests must catch it, the section of the book that teaches
//! the right way, and why the bug is wrong:
//!
//! ```text
//! Bug: only SIGTERM is forwarded
//! Catches: stage01_namespace::sigint_and_sighup_reach_the_container_like_sigterm
//! Teaches: 01-namespace.md#signals-and-pid-1
//! Why: Ctrl-C sends SIGINT and a closed terminal SIGHUP; ...
//!
//! --- a/src/signals.rs
//! +++ b/src/signals.rs
//! ...
//! ```
//!
//! For every variant: copy the chapter crate to `target/broken/src/`,
//! apply the patch (`patch -p1`), build it (all variants share one target
//! directory, so only mydocker recompiles; no `-D warnings`, since a bug may
//! leave code unused), and run the named tests against it, with a time
//! limit. The variant is caught when every named test fails: a failure the
//! harness reports, a timeout of its own included; a test binary that xtask
//! has to kill does not count. The named tests must first pass against the
//! unpatched chapter, so that a failure proves the bug and nothing else.
//! Builds run on one thread while the tests of the variant built before run
//! on another. The check ends with `broken variants: C caught / N`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::grade::{self, catalog, Grader, Status};
use crate::stages::{self, Stage, STAGES};

/// How long the named tests of one test file may run against a variant.
/// The harness fails a hung test well within it.
const VARIANT_LIMIT: Duration = Duration::from_secs(240);

/// Where the variants live, relative to the workspace root.
const VARIANTS_DIR: &str = "tests/broken";

/// One broken variant of a chapter crate.
pub struct Variant {
    pub stage: &'static Stage,
    /// The patch's file name without `.patch`.
    pub name: String,
    pub patch: PathBuf,
    pub bug: String,
    /// The tests that must catch it: (test file, test).
    pub catches: Vec<(String, String)>,
    /// `PAGE#ID` in book/src.
    pub teaches: String,
    pub why: String,
}

impl Variant {
    /// `NN-slug/name`, as listed.
    pub fn id(&self) -> String {
        format!("{}/{}", self.stage.slug, self.name)
    }

    fn relative_patch(&self) -> String {
        format!("{VARIANTS_DIR}/{}/{}.patch", self.stage.slug, self.name)
    }
}

/// Read every variant of `tests/broken/`, sorted by chapter and name.
pub fn load(root: &Path) -> Result<Vec<Variant>> {
    let mut variants = Vec::new();
    let dir = root.join(VARIANTS_DIR);
    for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let slug = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(stage) = STAGES.iter().find(|s| s.slug == slug) else {
            bail!("{VARIANTS_DIR}/{slug}: no chapter crate chapters/{slug}");
        };
        for file in fs::read_dir(entry.path())? {
            let path = file?.path();
            if path.extension().is_none_or(|e| e != "patch") {
                continue;
            }
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text =
                fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            variants.push(parse(stage, name, path, &text)?);
        }
    }
    variants.sort_by_key(|v| (v.stage.number, v.name.clone()));
    Ok(variants)
}

/// A variant's header: `Key: value` lines (a value may go on over indented
/// lines) before the first line of the diff.
fn parse(stage: &'static Stage, name: String, patch: PathBuf, text: &str) -> Result<Variant> {
    let shown = format!("{VARIANTS_DIR}/{}/{name}.patch", stage.slug);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("--- ") || line.starts_with("diff ") {
            break;
        }
        if line.trim().is_empty() {
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(key) = &last {
                let value = fields.get_mut(key).expect("the key was inserted");
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
        }
        let Some((key, value)) = line.split_once(':') else {
            bail!("{shown}: a header line is `Key: value`, got: {line}");
        };
        let key = key.trim().to_string();
        fields.insert(key.clone(), value.trim().to_string());
        last = Some(key);
    }
    let field = |key: &str| -> Result<String> {
        fields
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .with_context(|| format!("{shown}: the header needs a `{key}:` line"))
    };
    let mut catches = Vec::new();
    for name in field("Catches")?
        .split([' ', ','])
        .filter(|s| !s.is_empty())
    {
        let Some((file, test)) = name.split_once("::") else {
            bail!("{shown}: `Catches: {name}` should name TEST_FILE::TEST");
        };
        catches.push((file.to_string(), test.to_string()));
    }
    if !text.lines().any(|l| l.starts_with("+++ ")) {
        bail!("{shown}: no diff after the header");
    }
    Ok(Variant {
        stage,
        name,
        patch,
        bug: field("Bug")?,
        catches,
        teaches: field("Teaches")?,
        why: field("Why")?,
    })
}

/// Every problem with the variants' headers: a test that does not exist
/// (or belongs to a later stage than the chapter), a section of the book
/// that does not exist.
fn problems(root: &Path, grader: &Grader, variants: &[Variant]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for variant in variants {
        for (file, test) in &variant.catches {
            let Some(exe) = grader.tests.get(file) else {
                problems.push(format!(
                    "{}: Catches {file}::{test}, but there is no tests/tests/{file}.rs",
                    variant.relative_patch()
                ));
                continue;
            };
            if grade::stage_of(file).is_none_or(|n| n > variant.stage.number) {
                problems.push(format!(
                    "{}: {file}::{test} belongs to a later stage than chapters/{}",
                    variant.relative_patch(),
                    variant.stage.slug
                ));
            }
            let tests = lists.entry(file.clone()).or_insert_with(|| {
                Command::new(exe)
                    .arg("--list")
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter_map(|l| l.strip_suffix(": test"))
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default()
            });
            if !tests.contains(test) {
                problems.push(format!(
                    "{}: Catches {file}::{test}, but tests/tests/{file}.rs has no such test: name the test that catches the bug now",
                    variant.relative_patch()
                ));
            }
        }
        let Some((page, anchor)) = variant.teaches.split_once('#') else {
            problems.push(format!(
                "{}: `Teaches: {}` should be PAGE#ID",
                variant.relative_patch(),
                variant.teaches
            ));
            continue;
        };
        match fs::read_to_string(root.join("book/src").join(page)) {
            Err(_) => problems.push(format!(
                "{}: Teaches {}, but there is no book/src/{page}",
                variant.relative_patch(),
                variant.teaches
            )),
            Ok(text) => {
                let ids = catalog::heading_ids(&text);
                if !ids.iter().any(|id| id == anchor) {
                    problems.push(format!(
                        "{}: Teaches {}, but book/src/{page} has no heading with the id `{anchor}`: point it at the section that teaches it now; the page's ids are: {}",
                        variant.relative_patch(),
                        variant.teaches,
                        ids.join(", ")
                    ));
                }
            }
        }
    }
    problems
}

const USAGE: &str = "usage: cargo xtask broken [--stage N] [--list | --refresh] [NN-slug/NAME...]";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let mut stage = None;
    let mut list = false;
    let mut refresh = false;
    let mut names = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stage" => {
                let n = args.next().context("--stage needs a number")?;
                let n: u32 = n
                    .parse()
                    .with_context(|| format!("--stage {n}: not a number"))?;
                if stages::find(n).is_none() {
                    bail!("--stage {n}: stages are 1 to {}", stages::last());
                }
                stage = Some(n);
            }
            "--list" => list = true,
            "--refresh" => refresh = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}\n{USAGE}"),
            name => names.push(name.to_string()),
        }
    }
    let mut variants: Vec<Variant> = load(root)?
        .into_iter()
        .filter(|v| stage.is_none_or(|n| v.stage.number == n))
        .filter(|v| names.is_empty() || names.contains(&v.id()) || names.contains(&v.name))
        .collect();
    if variants.is_empty() {
        bail!("no broken variant matches");
    }
    if list {
        let width = variants.iter().map(|v| v.id().len()).max().unwrap_or(0);
        for v in &variants {
            println!("{:<width$}  {}", v.id(), v.bug);
        }
        return Ok(());
    }
    if refresh {
        let mut errors = Vec::new();
        for v in &variants {
            match refresh_patch(root, v) {
                Ok(true) => println!("refreshed {}", v.relative_patch()),
                Ok(false) => {}
                Err(err) => errors.push(format!("{err:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("\n"));
        }
        return Ok(());
    }
    let start = Instant::now();
    let grader = Grader::new(root)?;
    let problems = problems(root, &grader, &variants);
    if !problems.is_empty() {
        bail!(
            "the broken variants' headers are out of date:\n{}",
            problems.join("\n")
        );
    }
    variants.sort_by_key(|v| (v.stage.number, v.name.clone()));

    // The named tests must pass against each unpatched chapter.
    let chapters: BTreeSet<u32> = variants.iter().map(|v| v.stage.number).collect();
    for &n in &chapters {
        let bin = crate::test::build_chapter(root, n)?;
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for v in variants.iter().filter(|v| v.stage.number == n) {
            for (file, test) in &v.catches {
                wanted.entry(file.clone()).or_default().insert(test.clone());
            }
        }
        eprintln!("broken: the unpatched chapter {n} must pass the tests that catch its variants");
        for (file, tests) in wanted {
            let filters: Vec<String> = tests.into_iter().collect();
            let results = run_clean(&grader, &file, &bin, n, &filters)?;
            let failed: Vec<String> = results
                .iter()
                .filter(|r| r.status != Status::Passed)
                .map(|r| format!("{}\n{}", r.name(), r.details))
                .collect();
            if !failed.is_empty() {
                bail!(
                    "the unpatched chapters/{} fails tests its broken variants rely on, so their failures would prove nothing:\n{}",
                    stages::find(n).map_or("?", |s| s.slug),
                    failed.join("\n")
                );
            }
        }
    }

    // Build on one thread, test on this one, the variant built before.
    let (tx, built) = mpsc::channel();
    let jobs: Vec<(String, &'static Stage, PathBuf, String)> = variants
        .iter()
        .map(|v| (v.name.clone(), v.stage, v.patch.clone(), v.relative_patch()))
        .collect();
    let root_owned = root.to_path_buf();
    let builder = std::thread::spawn(move || {
        for (name, stage, patch, shown) in jobs {
            let result = build_variant(&root_owned, stage, &name, &patch, &shown);
            if tx.send(result).is_err() {
                break;
            }
        }
    });
    let mut verdicts = Vec::new();
    for variant in &variants {
        let bin = built.recv().context("the build thread ended early")?;
        let verdict = match bin {
            Err(err) => Err(err),
            Ok(bin) => check_variant(&grader, variant, &bin),
        };
        match &verdict {
            Ok(line) => println!("{line}"),
            Err(err) => println!("ERROR    {}: {err:#}", variant.id()),
        }
        verdicts.push(verdict);
    }
    let _ = builder.join();
    let caught = verdicts
        .iter()
        .filter(|v| matches!(v, Ok(line) if line.starts_with("caught")))
        .count();
    println!(
        "broken variants: {caught} caught / {} (in {} s)",
        variants.len(),
        start.elapsed().as_secs()
    );
    if caught != variants.len() {
        bail!(
            "{} of {} broken variants were not caught by the tests their headers name",
            variants.len() - caught,
            variants.len()
        );
    }
    Ok(())
}

/// Copy a chapter crate, apply the variant's patch and build it; return
/// the binary.
fn build_variant(
    root: &Path,
    stage: &Stage,
    name: &str,
    patch: &Path,
    shown: &str,
) -> Result<PathBuf> {
    let chapter = root.join("chapters").join(stage.slug);
    let src = root.join("target/broken/src").join(stage.slug).join(name);
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("remove {}", src.display()))?;
    }
    // Every variant is the same package (mydocker 0.1.0, a workspace of
    // its own), so cargo gives them one fingerprint in the shared target
    // directory: what makes it rebuild is that the fresh copy's files are
    // newer than the last build. Always copy anew, never reuse a copy.
    copy_crate(&chapter, &src)?;
    fs::copy(root.join("Cargo.lock"), src.join("Cargo.lock")).context("copy Cargo.lock")?;
    let patch_args = |dry: bool| {
        let mut command = Command::new("patch");
        command
            .args([
                "--batch",
                "--forward",
                "-p1",
                "--fuzz=1",
                "--no-backup-if-mismatch",
            ])
            .arg("--reject-file=-")
            .arg("-d")
            .arg(&src)
            .arg("-i")
            .arg(patch);
        if dry {
            command.arg("--dry-run");
        }
        command
    };
    let dry = patch_args(true)
        .output()
        .context("run patch (is it installed?)")?;
    if !dry.status.success() {
        bail!(
            "{shown} no longer applies to chapters/{}: regenerate it (apply it by hand to a copy of the chapter, then `diff -u` the changed files, paths a/src/... and b/src/..., under its header):\n{}",
            stage.slug,
            String::from_utf8_lossy(&dry.stdout).trim()
        );
    }
    let applied = patch_args(false).output().context("run patch")?;
    if !applied.status.success() {
        bail!(
            "{shown}: patch failed: {}",
            String::from_utf8_lossy(&applied.stdout)
        );
    }
    eprintln!("broken: building {}/{name}", stage.slug);
    let target = root.join("target/broken/build");
    let output = Command::new(env!("CARGO"))
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // A bug may leave code unused: warnings are fine here.
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::null())
        .output()
        .context("run cargo build")?;
    if !output.status.success() {
        bail!(
            "{shown} does not build:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let out = root.join("target/broken/bin").join(stage.slug).join(name);
    fs::create_dir_all(&out)?;
    let bin = out.join("mydocker");
    fs::copy(target.join("debug/mydocker"), &bin).context("copy the variant's binary")?;
    Ok(bin)
}

/// Rewrite a variant's diff against the chapter as it is now: apply the
/// old patch with some fuzz (its context may have moved or changed a
/// little) and diff the result again, keeping the header. True when the
/// patch changed. A patch that does not apply even so is left as it is,
/// with an error: make that bug again by hand.
fn refresh_patch(root: &Path, variant: &Variant) -> Result<bool> {
    let shown = variant.relative_patch();
    let chapter = root.join("chapters").join(variant.stage.slug);
    let dir = root
        .join("target/broken/refresh")
        .join(variant.stage.slug)
        .join(&variant.name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    copy_crate(&chapter, &dir)?;
    let applied = Command::new("patch")
        .args([
            "--batch",
            "--forward",
            "-p1",
            "--fuzz=3",
            "--no-backup-if-mismatch",
        ])
        .arg("--reject-file=-")
        .arg("-d")
        .arg(&dir)
        .arg("-i")
        .arg(&variant.patch)
        .output()
        .context("run patch")?;
    if !applied.status.success() {
        bail!(
            "{shown} does not apply to chapters/{} even with fuzz: make the bug again by hand (see tests/broken/README.md):\n{}",
            variant.stage.slug,
            String::from_utf8_lossy(&applied.stdout).trim()
        );
    }
    let text = fs::read_to_string(&variant.patch)?;
    let header_end = text
        .lines()
        .take_while(|l| !l.starts_with("--- ") && !l.starts_with("diff "))
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let mut new = text[..header_end.min(text.len())].to_string();
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .map(|l| l.split('\t').next().unwrap_or(l).trim())
        .collect();
    for file in files {
        let diff = Command::new("diff")
            .arg("-U2")
            .arg("--label")
            .arg(format!("a/{file}"))
            .arg("--label")
            .arg(format!("b/{file}"))
            .arg(chapter.join(file))
            .arg(dir.join(file))
            .output()
            .context("run diff")?;
        if diff.status.code() != Some(1) {
            bail!("{shown}: after the patch, {file} is unchanged or unreadable");
        }
        new.push_str(&String::from_utf8_lossy(&diff.stdout));
    }
    if new == text {
        return Ok(false);
    }
    fs::write(&variant.patch, new).with_context(|| format!("write {shown}"))?;
    Ok(true)
}

/// Copy a crate's sources, without its build products.
fn copy_crate(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_crate(&path, &to.join(&name))?;
        } else {
            fs::copy(&path, to.join(&name)).with_context(|| format!("copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// Run a variant's named tests against its binary: caught when every one
/// of them failed.
fn check_variant(grader: &Grader, variant: &Variant, bin: &Path) -> Result<String> {
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, test) in &variant.catches {
        by_file.entry(file.clone()).or_default().push(test.clone());
    }
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for (file, tests) in by_file {
        for result in run_clean(grader, &file, bin, variant.stage.number, &tests)? {
            match result.status {
                Status::Failed => failed.push(result.name()),
                Status::Passed => passed.push(format!("{} passed", result.name())),
                Status::Ignored => passed.push(format!("{} was ignored", result.name())),
                Status::TimedOut => passed.push(format!(
                    "{} hung until xtask killed it (the harness must time it out itself)",
                    result.name()
                )),
            }
        }
    }
    Ok(if passed.is_empty() {
        format!("caught   {}: {} failed", variant.id(), failed.join(", "))
    } else {
        format!(
            "MISSED   {}: {}; yet the bug is real: {}",
            variant.id(),
            passed.join(", "),
            variant.why
        )
    })
}

/// `grade::run_tests`, then remove the container cgroups a broken variant
/// may have left on the host (the harness cleans up after the processes it
/// started, not after a binary that forgets its cgroups).
fn run_clean(
    grader: &Grader,
    file: &str,
    bin: &Path,
    stage: u32,
    filters: &[String],
) -> Result<Vec<grade::TestResult>> {
    let exe = grader
        .tests
        .get(file)
        .with_context(|| format!("no test binary for {file}"))?;
    let before = container_cgroups();
    let parents_before: BTreeSet<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join("mydocker"))
        .filter(|p| p.exists())
        .collect();
    let results = grade::run_tests(file, exe, bin, stage, filters, VARIANT_LIMIT);
    let left: Vec<PathBuf> = container_cgroups()
        .into_iter()
        .filter(|d| !before.contains(d) && is_empty_cgroup(d))
        .collect();
    if !left.is_empty() {
        // Empty for a while: not a container between mkdir and attach.
        std::thread::sleep(Duration::from_millis(500));
        for dir in left.iter().filter(|d| is_empty_cgroup(d)) {
            let _ = fs::remove_dir(dir);
        }
        for mount in cgroup_mounts() {
            let parent = mount.join("mydocker");
            if !parents_before.contains(&parent) {
                let _ = fs::remove_dir(&parent);
            }
        }
    }
    results
}

/// The mount points of the host's cgroup hierarchies.
fn cgroup_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or_default()))
        })
        .collect()
}

/// Every container cgroup (`<mount>/mydocker/<64 hex digits>`) on the host.
fn container_cgroups() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for mount in cgroup_mounts() {
        if let Ok(entries) = fs::read_dir(mount.join("mydocker")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                    found.insert(entry.path());
                }
            }
        }
    }
    found
}

fn is_empty_cgroup(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
}
