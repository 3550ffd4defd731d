//! Network namespaces of the tests' own, for the stage 9 tests.
//!
//! A network test makes bridges, veth pairs and iptables rules: it must
//! never do so in the machine's own network namespace. Each test makes a
//! throwaway namespace, [`NetNs`] (`ip netns add md9-<random>`), runs the
//! binary under test in it ([`crate::Mydocker::in_netns`]), and looks at
//! it from there: its links, addresses, routes, rules. To the binary under
//! test that namespace is "the host". [`NetNs::connect_remote`] adds a
//! second one, "another host", linked to the first by a veth pair, for
//! traffic that comes from outside (DNAT in PREROUTING) or goes outside
//! (MASQUERADE).
//!
//! When a `NetNs` is dropped, every process still in it is killed (by PID:
//! they are all the test's, the namespace being its own) and the namespace
//! is deleted by its exact name; what was in it (links, rules, conntrack
//! entries) goes with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::{alive, eventually, finish, unique_token, Outcome, Spawned};

/// The start of the names of the tests' namespaces.
pub const PREFIX: &str = "md9-";

/// The address of the test's namespace ("the host") on its link to the
/// remote one: an address of its own that is not a bridge's.
pub const OUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The address of the remote namespace ("another host").
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The prefix length of the link between the two.
pub const LINK_PREFIX: u8 = 24;

/// The name of the host's end of the link to the remote namespace; the
/// remote's end is its `eth0`.
pub const UPLINK: &str = "uplink0";

