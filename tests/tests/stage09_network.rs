//! Stage 9: networks. A container on a bridge network has a network
//! namespace of its own with `eth0`, one end of a veth pair whose other
//! end is a port of the network's bridge; an address from the network's
//! IPAM; a default route through the bridge's address (the gateway); NAT
//! out through the host's address (MASQUERADE) and, with `-p`, DNAT in
//! from the host's ports. `--net none`, `host` and `container:C` are the
//! other modes.
//!
//! Every test runs the binary under test in a network namespace that the
//! test made ([`NetNs`], `md9-<random>`): to mydocker that namespace is
//! "the host", and the machine's own network is never touched. Tests
//! that need traffic from or to "another host" link a second namespace
//! to it by a veth pair ([`NetNs::connect_remote`]: 198.51.100.1 here,
//! 198.51.100.2 there). Each test takes a picture of the namespace first
//! (links, addresses, routes, iptables rules, ip_forward) and, once it has
//! removed its containers and networks, [`T::finish`] checks that the
//! namespace is exactly as before and that nothing is left under the
//! state root's `networks/`.
//!
//! The tests read the files of the stage 9 contract where the kernel's
//! view is not enough: `networks/NAME/addresses` (the IPAM's bitmap: bit
//! i, byte i/8, least significant bit first, for the subnet's i-th
//! address) and `networks/NAME/endpoints/ID.json`.
//!
//! Every container's PID 1 is `sh -c SCRIPT TOKEN`, every exec'd shell
//! carries `exec-TOKEN`, so that a failing test's [`T`] finds and kills
//! what it started.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use mydocker_stage_tests::json::Json;
use mydocker_stage_tests::netns::{
    self, mydocker_lines, NetNs, NetState, OUTER_IP, REMOTE_IP, UPLINK,
};
use mydocker_stage_tests::{
    cgroups_of_container, container_processes, eventually, kill_and_unmount, parent_of, pids_with,
    quietly, signal, tar_append, tar_archive, unique_token, walk, Mydocker, Outcome, IMAGE,
};

// ---------------------------------------------------------------------
// The test's handle
// ---------------------------------------------------------------------

/// One test: its network namespace (and maybe a remote one), the binary
/// under test run in it with a state root of its own, exactly as written
/// (no `--rm`, no `--net none` added), a token for its containers'
/// command lines, the full IDs of the containers it made, and the picture
/// of the namespace taken before it made anything.
struct T {
    md: Mydocker,
    ns: NetNs,
    remote: Option<NetNs>,
    token: String,
    ids: Mutex<BTreeSet<String>>,
    before: NetState,
    finished: AtomicBool,
}

impl T {
    /// A test in a namespace of its own, with only `lo`.
    fn new() -> T {
        T::build(false, "")
    }

    /// A test whose namespace is linked to a remote one (see
    /// [`NetNs::connect_remote`]).
    fn with_remote() -> T {
        T::build(true, "")
    }

    /// A test whose namespace, linked to a remote one when `remote`, has
    /// run `setup` (a shell script) before the picture is taken.
    fn build(remote: bool, setup: &str) -> T {
        let ns = NetNs::new();
        let remote = remote.then(|| ns.connect_remote());
        if !setup.is_empty() {
            ns.must(setup);
        }
        let md = Mydocker::in_netns(&ns);
        assert!(
            md.stage() >= 9,
            "the network tests are for stage 9 on (MYDOCKER_STAGE={})",
            md.stage()
        );
        let before = ns.state();
        T {
            md,
            ns,
            remote,
            token: unique_token(),
            ids: Mutex::new(BTreeSet::new()),
            before,
            finished: AtomicBool::new(false),
        }
    }

    /// The remote namespace ([`T::with_remote`]).
    fn remote(&self) -> &NetNs {
        self.remote
            .as_ref()
            .expect("a test made with T::with_remote")
    }

    /// `mydocker ARGS...` to the end, in the test's namespace.
    fn exec<S: AsRef<str>>(&self, args: &[S]) -> Outcome {
        self.md.exec(args)
    }

    /// [`T::exec`] that must succeed: its standard output.
    fn ok<S: AsRef<str>>(&self, args: &[S], why: &str) -> String {
        let out = self.exec(args);
        assert!(
            out.code == Some(0),
            "`mydocker {}` should succeed ({why}): {out:#?}",
            words(args)
        );
        out.stdout
    }

    /// A short piece of the token, for names.
    fn tag(&self) -> &str {
        &self.token[..8]
    }

    /// A container name of this test's.
    fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.tag())
    }

    /// Remember a container to remove if the test fails.
    fn made(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    /// `sh -c SCRIPT TOKEN`, for a container's PID 1.
    fn sh(&self, script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into(), self.token.clone()]
    }

    /// A container command that runs until stopped.
    fn busy(&self) -> Vec<String> {
        self.sh("while :; do sleep 1; done")
    }

    /// A container command that serves `content` at `/` on port 80 with
    /// busybox httpd, until stopped.
    fn web(&self, content: &str) -> Vec<String> {
        self.sh(&format!(
            "mkdir -p /www && echo '{content}' > /www/index.html && \
             {{ httpd -f -p 80 -h /www & }}; while :; do sleep 1; done"
        ))
    }

    /// `run -d OPTIONS busybox COMMAND...` that must succeed: the full ID
    /// it printed.
    fn run_d<S: AsRef<str>>(&self, options: &[&str], command: &[S]) -> String {
        let out = self.exec(&run_d_args(options, command));
        let id = out.stdout.trim_end().to_string();
        if is_full_id(&id) {
            self.made(&id);
        }
        assert!(
            out.code == Some(0) && is_full_id(&id),
            "`run -d {}` should start the container and print its full ID: {out:#?}",
            options.join(" ")
        );
        id
    }

    /// `exec ID sh -c SCRIPT exec-TOKEN` to the end.
    fn in_ctr(&self, id: &str, script: &str) -> Outcome {
        let token = format!("exec-{}", self.token);
        self.exec(&["exec", id, "sh", "-c", script, &token])
    }

    /// [`T::in_ctr`] that must succeed: its standard output.
    fn ctr_ok(&self, id: &str, script: &str) -> String {
        let out = self.in_ctr(id, script);
        assert!(
            out.code == Some(0),
            "in container {}, `{script}` should succeed: {out:#?}",
            &id[..12]
        );
        out.stdout
    }

    /// The address of container `id`'s `eth0`, as the container sees it.
    fn ip_of(&self, id: &str) -> Ipv4Addr {
        let text = self.ctr_ok(id, "ip -o -4 addr show dev eth0");
        let found = text
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse().ok());
        found.unwrap_or_else(|| {
            panic!(
                "container {} on a bridge network should have an IPv4 address on eth0 (the container's end of its veth pair); `ip -o -4 addr show dev eth0` printed:\n{text}",
                &id[..12]
            )
        })
    }

    /// The names of the links container `id` sees.
    fn links_in(&self, id: &str) -> BTreeSet<String> {
        self.ctr_ok(id, "ip -o link show")
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    /// `network create --subnet SUBNET [OPTIONS] NAME`, which must
    /// succeed and print NAME.
    fn create_network(&self, name: &str, subnet: &str, options: &[&str]) {
        let mut args = vec!["network", "create", "--subnet", subnet];
        args.extend_from_slice(options);
        args.push(name);
        let out = self.exec(&args);
        assert!(
            out.code == Some(0) && out.stdout == format!("{name}\n"),
            "`mydocker {}` should make the network and print its name: {out:#?}",
            args.join(" ")
        );
    }

    /// `network inspect NAME`: the one network of the JSON array.
    fn inspect(&self, name: &str) -> Json {
        let text = self.ok(&["network", "inspect", name], "the network exists");
        let json = Json::parse(&text)
            .unwrap_or_else(|e| panic!("`network inspect {name}` should print JSON: {e}\n{text}"));
        let networks = json.as_array().unwrap_or_else(|| {
            panic!("`network inspect {name}` prints a JSON array of networks: {text}")
        });
        assert_eq!(
            networks.len(),
            1,
            "`network inspect {name}` shows one network: {text}"
        );
        networks[0].clone()
    }

    /// A string member of `network inspect NAME`.
    fn inspected(&self, name: &str, key: &str) -> String {
        let network = self.inspect(name);
        network
            .get(key)
            .and_then(Json::as_str)
            .unwrap_or_else(|| {
                panic!("`network inspect {name}` should have a string `{key}`: {network:?}")
            })
            .to_string()
    }

    /// The endpoints `network inspect NAME` shows.
    fn endpoints(&self, name: &str) -> Vec<Json> {
        let network = self.inspect(name);
        network
            .get("endpoints")
            .and_then(Json::as_array)
            .unwrap_or_else(|| {
                panic!("`network inspect {name}` should have an `endpoints` array: {network:?}")
            })
            .to_vec()
    }

    /// The subnet of network `name`, from `network inspect`.
    fn subnet_of(&self, name: &str) -> Cidr {
        let text = self.inspected(name, "subnet");
        Cidr::parse(&text)
            .unwrap_or_else(|| panic!("network {name}'s subnet should be CIDR: {text}"))
    }

    /// `networks/` under the state root.
    fn networks_dir(&self) -> PathBuf {
        self.md.root().join("networks")
    }

    /// Every path under `networks/`, relative to it.
    fn network_files(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let top = self.networks_dir();
        let mut dirs = vec![top.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path.clone());
                }
                if let Ok(relative) = path.strip_prefix(&top) {
                    found.insert(relative.to_string_lossy().into_owned());
                }
            }
        }
        found
    }

    /// The endpoint files of network `name`: `networks/NAME/endpoints/`.
    fn endpoint_files(&self, name: &str) -> BTreeSet<String> {
        std::fs::read_dir(self.networks_dir().join(name).join("endpoints"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The addresses that network `name`'s IPAM has handed to containers:
    /// the bits set in `networks/NAME/addresses`, but for the subnet's
    /// own address, its broadcast address and the gateway.
    fn allocated(&self, name: &str) -> BTreeSet<Ipv4Addr> {
        let subnet = self.subnet_of(name);
        let gateway: Ipv4Addr = self
            .inspected(name, "gateway")
            .parse()
            .expect("the gateway is an address");
        let file = self.networks_dir().join(name).join("addresses");
        let bytes = std::fs::read(&file).unwrap_or_else(|e| {
            panic!(
                "the IPAM of network {name} keeps its bitmap in {}: {e}",
                file.display()
            )
        });
        let size = subnet.size();
        assert_eq!(
            bytes.len() as u64,
            size.div_ceil(8),
            "{}: one bit per address of {subnet}, so {} bytes (the whole file is the bitmap, whatever its size)",
            file.display(),
            size.div_ceil(8)
        );
        let mut found = BTreeSet::new();
        for i in 0..size {
            if bytes[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                let ip = subnet.nth(i);
                if ip != subnet.network() && ip != subnet.broadcast() && ip != gateway {
                    found.insert(ip);
                }
            }
        }
        found
    }

    /// Remove the test's containers: `rm -f IDS...` must succeed.
    fn rm_f(&self, ids: &[&str]) {
        let mut args = vec!["rm", "-f"];
        args.extend_from_slice(ids);
        self.ok(&args, "rm -f removes the containers, running or not");
    }

    /// The end of every test: remove the networks that are left (the
    /// default one among them), then check that the namespace is exactly
    /// as it was before the test: no veth, bridge, address or route, no
    /// iptables rule or chain of mydocker's, ip_forward as it was, and
    /// nothing under `networks/` but the lock file.
    fn finish(&self) {
        let listed = self.ok(&["ps", "-aq"], "ps -a lists the containers");
        assert!(
            listed.trim().is_empty(),
            "the test removed its containers, yet `ps -a` lists: {listed}"
        );
        let left = self.ok(&["network", "ls", "-q"], "network ls -q lists the networks");
        for name in left.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let out = self.exec(&["network", "rm", name]);
            assert!(
                out.code == Some(0) && out.stdout == format!("{name}\n"),
                "`network rm {name}` should remove the network (no container uses it any more) and print its name: {out:#?}"
            );
        }
        // A container's network namespace is torn down by the kernel
        // after its last process, in the background: its veth may take a
        // moment to go.
        let mut differences = Vec::new();
        eventually(Duration::from_secs(5), || {
            differences = self.ns.state().differences_from(&self.before);
            differences.is_empty()
        });
        assert!(
            differences.is_empty(),
            "once every container and network is removed, the namespace should be exactly as before the test: every veth, bridge, address, route and iptables rule that mydocker made removed, net.ipv4.ip_forward put back:\n{}",
            differences.join("\n")
        );
        let rules = self.ns.mydocker_rules();
        assert!(
            rules.is_empty(),
            "once the last network is removed, nothing of mydocker may be left in iptables-save (its chains and the jumps to them go with the last rule):\n{}",
            rules.join("\n")
        );
        let files: Vec<String> = self
            .network_files()
            .into_iter()
            .filter(|f| f != "lock")
            .collect();
        assert!(
            files.is_empty(),
            "once every network is removed, nothing may be left under networks/ but its lock file (no network.json, IPAM bitmap, endpoint, ip_forward): {files:?}"
        );
        self.finished.store(true, Ordering::SeqCst);
    }
}

impl Drop for T {
    /// After a failure, or when the test left something: remove what the
    /// test made (`rm -f`, `network rm`, then SIGKILL by PID to what still
    /// runs in its containers' cgroups or carries its token). The
    /// namespaces go after that, with whatever is still in them.
    fn drop(&mut self) {
        let mut left_over = None;
        if !std::thread::panicking() {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let left =
                || -> Vec<PathBuf> { ids.iter().flat_map(|id| cgroups_of_container(id)).collect() };
            if !self.finished.load(Ordering::SeqCst) {
                left_over = Some("the test ended without T::finish".to_string());
            } else if !eventually(Duration::from_secs(3), || left().is_empty()) {
                left_over = Some(format!(
                    "the test's containers are gone, but their cgroups are not: {:?}",
                    left()
                ));
            } else if !pids_with(&self.token).is_empty() {
                left_over = Some(format!(
                    "the test's containers are gone, but processes of theirs live: {:?}",
                    pids_with(&self.token)
                ));
            } else {
                return;
            }
        }
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Ok(entries) = std::fs::read_dir(self.md.root().join("containers")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_full_id(&name) {
                    ids.insert(name);
                }
            }
        }
        if !ids.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".to_string()];
            args.extend(ids.iter().cloned());
            quietly(self.md.command(&args));
        }
        if let Ok(entries) = std::fs::read_dir(self.networks_dir()) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    quietly(self.md.command(&["network", "rm", &name]));
                }
            }
        }
        kill_and_unmount(&ids, &self.token, self.md.root());
        if let Some(message) = left_over {
            panic!("{message}");
        }
    }
}

