//! What may differ between the page and a real run, and how they are
//! compared: normalizers, `...` elision and the diff.
//!
//! A normalizer rewrites a varying value into a placeholder, on both sides:
//! the page says `Hello from 2eea8ebac4bf` and the run printed
//! `Hello from 9c0e7f1b2a33`; both become `Hello from <short-id>`. A value
//! that replaces right-aligned padding would leave the columns ragged, so a
//! placeholder also takes the spaces before it (one space stays, none at the
//! start of a line). The table of normalizers is at the top of the book
//! module, and mirrors `DEFAULTS` and `Class` here.

use std::sync::LazyLock;

use anyhow::{bail, Result};
use regex::{Captures, Regex};

/// A page line that is exactly this matches any number of lines.
pub const ELLIPSIS: &str = "...";

/// A named wildcard class, turned on per block with `vary=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Integers from 256 up: host PIDs. Exit codes (below 256) and the small
    /// PIDs inside a container are kept.
    Pids,
    /// Namespace inode numbers: `mnt:[4026531841]`.
    Inodes,
    /// The size column of `ls -l` and `tar -tv`, and `ls`'s `total N`.
    Sizes,
    /// Every number, integer or decimal.
    Numbers,
}

impl Class {
    pub const NAMES: &'static str = "pids, inodes, sizes, numbers";

    pub fn parse(name: &str) -> Result<Class> {
        Ok(match name {
            "pids" => Class::Pids,
            "inodes" => Class::Inodes,
            "sizes" => Class::Sizes,
            "numbers" => Class::Numbers,
            other => bail!(
                "vary={other}: unknown class; the classes are {}",
                Class::NAMES
            ),
        })
    }

    fn rules(self) -> &'static [Rule] {
        static PIDS: LazyLock<Vec<Rule>> = LazyLock::new(|| {
            vec![Rule::new(
                r"\b(?:25[6-9]|2[6-9][0-9]|[3-9][0-9]{2}|[1-9][0-9]{3,})\b",
                "<pid>",
            )]
        });
        static INODES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
            vec![Rule::new(
                r"\b(?P<ns>[a-z_]+):\[[0-9]+\]",
                "${ns}:[<inode>]",
            )]
        });
        static SIZES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
            vec![
                Rule::new(r"\b[0-9]+(?P<date> +<date>)", "<size>${date}"),
                Rule::anchored(r"^total [0-9]+$", "total <size>"),
            ]
        });
        static NUMBERS: LazyLock<Vec<Rule>> =
            LazyLock::new(|| vec![Rule::new(r"[0-9]+(?:\.[0-9]+)?", "<n>")]);
        match self {
            Class::Pids => &PIDS,
            Class::Inodes => &INODES,
            Class::Sizes => &SIZES,
            Class::Numbers => &NUMBERS,
        }
    }
}

/// Always applied, to every block.
static DEFAULTS: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let month = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
    vec![
        // Container IDs, full and short.
        Rule::new(r"\b[0-9a-f]{64}\b", "<id>"),
        Rule::new(r"\b[0-9a-f]{12}\b", "<short-id>"),
        // `ls -l` (GNU and busybox): `Nov 23 10:47`, or `Nov 23  2025`.
        Rule::new(
            &format!(r"\b{month} +[0-9]{{1,2}} +(?:[0-9]{{1,2}}:[0-9]{{2}}|[0-9]{{4}})\b"),
            "<date>",
        ),
        // `tar -tv`: `2026-11-23 10:47`, with seconds elsewhere.
        Rule::new(
            r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?\b",
            "<date>",
        ),
        // Durations: `finished in 0.30s`, cargo's `in 2.01s` or `in 1m 05s`.
        Rule::new(r"\bin (?:[0-9]+m )?[0-9]+(?:\.[0-9]+)?s\b", "in <duration>"),
        // Job control: `[1] 18965` when a job starts in the background.
        Rule::anchored(r"^(?P<job>\[[0-9]+\]) [0-9]+$", "${job} <pid>"),
    ]
});

/// One rewrite: every match of `regex` becomes `replacement` (which may
/// name the regex's groups, `${name}`).
struct Rule {
    regex: Regex,
    replacement: String,
    /// Whether the match takes the spaces before it (see the module doc).
    takes_padding: bool,
}

