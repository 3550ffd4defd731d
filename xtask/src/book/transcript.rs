//! A page's console blocks, read as transcripts: what the reader types and
//! what the terminal shows back.

use std::path::Path;

use regex::Regex;
use std::sync::LazyLock;

use super::annotation::{self, Options};
use super::shell_input;

/// One ```` ```console ```` block of a page.
#[derive(Debug)]
pub struct Block {
    /// 1-based page line of the opening fence.
    pub fence_line: usize,
    /// The fence's indentation (inside a list item), removed from the lines.
    pub indent: usize,
    /// The block's lines, without the fence's indentation or trailing
    /// spaces. `lines[k]` is page line `fence_line + 1 + k`.
    pub lines: Vec<String>,
    pub options: Options,
    /// `$ ` or `# `: the prompt of the shell the block is typed into.
    pub prompt: &'static str,
    pub steps: Vec<Step>,
}

impl Block {
    /// The 1-based page line of `lines[index]`.
    pub fn page_line(&self, index: usize) -> usize {
        self.fence_line + 1 + index
    }
}

/// What the reader types, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `$ command`, with its continuation lines: typed into bash.
    Shell { line: usize, input: Vec<String> },
    /// `/ # command`: typed into an interactive session that a shell step
    /// started (`run -ti busybox sh`).
    Session { line: usize, input: String },
    /// A last `/ # ` with nothing typed: the block ends with the session
    /// still open (the check then ends it with Ctrl-D).
    Open { line: usize },
}

impl Step {
    /// The index in `Block::lines` of the step's first line.
    pub fn line(&self) -> usize {
        match self {
            Step::Shell { line, .. } | Step::Session { line, .. } | Step::Open { line } => *line,
        }
    }

    /// How many of the block's lines are typed input (and echoed back).
    pub fn input_lines(&self) -> usize {
        match self {
            Step::Shell { input, .. } => input.len(),
            Step::Session { .. } | Step::Open { .. } => 1,
        }
    }

    /// The input as one line of text, for messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Shell { input, .. } => input.join("\n"),
            Step::Session { input, .. } => input.clone(),
            Step::Open { .. } => "(the interactive session's prompt)".into(),
        }
    }
}

/// A prompt of busybox's shell in a container: `/ # `, `~ # `, `/tmp # `.
static SESSION_PROMPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[/~][^ ]* #(?: |$)").expect("a valid regex"));

/// The input after a session prompt at the start of `line`, if any.
pub fn session_input(line: &str) -> Option<&str> {
    SESSION_PROMPT.find(line).map(|m| &line[m.end()..])
}

/// Whether `text` ends with a session prompt (the screen's cursor line).
pub fn ends_with_session_prompt(text: &str) -> bool {
    static AT_END: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?:^|\n)[/~][^ \n]* # $").expect("a valid regex"));
    AT_END.is_match(text)
}

/// The console blocks of a page; `problems` collects what is malformed,
/// as `page:line: message`.
pub fn blocks(page: &Path, text: &str, problems: &mut Vec<String>) -> Vec<Block> {
    let name = page.display();
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    // Annotations seen since the last fence: (line, text).
    let mut pending: Vec<(usize, String)> = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        let line = lines[k];
        let trimmed = line.trim_start();
        if let Some(rest) = annotation_start(trimmed) {
            // The comment may span lines, up to `-->`.
            let start = k;
            let mut body = rest.to_string();
            while !body.contains("-->") && k + 1 < lines.len() {
                k += 1;
                body.push(' ');
                body.push_str(lines[k].trim());
            }
            match body.split_once("-->") {
                Some((inside, _)) => pending.push((start + 1, inside.to_string())),
                None => problems.push(format!("{name}:{}: the annotation has no `-->`", start + 1)),
            }
            k += 1;
            continue;
        }
        let Some(fence) = Fence::open(line) else {
            for (at, _) in pending.drain(..) {
                problems.push(format!(
                    "{name}:{at}: a transcript annotation must be on the line(s) right \
                     before a ```console fence"
                ));
            }
            k += 1;
            continue;
        };
        // A fenced block: find its end.
        let fence_line = k + 1;
        let mut body = Vec::new();
        k += 1;
        while k < lines.len() && !fence.closes(lines[k]) {
            body.push(strip_indent(lines[k], fence.indent).trim_end().to_string());
            k += 1;
        }
        k += 1;
        let annotations = std::mem::take(&mut pending);
        if fence.language != "console" {
            for (at, _) in annotations {
                problems.push(format!(
                    "{name}:{at}: a transcript annotation before a ```{} block: only \
                     ```console blocks are transcripts",
                    fence.language
                ));
            }
            continue;
        }
        let mut options = Options::default();
        for (at, text) in &annotations {
            if let Err(err) = annotation::parse(text, &mut options) {
                problems.push(format!("{name}:{at}: {err:#}"));
            }
        }
        let mut block = Block {
            fence_line,
            indent: fence.indent,
            lines: body,
            options,
            prompt: "$ ",
            steps: Vec::new(),
        };
        match steps(&block.lines) {
            Ok((prompt, steps)) => {
                block.prompt = prompt;
                block.steps = steps;
            }
            Err((index, message)) => {
                problems.push(format!("{name}:{}: {message}", block.page_line(index)));
            }
        }
        blocks.push(block);
    }
    for (at, _) in pending {
        problems.push(format!(
            "{name}:{at}: a transcript annotation at the end of the page"
        ));
    }
    blocks
}

