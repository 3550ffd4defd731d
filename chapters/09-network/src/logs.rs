//! A container's log: what its processes wrote to stdout and stderr, line
//! by line, in `containers/ID/json.log`, in Docker's `json-file` format:
//!
//! ```text
//! {"log":"hello\n","stream":"stdout","time":"2026-11-24T10:11:12.123456789Z"}
//! ```
//!
//! The monitor writes it (`Log`); `mydocker logs` reads it (`logs`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::container;
use crate::paths::Paths;

/// The log's file in a container's directory.
pub const LOG: &str = "json.log";

/// A line longer than this is logged in pieces, as Docker does: the
/// monitor must not hold the output of a process that never writes `\n`.
const MAX_LINE: usize = 16 * 1024;

// ANCHOR: entry
/// One line of the log.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    /// The line, with its `\n` (the last piece of the output may have none).
    log: std::borrow::Cow<'a, str>,
    stream: Stream,
    time: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}
// ANCHOR_END: entry

// ANCHOR: log
/// The monitor's side: the output of each stream, cut into lines.
pub struct Log {
    file: File,
    /// What each stream wrote after its last `\n`.
    partial: [Vec<u8>; 2],
}

impl Log {
    /// Open (or make) the log of the container in `dir`, to append to.
    pub fn open(dir: &Path) -> Result<Log> {
        let path = dir.join(LOG);
        // O_APPEND: every write goes to the end, even when `start` runs a
        // new monitor on the same log.
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(Log {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Log `bytes`, which `stream` just wrote: every complete line.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<()> {
        let time = rfc3339(SystemTime::now());
        let partial = &mut self.partial[stream as usize];
        partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = line_end(&partial[start..]) {
            entry(&mut out, stream, &partial[start..start + end], &time);
            start += end;
        }
        partial.drain(..start);
        self.append(&out)
    }

    /// At the end: what a stream wrote after its last `\n`.
    pub fn flush(&mut self) -> Result<()> {
        let time = rfc3339(SystemTime::now());
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = std::mem::take(&mut self.partial[stream as usize]);
            if !partial.is_empty() {
                entry(&mut out, stream, &partial, &time);
            }
        }
        self.append(&out)
    }

    /// One write(2) for all the lines of a read: a reader following the
    /// log sees whole lines.
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes).context("write the log")
    }
}

/// The length of the first line in `bytes` with its `\n`, or of its first
/// MAX_LINE bytes; None if it is shorter and not finished yet.
fn line_end(bytes: &[u8]) -> Option<usize> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_LINE => Some(i + 1),
        _ if bytes.len() >= MAX_LINE => Some(char_boundary(bytes, MAX_LINE)),
        _ => None,
    }
}

/// `at`, or up to 3 bytes before it: not inside a UTF-8 character, which
/// the log could then only write as two U+FFFD.
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    // A UTF-8 continuation byte is 0b10xx_xxxx.
    (at - 3..=at)
        .rev()
        .find(|&i| bytes.get(i).is_none_or(|b| b & 0xc0 != 0x80))
        .filter(|&i| i > 0)
        .unwrap_or(at)
}

/// Append one JSON line. JSON strings are text: bytes that are not UTF-8
/// become U+FFFD, as in Docker's json-file log.
fn entry(out: &mut Vec<u8>, stream: Stream, line: &[u8], time: &str) {
    let entry = Entry {
        log: String::from_utf8_lossy(line),
        stream,
        time: time.to_string(),
    };
    // Serializing strings and an enum into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &entry).is_ok() {
        out.push(b'\n');
    }
}
// ANCHOR_END: log

