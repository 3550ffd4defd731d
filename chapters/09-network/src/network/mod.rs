//! Networks: Docker's container network model, in small pieces.
//!
//! - a `Network` is a name, a driver, a subnet and its gateway;
//! - an `Endpoint` is one container's place on a network: a veth pair,
//!   an address, a MAC, its published ports;
//! - a `Driver` makes networks and endpoints real: `bridge.rs`;
//! - the `Ipam` (ipam.rs) hands out the subnet's addresses;
//! - netlink.rs speaks rtnetlink to the kernel, as `ip` does;
//! - firewall.rs writes the NAT rules, ports.rs reads `-p`;
//! - store.rs keeps it all under `networks/`, locked;
//! - attach.rs puts a starting container on its network, and takes it
//!   off again; etc.rs writes its /etc/hosts and friends;
//! - commands.rs is `mydocker network ...`.

pub mod attach;
pub mod bridge;
pub mod commands;
pub mod etc;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod ports;
pub mod store;

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::time::SystemTime;

use anyhow::{bail, Result};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::container;
use crate::paths::Paths;
pub use attach::{attach, release, spawn_in};
use ports::PortMapping;

/// The network `run` joins without `--net`, and its bridge, as Docker's
/// `bridge` network and its `docker0`: `mydocker0`, or `mydocker1`... when
/// another state root (`--root`) has its default network on this host.
pub const DEFAULT: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "mydocker";

// ANCHOR: network
/// A network, as `network create` made it (`networks/NAME/network.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Network {
    pub name: String,
    /// The driver that makes it real: `bridge`.
    pub driver: String,
    pub subnet: Ipv4Network,
    /// The bridge's own address: the containers' default route.
    pub gateway: Ipv4Addr,
    /// The bridge device on the host: `mydocker0`, or `br-` and 12 hex.
    pub bridge: String,
    pub created: SystemTime,
}
// ANCHOR_END: network

// ANCHOR: endpoint
/// One container's place on a network
/// (`networks/NAME/endpoints/ID.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Endpoint {
    /// The container's full ID.
    pub container: String,
    pub network: String,
    /// The host's end of the veth pair; the container's is `eth0`.
    pub veth: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ports: Vec<PortMapping>,
}
// ANCHOR_END: endpoint

// ANCHOR: driver
/// What a network driver does: Docker's CNM's four calls, and `exists`.
pub trait Driver {
    /// Make the network real on the host (a bridge, its NAT).
    fn create(&self, network: &Network) -> Result<()>;
    /// Undo all that `create` made; fine if it is gone already.
    fn delete(&self, network: &Network) -> Result<()>;
    /// Is the network on the host? A reboot empties the kernel, not the
    /// files under `networks/`.
    fn exists(&self, network: &Network) -> Result<bool>;
    /// Put the container whose network namespace is `netns` on it.
    fn connect(
        &self,
        network: &Network,
        endpoint: &Endpoint,
        netns: BorrowedFd,
    ) -> Result<()>;
    /// Undo all that `connect` made; fine if it is gone already.
    fn disconnect(&self, network: &Network, endpoint: &Endpoint) -> Result<()>;
}

/// The driver called `name`. A second driver is one more line here, and
/// a file of its own: nothing else changes.
pub fn driver(name: &str) -> Result<Box<dyn Driver>> {
    match name {
        "bridge" => Ok(Box::new(bridge::Bridge)),
        other => bail!("unknown network driver {other:?}: mydocker has bridge"),
    }
}
// ANCHOR_END: driver

// ANCHOR: mode
/// What `--net` asked for: Docker's four network modes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A network namespace of its own, on network NAME: `bridge` (the
    /// default) or one that `network create` made.
    Network(String),
    /// A network namespace of its own with only `lo`. (A container
    /// recorded before networks existed had this.)
    #[default]
    None,
    /// No network namespace of its own: the host's, all of it.
    Host,
    /// The network namespace of container ID: its interfaces, its `lo`.
    Container(String),
}
// ANCHOR_END: mode

/// A container's networking, as its record keeps it for `start`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Settings {
    pub mode: Mode,
    pub ports: Vec<PortMapping>,
}

// ANCHOR: settings
/// `--net` and `-p`, read and checked before anything is made.
pub fn settings(
    paths: &Paths,
    net: &str,
    publish: &[String],
) -> Result<Settings> {
    let mode = match net {
        "none" => Mode::None,
        "host" => Mode::Host,
        _ => match net.strip_prefix("container:") {
            Some(name) => Mode::Container(container::find(paths, name)?),
            None => Mode::Network(net.to_string()),
        },
    };
    let ports = ports::parse_ports(publish)?;
    if !ports.is_empty() && !matches!(mode, Mode::Network(_)) {
        bail!(
            "-p publishes a port of the container's own network \
             namespace: not with --net {net}"
        );
    }
    if let Mode::Network(name) = &mode {
        if !is_name(name) {
            bail!(
                "--net {name:?}: not a network's name, \
                 nor none, host or container:NAME"
            );
        }
        let made = paths.networks().join(name).join("network.json");
        if name != DEFAULT && !made.exists() {
            bail!("network {name} not found: see `mydocker network ls`");
        }
    }
    Ok(Settings { mode, ports })
}
// ANCHOR_END: settings

/// Whether `name` may name a network: letters, digits and `_.-`,
/// nothing that would lead out of `networks/` (`..`, `/`).
pub fn is_name(name: &str) -> bool {
    let good = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(good)
}

/// `mac` as `ip link` shows it: 02:42:ac:11:00:02. Made of the address,
/// as Docker does: `02` is a locally administered unicast MAC, so it
/// never collides with a real card's, and two containers of one network
/// never share one, since they never share an address.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}