/// `<!-- transcript: ...`: the text after the marker.
fn annotation_start(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("<!--")?.trim_start();
    rest.strip_prefix(annotation::MARKER)
}

/// An opening code fence: ```` ``` ```` or `~~~`, at least three.
struct Fence {
    indent: usize,
    marker: char,
    length: usize,
    language: String,
}

impl Fence {
    fn open(line: &str) -> Option<Fence> {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let length = trimmed.chars().take_while(|c| *c == marker).count();
        if length < 3 {
            return None;
        }
        let info = &trimmed[length..];
        let language = info
            .split(|c: char| c.is_whitespace() || c == ',')
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_string();
        Some(Fence {
            indent,
            marker,
            length,
            language,
        })
    }

    fn closes(&self, line: &str) -> bool {
        let trimmed = line.trim();
        trimmed.len() >= self.length && trimmed.chars().all(|c| c == self.marker)
    }
}

/// Remove up to `indent` leading spaces, as CommonMark does for the lines of
/// an indented fence.
fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.chars().take(indent).take_while(|c| *c == ' ').count();
    &line[spaces..]
}

/// The command after `prompt` on `line`, if the line is one.
fn command<'a>(line: &'a str, prompt: &str) -> Option<&'a str> {
    if line == prompt.trim_end() {
        Some("")
    } else {
        line.strip_prefix(prompt)
    }
}

/// Split a block's lines into steps. Errors carry the line index.
type StepsError = (usize, String);