/// The arguments of `run -d OPTIONS busybox COMMAND...`.
fn run_d_args<S: AsRef<str>>(options: &[&str], command: &[S]) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(options.iter().map(|s| s.to_string()));
    args.push(IMAGE.into());
    args.extend(command.iter().map(|s| s.as_ref().to_string()));
    args
}

fn words<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Poll `attempt` until it gives Ok, for at most `timeout`: a server that
/// is still starting, an ARP entry still unresolved. The last error when
/// it never does.
fn within<V>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<V, String>,
) -> Result<V, String> {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// How long a test waits for something that a correct binary makes
/// happen at once (a server starting, a first ARP exchange).
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------

/// An IPv4 subnet: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    ip: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// `A.B.C.D/P`, or `default` (0.0.0.0/0); None for anything else.
    fn parse(text: &str) -> Option<Cidr> {
        if text == "default" {
            return Some(Cidr {
                ip: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            });
        }
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip.parse().ok()?, prefix.parse().ok()?),
            None => (text.parse().ok()?, 32),
        };
        (prefix <= 32).then_some(Cidr { ip, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) & self.mask())
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) | !self.mask())
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The `i`-th address of the subnet.
    fn nth(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + i as u32)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The private address blocks of RFC 1918.
fn is_private(subnet: &Cidr) -> bool {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|block| Cidr::parse(block))
        .any(|block| block.contains(subnet.network()) && block.prefix <= subnet.prefix)
}

/// The destinations of the routes of `ip -4 route show` lines, but the
/// default route (which every subnet overlaps).
fn route_destinations(routes: &BTreeSet<String>) -> Vec<Cidr> {
    routes
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|dest| *dest != "default")
        .filter_map(Cidr::parse)
        .collect()
}

/// The MAC address the stage 9 contract gives the container with address
/// `ip`: 02:42 then the address's four bytes (as Docker does).
fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

// ---------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------

/// `ping -c 1` of `ip` from container `id`, retried for up to
/// [`SETTLE`]: whether one echo came back.
fn ctr_pings(t: &T, id: &str, ip: Ipv4Addr) -> Result<(), String> {
    within(SETTLE, || {
        let out = t.in_ctr(id, &format!("ping -c 1 -W 2 {ip}"));
        if out.code == Some(0) {
            Ok(())
        } else {
            Err(format!("{out:#?}"))
        }
    })
}

/// `busybox ping -c 1` of `ip` from namespace `ns`, retried for up to
/// [`SETTLE`].
fn ns_pings(ns: &NetNs, ip: Ipv4Addr) -> Result<(), String> {
    within(SETTLE, || {
        let out = ns.sh(&format!("busybox ping -c 1 -W 2 {ip}"));
        if out.code == Some(0) {
            Ok(())
        } else {
            Err(format!("{out:#?}"))
        }
    })
}

/// An HTTP GET of `path` on `ip:port` from container `id`, with busybox
/// `nc` (busybox's wget is not to be trusted here): the whole answer.
fn ctr_http(t: &T, id: &str, ip: &str, port: u16, path: &str) -> Outcome {
    t.in_ctr(
        id,
        &format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port}"),
    )
}

/// [`ctr_http`], retried for up to [`SETTLE`] until the answer holds
/// `want`.
fn ctr_http_holds(
    t: &T,
    id: &str,
    ip: &str,
    port: u16,
    path: &str,
    want: &str,
) -> Result<String, String> {
    within(SETTLE, || {
        let out = ctr_http(t, id, ip, port, path);
        if out.code == Some(0) && out.stdout.contains(want) {
            Ok(out.stdout)
        } else {
            Err(format!("{out:#?}"))
        }
    })
}

/// What `fetch` of `url` from `ns` must give: the body `want`
/// (retried for up to [`SETTLE`], the server may still be starting).
fn assert_fetches(ns: &NetNs, url: &str, want: &str, why: &str) {
    match ns.fetch_within(url, SETTLE) {
        Ok(body) if body.trim() == want => {}
        Ok(body) => panic!("GET {url} from namespace {} should give `{want}`, the container's page ({why}); it gave `{body}`", ns.name()),
        Err(out) => panic!("GET {url} from namespace {} should give `{want}`, the container's page ({why}); it failed: {out:#?}", ns.name()),
    }
}

/// What `fetch` of `url` from `ns` must not do: get an answer.
fn assert_no_answer(ns: &NetNs, url: &str, why: &str) {
    let out = ns.fetch(url);
    assert!(
        out.code != Some(0),
        "GET {url} from namespace {} should get no answer ({why}); it got: {out:#?}",
        ns.name()
    );
}

/// A document root for a host's busybox httpd whose `/cgi-bin/addr` says
/// who asked: `from REMOTE_ADDR`, the source address of the connection
/// as the server saw it.
fn cgi_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("mydocker-net-www-")
        .tempdir()
        .expect("a document root");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("cgi-bin")).unwrap();
    let cgi = dir.path().join("cgi-bin/addr");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"from $REMOTE_ADDR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("index.html"), "host page\n").unwrap();
    dir
}

/// Start the host's busybox httpd on `ip:port` in `ns`, serving `root`,
/// and wait until it answers there.
fn host_httpd(ns: &NetNs, ip: Ipv4Addr, port: u16, root: &Path) -> mydocker_stage_tests::Spawned {
    let server = ns.spawn_sh(&format!(
        "exec /bin/busybox httpd -f -p {ip}:{port} -h '{}'",
        root.display()
    ));
    let url = format!("http://{ip}:{port}/");
    if let Err(out) = ns.fetch_within(&url, SETTLE) {
        panic!(
            "the test's own httpd in namespace {} should answer at {url}: {out:#?}",
            ns.name()
        );
    }
    server
}

// ---------------------------------------------------------------------
// One network
// ---------------------------------------------------------------------

