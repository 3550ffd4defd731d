//! Where a typed command ends: is this shell input complete, or does bash
//! want more lines?
//!
//! A transcript shows a multi-line command the way the reader types it:
//!
//! ```text
//! $ sudo tar --absolute-names -cf /tmp/evil.tar \
//!       --transform 's|^|../../../../|' /tmp/evilfile
//! $ sudo unshare --mount sh <<'EOF'
//! mount --make-rshared /
//! EOF
//! ```
//!
//! The lines after a `$ ` line belong to the same input while bash would
//! still be waiting for more: after a trailing `\`, inside an open quote,
//! until a here-document's terminator, after a trailing `|`, `&&` or `||`,
//! and inside an open `(` or `$(`. This is a small lexer, not a shell: it
//! does not know compound commands (`for ... do` on one line and `done` on
//! the next), which transcripts write on one line.

/// Whether `text` (lines joined by `\n`) is a complete shell input.
pub fn is_complete(text: &str) -> bool {
    let mut lexer = Lexer::default();
    for line in text.split('\n') {
        lexer.line(line);
    }
    lexer.complete()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Quote {
    #[default]
    None,
    /// `'...'`: nothing is special until the closing quote.
    Single,
    /// `"..."`: a backslash escapes the next character.
    Double,
    /// `$'...'`: like single quotes, but a backslash escapes.
    AnsiC,
    /// `` `...` ``: an old-style command substitution.
    Backtick,
}

/// A here-document waiting for its body: `<<EOF` or `<<-EOF` (which strips
/// leading tabs from the body lines and the terminator).
#[derive(Debug)]
struct HereDoc {
    terminator: String,
    strip_tabs: bool,
}

#[derive(Default, Debug)]
struct Lexer {
    quote: Quote,
    /// Open `(` (also of `$(`): bash waits for the matching `)`.
    parens: usize,
    /// Open `((` and `$((`: inside arithmetic, `<<` is a shift.
    arithmetic: usize,
    /// The last line ended with a `\` outside quotes (or inside `"`).
    backslash: bool,
    /// The last line ended with `|`, `&&` or `||`.
    operator: bool,
    /// Here-documents whose operator was on an earlier line, in order.
    bodies: Vec<HereDoc>,
}

impl Lexer {
    fn complete(&self) -> bool {
        self.quote == Quote::None
            && self.parens == 0
            && !self.backslash
            && !self.operator
            && self.bodies.is_empty()
    }

    fn line(&mut self, line: &str) {
        // A line of a here-document's body: only its terminator matters.
        if let Some(doc) = self.bodies.first() {
            let text = if doc.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if text == doc.terminator {
                self.bodies.remove(0);
            }
            return;
        }
        self.backslash = false;
        self.operator = false;
        let chars: Vec<char> = line.chars().collect();
        let mut pending = Vec::new();
        // The last characters outside quotes and comments, to spot a
        // trailing `|`, `&&` or `||`.
        let mut code_end = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match self.quote {
                Quote::Single => {
                    if c == '\'' {
                        self.quote = Quote::None;
                    }
                }
                Quote::AnsiC => match c {
                    '\\' => i += 1,
                    '\'' => self.quote = Quote::None,
                    _ => {}
                },
                Quote::Double | Quote::Backtick => match c {
                    '\\' if next.is_none() => self.backslash = true,
                    '\\' => i += 1,
                    '"' if self.quote == Quote::Double => self.quote = Quote::None,
                    '`' if self.quote == Quote::Backtick => self.quote = Quote::None,
                    _ => {}
                },
                Quote::None => {
                    match c {
                        '\\' if next.is_none() => self.backslash = true,
                        '\\' => i += 1,
                        '\'' => self.quote = Quote::Single,
                        '"' => self.quote = Quote::Double,
                        '`' => self.quote = Quote::Backtick,
                        '$' if next == Some('\'') => {
                            self.quote = Quote::AnsiC;
                            i += 1;
                        }
                        '#' if word_start(&chars, i) => break, // a comment
                        '(' if next == Some('(') => {
                            self.arithmetic += 1;
                            self.parens += 2;
                            i += 1;
                        }
                        '(' => self.parens += 1,
                        ')' if next == Some(')') && self.arithmetic > 0 => {
                            self.arithmetic -= 1;
                            self.parens = self.parens.saturating_sub(2);
                            i += 1;
                        }
                        // A `case` pattern's `)` has no `(`: never below 0.
                        ')' => self.parens = self.parens.saturating_sub(1),
                        '<' if next == Some('<') && self.arithmetic == 0 => {
                            if chars.get(i + 2) == Some(&'<') {
                                i += 2; // `<<<`: a here-string, one line
                            } else {
                                let (doc, end) = here_doc(&chars, i + 2);
                                pending.extend(doc);
                                i = end;
                                code_end.push('x');
                                continue;
                            }
                        }
                        _ => {}
                    }
                    if !c.is_whitespace() {
                        code_end.push(c);
                    } else if !code_end.ends_with(' ') {
                        code_end.push(' ');
                    }
                }
            }
            i += 1;
        }
        if self.quote == Quote::None && !self.backslash {
            let end = code_end.trim_end();
            self.operator = end.ends_with('|') || end.ends_with("&&");
        }
        self.bodies.extend(pending);
    }
}