impl Rule {
    /// The rules are constants: a bad one is a bug caught by the unit tests.
    fn new(pattern: &str, replacement: &str) -> Rule {
        Rule {
            regex: Regex::new(&format!("(?P<pad> *)(?:{pattern})")).expect("a valid rule"),
            replacement: replacement.to_string(),
            takes_padding: true,
        }
    }

    fn anchored(pattern: &str, replacement: &str) -> Rule {
        Rule {
            regex: Regex::new(pattern).expect("a valid rule"),
            replacement: replacement.to_string(),
            takes_padding: false,
        }
    }

    fn apply(&self, line: &str) -> String {
        self.regex
            .replace_all(line, |caps: &Captures| {
                let mut out = String::new();
                if self.takes_padding {
                    let pad = caps.name("pad").map_or("", |m| m.as_str());
                    let at_start = caps.get(0).is_some_and(|m| m.start() == 0);
                    if !pad.is_empty() && !at_start {
                        out.push(' ');
                    }
                }
                caps.expand(&self.replacement, &mut out);
                out
            })
            .into_owned()
    }
}

/// The normalization of one block: its `re=` patterns first (they are
/// written against the raw text), then the defaults, then its classes.
pub struct Normalizer<'a> {
    patterns: &'a [Regex],
    classes: &'a [Class],
}

impl<'a> Normalizer<'a> {
    pub fn new(patterns: &'a [Regex], classes: &'a [Class]) -> Normalizer<'a> {
        Normalizer { patterns, classes }
    }

    pub fn line(&self, line: &str) -> String {
        if line == ELLIPSIS {
            return line.to_string();
        }
        let mut text = expand_tabs(line.trim_end());
        for pattern in self.patterns {
            let rule = Rule {
                regex: pattern.clone(),
                replacement: "<re>".into(),
                takes_padding: false,
            };
            text = rule.apply(&text);
        }
        for rule in DEFAULTS.iter() {
            text = rule.apply(&text);
        }
        for class in self.classes {
            for rule in class.rules() {
                text = rule.apply(&text);
            }
        }
        text
    }

    pub fn lines(&self, lines: &[String]) -> Vec<String> {
        lines.iter().map(|l| self.line(l)).collect()
    }
}

/// A terminal shows a tab as spaces up to the next multiple of 8; so does
/// the page's side before comparing.
pub fn expand_tabs(line: &str) -> String {
    if !line.contains('\t') {
        return line.to_string();
    }
    let mut out = String::new();
    for c in line.chars() {
        if c == '\t' {
            let width = 8 - out.chars().count() % 8;
            out.extend(std::iter::repeat_n(' ', width));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the normalized page lines match the normalized real lines, a
/// page line `...` standing for any number of real lines.
pub fn matches(expected: &[String], actual: &[String]) -> bool {
    align(expected, actual).iter().all(|op| !op.is_change())
}

/// One step of the alignment of page lines with real lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Page line `.0` equals real line `.1`.
    Same(usize, usize),
    /// Page line `.0` is `...` and stands for real lines `.1..2`.
    Elided(usize, usize, usize),
    /// Page line `.0` is not in the real output.
    Missing(usize),
    /// Real line `.0` is not on the page.
    Extra(usize),
}

impl Op {
    fn is_change(self) -> bool {
        matches!(self, Op::Missing(_) | Op::Extra(_))
    }
}

/// The alignment with the fewest changed lines (an edit distance in which
/// `...` absorbs real lines), and among those the one in which `...`
/// absorbs the fewest, so that the diff shows a changed line next to the
/// line it replaces.
pub fn align(expected: &[String], actual: &[String]) -> Vec<Op> {
    // A changed line costs more than any number of absorbed ones.
    let change = actual.len() as u64 + 1;
    let (n, m) = (expected.len(), actual.len());
    let width = m + 1;
    // cost[i * width + j]: the cost of aligning expected[i..] with
    // actual[j..].
    let mut cost = vec![0u64; (n + 1) * width];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            let at = |i: usize, j: usize| cost[i * width + j];
            let best = if i == n {
                (m - j) as u64 * change
            } else if expected[i] == ELLIPSIS {
                let skip = at(i + 1, j);
                if j < m {
                    skip.min(1 + at(i, j + 1))
                } else {
                    skip
                }
            } else {
                let mut best = change + at(i + 1, j);
                if j < m {
                    best = best.min(change + at(i, j + 1));
                    if expected[i] == actual[j] {
                        best = best.min(at(i + 1, j + 1));
                    }
                }
                best
            };
            cost[i * width + j] = best;
        }
    }
    let at = |i: usize, j: usize| cost[i * width + j];
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i == n {
            ops.push(Op::Extra(j));
            j += 1;
        } else if expected[i] == ELLIPSIS {
            // Take real lines until the rest aligns as well without them.
            let start = j;
            while j < m && at(i + 1, j) != at(i, j) {
                j += 1;
            }
            ops.push(Op::Elided(i, start, j));
            i += 1;
        } else if j < m && expected[i] == actual[j] && at(i + 1, j + 1) == at(i, j) {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if at(i + 1, j) + change == at(i, j) {
            ops.push(Op::Missing(i));
            i += 1;
        } else {
            ops.push(Op::Extra(j));
            j += 1;
        }
    }
    ops
}

