//! `mydocker network create | ls | inspect | rm`.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv4Network;
use serde_json::json;

use super::store::{self, Store};
use super::{driver, is_name, Mode, Network};
use crate::cli::NetworkCommand;
use crate::container;
use crate::id;
use crate::lifecycle::{root_only, say};
use crate::paths::Paths;
use crate::record::Record;

pub fn command(command: NetworkCommand, paths: &Paths) -> Result<i32> {
    match command {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            name,
        } => create(paths, &driver, &subnet, gateway.as_deref(), &name),
        NetworkCommand::Ls { quiet } => ls(paths, quiet),
        NetworkCommand::Inspect { names } => inspect(paths, &names),
        NetworkCommand::Rm { names } => rm(paths, &names),
    }
}

// ANCHOR: create
/// `network create [--driver bridge] --subnet CIDR [--gateway IP] NAME`
fn create(
    paths: &Paths,
    driver_name: &str,
    subnet: &str,
    gateway: Option<&str>,
    name: &str,
) -> Result<i32> {
    root_only()?;
    check_name(name)?;
    driver(driver_name)?;
    let subnet = parse_subnet(subnet)?;
    let gateway = match gateway {
        Some(gateway) => parse_gateway(gateway, subnet)?,
        None => store::first_host(subnet),
    };
    let network = Network {
        name: name.to_string(),
        driver: driver_name.to_string(),
        subnet,
        gateway,
        // Docker's way: `br-` and the start of a random ID, within the
        // 15 characters of an interface name whatever the network's name.
        bridge: format!("br-{}", &id::new_id()[..12]),
        created: SystemTime::now(),
    };
    paths.create_root()?;
    Store::lock(paths)?.create(&network)?;
    say(name);
    Ok(0)
}
// ANCHOR_END: create

/// A name for files and messages: letters, digits, `_.-`; not one of
/// `--net`'s own words.
fn check_name(name: &str) -> Result<()> {
    if !is_name(name) {
        bail!(
            "invalid network name {name:?}: use letters, digits and _.- \
             (starting with a letter or digit, at most 64)"
        );
    }
    if ["bridge", "none", "host"].contains(&name) {
        bail!("network name {name} is reserved for `run --net {name}`");
    }
    Ok(())
}

// ANCHOR: parse_subnet
/// `--subnet 172.30.0.0/16`: a network address and a prefix between 8
/// and 30. A /31 or /32 has no room for a gateway and a container.
fn parse_subnet(text: &str) -> Result<Ipv4Network> {
    let subnet: Ipv4Network = text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--subnet {text:?}: not an IPv4 subnet in CIDR form, \
             like 172.30.0.0/16"
        )
    })?;
    if !(8..=30).contains(&subnet.prefix()) {
        bail!(
            "--subnet {text}: the prefix must be between /8 and /30 \
             (a /30 holds one container)"
        );
    }
    if subnet.ip() != subnet.network() {
        bail!(
            "--subnet {text}: not the network's first address: \
             did you mean {}/{}?",
            subnet.network(),
            subnet.prefix()
        );
    }
    Ok(subnet)
}
// ANCHOR_END: parse_subnet

fn parse_gateway(text: &str, subnet: Ipv4Network) -> Result<Ipv4Addr> {
    let gateway: Ipv4Addr = text.parse().map_err(|_| {
        anyhow::anyhow!("--gateway {text:?}: not an IPv4 address")
    })?;
    if !subnet.contains(gateway)
        || gateway == subnet.network()
        || gateway == subnet.broadcast()
    {
        bail!("--gateway {text}: not a host address of {subnet}");
    }
    Ok(gateway)
}

// ANCHOR: ls
/// `network ls [-q]`
fn ls(paths: &Paths, quiet: bool) -> Result<i32> {
    let networks = store::all(&paths.networks())?;
    if quiet {
        for network in networks {
            say(&network.name);
        }
        return Ok(0);
    }
    say(&format!(
        "{:<20} {:<8} {:<18} {}",
        "NAME", "DRIVER", "SUBNET", "GATEWAY"
    ));
    for n in networks {
        say(&format!(
            "{:<20} {:<8} {:<18} {}",
            n.name,
            n.driver,
            n.subnet.to_string(),
            n.gateway
        ));
    }
    Ok(0)
}
// ANCHOR_END: ls

// ANCHOR: inspect
/// `network inspect NAME...`: each network and its containers, as JSON.
fn inspect(paths: &Paths, names: &[String]) -> Result<i32> {
    let mut shown = Vec::new();
    for name in names {
        let all = store::all(&paths.networks())?;
        let Some(network) = all.into_iter().find(|n| &n.name == name) else {
            bail!("no such network: {name}");
        };
        let mut endpoints = Vec::new();
        for e in store::endpoints(&paths.networks(), name)? {
            let record = Record::load_if_there(&paths.container(&e.container));
            let container = record.ok().flatten().map(|r| r.name);
            let ports: Vec<String> =
                e.ports.iter().map(ToString::to_string).collect();
            endpoints.push(json!({
                "container": e.container,
                "name": container,
                "ip": e.ip,
                "mac": e.mac,
                "veth": e.veth,
                "ports": ports,
            }));
        }
        shown.push(json!({
            "name": network.name,
            "driver": network.driver,
            "subnet": network.subnet.to_string(),
            "gateway": network.gateway,
            "bridge": network.bridge,
            "endpoints": endpoints,
        }));
    }
    let json =
        serde_json::to_string_pretty(&shown).context("serialize networks")?;
    say(&json);
    Ok(0)
}
// ANCHOR_END: inspect

// ANCHOR: rm
/// `network rm NAME...`: refused while a container uses it, running or
/// not (a stopped one would not start again without it).
fn rm(paths: &Paths, names: &[String]) -> Result<i32> {
    root_only()?;
    let mut failed = 0;
    for name in names {
        match remove(paths, name) {
            Ok(()) => say(name),
            Err(err) => {
                eprintln!("mydocker: {err:#}");
                failed = 125;
            }
        }
    }
    Ok(failed)
}

fn remove(paths: &Paths, name: &str) -> Result<()> {
    let store = Store::lock(paths)?;
    let Some(network) = store.network(name)? else {
        bail!("no such network: {name}");
    };
    let users = users_of(paths, name)?;
    if !users.is_empty() {
        bail!(
            "network {name} is in use by container(s) {}: remove them first",
            users.join(", ")
        );
    }
    store.remove(&network)
}

/// The names of the containers whose `--net` is network `name`.
fn users_of(paths: &Paths, name: &str) -> Result<Vec<String>> {
    let mine = Mode::Network(name.to_string());
    let mut users = Vec::new();
    for id in container::all(paths)? {
        if let Some(record) = Record::load_if_there(&paths.container(&id))? {
            if record.net.mode == mine {
                users.push(record.name);
            }
        }
    }
    Ok(users)
}
// ANCHOR_END: rm
