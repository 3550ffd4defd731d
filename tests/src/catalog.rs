//! The catalog of the stage tests, `tests/catalog.txt`: for every test,
//! what a binary that passes it does, and the section of the book that
//! teaches it. The grader (`cargo xtask grade`, `cargo xtask test --stage N
//! --bin PATH`) prints both next to every failure.
//!
//! This file uses nothing but the standard library: xtask includes it too.
//!
//! The format, one entry per line (blank lines and `#` comments aside):
//!
//! ```text
//! stage03_rootfs::the_root_is_the_image_and_nothing_of_the_host | `/` in the container is the image | 03-rootfs.md#chroot-versus-pivot_root
//! ```
//!
//! that is `TEST_FILE::TEST | EXPECTED | PAGE#ID`, where `TEST_FILE` is
//! the file's name in `tests/tests/` without `.rs`, `PAGE` a file of
//! `book/src/` and `ID` the id mdBook gives one of that page's headings.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// One test's line in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The test file's name without `.rs`, e.g. `stage03_rootfs`.
    pub file: String,
    /// The test function.
    pub test: String,
    /// What a binary that passes the test does.
    pub expects: String,
    /// The book page, e.g. `03-rootfs.md`.
    pub page: String,
    /// The id of the heading on that page, e.g. `chroot-versus-pivot_root`.
    pub anchor: String,
    /// Where the entry is in the catalog (1-based line number).
    pub line: usize,
}

impl Entry {
    /// `book/src/PAGE#ID`, as a reader finds it.
    pub fn section(&self) -> String {
        format!("book/src/{}#{}", self.page, self.anchor)
    }
}

/// Where the catalog lives, relative to the workspace root.
pub const CATALOG_PATH: &str = "tests/catalog.txt";

/// Parse the catalog's text; an error names the line and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(" | ").map(str::trim).collect();
        let [name, expects, section] = fields[..] else {
            return Err(format!(
                "{CATALOG_PATH}:{line}: expected `TEST_FILE::TEST | EXPECTED | PAGE#ID` (three fields separated by ` | `), got: {trimmed}"
            ));
        };
        let Some((file, test)) = name.split_once("::") else {
            return Err(format!(
                "{CATALOG_PATH}:{line}: `{name}` should be TEST_FILE::TEST, e.g. stage01_namespace::the_command_is_pid_1"
            ));
        };
        let Some((page, anchor)) = section.split_once('#') else {
            return Err(format!(
                "{CATALOG_PATH}:{line}: `{section}` should be PAGE#ID, e.g. 01-namespace.md#choosing-the-namespaces"
            ));
        };
        if expects.is_empty() || page.is_empty() || anchor.is_empty() || test.is_empty() {
            return Err(format!(
                "{CATALOG_PATH}:{line}: an empty field in: {trimmed}"
            ));
        }
        entries.push(Entry {
            file: file.to_string(),
            test: test.to_string(),
            expects: expects.to_string(),
            page: page.to_string(),
            anchor: anchor.to_string(),
            line,
        });
    }
    Ok(entries)
}

/// The names of the `#[test]` functions in a test file's source.
pub fn tests_in(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut pending = false;
    for line in source.lines() {
        let line = line.trim();
        if line == "#[test]" {
            pending = true;
            continue;
        }
        if pending {
            if line.starts_with("#[") || line.starts_with("//") {
                continue; // another attribute, or a comment, in between
            }
            if let Some(rest) = line.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
            pending = false;
        }
    }
    names
}

/// The ids mdBook (0.5) gives the headings of a page, in order: the
/// heading's text, trimmed and lowercased, letters, digits, `_` and `-`
/// kept, spaces made `-`, everything else dropped; a repeated id gets
/// `-1`, `-2`, ... Headings in fenced code blocks are not headings. A
/// heading may set its own id with `{#id}`.
pub fn heading_ids(markdown: &str) -> Vec<String> {
    let mut used = HashSet::new();
    let mut ids = Vec::new();
    let mut fence: Option<String> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str())
                && trimmed
                    .trim_end()
                    .chars()
                    .all(|c| c == open.as_bytes()[0] as char)
            {
                fence = None;
            }
            continue;
        }
        for marker in ["```", "~~~"] {
            if trimmed.starts_with(marker) {
                let c = marker.as_bytes()[0] as char;
                let run: String = trimmed.chars().take_while(|x| *x == c).collect();
                fence = Some(run);
            }
        }
        if fence.is_some() || line.starts_with("    ") {
            continue;
        }
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || line.len() - trimmed.len() > 3 {
            continue;
        }
        let rest = &trimmed[hashes..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        let mut text = rest.trim().trim_end_matches('#').trim_end().to_string();
        let custom = text
            .rfind("{#")
            .filter(|_| text.ends_with('}'))
            .map(|at| (at, text[at + 2..text.len() - 1].to_string()));
        let id = match custom {
            Some((at, id)) => {
                text.truncate(at);
                id
            }
            None => id_from_text(&plain_text(&text)),
        };
        let mut unique = id.clone();
        let mut counter = 1;
        while !used.insert(unique.clone()) {
            unique = format!("{id}-{counter}");
            counter += 1;
        }
        ids.push(unique);
    }
    ids
}