/// Where `ip netns` binds namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Make `command` join the network namespace open at `file` between fork
/// and exec (setns(2): one system call, safe in a forked child).
pub fn enter(command: &mut Command, file: Arc<File>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls setns(2), which is async-signal-safe,
    // and reads the descriptor's number; the Arc keeps it open until exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A network namespace that the test made, deleted when dropped.
pub struct NetNs {
    name: String,
    file: Arc<File>,
    /// The namespace's inode: /proc/PID/ns/net of its processes.
    inode: u64,
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl NetNs {
    /// A new namespace, `md9-` and 10 random hex digits, with `lo` up and
    /// no forwarding.
    pub fn new() -> NetNs {
        NetNs::named(&format!("{PREFIX}{}", &unique_token()[..10]))
    }

    fn named(name: &str) -> NetNs {
        let out = finish({
            let mut command = Command::new("ip");
            command.args(["netns", "add", name]).stdin(Stdio::null());
            command
        });
        assert_eq!(
            out.code,
            Some(0),
            "`ip netns add {name}`: the network tests need a namespace of their own: {out:#?}"
        );
        let path = path_of(name);
        let file = File::open(&path).unwrap_or_else(|e| {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            panic!("open {}: {e}", path.display())
        });
        let inode = file
            .metadata()
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .ino();
        let ns = NetNs {
            name: name.to_string(),
            file: Arc::new(file),
            inode,
        };
        // A new namespace copies its IPv4 settings from the machine's first
        // one (net.core.devconf_inherit_init_net = 0): a host that routes
        // (one that runs Docker, say) would hand it ip_forward = 1. The
        // tests start from a host that does not route, as a fresh one.
        ns.must("ip link set lo up && sysctl -qw net.ipv4.ip_forward=0");
        ns
    }

    /// Its name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// An open descriptor of it, to [`enter`] it.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// `program` ready to run in this namespace, its standard input
    /// /dev/null.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.stdin(Stdio::null());
        enter(&mut command, self.file());
        command
    }

    /// Run `sh -c SCRIPT` in this namespace, to the end (within the
    /// harness's time limit).
    pub fn sh(&self, script: &str) -> Outcome {
        let mut command = self.command("sh");
        command.args(["-c", script]);
        finish(command)
    }

    /// [`NetNs::sh`] that must succeed: its standard output.
    pub fn must(&self, script: &str) -> String {
        let out = self.sh(script);
        assert_eq!(
            out.code,
            Some(0),
            "`{script}` in the test's network namespace {} failed: {out:#?}",
            self.name
        );
        out.stdout
    }

    /// Start `sh -c SCRIPT` in this namespace and return at once: a
    /// server, say. It is killed (with all it started) when the returned
    /// handle is dropped, and in any case when the namespace is.
    pub fn spawn_sh(&self, script: &str) -> Spawned {
        let mut command = self.command("sh");
        command.args(["-c", script]);
        Spawned::new(command, false)
    }

    /// `curl` of `url` from this namespace: at most 3 s to connect, 5 s
    /// in all.
    pub fn fetch(&self, url: &str) -> Outcome {
        let mut command = self.command("curl");
        command.args([
            "-sS",
            "--noproxy",
            "*",
            "--connect-timeout",
            "3",
            "--max-time",
            "5",
            url,
        ]);
        finish(command)
    }

    /// [`NetNs::fetch`] until it succeeds, for at most `timeout` (a
    /// server that is still starting): the body, or the last failure.
    pub fn fetch_within(&self, url: &str, timeout: Duration) -> Result<String, Outcome> {
        let mut last = None;
        let ok = eventually(timeout, || {
            let out = self.fetch(url);
            let done = out.code == Some(0);
            last = Some(out);
            if !done {
                std::thread::sleep(Duration::from_millis(200));
            }
            done
        });
        let last = last.expect("fetched once at least");
        if ok {
            Ok(last.stdout)
        } else {
            Err(last)
        }
    }

    /// The PIDs of every process in this namespace.
    pub fn processes(&self) -> Vec<u32> {
        let mine = format!("net:[{}]", self.inode);
        let me = std::process::id();
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| *pid != me)
                    .filter(|pid| {
                        std::fs::read_link(format!("/proc/{pid}/ns/net"))
                            .is_ok_and(|link| link.to_string_lossy() == mine)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The names of its links (without `@peer`).
    pub fn links(&self) -> BTreeSet<String> {
        self.must("ip -o link show")
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    /// `ip -o -d link show NAME`, or None when there is no such link.
    pub fn link(&self, name: &str) -> Option<String> {
        let out = self.sh(&format!("ip -o -d link show dev '{name}'"));
        (out.code == Some(0)).then_some(out.stdout)
    }

    /// Its IPv4 addresses, as `DEVICE ADDRESS/PREFIX`.
    pub fn addresses(&self) -> BTreeSet<String> {
        self.must("ip -o -4 addr show")
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "inet")?;
                Some(format!("{} {}", words.get(1)?, words.get(at + 1)?))
            })
            .collect()
    }

    /// Its IPv4 routes (the main table), one line each.
    pub fn routes(&self) -> BTreeSet<String> {
        self.must("ip -4 route show")
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The whole of `iptables-save` in this namespace.
    pub fn iptables_save(&self) -> String {
        self.must("iptables-save")
    }

    /// The lines of `iptables-save` that name mydocker (a chain, a
    /// comment, a jump): what mydocker's rules look like.
    pub fn mydocker_rules(&self) -> Vec<String> {
        mydocker_lines(&self.iptables_save())
    }

    /// `net.ipv4.ip_forward` in this namespace.
    pub fn ip_forward(&self) -> String {
        self.must("cat /proc/sys/net/ipv4/ip_forward")
            .trim()
            .to_string()
    }

    /// What a network test compares before and after: links, addresses,
    /// routes, rules and ip_forward.
    pub fn state(&self) -> NetState {
        NetState {
            links: self.links(),
            addresses: self.addresses(),
            routes: self.routes(),
            rules: Ruleset::parse(&self.iptables_save()),
            ip_forward: self.ip_forward(),
        }
    }

    /// Another namespace, "another host", linked to this one by a veth
    /// pair: [`UPLINK`] here with [`OUTER_IP`], `eth0` there with
    /// [`REMOTE_IP`], both up. The remote one has no other route: it
    /// knows nothing of the containers' subnets, as a host on the
    /// Internet does not (so an answer to a container reaches it only
    /// through NAT). It goes when dropped, before or after this one.
    pub fn connect_remote(&self) -> NetNs {
        let remote = NetNs::named(&format!("{}-r", self.name));
        self.must(&format!(
            "ip link add {UPLINK} type veth peer name eth0 netns '{remote}' \
             && ip addr add {OUTER_IP}/{LINK_PREFIX} dev {UPLINK} \
             && ip link set {UPLINK} up",
            remote = remote.name
        ));
        remote.must(&format!(
            "ip addr add {REMOTE_IP}/{LINK_PREFIX} dev eth0 && ip link set eth0 up"
        ));
        remote
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // What the test started here and left: servers, monitors, the
        // containers that share this namespace (`--net host`).
        let victims: Vec<(u32, Option<u64>)> = self
            .processes()
            .into_iter()
            .map(|pid| (pid, crate::start_time(pid)))
            .collect();
        for (pid, started) in &victims {
            if alive(*pid, *started) {
                // SAFETY: kill(2) touches no memory.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
        eventually(Duration::from_secs(5), || {
            victims.iter().all(|(p, t)| !alive(*p, *t))
        });
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            other => eprintln!("warning: `ip netns del {}` failed: {other:?}", self.name),
        }
    }
}

/// The lines of an `iptables-save` text that name mydocker.
pub fn mydocker_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.to_lowercase().contains("mydocker"))
        .map(String::from)
        .collect()
}

/// What a namespace's network looks like, for before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    pub links: BTreeSet<String>,
    pub addresses: BTreeSet<String>,
    pub routes: BTreeSet<String>,
    pub rules: Ruleset,
    pub ip_forward: String,
}

