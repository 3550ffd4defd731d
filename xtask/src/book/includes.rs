//! `{{#include file:anchor}}`: the listings a page takes from the chapter
//! crates, and the text mdBook puts in their place.
//!
//! mdBook only *warns* when an include points at nothing, and the page then
//! shows an empty listing. Here every include must resolve to a file and,
//! when it names an anchor, to non-empty text between `ANCHOR: name` and
//! `ANCHOR_END: name`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use regex::Regex;

/// One include directive of a page.
#[derive(Debug)]
pub struct Include {
    /// 1-based page line.
    pub line: usize,
    /// What follows `#include`: `path`, `path:anchor` or `path:from:to`.
    pub argument: String,
    /// `#rustdoc_include`, whose lines outside the anchor are hidden.
    pub rustdoc: bool,
}

/// The text an include puts into the page, line by line, with each line's
/// 1-based line number in its file.
#[derive(Debug)]
pub struct Listing {
    pub file: PathBuf,
    pub lines: Vec<(usize, String)>,
}

impl Listing {
    pub fn text(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }
}

/// mdBook's own patterns (mdbook-driver, links.rs and take_lines.rs).
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\\{\{#.*\}\}|\{\{\s*#([a-zA-Z0-9_]+)\s+([^}]+)\}\}").expect("a valid regex")
});
pub static ANCHOR_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR:\s*(?P<name>[\w_-]+)").expect("a valid regex"));
pub static ANCHOR_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR_END:\s*(?P<name>[\w_-]+)").expect("a valid regex"));

/// Every include of a page.
pub fn find(text: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for cap in LINK.captures_iter(line) {
            let (Some(kind), Some(rest)) = (cap.get(1), cap.get(2)) else {
                continue; // an escaped `\{{#include ...}}`
            };
            let Some(argument) = rest.as_str().split_whitespace().next() else {
                continue;
            };
            let rustdoc = match kind.as_str() {
                "include" => false,
                "rustdoc_include" => true,
                _ => continue,
            };
            found.push(Include {
                line: index + 1,
                argument: argument.to_string(),
                rustdoc,
            });
        }
    }
    found
}

/// The lines an include puts into `page`, as mdBook 0.5 computes them: a
/// line range, the whole file (anchor comments included), or the lines
/// between `ANCHOR: name` and `ANCHOR_END: name` without the anchor lines
/// of other, nested anchors.
pub fn listing(page: &Path, argument: &str) -> Result<Listing> {
    let (file, selector) = match argument.split_once(':') {
        Some((file, selector)) => (file, Some(selector)),
        None => (argument, None),
    };
    let path = clean(&page.parent().unwrap_or(Path::new(".")).join(file));
    let text = fs::read_to_string(&path).with_context(|| format!("{file} does not exist"))?;
    let numbered = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_string()));
    let lines: Vec<(usize, String)> = match selector.map(Selector::parse) {
        None => numbered.collect(),
        Some(Selector::Lines(from, to)) => numbered
            .skip(from)
            .take(to.map_or(usize::MAX, |to| to.saturating_sub(from)))
            .collect(),
        Some(Selector::Anchor(anchor)) => {
            let mut found = false;
            let mut lines = Vec::new();
            for (number, line) in numbered {
                if !found {
                    found = ANCHOR_START
                        .captures(&line)
                        .is_some_and(|c| &c["name"] == anchor);
                } else if let Some(end) = ANCHOR_END.captures(&line) {
                    if &end["name"] == anchor {
                        break;
                    }
                } else if !ANCHOR_START.is_match(&line) {
                    lines.push((number, line));
                }
            }
            if !found {
                bail!("anchor {anchor:?} not found in {file}");
            }
            if lines.iter().all(|(_, l)| l.trim().is_empty()) {
                bail!("anchor {anchor:?} in {file} is empty");
            }
            lines
        }
    };
    if selector.is_none() && lines.iter().all(|(_, l)| l.trim().is_empty()) {
        bail!("{file} is empty");
    }
    Ok(Listing { file: path, lines })
}

/// `a/b/../c` as `a/c`, without asking the filesystem: for messages.
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What follows the file name, as mdBook reads it: `:anchor`, `:N`,
/// `:N:M`, `:N:` or `::M` (1-based, inclusive).
enum Selector<'a> {
    /// Lines `from..to`, 0-based, `to` exclusive.
    Lines(usize, Option<usize>),
    Anchor(&'a str),
}

impl<'a> Selector<'a> {
    fn parse(selector: &'a str) -> Selector<'a> {
        let mut parts = selector.splitn(3, ':');
        let first = parts.next().unwrap_or("");
        let start = match first.parse::<usize>() {
            Ok(n) => Some(n.saturating_sub(1)),
            Err(_) if first.is_empty() => None,
            Err(_) => return Selector::Anchor(first),
        };
        let end = parts.next().map(|s| s.parse::<usize>());
        match (start, end) {
            (Some(start), Some(Ok(end))) => Selector::Lines(start, Some(end)),
            (Some(start), Some(Err(_))) => Selector::Lines(start, None),
            (Some(start), None) => Selector::Lines(start, Some(start + 1)),
            (None, Some(Ok(end))) => Selector::Lines(0, Some(end)),
            (None, _) => Selector::Lines(0, None),
        }
    }
}

/// The static check: every include of every page resolves to a listing.
/// Returns how many includes there are.
pub fn check(root: &Path, pages: &[(PathBuf, String)]) -> Result<usize> {
    let mut problems = Vec::new();
    let mut count = 0;
    for (page, text) in pages {
        for include in find(text) {
            count += 1;
            if let Err(err) = listing(page, &include.argument) {
                let shown = page.strip_prefix(root).unwrap_or(page);
                problems.push(format!("{}:{}: {err:#}", shown.display(), include.line));
            }
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("  {problem}");
        }
        bail!("{} book include(s) do not resolve", problems.len());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_include_directives() {
        let text = "x {{#include ../a.rs:spawn}} y {{#rustdoc_include b.rs}}\n\\{{#include c.rs}}\n{{#title T}}";
        let found = find(text);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].line, found[0].argument.as_str()),
            (1, "../a.rs:spawn")
        );
        assert!(found[1].rustdoc);
    }

    #[test]
    fn takes_the_lines_mdbook_takes() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let page = dir.join("page.md");
        fs::write(
            dir.join("a.rs"),
            "// ANCHOR: all\nfn a() {\n    // ANCHOR: inner\n    b();\n    // ANCHOR_END: inner\n}\n// ANCHOR_END: all\n// ANCHOR: empty\n\n// ANCHOR_END: empty\n",
        )
        .unwrap();
        let text = |arg: &str| listing(&page, arg).map(|l| l.text());
        assert_eq!(text("a.rs:all").unwrap(), "fn a() {\n    b();\n}");
        assert_eq!(text("a.rs:inner").unwrap(), "    b();");
        assert_eq!(listing(&page, "a.rs:inner").unwrap().lines[0].0, 4);
        assert!(text("a.rs").unwrap().starts_with("// ANCHOR: all\n"));
        assert_eq!(text("a.rs:2:2").unwrap(), "fn a() {");
        assert_eq!(text("a.rs:2").unwrap(), "fn a() {");
        assert_eq!(text("a.rs::1").unwrap(), "// ANCHOR: all");
        assert!(text("a.rs:empty").is_err());
        assert!(text("a.rs:missing").is_err());
        assert!(text("nope.rs").is_err());
        assert_eq!(clean(Path::new("/a/b/../../c/./d")), Path::new("/c/d"));
        assert_eq!(clean(Path::new("../x/../y")), Path::new("../y"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