/// Two containers on one network: each has `eth0` with an address of the
/// subnet (neither the network's, the gateway's nor the broadcast
/// address) and a default route through the gateway; they reach each
/// other by IP, with ping and over TCP; the host reaches them.
#[test]
fn two_containers_on_one_network_reach_each_other_by_ip() {
    let t = T::new();
    t.create_network("front", "10.88.0.0/24", &[]);
    let a = t.run_d(
        &["--net", "front", "--name", &t.name("a")],
        &t.sh(&format!(
            "while :; do echo pong-{} | nc -l -p 5000; done",
            t.tag()
        )),
    );
    let b = t.run_d(&["--net", "front", "--name", &t.name("b")], &t.busy());
    let subnet = Cidr::parse("10.88.0.0/24").unwrap();
    let (ip_a, ip_b) = (t.ip_of(&a), t.ip_of(&b));
    for (id, ip) in [(&a, ip_a), (&b, ip_b)] {
        assert!(
            subnet.contains(ip)
                && ![subnet.network(), subnet.nth(1), subnet.broadcast()].contains(&ip),
            "container {} should have a host address of 10.88.0.0/24 other than the gateway 10.88.0.1 (the IPAM never hands out the network's, the gateway's or the broadcast address); it has {ip}",
            &id[..12]
        );
        let routes = t.ctr_ok(id, "ip route");
        assert!(
            routes.lines().any(|l| l.starts_with("default via 10.88.0.1 ")),
            "container {} should have its default route through the gateway, the bridge's address 10.88.0.1: {routes}",
            &id[..12]
        );
    }
    assert_ne!(
        ip_a, ip_b,
        "two containers of one network get two addresses"
    );
    if let Err(e) = ctr_pings(&t, &a, ip_b).and_then(|()| ctr_pings(&t, &b, ip_a)) {
        panic!("containers {ip_a} and {ip_b} on one network should ping each other (their veths are ports of one bridge, which forwards frames between its ports): {e}");
    }
    let want = format!("pong-{}", t.tag());
    if let Err(e) = within(SETTLE, || {
        let out = t.in_ctr(&b, &format!("echo ping | nc -w 3 {ip_a} 5000"));
        if out.code == Some(0) && out.stdout.contains(&want) {
            Ok(())
        } else {
            Err(format!("{out:#?}"))
        }
    }) {
        panic!("a TCP connection from {ip_b} to {ip_a}:5000 (nc) should reach the server of the other container and bring back `{want}`: {e}");
    }
    let mut logs = String::new();
    eventually(SETTLE, || {
        logs = t.ok(&["logs", &a], "logs of a container");
        logs.contains("ping")
    });
    assert!(
        logs.contains("ping"),
        "the server in container {} should have received `ping` over TCP: its logs are {logs:?}",
        &a[..12]
    );
    if let Err(e) = ns_pings(&t.ns, ip_a) {
        panic!("the host should reach container {ip_a} through the bridge, which has the gateway address on the same subnet: {e}");
    }
    t.rm_f(&[&a, &b]);
    t.finish();
}

// ---------------------------------------------------------------------
// The default network
// ---------------------------------------------------------------------

/// `run` without `--net` puts the container on the default network,
/// `bridge` (device `mydocker0`), made on first use in a private /16 that
/// overlaps no route of the host: here the host routes 172.17.0.0/16 and
/// 172.18.0.0/16 elsewhere (as a VPN might), so those are taken.
#[test]
fn the_default_network_is_made_on_first_use_in_a_free_private_16() {
    let t = T::build(
        true,
        &format!(
            "ip route add 172.17.0.0/16 via {REMOTE_IP} && ip route add 172.18.0.0/16 via {REMOTE_IP}"
        ),
    );
    let listed = t.ok(&["network", "ls", "-q"], "network ls -q lists the networks");
    assert!(
        listed.trim().is_empty(),
        "before the first `run`, there should be no network at all (the default one is made on first use): {listed:?}"
    );
    let id = t.run_d(&[], &t.busy());
    let listed = t.ok(&["network", "ls", "-q"], "network ls -q lists the networks");
    assert_eq!(
        listed.lines().map(str::trim).collect::<Vec<_>>(),
        ["bridge"],
        "the first `run` without --net should have made the default network, `bridge`"
    );
    let bridge = t.inspected("bridge", "bridge");
    assert_eq!(
        bridge, "mydocker0",
        "the default network's bridge device is mydocker0 (as Docker's is docker0)"
    );
    let subnet = t.subnet_of("bridge");
    assert!(
        subnet.prefix == 16 && is_private(&subnet),
        "the default network's subnet should be a private /16 (RFC 1918), as Docker's docker0 is: {subnet}"
    );
    let taken = route_destinations(&t.before.routes);
    let clash: Vec<&Cidr> = taken.iter().filter(|r| r.overlaps(&subnet)).collect();
    assert!(
        clash.is_empty(),
        "the default network {subnet} overlaps routes the host already had ({clash:?}, all of them: {:?}): the host would no longer reach what those routes lead to; choose the first private /16 that overlaps no route",
        t.before.routes
    );
    let gateway: Ipv4Addr = t.inspected("bridge", "gateway").parse().unwrap();
    assert!(
        subnet.contains(gateway),
        "the gateway {gateway} is in {subnet}"
    );
    let want = format!("mydocker0 {gateway}/16");
    assert!(
        t.ns.addresses().contains(&want),
        "the bridge mydocker0 should hold the gateway address ({want}), the containers' way out: {:?}",
        t.ns.addresses()
    );
    let ip = t.ip_of(&id);
    assert!(
        subnet.contains(ip),
        "the container's address {ip} should be in the default network's {subnet}"
    );
    if let Err(e) = ctr_pings(&t, &id, gateway).and_then(|()| ctr_pings(&t, &id, OUTER_IP)) {
        panic!("the container should reach the gateway {gateway} and the host's own address {OUTER_IP} through its default route: {e}");
    }
    t.rm_f(&[&id]);
    t.finish();
}

/// A reboot empties the kernel (bridges, rules, ip_forward) but not the
/// files under `networks/`: the next `run` on a network makes it again.
/// Here the namespace is emptied as a reboot would empty it.
#[test]
fn a_network_the_host_lost_is_made_again_by_the_next_run() {
    let t = T::new();
    let net = t.name("net");
    t.create_network(&net, "10.77.0.0/24", &[]);
    let bridge = t.inspected(&net, "bridge");
    t.ns.must(&format!(
        "ip link del {bridge} && sysctl -qw net.ipv4.ip_forward=0 && \
         iptables -t nat -F && iptables -t nat -X && iptables -F && iptables -X"
    ));
    let id = t.run_d(&["--net", &net], &t.busy());
    assert!(
        t.ns.link(&bridge).is_some(),
        "`run --net {net}` should make the network's bridge {bridge} again when the host has lost it (after a reboot), as Docker does"
    );
    let gateway: Ipv4Addr = t.inspected(&net, "gateway").parse().unwrap();
    if let Err(e) = ctr_pings(&t, &id, gateway) {
        panic!("the container on the network made again should reach its gateway {gateway}: {e}");
    }
    assert_eq!(
        t.ns.ip_forward().trim(),
        "1",
        "the network made again routes again (net.ipv4.ip_forward = 1)"
    );
    let rules = t.ns.mydocker_rules();
    assert!(
        rules.iter().any(|r| r.contains("MASQUERADE")),
        "the network made again has its rules again (its MASQUERADE): {rules:?}"
    );
    t.rm_f(&[&id]);
    t.finish();
}

/// The bridge's MAC is the gateway's, which the containers keep in their
/// ARP caches: it must not change as containers come and go. (A bridge
/// given no MAC of its own takes the lowest of its ports' and changes it
/// when that port goes: the other containers are cut off until their ARP
/// entry expires.)
#[test]
fn the_bridge_keeps_its_mac_while_containers_come_and_go() {
    let t = T::new();
    let net = t.name("mac");
    t.create_network(&net, "10.78.0.0/24", &[]);
    let bridge = t.inspected(&net, "bridge");
    let mac = || {
        let link = t.ns.link(&bridge).unwrap_or_default();
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or("none")
            .to_string()
    };
    let first = mac();
    let gateway: Ipv4Addr = t.inspected(&net, "gateway").parse().unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| t.run_d(&["--net", &net], &t.busy()))
        .collect();
    for id in &ids {
        if let Err(e) = ctr_pings(&t, id, gateway) {
            panic!("a container of the network should reach its gateway {gateway}: {e}");
        }
    }
    assert_eq!(
        mac(),
        first,
        "the bridge {bridge}'s MAC (the gateway's, in every container's ARP cache) should not change when containers join it"
    );
    for (i, id) in ids.iter().enumerate() {
        t.rm_f(&[id]);
        assert_eq!(
            mac(),
            first,
            "the bridge {bridge}'s MAC should not change when a container leaves it: the others still send to the old one"
        );
        for other in &ids[i + 1..] {
            let out = t.in_ctr(other, &format!("ping -c 1 -W 2 {gateway}"));
            assert!(
                out.code == Some(0),
                "once a container is removed, the others should still reach the gateway at once: {out:#?}"
            );
        }
    }
    t.finish();
}

/// Images of systemd's world ship /etc/resolv.conf as a symlink into
/// /run, which leads nowhere in a container: such an image still runs,
/// with its other /etc files mounted.
#[test]
fn an_image_whose_resolv_conf_is_a_dangling_symlink_runs() {
    let t = T::new();
    let image = format!("stub{}", t.tag());
    let mut tar = tar::Builder::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox").expect("the host's static busybox");
    let mut add = |kind: tar::EntryType, path: &str, mode: u32, data: &[u8]| {
        tar_append(&mut tar, kind, path, mode, data)
    };
    add(tar::EntryType::Directory, "bin/", 0o755, b"");
    add(tar::EntryType::Regular, "bin/busybox", 0o755, &busybox);
    add(tar::EntryType::Symlink, "bin/sh", 0o777, b"busybox");
    add(tar::EntryType::Directory, "etc/", 0o755, b"");
    add(
        tar::EntryType::Symlink,
        "etc/resolv.conf",
        0o777,
        b"../run/systemd/resolve/stub-resolv.conf",
    );
    let bytes = tar.into_inner().unwrap();
    std::fs::create_dir_all(t.md.images()).unwrap();
    std::fs::write(t.md.images().join(format!("{image}.tar")), bytes).unwrap();
    for net in ["none", "bridge"] {
        let out = t.exec(&[
            "run",
            "--rm",
            "--net",
            net,
            &image,
            "/bin/busybox",
            "cat",
            "/etc/hostname",
        ]);
        assert!(
            out.code == Some(0) && !out.stdout.trim().is_empty(),
            "an image whose /etc/resolv.conf is a symlink that leads nowhere (systemd's stub) should still run (--net {net}), with its /etc/hostname: {out:#?}"
        );
    }
    std::fs::remove_file(t.md.images().join(format!("{image}.tar"))).unwrap();
    t.finish();
}

/// A container reaches hosts outside through NAT: the remote namespace,
/// which has no route to the containers' subnet, sees the connection come
/// from the host's address on the link (MASQUERADE), and answers it.
#[test]
fn a_container_reaches_the_outside_through_nat() {
    let t = T::with_remote();
    let root = cgi_root();
    let _remote_server = host_httpd(t.remote(), REMOTE_IP, 8000, root.path());
    let _host_server = host_httpd(&t.ns, OUTER_IP, 8001, root.path());
    let id = t.run_d(&[], &t.busy());
    let ip = t.ip_of(&id);
    assert_eq!(
        t.ns.ip_forward(),
        "1",
        "with a bridge network, the host must forward packets between its interfaces (net.ipv4.ip_forward = 1) for containers to reach beyond it"
    );
    let answer = ctr_http_holds(
        &t,
        &id,
        &REMOTE_IP.to_string(),
        8000,
        "/cgi-bin/addr",
        "from ",
    );
    let answer = answer.unwrap_or_else(|e| {
        panic!("container {ip} should reach the remote host's server {REMOTE_IP}:8000: the remote host has no route back to the containers' subnet, so the answer comes back only if the packet left with the host's address (MASQUERADE for the subnet, out of any interface but the bridge) and the host forwards (ip_forward = 1): {e}")
    });
    assert!(
        answer.contains(&format!("from {OUTER_IP}")),
        "the remote server should see the connection come from the host's address on the link, {OUTER_IP} (MASQUERADE rewrote the source), not from the container's {ip}: {answer}"
    );
    if let Err(e) = ctr_http_holds(
        &t,
        &id,
        &OUTER_IP.to_string(),
        8001,
        "/cgi-bin/addr",
        "from ",
    ) {
        panic!("container {ip} should reach a server of the host itself, on {OUTER_IP} (not the bridge's address), through its default route: {e}");
    }
    t.rm_f(&[&id]);
    t.finish();
}

