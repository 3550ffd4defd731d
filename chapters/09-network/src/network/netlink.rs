//! rtnetlink: how `ip` changes the kernel's network devices, and how we do.
//!
//! Links (network devices), addresses and routes are not files: a program
//! changes them by sending messages over a socket,
//! `socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE)`, whose other end is the
//! kernel. A message is a header (`nlmsghdr`: length, type, flags, a
//! sequence number), a small fixed struct for its kind of object
//! (`ifinfomsg` for a link, `ifaddrmsg` for an address, `rtmsg` for a
//! route), then attributes: type-length-value records, nested when the
//! value is itself a list. `ip link add br0 type bridge` sends just this:
//!
//! ```text
//!  nlmsghdr   RTM_NEWLINK, flags REQUEST|ACK|CREATE|EXCL, seq N
//!  ifinfomsg  index 0: the kernel chooses it
//!  IFLA_IFNAME      "br0"
//!  IFLA_LINKINFO    (nested)
//!    IFLA_INFO_KIND "bridge"
//! ```
//!
//! and the kernel answers with an NLMSG_ERROR that carries the same N:
//! error 0 is an acknowledgement (ACK), -17 is EEXIST. A question
//! (RTM_GETLINK) gets its answer first (an RTM_NEWLINK that describes the
//! link), then the ACK.
//!
//! netlink-packet-route builds and parses these messages, netlink-sys is
//! the socket. We send one request at a time and read until its ACK: a
//! blocking socket, no threads, no async runtime.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
// `Rtm::NewLink` is the message the kernel's headers call RTM_NEWLINK.
use netlink_packet_route::RouteNetlinkMessage as Rtm;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::libc;
use nix::sched::{setns, CloneFlags};

/// Every request asks for an answer, even when all goes well: an ACK.
const REQUEST: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// A request that makes something new, and fails (EEXIST) rather than
/// change what is already there.
const CREATE: u16 = REQUEST | NLM_F_CREATE | NLM_F_EXCL;

/// Room for one datagram from the kernel. The largest we read, RTM_GETLINK's
/// answer, is a few KiB; a bigger one is an error, never cut short.
const BUFFER: usize = 32 * 1024;

/// This thread's network namespace. mydocker has one thread, so it is
/// /proc/self's; the unit tests run in threads of their own.
const OUR_NETNS: &str = "/proc/thread-self/ns/net";

/// Linux's limit on interface names: IFNAMSIZ (16) with its final NUL.
const MAX_NAME: usize = 15;

/// A NETLINK_ROUTE socket, bound for life to the network namespace it was
/// created in.
pub struct Netlink {
    socket: Socket,
    /// The last request's number: the kernel copies it into its answers.
    sequence: u32,
    /// Where the kernel's answers land (reused).
    buffer: Vec<u8>,
}

impl Netlink {
    /// A socket in our own network namespace: the host's.
    pub fn open() -> Result<Netlink> {
        let socket = Socket::new(NETLINK_ROUTE)
            .context("socket(AF_NETLINK, NETLINK_ROUTE)")?;
        Netlink::connect(socket)
    }

    // ANCHOR: open_in
    /// A socket in the network namespace `netns` (a container's): what it
    /// asks for happens there.
    pub fn open_in(netns: BorrowedFd) -> Result<Netlink> {
        // A socket belongs to the namespace it was created in, whatever
        // its thread does later. So: step into `netns`, create the socket,
        // step back. setns(2) moves only the calling thread, and mydocker
        // has just one.
        let ours = File::open(OUR_NETNS)
            .with_context(|| format!("open {OUR_NETNS}"))?;
        setns(netns, CloneFlags::CLONE_NEWNET)
            .context("setns(CLONE_NEWNET) into the container's namespace")?;
        let socket = Socket::new(NETLINK_ROUTE);
        setns(ours.as_fd(), CloneFlags::CLONE_NEWNET)
            .context("setns(CLONE_NEWNET) back into our own namespace")?;
        let socket = socket.context(
            "socket(AF_NETLINK, NETLINK_ROUTE) in the container's namespace",
        )?;
        Netlink::connect(socket)
    }
    // ANCHOR_END: open_in

    /// Talk to the kernel only (netlink port 0), and get our own port.
    fn connect(socket: Socket) -> Result<Netlink> {
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connect(netlink socket, the kernel)")?;
        Ok(Netlink {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(BUFFER),
        })
    }

