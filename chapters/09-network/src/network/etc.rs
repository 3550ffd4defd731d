//! /etc/hostname, /etc/hosts and /etc/resolv.conf: who the container is
//! and where it asks for names.
//!
//! They depend on the run (its address), not on the image, so they are
//! the container's own files, in `containers/ID/`, bind-mounted by init
//! over the image's like volumes: what the container writes there never
//! lands in its layer, and `commit` never takes them.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{store, Mode};
use crate::paths::Paths;
use crate::record::Record;
use crate::volumes::Volume;

/// What a resolver falls back to when the host has only loopback ones,
/// as Docker does: Google's public servers.
const FALLBACK: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

// ANCHOR: write
/// Write the three files into the container's directory `dir`, and say
/// where init mounts them.
pub fn write(
    dir: &Path,
    hostname: &str,
    name: &str,
    mode: &Mode,
    ip: Option<Ipv4Addr>,
) -> Result<Vec<Volume>> {
    let hosts = match mode {
        // The host's network, the host's names.
        Mode::Host => read("/etc/hosts")?,
        _ => hosts(hostname, name, ip),
    };
    let resolv = match mode {
        // Its 127.0.0.53 is reachable from the host's namespace only.
        Mode::Host => read("/etc/resolv.conf")?,
        _ => resolv_conf()?,
    };
    let files = [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ];
    let mut volumes = Vec::new();
    for (file, content) in files {
        let source = dir.join(file);
        // Whole or not at all, as every file of the container's (stage 7).
        store::write_whole(&source, content.as_bytes())?;
        volumes.push(Volume {
            source,
            target: PathBuf::from("/etc").join(file),
            read_only: false,
        });
    }
    Ok(volumes)
}
// ANCHOR_END: write

// ANCHOR: hosts
/// localhost, and the container's own name and address.
fn hosts(hostname: &str, name: &str, ip: Option<Ipv4Addr>) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = ip {
        hosts.push_str(&format!("{ip}\t{hostname} {name}\n"));
    }
    hosts
}

/// The host's resolvers, but those on loopback: 127.0.0.53 in the
/// container is the container's own `lo`, where nothing answers.
/// (systemd-resolved's stub at 127.0.0.53 keeps the real ones in
/// /run/systemd/resolve/resolv.conf: Docker reads that one then.)
fn resolv_conf() -> Result<String> {
    let mut conf = without_loopback(&read("/etc/resolv.conf")?);
    let real = "/run/systemd/resolve/resolv.conf";
    if !has_nameserver(&conf) && Path::new(real).exists() {
        conf = without_loopback(&read(real)?);
    }
    if !has_nameserver(&conf) {
        conf.push_str(FALLBACK);
    }
    Ok(conf)
}

fn without_loopback(conf: &str) -> String {
    conf.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            let server = (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten();
            !server.is_some_and(|s| s.starts_with("127.") || s == "::1")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}
// ANCHOR_END: hosts

// ANCHOR: mount_points
/// The files that init made in container `id`'s layer, as mount points
/// for ours, because its image had none: `commit` leaves them out, so
/// that an image never gets an empty /etc/hostname of ours. (Where the
/// image has one, the layer has the image's, untouched: the container
/// only ever wrote to the file mounted over it.)
pub fn mount_points_made(paths: &Paths, id: &str) -> Result<Vec<PathBuf>> {
    let dir = paths.container(id);
    let record = Record::load(&dir)?;
    let image = dir.join(&record.config.lower);
    let mut made = Vec::new();
    for file in &record.config.etc {
        let relative = file.target.strip_prefix("/").unwrap_or(&file.target);
        if image.join(relative).symlink_metadata().is_err() {
            made.push(relative.to_path_buf());
        }
    }
    Ok(made)
}
// ANCHOR_END: mount_points

fn has_nameserver(conf: &str) -> bool {
    conf.lines()
        .any(|l| l.trim_start().starts_with("nameserver"))
}

/// A host file, or nothing if the host has none.
fn read(path: &str) -> Result<String> {
    match fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(String::new())
        }
        read => read.with_context(|| format!("read {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped_and_others_kept() {
        let conf = "search lan\nnameserver 127.0.0.53\nnameserver ::1\n\
                    nameserver 10.0.0.1\noptions edns0\n";
        assert_eq!(
            without_loopback(conf),
            "search lan\nnameserver 10.0.0.1\noptions edns0\n"
        );
    }

    #[test]
    fn hosts_names_the_container_at_its_address() {
        let ip = Some(Ipv4Addr::new(172, 17, 0, 2));
        assert!(hosts("abc", "web", ip).ends_with("172.17.0.2\tabc web\n"));
        assert!(!hosts("abc", "web", None).contains("abc"));
    }
}
