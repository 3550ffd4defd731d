//! A real terminal for the transcripts: bash in a tmux pane, typed into with
//! `send-keys`, read back with `capture-pane`.
//!
//! The shell is the reader's: `bash --norc --noprofile`, PS1 the block's
//! prompt, PS2 empty (so continuation lines show exactly as typed), no
//! history file. Its `PROMPT_COMMAND` appends a line to a file: when that
//! file grows and the prompt is on screen, the command has finished. An
//! interactive session (busybox's `sh` in a container) has no such hook; it
//! is ready when its prompt ends the cursor's line and the screen has
//! stopped changing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::interrupt;
use super::transcript::ends_with_session_prompt;

/// The pane's size: wide enough that commands and outputs seldom wrap.
pub const WIDTH: u32 = 250;
pub const HEIGHT: u32 = 50;
/// How often the screen is looked at while waiting.
const POLL: Duration = Duration::from_millis(20);
/// How many identical looks make a screen stable.
const STABLE_POLLS: usize = 4;
/// For the waits of the check itself (a new shell, clearing the screen).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// For one tmux command.
const TMUX_TIMEOUT: Duration = Duration::from_secs(10);

/// A tmux server, by its socket.
#[derive(Clone, Debug)]
pub struct Tmux {
    pub socket: PathBuf,
}

impl Tmux {
    /// Run one tmux command (or several, separated by `;` arguments) and
    /// return what it printed. A command answers at once; one that does not
    /// within `TMUX_TIMEOUT` is ended, so that a wedged server cannot hang
    /// the check.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let describe = || {
            let words: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            format!("tmux {}", words.join(" "))
        };
        let mut child = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run tmux (is it installed? scripts/setup.sh installs it)")?;
        // Read while it runs: a big capture would fill the pipe.
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            bail!("{}: no pipes", describe());
        };
        let reader = std::thread::spawn(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let _ = stdout.read_to_end(&mut out);
            let _ = stderr.read_to_end(&mut err);
            (out, err)
        });
        let deadline = Instant::now() + TMUX_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{}: no answer within {}s",
                    describe(),
                    TMUX_TIMEOUT.as_secs()
                );
            }
            sleep(Duration::from_millis(1));
        };
        let (out, err) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("{}: reading its output failed", describe()))?;
        if !status.success() {
            bail!("{}: {}", describe(), String::from_utf8_lossy(&err).trim());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// What is on the screen, and where the cursor is.
pub struct Screen {
    pub rows: Vec<String>,
    pub cursor_x: usize,
    pub cursor_y: usize,
}

impl Screen {
    /// The cursor's row up to the cursor: the prompt, when a shell waits.
    pub fn before_cursor(&self) -> String {
        let row = self.rows.get(self.cursor_y).map_or("", String::as_str);
        let mut text: String = row.chars().take(self.cursor_x).collect();
        // capture-pane drops trailing spaces, such as the one of `$ `.
        while text.chars().count() < self.cursor_x {
            text.push(' ');
        }
        text
    }

    pub fn text(&self) -> String {
        let mut rows: Vec<&str> = self.rows.iter().map(|r| r.trim_end()).collect();
        while rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows.join("\n")
    }
}

/// Where a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// bash's prompt is back: the command finished.
    Shell,
    /// An interactive session waits at its prompt.
    Session,
    /// Neither, before the deadline: what the screen showed then.
    TimedOut(String),
}

/// Who the shell runs as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum User {
    Root,
    /// uid and gid 65534, no supplementary groups.
    Nobody,
}

/// One bash in one tmux session.
pub struct Shell {
    pub tmux: Tmux,
    pub name: String,
    /// The file PROMPT_COMMAND appends to.
    done: PathBuf,
    /// The current PS1.
    pub prompt: String,
}