    // ANCHOR: request
    /// Send one request and read until the kernel acknowledges it. Returns
    /// the messages that came before the ACK (RTM_GETLINK's answer), or
    /// the error the kernel sent instead of an ACK.
    fn request(&mut self, message: Rtm, flags: u16) -> io::Result<Vec<Rtm>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        request.header.sequence_number = self.sequence;
        request.finalize(); // fills in the header's length and type
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut answers = Vec::new();
        loop {
            for answer in self.receive()? {
                // An answer to an earlier request that gave up: skip it.
                if answer.header.sequence_number != self.sequence {
                    continue;
                }
                match answer.payload {
                    // An ACK is an "error" whose code is 0 (None).
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok(answers),
                        Some(_) => return Err(error.to_io()),
                    },
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }
    // ANCHOR_END: request

    /// Read one datagram from the kernel: one message or more, each
    /// starting at a multiple of 4 bytes.
    fn receive(&mut self) -> io::Result<Vec<NetlinkMessage<Rtm>>> {
        self.buffer.clear();
        // With MSG_TRUNC, recv(2) says how long the datagram really was.
        let size = self.socket.recv(&mut self.buffer, libc::MSG_TRUNC)?;
        if size > self.buffer.len() {
            return Err(io::Error::other(format!(
                "an answer of {size} bytes does not fit in {BUFFER}"
            )));
        }
        let mut messages = Vec::new();
        let mut rest = &self.buffer[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<Rtm>::deserialize(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let length = (message.header.length as usize).next_multiple_of(4);
            rest = &rest[length.min(rest.len())..];
            messages.push(message);
        }
        Ok(messages)
    }

    /// RTM_GETLINK: the kernel's description of one link, or None when
    /// there is no such link (ENODEV).
    fn get_link(
        &mut self,
        link: LinkMessage,
    ) -> io::Result<Option<LinkMessage>> {
        let answers = match self.request(Rtm::GetLink(link), REQUEST) {
            Ok(answers) => answers,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let link = answers.into_iter().find_map(|answer| match answer {
            Rtm::NewLink(link) => Some(link),
            _ => None,
        });
        match link {
            Some(link) => Ok(Some(link)),
            None => Err(io::Error::other("no RTM_NEWLINK in the answer")),
        }
    }

    /// The index of the link `name`, None if there is none.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>> {
        check_name(name)?;
        let link = self
            .get_link(link(0, vec![LinkAttribute::IfName(name.into())]))
            .with_context(|| format!("RTM_GETLINK {name}"))?;
        Ok(link.map(|link| link.header.index))
    }

    /// The MTU of the link `index`.
    pub fn mtu(&mut self, index: u32) -> Result<u32> {
        let what = || format!("RTM_GETLINK link {index}");
        let link = self.get_link(link(index, vec![])).with_context(what)?;
        let link = link.with_context(|| format!("{}: no such link", what()))?;
        for attribute in link.attributes {
            if let LinkAttribute::Mtu(mtu) = attribute {
                return Ok(mtu);
            }
        }
        bail!("{}: no IFLA_MTU in the answer", what())
    }

    /// Create the bridge `name` (down, no address); returns its index.
    pub fn create_bridge(&mut self, name: &str) -> Result<u32> {
        check_name(name)?;
        let info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        let bridge = link(
            0,
            vec![
                LinkAttribute::IfName(name.into()),
                LinkAttribute::LinkInfo(info),
            ],
        );
        self.request(Rtm::NewLink(bridge), CREATE)
            .with_context(|| format!("RTM_NEWLINK bridge {name}"))?;
        self.created(name)
    }

    // ANCHOR: create_veth
    /// Create a veth pair in one request: `name` here, `peer` directly in
    /// the network namespace `peer_netns`. Returns the index of `name`.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd,
    ) -> Result<u32> {
        check_name(name)?;
        check_name(peer)?;
        // The peer is described by a link message of its own, nested in
        // ours: its name, and the namespace (IFLA_NET_NS_FD) it is born in.
        let peer_link = link(
            0,
            vec![
                LinkAttribute::IfName(peer.into()),
                LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
            ],
        );
        let info = vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
        ];
        let veth = link(
            0,
            vec![
                LinkAttribute::IfName(name.into()),
                LinkAttribute::LinkInfo(info),
            ],
        );
        self.request(Rtm::NewLink(veth), CREATE).with_context(|| {
            format!("RTM_NEWLINK veth {name} (peer {peer} in another netns)")
        })?;
        self.created(name)
    }
    // ANCHOR_END: create_veth

    /// The index the kernel chose for the link `name` we just created.
    fn created(&mut self, name: &str) -> Result<u32> {
        let index = self.index(name)?;
        index.with_context(|| format!("RTM_GETLINK {name}: gone once made"))
    }