impl NetState {
    /// How `self` (later) differs from `before`, one line each; empty
    /// when it is as before. A table that iptables made meanwhile is as
    /// before if it is empty, with its built-in chains' policy ACCEPT
    /// (iptables makes tables as it needs them and never removes them).
    pub fn differences_from(&self, before: &NetState) -> Vec<String> {
        let mut lines = Vec::new();
        let sets = [
            ("link", &before.links, &self.links),
            ("address", &before.addresses, &self.addresses),
            ("route", &before.routes, &self.routes),
        ];
        for (what, old, new) in sets {
            for gone in old.difference(new) {
                lines.push(format!("{what} removed: {gone}"));
            }
            for added in new.difference(old) {
                lines.push(format!("{what} added: {added}"));
            }
        }
        lines.extend(self.rules.differences_from(&before.rules));
        if self.ip_forward != before.ip_forward {
            lines.push(format!(
                "net.ipv4.ip_forward is {}, was {}",
                self.ip_forward, before.ip_forward
            ));
        }
        lines
    }
}

/// The built-in chains of iptables' tables.
const BUILT_IN: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// An `iptables-save` text, table by table, without its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Table → (chain → policy, `-` for a chain of one's own; rules).
    pub tables: BTreeMap<String, (BTreeMap<String, String>, Vec<String>)>,
}

impl Ruleset {
    pub fn parse(save: &str) -> Ruleset {
        let mut tables: BTreeMap<String, (BTreeMap<String, String>, Vec<String>)> = BTreeMap::new();
        let mut table = String::new();
        for line in save.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                table = name.to_string();
                tables.entry(table.clone()).or_default();
            } else if let Some(chain) = line.strip_prefix(':') {
                let mut words = chain.split_whitespace();
                let name = words.next().unwrap_or_default().to_string();
                let policy = words.next().unwrap_or("-").to_string();
                tables
                    .entry(table.clone())
                    .or_default()
                    .0
                    .insert(name, policy);
            } else {
                tables
                    .entry(table.clone())
                    .or_default()
                    .1
                    .push(line.to_string());
            }
        }
        Ruleset { tables }
    }

    /// See [`NetState::differences_from`].
    pub fn differences_from(&self, before: &Ruleset) -> Vec<String> {
        let mut lines = Vec::new();
        let empty = (BTreeMap::new(), Vec::new());
        let names: BTreeSet<&String> = self.tables.keys().chain(before.tables.keys()).collect();
        for name in names {
            let (old_chains, old_rules) = before.tables.get(name).unwrap_or(&empty);
            let (new_chains, new_rules) = self.tables.get(name).unwrap_or(&empty);
            let chains: BTreeSet<&String> = old_chains.keys().chain(new_chains.keys()).collect();
            for chain in chains {
                let old = old_chains.get(chain);
                let new = new_chains.get(chain);
                let as_before = match (old, new) {
                    (Some(a), Some(b)) => a == b,
                    // A built-in chain of a table made meanwhile.
                    (None, Some(policy)) => {
                        BUILT_IN.contains(&chain.as_str()) && policy == "ACCEPT"
                    }
                    (Some(_), None) => false,
                    (None, None) => true,
                };
                if !as_before {
                    lines.push(format!(
                        "iptables table {name}, chain {chain}: was {old:?} (policy), is {new:?}"
                    ));
                }
            }
            for rule in old_rules.iter().filter(|r| !new_rules.contains(r)) {
                lines.push(format!("iptables rule removed from table {name}: {rule}"));
            }
            for rule in new_rules.iter().filter(|r| !old_rules.contains(r)) {
                lines.push(format!("iptables rule added to table {name}: {rule}"));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Generated by iptables-save v1.8.9 (nf_tables) on Mon\n\
        *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A INPUT -i lo -j ACCEPT\nCOMMIT\n# Completed on Mon\n";

    #[test]
    fn rules_compare_without_counters_and_new_empty_tables_are_as_before() {
        let after_clean = "*filter\n:INPUT ACCEPT [12:3456]\n:FORWARD ACCEPT [0:0]\n\
            :OUTPUT ACCEPT [1:2]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n\
            *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
            :POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        let before = Ruleset::parse(BEFORE);
        assert_eq!(
            Ruleset::parse(after_clean).differences_from(&before),
            Vec::<String>::new()
        );
        let after_dirty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n\
            :OUTPUT ACCEPT [0:0]\n:MYDOCKER-FORWARD - [0:0]\n-A INPUT -i lo -j ACCEPT\n\
            -A FORWARD -j MYDOCKER-FORWARD\nCOMMIT\n";
        let diff = Ruleset::parse(after_dirty).differences_from(&before);
        assert_eq!(diff.len(), 3, "{diff:#?}");
        assert_eq!(mydocker_lines(after_dirty).len(), 2);
        assert!(mydocker_lines(BEFORE).is_empty());
    }
}
