// @stage 9
//! A container on its network: where it is cloned, what `run` connects
//! before the command starts, and what is released when it stops.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;

use super::netlink::Netlink;
use super::ports::PortMapping;
use super::store::Store;
use super::{
    driver, etc, mac_of, mac_string, Endpoint, Mode, Network, DEFAULT,
};
use crate::container;
use crate::paths::Paths;
use crate::process::Process;
use crate::record::{Record, State};

// ANCHOR: spawn_in
/// Create the container's first process with `spawn`, in the network
/// namespace its mode asks for: a new one (`spawn(true)`), the host's,
/// or another container's. For that one, we step into it ourselves for
/// the clone, since a child starts in its parent's namespaces; then we
/// step back. (setns is allowed: mydocker has a single thread.)
pub fn spawn_in<T>(
    paths: &Paths,
    mode: &Mode,
    spawn: impl FnOnce(bool) -> Result<T>,
) -> Result<T> {
    match mode {
        Mode::Network(_) | Mode::None => spawn(true),
        Mode::Host => spawn(false),
        Mode::Container(id) => {
            let theirs = netns_of_container(paths, id)?;
            let ours = File::open("/proc/self/ns/net")
                .context("open /proc/self/ns/net")?;
            setns(theirs.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns(net of container {id})"))?;
            let spawned = spawn(false);
            setns(ours.as_fd(), CloneFlags::CLONE_NEWNET)
                .context("setns(our own net namespace)")?;
            spawned
        }
    }
}
// ANCHOR_END: spawn_in

/// The network namespace of running container `id`, opened through its
/// PID 1, checked to be that process still (see process.rs).
fn netns_of_container(paths: &Paths, id: &str) -> Result<OwnedFd> {
    let not_running = || {
        anyhow!(
            "--net container:{}: that container is not running",
            crate::id::short(id)
        )
    };
    if !container::is_running(paths, id)? {
        return Err(not_running());
    }
    let record =
        Record::load_if_there(&paths.container(id))?.ok_or_else(not_running)?;
    let (State::Running, Some(pid), Some(started)) =
        (record.state, record.pid, record.pid_started)
    else {
        return Err(not_running());
    };
    let process = Process::verified(pid, started)?.ok_or_else(not_running)?;
    let path = format!("/proc/{pid}/ns/net");
    let netns = File::open(&path).with_context(|| format!("open {path}"))?;
    // Opened while the process still ran: it was its namespace.
    if !process.alive()? {
        return Err(not_running());
    }
    Ok(netns.into())
}

// ANCHOR: attached
/// A container's hold on its network, from `attach` until it stops:
/// dropping it releases the endpoint (whichever way `run` ends).
pub struct Attached {
    paths: Paths,
    container: String,
    released: bool,
}

impl Attached {
    /// Take the container off its network: its rules, its veth, its
    /// address, its endpoint file.
    pub fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        release(&self.paths, &self.container)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(err) = self.release() {
            eprintln!("mydocker: warning: {err:#}");
        }
    }
}
// ANCHOR_END: attached

// ANCHOR: attach
/// Everything about the network between clone and the command's start,
/// while init waits for its orders: `lo` up, the endpoint on its network,
/// and the files that tell the command its name and address.
pub fn attach(
    paths: &Paths,
    record: &mut Record,
    child: Pid,
) -> Result<Attached> {
    let path = format!("/proc/{child}/ns/net");
    let netns = File::open(&path).with_context(|| format!("open {path}"))?;
    let mut attached = Attached {
        paths: paths.clone(),
        container: record.id.clone(),
        released: false,
    };
    let mode = record.net.mode.clone();
    let mut ip = None;
    if let Mode::Network(_) | Mode::None = mode {
        // A new namespace's loopback is down: `localhost` would not work.
        let mut inside = Netlink::open_in(netns.as_fd())?;
        let lo = inside.index("lo")?.context("no lo in the container")?;
        inside.set_up(lo)?;
    }
    if let Mode::Network(name) = &mode {
        let endpoint = connect(paths, record, name, netns.as_fd())?;
        ip = Some(endpoint.ip);
    }
    if let Mode::Container(id) = &mode {
        ip = address_of(paths, id)?;
    }
    let dir = paths.container(&record.id);
    record.config.etc =
        etc::write(&dir, &record.config.hostname, &record.name, &mode, ip)?;
    attached.released = !matches!(mode, Mode::Network(_));
    Ok(attached)
}
// ANCHOR_END: attach