    /// Plug the link `index` into the bridge `master` (IFLA_MASTER). Beware:
    /// the kernel unplugs the link from its old bridge before it looks for
    /// the new one, so an unknown `master` (EINVAL) leaves it in none.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let change = link(index, vec![LinkAttribute::Controller(master)]);
        self.set_link(change, format!("master {master}"))
    }

    /// Give the link `index` the Ethernet address `mac` (IFLA_ADDRESS).
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let text = mac.map(|byte| format!("{byte:02x}")).join(":");
        let change = link(index, vec![LinkAttribute::Address(mac.to_vec())]);
        self.set_link(change, format!("address {text}"))
    }

    /// Set the largest packet the link `index` sends (IFLA_MTU).
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let change = link(index, vec![LinkAttribute::Mtu(mtu)]);
        self.set_link(change, format!("mtu {mtu}"))
    }

    /// Bring the link `index` up: `ip link set DEV up`.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut change = link(index, vec![]);
        // `flags` says what the flags become, `change_mask` which ones
        // change: only IFF_UP.
        change.header.flags = LinkFlags::Up;
        change.header.change_mask = LinkFlags::Up;
        self.set_link(change, "up".into())
    }

    /// RTM_SETLINK: change an existing link, named by its index.
    fn set_link(&mut self, change: LinkMessage, what: String) -> Result<()> {
        let index = change.header.index;
        self.request(Rtm::SetLink(change), REQUEST)
            .with_context(|| format!("RTM_SETLINK link {index} {what}"))?;
        Ok(())
    }

    // ANCHOR: add_address
    /// Give the link `index` the address `ip/prefix`: `ip addr add`. The
    /// kernel adds the route to the subnet itself.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<()> {
        let mut address = AddressMessage::default();
        address.header.family = AddressFamily::Inet;
        address.header.prefix_len = prefix;
        address.header.index = index;
        // IFA_LOCAL is our own address; IFA_ADDRESS is the other end's on
        // a point-to-point link, and the same again on any other.
        address.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(ip)),
            AddressAttribute::Address(IpAddr::V4(ip)),
        ];
        if prefix < 31 {
            let broadcast = AddressAttribute::Broadcast(broadcast(ip, prefix));
            address.attributes.push(broadcast);
        }
        self.request(Rtm::NewAddress(address), CREATE)
            .with_context(|| {
                format!("RTM_NEWADDR {ip}/{prefix} on link {index}")
            })?;
        Ok(())
    }
    // ANCHOR_END: add_address

    /// Send every packet for elsewhere to `gateway`:
    /// `ip route add default via GATEWAY`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 0; // 0.0.0.0/0: default
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Boot; // as `ip route` does
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        let gateway_address = RouteAddress::Inet(gateway);
        route.attributes = vec![RouteAttribute::Gateway(gateway_address)];
        self.request(Rtm::NewRoute(route), CREATE)
            .with_context(|| format!("RTM_NEWROUTE default via {gateway}"))?;
        Ok(())
    }

    /// Delete the link `name` (with its peer, for a veth). false: there was
    /// no such link.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        check_name(name)?;
        let gone = link(0, vec![LinkAttribute::IfName(name.into())]);
        match self.request(Rtm::DelLink(gone), REQUEST) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("RTM_DELLINK {name}")),
        }
    }
}

/// A link message: `index` (0 when the name says which link, or when the
/// kernel is to choose one) and attributes.
fn link(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes = attributes;
    link
}

/// The kernel would refuse a longer name with a puzzling ERANGE.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        bail!(
            "interface name {name:?}: {} bytes, Linux takes 1 to {MAX_NAME}",
            name.len()
        );
    }
    Ok(())
}

