//! `cargo xtask book [--bless] [--chapter N] [--static]`: check the book.
//!
//! 1. **Listings**: every `{{#include file:anchor}}` resolves to a file and
//!    to non-empty text (`includes.rs`).
//! 2. **Rendered pages**, after `mdbook build book` (`render.rs`): every
//!    include comes out as one intact code block, no `ANCHOR:` comment
//!    reaches a page, and no listing line is wider than 80 columns.
//! 3. **Transcripts**: every ```` ```console ```` block is run, as a reader
//!    at that chapter would type it, against that chapter's binary, and
//!    what the terminal shows must be what the page shows.
//!
//! `--chapter N` runs the transcripts of stage N's page only (or of a page
//! by name: `--chapter how-to-use`); `--static` skips the transcripts;
//! `--bless` writes the real output into the blocks that differ. (`--src
//! DIR` checks a copy of `book/src` instead, e.g. to try `--bless` on it.)
//! The transcripts need root: run as root, or
//! `sudo -E env PATH="$PATH" cargo xtask book`.
//!
//! # Writing transcripts
//!
//! A console block is a transcript. A line that starts with the prompt is a
//! command, the others are what it prints:
//!
//! ```text
//! ```console
//! $ sudo mydocker run busybox echo hi
//! hi
//! ```
//! ```
//!
//! - **The prompt** is the block's first line's: `$ ` (the reader's shell)
//!   or `# ` (a root shell, e.g. for `$!` to be mydocker's PID). In a `$ `
//!   block, a line starting with `# ` is output, and vice versa.
//! - **Continuation lines**: after a command, the following lines are typed
//!   as part of it while the input is incomplete: after a trailing `\`,
//!   `|`, `&&` or `||`, inside an open quote or `$(`, and until a
//!   here-document's terminator. They show exactly as typed (PS2 is empty).
//!   A `for ...; do ...; done` goes on one line.
//! - **Interactive sessions**: after a command that starts one (`run -ti
//!   busybox sh`), lines that start with busybox's prompt (`/ # `, `~ # `,
//!   `/tmp # `) are typed into the session once its prompt is on screen;
//!   when the session ends, bash's prompt returns and `$ ` lines go on. A
//!   block may end with a bare `/ # `: the session is then left with Ctrl-D.
//! - **One terminal per page**: the blocks of a page run one after the other
//!   in one bash, so `cd`, variables, `$!`, `$?` and background jobs carry
//!   over, and job messages (`[1]+  Done ...`) show where a reader sees
//!   them. The first block starts in the repository's top directory. Each
//!   block starts on a cleared screen.
//! - **`...`**: a line that is exactly `...` matches any number of lines.
//!
//! ## Where it runs
//!
//! In a sandbox (`sandbox.rs`): a private mount namespace where
//! `/var/lib/mydocker`, `/tmp` and `/usr/local/bin` are fresh and empty for
//! each page, `/usr/local/bin/mydocker` is the page's stage's binary (for
//! `NN-slug.md`, chapter NN's; the complete program for other pages), and
//! `sudo` is a shim that resets the environment as sudo does (PATH is
//! secure_path, HOME=/root; options such as `sudo -i` are refused). The
//! hostname is `vm`. The network namespace is the page's own, with only
//! `lo`: a bridge or a firewall rule that a page makes never reaches the
//! machine's network, and nothing reaches the Internet (cargo builds from
//! the crates already downloaded). The terminal is 250 columns
//! wide (`ls` prints columns, as at any terminal) and the first one is
//! `/dev/pts/0` (the sandbox has a devpts of its own). Paths print as a reader
//! sees them: the scratch directories under their sandbox names (in a mount
//! table, say), and the checkout as `/home/vagrant/mydocker`, where the
//! classroom VM has it. A transcript must not write into the checkout: the
//! sandbox sees it read-only, but for its ignored build output (`target/`,
//! a chapter's `target/` and `Cargo.lock`), so a command that writes there
//! fails with "Read-only file system", in the block's diff. (`git status`
//! and the tags are also compared before and after each page; a change is
//! then someone else's, and only noted.)
//!
//! ## Annotations
//!
//! An HTML comment on the line(s) right before the fence, not shown by the
//! book, sets a block's options; several comments add up:
//!
//! ```text
//! <!-- transcript: vary=pids,inodes timeout=120 -->
//! <!-- transcript: re='total-vm:[0-9]+kB' fresh -->
//! <!-- transcript: user=nobody -->
//! <!-- transcript: not run: needs a VM with VirtualBox -->
//! ```
//!
//! | option | meaning |
//! | --- | --- |
//! | `vary=CLASS,...` | wildcard classes, below |
//! | `re='REGEX'` | text matching REGEX (Rust regex syntax) compares equal on both sides; repeatable; applied to the raw line, before everything else |
//! | `timeout=SECONDS` | the limit for each command of the block (default 60) |
//! | `fresh` | start over as at the page's first block: a new sandbox (empty `/tmp` and `/var/lib/mydocker`, a new network namespace, the page's `mydocker`) and a new shell in the checkout (no variables or jobs from before); the blocks after it go on from there |
//! | `user=nobody` | the block runs in a shell of its own as `nobody` (uid/gid 65534, no groups, via setpriv); the page's shell is untouched |
//! | `not run: REASON` | the block is not run (a VM, a browser); the reason is mandatory, and at least 90% of the blocks must run |
//!
//! ## What may differ
//!
//! Before comparing, both sides are normalized line by line (trailing
//! spaces dropped, tabs expanded to 8 columns). A replaced value also takes
//! the spaces before it, so columns that widen or shrink still match.
//! Always applied:
//!
//! | what | example | becomes |
//! | --- | --- | --- |
//! | container IDs, 64 hex digits | `848d16e9...b1e9` | `<id>` |
//! | short IDs, 12 hex digits | `2eea8ebac4bf` | `<short-id>` |
//! | dates of `ls -l` (GNU, busybox) | `Nov 23 10:47`, `Nov 23  2025` | `<date>` |
//! | dates of `tar -tv` | `2026-11-23 10:47` | `<date>` |
//! | durations | `finished in 0.30s`, cargo's `in 1m 05s` | `in <duration>` |
//! | a background job's PID | `[1] 18965` | `[1] <pid>` |
//!
//! With `vary=`:
//!
//! | class | what | becomes |
//! | --- | --- | --- |
//! | `pids` | integers from 256 up (exit codes and container PIDs stay) | `<pid>` |
//! | `inodes` | namespace inodes: `mnt:[4026532323]` | `mnt:[<inode>]` |
//! | `sizes` | the size before a date in `ls -l`/`tar -tv`, `total N` | `<size>` |
//! | `numbers` | every number, `42` or `0.42` | `<n>` |
//!
//! ## Counting
//!
//! The check prints, per page and in all,
//! `book: 74 console blocks: 69 ran, 5 marked not run (93% ran); 0 differ`,
//! and fails when a block differs or times out, when an annotation is
//! malformed, or when fewer than 90% of the book's blocks ran (a rule for
//! the whole book: `--chapter` does not apply it to one page).
//!
//! ## What the grading transcripts graded
//!
//! A block that runs `cargo xtask test --stage N --bin
//! /usr/local/bin/mydocker`, matches the page and ends with every stage
//! passed has graded the installed binary on stages 1 to N; `check`
//! returns these runs (`graded.rs`), and `cargo xtask test` does not run
//! them again.

