//! Checks of the rendered pages (after `mdbook build`), where a listing that
//! resolves can still come out wrong:
//!
//! - an include indented inside a list item: mdBook indents only the
//!   include's first line, the others fall out of the list item and the
//!   listing breaks apart;
//! - a whole-file include shows the file's `ANCHOR:` comments;
//! - a line wider than 80 columns, which the page clips.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::includes::{self, ANCHOR_END, ANCHOR_START};

/// The widest listing line the page shows without clipping.
pub const MAX_COLUMNS: usize = 80;

/// Check every page's rendered HTML under `html_dir` against its includes;
/// returns the problems found, as `page:line: message`.
pub fn check(
    root: &Path,
    src: &Path,
    html_dir: &Path,
    pages: &[(PathBuf, String)],
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    for (page, text) in pages {
        let includes = includes::find(text);
        if includes.is_empty() {
            continue;
        }
        let relative = page
            .strip_prefix(src)
            .unwrap_or(page)
            .with_extension("html");
        let html_path = html_dir.join(&relative);
        let html = fs::read_to_string(&html_path)
            .with_context(|| format!("read the rendered page {}", html_path.display()))?;
        let codes: Vec<String> = code_elements(&html)
            .iter()
            .map(|c| c.trim_end_matches('\n').to_string())
            .collect();
        let name = shown(page);
        // Anchor lines already reported against their include.
        let mut reported = HashSet::new();
        for include in &includes {
            let at = format!("{name}:{}", include.line);
            let Ok(listing) = includes::listing(page, &include.argument) else {
                continue; // the static check reports it
            };
            let file = shown(&listing.file);
            if !include.rustdoc {
                let expected = listing.text();
                let expected = expected.trim_end_matches('\n');
                if !codes.iter().any(|c| c == expected) {
                    let indented = text
                        .lines()
                        .nth(include.line - 1)
                        .is_some_and(|l| l.starts_with(char::is_whitespace));
                    let hint = if indented {
                        ": an indented include keeps its indent on the first line only, \
                         so inside a list item the listing breaks apart; move it out of the list"
                    } else {
                        ""
                    };
                    problems.push(format!(
                        "{at}: {{{{#include {}}}}} is not one intact code block in the rendered \
                         {}{hint}",
                        include.argument,
                        relative.display()
                    ));
                }
            }
            for (number, line) in &listing.lines {
                if ANCHOR_START.is_match(line) || ANCHOR_END.is_match(line) {
                    reported.insert(line.clone());
                    problems.push(format!(
                        "{at}: the listing shows an anchor comment ({file}:{number}: {}); \
                         include an anchor, not the whole file",
                        line.trim()
                    ));
                }
                let columns = line.chars().count();
                if columns > MAX_COLUMNS {
                    problems.push(format!(
                        "{at}: listing line {file}:{number} is {columns} columns wide; the \
                         page shows {MAX_COLUMNS}"
                    ));
                }
            }
        }
        // Anchor text from anywhere else (a pasted listing, say).
        for code in &codes {
            for line in code.lines() {
                if (ANCHOR_START.is_match(line) || ANCHOR_END.is_match(line))
                    && !reported.contains(line)
                {
                    problems.push(format!(
                        "{name}: the rendered page shows an anchor comment in a listing: {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// The text of every `<pre><code>` element: tags removed (a highlighter may
/// add spans), entities decoded.
pub fn code_elements(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<pre><code") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</code>") else {
            break;
        };
        found.push(unescape(&strip_tags(&body[..close])));
        rest = &body[close..];
    }
    found
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Decode HTML's character references: the named ones an HTML renderer
/// escapes, and numeric ones.
pub fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|end| *end <= 10).and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_code_blocks() {
        let html = "<p><code>inline</code></p><pre><code class=\"language-rust\">fn a() -&gt; &amp;str {\n    <span class=\"x\">&quot;x&#39;&#x27;&quot;</span>\n}</code></pre>";
        assert_eq!(
            code_elements(html),
            vec!["fn a() -> &str {\n    \"x''\"\n}"]
        );
        assert_eq!(unescape("a & b &unknown; &#65;"), "a & b &unknown; A");
    }
}