// ---------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------

/// `-p 8080:80` reaches the container's httpd from another host (DNAT in
/// PREROUTING), from the host itself on its own address (DNAT in OUTPUT)
/// and on its 127.0.0.1 (route_localnet and a MASQUERADE of 127.0.0.0/8
/// out of the bridge); `-p 127.0.0.1:8081:80` only on 127.0.0.1; nothing
/// on ports that are not mapped. Every rule is mydocker's, recognisably,
/// and goes with the container.
#[test]
fn a_published_port_is_reachable_from_outside_from_the_host_and_from_its_loopback() {
    let t = T::with_remote();
    let page = format!("page-{}", t.token);
    let id = t.run_d(&["-p", "8080:80", "-p", "127.0.0.1:8081:80"], &t.web(&page));
    let ip = t.ip_of(&id);
    assert_fetches(
        &t.ns,
        &format!("http://{ip}/"),
        &page,
        "the container's own address, through the bridge",
    );
    assert_fetches(
        t.remote(),
        &format!("http://{OUTER_IP}:8080/"),
        &page,
        "-p 8080:80 from another host: DNAT in PREROUTING to the container, then forwarded",
    );
    assert_fetches(
        &t.ns,
        &format!("http://{OUTER_IP}:8080/"),
        &page,
        "-p 8080:80 from the host itself: its own packets never cross PREROUTING, so the DNAT must be in OUTPUT too (for local destinations)",
    );
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8080/",
        &page,
        "-p 8080:80 on the host's 127.0.0.1: the kernel routes 127.0.0.0/8 to another interface only with route_localnet = 1 on the bridge, and the answer returns only if the source 127.0.0.1 is masqueraded out of the bridge",
    );
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8081/",
        &page,
        "-p 127.0.0.1:8081:80 maps 127.0.0.1:8081",
    );
    assert_no_answer(
        &t.ns,
        &format!("http://{OUTER_IP}:8081/"),
        "-p 127.0.0.1:8081:80 maps that address only (the DNAT has -d 127.0.0.1)",
    );
    assert_no_answer(
        t.remote(),
        &format!("http://{OUTER_IP}:8081/"),
        "-p 127.0.0.1:8081:80 maps that address only",
    );
    for (ns, url, why) in [
        (
            &t.ns,
            format!("http://{OUTER_IP}:8082/"),
            "port 8082 is not mapped",
        ),
        (
            &t.ns,
            "http://127.0.0.1:8082/".to_string(),
            "port 8082 is not mapped",
        ),
        (
            t.remote(),
            format!("http://{OUTER_IP}:80/"),
            "the container's port 80 is reached through 8080 only: nothing maps the host's port 80",
        ),
        (
            &t.ns,
            format!("http://{OUTER_IP}:80/"),
            "nothing maps the host's port 80",
        ),
    ] {
        assert_no_answer(ns, &url, why);
    }
    assert_rules_are_mydockers(&t);
    let save = t.ns.iptables_save();
    assert!(
        save.contains("--dport 8080") && save.contains("--dport 8081"),
        "iptables-save should show the DNAT rules of ports 8080 and 8081:\n{save}"
    );
    t.rm_f(&[&id]);
    let save = t.ns.iptables_save();
    assert!(
        !save.contains("--dport 8080") && !save.contains(&id[..12]),
        "once the container is removed, no rule of its ports may remain:\n{save}"
    );
    assert_no_answer(
        &t.ns,
        "http://127.0.0.1:8080/",
        "the container that had port 8080 is removed",
    );
    t.finish();
}

/// Every iptables rule that appeared since the test began is mydocker's,
/// recognisably: in a chain whose name says MYDOCKER, or a jump to one,
/// or with a comment that says mydocker.
fn assert_rules_are_mydockers(t: &T) {
    let now = netns::Ruleset::parse(&t.ns.iptables_save());
    let new: Vec<String> = now
        .differences_from(&t.before.rules)
        .into_iter()
        .filter(|line| line.starts_with("iptables rule added"))
        .filter(|line| !line.to_lowercase().contains("mydocker"))
        .collect();
    assert!(
        new.is_empty(),
        "every rule mydocker adds must be recognisable as its own (in a chain of its own, or with a `mydocker` comment), so that it can be found and removed exactly: {new:#?}"
    );
}

/// A host port already mapped, by a container of any network, is refused
/// in one line before anything is made; another port is fine; once the
/// container that had it is removed, the port can be mapped again.
#[test]
fn a_host_port_already_mapped_is_refused() {
    let t = T::new();
    t.create_network("ports", "10.89.0.0/24", &[]);
    let page_a = format!("a-{}", t.token);
    let a = t.run_d(
        &["--net", "ports", "-p", "8080:80", "--name", &t.name("a")],
        &t.web(&page_a),
    );
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8080/",
        &page_a,
        "-p 8080:80 maps the host's port 8080",
    );
    // The default network exists before the refused run on it, which can
    // then make nothing at all (making it on first use is no mistake).
    t.ok(
        &["run", "--rm", IMAGE, "true"],
        "a run on the default network",
    );
    let links = t.ns.links();
    let rules = t.ns.iptables_save();
    let endpoints = t.endpoint_files("ports");
    let running = t.ok(&["ps", "-q"], "ps lists the running containers");
    for net in ["ports", "bridge"] {
        let out = t.exec(&run_d_args(&["--net", net, "-p", "8080:80"], &t.busy()));
        assert!(
            out.code == Some(125)
                && out.stderr.trim().lines().count() == 1
                && out.stderr.contains("8080"),
            "`run -p 8080:80 --net {net}` while container {} maps the host's port 8080 should be refused with one line that names the port, exit 125 (one port of the host leads to one container): {out:#?}",
            &a[..12]
        );
        assert_eq!(
            t.ok(&["ps", "-q"], "ps lists the running containers"),
            running,
            "the refused run must not start a container"
        );
        assert_eq!(t.ns.links(), links, "the refused run must make no veth");
        assert_eq!(
            netns::Ruleset::parse(&t.ns.iptables_save())
                .tables
                .get("nat")
                .map(|n| &n.1),
            netns::Ruleset::parse(&rules)
                .tables
                .get("nat")
                .map(|n| &n.1),
            "the refused run must add no rule"
        );
        assert_eq!(
            t.endpoint_files("ports"),
            endpoints,
            "the refused run must leave no endpoint"
        );
    }
    remove_refused_records(&t, &[&a]);
    let page_d = format!("d-{}", t.token);
    let d = t.run_d(&["--net", "ports", "-p", "8081:80"], &t.web(&page_d));
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8081/",
        &page_d,
        "another port of the host is free",
    );
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8080/",
        &page_a,
        "port 8080 still leads to the first container",
    );
    t.rm_f(&[&a]);
    let page_e = format!("e-{}", t.token);
    let e = t.run_d(&["--net", "ports", "-p", "8080:80"], &t.web(&page_e));
    assert_fetches(&t.ns, "http://127.0.0.1:8080/", &page_e, "the container that had port 8080 is removed: the port is free again, and leads to the new one");
    // A port that a service of the host listens on is not free either: a
    // DNAT would silently take its packets.
    let service = t.ns.spawn_sh("exec busybox nc -l -p 7070");
    let listening = eventually(Duration::from_secs(5), || {
        t.ns.sh("ss -Hltn 'sport = :7070'").stdout.contains("7070")
    });
    assert!(listening, "the host's service should listen on port 7070");
    let out = t.exec(&run_d_args(&["--net", "ports", "-p", "7070:80"], &t.busy()));
    assert!(
        out.code == Some(125) && out.stderr.contains("7070") && out.stderr.lines().count() == 1,
        "-p 7070:80 must be refused in one line naming the port while a service of the host listens on it: {out:#?}"
    );
    drop(service);
    remove_refused_records(&t, &[&d, &e]);
    t.rm_f(&[&d, &e]);
    t.finish();
}

/// Remove the records (if any) that refused runs left, all but `keep`:
/// whether a run refused at start keeps a record is not what these tests
/// are about.
fn remove_refused_records(t: &T, keep: &[&str]) {
    let listed = t.ok(&["ps", "-aq"], "ps -a lists the containers");
    for short in listed.split_whitespace() {
        if !keep.iter().any(|k| k.starts_with(short)) {
            t.ok(&["rm", "-f", short], "rm -f of a refused run's record");
        }
    }
}

// ---------------------------------------------------------------------
// The other modes
// ---------------------------------------------------------------------

/// `--net none`: a network namespace of its own with only `lo`; nothing
/// is made on the host.
#[test]
fn net_none_has_only_lo() {
    let t = T::new();
    let id = t.run_d(&["--net", "none"], &t.busy());
    let links = t.links_in(&id);
    assert_eq!(
        links,
        BTreeSet::from(["lo".to_string()]),
        "with --net none the container has a network namespace of its own with only lo"
    );
    let up = t.ctr_ok(&id, "ip -o link show lo");
    assert!(
        up.contains("UP"),
        "lo is up in a --net none container (127.0.0.1 works): {up}"
    );
    let (init, _) = container_processes(&id);
    assert_ne!(
        net_ns_of(init),
        format!("net:[{}]", netns_inode(&t.ns)),
        "with --net none the container has a network namespace of its own, not the host's"
    );
    assert_eq!(
        t.ns.links(),
        t.before.links,
        "--net none makes no link on the host"
    );
    let listed = t.ok(&["network", "ls", "-q"], "network ls -q");
    assert!(
        listed.trim().is_empty(),
        "--net none makes no network (not even the default one): {listed}"
    );
    assert!(t.ns.mydocker_rules().is_empty(), "--net none adds no rule");
    t.rm_f(&[&id]);
    t.finish();
}

/// `--net host`: the container is in the host's network namespace and
/// sees its links and addresses; nothing is made for it.
#[test]
fn net_host_sees_the_outer_namespace_links() {
    let t = T::with_remote();
    let id = t.run_d(&["--net", "host"], &t.busy());
    let (init, _) = container_processes(&id);
    assert_eq!(
        net_ns_of(init),
        format!("net:[{}]", netns_inode(&t.ns)),
        "with --net host the container's PID 1 is in the network namespace of the host (here the test's namespace, where mydocker ran)"
    );
    assert_eq!(
        t.links_in(&id),
        t.ns.links(),
        "with --net host the container sees the host's links (lo and {UPLINK})"
    );
    let addresses = t.ctr_ok(&id, "ip -o -4 addr show");
    assert!(
        addresses.contains(&format!("{OUTER_IP}/")),
        "with --net host the container has the host's addresses ({OUTER_IP}): {addresses}"
    );
    assert_eq!(t.ns.links(), t.before.links, "--net host makes no link");
    let listed = t.ok(&["network", "ls", "-q"], "network ls -q");
    assert!(
        listed.trim().is_empty(),
        "--net host makes no network: {listed}"
    );
    assert!(t.ns.mydocker_rules().is_empty(), "--net host adds no rule");
    t.rm_f(&[&id]);
    t.finish();
}