// ANCHOR: connect
/// Put container `record` on network `name`, under the store's lock: an
/// address from the IPAM, the endpoint's file, then the driver's work.
/// On failure, all of it is undone.
fn connect(
    paths: &Paths,
    record: &Record,
    name: &str,
    netns: std::os::fd::BorrowedFd,
) -> Result<Endpoint> {
    let store = Store::lock(paths)?;
    let network = match store.network(name)? {
        Some(network) => network,
        None if name == DEFAULT => store.default_network()?,
        None => bail!("network {name} not found: see `mydocker network ls`"),
    };
    check_ports_free(&store, &record.net.ports)?;
    let ip = allocate(&store, &network)
        .with_context(|| format!("network {name}"))?;
    let endpoint = Endpoint {
        container: record.id.clone(),
        network: network.name.clone(),
        veth: veth_name(&record.id),
        ip,
        mac: mac_string(mac_of(ip)),
        ports: record.net.ports.clone(),
    };
    let driver = driver(&network.driver)?;
    let connected = store
        .save_endpoint(&endpoint)
        .and_then(|()| driver.connect(&network, &endpoint, netns));
    if let Err(err) = connected {
        let _ = driver.disconnect(&network, &endpoint);
        let _ = store.ipam(&network).release(ip);
        let _ = store.remove_endpoint(&endpoint);
        return Err(err);
    }
    Ok(endpoint)
}
// ANCHOR_END: connect

/// An address of `network`. When none is left, first take back those that
/// no endpoint holds: a `run` killed between the allocation and the
/// endpoint's file leaves one. (We hold the lock: nobody is between the
/// two now.)
fn allocate(store: &Store, network: &Network) -> Result<Ipv4Addr> {
    let ipam = store.ipam(network);
    match ipam.allocate() {
        Ok(ip) => Ok(ip),
        Err(full) => {
            let endpoints = store.all_endpoints()?;
            let held: Vec<Ipv4Addr> = endpoints
                .iter()
                .filter(|e| e.network == network.name)
                .map(|e| e.ip)
                .collect();
            let mut freed = false;
            for ip in ipam.allocated(network.gateway)? {
                if !held.contains(&ip) {
                    freed |= ipam.release(ip)?;
                }
            }
            if !freed {
                return Err(full);
            }
            ipam.allocate()
        }
    }
}

/// A host port goes to one container only: the first DNAT rule would
/// win, and the second container would never hear of its port.
fn check_ports_free(store: &Store, ports: &[PortMapping]) -> Result<()> {
    for endpoint in store.all_endpoints()? {
        for theirs in &endpoint.ports {
            if let Some(ours) = ports.iter().find(|p| p.overlaps(theirs)) {
                bail!(
                    "port {}/{} is already published by container {}",
                    ours.host_port,
                    ours.protocol,
                    crate::id::short(&endpoint.container)
                );
            }
        }
    }
    Ok(())
}

// ANCHOR: release
/// Take container `id` off every network it is on: its monitor does it
/// when it stops, and `rm -f` or the next `run` after a `kill -9`, from
/// the endpoint files, which are all that is left to say what it held.
pub fn release(paths: &Paths, id: &str) -> Result<()> {
    let Ok(true) = paths.networks().try_exists() else {
        return Ok(()); // no network was ever made
    };
    let store = Store::lock(paths)?;
    for (network, endpoint) in store.endpoints_of(id)? {
        driver(&network.driver)?.disconnect(&network, &endpoint)?;
        store.ipam(&network).release(endpoint.ip)?;
        store.remove_endpoint(&endpoint)?;
    }
    Ok(())
}
// ANCHOR_END: release

/// The host's end of container `id`'s veth pair: `veth` and the start of
/// its ID, within the 15 characters an interface name may have.
fn veth_name(id: &str) -> String {
    format!("veth{}", &id[..11.min(id.len())])
}

/// The address of container `id`, if it has one on a network.
fn address_of(paths: &Paths, id: &str) -> Result<Option<Ipv4Addr>> {
    let store = Store::lock(paths)?;
    Ok(store.endpoints_of(id)?.first().map(|(_, e)| e.ip))
}
// @end
