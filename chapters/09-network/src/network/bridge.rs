//! The bridge driver: Docker's default, and ours.
//!
//! A network is a bridge device on the host (a virtual switch) with the
//! gateway's address. Each container is a veth pair (a virtual cable):
//! one end, `vethXXXX`, plugged into the bridge; the other end, `eth0`,
//! in the container's network namespace, with the container's address
//! and a default route through the gateway. The firewall does the rest:
//! NAT out to the world, and published ports in.

use std::fs;
use std::os::fd::BorrowedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::firewall::{Firewall, Iptables};
use super::netlink::Netlink;
use super::{mac_of, Driver, Endpoint, Network};

/// The container's end of each veth pair.
pub const CONTAINER_IF: &str = "eth0";

pub struct Bridge;

impl Driver for Bridge {
    // ANCHOR: create
    fn create(&self, network: &Network) -> Result<()> {
        let mut netlink = Netlink::open()?;
        let bridge = netlink.create_bridge(&network.bridge)?;
        // The gateway's address on the bridge: the host is the router
        // of the subnet, and the kernel adds the route to it.
        let prefix = network.subnet.prefix();
        netlink.add_address(bridge, network.gateway, prefix)?;
        netlink.set_up(bridge)?;
        // A packet from 127.0.0.1 may leave through the bridge: `-p` on
        // the host's 127.0.0.1 DNATs it to a container, and the kernel
        // drops a loopback source on any other interface, unless this.
        sysctl(
            &format!("net/ipv4/conf/{}/route_localnet", network.bridge),
            "1",
        )?;
        Iptables.add_network(network)
    }
    // ANCHOR_END: create

    fn delete(&self, network: &Network) -> Result<()> {
        Iptables.remove_network(network)?;
        Netlink::open()?.delete_link(&network.bridge)?;
        Ok(())
    }

    // ANCHOR: connect
    fn connect(
        &self,
        network: &Network,
        endpoint: &Endpoint,
        netns: BorrowedFd,
    ) -> Result<()> {
        let mut host = Netlink::open()?;
        let bridge = host.index(&network.bridge)?.with_context(|| {
            format!(
                "the bridge {} of network {} is gone: \
                 `network rm` it and make it again",
                network.bridge, network.name
            )
        })?;
        // One message makes both ends: ours here, `eth0` in the
        // container's namespace from the start.
        let veth = host.create_veth(&endpoint.veth, CONTAINER_IF, netns)?;
        host.set_master(veth, bridge)?;
        // Both ends take the bridge's MTU: a packet that fits one link of
        // the path must fit them all, or it is dropped on the way.
        let mtu = host.mtu(bridge)?;
        host.set_mtu(veth, mtu)?;
        host.set_up(veth)?;

        // The other end, configured from inside the container's namespace.
        let mut inside = Netlink::open_in(netns)?;
        let eth0 = inside
            .index(CONTAINER_IF)?
            .context("eth0 is not in the container")?;
        inside.set_mac(eth0, mac_of(endpoint.ip))?;
        inside.set_mtu(eth0, mtu)?;
        inside.add_address(eth0, endpoint.ip, network.subnet.prefix())?;
        inside.set_up(eth0)?;
        inside.add_default_route(network.gateway)?;
        if !endpoint.ports.is_empty() {
            Iptables.add_ports(network, endpoint)?;
        }
        Ok(())
    }
    // ANCHOR_END: connect

    // ANCHOR: disconnect
    fn disconnect(
        &self,
        _network: &Network,
        endpoint: &Endpoint,
    ) -> Result<()> {
        // Its rules, found by their comment: the endpoint's file is all
        // that is left of it after a kill -9. (None without -p: an
        // iptables command costs milliseconds.)
        if !endpoint.ports.is_empty() {
            Iptables.remove_ports(&endpoint.container)?;
        }
        // Gone already when the container's namespace died with its last
        // process: the kernel destroys a veth pair with either end.
        Netlink::open()?.delete_link(&endpoint.veth)?;
        Ok(())
    }
    // ANCHOR_END: disconnect
}

/// The first of `PREFIX0`, `PREFIX1`... that names no link of the host.
pub fn unused_name(prefix: &str) -> Result<String> {
    let mut netlink = Netlink::open()?;
    for n in 0..100 {
        let name = format!("{prefix}{n}");
        if netlink.index(&name)?.is_none() {
            return Ok(name);
        }
    }
    bail!("{prefix}0 to {prefix}99 all name links already")
}

// ANCHOR: forwarding
/// Packets from a container to the world cross the host from the bridge
/// to another interface: the host must route, which Linux does not do
/// unless asked (net.ipv4.ip_forward). What it was before is kept in
/// `networks/ip_forward`, to be put back when the last network goes.
pub fn enable_forwarding(dir: &Path) -> Result<()> {
    let saved = dir.join("ip_forward");
    let now = fs::read_to_string(PROC_IP_FORWARD)
        .with_context(|| format!("read {PROC_IP_FORWARD}"))?;
    if now.trim() == "1" {
        return Ok(());
    }
    if !saved.exists() {
        fs::write(&saved, now.trim())
            .with_context(|| format!("write {}", saved.display()))?;
    }
    sysctl("net/ipv4/ip_forward", "1")
}

pub fn restore_forwarding(dir: &Path) -> Result<()> {
    let saved = dir.join("ip_forward");
    let Ok(before) = fs::read_to_string(&saved) else {
        return Ok(()); // we did not change it
    };
    sysctl("net/ipv4/ip_forward", before.trim())?;
    fs::remove_file(&saved)
        .with_context(|| format!("remove {}", saved.display()))
}
// ANCHOR_END: forwarding

const PROC_IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Set a kernel parameter: `sysctl -w`, by hand.
fn sysctl(name: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{name}");
    fs::write(&path, value).with_context(|| format!("write {value} to {path}"))
}
