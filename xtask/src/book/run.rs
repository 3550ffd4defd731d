//! Running a page's transcripts, block by block, in one terminal: what the
//! reader types, typed; what the terminal shows, captured.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::graded::{self, Graded};
use super::normalize::{self, Normalizer};
use super::sandbox::{self, Sandbox};
use super::terminal::{Ready, Shell, User, SETUP_TIMEOUT};
use super::transcript::{Block, Step};

/// How a block came out.
pub enum Outcome {
    Passed(Capture),
    /// The run completed and printed something else.
    Differs(Capture),
    /// The run could not complete: a timeout, or the terminal was not in the
    /// state the page expects (the session ended early, or never did).
    Failed {
        problem: String,
        capture: Capture,
    },
    NotRun(String),
}

/// What the terminal showed for one block.
pub struct Capture {
    /// Every line, from the block's first prompt on.
    pub lines: Vec<String>,
    /// `starts[k]`: the line at which step `k`'s input was typed.
    pub starts: Vec<usize>,
}

impl Capture {
    /// The lines of step `k`: its input, then what it printed.
    pub fn step(&self, k: usize) -> &[String] {
        let all = self.lines.len();
        let end = self.starts.get(k + 1).map_or(all, |&e| e.min(all));
        let start = self.starts.get(k).map_or(end, |&s| s.min(end));
        &self.lines[start..end]
    }
}

pub struct BlockResult {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// For a grading transcript that matched and whose every stage passed
    /// (`graded.rs`).
    pub graded: Option<Graded>,
}

/// What running a page found.
pub struct PageResult {
    pub blocks: Vec<BlockResult>,
    /// The entries of `git status` (and tags) that appeared while the page
    /// ran: not the transcripts' doing, the sandbox sees the checkout
    /// read-only.
    pub checkout_changes: Vec<String>,
}

/// Run the blocks of one page in a new sandbox, with `binary` as its
/// `mydocker`, calling `report` after each block. `page` names the page in
/// messages.
pub fn page(
    root: &Path,
    page: &str,
    blocks: &[Block],
    binary: &Path,
    report: &mut dyn FnMut(&Block, &BlockResult),
) -> Result<PageResult> {
    let mut results = Vec::new();
    if blocks.iter().all(|b| b.options.not_run.is_some()) {
        for block in blocks {
            results.push(not_run(block));
            report(block, &results[results.len() - 1]);
        }
        return Ok(PageResult {
            blocks: results,
            checkout_changes: Vec::new(),
        });
    }
    let before = sandbox::checkout_status(root)?;
    let mut sandbox = Sandbox::create(root)?;
    sandbox.install(binary)?;
    // The chapter's terminal; None until needed, or after it broke.
    let mut main: Option<Shell> = None;
    for block in blocks {
        if block.options.not_run.is_some() {
            results.push(not_run(block));
            report(block, &results[results.len() - 1]);
            continue;
        }
        if block.options.fresh && !block.options.nobody {
            // Start over in a new sandbox: new namespaces (what a page
            // plugged into its network namespace goes with it), empty
            // directories, the page's binary.
            if let Some(old) = main.take() {
                sandbox.end_shell(old)?;
            }
            sandbox.close()?;
            sandbox = Sandbox::create(root)?;
            sandbox.install(binary)?;
        }
        // For a grading transcript: the binary it grades, before it runs.
        let grading = graded::grading_step(block);
        let installed = match grading {
            Some(_) => Some(graded::sha256(&sandbox.installed())?),
            None => None,
        };
        let started = Instant::now();
        let outcome = if block.options.nobody {
            let mut shell = sandbox.shell(block.prompt, User::Nobody)?;
            let (outcome, _) = run_block(&mut shell, block, page, &sandbox)?;
            sandbox.end_shell(shell)?;
            outcome
        } else {
            let mut shell = match main.take() {
                Some(shell) => shell,
                None => sandbox.shell(block.prompt, User::Root)?,
            };
            let (outcome, usable) = run_block(&mut shell, block, page, &sandbox)?;
            if usable {
                main = Some(shell);
            } else {
                // A timeout: what ran in it is ended, the next block gets a
                // new shell.
                sandbox.end_shell(shell)?;
            }
            outcome
        };
        let elapsed = started.elapsed();
        // Graded: the block matched, its summary says every stage passed,
        // and the installed binary is still the one it was before.
        let graded = match (grading, installed, &outcome) {
            (Some((step, stage)), Some(sha256), Outcome::Passed(capture))
                if graded::all_passed(capture.step(step), stage)
                    && graded::sha256(&sandbox.installed())? == sha256 =>
            {
                Some(Graded {
                    stage,
                    sha256,
                    at: format!("{page}:{}", block.fence_line),
                })
            }
            _ => None,
        };
        results.push(BlockResult {
            outcome,
            elapsed,
            graded,
        });
        report(block, &results[results.len() - 1]);
    }
    if let Some(shell) = main.take() {
        sandbox.end_shell(shell)?;
    }
    sandbox.close()?;
    let after = sandbox::checkout_status(root)?;
    // New or changed entries only: an entry that went away was committed.
    Ok(PageResult {
        blocks: results,
        checkout_changes: after.difference(&before).cloned().collect(),
    })
}

