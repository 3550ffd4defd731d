// @stage 9
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
//! answer everywhere, on 127.0.0.1 too. (127.0.0.1 also needs the
//! bridge's `route_localnet`, and forwarding needs `ip_forward`: sysctls,
//! which the bridge driver sets.)
//!
//! Every rule carries a comment that says who needs it: `mydocker:ID`
//! (a container's ports), `mydocker-network:BRIDGE` (a network, named by
//! its bridge: two state roots may both have a network `bridge`, never
//! two bridges of one name), `mydocker` (the jumps). Removing needs no
//! record of what was added: list the table, delete the rules with that
//! comment. So it works after a `kill -9`, from nothing but a container's
//! ID or a network's bridge.

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
/// The comments of a network's rules begin so, and end with its bridge.
const NETWORK_TAG: &str = "mydocker-network:";

fn network_tag(bridge: &str) -> String {
    format!("{NETWORK_TAG}{bridge}")
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
        let tag = network_tag(&network.bridge);
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
    let tag = network_tag(&network.bridge);
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

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::thread;
    use std::time::SystemTime;

    use nix::sched::{unshare, CloneFlags};

    use super::*;
    use crate::network::ports::parse_ports;

    fn network(name: &str, subnet: &str, bridge: &str) -> Network {
        let subnet: ipnetwork::Ipv4Network = subnet.parse().unwrap();
        Network {
            name: name.to_string(),
            driver: "bridge".to_string(),
            subnet,
            gateway: subnet.nth(1).unwrap(),
            bridge: bridge.to_string(),
            created: SystemTime::now(),
        }
    }

    fn endpoint(
        id: &str,
        network: &Network,
        ip: u32,
        ports: &[&str],
    ) -> Endpoint {
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        Endpoint {
            container: id.to_string(),
            network: network.name.clone(),
            veth: format!("veth{}", &id[..11]),
            ip: network.subnet.nth(ip).unwrap(),
            mac: "02:42:00:00:00:00".to_string(),
            ports: parse_ports(&ports).unwrap(),
        }
    }

    #[test]
    fn splits_what_iptables_prints() {
        let line = r#"-A X -p tcp -m comment --comment "my \"x\\ y" -j A"#;
        let expected = ["-A", "X", "-p", "tcp", "-m", "comment", "--comment"];
        let mut expected: Vec<&str> = expected.to_vec();
        expected.extend([r#"my "x\ y"#, "-j", "A"]);
        assert_eq!(words(line), expected);
        assert_eq!(words(r#"-N  B ""  "#), ["-N", "B", ""]);
        assert!(words("").is_empty());
    }

    /// The rules as `-t TABLE -A CHAIN SPEC`, the comment as COMMENT.
    fn specs(rules: &[Rule], tag: &str) -> Vec<String> {
        let comment = format!("-m comment --comment {tag}");
        let spec = |rule: &Rule| {
            let spec = rule.spec.join(" ").replace(&comment, "COMMENT");
            format!("-t {} -A {} {spec}", rule.table, rule.chain)
        };
        rules.iter().map(spec).collect()
    }

    #[test]
    fn a_port_is_a_dnat_and_a_forward() {
        let net = network("web", "172.30.0.0/16", "br-0123456789ab");
        let id = "a".repeat(64);
        let ports = ["8080:80", "127.0.0.1:53:5353/udp"];
        let ep = endpoint(&id, &net, 2, &ports);
        assert_eq!(
            specs(&port_rules(&net, &ep), &format!("mydocker:{id}")),
            [
                "-t nat -A MYDOCKER -p tcp --dport 8080 COMMENT \
                 -j DNAT --to-destination 172.30.0.2:80",
                "-t filter -A MYDOCKER-FORWARD -d 172.30.0.2 \
                 -o br-0123456789ab -p tcp --dport 80 COMMENT -j ACCEPT",
                "-t nat -A MYDOCKER -d 127.0.0.1 -p udp --dport 53 COMMENT \
                 -j DNAT --to-destination 172.30.0.2:5353",
                "-t filter -A MYDOCKER-FORWARD -d 172.30.0.2 \
                 -o br-0123456789ab -p udp --dport 5353 COMMENT -j ACCEPT",
            ]
        );
    }

    #[test]
    fn a_network_is_masquerade_and_forward() {
        let net = network("web", "172.30.0.0/16", "br-0123456789ab");
        assert_eq!(
            specs(&network_rules(&net), "mydocker-network:br-0123456789ab"),
            [
                "-t nat -A MYDOCKER-POSTROUTING -s 172.30.0.0/16 \
                 ! -o br-0123456789ab COMMENT -j MASQUERADE",
                "-t nat -A MYDOCKER-POSTROUTING -s 127.0.0.0/8 \
                 -o br-0123456789ab COMMENT -j MASQUERADE",
                "-t filter -A MYDOCKER-FORWARD -i br-0123456789ab COMMENT \
                 -j ACCEPT",
                "-t filter -A MYDOCKER-FORWARD -o br-0123456789ab \
                 -m conntrack --ctstate RELATED,ESTABLISHED COMMENT -j ACCEPT",
            ]
        );
    }

    /// Run `f` in a thread of its own, in a network namespace of its own:
    /// the iptables commands it starts are there too, never in the host's.
    fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (to make a network namespace and \
             iptables rules in it): run cargo test as root"
        );
        thread::scope(|scope| {
            let thread = scope.spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).expect("unshare(NEWNET)");
                let ns = |path| std::fs::read_link(path).unwrap();
                assert_ne!(
                    ns("/proc/thread-self/ns/net"),
                    ns("/proc/self/ns/net"),
                    "this thread is in a network namespace of its own"
                );
                f()
            });
            thread.join().unwrap()
        })
    }

    /// What `iptables-save` prints, without its dates and counters.
    fn saved() -> String {
        let out = Command::new("iptables-save").output().unwrap();
        assert!(out.status.success(), "iptables-save: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines = text.lines().filter(|line| !line.starts_with('#'));
        let lines = lines.map(|line| match line.split_once(" [") {
            Some((chain, _)) if line.starts_with(':') => chain,
            _ => line,
        });
        lines.map(|line| format!("{line}\n")).collect()
    }

    /// Someone else's rules, which mydocker must leave alone; and what
    /// `iptables-save` prints with them.
    fn others_rules() -> String {
        for args in [
            "-t nat -A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE",
            "-t filter -A FORWARD -i eth9 -j ACCEPT",
        ] {
            let args: Vec<&str> = args.split(' ').collect();
            iptables(&args).unwrap();
        }
        let before = saved();
        assert!(!before.to_lowercase().contains("mydocker"), "{before}");
        before
    }

    fn tagged<'a>(saved: &'a str, tag: &str) -> Vec<&'a str> {
        let comment = format!("--comment \"{tag}\"");
        saved
            .lines()
            .filter(|line| line.contains(&comment))
            .collect()
    }

    /// For real, in a new network namespace: rules made, then removed by
    /// their comment only, until nothing of mydocker is left; someone
    /// else's rules untouched.
    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it, as root"]
    fn rules_come_and_go_by_comment() {
        in_new_netns(|| {
            let before = others_rules();

            let web = network("web", "172.30.0.0/16", "br-0123456789ab");
            let db = network("db", "172.31.0.0/24", "br-ba9876543210");
            let (a, b) = ("a".repeat(64), "b".repeat(64));
            let ep_a =
                endpoint(&a, &web, 2, &["8080:80", "127.0.0.1:53:53/udp"]);
            let ep_b = endpoint(&b, &web, 3, &["8081:80"]);
            let firewall = Iptables;
            // Twice: nothing is added twice.
            for _ in 0..2 {
                firewall.add_network(&web).unwrap();
                firewall.add_network(&db).unwrap();
                firewall.add_ports(&web, &ep_a).unwrap();
                firewall.add_ports(&web, &ep_b).unwrap();
            }
            let all = saved();
            println!("{all}");
            assert_eq!(tagged(&all, &format!("mydocker:{a}")).len(), 4);
            assert_eq!(tagged(&all, &format!("mydocker:{b}")).len(), 2);
            assert_eq!(tagged(&all, "mydocker-network:br-0123456789ab").len(), 4);
            assert_eq!(tagged(&all, "mydocker-network:br-ba9876543210").len(), 4);
            let jumps =
                all.lines().filter(|l| l.contains("--comment mydocker "));
            assert_eq!(jumps.count(), 4, "{all}");
            for rule in
                network_rules(&web).iter().chain(&port_rules(&web, &ep_a))
            {
                iptables(&rule.args("-C")).unwrap();
            }

            // Container a goes, after a kill -9: only its ID is known.
            firewall.remove_ports(&a).unwrap();
            firewall.remove_ports(&a).unwrap();
            let after_a = saved();
            assert!(tagged(&after_a, &format!("mydocker:{a}")).is_empty());
            let kept: Vec<&str> =
                all.lines().filter(|l| !l.contains(&a)).collect();
            assert_eq!(after_a.lines().collect::<Vec<_>>(), kept);

            // web goes, with b's ports still there (a kill -9 again): db
            // keeps the chains.
            firewall.remove_network(&web).unwrap();
            let after_web = saved();
            assert!(tagged(&after_web, "mydocker-network:br-0123456789ab").is_empty());
            assert_eq!(tagged(&after_web, "mydocker-network:br-ba9876543210").len(), 4);
            assert!(after_web.contains(":MYDOCKER -"), "{after_web}");

            // The last network: nothing of mydocker is left, b's stale
            // rule neither; others' rules are still there.
            firewall.remove_network(&db).unwrap();
            assert_eq!(saved(), before);
            firewall.remove_network(&db).unwrap();
            firewall.remove_ports(&b).unwrap();
            assert_eq!(saved(), before);
        });
    }

    /// Several mydockers set up at once: none fails because another made
    /// a chain first.
    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it, as root"]
    fn parallel_set_ups_all_succeed() {
        in_new_netns(|| {
            let before = others_rules();
            let networks: Vec<Network> = (0..6)
                .map(|i| {
                    let subnet = format!("172.{}.0.0/16", 20 + i);
                    network(&format!("n{i}"), &subnet, &format!("br-n{i}"))
                })
                .collect();
            thread::scope(|scope| {
                let threads: Vec<_> = networks
                    .iter()
                    .map(|net| scope.spawn(|| Iptables.add_network(net)))
                    .collect();
                for thread in threads {
                    thread.join().unwrap().unwrap();
                }
            });
            let all = saved();
            for net in &networks {
                let tag = format!("mydocker-network:{}", net.bridge);
                assert_eq!(tagged(&all, &tag).len(), 4, "{all}");
            }
            for net in &networks {
                Iptables.remove_network(net).unwrap();
            }
            assert_eq!(saved(), before);
        });
    }

    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it, as root"]
    fn a_failed_command_is_named_with_its_error() {
        in_new_netns(|| {
            let err = iptables(&["-t", "nat", "-X", "NOPE"]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "iptables -w -t nat -X NOPE: iptables: No chain/target/match \
                 by that name."
            );
        });
    }
}
// @end
