//! IPAM, IP address management: which addresses of a network are taken.
//!
//! A subnet such as 172.18.0.0/16 has 2^(32-16) = 65,536 addresses. Three
//! are never a container's: the network address (172.18.0.0), the
//! broadcast address (172.18.255.255) and the gateway, the bridge's own
//! (172.18.0.1 unless `--gateway` says otherwise). The others are handed
//! out, one per container, lowest first, and taken back when it goes.
//!
//! What is taken is kept as one bit per address, in the file `addresses`
//! of the network's directory: bit i is the address `network + i`, in
//! byte i / 8, at bit i % 8, least significant first. A /29 fits in one
//! byte, a /16 in 8 KiB, a /8 in 2 MiB:
//!
//! ```text
//!  172.18.0.0/29, gateway .1, one container on .2:
//!  bit      7   6   5   4   3   2   1   0
//!  address .7  .6  .5  .4  .3  .2  .1  .0
//!  value    1   0   0   0   0   1   1   1    byte 0 = 0x87
//!        broadcast       container  | network
//!                                gateway
//! ```
//!
//! Many processes change it at once (20 `run`s in parallel must get 20
//! addresses), and each change is a read, a modification and a write. So:
//! - every change holds an flock(2) of `addresses.lock`, so that two of
//!   them never interleave;
//! - it reads the whole bitmap and checks its length against the subnet;
//! - it writes the new bitmap to `addresses.tmp.PID`, then renames that
//!   over `addresses`: whoever reads, and whatever crashes, sees the old
//!   bitmap or the new one, never half of each.
//!
//! The lock is a file of its own because the rename replaces the bitmap's
//! inode: a lock held on the old `addresses` would not stop a process that
//! opens the new one.
//!
//! Read the whole file, never into a buffer of a fixed size: the Go
//! mydocker read its allocations into 2000 bytes. It kept one character
//! per address, so a /16 made its file 65 KB; the read cut it short, every
//! allocation and release failed to parse it, and the network could never
//! be removed.

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::Ipv4Network;
use nix::errno::Errno;
use nix::libc;

/// The bitmap, in the network's directory.
const ADDRESSES: &str = "addresses";
/// What every change locks (not the bitmap itself: see above).
const LOCK: &str = "addresses.lock";

/// The addresses of one network's subnet: hands them out, takes them back.
pub struct Ipam {
    /// The network's directory: `addresses` and `addresses.lock`.
    dir: PathBuf,
    subnet: Ipv4Network,
}

/// How many addresses `subnet` has, 2^(32 - prefix), if it is a size a
/// network may have: from /8 (a bitmap of 2 MiB, read and written whole
/// at each change) to /30 (a network address, a gateway, a broadcast
/// address and one container; a /31 or /32 has no room for it).
fn addresses(subnet: Ipv4Network) -> Result<u32> {
    match subnet.prefix() {
        0..=7 => {
            bail!("subnet {subnet} is too large: a network is a /8 at most")
        }
        31.. => bail!(
            "subnet {subnet} is too small: a network is a /30 at least, \
             for its network, gateway and broadcast addresses and one \
             container's"
        ),
        prefix => Ok(1 << (32 - prefix)),
    }
}

// ANCHOR: bitmap
/// One bit per address of a subnet, 1 when taken: bit i is the address
/// `network + i`, in byte i / 8, at bit i % 8 (least significant first).
struct Bitmap {
    subnet: Ipv4Network,
    /// How many addresses (and bits) there are: 2^(32 - prefix).
    size: u32,
    /// size / 8 bytes, rounded up: a /30's 4 bits take a whole byte.
    bytes: Vec<u8>,
}

impl Bitmap {
    /// The bit of `ip`, if it is in the subnet.
    fn index(&self, ip: Ipv4Addr) -> Option<u32> {
        let first = u32::from(self.subnet.network());
        self.subnet.contains(ip).then(|| u32::from(ip) - first)
    }