fn not_run(block: &Block) -> BlockResult {
    BlockResult {
        outcome: Outcome::NotRun(block.options.not_run.clone().unwrap_or_default()),
        elapsed: Duration::ZERO,
        graded: None,
    }
}

/// Run one block in `shell`. Returns its outcome and whether the shell can
/// go on (false after a timeout).
fn run_block(
    shell: &mut Shell,
    block: &Block,
    page: &str,
    sandbox: &Sandbox,
) -> Result<(Outcome, bool)> {
    shell.prepare(block.prompt)?;
    let timeout = block.options.timeout;
    let mut starts = Vec::new();
    let mut state = Ready::Shell;
    let mut problem = None;
    for step in &block.steps {
        let at = format!("{page}:{}", block.page_line(step.line()));
        let typed = shell.capture()?;
        starts.push(typed.len().saturating_sub(1));
        let prompts = shell.prompts()?;
        match (step, &state) {
            (Step::Shell { input, .. }, Ready::Shell) => shell.type_lines(input)?,
            (Step::Session { input, .. }, Ready::Session) => {
                shell.type_lines(std::slice::from_ref(input))?
            }
            (Step::Open { .. }, Ready::Session) => break,
            (Step::Shell { .. }, _) => {
                problem = Some(format!(
                    "{at}: the page types `{}` into bash, but an interactive session is \
                     still open",
                    step.describe()
                ));
                break;
            }
            (Step::Session { .. } | Step::Open { .. }, _) => {
                problem = Some(format!(
                    "{at}: the page types `{}` into an interactive session, but there is \
                     none: bash's prompt is back",
                    step.describe()
                ));
                break;
            }
        }
        state = shell.wait(prompts, Instant::now() + timeout)?;
        if let Ready::TimedOut(screen) = &state {
            let lines = shell.capture()?;
            let lines = lines.iter().map(|l| sandbox.as_reader_sees(l)).collect();
            let problem = format!(
                "{at}: timed out after {}s waiting for `{}` to finish (annotate the block with \
                 timeout=SECONDS if it needs longer); the screen:\n{}",
                timeout.as_secs(),
                step.describe(),
                indent(&sandbox.as_reader_sees(screen))
            );
            let capture = Capture { lines, starts };
            return Ok((Outcome::Failed { problem, capture }, false));
        }
    }
    let mut lines = shell.capture()?;
    let mut usable = true;
    if state == Ready::Session {
        // The block leaves the session open (or stopped in it): end it.
        let prompts = shell.prompts()?;
        shell.key("C-d")?;
        if shell.wait(prompts, Instant::now() + SETUP_TIMEOUT)? != Ready::Shell {
            usable = false;
        }
    } else if let Some(last) = lines.pop() {
        // The final prompt, or a last output line without a newline that
        // the prompt follows.
        if let Some(output) = last.strip_suffix(shell.prompt.trim_end()) {
            if !output.is_empty() {
                lines.push(output.to_string());
            }
        } else {
            lines.push(last);
        }
    }
    let lines = lines.iter().map(|l| sandbox.as_reader_sees(l)).collect();
    let capture = Capture { lines, starts };
    let outcome = match problem {
        Some(problem) => Outcome::Failed { problem, capture },
        None if same(block, &capture.lines) => Outcome::Passed(capture),
        None => Outcome::Differs(capture),
    };
    Ok((outcome, usable))
}

/// Whether the block's lines match the real ones, after normalization.
pub fn same(block: &Block, real: &[String]) -> bool {
    let normalizer = Normalizer::new(&block.options.patterns, &block.options.vary);
    normalize::matches(&normalizer.lines(&block.lines), &normalizer.lines(real))
}

/// The diff between the block and a real run, for the report.
pub fn diff(block: &Block, page: &str, real: &[String]) -> String {
    let normalizer = Normalizer::new(&block.options.patterns, &block.options.vary);
    let ops = normalize::align(&normalizer.lines(&block.lines), &normalizer.lines(real));
    normalize::diff(page, block.page_line(0), &block.lines, real, &ops)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