/// `--net container:C`: the container joins C's network namespace: the
/// same interfaces and address, and C's localhost (a server that C runs
/// on 127.0.0.1 answers it, and not the host); it has no endpoint of its
/// own, and removing it leaves C's network alone.
#[test]
fn net_container_shares_the_other_containers_interfaces_and_localhost() {
    let t = T::new();
    t.create_network("shared", "10.90.0.0/24", &[]);
    let page = format!("local-{}", t.token);
    let c_name = t.name("c");
    let c = t.run_d(
        &["--net", "shared", "--name", &c_name],
        &t.sh(&format!(
            "mkdir -p /www && echo '{page}' > /www/index.html && \
             {{ httpd -f -p 127.0.0.1:7000 -h /www & }}; while :; do sleep 1; done"
        )),
    );
    let d = t.run_d(&["--net", &format!("container:{c_name}")], &t.busy());
    let (c_init, _) = container_processes(&c);
    let (d_init, _) = container_processes(&d);
    assert_eq!(
        net_ns_of(d_init),
        net_ns_of(c_init),
        "with --net container:{c_name} the container's PID 1 is in the network namespace of {c_name}'s"
    );
    assert_eq!(
        t.links_in(&d),
        t.links_in(&c),
        "--net container:{c_name} sees the interfaces of {c_name}"
    );
    assert_eq!(
        t.ip_of(&d),
        t.ip_of(&c),
        "--net container:{c_name} has {c_name}'s address"
    );
    if let Err(e) = ctr_http_holds(&t, &d, "127.0.0.1", 7000, "/", &page) {
        panic!("a server that {c_name} runs on 127.0.0.1:7000 should answer the container that shares its network namespace (one lo for both): {e}");
    }
    assert_no_answer(
        &t.ns,
        "http://127.0.0.1:7000/",
        "the container's 127.0.0.1 is its own namespace's lo, not the host's",
    );
    let endpoints = t.endpoints("shared");
    assert_eq!(
        endpoints.len(),
        1,
        "--net container:{c_name} makes no endpoint: network shared has {c_name}'s only: {endpoints:?}"
    );
    t.rm_f(&[&d]);
    let ip = t.ip_of(&c);
    if let Err(e) = ns_pings(&t.ns, ip) {
        panic!("removing the container that shared {c_name}'s namespace must not touch {c_name}'s network: {ip} should still answer: {e}");
    }
    assert_eq!(t.endpoints("shared").len(), 1, "{c_name}'s endpoint stays");
    t.rm_f(&[&c]);
    t.finish();
}

/// The network namespace behind /proc/PID/ns/net (`net:[INODE]`).
fn net_ns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/net: {e}"))
}

/// The inode of a namespace of the test's.
fn netns_inode(ns: &NetNs) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ns.path())
        .unwrap_or_else(|e| panic!("stat {}: {e}", ns.path().display()))
        .ino()
}

// ---------------------------------------------------------------------
// IPAM
// ---------------------------------------------------------------------

/// A /16 network (65536 addresses: a bitmap of 8192 bytes, bigger than
/// any small fixed buffer) works: containers get distinct addresses of
/// it; and it can be removed. So can a /12.
#[test]
fn a_slash_16_network_works_and_can_be_removed() {
    let t = T::new();
    for (name, subnet) in [("big", "10.77.0.0/16"), ("bigger", "172.20.0.0/14")] {
        t.create_network(name, subnet, &[]);
        let cidr = Cidr::parse(subnet).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|_| t.run_d(&["--net", name], &t.busy()))
            .collect();
        let ips: BTreeSet<Ipv4Addr> = ids.iter().map(|id| t.ip_of(id)).collect();
        assert_eq!(
            ips.len(),
            3,
            "three containers of {subnet} get three addresses: {ips:?}"
        );
        assert!(
            ips.iter().all(|ip| cidr.contains(*ip)),
            "the addresses {ips:?} are in {subnet}"
        );
        assert_eq!(
            t.allocated(name),
            ips,
            "the IPAM's bitmap of {subnet} should hold exactly the containers' addresses"
        );
        let first = *ips.iter().next().unwrap();
        if let Err(e) = ns_pings(&t.ns, first) {
            panic!("the host should reach {first}, a container of {subnet}: {e}");
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        t.rm_f(&refs);
        assert!(
            t.allocated(name).is_empty(),
            "once its containers are removed, {subnet}'s bitmap should be empty (but for its own, gateway and broadcast addresses)"
        );
        let bridge = t.inspected(name, "bridge");
        let out = t.exec(&["network", "rm", name]);
        assert!(
            out.code == Some(0) && out.stdout == format!("{name}\n"),
            "`network rm {name}` of an unused {subnet} network should work and print its name (a bitmap read into a small fixed buffer would fail here): {out:#?}"
        );
        assert!(
            t.ns.link(&bridge).is_none(),
            "network rm {name} removes its bridge {bridge}"
        );
        assert!(
            !t.networks_dir().join(name).exists(),
            "network rm {name} removes networks/{name}"
        );
    }
    t.finish();
}

/// A /29 has 8 addresses: the network's, the gateway's and the broadcast
/// address leave 5 for containers, .2 to .6. A sixth is refused in one
/// line that says the network is full, and leaves nothing; once the five
/// are removed, five fit again.
#[test]
fn a_slash_29_network_holds_exactly_five_containers() {
    let t = T::new();
    t.create_network("small", "10.66.0.0/29", &[]);
    let want: BTreeSet<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 66, 0, i)).collect();
    for round in ["first", "second"] {
        let ids: Vec<String> = (0..5)
            .map(|_| t.run_d(&["--net", "small"], &t.busy()))
            .collect();
        let ips: BTreeSet<Ipv4Addr> = ids.iter().map(|id| t.ip_of(id)).collect();
        assert_eq!(
            ips, want,
            "({round} round) five containers of 10.66.0.0/29 get 10.66.0.2 to .6: .0 is the network's, .1 the gateway's, .7 the broadcast address"
        );
        let links = t.ns.links();
        let endpoints = t.endpoint_files("small");
        let out = t.exec(&run_d_args(&["--net", "small"], &t.busy()));
        assert!(
            out.code == Some(125) && out.stderr.trim().lines().count() == 1,
            "({round} round) a sixth container on a full /29 should be refused with one line and exit 125: {out:#?}"
        );
        assert!(
            ["full", "small", "10.66.0.0/29"]
                .iter()
                .any(|w| out.stderr.contains(w)),
            "the refusal should say that network small (10.66.0.0/29) is full: {out:#?}"
        );
        assert_eq!(
            t.ns.links(),
            links,
            "the refused sixth container must leave no veth"
        );
        assert_eq!(
            t.endpoint_files("small"),
            endpoints,
            "the refused sixth container must leave no endpoint"
        );
        assert_eq!(
            t.allocated("small"),
            want,
            "the refused sixth container must leave the bitmap as it was"
        );
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        remove_refused_records(&t, &refs);
        t.rm_f(&refs);
        assert!(
            t.allocated("small").is_empty(),
            "({round} round) once the five are removed, their addresses are free again: {:?}",
            t.allocated("small")
        );
    }
    t.finish();
}

/// The gateway is never handed to a container, wherever it is: a /30
/// has room for one container, which gets the address the gateway does
/// not have.
#[test]
fn the_gateway_is_never_handed_to_a_container() {
    let t = T::new();
    for (name, subnet, gateway, free) in [
        ("low", "10.67.0.0/30", None, Ipv4Addr::new(10, 67, 0, 2)),
        (
            "high",
            "10.67.1.0/30",
            Some("10.67.1.2"),
            Ipv4Addr::new(10, 67, 1, 1),
        ),
    ] {
        let options: Vec<&str> = match gateway {
            Some(g) => vec!["--gateway", g],
            None => vec![],
        };
        t.create_network(name, subnet, &options);
        let id = t.run_d(&["--net", name], &t.busy());
        assert_eq!(
            t.ip_of(&id),
            free,
            "a /30 ({subnet}, gateway {}) holds one container, at the one address that is neither the network's, the broadcast nor the gateway's",
            gateway.unwrap_or("the first address")
        );
        if let Err(e) = ctr_pings(&t, &id, t.inspected(name, "gateway").parse().unwrap()) {
            panic!("the container of {subnet} should reach its gateway: {e}");
        }
        let out = t.exec(&run_d_args(&["--net", name], &t.busy()));
        assert!(
            out.code == Some(125) && out.stderr.trim().lines().count() == 1,
            "a second container on a /30 should be refused in one line with 125 (the gateway is not handed out): {out:#?}"
        );
        remove_refused_records(&t, &[&id]);
        t.rm_f(&[&id]);
    }
    t.finish();
}

