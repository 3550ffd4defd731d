//! `-v HOST:CTR[:ro|:rw]`, read and checked before anything is made: a bad
//! volume must leave nothing behind, not even a directory on the host.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

// ANCHOR: spec
/// One `-v`, checked.
#[derive(Debug, PartialEq)]
pub struct Spec {
    pub host: Host,
    /// Absolute and plain: no `.`, no `..`, no `//`.
    pub target: PathBuf,
    pub read_only: bool,
}

/// The host's side of a volume.
#[derive(Debug, PartialEq)]
pub enum Host {
    /// `/srv/db`: a path on the host.
    Path(PathBuf),
    /// `db`: a named volume, kept under the state root.
    Named(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Host::Path(path) => write!(f, "{}", path.display()),
            Host::Named(name) => write!(f, "{name}"),
        }
    }
}
// ANCHOR_END: spec

// ANCHOR: parse_all
/// Every `-v` of a `run`, in the order they are mounted: a volume inside
/// another (`/data/logs` in `/data`) comes after it, or the mount of
/// `/data` would hide it.
pub fn parse_all(specs: &[String]) -> Result<Vec<Spec>> {
    let mut parsed = specs
        .iter()
        .map(|spec| parse(spec))
        .collect::<Result<Vec<_>>>()?;
    // Paths compare component by component: /data < /data/logs < /data2.
    parsed.sort_by(|a, b| a.target.cmp(&b.target));
    if let Some(twice) = parsed.windows(2).find(|w| w[0].target == w[1].target)
    {
        bail!("two volumes on {}", twice[0].target.display());
    }
    Ok(parsed)
}
// ANCHOR_END: parse_all

// ANCHOR: parse
/// Read `HOST:CTR`, `HOST:CTR:ro` or `HOST:CTR:rw`.
pub fn parse(spec: &str) -> Result<Spec> {
    let invalid = |why: &str| anyhow::anyhow!("invalid volume {spec:?}: {why}");
    let form = "expected HOST:PATH, HOST:PATH:ro or HOST:PATH:rw";
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, mode) = match parts[..] {
        [host, target] => (host, target, "rw"),
        [host, target, mode] => (host, target, mode),
        _ => return Err(invalid(form)),
    };
    if host.is_empty() || target.is_empty() {
        return Err(invalid(&format!("a side is empty ({form})")));
    }
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => {
            return Err(invalid(&format!("unknown mode {other:?} (ro or rw)")))
        }
    };
    Ok(Spec {
        host: host_side(host).map_err(|why| invalid(&why))?,
        target: container_side(target).map_err(|why| invalid(&why))?,
        read_only,
    })
}
// ANCHOR_END: parse

// ANCHOR: host_side
/// An absolute path is the host's; anything else must be a volume name.
fn host_side(host: &str) -> Result<Host, String> {
    if host.starts_with('/') {
        return Ok(Host::Path(clean(Path::new(host))));
    }
    if is_volume_name(host) {
        return Ok(Host::Named(host.to_string()));
    }
    Err(format!(
        "{host} is neither an absolute host path nor a volume name \
         ([a-zA-Z0-9][a-zA-Z0-9_.-]+, 2 to 255 characters)"
    ))
}

/// The host's path as Docker reads it: `.` and `..` are taken away by
/// their text (`/srv/a/../b` is `/srv/b`), so nothing is made for them.
/// On the host's side, the user's own path: its symlinks are followed.
fn clean(path: &Path) -> PathBuf {
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean
}

/// Docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: a name is one plain path
/// component, never `.`, `..` or anything with a `/`; and one that a
/// file name can hold (255 bytes).
pub fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && (2..=255).contains(&name.len())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}
// ANCHOR_END: host_side

// ANCHOR: container_side
/// The path in the container, made plain: `/data/./logs//` is
/// `/data/logs`. `..` is refused, not resolved: what it leads to depends on
/// symlinks that only the container's root can tell (resolve.rs).
fn container_side(target: &str) -> Result<PathBuf, String> {
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(format!("{target} is not an absolute path"));
    }
    // PATH_MAX: a longer path could be checked, never opened.
    if target.len() >= 4096 {
        return Err("the container path is longer than 4095 bytes".into());
    }
    let mut plain = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => plain.push(name),
            Component::ParentDir => return Err(format!("{target} has '..'")),
            _ => {} // `/` and `.`
        }
    }
    if plain == Path::new("/") {
        return Err("a volume cannot cover the container's /".to_string());
    }
    // The kernel's files: a volume there could cover what programs trust
    // /proc to tell them (runc's CVE-2019-16884 covered /proc/self/attr).
    if plain.starts_with("/proc") {
        return Err(format!("{target} is in /proc, the kernel's"));
    }
    Ok(plain)
}
// ANCHOR_END: container_side

#[cfg(test)]
mod tests {
    use super::*;

    fn path(host: &str, target: &str, read_only: bool) -> Spec {
        Spec {
            host: Host::Path(host.into()),
            target: target.into(),
            read_only,
        }
    }

    #[test]
    fn reads_every_form() {
        assert_eq!(parse("/a:/b").unwrap(), path("/a", "/b", false));
        assert_eq!(parse("/a:/b:ro").unwrap(), path("/a", "/b", true));
        assert_eq!(parse("/a:/b/./c//:rw").unwrap(), path("/a", "/b/c", false));
        assert_eq!(parse("/a/./b/../c:/d").unwrap(), path("/a/c", "/d", false));
        let named = parse("db.1:/var/lib/db").unwrap();
        assert_eq!(named.host, Host::Named("db.1".into()));
    }

    #[test]
    fn refuses_what_is_wrong() {
        for bad in [
            "",
            "/a",
            ":/b",
            "/a:",
            "/a:b",
            "/a:/",
            "/a://",
            "/a:/b/../c",
            "/a:/b:rx",
            "/a:/b:",
            "/a:/b:ro:x",
            "a/b:/c",
            "./a:/c",
            "x:/c",
            "-x:/c",
            ".x:/c",
            "..:/c",
            "/a:/proc",
            "/a:/proc/sys",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse("/a:/procs").is_ok());
    }

    #[test]
    fn sorts_parents_first_and_refuses_twice_the_same_target() {
        let specs =
            ["/a:/data/logs", "/b:/data", "/c:/data2"].map(String::from);
        let targets: Vec<_> = parse_all(&specs)
            .unwrap()
            .into_iter()
            .map(|spec| spec.target)
            .collect();
        assert_eq!(
            targets,
            ["/data", "/data/logs", "/data2"].map(PathBuf::from)
        );
        let twice = ["/a:/data", "/b:/data/"].map(String::from);
        assert!(parse_all(&twice).is_err());
    }
}
