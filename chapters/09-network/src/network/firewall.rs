//! The firewall: the rules that let a network's containers out (NAT) and
//! let the world in to their published ports (DNAT).
//!
//! Callers see only the `Firewall` trait. `Iptables` implements it with
//! the `iptables` command: here iptables-nft, iptables' language written
//! into the kernel's nf_tables. An implementation that speaks nftables
//! itself (the `nft` command, or netlink) could replace it, and no caller
//! would change.
//!
//! ```text
//! table   built-in chain             mydocker's chain       its rules
//! nat     PREROUTING  (dst: host) -> MYDOCKER              DNAT per port
//!         OUTPUT      (dst: host) -> MYDOCKER
//!         POSTROUTING             -> MYDOCKER-POSTROUTING  MASQUERADE
//! filter  FORWARD                 -> MYDOCKER-FORWARD      ACCEPT
//! ```
//!
//! PREROUTING sees the packets that come from other hosts, OUTPUT those
//! that the host sends itself: both are needed for a published port to
//! answer everywhere, on 127.0.0.1 too.
//!
//! Every rule carries a comment that says who needs it: `mydocker:ID`
//! (a container's ports), `mydocker-network:NAME` (a network), `mydocker`
//! (the jumps). Removing needs no record of what was added: list the
//! table, delete the rules with that comment. So it works after a
//! `kill -9`, from nothing but a container's ID or a network's name.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::network::{Endpoint, Network};

// ANCHOR: firewall
/// What networks need of the host's firewall.
pub trait Firewall {
    /// Let the network's containers out, masqueraded as the host.
    fn add_network(&self, network: &Network) -> Result<()>;
    /// Remove the network's rules; with the last network, all that is
    /// left of mydocker. Fine if it is gone already.
    fn remove_network(&self, network: &Network) -> Result<()>;
    /// Publish the endpoint's ports (`-p`).
    fn add_ports(&self, network: &Network, endpoint: &Endpoint) -> Result<()>;
    /// Remove the port rules of container `container` (its full ID).
    /// Fine if there are none.
    fn remove_ports(&self, container: &str) -> Result<()>;
}
// ANCHOR_END: firewall

/// The firewall, as the `iptables` command writes it.
pub struct Iptables;

const NAT: &str = "nat";
const FILTER: &str = "filter";
/// nat: a DNAT per published port.
const MYDOCKER: &str = "MYDOCKER";
/// nat: each network's MASQUERADE.
const MYDOCKER_POSTROUTING: &str = "MYDOCKER-POSTROUTING";
/// filter: what may cross the host to and from each bridge.
const MYDOCKER_FORWARD: &str = "MYDOCKER-FORWARD";

/// The comment of the jumps into mydocker's chains.
const JUMP_TAG: &str = "mydocker";
/// The comments of a network's rules begin so.
const NETWORK_TAG: &str = "mydocker-network:";

fn network_tag(network: &str) -> String {
    format!("{NETWORK_TAG}{network}")
}

fn container_tag(container: &str) -> String {
    format!("mydocker:{container}")
}

impl Firewall for Iptables {
    fn add_network(&self, network: &Network) -> Result<()> {
        set_up()?;
        add_all(&network_rules(network))
    }