/// 20 `run -d` at once, all on the default network (made by whichever
/// comes first): 20 containers with 20 distinct addresses, each the one
/// its endpoint names.
#[test]
fn twenty_parallel_runs_get_twenty_distinct_addresses() {
    let t = T::new();
    let barrier = Barrier::new(20);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    t.exec(&run_d_args(&[], &t.busy()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run's thread"))
            .collect()
    });
    let mut ids = Vec::new();
    for out in &outcomes {
        let id = out.stdout.trim().to_string();
        if is_full_id(&id) {
            t.made(&id);
            ids.push(id);
        }
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.code != Some(0)).collect();
    assert!(
        failed.is_empty() && ids.len() == 20,
        "20 parallel `run -d` on the default network should all work (the first one makes the network, the others wait for it under the lock): {failed:#?}"
    );
    let mut ips = BTreeMap::new();
    for id in &ids {
        ips.insert(t.ip_of(id), id.clone());
    }
    assert_eq!(
        ips.len(),
        20,
        "20 containers started at once should have 20 distinct addresses (the IPAM's bitmap is read and written under a lock): {ips:?}"
    );
    let endpoints = t.endpoints("bridge");
    let named: BTreeMap<Ipv4Addr, String> = endpoints
        .iter()
        .filter_map(|e| {
            Some((
                e.get("ip")?.as_str()?.parse().ok()?,
                e.get("container")?.as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(
        named, ips,
        "`network inspect bridge` should list each container's endpoint with the address the container has"
    );
    assert_eq!(
        t.allocated("bridge"),
        ips.keys().copied().collect(),
        "the bitmap should hold the 20 addresses, no more"
    );
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    t.rm_f(&refs);
    t.finish();
}

/// A stopped container holds no address: `stop` releases its endpoint
/// (veth, address, endpoint file), so that on a /30 (room for one)
/// another container can run; `start` allocates one again and the
/// container is reachable at it.
#[test]
fn addresses_are_released_on_stop_and_allocated_again_on_start() {
    let t = T::new();
    t.create_network("one", "10.91.0.0/30", &[]);
    let only = Ipv4Addr::new(10, 91, 0, 2);
    let a = t.run_d(&["--net", "one", "--name", &t.name("a")], &t.busy());
    assert_eq!(
        t.ip_of(&a),
        only,
        "the one container of a /30 has its one free address"
    );
    let veth_a = endpoint_veth(&t, "one", &a);
    t.ok(&["stop", "-t", "0", &a], "stop of a running container");
    assert!(
        eventually(Duration::from_secs(5), || t
            .endpoint_files("one")
            .is_empty()),
        "a stopped container keeps no endpoint: networks/one/endpoints/ should be empty: {:?}",
        t.endpoint_files("one")
    );
    assert!(
        t.allocated("one").is_empty(),
        "a stopped container's address is released"
    );
    assert!(
        t.ns.link(&veth_a).is_none(),
        "a stopped container's veth {veth_a} is gone"
    );
    let b = t.run_d(&["--net", "one", "--name", &t.name("b")], &t.busy());
    assert_eq!(
        t.ip_of(&b),
        only,
        "with the stopped container's address released, the /30 has room for another container"
    );
    t.ok(&["stop", "-t", "0", &b], "stop of a running container");
    assert!(
        eventually(Duration::from_secs(5), || t.allocated("one").is_empty()),
        "the second container's address is released on stop too"
    );
    t.ok(&["start", &a], "start of a stopped container");
    assert_eq!(
        t.ip_of(&a),
        only,
        "start allocates an address again: the free one"
    );
    assert_eq!(
        t.allocated("one"),
        BTreeSet::from([only]),
        "the restarted container's address is in the bitmap again"
    );
    if let Err(e) = ns_pings(&t.ns, only) {
        panic!("the restarted container should be reachable at {only}: {e}");
    }
    let out = t.exec(&["start", &b]);
    assert!(
        out.code != Some(0),
        "while the first container holds the /30's one address, starting the second should fail: {out:#?}"
    );
    t.rm_f(&[&a, &b]);
    t.finish();
}

/// The host end of container `id`'s veth on network `name`, from its
/// endpoint in `network inspect`; it must exist.
fn endpoint_veth(t: &T, name: &str, id: &str) -> String {
    let endpoints = t.endpoints(name);
    let endpoint = endpoints
        .iter()
        .find(|e| e.get("container").and_then(Json::as_str) == Some(id))
        .unwrap_or_else(|| {
            panic!(
                "network {name} should list container {}: {endpoints:?}",
                &id[..12]
            )
        });
    let veth = endpoint
        .get("veth")
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("an endpoint names its veth: {endpoint:?}"))
        .to_string();
    assert!(
        t.ns.link(&veth).is_some(),
        "the endpoint's veth {veth} should be a link of the host: {:?}",
        t.ns.links()
    );
    veth
}

// ---------------------------------------------------------------------
// Releasing
// ---------------------------------------------------------------------

/// After `kill -9` of a container's monitor, nothing runs to release its
/// endpoint: `rm -f` must, from the endpoint file (veth, port rules,
/// address, file). After `kill -9` of a container's PID 1, its monitor
/// releases it by itself.
#[test]
fn after_kill_9_rm_f_releases_the_endpoint() {
    let t = T::new();
    t.create_network("k", "10.92.0.0/24", &[]);
    let page = format!("k-{}", t.token);
    let a = t.run_d(&["--net", "k", "-p", "8080:80"], &t.web(&page));
    assert_fetches(&t.ns, "http://127.0.0.1:8080/", &page, "-p 8080:80");
    let veth = endpoint_veth(&t, "k", &a);
    let ip = t.ip_of(&a);
    let (init, _) = container_processes(&a);
    let monitor = parent_of(init).expect("the container's PID 1 has a parent");
    signal(monitor, libc::SIGKILL);
    t.ok(&["rm", "-f", &a], "rm -f after the monitor was killed");
    assert!(
        eventually(Duration::from_secs(5), || t.ns.link(&veth).is_none()),
        "after rm -f, the container's veth {veth} should be gone"
    );
    assert!(
        t.endpoint_files("k").is_empty(),
        "after rm -f, the endpoint file of the container whose monitor was killed should be removed: {:?}",
        t.endpoint_files("k")
    );
    assert!(
        !t.allocated("k").contains(&ip),
        "after rm -f, the address {ip} of the container whose monitor was killed should be free again"
    );
    let save = t.ns.iptables_save();
    assert!(
        !save.contains(&a[..12]) && !save.contains("--dport 8080"),
        "after rm -f, the port rules of the container whose monitor was killed should be gone (found by their comment, not by a live process):\n{save}"
    );
    assert_no_answer(
        &t.ns,
        "http://127.0.0.1:8080/",
        "the container that had port 8080 is removed",
    );

    let b = t.run_d(&["--net", "k", "-p", "8080:80"], &t.web(&page));
    assert_fetches(
        &t.ns,
        "http://127.0.0.1:8080/",
        &page,
        "port 8080 was released by rm -f, so it can be mapped again",
    );
    let veth = endpoint_veth(&t, "k", &b);
    let (init, _) = container_processes(&b);
    signal(init, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(10), || t.endpoint_files("k").is_empty()
            && t.ns.link(&veth).is_none()
            && !t.ns.iptables_save().contains("--dport 8080")),
        "after kill -9 of a container's PID 1, its monitor should release its endpoint (veth {veth}, port rules, endpoint file) by itself: endpoints {:?}, links {:?}, rules {:?}",
        t.endpoint_files("k"),
        t.ns.links(),
        t.ns.mydocker_rules()
    );
    assert!(
        t.allocated("k").is_empty(),
        "the killed container's address is released"
    );
    t.ok(&["rm", &b], "rm of the exited container");
    t.finish();
}

// ---------------------------------------------------------------------
// The network commands
// ---------------------------------------------------------------------

/// `network rm` of a network that containers use, running or stopped, is
/// refused in one line that names them, and changes nothing; once they
/// are removed it works. The default network too.
#[test]
fn network_rm_is_refused_while_containers_use_it() {
    let t = T::new();
    t.create_network("used", "10.93.0.0/24", &[]);
    let (name_a, name_b) = (t.name("running"), t.name("exited"));
    let a = t.run_d(&["--net", "used", "--name", &name_a], &t.busy());
    let out = t.exec(&["run", "--net", "used", "--name", &name_b, IMAGE, "true"]);
    assert_eq!(out.code, Some(0), "a container that ends at once: {out:#?}");
    let bridge = t.inspected("used", "bridge");
    for (users, left) in [
        (vec![&name_a, &name_b], "running and exited"),
        (vec![&name_b], "exited"),
    ] {
        let out = t.exec(&["network", "rm", "used"]);
        assert!(
            out.code == Some(125) && out.stderr.trim().lines().count() == 1,
            "`network rm used` while {left} containers use it should be refused in one line with 125: a stopped container would not start again without its network: {out:#?}"
        );
        for user in users {
            assert!(
                out.stderr.contains(user.as_str()),
                "the refusal should name the container {user} that uses the network: {out:#?}"
            );
        }
        assert!(
            t.ns.link(&bridge).is_some(),
            "the refused network rm keeps the bridge {bridge}"
        );
        assert!(
            t.networks_dir().join("used/network.json").exists(),
            "the refused network rm keeps networks/used/network.json"
        );
        if left == "running and exited" {
            t.rm_f(&[&a]);
        }
    }
    t.ok(&["rm", &name_b], "rm of an exited container");
    let out = t.exec(&["network", "rm", "used"]);
    assert!(
        out.code == Some(0) && out.stdout == "used\n",
        "with its containers removed, `network rm used` should work and print its name: {out:#?}"
    );
    assert!(
        t.ns.link(&bridge).is_none(),
        "network rm removes the bridge {bridge}"
    );
    assert!(
        !t.networks_dir().join("used").exists(),
        "network rm removes networks/used"
    );

    let c = t.run_d(&[], &t.busy());
    let out = t.exec(&["network", "rm", "bridge"]);
    assert!(
        out.code == Some(125) && out.stderr.trim().lines().count() == 1,
        "`network rm bridge` while a container uses the default network should be refused in one line: {out:#?}"
    );
    t.rm_f(&[&c]);
    let out = t.exec(&["network", "rm", "bridge"]);
    assert!(
        out.code == Some(0) && out.stdout == "bridge\n",
        "the unused default network can be removed (run makes it again): {out:#?}"
    );
    assert!(
        t.ns.link("mydocker0").is_none(),
        "network rm bridge removes mydocker0"
    );
    t.finish();
}

/// Overlapping subnets, invalid CIDRs, gateways, names and drivers are
/// refused in one line with exit 125, and make nothing: no network, no
/// link, no rule, no file. So are `run`s with an unknown network, a bad
/// `-p`, or `-p` without a bridge network.
#[test]
fn bad_networks_and_ports_are_refused_in_one_line_and_make_nothing() {
    let t = T::new();
    t.create_network("base", "10.94.0.0/16", &[]);
    let other = t.run_d(&["--net", "none", "--name", &t.name("other")], &t.busy());
    let listed = t.ok(&["network", "ls", "-q"], "network ls -q");
    let links = t.ns.links();
    let rules = t.ns.iptables_save();
    let files = t.network_files();
    let long = "n".repeat(65);
    let create = |subnet: &str, more: &[&str], name: &str| -> Vec<String> {
        let mut args = vec!["network".to_string(), "create".to_string()];
        args.extend(more.iter().map(|s| s.to_string()));
        args.extend(["--subnet".to_string(), subnet.to_string(), name.to_string()]);
        args
    };
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (
            create("10.94.1.0/24", &[], "inside"),
            "a subnet inside another network's",
        ),
        (
            create("10.0.0.0/8", &[], "around"),
            "a subnet around another network's",
        ),
        (
            create("10.94.0.0/16", &[], "same"),
            "the subnet of another network",
        ),
        (
            create("10.95.0.0/24", &[], "base"),
            "the name of an existing network",
        ),
        (create("10.95.0.0/33", &[], "n1"), "a prefix over 32"),
        (create("10.95.0.0", &[], "n1"), "no prefix"),
        (create("300.1.2.3/24", &[], "n1"), "not an address"),
        (create("ten/24", &[], "n1"), "not an address"),
        (create("", &[], "n1"), "an empty subnet"),
        (create("10.95.0.0/24/1", &[], "n1"), "not CIDR"),
        (create("10.0.0.0/7", &[], "n1"), "a prefix under 8"),
        (
            create("10.95.0.0/31", &[], "n1"),
            "a /31: no room for a gateway and a container",
        ),
        (create("10.95.0.0/32", &[], "n1"), "a /32"),
        (
            create("fd00::/64", &[], "n1"),
            "IPv6: the networks are IPv4",
        ),
        (
            create("10.95.0.0/24", &["--gateway", "10.96.0.1"], "n1"),
            "a gateway outside the subnet",
        ),
        (
            create("10.95.0.0/24", &["--gateway", "10.95.0.0"], "n1"),
            "the network's own address as gateway",
        ),
        (
            create("10.95.0.0/24", &["--gateway", "10.95.0.255"], "n1"),
            "the broadcast address as gateway",
        ),
        (
            create("10.95.0.0/24", &["--gateway", "gw"], "n1"),
            "a gateway that is not an address",
        ),
        (
            create("10.95.0.0/24", &["--driver", "overlay"], "n1"),
            "a driver mydocker does not have",
        ),
        (
            create("10.95.0.0/24", &["--driver", "macvlan"], "n1"),
            "a driver mydocker does not have",
        ),
        (
            create("10.95.0.0/24", &["--driver", ""], "n1"),
            "an empty driver",
        ),
        (
            create("10.95.0.0/24", &["--driver", "host"], "n1"),
            "host is a mode of --net, not a driver",
        ),
        (
            vec!["network".into(), "rm".into(), "nosuch".into()],
            "an unknown network",
        ),
        (
            vec!["network".into(), "inspect".into(), "nosuch".into()],
            "an unknown network",
        ),
        (
            run_d_args(&["--net", "nosuch"], &t.busy()),
            "an unknown network",
        ),
        (
            run_d_args(&["--net", "container:nosuch"], &t.busy()),
            "an unknown container",
        ),
        (
            run_d_args(&["--net", "none", "-p", "8080:80"], &t.busy()),
            "-p needs a bridge network",
        ),
        (
            run_d_args(&["--net", "host", "-p", "8080:80"], &t.busy()),
            "-p needs a bridge network",
        ),
        (
            run_d_args(
                &[
                    "--net",
                    &format!("container:{}", t.name("other")),
                    "-p",
                    "8080:80",
                ],
                &t.busy(),
            ),
            "-p needs a bridge network of the container's own",
        ),
        (
            run_d_args(&["--net", "base", "-p", "abc:80"], &t.busy()),
            "a port that is not a number",
        ),
        (
            run_d_args(&["--net", "base", "-p", "70000:80"], &t.busy()),
            "a port over 65535",
        ),
        (
            run_d_args(&["--net", "base", "-p", "8080:0"], &t.busy()),
            "port 0",
        ),
        (
            run_d_args(&["--net", "base", "-p", "8080:80/sctp"], &t.busy()),
            "a protocol other than tcp and udp",
        ),
        (
            run_d_args(&["--net", "base", "-p", "1.2.3:8080:80"], &t.busy()),
            "a host address that is not one",
        ),
        (
            run_d_args(&["--net", "base", "-p", ""], &t.busy()),
            "an empty -p",
        ),
    ];
    for name in [
        "",
        ".x",
        "a b",
        "a/b",
        "../x",
        long.as_str(),
        "none",
        "host",
        "bridge",
        "container:x",
        "é",
    ] {
        cases.push((create("10.95.0.0/24", &[], name), "a bad or reserved name"));
    }
    for (args, why) in &cases {
        let out = t.exec(args);
        assert!(
            out.code == Some(125)
                && out.stderr.trim().lines().count() == 1
                && out.stdout.is_empty(),
            "`mydocker {}` should be refused ({why}) in one line with exit 125: {out:#?}",
            words(args)
        );
        assert_eq!(
            t.ok(&["network", "ls", "-q"], "network ls -q"),
            listed,
            "`mydocker {}` was refused: it must make no network",
            words(args)
        );
        assert_eq!(
            t.ns.links(),
            links,
            "`mydocker {}` was refused: it must make no link",
            words(args)
        );
        let now = netns::Ruleset::parse(&t.ns.iptables_save());
        assert!(
            now.differences_from(&netns::Ruleset::parse(&rules))
                .is_empty(),
            "`mydocker {}` was refused: it must add no rule",
            words(args)
        );
        assert_eq!(
            t.network_files(),
            files,
            "`mydocker {}` was refused: it must write nothing under networks/",
            words(args)
        );
        let running = t.ok(&["ps", "-aq"], "ps -aq");
        assert_eq!(
            running.split_whitespace().collect::<Vec<_>>(),
            [&other[..12]],
            "`mydocker {}` was refused: it must leave no container",
            words(args)
        );
    }
    t.rm_f(&[&other]);
    t.finish();
}

/// `network ls` is a table of the networks (`-q`: their names), and
/// `network inspect` shows a network as JSON with its endpoints: each
/// container's full ID, name, address (the one its eth0 has), MAC (the
/// one its eth0 has: 02:42 and the address), the host's end of its veth
/// (a port of the network's bridge) and its ports.
#[test]
fn network_ls_and_inspect_show_the_networks_and_their_endpoints() {
    let t = T::new();
    t.create_network("n1", "10.98.0.0/24", &[]);
    t.create_network("n2", "10.98.1.0/24", &["--gateway", "10.98.1.254"]);
    let ls = t.ok(&["network", "ls"], "network ls");
    let mut lines = ls.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "DRIVER", "SUBNET", "GATEWAY"],
        "network ls's header: {ls}"
    );
    let rows: BTreeSet<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        BTreeSet::from([
            vec!["n1", "bridge", "10.98.0.0/24", "10.98.0.1"],
            vec!["n2", "bridge", "10.98.1.0/24", "10.98.1.254"],
        ]),
        "network ls shows each network's name, driver, subnet and gateway (the first host address unless --gateway): {ls}"
    );
    let quiet: BTreeSet<String> = t
        .ok(&["network", "ls", "-q"], "network ls -q")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        quiet,
        BTreeSet::from(["n1".to_string(), "n2".to_string()]),
        "network ls -q: the names"
    );
    let name = t.name("web");
    let id = t.run_d(
        &["--net", "n1", "--name", &name, "-p", "8080:80"],
        &t.busy(),
    );
    let network = t.inspect("n1");
    for (key, want) in [
        ("name", "n1"),
        ("driver", "bridge"),
        ("subnet", "10.98.0.0/24"),
        ("gateway", "10.98.0.1"),
    ] {
        assert_eq!(
            network.get(key).and_then(Json::as_str),
            Some(want),
            "network inspect n1: `{key}` should be {want}: {network:?}"
        );
    }
    let bridge = t.inspected("n1", "bridge");
    assert!(
        bridge.len() <= 15 && t.ns.link(&bridge).is_some(),
        "network inspect names the network's bridge, a link of the host (at most 15 characters): {bridge}"
    );
    assert!(
        t.ns.addresses().contains(&format!("{bridge} 10.98.0.1/24")),
        "the bridge {bridge} holds the gateway address 10.98.0.1/24: {:?}",
        t.ns.addresses()
    );
    let endpoints = t.endpoints("n1");
    assert_eq!(
        endpoints.len(),
        1,
        "network n1 has one endpoint: {endpoints:?}"
    );
    let e = &endpoints[0];
    let field = |key: &str| {
        e.get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let ip = t.ip_of(&id);
    assert_eq!(
        field("container"),
        id,
        "the endpoint's container is the full ID: {e:?}"
    );
    assert_eq!(
        field("name"),
        name,
        "the endpoint shows the container's name: {e:?}"
    );
    assert_eq!(
        field("ip"),
        ip.to_string(),
        "the endpoint's address is the one the container's eth0 has: {e:?}"
    );
    let link = t.ctr_ok(&id, "ip -o link show dev eth0");
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        field("mac"),
        mac,
        "the endpoint's MAC is the one the container's eth0 has: {e:?}"
    );
    assert_eq!(mac, mac_for(ip), "the container's MAC is 02:42 and its address (the stage 9 contract, as Docker does): {link}");
    let veth = field("veth");
    let details = t.ns.link(&veth).unwrap_or_else(|| {
        panic!(
            "the endpoint's veth {veth} should be a link of the host: {:?}",
            t.ns.links()
        )
    });
    assert!(
        details.contains(&format!("master {bridge}")) && details.contains("veth"),
        "the endpoint's veth {veth} is a veth whose master is the bridge {bridge}: {details}"
    );
    let ports = format!("{:?}", e.get("ports"));
    assert!(
        ports.contains("8080") && ports.contains("80"),
        "the endpoint shows its port mapping 8080 -> 80: {e:?}"
    );
    assert_eq!(
        t.endpoint_files("n1"),
        BTreeSet::from([format!("{id}.json")]),
        "the endpoint is kept in networks/n1/endpoints/ID.json"
    );
    let file = t.networks_dir().join(format!("n1/endpoints/{id}.json"));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let json =
        Json::parse(&text).unwrap_or_else(|e| panic!("{} is JSON: {e}: {text}", file.display()));
    assert_eq!(
        json.get("ip").and_then(Json::as_str),
        Some(ip.to_string().as_str()),
        "the endpoint file holds the address: {text}"
    );
    assert!(t.endpoints("n2").is_empty(), "network n2 has no endpoint");
    let both = t.ok(
        &["network", "inspect", "n1", "n2"],
        "inspect of two networks",
    );
    let both = Json::parse(&both).unwrap_or_else(|e| panic!("JSON: {e}: {both}"));
    assert_eq!(
        both.as_array().map(|a| a.len()),
        Some(2),
        "`network inspect n1 n2` shows both: {both:?}"
    );
    t.rm_f(&[&id]);
    assert!(
        t.endpoints("n1").is_empty(),
        "once the container is removed, n1 has no endpoint"
    );
    t.finish();
}