// ANCHOR: logs
/// `mydocker logs [-f] [--tail N] [-t] CONTAINER`.
pub fn logs(
    paths: &Paths,
    container: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<i32> {
    // ANCHOR: tail
    let id = container::find(paths, container)?;
    let dir = paths.container(&id);
    let path = dir.join(LOG);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        // No log: a `run -t`, whose output is the terminal's (or nothing
        // written yet). With -f, wait until it stops all the same.
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            while follow && container::is_running(paths, &id)? {
                thread::sleep(Duration::from_millis(50));
            }
            return Ok(0);
        }
        Err(err) => {
            return Err(err).with_context(|| format!("open {}", path.display()))
        }
    };
    let mut out = Output::new(timestamps);
    // What is there now: all of it, or its last `tail` lines.
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines: Vec<&[u8]> =
        text[..complete].split_inclusive(|&b| b == b'\n').collect();
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        out.print(line)?;
    }
    if !follow {
        return Ok(0);
    }
    // ANCHOR_END: tail
    // ANCHOR: follow
    // Then what comes, until the container stops: its monitor holds its
    // lock until the last line is in the log.
    file.seek(SeekFrom::Start(complete as u64))
        .with_context(|| format!("seek {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        let running = container::is_running(paths, &id)?;
        // Read after looking: once it has stopped, this read gets all.
        loop {
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("read {}", path.display()))?;
            if read == 0 || line.last() != Some(&b'\n') {
                break; // the rest of this line is not written yet
            }
            out.print(&line)?;
            line.clear();
        }
        if !running {
            return Ok(0);
        }
        thread::sleep(Duration::from_millis(50));
    }
    // ANCHOR_END: follow
}

// ANCHOR: output
/// Where each line goes: stdout's lines to stdout, stderr's to stderr.
struct Output {
    timestamps: bool,
    stdout: io::Stdout,
    stderr: io::Stderr,
}

impl Output {
    fn new(timestamps: bool) -> Output {
        Output {
            timestamps,
            stdout: io::stdout(),
            stderr: io::stderr(),
        }
    }

    fn print(&mut self, json: &[u8]) -> Result<()> {
        let entry: Entry = serde_json::from_slice(json)
            .context("the log has a line that is not a log entry")?;
        let out: &mut dyn Write = match entry.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        // (`logs C | head`: once head has gone, SIGPIPE ends us quietly,
        // see main.rs.)
        let written = if self.timestamps {
            write!(out, "{} {}", entry.time, entry.log)
        } else {
            out.write_all(entry.log.as_bytes())
        };
        written
            .and_then(|()| out.flush())
            .context("write the log out")
    }
}
// ANCHOR_END: output
// ANCHOR_END: logs

/// `--tail`: a number of lines, or `all`.
pub fn parse_tail(text: &str) -> Result<Option<usize>> {
    if text == "all" {
        return Ok(None);
    }
    match text.parse() {
        Ok(n) => Ok(Some(n)),
        Err(_) => bail!("--tail {text}: give a number of lines, or all"),
    }
}

// ANCHOR: rfc3339
/// `time` as RFC 3339 in UTC with nanoseconds, as Docker writes it:
/// `2026-11-24T10:11:12.123456789Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// The date `days` after 1970-01-01, in the Gregorian calendar (Howard
/// Hinnant's algorithm: count in 400-year eras starting in March, so
/// that the leap day is the last day of a year).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // from March 1st
    let mp = (5 * doy + 2) / 153; // month, counted from March
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
// ANCHOR_END: rfc3339

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_dockers() {
        let at = |secs, nanos| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(at(1_795_519_872, 123), "2026-11-24T11:31:12.000000123Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000000Z");
    }

    #[test]
    fn a_long_line_is_not_cut_inside_a_character() {
        let mut line = vec![b'a'; MAX_LINE - 1];
        line.extend_from_slice("é\n".as_bytes());
        assert_eq!(line_end(&line), Some(MAX_LINE - 1));
        assert_eq!(line_end(&vec![b'a'; MAX_LINE + 5]), Some(MAX_LINE));
    }

    #[test]
    fn lines_are_cut_at_newlines_and_long_ones_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        log.write(Stream::Stdout, b"one\ntw").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        log.write(Stream::Stdout, b"o\nend").unwrap();
        log.write(Stream::Stderr, &vec![b'x'; MAX_LINE + 1])
            .unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOG)).unwrap();
        let entries: Vec<(String, Stream)> = text
            .lines()
            .map(|line| {
                let entry: Entry = serde_json::from_str(line).unwrap();
                (entry.log.into_owned(), entry.stream)
            })
            .collect();
        let long = "x".repeat(MAX_LINE);
        let expected = [
            ("one\n", Stream::Stdout),
            ("err\n", Stream::Stderr),
            ("two\n", Stream::Stdout),
            (long.as_str(), Stream::Stderr),
            ("end", Stream::Stdout),
            ("x", Stream::Stderr),
        ];
        let expected: Vec<(String, Stream)> =
            expected.iter().map(|(l, s)| (l.to_string(), *s)).collect();
        assert_eq!(entries, expected);
    }
}