fn steps(lines: &[String]) -> Result<(&'static str, Vec<Step>), StepsError> {
    let first = lines.first().map(String::as_str).unwrap_or("");
    let prompt = if command(first, "$ ").is_some() {
        "$ "
    } else if command(first, "# ").is_some() {
        "# "
    } else {
        return Err((
            0,
            "a console block starts with a command: `$ ` (or `# ` for a root shell)".into(),
        ));
    };
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if let Some(first) = command(line, prompt) {
            let mut input = vec![first.to_string()];
            let mut j = i + 1;
            while !shell_input::is_complete(&input.join("\n")) {
                let Some(next) = lines.get(j) else {
                    return Err((
                        i,
                        "this command's input never ends: an open quote, a trailing `\\` or a \
                         here-document without its terminator"
                            .into(),
                    ));
                };
                input.push(next.clone());
                j += 1;
            }
            steps.push(Step::Shell { line: i, input });
            i = j;
        } else if let Some(input) = session_input(line) {
            if input.is_empty() && i + 1 == lines.len() {
                steps.push(Step::Open { line: i });
            } else {
                steps.push(Step::Session {
                    line: i,
                    input: input.to_string(),
                });
            }
            i += 1;
        } else {
            i += 1; // output
        }
    }
    Ok((prompt, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Block>, Vec<String>) {
        let mut problems = Vec::new();
        let blocks = blocks(Path::new("p.md"), text, &mut problems);
        (blocks, problems)
    }

    fn shell(line: usize, input: &[&str]) -> Step {
        Step::Shell {
            line,
            input: input.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn finds_console_blocks_and_their_steps() {
        let text = "intro\n\n```console\n$ echo hi\nhi\n$ tar -cf x \\\n    y\n```\n\n```text\n$ not a transcript\n```\n";
        let (blocks, problems) = parse(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0];
        assert_eq!(b.fence_line, 3);
        assert_eq!(b.prompt, "$ ");
        assert_eq!(b.lines, ["$ echo hi", "hi", "$ tar -cf x \\", "    y"]);
        assert_eq!(
            b.steps,
            vec![shell(0, &["echo hi"]), shell(2, &["tar -cf x \\", "    y"])]
        );
        assert_eq!(b.page_line(2), 6);
    }

    #[test]
    fn a_root_block_takes_only_its_own_prompt() {
        let text = "```console\n$ sudo sh <<'EOF'\necho '# inside'\nEOF\n# inside\n```\n";
        let (blocks, problems) = parse(text);
        assert!(problems.is_empty());
        assert_eq!(
            blocks[0].steps,
            vec![shell(0, &["sudo sh <<'EOF'", "echo '# inside'", "EOF"])]
        );
        let (blocks, _) = parse("```console\n# mydocker run sleep 1 &\n[1] 42\n# wait\n```\n");
        assert_eq!(blocks[0].prompt, "# ");
        assert_eq!(blocks[0].steps.len(), 2);
    }

    #[test]
    fn an_interactive_session_is_typed_into() {
        let text = "```console\n$ sudo mydocker run -ti busybox sh\n\nBusyBox\n/ # echo $$\n1\n/ # exit 3\n$ echo $?\n3\n```\n```console\n$ sudo mydocker run -ti busybox sh\n/ # \n```\n";
        let (blocks, problems) = parse(text);
        assert!(problems.is_empty());
        assert_eq!(
            blocks[0].steps,
            vec![
                shell(0, &["sudo mydocker run -ti busybox sh"]),
                Step::Session {
                    line: 3,
                    input: "echo $$".into()
                },
                Step::Session {
                    line: 5,
                    input: "exit 3".into()
                },
                shell(6, &["echo $?"]),
            ]
        );
        assert_eq!(blocks[1].steps[1], Step::Open { line: 1 });
    }

    #[test]
    fn an_indented_block_loses_its_indent() {
        let text = "1. Try:\n\n   ```console\n   $ sudo unshare --mount sh -c '\n       mount --make-rshared /\n     '\n   TARGET\n   ```\n";
        let (blocks, problems) = parse(text);
        assert!(problems.is_empty());
        assert_eq!(blocks[0].indent, 3);
        assert_eq!(blocks[0].lines[1], "    mount --make-rshared /");
        assert_eq!(blocks[0].steps.len(), 1);
    }

    #[test]
    fn reads_annotations() {
        let text = "<!-- transcript: vary=pids\n     timeout=5 -->\n<!-- transcript: fresh -->\n```console\n$ true\n```\n<!-- transcript: not run: needs a VM -->\n```console\n$ vagrant up\n```\n";
        let (blocks, problems) = parse(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(blocks[0].options.timeout.as_secs(), 5);
        assert!(blocks[0].options.fresh);
        assert_eq!(blocks[1].options.not_run.as_deref(), Some("needs a VM"));
    }

    #[test]
    fn reports_malformed_blocks_and_annotations() {
        let (_, problems) = parse("<!-- transcript: not run -->\n```console\n$ x\n```\n");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("p.md:1: `not run` needs a reason"),
            "{problems:?}"
        );
        let (_, problems) = parse("<!-- transcript: fresh -->\n\n```console\n$ x\n```\n");
        assert!(
            problems[0].starts_with("p.md:1: a transcript annotation must be"),
            "{problems:?}"
        );
        let (_, problems) = parse("<!-- transcript: fresh -->\n```text\nx\n```\n");
        assert!(problems[0].contains("```text"), "{problems:?}");
        let (_, problems) = parse("```console\nhello\n```\n");
        assert!(problems[0].starts_with("p.md:2: a console block starts with a command"));
        let (_, problems) = parse("```console\n$ echo 'open\n```\n");
        assert!(problems[0].starts_with("p.md:2: this command's input never ends"));
    }
}
