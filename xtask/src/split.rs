//! `cargo xtask split [--check]`: write every chapters/NN-slug crate from the
//! marked source in mydocker/.
//!
//! Markers are comment lines in the source (`//` in Rust, `#` in TOML):
//!
//! ```text
//! // @stage 3        the lines up to the matching `@end` appear from stage 3 on
//! // @before 3       the lines up to `@end` appear only before stage 3; in
//! //                 mydocker/ they are commented out, and split uncomments them
//! // @end
//! ```
//!
//! Blocks nest. A file whose output is empty for a stage is left out of it,
//! so a whole new module is simply wrapped in one `@stage N` block.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::stages::{Stage, STAGES};

/// Relative path → contents of every file of one chapter crate.
type Tree = BTreeMap<PathBuf, String>;

pub fn split(root: &Path, check: bool) -> Result<()> {
    let source = read_tree(&root.join("mydocker"))?;
    let chapters = root.join("chapters");
    let mut stale = Vec::new();
    for stage in STAGES {
        let wanted = generate(&source, stage)?;
        let dir = chapters.join(stage.slug);
        let present = if dir.exists() {
            read_tree(&dir)?
        } else {
            Tree::new()
        };
        for (path, text) in &wanted {
            if present.get(path) != Some(text) {
                stale.push(dir.join(path));
                if !check {
                    let file = dir.join(path);
                    if let Some(parent) = file.parent() {
                        fs::create_dir_all(parent)
                            .with_context(|| format!("mkdir {}", parent.display()))?;
                    }
                    fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
                }
            }
        }
        for path in present.keys().filter(|p| !wanted.contains_key(*p)) {
            stale.push(dir.join(path));
            if !check {
                fs::remove_file(dir.join(path))
                    .with_context(|| format!("remove {}", dir.join(path).display()))?;
            }
        }
    }
    // A chapter directory that no stage generates is stale as a whole.
    if chapters.exists() {
        for entry in fs::read_dir(&chapters).context("read chapters/")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !STAGES.iter().any(|s| s.slug == name) {
                stale.push(entry.path());
                if !check {
                    fs::remove_dir_all(entry.path())?;
                }
            }
        }
    }
    if check && !stale.is_empty() {
        for path in &stale {
            eprintln!(
                "  out of date: {}",
                path.strip_prefix(root).unwrap_or(path).display()
            );
        }
        bail!("chapters/ does not match mydocker/: run `cargo xtask split` (never edit chapters/ by hand)");
    }
    if check {
        println!("split: chapters/ is up to date ({} stages)", STAGES.len());
    } else {
        println!("split: wrote {} files in chapters/", stale.len());
    }
    Ok(())
}

