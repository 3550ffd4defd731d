//! Per-block options: `<!-- transcript: ... -->` right before a console
//! fence. The syntax is documented at the top of the book module.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::normalize::Class;

/// How long one command may take unless a block says `timeout=SECONDS`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The options of one console block.
#[derive(Debug, Clone)]
pub struct Options {
    /// `not run: REASON`: the block is shown but not run.
    pub not_run: Option<String>,
    /// `vary=pids,numbers`: extra wildcard classes.
    pub vary: Vec<Class>,
    /// `re='REGEX'`: what matches compares equal on both sides.
    pub patterns: Vec<Regex>,
    /// `timeout=SECONDS`: the limit for each command of the block.
    pub timeout: Duration,
    /// `fresh`: start over as at the page's first block: a new shell, empty
    /// scratch directories.
    pub fresh: bool,
    /// `user=nobody`: the block runs in a shell of its own as `nobody`.
    pub nobody: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            not_run: None,
            vary: Vec::new(),
            patterns: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            fresh: false,
            nobody: false,
        }
    }
}

/// The comment's marker: `<!-- transcript: OPTIONS -->`.
pub const MARKER: &str = "transcript:";

/// Parse the text between `transcript:` and `-->` into `options`. Several
/// annotations before one block add up.
pub fn parse(text: &str, options: &mut Options) -> Result<()> {
    let text = text.trim();
    if let Some(reason) = text.strip_prefix("not run") {
        let reason = reason.trim_start();
        let Some(reason) = reason.strip_prefix(':') else {
            bail!("`not run` needs a reason: `<!-- transcript: not run: REASON -->`");
        };
        let reason = reason.trim();
        if reason.is_empty() {
            bail!("`not run:` needs a reason after the colon");
        }
        options.not_run = Some(reason.to_string());
        return Ok(());
    }
    for (key, value) in words(text)? {
        match (key.as_str(), value) {
            ("fresh", None) => options.fresh = true,
            ("user", Some(user)) if user == "nobody" => options.nobody = true,
            ("user", Some(user)) => {
                bail!("user={user}: only user=nobody is supported (uid and gid 65534)")
            }
            ("timeout", Some(seconds)) => {
                let n: u64 =
                    seconds.parse().ok().filter(|n| *n > 0).with_context(|| {
                        format!("timeout={seconds}: expected seconds, e.g. 120")
                    })?;
                options.timeout = Duration::from_secs(n);
            }
            ("vary", Some(classes)) => {
                for name in classes.split(',') {
                    options.vary.push(Class::parse(name.trim())?);
                }
            }
            ("re", Some(pattern)) => {
                let regex = Regex::new(&pattern)
                    .with_context(|| format!("re='{pattern}': not a valid regex"))?;
                options.patterns.push(regex);
            }
            (key, _) => bail!(
                "unknown option {key:?}: expected vary=CLASS,..., re='REGEX', \
                 timeout=SECONDS, fresh, user=nobody or `not run: REASON`"
            ),
        }
    }
    Ok(())
}

/// Split `a=b c='d e' f` into keys and optional values; a value may be
/// quoted with `'` or `"` (no escapes: pick the other quote).
fn words(text: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut found = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_string();
        rest = &rest[key_end..];
        let value = if let Some(after) = rest.strip_prefix('=') {
            if let Some(quote) = after.chars().next().filter(|c| *c == '\'' || *c == '"') {
                let body = &after[1..];
                let end = body
                    .find(quote)
                    .with_context(|| format!("{key}={quote}...: the quote is not closed"))?;
                rest = &body[end + 1..];
                Some(body[..end].to_string())
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                rest = &after[end..];
                Some(after[..end].to_string())
            }
        } else {
            None
        };
        if key.is_empty() {
            bail!("expected an option name, found {rest:?}");
        }
        found.push((key, value));
        rest = rest.trim_start();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<Options> {
        let mut options = Options::default();
        parse(text, &mut options)?;
        Ok(options)
    }

    #[test]
    fn parses_every_option() {
        let o = options("vary=pids,inodes timeout=120 fresh user=nobody re='\\d+ kB'").unwrap();
        assert_eq!(o.vary, vec![Class::Pids, Class::Inodes]);
        assert_eq!(o.timeout, Duration::from_secs(120));
        assert!(o.fresh && o.nobody && o.not_run.is_none());
        assert_eq!(o.patterns[0].as_str(), "\\d+ kB");
        let o = options("re=\"it's [0-9]+\"").unwrap();
        assert_eq!(o.patterns[0].as_str(), "it's [0-9]+");
    }

    #[test]
    fn not_run_needs_a_reason() {
        let o = options("not run: needs a VM (vagrant)").unwrap();
        assert_eq!(o.not_run.as_deref(), Some("needs a VM (vagrant)"));
        assert!(options("not run").is_err());
        assert!(options("not run:   ").is_err());
    }

    #[test]
    fn rejects_mistakes() {
        assert!(options("vary=pid").is_err());
        assert!(options("timeout=soon").is_err());
        assert!(options("timeout=0").is_err());
        assert!(options("user=alice").is_err());
        assert!(options("fressh").is_err());
        assert!(options("re='(unclosed'").is_err());
        assert!(options("re='no end").is_err());
    }
}