// ---------------------------------------------------------------------
// /etc
// ---------------------------------------------------------------------

/// The container's /etc/hostname (its hostname), /etc/hosts (localhost,
/// and its address with its hostname and name) and /etc/resolv.conf are
/// files of its own, bind-mounted: what it writes there lands in neither
/// its layer (containers/ID/upper) nor a commit of it.
#[test]
fn the_etc_files_are_bind_mounts_never_in_the_layer_or_a_commit() {
    let t = T::new();
    t.create_network("etcnet", "10.97.0.0/24", &[]);
    let name = t.name("etc");
    let id = t.run_d(&["--net", "etcnet", "--name", &name], &t.busy());
    let ip = t.ip_of(&id);
    let hostname = t.ctr_ok(&id, "hostname").trim().to_string();
    assert_eq!(
        t.ctr_ok(&id, "cat /etc/hostname"),
        format!("{hostname}\n"),
        "/etc/hostname holds the container's hostname"
    );
    let hosts = t.ctr_ok(&id, "cat /etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("127.0.0.1") && l.contains("localhost")),
        "/etc/hosts names localhost at 127.0.0.1: {hosts}"
    );
    assert!(
        hosts.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.first() == Some(&ip.to_string().as_str())
                && words.contains(&hostname.as_str())
                && words.contains(&name.as_str())
        }),
        "/etc/hosts should name the container (its hostname {hostname} and its name {name}) at its address {ip}: {hosts}"
    );
    let mountinfo = t.ctr_ok(&id, "cat /proc/self/mountinfo");
    for file in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
        assert!(
            mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(file)),
            "{file} should be a bind mount in the container (a file of the container's own, mounted over the image's): its mountinfo is\n{mountinfo}"
        );
    }
    let extra = format!("extra-{}", t.token);
    t.ctr_ok(
        &id,
        &format!(
            "echo '10.0.0.9 {extra}' >> /etc/hosts && echo 'search {extra}' >> /etc/resolv.conf"
        ),
    );
    let upper = t.md.root().join("containers").join(&id).join("upper");
    assert!(
        upper.is_dir(),
        "the container's layer (its overlay's upper directory) should be {}",
        upper.display()
    );
    let needles = [extra.clone(), ip.to_string(), hostname.clone()];
    let found = files_holding(&upper, &needles);
    assert!(
        found.is_empty(),
        "the container's layer {} must hold nothing of its /etc files (they are bind mounts of files of mydocker's, so the container writes through them): {found:?}",
        upper.display()
    );
    t.ok(&["commit", &id, "etcsnap"], "commit of a running container");
    let tarball = t.md.images().join("etcsnap.tar");
    let bytes = std::fs::read(&tarball)
        .unwrap_or_else(|e| panic!("commit should write the image {}: {e}", tarball.display()));
    let entries = tar_entries(&bytes);
    for (path, data) in &entries {
        let text = String::from_utf8_lossy(data);
        assert!(
            !needles.iter().any(|n| text.contains(n.as_str())),
            "the committed image must not hold the container's /etc files: {path} holds its address, hostname or what it wrote there"
        );
    }
    // Docker keeps these mount points in a layer of their own that commit
    // leaves out: the image gets back exactly what it had (or nothing).
    let base_tar = t.md.images().join(format!("{IMAGE}.tar"));
    let base_bytes = std::fs::read(&base_tar)
        .unwrap_or_else(|e| panic!("the image {} should exist: {e}", base_tar.display()));
    let base = tar_entries(&base_bytes);
    for file in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        assert_eq!(
            entries.get(file).map(|d| String::from_utf8_lossy(d).into_owned()),
            base.get(file).map(|d| String::from_utf8_lossy(d).into_owned()),
            "the committed image's {file} should be the image's own ({IMAGE} has it: {}), never the container's file nor the mount point made for it",
            base.contains_key(file)
        );
    }
    t.rm_f(&[&id]);
    t.finish();
}