mod annotation;
mod bless;
mod graded;
mod includes;
mod interrupt;
mod normalize;
mod render;
mod run;
mod sandbox;
mod shell_input;
mod terminal;
mod transcript;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use run::{BlockResult, Outcome};
use transcript::Block;

pub use graded::{sha256, Graded, INSTALLED};

/// At least this share of the console blocks must run.
const MIN_RAN_PERCENT: usize = 90;

struct Options {
    bless: bool,
    chapter: Option<String>,
    static_only: bool,
    src: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let usage = "usage: cargo xtask book [--bless] [--chapter N|PAGE] [--static]";
        let mut options = Options {
            bless: false,
            chapter: None,
            static_only: false,
            src: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bless" => options.bless = true,
                "--static" => options.static_only = true,
                "--chapter" => options.chapter = Some(args.next().context(usage)?.clone()),
                "--src" => {
                    let dir = args.next().context("--src needs a directory")?;
                    let dir = fs::canonicalize(dir).with_context(|| format!("--src {dir}"))?;
                    options.src = Some(dir);
                }
                other => bail!("xtask book: unknown argument {other:?}\n{usage}"),
            }
        }
        if options.bless && options.static_only {
            bail!("--bless rewrites transcripts, which --static skips");
        }
        Ok(options)
    }
}

