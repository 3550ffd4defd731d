//! `--bless`: write what a real run printed into the page, for the blocks
//! that differ, so that the author reviews the change with `git diff`.
//!
//! Commands, annotations and matching blocks stay as written. Inside a
//! block that differs, each command whose output still matches (an `...`,
//! a wildcard) keeps its lines too; the others get the real output under
//! the page's own command lines.

use super::normalize::{self, Normalizer};
use super::run::Capture;
use super::transcript::Block;

/// The block's new lines after a run that printed `capture`.
pub fn blessed_lines(block: &Block, capture: &Capture) -> Vec<String> {
    let normalizer = Normalizer::new(&block.options.patterns, &block.options.vary);
    let mut out = Vec::new();
    for (k, step) in block.steps.iter().enumerate() {
        let page_end = block
            .steps
            .get(k + 1)
            .map_or(block.lines.len(), |s| s.line());
        let page = &block.lines[step.line()..page_end];
        let Some(&start) = capture.starts.get(k) else {
            out.extend_from_slice(page); // not reached: keep as written
            continue;
        };
        let real_end = capture
            .starts
            .get(k + 1)
            .copied()
            .unwrap_or(capture.lines.len());
        let real = &capture.lines[start.min(real_end)..real_end];
        if normalize::matches(&normalizer.lines(page), &normalizer.lines(real)) {
            out.extend_from_slice(page);
        } else {
            let typed = step.input_lines().min(page.len());
            out.extend_from_slice(&page[..typed]);
            out.extend(real.iter().skip(typed).cloned());
        }
    }
    out
}

/// `text` with each block's lines replaced: `edits` are (block, new lines).
pub fn rewrite(text: &str, edits: &[(&Block, Vec<String>)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut edits: Vec<&(&Block, Vec<String>)> = edits.iter().collect();
    // From the bottom up, so that earlier line numbers stay right.
    edits.sort_by_key(|(block, _)| std::cmp::Reverse(block.fence_line));
    for (block, new) in edits {
        let start = block.fence_line; // the line after the fence, 0-based
        let end = start + block.lines.len();
        let indent = " ".repeat(block.indent);
        let new = new.iter().map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{indent}{l}")
            }
        });
        lines.splice(start..end, new);
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::transcript;
    use std::path::Path;

    fn capture(lines: &[&str], starts: &[usize]) -> Capture {
        Capture {
            lines: lines.iter().map(|s| s.to_string()).collect(),
            starts: starts.to_vec(),
        }
    }

    #[test]
    fn rewrites_only_the_outputs_that_differ() {
        let page = "Text.\n\n<!-- transcript: vary=pids -->\n```console\n$ ls \\\n    /x\nold\n$ echo 1234\n...\n```\n\n```console\n$ true\n```\n";
        let mut problems = Vec::new();
        let blocks = transcript::blocks(Path::new("p.md"), page, &mut problems);
        assert!(problems.is_empty());
        // The real run: `ls` printed two lines, `echo` another PID, which
        // `...` and vary=pids accept.
        let real = capture(
            &["$ ls \\", "    /x", "new", "lines", "$ echo 1234", "5678"],
            &[0, 4],
        );
        let new = blessed_lines(&blocks[0], &real);
        assert_eq!(
            new,
            ["$ ls \\", "    /x", "new", "lines", "$ echo 1234", "..."]
        );
        let text = rewrite(page, &[(&blocks[0], new)]);
        assert_eq!(
            text,
            "Text.\n\n<!-- transcript: vary=pids -->\n```console\n$ ls \\\n    /x\nnew\nlines\n$ echo 1234\n...\n```\n\n```console\n$ true\n```\n"
        );
    }

    #[test]
    fn keeps_the_indent_of_a_block_in_a_list() {
        let page = "1. Run:\n\n   ```console\n   $ echo hi\n   ho\n\n   ```\n";
        let mut problems = Vec::new();
        let blocks = transcript::blocks(Path::new("p.md"), page, &mut problems);
        let new = blessed_lines(&blocks[0], &capture(&["$ echo hi", "hi"], &[0]));
        assert_eq!(
            rewrite(page, &[(&blocks[0], new)]),
            "1. Run:\n\n   ```console\n   $ echo hi\n   hi\n   ```\n"
        );
    }
}