/// A diff of the page's lines (`-`) and the real ones (`+`), with three
/// lines of context and a `@@ page:line @@` header per hunk. `first_line`
/// is the page line number of `page[0]`; lines are shown as written and as
/// printed, before normalization.
pub fn diff(
    location: &str,
    first_line: usize,
    page: &[String],
    real: &[String],
    ops: &[Op],
) -> String {
    const CONTEXT: usize = 3;
    let changed: Vec<bool> = ops.iter().map(|op| op.is_change()).collect();
    let near_change = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        changed[lo..hi].iter().any(|c| *c)
    };
    let mut out = String::new();
    let mut in_hunk = false;
    for (k, op) in ops.iter().enumerate() {
        if !near_change(k) {
            in_hunk = false;
            continue;
        }
        if !in_hunk {
            // The page line this hunk starts at, or the next one.
            let line = ops[k..]
                .iter()
                .find_map(|op| match op {
                    Op::Same(i, _) | Op::Elided(i, _, _) | Op::Missing(i) => Some(*i),
                    Op::Extra(_) => None,
                })
                .unwrap_or(page.len());
            out.push_str(&format!("@@ {location}:{} @@\n", first_line + line));
            in_hunk = true;
        }
        match *op {
            Op::Same(i, _) | Op::Elided(i, _, _) => out.push_str(&format!("  {}\n", page[i])),
            Op::Missing(i) => out.push_str(&format!("- {}\n", page[i])),
            Op::Extra(j) => out.push_str(&format!("+ {}\n", real[j])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> String {
        Normalizer::new(&[], &[]).line(line)
    }

    fn norm_with(classes: &[Class], line: &str) -> String {
        Normalizer::new(&[], classes).line(line)
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn container_ids_vary() {
        assert_eq!(
            norm("Hello from 2eea8ebac4bf, PID 1"),
            "Hello from <short-id>, PID 1"
        );
        let long = "a".repeat(64);
        assert_eq!(
            norm(&format!("/sys/fs/cgroup/pids/mydocker/{long}/pids.max")),
            "/sys/fs/cgroup/pids/mydocker/<id>/pids.max"
        );
        // Not an ID: 11 or 13 digits, upper case.
        assert_eq!(
            norm("abcdef012345a ABCDEF012345"),
            "abcdef012345a ABCDEF012345"
        );
    }

    #[test]
    fn dates_of_ls_and_tar_vary() {
        assert_eq!(
            norm("-rw-r--r-- 1 root root 2131968 Nov 23 10:47 busybox.tar"),
            "-rw-r--r-- 1 root root 2131968 <date> busybox.tar"
        );
        assert_eq!(
            norm("crw-rw-rw-    1 root     root        1,   7 Nov  3 10:47 full"),
            "crw-rw-rw-    1 root     root        1,   7 <date> full"
        );
        assert_eq!(
            norm("drwx------ 2 root root 4096 Jan  5  2025 old"),
            norm("drwx------ 2 root root 4096 Dec 31 23:59 old")
        );
        assert_eq!(
            norm("-rw-r--r-- root/root        17 2026-11-23 10:47 ../../tmp/evilfile"),
            "-rw-r--r-- root/root        17 <date> ../../tmp/evilfile"
        );
    }

    #[test]
    fn durations_and_job_pids_vary() {
        assert_eq!(
            norm("test result: ok. 14 passed; 0 failed; finished in 0.30s"),
            "test result: ok. 14 passed; 0 failed; finished in <duration>"
        );
        assert_eq!(
            norm("    Finished `dev` profile [unoptimized + debuginfo] target(s) in 1m 05s"),
            "    Finished `dev` profile [unoptimized + debuginfo] target(s) in <duration>"
        );
        assert_eq!(norm("[1] 18965"), "[1] <pid>");
        // Only the line bash prints: a PID elsewhere is kept.
        assert_eq!(
            norm("[1]+  Exit 137   mydocker run sleep 100"),
            "[1]+  Exit 137   mydocker run sleep 100"
        );
        assert_eq!(norm("exit=143 after 1s"), "exit=143 after 1s");
    }

    #[test]
    fn classes_vary_on_request() {
        assert_eq!(
            norm_with(&[Class::Pids], "18965 18846 mydocker run sleep 100"),
            norm_with(&[Class::Pids], "  912   880 mydocker run sleep 100")
        );
        assert_eq!(
            norm_with(&[Class::Pids], "NSpid:  18967   1"),
            "NSpid: <pid>   1"
        );
        assert_eq!(norm_with(&[Class::Pids], "exit 137, 255"), "exit 137, 255");
        assert_eq!(
            norm_with(
                &[Class::Inodes],
                "'/proc/self/ns/mnt' -> 'mnt:[4026532323]'"
            ),
            "'/proc/self/ns/mnt' -> 'mnt:[<inode>]'"
        );
        assert_eq!(
            norm_with(
                &[Class::Sizes],
                "-rw-r--r-- 1 root root 2131968 Nov 23 10:47 busybox.tar"
            ),
            norm_with(
                &[Class::Sizes],
                "-rw-r--r-- 1 root root  140160 Nov 23 18:00 busybox.tar"
            )
        );
        assert_eq!(norm_with(&[Class::Sizes], "total 2084"), "total <size>");
        assert_eq!(
            norm_with(&[Class::Numbers], "2.06 s real, 0.42 s user"),
            "<n> s real, <n> s user"
        );
    }

    #[test]
    fn regexes_apply_to_the_raw_line() {
        let patterns = [Regex::new(r"\d+ kB").unwrap()];
        let n = Normalizer::new(&patterns, &[]);
        assert_eq!(n.line("total-vm:48164 kB, x"), "total-vm:<re>, x");
    }

    #[test]
    fn tabs_become_spaces() {
        assert_eq!(norm("Cpus_allowed_list:\t1"), "Cpus_allowed_list:      1");
        assert_eq!(norm("a\tb"), "a       b");
    }

    #[test]
    fn an_ellipsis_stands_for_any_lines() {
        let page = lines("$ cargo test\n...\ntest result: ok");
        assert!(matches(
            &page,
            &lines("$ cargo test\nrunning 2 tests\ntest a ... ok\ntest result: ok")
        ));
        assert!(matches(&page, &lines("$ cargo test\ntest result: ok")));
        assert!(!matches(&page, &lines("$ cargo test\nrunning 2 tests")));
        assert!(matches(&lines("...\nb\n...\nb"), &lines("b\nb\nb")));
        assert!(!matches(&lines("a\nb"), &lines("a\nb\nc")));
    }

    #[test]
    fn an_ellipsis_takes_as_few_lines_as_it_can() {
        // `...` could also absorb "x y" and "$ env", leaving "x" and "y"
        // missing: as many changes, but a diff that hides the real line.
        let page = lines("$ ls\nx\ny\n$ env\n...\nHOME=/root");
        let real = lines("$ ls\nx y\n$ env\nA=1\nHOME=/root");
        let text = diff("p.md", 1, &page, &real, &align(&page, &real));
        assert_eq!(
            text,
            "@@ p.md:1 @@\n  $ ls\n- x\n- y\n+ x y\n  $ env\n  ...\n  HOME=/root\n"
        );
    }

    #[test]
    fn the_diff_shows_page_and_real_lines() {
        let page = lines("$ ls\n...\nb\nc");
        let real = lines("$ ls\nx\ny\nb\nC");
        let ops = align(&page, &real);
        let text = diff("p.md", 10, &page, &real, &ops);
        assert_eq!(text, "@@ p.md:10 @@\n  $ ls\n  ...\n  b\n- c\n+ C\n");
    }
}