/// A page of the book.
struct Page {
    path: PathBuf,
    /// The path shown in messages: relative to the checkout.
    name: String,
    text: String,
    /// NN of `NN-slug.md`.
    stage: Option<u32>,
}

/// `cargo xtask book [ARGS]`; without arguments, every check of the book.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    check(root, args).map(|_| ())
}

/// `main`, returning what the transcripts graded with every test passed.
pub fn check(root: &Path, args: &[String]) -> Result<Vec<Graded>> {
    let options = Options::parse(args)?;
    // Fail early, before any work: the transcripts cannot run otherwise.
    if !options.static_only && !crate::test::is_root() {
        bail!(
            "the book's transcripts need root (namespaces, mounts): run \
             `sudo -E env PATH=\"$PATH\" cargo xtask book` (or check the rest with --static)"
        );
    }
    let src = options.src.clone().unwrap_or_else(|| root.join("book/src"));
    let book = src
        .parent()
        .context("the book's src has a parent")?
        .to_path_buf();
    let pages = read_pages(root, &src)?;
    let texts: Vec<(PathBuf, String)> = pages
        .iter()
        .map(|p| (p.path.clone(), p.text.clone()))
        .collect();

    let includes = includes::check(root, &texts)?;
    // A directory of our own: runs in parallel must not share one.
    let html = root
        .join("target/book-check")
        .join(std::process::id().to_string());
    let status = Command::new("mdbook")
        .arg("build")
        .arg(&book)
        .arg("--dest-dir")
        .arg(&html)
        .status()
        .context("run mdbook (install it with scripts/setup.sh)")?;
    if !status.success() {
        bail!("mdbook build failed");
    }
    let rendered = render::check(root, &src, &html, &texts);
    let _ = fs::remove_dir_all(&html);
    let _ = fs::remove_dir(root.join("target/book-check")); // if empty
    let rendered = rendered?;
    for problem in &rendered {
        eprintln!("  {problem}");
    }
    println!(
        "book: built, {includes} includes resolve; {} problem(s) in the rendered pages",
        rendered.len()
    );
    let mut failures = Vec::new();
    let mut graded = Vec::new();
    if !rendered.is_empty() {
        failures.push(format!(
            "{} problem(s) in the rendered pages",
            rendered.len()
        ));
    }
    if options.static_only {
        println!("book: transcripts not run (--static)");
    } else {
        let (failed, ran) = transcripts(root, &pages, &options)?;
        failures.extend(failed);
        graded = ran;
    }
    if !failures.is_empty() {
        bail!("book: {}", failures.join("; "));
    }
    Ok(graded)
}

fn read_pages(root: &Path, src: &Path) -> Result<Vec<Page>> {
    let mut pages = Vec::new();
    for path in markdown_files(src)? {
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let stage = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('-'))
            .and_then(|(nn, _)| nn.parse::<u32>().ok().filter(|_| nn.len() == 2));
        pages.push(Page {
            path,
            name,
            text,
            stage,
        });
    }
    Ok(pages)
}