/// The container's /etc/resolv.conf is the host's without its loopback
/// resolvers (127.0.0.53 in a container is the container's own lo, where
/// nothing answers), the rest kept; with none left, public fallback
/// ones. The host's file is made, for each run, by a bind mount in a
/// mount namespace of the test's.
#[test]
fn resolv_conf_is_the_hosts_without_loopback_resolvers_or_a_fallback() {
    let t = T::new();
    t.create_network("dns", "10.99.0.0/24", &[]);
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let seen = resolv_conf_in(&t, None);
    assert_resolv(&host, &seen, "this machine's /etc/resolv.conf");
    let mixed = "search example.test\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\noptions ndots:2\n";
    let seen = resolv_conf_in(&t, Some(mixed));
    assert_eq!(
        nameservers(&seen),
        ["192.0.2.53"],
        "from a host's resolv.conf with 127.0.0.53, 192.0.2.53 and ::1, the container keeps 192.0.2.53 only: {seen}"
    );
    for line in ["search example.test", "options ndots:2"] {
        assert!(
            seen.lines().any(|l| l.trim() == line),
            "the host's `{line}` is kept: {seen}"
        );
    }
    let only_loopback = "nameserver 127.0.0.53\nnameserver 127.0.0.1\n";
    let seen = resolv_conf_in(&t, Some(only_loopback));
    assert_resolv(
        only_loopback,
        &seen,
        "a host resolv.conf with loopback resolvers only",
    );
    t.finish();
}

/// What a container of network `dns` finds in /etc/resolv.conf when the
/// host's is `conf` (in a mount namespace of the test's; None: as it is).
fn resolv_conf_in(t: &T, conf: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("resolv.conf");
    std::fs::write(&file, conf.unwrap_or_default()).unwrap();
    let mut command = t.ns.command("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            // systemd-resolved's real list, where there is one, would be
            // read instead of the fallback: hide it too.
            "f=$1; shift; if [ -n \"$f\" ]; then mount --bind \"$f\" /etc/resolv.conf || exit 99; \
             if [ -d /run/systemd/resolve ]; then mount -t tmpfs none /run/systemd/resolve || exit 99; fi; fi; \
             exec \"$0\" \"$@\"",
        )
        .arg(t.md.real_bin())
        .arg(if conf.is_some() { file.as_os_str() } else { "".as_ref() })
        .args(["run", "--rm", "--net", "dns", IMAGE, "cat", "/etc/resolv.conf"])
        .env("MYDOCKER_ROOT", t.md.root());
    let out = t.md.finish(command);
    assert!(
        out.code == Some(0),
        "a container that prints its /etc/resolv.conf (host's file: {conf:?}): {out:#?}"
    );
    out.stdout
}

/// The nameservers of a resolv.conf text, in order.
fn nameservers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next().map(String::from))?
        })
        .collect()
}

fn is_loopback(server: &str) -> bool {
    server.starts_with("127.") || server == "::1"
}

/// The container's resolv.conf `seen` for the host's `host`: the host's
/// nameservers but the loopback ones, or, with none left, some that are
/// not loopback.
fn assert_resolv(host: &str, seen: &str, what: &str) {
    let kept: Vec<String> = nameservers(host)
        .into_iter()
        .filter(|s| !is_loopback(s))
        .collect();
    let got = nameservers(seen);
    if kept.is_empty() {
        assert!(
            !got.is_empty() && !got.iter().any(|s| is_loopback(s)),
            "with {what}, which has no resolver outside loopback, the container gets fallback resolvers (none on loopback: the container's lo is its own): {seen}"
        );
    } else {
        assert_eq!(
            got, kept,
            "with {what}, the container gets the host's resolvers but the loopback ones: {seen}"
        );
    }
}

/// The files under `dir` that hold one of `needles`.
fn files_holding(dir: &Path, needles: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (path, meta) in walk(dir) {
        if meta.is_file() {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            if needles.iter().any(|n| text.contains(n.as_str())) {
                found.push(path);
            }
        }
    }
    found
}

/// The regular files of a tarball (maybe gzipped): path (without `./`)
/// → content.
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar_archive(bytes);
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("read the tarball") {
        let mut entry = entry.expect("an entry of the tarball");
        let path = entry
            .path()
            .expect("an entry's path")
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let mut data = Vec::new();
        let _ = entry.read_to_end(&mut data);
        entries.insert(path, data);
    }
    entries
}

// ---------------------------------------------------------------------
// Leaving nothing behind
// ---------------------------------------------------------------------

/// A tour of everything at once (the default network, a network of one's
/// own with two containers and ports, `--net none`, `host` and
/// `container:`, traffic in and out), then every container and network
/// removed: the namespace is exactly as before (links, addresses, routes,
/// iptables, ip_forward) and nothing is left under networks/.
#[test]
fn after_all_removals_the_namespace_is_as_before() {
    let t = T::with_remote();
    t.create_network("tour", "10.100.0.0/24", &[]);
    let page = format!("tour-{}", t.token);
    let web = t.run_d(&["-p", "8080:80", "--name", &t.name("web")], &t.web(&page));
    let mine = t.run_d(&["--net", "tour", "-p", "9090:80"], &t.web(&page));
    let other = t.run_d(&["--net", "tour"], &t.busy());
    let none = t.run_d(&["--net", "none"], &t.busy());
    let host = t.run_d(&["--net", "host"], &t.busy());
    let joined = t.run_d(
        &["--net", &format!("container:{}", t.name("web"))],
        &t.busy(),
    );
    assert_fetches(
        t.remote(),
        &format!("http://{OUTER_IP}:8080/"),
        &page,
        "-p 8080:80 on the default network",
    );
    assert_fetches(
        t.remote(),
        &format!("http://{OUTER_IP}:9090/"),
        &page,
        "-p 9090:80 on network tour",
    );
    if let Err(e) = ctr_pings(&t, &other, REMOTE_IP) {
        panic!("a container of network tour reaches the remote host through NAT: {e}");
    }
    assert_rules_are_mydockers(&t);
    t.rm_f(&[&joined, &host, &none, &other, &mine, &web]);
    let out = t.exec(&["network", "rm", "tour", "bridge"]);
    assert!(
        out.code == Some(0) && out.stdout == "tour\nbridge\n",
        "`network rm tour bridge` removes both and prints their names: {out:#?}"
    );
    t.finish();
}

// ---------------------------------------------------------------------
// The earlier stages' tests
// ---------------------------------------------------------------------

/// From stage 9 on, the harness gives every `run` of the earlier stages'
/// tests `--net none`, however the test starts it ([`Mydocker::command`],
/// [`Mydocker::command_as_given`], the script of [`Mydocker::bin`]): their
/// containers have only `lo`, as they had then, and no bridge or rule is
/// ever made in the machine's own namespace. Checked here in a namespace
/// of the test's, in case the binary under test did make one.
#[test]
fn the_earlier_stages_tests_run_their_containers_with_net_none() {
    let ns = NetNs::new();
    let before = ns.state();
    for md in [Mydocker::new(), Mydocker::as_given()] {
        let args = md.run_args(&[], &["ip", "-o", "link", "show"]);
        let mut ways = vec![
            ("Mydocker::command", md.command(&args)),
            ("Mydocker::command_as_given", md.command_as_given(&args)),
        ];
        let mut script = Command::new(md.bin());
        script
            .args(&args)
            .env("MYDOCKER_ROOT", md.root())
            .stdin(Stdio::null());
        ways.push(("the script of Mydocker::bin", script));
        let mut own = Command::new(md.real_bin());
        own.args(md.adapted(&args))
            .env("MYDOCKER_ROOT", md.root())
            .stdin(Stdio::null());
        ways.push(("Mydocker::real_bin with Mydocker::adapted", own));
        for (way, mut command) in ways {
            netns::enter(&mut command, ns.file());
            let out = md.finish(command);
            let links: Vec<String> = out
                .stdout
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(String::from)
                .collect();
            assert!(
                out.code == Some(0) && links == ["lo"],
                "a `run` of an earlier stage's test ({way}) should get --net none from stage 9 on, so its container has only lo: {out:#?}"
            );
            // Containers made without --rm (Mydocker::as_given) stay.
            let listed = md.exec(&["ps", "-aq"]);
            for short in listed.stdout.split_whitespace() {
                md.exec(&["rm", "-f", short]);
            }
        }
        let made: Vec<PathBuf> = std::fs::read_dir(md.root().join("networks"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            made.iter().all(|p| p.file_name() == Some("lock".as_ref())),
            "the earlier stages' runs make no network: {made:?}"
        );
    }
    let differences = ns.state().differences_from(&before);
    assert!(
        differences.is_empty(),
        "the earlier stages' runs, with --net none, make no link, address, route or rule: {differences:#?}"
    );
    assert!(mydocker_lines(&ns.iptables_save()).is_empty());
}