    /// The address of bit `i`.
    fn address(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + i)
    }

    fn is_taken(&self, i: u32) -> bool {
        self.bytes[i as usize / 8] & (1 << (i % 8)) != 0
    }

    fn take(&mut self, i: u32) {
        self.bytes[i as usize / 8] |= 1 << (i % 8);
    }

    fn free(&mut self, i: u32) {
        self.bytes[i as usize / 8] &= !(1 << (i % 8));
    }

    /// The lowest free bit: the first byte that is not all ones, then its
    /// lowest zero bit (none in a /30's unused high bits, past `size`).
    fn first_free(&self) -> Option<u32> {
        let byte = self.bytes.iter().position(|&b| b != 0xff)?;
        let i = byte as u32 * 8 + self.bytes[byte].trailing_ones();
        (i < self.size).then_some(i)
    }
}
// ANCHOR_END: bitmap

impl Ipam {
    /// The IPAM of the network whose directory is `dir`. Nothing is read
    /// yet: `create` makes the bitmap, the other calls read it.
    pub fn new(dir: &Path, subnet: Ipv4Network) -> Ipam {
        // 172.18.0.7/16 is 172.18.0.0/16: the bitmap starts at .0.0.
        let subnet = Ipv4Network::new(subnet.network(), subnet.prefix())
            .unwrap_or(subnet);
        Ipam {
            dir: dir.to_path_buf(),
            subnet,
        }
    }

    /// Make the bitmap of a new network: every address free but the
    /// network address, `gateway` (any host address of the subnet) and
    /// the broadcast address. Refused if there is one already: writing
    /// over it would forget the addresses that containers hold.
    pub fn create(&self, gateway: Ipv4Addr) -> Result<()> {
        let size = addresses(self.subnet)?;
        let mut bitmap = Bitmap {
            subnet: self.subnet,
            size,
            bytes: vec![0; size.div_ceil(8) as usize],
        };
        let Some(gw) = bitmap.index(gateway).filter(|&i| 0 < i && i < size - 1)
        else {
            bail!(
                "gateway {gateway} is not a host address of {} \
                 (from {} to {})",
                self.subnet,
                bitmap.address(1),
                bitmap.address(size - 2)
            );
        };
        for i in [0, gw, size - 1] {
            bitmap.take(i);
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("mkdir {}", self.dir.display()))?;
        let _lock = self.lock()?;
        let path = self.dir.join(ADDRESSES);
        let exists = path
            .try_exists()
            .with_context(|| format!("stat {}", path.display()))?;
        if exists {
            bail!("{} exists already", path.display());
        }
        self.save(&bitmap)
    }

    // ANCHOR: allocate
    /// Take the lowest free address of the subnet for a container.
    pub fn allocate(&self) -> Result<Ipv4Addr> {
        self.change(|bitmap| {
            let i = bitmap.first_free().ok_or_else(|| full(bitmap))?;
            bitmap.take(i);
            Ok(bitmap.address(i))
        })
    }

    /// Give `ip` back, for `allocate` to hand out again. False if it was
    /// free already (a second release, after a crash half-way, is fine).
    /// The gateway is the caller's to keep: the bitmap cannot tell it from
    /// a container's address.
    pub fn release(&self, ip: Ipv4Addr) -> Result<bool> {
        self.change(|bitmap| {
            let i = match bitmap.index(ip) {
                None => bail!("{ip} is not in {}", bitmap.subnet),
                Some(i) if i == 0 || i == bitmap.size - 1 => bail!(
                    "{ip} is the network or broadcast address of {}: \
                     never a container's",
                    bitmap.subnet
                ),
                Some(i) => i,
            };
            let taken = bitmap.is_taken(i);
            bitmap.free(i);
            Ok(taken)
        })
    }
    // ANCHOR_END: allocate

    /// The addresses that containers hold: all that are taken but the
    /// network address, `gateway` and the broadcast address. No lock: a
    /// rename replaces the bitmap whole, so one read sees one version.
    pub fn allocated(&self, gateway: Ipv4Addr) -> Result<Vec<Ipv4Addr>> {
        let bitmap = self.load()?;
        Ok((1..bitmap.size - 1)
            .filter(|&i| bitmap.is_taken(i))
            .map(|i| bitmap.address(i))
            .filter(|&ip| ip != gateway)
            .collect())
    }