    // ANCHOR: remove_network
    fn remove_network(&self, network: &Network) -> Result<()> {
        let tag = network_tag(&network.name);
        let listings = [Listing::read(NAT)?, Listing::read(FILTER)?];
        let last = !listings.iter().any(|listing| {
            listing
                .comments()
                .any(|c| c.starts_with(NETWORK_TAG) && c != tag)
        });
        for listing in &listings {
            delete_rules(listing, |c| c == tag || (last && c == JUMP_TAG))?;
        }
        if last {
            // No network, so no container either: any port rule still in
            // the chains is stale, and goes with them.
            for (table, chain) in CHAINS {
                let listing = listings.iter().find(|l| l.table == table);
                if listing.is_some_and(|listing| listing.has_chain(chain)) {
                    iptables(&["-t", table, "-F", chain])?;
                    iptables(&["-t", table, "-X", chain])?;
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: remove_network

    fn add_ports(&self, network: &Network, endpoint: &Endpoint) -> Result<()> {
        if endpoint.ports.is_empty() {
            return Ok(());
        }
        set_up()?;
        add_all(&port_rules(network, endpoint))
    }

    fn remove_ports(&self, container: &str) -> Result<()> {
        let tag = container_tag(container);
        for table in [NAT, FILTER] {
            delete_rules(&Listing::read(table)?, |c| c == tag)?;
        }
        Ok(())
    }
}

/// One rule: its table, its chain and its words, as `iptables -S` prints
/// them after `-A CHAIN`.
#[derive(Debug)]
struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    /// A rule from iptables' own words (which here never hold a space:
    /// addresses, ports, interface and network names), with the comment
    /// `tag` put before the target (`-j`), where `iptables -S` shows it.
    fn new(
        table: &'static str,
        chain: &'static str,
        tag: &str,
        spec: &str,
    ) -> Rule {
        let mut spec: Vec<String> =
            spec.split_whitespace().map(String::from).collect();
        let at = spec.iter().position(|w| w == "-j").unwrap_or(spec.len());
        let comment = ["-m", "comment", "--comment", tag];
        spec.splice(at..at, comment.map(String::from));
        Rule { table, chain, spec }
    }

    /// `-t TABLE ACTION CHAIN SPEC...`: ACTION is -A (append), -I (insert
    /// first), -C (check whether it is there) or -D (delete).
    fn args(&self, action: &'static str) -> Vec<&str> {
        let mut args = vec!["-t", self.table, action, self.chain];
        args.extend(self.spec.iter().map(String::as_str));
        args
    }
}

// ANCHOR: network_rules
/// A network's rules: its containers may go out, as the host, and what
/// answers them may come back.
fn network_rules(network: &Network) -> Vec<Rule> {
    let tag = network_tag(&network.name);
    let bridge = &network.bridge;
    let subnet =
        format!("{}/{}", network.subnet.network(), network.subnet.prefix());
    let masquerade =
        |spec: String| Rule::new(NAT, MYDOCKER_POSTROUTING, &tag, &spec);
    let forward =
        |spec: String| Rule::new(FILTER, MYDOCKER_FORWARD, &tag, &spec);
    vec![
        // Leaving the bridge for elsewhere: with the host's address.
        masquerade(format!("-s {subnet} ! -o {bridge} -j MASQUERADE")),
        // The host's 127.0.0.1 to a published port: the container cannot
        // answer 127.0.0.1 (its own), so it sees the bridge's address.
        masquerade(format!("-s 127.0.0.0/8 -o {bridge} -j MASQUERADE")),
        // Whatever its containers send may cross the host...
        forward(format!("-i {bridge} -j ACCEPT")),
        // ...and of what goes to them, the answers (ports: port_rules).
        forward(format!(
            "-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        )),
    ]
}
// ANCHOR_END: network_rules

// ANCHOR: port_rules
/// A container's published ports: each turns packets for the host's port
/// into packets for the container's (DNAT), and lets them through.
fn port_rules(network: &Network, endpoint: &Endpoint) -> Vec<Rule> {
    let tag = container_tag(&endpoint.container);
    let (ip, bridge) = (endpoint.ip, &network.bridge);
    let dnat = |spec: String| Rule::new(NAT, MYDOCKER, &tag, &spec);
    let forward =
        |spec: String| Rule::new(FILTER, MYDOCKER_FORWARD, &tag, &spec);
    let mut rules = Vec::new();
    for port in &endpoint.ports {
        let (proto, host, ctr) =
            (port.protocol, port.host_port, port.container_port);
        // One address of the host's, or any (the jump checked that the
        // packet is for the host).
        let only = match port.host_ip {
            Some(host_ip) => format!("-d {host_ip} "),
            None => String::new(),
        };
        let to = format!("{ip}:{ctr}");
        rules.push(dnat(format!(
            "{only}-p {proto} --dport {host} -j DNAT --to-destination {to}"
        )));
        rules.push(forward(format!(
            "-d {ip} -o {bridge} -p {proto} --dport {ctr} -j ACCEPT"
        )));
    }
    rules
}
// ANCHOR_END: port_rules

// ANCHOR: chains
/// mydocker's chains, made on first need.
const CHAINS: [(&str, &str); 3] = [
    (NAT, MYDOCKER),
    (NAT, MYDOCKER_POSTROUTING),
    (FILTER, MYDOCKER_FORWARD),
];

const LOCAL: &str = "-m addrtype --dst-type LOCAL";

/// The jumps into them: table, from, when, to.
const JUMPS: [(&str, &str, &str, &str); 4] = [
    // To one of the host's addresses, from other hosts...
    (NAT, "PREROUTING", LOCAL, MYDOCKER),
    // ...and from the host itself.
    (NAT, "OUTPUT", LOCAL, MYDOCKER),
    (NAT, "POSTROUTING", "", MYDOCKER_POSTROUTING),
    (FILTER, "FORWARD", "", MYDOCKER_FORWARD),
];

/// Make the chains and the jumps that are not there yet. Another mydocker
/// may be doing the same at this very moment: a chain that it made first
/// is no error. (A jump could then be made twice: harmless, the first
/// decides, and removal deletes both.)
fn set_up() -> Result<()> {
    let listings = [Listing::read(NAT)?, Listing::read(FILTER)?];
    let listing = |table| listings.iter().find(|l| l.table == table);
    for (table, chain) in CHAINS {
        if !listing(table).is_some_and(|l| l.has_chain(chain)) {
            create_chain(table, chain)?;
        }
    }
    for (table, from, when, to) in JUMPS {
        let there = listing(table).is_some_and(|l| {
            l.rules().any(|(chain, spec)| {
                chain == from
                    && comment(spec) == Some(JUMP_TAG)
                    && target(spec) == Some(to)
            })
        });
        if !there {
            let rule =
                Rule::new(table, from, JUMP_TAG, &format!("{when} -j {to}"));
            // First: before any rule of the host's that could drop it.
            iptables(&rule.args("-I"))?;
        }
    }
    Ok(())
}

/// `iptables -N`, where the chain may have been made meanwhile.
fn create_chain(table: &'static str, chain: &str) -> Result<()> {
    match iptables(&["-t", table, "-N", chain]) {
        Ok(_) => Ok(()),
        Err(_) if Listing::read(table)?.has_chain(chain) => Ok(()),
        Err(err) => Err(err),
    }
}
// ANCHOR_END: chains

/// Append each rule that is not there yet: all or none. If one fails,
/// those appended before it are deleted again.
fn add_all(rules: &[Rule]) -> Result<()> {
    let mut added: Vec<&Rule> = Vec::new();
    for rule in rules {
        if iptables(&rule.args("-C")).is_ok() {
            continue;
        }
        if let Err(err) = iptables(&rule.args("-A")) {
            for rule in added.iter().rev() {
                let _ = iptables(&rule.args("-D"));
            }
            return Err(err);
        }
        added.push(rule);
    }
    Ok(())
}

// ANCHOR: remove_by_comment
/// Delete each rule of the listing whose comment `wanted` picks, in any
/// chain. The words that `iptables -S` printed after `-A CHAIN` are the
/// rule: `-D CHAIN` with the same words deletes it.
fn delete_rules(
    listing: &Listing,
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    for (chain, spec) in listing.rules() {
        if comment(spec).is_some_and(&wanted) {
            let mut args = vec!["-t", listing.table, "-D", chain];
            args.extend(spec.iter().map(String::as_str));
            iptables(&args)?;
        }
    }
    Ok(())
}
// ANCHOR_END: remove_by_comment

/// A table as `iptables -t TABLE -S` prints it: `-P CHAIN POLICY` for each
/// built-in chain, `-N CHAIN` for each other, `-A CHAIN WORDS...` for each
/// rule. (`-S CHAIN` would do for one chain, but fails if it is missing.)
struct Listing {
    table: &'static str,
    lines: Vec<Vec<String>>,
}

impl Listing {
    fn read(table: &'static str) -> Result<Listing> {
        let printed = iptables(&["-t", table, "-S"])?;
        let lines = printed.lines().map(words).collect();
        Ok(Listing { table, lines })
    }

    fn has_chain(&self, chain: &str) -> bool {
        self.lines
            .iter()
            .any(|line| matches!(&line[..], [n, c] if n == "-N" && c == chain))
    }

    /// Each rule: its chain and its words after the chain.
    fn rules(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.lines.iter().filter_map(|line| match &line[..] {
            [a, chain, spec @ ..] if a == "-A" => Some((chain.as_str(), spec)),
            _ => None,
        })
    }

    /// The comments of its rules.
    fn comments(&self) -> impl Iterator<Item = &str> {
        self.rules().filter_map(|(_, spec)| comment(spec))
    }
}

/// What follows `--comment` in a rule's words.
fn comment(spec: &[String]) -> Option<&str> {
    spec.windows(2)
        .find(|pair| pair[0] == "--comment")
        .map(|pair| pair[1].as_str())
}

/// What follows `-j`.
fn target(spec: &[String]) -> Option<&str> {
    spec.windows(2)
        .find(|pair| pair[0] == "-j")
        .map(|pair| pair[1].as_str())
}

/// A line of `iptables -S`, split into its words. iptables puts a word in
/// double quotes when it holds a space or other special character
/// (`--comment "mydocker:ID"`), with `\"` and `\\` inside.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '\\' if quoted => {
                let word = word.get_or_insert_with(String::new);
                word.extend(chars.next());
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

// ANCHOR: iptables
/// Run `iptables -w ARGS` and return what it printed. `-w`: wait for
/// another iptables to finish, rather than fail.
fn iptables(args: &[&str]) -> Result<String> {
    let command = format!("iptables -w {}", args.join(" "));
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .with_context(|| format!("run {command}"))?;
    if !out.status.success() {
        // Its first line that is not a warning says what went wrong.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .map_or_else(|| out.status.to_string(), String::from);
        bail!("{command}: {why}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
// ANCHOR_END: iptables