/// Every file below `dir`, except build output and lock files.
fn read_tree(dir: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(current) = todo.pop() {
        for entry in
            fs::read_dir(&current).with_context(|| format!("read {}", current.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == "target" || name == "Cargo.lock" {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                tree.insert(relative, text);
            }
        }
    }
    Ok(tree)
}

/// The chapter crate of `stage`, from the source tree of mydocker/.
fn generate(source: &Tree, stage: &Stage) -> Result<Tree> {
    let mut out = Tree::new();
    for (path, text) in source {
        let comment = match path.extension().and_then(|e| e.to_str()) {
            Some("rs") => "//",
            Some("toml") => "#",
            _ => {
                out.insert(path.clone(), text.clone());
                continue;
            }
        };
        let mut filtered = filter(text, stage.number, comment)
            .with_context(|| format!("mydocker/{}", path.display()))?;
        if filtered.trim().is_empty() {
            continue;
        }
        if path == Path::new("Cargo.toml") {
            filtered = format!(
                "# Generated by `cargo xtask split` from mydocker/Cargo.toml: stage {}.\n\
                 # Edit mydocker/, never this file.\n\n{filtered}\n\
                 # A workspace of its own: build this stage alone with `cargo build`.\n[workspace]\n",
                stage.number
            );
        }
        out.insert(path.clone(), filtered);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Block {
    /// `@stage N`: kept from stage N on.
    From(u32),
    /// `@before N`: kept (uncommented) before stage N.
    Before(u32),
}

/// Keep the lines of `text` that belong to `stage`, drop the marker lines.
pub fn filter(text: &str, stage: u32, comment: &str) -> Result<String> {
    let mut open: Vec<(Block, usize)> = Vec::new();
    let mut out = String::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(marker) = marker(line, comment) {
            match marker.with_context(|| format!("line {number}"))? {
                Some(block) => {
                    let (Block::From(n) | Block::Before(n)) = block;
                    if !STAGES.iter().any(|s| s.number == n) {
                        bail!("line {number}: stage {n} is not in xtask's stage list");
                    }
                    if matches!(block, Block::Before(_))
                        && open.iter().any(|(b, _)| matches!(b, Block::Before(_)))
                    {
                        bail!("line {number}: @before blocks cannot nest");
                    }
                    open.push((block, number));
                }
                None => {
                    if open.pop().is_none() {
                        bail!("line {number}: @end without an open block");
                    }
                }
            }
            continue;
        }
        let keep = open.iter().all(|(block, _)| match *block {
            Block::From(n) => stage >= n,
            Block::Before(n) => stage < n,
        });
        if !keep {
            continue;
        }
        if open.iter().any(|(b, _)| matches!(b, Block::Before(_))) {
            out.push_str(&uncomment(line, comment).with_context(|| {
                format!("line {number}: code in an @before block must be commented out with `{comment} `")
            })?);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if let Some((_, number)) = open.last() {
        bail!("line {number}: block is never closed with @end");
    }
    Ok(out)
}

/// `Some(Ok(Some(block)))` for an opening marker, `Some(Ok(None))` for
/// `@end`, `None` for an ordinary line.
fn marker(line: &str, comment: &str) -> Option<Result<Option<Block>>> {
    let rest = line.trim_start().strip_prefix(comment)?.trim_start();
    let rest = rest.strip_prefix('@')?;
    let mut words = rest.split_whitespace();
    let keyword = words.next()?;
    let parse = |words: &mut std::str::SplitWhitespace| -> Result<u32> {
        let n = words
            .next()
            .context("a stage number must follow the marker")?;
        n.parse()
            .with_context(|| format!("{n:?} is not a stage number"))
    };
    Some(match keyword {
        "stage" => parse(&mut words).map(|n| Some(Block::From(n))),
        "before" => parse(&mut words).map(|n| Some(Block::Before(n))),
        "end" => Ok(None),
        _ => return None,
    })
}

/// `    // let x = 1;` → `    let x = 1;`
fn uncomment(line: &str, comment: &str) -> Result<String> {
    let indent = line.len() - line.trim_start().len();
    let body = line[indent..]
        .strip_prefix(comment)
        .context("not a comment")?;
    let body = body.strip_prefix(' ').unwrap_or(body);
    // A commented blank line is a blank line, without the indentation.
    if body.is_empty() {
        return Ok(String::new());
    }
    Ok(format!("{}{}", &line[..indent], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "a\n// @stage 1\nb\n// @end\n// @before 1\n// old\n// @end\nc\n";

    #[test]
    fn keeps_stage_blocks_from_their_stage_on() {
        assert_eq!(filter(SOURCE, 1, "//").unwrap(), "a\nb\nc\n");
    }

    #[test]
    fn uncomments_replaced_code_before_its_stage() {
        assert_eq!(filter(SOURCE, 0, "//").unwrap(), "a\nold\nc\n");
        assert_eq!(uncomment("    //   x", "//").unwrap(), "      x");
        assert_eq!(uncomment("  //", "//").unwrap(), "");
    }

    #[test]
    fn rejects_broken_markers() {
        assert!(filter("// @stage 1\nx\n", 1, "//").is_err());
        assert!(filter("// @end\n", 1, "//").is_err());
        assert!(filter("// @stage 99\nx\n// @end\n", 1, "//").is_err());
        assert!(filter("// @before 1\nnot commented\n// @end\n", 0, "//").is_err());
    }
}