    // ANCHOR: locked
    /// Load the bitmap, let `edit` change it, save it: all under the lock,
    /// so that no other process or thread changes it in between.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Bitmap) -> Result<T>,
    ) -> Result<T> {
        addresses(self.subnet)?; // a subnet we cannot hold: no file made
        let _lock = self.lock()?; // held until we return, after the rename
        let mut bitmap = self.load()?;
        let result = edit(&mut bitmap)?;
        self.save(&bitmap)?;
        Ok(result)
    }

    /// Lock `addresses.lock`, waiting for whoever holds it. The lock
    /// belongs to this open file: closing it (or dying) releases it, and
    /// two opens of the file, even in one process, exclude each other.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock(2) takes only a descriptor, which `file` keeps open.
        Errno::result(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) })
            .with_context(|| format!("flock {}", path.display()))?;
        Ok(file)
    }
    // ANCHOR_END: locked

    // ANCHOR: files
    /// Read the bitmap, whole, and check that it is the subnet's size.
    fn load(&self) -> Result<Bitmap> {
        let size = addresses(self.subnet)?;
        let path = self.dir.join(ADDRESSES);
        let bytes = fs::read(&path)
            .with_context(|| format!("read {}", path.display()))?;
        if bytes.len() != size.div_ceil(8) as usize {
            bail!(
                "{}: {} bytes, but the bitmap of {} has {}: \
                 the file is damaged",
                path.display(),
                bytes.len(),
                self.subnet,
                size.div_ceil(8)
            );
        }
        Ok(Bitmap {
            subnet: self.subnet,
            size,
            bytes,
        })
    }

    /// Replace the bitmap in one step: written aside (one temporary file
    /// per process; its threads take turns), then renamed over. No fsync,
    /// as for records: a crash of the machine ends every container.
    fn save(&self, bitmap: &Bitmap) -> Result<()> {
        let path = self.dir.join(ADDRESSES);
        let temp = self
            .dir
            .join(format!("{ADDRESSES}.tmp.{}", std::process::id()));
        let saved = fs::write(&temp, &bitmap.bytes)
            .with_context(|| format!("write {}", temp.display()))
            .and_then(|()| {
                fs::rename(&temp, &path).with_context(|| {
                    format!("rename {} to {}", temp.display(), path.display())
                })
            });
        if saved.is_err() {
            let _ = fs::remove_file(&temp);
        }
        saved
    }
    // ANCHOR_END: files
}