impl Shell {
    /// Start bash in a new session `name` of `tmux`, in `cwd`, with exactly
    /// the environment `env`, and set it up with PS1 = `prompt`.
    pub fn start(
        tmux: &Tmux,
        name: &str,
        done: &Path,
        cwd: &Path,
        env: &[(String, String)],
        user: User,
        prompt: &str,
    ) -> Result<Shell> {
        fs::write(done, "").with_context(|| format!("create {}", done.display()))?;
        if user == User::Nobody {
            fs::set_permissions(done, fs::Permissions::from_mode(0o666))?;
        }
        let done_text = done.to_str().context("a run directory that is UTF-8")?;
        if done_text.contains('\'') {
            bail!("the run directory {done_text} has a quote in its path");
        }
        let mut args: Vec<String> = ["new-session", "-d", "-s", name, "-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(WIDTH.to_string());
        args.push("-y".into());
        args.push(HEIGHT.to_string());
        args.push("-c".into());
        args.push(cwd.to_str().context("a UTF-8 checkout path")?.into());
        if user == User::Nobody {
            for a in [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ] {
                args.push(a.into());
            }
        }
        // `env -i`: the reader's environment, not tmux's (TMUX, TMUX_PANE).
        args.push("env".into());
        args.push("-i".into());
        for (key, value) in env {
            args.push(format!("{key}={value}"));
        }
        for a in ["bash", "--norc", "--noprofile"] {
            args.push(a.into());
        }
        tmux.run(&args)?;
        let shell = Shell {
            tmux: tmux.clone(),
            name: name.to_string(),
            done: done.to_path_buf(),
            prompt: prompt.to_string(),
        };
        // Typed, not exported: a container started from this shell must
        // not inherit them. The leading space keeps it out of the history.
        let setup = format!(
            " PS1='{prompt}' PS2= HISTCONTROL=ignorespace; unset HISTFILE; \
             PROMPT_COMMAND='echo >> {done_text}'"
        );
        shell.type_lines(&[setup])?;
        match shell.wait(0, Instant::now() + SETUP_TIMEOUT)? {
            Ready::Shell => Ok(shell),
            other => bail!("a new shell did not come up: {other:?}"),
        }
    }

    /// How many prompts bash has shown since it was set up.
    pub fn prompts(&self) -> Result<usize> {
        let text = fs::read_to_string(&self.done)
            .with_context(|| format!("read {}", self.done.display()))?;
        Ok(text.matches('\n').count())
    }

    pub fn screen(&self) -> Result<Screen> {
        let t = &self.name;
        let out = self.tmux.run(&[
            "display-message",
            "-p",
            "-t",
            t,
            "#{cursor_x} #{cursor_y}",
            ";",
            "capture-pane",
            "-p",
            "-t",
            t,
        ])?;
        let mut lines = out.lines();
        let cursor = lines.next().unwrap_or_default();
        let mut numbers = cursor.split(' ').map(|n| n.parse::<usize>());
        let (Some(Ok(cursor_x)), Some(Ok(cursor_y))) = (numbers.next(), numbers.next()) else {
            bail!("tmux display-message printed {cursor:?}, not the cursor position");
        };
        Ok(Screen {
            rows: lines.map(String::from).collect(),
            cursor_x,
            cursor_y,
        })
    }

    /// The whole pane, history included, wrapped lines joined, trailing
    /// spaces and blank lines dropped.
    pub fn capture(&self) -> Result<Vec<String>> {
        let out = self.tmux.run(&[
            "capture-pane",
            "-p",
            "-J",
            "-S",
            "-",
            "-E",
            "-",
            "-t",
            &self.name,
        ])?;
        let mut lines: Vec<String> = out.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        Ok(lines)
    }

    /// Type `lines`, each followed by Enter, in one tmux command, so that
    /// they reach the terminal together while bash is reading. The text
    /// goes as hex bytes (`send-keys -H`): tmux would otherwise read a
    /// trailing `;` as its own command separator.
    pub fn type_lines(&self, lines: &[String]) -> Result<()> {
        let mut args: Vec<String> = Vec::new();
        for line in lines {
            if !line.is_empty() {
                args.extend(["send-keys", "-t", &self.name, "-H"].map(String::from));
                args.extend(line.bytes().map(|b| format!("{b:02x}")));
                args.push(";".into());
            }
            args.extend(["send-keys", "-t", &self.name, "Enter", ";"].map(String::from));
        }
        args.pop();
        self.tmux.run(&args).map(drop)
    }

    /// Press a key: `C-l`, `C-c`, `C-d`.
    pub fn key(&self, key: &str) -> Result<()> {
        self.tmux
            .run(&["send-keys", "-t", &self.name, key])
            .map(drop)
    }

    /// Wait until bash has shown more than `prompts` prompts and its prompt
    /// is at the cursor, or an interactive session waits at its prompt.
    pub fn wait(&self, prompts: usize, deadline: Instant) -> Result<Ready> {
        let mut last = String::new();
        let mut same = 0;
        loop {
            interrupt::check()?;
            let shown = self.prompts()?;
            let screen = self.screen()?;
            let before_cursor = screen.before_cursor();
            if shown > prompts && before_cursor.ends_with(&self.prompt) {
                return Ok(Ready::Shell);
            }
            let text = screen.text();
            same = if text == last { same + 1 } else { 0 };
            if same >= STABLE_POLLS && ends_with_session_prompt(&before_cursor) {
                return Ok(Ready::Session);
            }
            if Instant::now() > deadline {
                return Ok(Ready::TimedOut(text));
            }
            last = text;
            sleep(POLL);
        }
    }

    /// Make PS1 `prompt`, then clear the screen and the history, so that
    /// the next capture starts at the prompt the block's first command is
    /// typed at.
    pub fn prepare(&mut self, prompt: &str) -> Result<()> {
        if self.prompt != prompt {
            let prompts = self.prompts()?;
            self.prompt = prompt.to_string();
            self.type_lines(&[format!(" PS1='{prompt}'")])?;
            if self.wait(prompts, Instant::now() + SETUP_TIMEOUT)? != Ready::Shell {
                bail!("the shell did not take the prompt {prompt:?}");
            }
        }
        // Readline's clear-screen redraws the prompt at the top.
        self.key("C-l")?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            interrupt::check()?;
            let screen = self.screen()?;
            if screen.cursor_y == 0 && screen.before_cursor() == self.prompt {
                break;
            }
            if Instant::now() > deadline {
                bail!("the screen did not clear; it shows:\n{}", screen.text());
            }
            sleep(POLL);
        }
        self.tmux
            .run(&["clear-history", "-t", &self.name])
            .map(drop)
    }

    /// The PID of the pane's process (bash, or setpriv's bash).
    pub fn pid(&self) -> Result<u32> {
        let out = self
            .tmux
            .run(&["display-message", "-p", "-t", &self.name, "#{pane_pid}"])?;
        out.trim()
            .parse()
            .with_context(|| format!("tmux printed {out:?} for the pane's PID"))
    }
}