/// The subnet's broadcast address: `ip` with its host bits all ones.
fn broadcast(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(prefix.into()).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) | host_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    use nix::sched::unshare;
    use nix::unistd::Uid;

    /// Run `test` in a thread of its own, in a new network namespace: the
    /// host's links are never touched, and all the test makes goes away
    /// with the thread.
    fn in_new_netns(test: fn()) {
        assert!(
            Uid::effective().is_root(),
            "this test needs root: it creates network namespaces \
             (run it as root: `sudo -E cargo test`)"
        );
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            test();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// One more network namespace (a container's), alive while the file is
    /// open; this thread stays where it was.
    fn new_netns() -> File {
        let ours = File::open(OUR_NETNS).expect("open our netns");
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let theirs = File::open(OUR_NETNS).expect("open the new netns");
        setns(ours.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns back");
        theirs
    }

    /// Run a command in `netns` (None: this thread's), return its output;
    /// panic if it fails.
    fn run(netns: Option<BorrowedFd>, command: &[&str]) -> String {
        let ours = File::open(OUR_NETNS).expect("open our netns");
        if let Some(netns) = netns {
            setns(netns, CloneFlags::CLONE_NEWNET).expect("setns into netns");
        }
        let output = Command::new(command[0]).args(&command[1..]).output();
        setns(ours.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns back");
        let output = output.unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{command:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// `ip ARGS` in `netns`; its output.
    fn ip(netns: Option<BorrowedFd>, args: &str) -> String {
        let command: Vec<&str> =
            ["ip"].into_iter().chain(args.split(' ')).collect();
        run(netns, &command)
    }

    /// One ping from `netns` to `address`, answered within a second.
    fn ping(netns: Option<BorrowedFd>, address: &str) {
        run(netns, &["/bin/busybox", "ping", "-c1", "-W1", address]);
    }

    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it, as root"]
    fn a_bridge_and_a_veth_into_another_namespace() {
        in_new_netns(|| {
            let container = new_netns();
            let container = container.as_fd();
            let gateway = Ipv4Addr::new(10, 99, 0, 1);
            let address = Ipv4Addr::new(10, 99, 0, 2);
            let mac = [0x02, 0x42, 10, 99, 0, 2];

            let mut host = Netlink::open().unwrap();
            let bridge = host.create_bridge("mdtest0").unwrap();
            host.add_address(bridge, gateway, 24).unwrap();
            host.set_up(bridge).unwrap();
            let err = host.create_bridge("mdtest0").unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "RTM_NEWLINK bridge mdtest0: File exists (os error 17)"
            );

            let veth = host.create_veth("vethmdtest", "eth0", container);
            let veth = veth.unwrap();
            assert_eq!(host.index("vethmdtest").unwrap(), Some(veth));
            assert_eq!(host.index("eth0").unwrap(), None, "eth0 is not here");
            host.set_master(veth, bridge).unwrap();
            host.set_up(veth).unwrap();

            let mut inside = Netlink::open_in(container).unwrap();
            let eth0 = inside.index("eth0").unwrap().expect("eth0 inside");
            let lo = inside.index("lo").unwrap().expect("lo inside");
            inside.set_mac(eth0, mac).unwrap();
            inside.set_mtu(eth0, 1400).unwrap();
            inside.set_up(eth0).unwrap();
            inside.set_up(lo).unwrap();
            inside.add_address(eth0, address, 24).unwrap();
            inside.add_default_route(gateway).unwrap();
            assert_eq!(inside.mtu(eth0).unwrap(), 1400);

            // What `ip` sees, on both sides.
            let link = ip(None, "-d -o link show vethmdtest");
            assert!(link.contains("master mdtest0"), "{link}");
            assert!(link.contains("veth"), "{link}");
            let addr = ip(None, "-o -4 addr show mdtest0");
            assert!(addr.contains("10.99.0.1/24 brd 10.99.0.255"), "{addr}");
            let there = Some(container);
            let link = ip(there, "-o link show eth0");
            assert!(link.contains("mtu 1400"), "{link}");
            assert!(link.contains("state UP"), "{link}");
            assert!(link.contains("link/ether 02:42:0a:63:00:02"), "{link}");
            let addr = ip(there, "-o -4 addr show eth0");
            assert!(addr.contains("10.99.0.2/24 brd 10.99.0.255"), "{addr}");
            let route = ip(there, "route show default");
            assert!(route.contains("via 10.99.0.1 dev eth0"), "{route}");

            // Packets cross: from the bridge's side to the container's
            // address, and from the container to its gateway.
            ping(None, "10.99.0.2");
            ping(there, "10.99.0.1");

            // Deleting one end deletes the pair.
            assert!(host.delete_link("vethmdtest").unwrap());
            assert_eq!(inside.index("eth0").unwrap(), None);
            assert!(!host.delete_link("vethmdtest").unwrap());
            assert!(host.delete_link("mdtest0").unwrap());
            assert_eq!(host.index("mdtest0").unwrap(), None);
        });
    }

    #[test]
    #[ignore = "needs root: `cargo xtask test` runs it, as root"]
    fn errors_name_the_message_and_the_object() {
        in_new_netns(|| {
            let mut host = Netlink::open().unwrap();
            let err = host.set_up(9999).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "RTM_SETLINK link 9999 up: No such device (os error 19)"
            );
            let err = host.mtu(9999).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "RTM_GETLINK link 9999: no such link"
            );
            let err = host.create_bridge("a-name-too-long-0").unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "interface name \"a-name-too-long-0\": 17 bytes, \
                 Linux takes 1 to 15"
            );
            let gateway = Ipv4Addr::new(10, 99, 0, 1);
            let err = host.add_default_route(gateway).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "RTM_NEWROUTE default via 10.99.0.1: \
                 Network is unreachable (os error 101)"
            );
        });
    }
}