/// The error of a full subnet; the caller adds the network's name.
fn full(bitmap: &Bitmap) -> anyhow::Error {
    // All but the network address, the gateway and the broadcast address.
    match bitmap.size - 3 {
        1 => anyhow!("the one address of {} is in use", bitmap.subnet),
        n => anyhow!("all {n} addresses of {} are in use", bitmap.subnet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;

    fn net(cidr: &str) -> Ipv4Network {
        cidr.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A fresh network directory with a bitmap made for `cidr`.
    fn made(cidr: &str, gateway: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), net(cidr));
        ipam.create(ip(gateway)).unwrap();
        (dir, ipam)
    }

    fn bytes(dir: &tempfile::TempDir) -> Vec<u8> {
        fs::read(dir.path().join(ADDRESSES)).unwrap()
    }

    #[test]
    fn a_29_holds_exactly_five() {
        let (dir, ipam) = made("172.18.0.0/29", "172.18.0.1");
        assert_eq!(bytes(&dir), [0b1000_0011]);
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        let want: Vec<_> =
            (2..=6).map(|d| Ipv4Addr::new(172, 18, 0, d)).collect();
        assert_eq!(got, want);
        let err = ipam.allocate().unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "all 5 addresses of 172.18.0.0/29 are in use"
        );
        assert_eq!(bytes(&dir), [0xff]);
        assert_eq!(ipam.allocated(ip("172.18.0.1")).unwrap(), want);
    }

    #[test]
    fn a_30_holds_one() {
        let (dir, ipam) = made("10.1.2.4/30", "10.1.2.6");
        assert_eq!(ipam.allocate().unwrap(), ip("10.1.2.5"));
        let err = ipam.allocate().unwrap_err();
        assert_eq!(err.to_string(), "the one address of 10.1.2.4/30 is in use");
        // The four bits of the four addresses; the byte's high half unused.
        assert_eq!(bytes(&dir), [0b0000_1111]);
    }

    #[test]
    fn released_addresses_come_back_lowest_first() {
        let (_dir, ipam) = made("10.0.0.0/24", "10.0.0.1");
        for d in 2..=5 {
            assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 0, 0, d));
        }
        assert!(ipam.release(ip("10.0.0.4")).unwrap());
        assert!(ipam.release(ip("10.0.0.3")).unwrap());
        assert!(!ipam.release(ip("10.0.0.3")).unwrap(), "released twice");
        assert!(!ipam.release(ip("10.0.0.200")).unwrap(), "never taken");
        assert_eq!(
            ipam.allocated(ip("10.0.0.1")).unwrap(),
            [ip("10.0.0.2"), ip("10.0.0.5")]
        );
        assert_eq!(ipam.allocate().unwrap(), ip("10.0.0.3"));
        assert_eq!(ipam.allocate().unwrap(), ip("10.0.0.4"));
        assert_eq!(ipam.allocate().unwrap(), ip("10.0.0.6"));
    }

    #[test]
    fn network_gateway_and_broadcast_are_never_handed_out() {
        // A gateway in the middle of the subnet, not .1.
        let (dir, ipam) = made("192.168.7.0/29", "192.168.7.4");
        assert_eq!(bytes(&dir), [0b1001_0001]);
        let got: HashSet<_> =
            (0..5).map(|_| ipam.allocate().unwrap()).collect();
        let want: HashSet<_> = [1, 2, 3, 5, 6]
            .map(|d| Ipv4Addr::new(192, 168, 7, d))
            .into();
        assert_eq!(got, want);
        assert!(ipam.allocate().is_err());
        // Released, they would be handed out: refused.
        for reserved in ["192.168.7.0", "192.168.7.7"] {
            let err = ipam.release(ip(reserved)).unwrap_err().to_string();
            assert!(err.contains("network or broadcast"), "{err}");
        }
        let err = ipam.release(ip("192.168.8.1")).unwrap_err().to_string();
        assert_eq!(err, "192.168.8.1 is not in 192.168.7.0/29");
        assert_eq!(bytes(&dir), [0xff]);
    }

    #[test]
    fn the_gateway_must_be_a_host_address() {
        for gateway in ["10.9.0.0", "10.9.0.255", "10.9.1.1"] {
            let dir = tempfile::tempdir().unwrap();
            let ipam = Ipam::new(dir.path(), net("10.9.0.0/24"));
            let err = ipam.create(ip(gateway)).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "gateway {gateway} is not a host address of \
                     10.9.0.0/24 (from 10.9.0.1 to 10.9.0.254)"
                )
            );
            assert!(!dir.path().join(ADDRESSES).exists());
        }
    }

    #[test]
    fn create_never_writes_over_a_bitmap() {
        let (dir, ipam) = made("10.0.0.0/24", "10.0.0.1");
        ipam.allocate().unwrap();
        let before = bytes(&dir);
        let err = ipam.create(ip("10.0.0.1")).unwrap_err().to_string();
        assert!(err.ends_with("addresses exists already"), "{err}");
        assert_eq!(bytes(&dir), before);
    }

    #[test]
    fn host_bits_in_the_subnet_are_ignored() {
        let (_dir, ipam) = made("172.20.5.9/16", "172.20.0.1");
        assert_eq!(ipam.allocate().unwrap(), ip("172.20.0.2"));
    }

    #[test]
    fn a_16_is_handed_out_whole() {
        let (dir, ipam) = made("172.18.0.0/16", "172.18.0.1");
        assert_eq!(bytes(&dir).len(), 8192);
        let start = Instant::now();
        let mut last = u32::from(ip("172.18.0.1"));
        for _ in 0..65533 {
            let next = u32::from(ipam.allocate().unwrap());
            assert_eq!(next, last + 1, "lowest first, each once");
            last = next;
        }
        let all = start.elapsed();
        assert_eq!(Ipv4Addr::from(last), ip("172.18.255.254"));
        let err = ipam.allocate().unwrap_err().to_string();
        assert_eq!(err, "all 65533 addresses of 172.18.0.0/16 are in use");
        assert_eq!(bytes(&dir), vec![0xff; 8192]);

        // One allocation in a nearly full /16: its last address free.
        assert!(ipam.release(ip("172.18.255.254")).unwrap());
        let start = Instant::now();
        assert_eq!(ipam.allocate().unwrap(), ip("172.18.255.254"));
        let one = start.elapsed();
        eprintln!("/16: 65533 allocations in {all:?}, the last one in {one:?}");
    }

    #[test]
    fn a_8_works_to_its_last_address() {
        let (dir, ipam) = made("10.0.0.0/8", "10.0.0.1");
        assert_eq!(bytes(&dir).len(), 2 * 1024 * 1024);
        assert_eq!(ipam.allocate().unwrap(), ip("10.0.0.2"));
        // Fill it by hand, but for the highest host address.
        let mut full = vec![0xff; 2 * 1024 * 1024];
        full[2 * 1024 * 1024 - 1] = 0b1011_1111;
        fs::write(dir.path().join(ADDRESSES), full).unwrap();
        let start = Instant::now();
        assert_eq!(ipam.allocate().unwrap(), ip("10.255.255.254"));
        eprintln!("/8: the last allocation in {:?}", start.elapsed());
        let err = ipam.allocate().unwrap_err().to_string();
        assert_eq!(err, "all 16777213 addresses of 10.0.0.0/8 are in use");
        assert!(ipam.release(ip("10.128.0.0")).unwrap());
        assert_eq!(ipam.allocate().unwrap(), ip("10.128.0.0"));
    }

    #[test]
    fn parallel_allocators_never_share_an_address() {
        let (dir, _) = made("10.0.0.0/23", "10.0.0.1");
        // Each thread its own Ipam, so its own open file and its own lock,
        // as separate processes would have.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let ipam = Ipam::new(&dir, net("10.0.0.0/23"));
                    (0..50)
                        .map(|_| ipam.allocate().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for thread in threads {
            for address in thread.join().unwrap() {
                assert!(all.insert(address), "{address} handed out twice");
            }
        }
        assert_eq!(all.len(), 400);
        let ipam = Ipam::new(dir.path(), net("10.0.0.0/23"));
        let held = ipam.allocated(ip("10.0.0.1")).unwrap();
        assert_eq!(held.into_iter().collect::<HashSet<_>>(), all);
        // No temporary file left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["addresses", "addresses.lock"]);
    }

    #[test]
    fn a_damaged_bitmap_is_an_error_not_a_panic() {
        let (dir, ipam) = made("172.18.0.0/16", "172.18.0.1");
        let path = dir.path().join(ADDRESSES);
        for len in [0, 2000, 8191, 8193] {
            fs::write(&path, vec![0; len]).unwrap();
            let err = ipam.allocate().unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{}: {len} bytes, but the bitmap of 172.18.0.0/16 has \
                     8192: the file is damaged",
                    path.display()
                )
            );
            assert!(ipam.release(ip("172.18.0.2")).is_err());
            assert!(ipam.allocated(ip("172.18.0.1")).is_err());
            assert_eq!(fs::read(&path).unwrap().len(), len, "left as it was");
        }
        fs::remove_file(&path).unwrap();
        let err = ipam.allocate().unwrap_err();
        assert!(format!("{err:#}").starts_with("read "), "{err:#}");
    }

    #[test]
    fn subnets_out_of_8_to_30_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (cidr, gateway, why) in [
            ("10.0.0.0/31", "10.0.0.1", "too small"),
            ("10.0.0.1/32", "10.0.0.1", "too small"),
            ("10.0.0.0/7", "10.0.0.1", "too large"),
            ("0.0.0.0/0", "10.0.0.1", "too large"),
        ] {
            let ipam = Ipam::new(dir.path(), net(cidr));
            let err = ipam.create(ip(gateway)).unwrap_err().to_string();
            assert!(err.starts_with("subnet "), "{err}");
            assert!(err.contains(why), "{err}");
            assert!(ipam.allocate().is_err());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
