// @stage 9
//! Where networks live: `networks/` under the state root.
//!
//! ```text
//! networks/                        locked by whoever changes a network
//! networks/NAME/network.json       the Network
//! networks/NAME/addresses          its IPAM bitmap (ipam.rs)
//! networks/NAME/endpoints/ID.json  the Endpoint of container ID
//! ```
//!
//! One lock for all of them: two `run`s that connect at once, or a `run`
//! and a `network rm`, take turns. Each holds it for milliseconds.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv4Network;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ipam::Ipam;
use super::{bridge, driver, Endpoint, Network, DEFAULT, DEFAULT_BRIDGE};
use crate::container;
use crate::paths::Paths;

// ANCHOR: store
/// The networks, locked: while a `Store` lives, nobody else changes one.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    pub fn lock(paths: &Paths) -> Result<Store> {
        let dir = paths.networks();
        fs::create_dir_all(&dir)
            .with_context(|| format!("mkdir {}", dir.display()))?;
        // The directory itself is the lock: a lock file would be one
        // more file to leave behind, or to remove under someone's feet.
        let lock = container::lock_waiting(&dir)?;
        let store = Store { dir, _lock: lock };
        store.sweep();
        Ok(store)
    }

    /// [`Store::lock`], waiting for the lock whatever signal comes.
    pub fn lock_to_the_end(paths: &Paths) -> Result<Store> {
        let dir = paths.networks();
        let lock = container::lock(&dir, false, nix::libc::LOCK_EX)?;
        let store = Store { dir, _lock: lock };
        store.sweep();
        Ok(store)
    }
    // ANCHOR_END: store

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Network `name`, if there is one.
    pub fn network(&self, name: &str) -> Result<Option<Network>> {
        read_json(&self.path(name).join("network.json"))
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        all(&self.dir)
    }

    pub fn ipam(&self, network: &Network) -> Ipam {
        Ipam::new(&self.path(&network.name), network.subnet)
    }

    // ANCHOR: create
    /// Make `network` real and keep it: made aside as `.NAME.new`, then
    /// renamed into place, so that a `network create` killed half-way
    /// leaves nothing that looks like a network (the next sweep removes
    /// it, and its bridge).
    pub fn create(&self, network: &Network) -> Result<()> {
        if self.network(&network.name)?.is_some() {
            bail!("network {} exists already", network.name);
        }
        for other in self.networks()? {
            if other.subnet.overlaps(network.subnet) {
                bail!(
                    "subnet {} overlaps network {}'s, {}: \
                     a packet to one address would have two ways out",
                    network.subnet,
                    other.name,
                    other.subnet
                );
            }
        }
        let driver = driver(&network.driver)?;
        let new = self.dir.join(format!(".{}.new", network.name));
        let _ = fs::remove_dir_all(&new);
        fs::create_dir_all(new.join("endpoints"))
            .with_context(|| format!("mkdir {}", new.display()))?;
        write_json(&new.join("network.json"), network)?;
        Ipam::new(&new, network.subnet).create(network.gateway)?;
        // A driver that fails undoes its own work (a bridge of that name
        // that was there before is not ours to delete).
        if let Err(err) = driver.create(network) {
            let _ = fs::remove_dir_all(&new);
            return Err(err);
        }
        let made = bridge::enable_forwarding(&self.dir).and_then(|()| {
            let path = self.path(&network.name);
            fs::rename(&new, &path).with_context(|| {
                format!("rename {} to {}", new.display(), path.display())
            })
        });
        if let Err(err) = made {
            let _ = driver.delete(network);
            let _ = fs::remove_dir_all(&new);
            self.forget_forwarding();
            return Err(err);
        }
        Ok(())
    }
    // ANCHOR_END: create

    /// Make `network` again if the host has lost it: after a reboot, the
    /// files under `networks/` say it exists and the kernel has none of
    /// it (bridge, rules, ip_forward). Docker does the same at start-up.
    pub fn revive(&self, network: &Network) -> Result<()> {
        let driver = driver(&network.driver)?;
        if driver.exists(network)? {
            return Ok(());
        }
        // Whatever is left of it (rules, without their bridge) goes first.
        driver.delete(network)?;
        let made = driver
            .create(network)
            .and_then(|()| bridge::enable_forwarding(&self.dir));
        if let Err(err) = made {
            // Not half a network, which `exists` would take for whole.
            let _ = driver.delete(network);
            return Err(err).with_context(|| {
                format!("make network {} again", network.name)
            });
        }
        Ok(())
    }

    // ANCHOR: remove
    /// Undo `create`: the driver's things, then the files. The caller
    /// checked that no container uses it.
    pub fn remove(&self, network: &Network) -> Result<()> {
        driver(&network.driver)?.delete(network)?;
        let path = self.path(&network.name);
        let doomed = self.dir.join(format!(".{}.removing", network.name));
        fs::rename(&path, &doomed).with_context(|| {
            format!("rename {} to {}", path.display(), doomed.display())
        })?;
        fs::remove_dir_all(&doomed)
            .with_context(|| format!("remove {}", doomed.display()))?;
        self.forget_forwarding();
        Ok(())
    }
    // ANCHOR_END: remove

    /// The last network gone: IP forwarding as it was before the first.
    fn forget_forwarding(&self) {
        if self.networks().is_ok_and(|all| all.is_empty()) {
            if let Err(err) = bridge::restore_forwarding(&self.dir) {
                eprintln!("mydocker: warning: {err:#}");
            }
        }
    }

    /// What killed `network create`s and `network rm`s left behind.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let half = name.strip_prefix('.').and_then(|n| {
                n.strip_suffix(".new")
                    .or_else(|| n.strip_suffix(".removing"))
            });
            if half.is_none() {
                continue;
            }
            let json = entry.path().join("network.json");
            if let Ok(Some(network)) = read_json::<Network>(&json) {
                if let Ok(driver) = driver(&network.driver) {
                    let _ = driver.delete(&network);
                }
            }
            let _ = fs::remove_dir_all(entry.path());
            self.forget_forwarding();
        }
    }

    // ANCHOR: default_network
    /// The network `bridge`, made on first use, as Docker makes `docker0`:
    /// in the first private /16 that no route of this host and no other
    /// network uses, so that its addresses hide none the host reaches.
    pub fn default_network(&self) -> Result<Network> {
        if let Some(network) = self.network(DEFAULT)? {
            return Ok(network);
        }
        let taken: Vec<Ipv4Network> = routes()?
            .into_iter()
            .chain(self.networks()?.into_iter().map(|n| n.subnet))
            .collect();
        let free = candidates()
            .find(|subnet| !taken.iter().any(|t| t.overlaps(*subnet)))
            .context(
                "no private /16 is free for the default network: \
                 make one with `network create` and use --net",
            )?;
        let network = Network {
            name: DEFAULT.to_string(),
            driver: "bridge".to_string(),
            subnet: free,
            gateway: first_host(free),
            bridge: bridge::unused_name(DEFAULT_BRIDGE)?,
            created: SystemTime::now(),
        };
        self.create(&network)?;
        Ok(network)
    }
    // ANCHOR_END: default_network

    // ANCHOR: endpoints
    fn endpoint_path(&self, network: &str, container: &str) -> PathBuf {
        self.path(network)
            .join("endpoints")
            .join(format!("{container}.json"))
    }

    pub fn save_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let path = self.endpoint_path(&endpoint.network, &endpoint.container);
        write_json(&path, endpoint)
    }

    pub fn remove_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let path = self.endpoint_path(&endpoint.network, &endpoint.container);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != ErrorKind::NotFound => {
                Err(err).with_context(|| format!("remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The endpoints of container `id`, on every network (after a
    /// `kill -9`, the files are all that is left to say what it held).
    pub fn endpoints_of(&self, id: &str) -> Result<Vec<(Network, Endpoint)>> {
        let mut found = Vec::new();
        for network in self.networks()? {
            let path = self.endpoint_path(&network.name, id);
            match read_json(&path) {
                Ok(Some(endpoint)) => found.push((network, endpoint)),
                Ok(None) => {}
                // Damaged (a power cut before the disk had it): the reboot
                // took its veth and rules, and `allocate` takes its
                // address back once this file is gone.
                Err(err) => {
                    eprintln!("mydocker: warning: {err:#}: removed");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(found)
    }
    // ANCHOR_END: endpoints

    /// Every endpoint of every network.
    pub fn all_endpoints(&self) -> Result<Vec<Endpoint>> {
        let mut found = Vec::new();
        for network in self.networks()? {
            found.extend(endpoints(&self.dir, &network.name)?);
        }
        Ok(found)
    }
}

/// The networks, for readers (`network ls`): no lock, since every file
/// is replaced whole, by rename.
pub fn all(dir: &Path) -> Result<Vec<Network>> {
    let mut networks = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(networks),
        Err(err) => {
            return Err(err).with_context(|| format!("read {}", dir.display()))
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        if let Some(network) = read_json(&entry.path().join("network.json"))? {
            networks.push(network);
        }
    }
    networks.sort_by(|a: &Network, b| a.name.cmp(&b.name));
    Ok(networks)
}

/// The endpoints of network `name`, for readers too.
pub fn endpoints(dir: &Path, name: &str) -> Result<Vec<Endpoint>> {
    let dir = dir.join(name).join("endpoints");
    let mut found = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(found),
        Err(err) => {
            return Err(err).with_context(|| format!("read {}", dir.display()))
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            match read_json(&path) {
                Ok(Some(endpoint)) => found.push(endpoint),
                Ok(None) => {}
                // Damaged: its container's next `rm` removes it.
                Err(err) => eprintln!("mydocker: warning: {err:#}"),
            }
        }
    }
    found.sort_by_key(|e: &Endpoint| e.ip);
    Ok(found)
}

// ANCHOR: candidates
/// Where the default network may go: 172.17.0.0/16 to 172.31.0.0/16,
/// then 192.168.0.0/16, all private (RFC 1918), in Docker's order.
fn candidates() -> impl Iterator<Item = Ipv4Network> {
    let ranges = (17..=31).map(|b| Ipv4Addr::new(172, b, 0, 0));
    ranges
        .chain(std::iter::once(Ipv4Addr::new(192, 168, 0, 0)))
        .filter_map(|ip| Ipv4Network::new(ip, 16).ok())
}

/// The routes of this network namespace, from /proc/net/route (its
/// addresses in hex, in the kernel's byte order), but the default route,
/// which "overlaps" everything and hides nothing.
fn routes() -> Result<Vec<Ipv4Network>> {
    let table = fs::read_to_string("/proc/net/route")
        .context("read /proc/net/route")?;
    let hex = |field: &str| {
        u32::from_str_radix(field, 16).map(|n| Ipv4Addr::from(n.swap_bytes()))
    };
    let mut routes = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(mask)) = (fields.get(1), fields.get(7)) else {
            continue;
        };
        let (Ok(dest), Ok(mask)) = (hex(dest), hex(mask)) else {
            continue;
        };
        let prefix = u32::from(mask).leading_ones() as u8;
        if prefix > 0 {
            if let Ok(route) = Ipv4Network::new(dest, prefix) {
                routes.push(route);
            }
        }
    }
    Ok(routes)
}
// ANCHOR_END: candidates

/// The subnet's first address after its own: the gateway by default.
pub fn first_host(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// A JSON file, or None when it is not there.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(json) => serde_json::from_slice(&json)
            .with_context(|| format!("parse {}", path.display()))
            .map(Some),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(err) => {
            Err(err).with_context(|| format!("read {}", path.display()))
        }
    }
}

/// Replace a JSON file whole.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).context("serialize")?;
    write_whole(path, &json)
}

/// Replace a file whole: written to `PATH.tmp.PID` (named by its writer,
/// so two processes never share one), then renamed over `PATH`, so that a
/// reader sees the old content or the new, never half of one; no fsync, as
/// for records. (ipam.rs saves its bitmap the same way, on its own: it is a
/// file that bench/ipam compiles alone.)
pub fn write_whole(path: &Path, content: &[u8]) -> Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp.{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = fs::write(&temp, content)
        .with_context(|| format!("write {}", temp.display()))
        .and_then(|()| {
            fs::rename(&temp, path).with_context(|| {
                format!("rename {} to {}", temp.display(), path.display())
            })
        });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}
// @end
