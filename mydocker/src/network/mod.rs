// @stage 9
//! Networks: Docker's container network model, in small pieces.
//!
//! - a `Network` (mod.rs) is a name, a driver, a subnet and its gateway;
//! - an `Endpoint` (mod.rs) is one container's place on it: a veth pair,
//!   an address, a MAC, its published ports;
//! - a `Driver` makes networks and endpoints real: `bridge.rs`;
//! - the `Ipam` (ipam.rs) hands out the subnet's addresses;
//! - netlink.rs speaks rtnetlink to the kernel, as `ip` does;
//! - firewall.rs writes the NAT rules, ports.rs reads `-p`.

// The pieces are written in parallel; allowed until they are wired up.
#![allow(dead_code)]

pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod ports;

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::time::SystemTime;

use anyhow::Result;
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use ports::PortMapping;

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
/// What a network driver does: Docker's CNM, in four calls.
pub trait Driver {
    /// Make the network real on the host (a bridge, its NAT).
    fn create(&self, network: &Network) -> Result<()>;
    /// Undo all that `create` made; fine if it is gone already.
    fn delete(&self, network: &Network) -> Result<()>;
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
// ANCHOR_END: driver
// @end