/// mdBook's id of a heading's text.
pub fn id_from_text(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The text a heading's Markdown renders to: code spans kept as they are,
/// links reduced to their text, emphasis markers and entities dropped.
fn plain_text(markdown: &str) -> String {
    let chars: Vec<char> = markdown.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '`' => {
                let ticks = chars[i..].iter().take_while(|x| **x == '`').count();
                let close = (i + ticks..chars.len()).find(|&j| {
                    chars[j..].iter().take_while(|x| **x == '`').count() == ticks
                        && (j == 0 || chars[j - 1] != '`')
                });
                match close {
                    Some(j) => {
                        let code: String = chars[i + ticks..j].iter().collect();
                        out.push_str(code.trim());
                        i = j + ticks;
                    }
                    None => {
                        i += ticks;
                    }
                }
            }
            // A link's text stays, its target goes.
            ']' if chars.get(i + 1) == Some(&'(') => {
                let close = (i + 2..chars.len()).find(|&j| chars[j] == ')');
                i = close.map_or(i + 1, |j| j + 1);
            }
            '&' => {
                let end = (i + 1..chars.len().min(i + 10)).find(|&j| chars[j] == ';');
                match end {
                    Some(j)
                        if chars[i + 1..j]
                            .iter()
                            .all(|x| x.is_alphanumeric() || *x == '#') =>
                    {
                        i = j + 1
                    }
                    _ => i += 1,
                }
            }
            // `_` marks emphasis at the edge of a word, and is a letter inside one.
            '_' => {
                let before = i > 0 && chars[i - 1].is_alphanumeric();
                let after = chars.get(i + 1).is_some_and(|x| x.is_alphanumeric());
                if before && after {
                    out.push('_');
                }
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Every problem with the catalog, checked against the test files in
/// `tests_dir` and the book's pages in `book_src`: a test without an entry,
/// an entry without a test, an entry twice, a page or a heading that does
/// not exist. Each message says what to fix.
pub fn problems(catalog: &str, tests_dir: &Path, book_src: &Path) -> Vec<String> {
    let entries = match parse(catalog) {
        Ok(entries) => entries,
        Err(err) => return vec![err],
    };
    let mut problems = Vec::new();
    let mut tests: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(tests_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new());
    files.sort();
    for path in files {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap_or_default();
        for test in tests_in(&source) {
            tests.insert((stem.clone(), test), ());
        }
    }
    let mut seen = BTreeSet::new();
    let mut pages: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for entry in &entries {
        let key = (entry.file.clone(), entry.test.clone());
        if !seen.insert(key.clone()) {
            problems.push(format!(
                "{CATALOG_PATH}:{}: {}::{} has a second entry: keep one",
                entry.line, entry.file, entry.test
            ));
        }
        if !tests.contains_key(&key) {
            problems.push(format!(
                "{CATALOG_PATH}:{}: there is no test {} in tests/tests/{}.rs: remove the entry, or rename it after the test",
                entry.line, entry.test, entry.file
            ));
        }
        let ids = pages.entry(entry.page.clone()).or_insert_with(|| {
            std::fs::read_to_string(book_src.join(&entry.page))
                .ok()
                .map(|text| heading_ids(&text))
        });
        match ids {
            None => problems.push(format!(
                "{CATALOG_PATH}:{}: {}::{} points at book/src/{}, which does not exist: point it at the page and heading that now teach it",
                entry.line, entry.file, entry.test, entry.page
            )),
            Some(ids) if !ids.contains(&entry.anchor) => problems.push(format!(
                "{CATALOG_PATH}:{}: {}::{} points at book/src/{}#{}, but that page has no heading with the id `{}`. Point the entry at the heading that now teaches \"{}\"; the page's heading ids are: {}",
                entry.line,
                entry.file,
                entry.test,
                entry.page,
                entry.anchor,
                entry.anchor,
                entry.expects,
                ids.join(", ")
            )),
            Some(_) => {}
        }
    }
    for (file, test) in tests.keys() {
        if !seen.contains(&(file.clone(), test.clone())) {
            problems.push(format!(
                "{CATALOG_PATH}: the test {file}::{test} (tests/tests/{file}.rs) has no entry: add a line `{file}::{test} | what a passing binary does | PAGE.md#heading-id`"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_has_an_entry_and_every_entry_a_section_of_the_book() {
        // Both crates that include this file live one level below the
        // workspace root: tests/ and xtask/.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let catalog =
            std::fs::read_to_string(workspace.join(CATALOG_PATH)).expect("read tests/catalog.txt");
        let problems = problems(
            &catalog,
            &workspace.join("tests/tests"),
            &workspace.join("book/src"),
        );
        assert!(
            problems.is_empty(),
            "the catalog of the stage tests is out of date:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn heading_ids_are_mdbooks() {
        let page = "# 1. Namespaces: a process\n\n## `chroot` versus `pivot_root`\n\
                    ```console\n# not a heading\n```\n### Try it\n## Try it\n\
                    ## Signals and PID 1 ##\n#### Try it: propagation, before and after\n\
                    ## The [pipe](x.md): orders for _init_\n## Custom {#my-id}\n";
        assert_eq!(
            heading_ids(page),
            [
                "1-namespaces-a-process",
                "chroot-versus-pivot_root",
                "try-it",
                "try-it-1",
                "signals-and-pid-1",
                "try-it-propagation-before-and-after",
                "the-pipe-orders-for-init",
                "my-id",
            ]
        );
    }

    #[test]
    fn test_names_are_found_after_their_attribute() {
        let source = "#[test]\nfn one() {}\nfn helper() {}\n#[test]\n#[ignore]\nfn two() {}\n";
        assert_eq!(tests_in(source), ["one", "two"]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse("# comment\n\nstage01_namespace::x | only two\n").unwrap_err();
        assert!(err.starts_with("tests/catalog.txt:3:"), "{err}");
    }
}