fn markdown_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(current) = todo.pop() {
        for entry in
            fs::read_dir(&current).with_context(|| format!("read {}", current.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Does `page` answer to `--chapter`'s argument: a stage number or a name?
fn selected(page: &Page, chapter: &str) -> bool {
    match chapter.parse::<u32>() {
        Ok(n) => page.stage == Some(n),
        Err(_) => page
            .path
            .file_stem()
            .is_some_and(|s| s == chapter.trim_end_matches(".md")),
    }
}

/// Counts for the report.
#[derive(Default)]
struct Tally {
    blocks: usize,
    ran: usize,
    not_run: usize,
    differ: usize,
    failed: usize,
    blessed: usize,
    /// The grading runs whose every test passed.
    graded: Vec<Graded>,
}

/// Run the transcripts; returns what failed, and what they graded.
fn transcripts(
    root: &Path,
    pages: &[Page],
    options: &Options,
) -> Result<(Vec<String>, Vec<Graded>)> {
    let chosen: Vec<&Page> = match &options.chapter {
        Some(chapter) => {
            let chosen: Vec<&Page> = pages.iter().filter(|p| selected(p, chapter)).collect();
            if chosen.is_empty() {
                let names: Vec<&str> = pages
                    .iter()
                    .filter_map(|p| p.path.file_stem()?.to_str())
                    .collect();
                bail!(
                    "--chapter {chapter}: no such page; the pages are {}",
                    names.join(", ")
                );
            }
            chosen
        }
        None => pages.iter().collect(),
    };
    let mut problems = Vec::new();
    let parsed: Vec<(&Page, Vec<Block>)> = chosen
        .into_iter()
        .map(|page| {
            let blocks = transcript::blocks(Path::new(&page.name), &page.text, &mut problems);
            (page, blocks)
        })
        .collect();
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("  {problem}");
        }
        bail!(
            "{} malformed transcript(s) or annotation(s)",
            problems.len()
        );
    }
    let _interrupt = interrupt::catch();
    let mut total = Tally::default();
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for (page, blocks) in &parsed {
        if blocks.is_empty() {
            continue;
        }
        let started = Instant::now();
        let tally = match run_page(root, page, blocks, options) {
            Ok(tally) => tally,
            Err(err) => {
                if interrupt::check().is_err() {
                    return Err(err);
                }
                eprintln!("book: {}: {err:#}", page.name);
                failures.push(format!("{}: {err:#}", page.name));
                continue;
            }
        };
        lines.push(format!(
            "  {}: {} blocks, {} ran, {} not run, {} differ{} ({:.0}s)",
            page.name,
            tally.blocks,
            tally.ran,
            tally.not_run,
            tally.differ,
            if tally.blessed > 0 {
                format!(", {} blessed", tally.blessed)
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        ));
        total.blocks += tally.blocks;
        total.ran += tally.ran;
        total.not_run += tally.not_run;
        total.differ += tally.differ;
        total.failed += tally.failed;
        total.blessed += tally.blessed;
        total.graded.extend(tally.graded);
    }
    for line in &lines {
        println!("{line}");
    }
    let percent = (total.ran * 100).checked_div(total.blocks).unwrap_or(100);
    println!(
        "book: {} console blocks: {} ran, {} marked not run ({percent}% ran); {} differ{}{}",
        total.blocks,
        total.ran,
        total.not_run,
        total.differ,
        if total.failed > 0 {
            format!(" ({} of them did not complete)", total.failed)
        } else {
            String::new()
        },
        if total.blessed > 0 {
            format!("; {} blessed", total.blessed)
        } else {
            String::new()
        },
    );
    for graded in &total.graded {
        println!(
            "book: {} graded {} on stages 1 to {}, every test passed (sha256 {})",
            graded.at,
            INSTALLED,
            graded.stage,
            &graded.sha256[..12]
        );
    }
    let unblessed = total.differ - total.blessed;
    if unblessed > 0 {
        failures.push(format!(
            "{unblessed} console block(s) differ from a real run"
        ));
    }
    // The rule is the book's: one page may be mostly VMs and browsers.
    if percent < MIN_RAN_PERCENT && options.chapter.is_none() {
        failures.push(format!(
            "only {percent}% of the console blocks ran; at least {MIN_RAN_PERCENT}% must"
        ));
    }
    Ok((failures, total.graded))
}

/// Build the page's binary, run its blocks, report each, bless if asked.
fn run_page(root: &Path, page: &Page, blocks: &[Block], options: &Options) -> Result<Tally> {
    let runnable = blocks.iter().any(|b| b.options.not_run.is_none());
    let binary = match (runnable, page.stage) {
        (false, _) => PathBuf::new(),
        (true, Some(n)) => {
            if crate::stages::find(n).is_none() {
                bail!("no stage {n} in xtask/src/stages.rs for this page");
            }
            crate::test::build_chapter(root, n)?
        }
        (true, None) => build_complete(root)?,
    };
    if runnable {
        println!("\n== book: {} against {}", page.name, shown(root, &binary));
    } else {
        println!("\n== book: {}: no block runs", page.name);
    }
    let mut tally = Tally {
        blocks: blocks.len(),
        ..Tally::default()
    };
    let mut report = |block: &Block, result: &BlockResult| {
        let at = format!("{}:{}", page.name, block.fence_line);
        let secs = result.elapsed.as_secs_f64();
        match &result.outcome {
            Outcome::NotRun(reason) => {
                tally.not_run += 1;
                println!("  {at}: not run: {reason}");
            }
            Outcome::Passed(_) => {
                tally.ran += 1;
                println!("  {at}: ok ({secs:.1}s)");
            }
            Outcome::Differs(capture) => {
                tally.ran += 1;
                tally.differ += 1;
                println!("  {at}: DIFFERS ({secs:.1}s), page `-`, real run `+`:");
                print!("{}", indent(&run::diff(block, &page.name, &capture.lines)));
            }
            Outcome::Failed { problem, capture } => {
                tally.ran += 1;
                tally.differ += 1;
                tally.failed += 1;
                println!("  {at}: FAILED ({secs:.1}s): {problem}");
                let diff = run::diff(block, &page.name, &capture.lines);
                if !diff.is_empty() {
                    println!("    what ran, page `-`, real run `+`:");
                    print!("{}", indent(&diff));
                }
            }
        }
    };
    let result = run::page(root, &page.name, blocks, &binary, &mut report)?;
    tally
        .graded
        .extend(result.blocks.iter().filter_map(|b| b.graded.clone()));
    if !result.checkout_changes.is_empty() {
        // Not from the transcripts: the sandbox sees the checkout read-only.
        println!(
            "  {}: note: the checkout changed while the transcripts ran, from outside the \
             sandbox (someone else's edits?):\n    {}",
            page.name,
            result.checkout_changes.join("\n    ")
        );
    }
    let mut edits = Vec::new();
    if options.bless {
        for (block, result) in blocks.iter().zip(&result.blocks) {
            if let Outcome::Differs(capture) = &result.outcome {
                edits.push((block, bless::blessed_lines(block, capture)));
            }
        }
    }
    if !edits.is_empty() {
        // Someone may have edited the page meanwhile: do not overwrite.
        let now = fs::read_to_string(&page.path)?;
        if now != page.text {
            bail!(
                "{} changed while its transcripts ran; not blessed, run again",
                page.name
            );
        }
        fs::write(&page.path, bless::rewrite(&page.text, &edits))
            .with_context(|| format!("write {}", page.path.display()))?;
        tally.blessed = edits.len();
        println!(
            "  {}: blessed {} block(s): review with git diff",
            page.name,
            edits.len()
        );
    }
    Ok(tally)
}

/// The complete program, for the pages that belong to no stage.
fn build_complete(root: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--package", "mydocker"])
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo build --package mydocker failed");
    }
    Ok(root.join("target/debug/mydocker"))
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