/// Whether `#` at `i` starts a comment: at the start of a word.
fn word_start(chars: &[char], i: usize) -> bool {
    i == 0 || chars[i - 1].is_whitespace() || matches!(chars[i - 1], ';' | '&' | '|' | '(' | ')')
}

/// Parse the word after `<<` (at `start`): `-`, blanks, then the terminator,
/// quoted or not. Returns the here-document and where the word ends.
fn here_doc(chars: &[char], start: usize) -> (Option<HereDoc>, usize) {
    let mut i = start;
    let strip_tabs = chars.get(i) == Some(&'-');
    if strip_tabs {
        i += 1;
    }
    while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    // Quotes only say "no expansion in the body": the terminator is the
    // word with its quotes removed.
    let mut terminator = String::new();
    let mut quote = None;
    while let Some(&c) = chars.get(i) {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '\\') => {
                if let Some(&escaped) = chars.get(i + 1) {
                    terminator.push(escaped);
                    i += 1;
                }
            }
            (None, c) if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | ')') => {
                break
            }
            _ => terminator.push(c),
        }
        i += 1;
    }
    if terminator.is_empty() {
        return (None, i);
    }
    (
        Some(HereDoc {
            terminator,
            strip_tabs,
        }),
        i,
    )
}

#[cfg(test)]
mod tests {
    use super::is_complete;

    #[test]
    fn one_line_commands_are_complete() {
        assert!(is_complete("sudo mydocker run true"));
        assert!(is_complete("echo 'a  b' \"c d\" $'e\\'f'"));
        assert!(is_complete("mydocker run sleep 3 & sleep 1; kill -TERM $!"));
        assert!(is_complete("cat x      # on v2: don't forget"));
        assert!(is_complete("echo $((1 << 2)) \\\\"));
        assert!(is_complete("cat <<< 'one line'"));
        assert!(is_complete("echo a#b"));
        assert!(is_complete("case x in x) echo x;; esac"));
    }

    #[test]
    fn a_trailing_backslash_continues() {
        assert!(!is_complete("sudo tar -cf x.tar \\"));
        assert!(is_complete(
            "sudo tar -cf x.tar \\\n      --transform 's|^|../|' f"
        ));
        assert!(!is_complete("a \\\n  b \\"));
    }

    #[test]
    fn an_open_quote_continues() {
        assert!(!is_complete("sudo unshare --mount sh -c '"));
        assert!(!is_complete("sh -c '\n    mount --make-rshared /"));
        assert!(is_complete("sh -c '\n    mount --make-rshared /\n  '"));
        assert!(!is_complete("echo \"it's"));
        assert!(is_complete("echo \"it's\""));
        assert!(!is_complete("echo `date"));
    }

    #[test]
    fn a_here_document_continues_until_its_terminator() {
        let start = "sudo unshare --mount sh <<'EOF'";
        assert!(!is_complete(start));
        assert!(!is_complete(&format!("{start}\nmount --make-rshared /")));
        assert!(!is_complete(&format!("{start}\necho 'open quote\n EOF")));
        assert!(is_complete(&format!("{start}\necho 'open quote\nEOF")));
        assert!(!is_complete("cat <<-END\n\tbody"));
        assert!(is_complete("cat <<-END\n\tbody\n\tEND"));
        assert!(is_complete("cat << \"X Y\" | tr a-z A-Z\nbody\nX Y"));
        assert!(!is_complete("cat <<A <<B\nA\nb"));
        assert!(is_complete("cat <<A <<B\nA\nB"));
        // The body is not shell code: a quote in it opens nothing.
        assert!(is_complete("cat <<EOF\nit's\nEOF"));
    }

    #[test]
    fn a_trailing_operator_or_open_paren_continues() {
        assert!(!is_complete("ls |"));
        assert!(!is_complete("true &&"));
        assert!(!is_complete("false ||  # try again"));
        assert!(is_complete("ls |\n  wc -l"));
        assert!(!is_complete("x=$(echo a"));
        assert!(is_complete("x=$(echo a\n)"));
        assert!(is_complete("echo ')' \"(\""));
    }
}
