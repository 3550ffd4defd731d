//! `cargo xtask book`: build the book, and fail when a listing is missing.
//!
//! mdBook only *warns* when an `{{#include file:anchor}}` points at nothing,
//! and the page then shows an empty listing. Here every include must resolve
//! to a file and, when it names an anchor, to non-empty text between
//! `ANCHOR: name` and `ANCHOR_END: name`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `cargo xtask book [ARGS]`; without arguments, every check of the book.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("xtask book: unknown argument {arg:?}");
    }
    check(root)
}

pub fn check(root: &Path) -> Result<()> {
    let book = root.join("book");
    let mut problems = Vec::new();
    let mut includes = 0;
    for page in markdown_files(&book.join("src"))? {
        let text = fs::read_to_string(&page).with_context(|| format!("read {}", page.display()))?;
        for (index, line) in text.lines().enumerate() {
            for directive in directives(line) {
                includes += 1;
                if let Err(err) = resolve(&page, directive) {
                    let page = page.strip_prefix(root).unwrap_or(&page);
                    problems.push(format!("{}:{}: {err:#}", page.display(), index + 1));
                }
            }
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("  {problem}");
        }
        bail!("{} book include(s) do not resolve", problems.len());
    }
    let status = Command::new("mdbook")
        .arg("build")
        .arg(&book)
        .status()
        .context("run mdbook (install it with scripts/setup.sh)")?;
    if !status.success() {
        bail!("mdbook build failed");
    }
    println!("book: built, {includes} includes resolve to non-empty listings");
    Ok(())
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

/// The arguments of every `{{#include ...}}` (or `#rustdoc_include`) on a line.
fn directives(line: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else { break };
        let inner = after[..end].trim();
        for name in ["include ", "rustdoc_include "] {
            if let Some(argument) = inner.strip_prefix(name) {
                found.push(argument.trim());
            }
        }
        rest = &after[end + 2..];
    }
    found
}

/// Check one include: `path`, `path:anchor`, or `path:start:end` lines.
fn resolve(page: &Path, directive: &str) -> Result<()> {
    let mut parts = directive.splitn(2, ':');
    let file = parts.next().unwrap_or_default();
    let selector = parts.next();
    let path = page.parent().unwrap_or(Path::new(".")).join(file);
    let text = fs::read_to_string(&path).with_context(|| format!("{file} does not exist"))?;
    let Some(selector) = selector else {
        if text.trim().is_empty() {
            bail!("{file} is empty");
        }
        return Ok(());
    };
    let first = selector.split(':').next().unwrap_or_default();
    if first.is_empty() || first.chars().all(|c| c.is_ascii_digit()) {
        return Ok(()); // a line range: mdBook clamps it, any file will do
    }
    let anchor = first;
    let mut inside = false;
    let mut found = false;
    let mut body = 0;
    for line in text.lines() {
        if let Some(name) = anchor_name(line, "ANCHOR_END:") {
            if name == anchor {
                inside = false;
            }
        } else if let Some(name) = anchor_name(line, "ANCHOR:") {
            if name == anchor {
                inside = true;
                found = true;
            }
        } else if inside && !line.trim().is_empty() {
            body += 1;
        }
    }
    if !found {
        bail!("anchor {anchor:?} not found in {file}");
    }
    if body == 0 {
        bail!("anchor {anchor:?} in {file} is empty");
    }
    Ok(())
}

fn anchor_name<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let at = line.find(tag)?;
    line[at + tag.len()..].split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_include_directives() {
        let line = "x {{#include ../a.rs:spawn}} y {{#rustdoc_include b.rs}}";
        assert_eq!(directives(line), vec!["../a.rs:spawn", "b.rs"]);
    }

    #[test]
    fn an_anchor_must_exist_and_hold_text() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let page = dir.join("page.md");
        fs::write(dir.join("a.rs"), "// ANCHOR: full\nfn a() {}\n// ANCHOR_END: full\n// ANCHOR: empty\n// ANCHOR_END: empty\n").unwrap();
        assert!(resolve(&page, "a.rs:full").is_ok());
        assert!(resolve(&page, "a.rs:empty").is_err());
        assert!(resolve(&page, "a.rs:missing").is_err());
        assert!(resolve(&page, "nope.rs").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
