//! A network per sprite.
//!
//! Every sprite has its own network namespace: its own loopback (so `localhost` is the
//! sprite's, and abstract unix sockets are per sprite), and nothing of the host's. Where the
//! server is root and nftables is there, it also gets a way out:
//!
//! - a veth pair: `eth0` inside with `100.64.X.Y/30` (RFC 6598 shared address space, which
//!   hosts do not use for their own networks), the host end `splNNNNN` with the `/30`'s
//!   first address as the sprite's gateway. The host end's *name* is the allocation: the
//!   kernel refuses a second link of that name, so concurrent servers never hand out the
//!   same subnet, and the pair disappears with the sprite's namespace (nothing to clean
//!   up after a crash);
//! - one host-wide nftables table, `inet sprites_local`, shared by every sprites-local
//!   server: traffic from `spl*` links is masqueraded on its way out, is refused (ICMP
//!   "administratively prohibited", so a connect fails at once) on its way to the host
//!   itself (any of its addresses, so neither the API port nor host services) or to any
//!   sprite (this server's or another's) or to link-local addresses (a cloud's metadata
//!   service hands out the host's credentials at 169.254.169.254), and nothing may open a
//!   connection into a sprite from outside. The rules match link names, so they never change per sprite;
//! - `net.ipv4.ip_forward` is switched on (host-wide, as every container runtime does):
//!   without it nothing is routed between the veth and the host's uplink.
//!
//! The namespace belongs to the initial user namespace, so root inside a sprite cannot
//! change its addresses or routes (it can bind any port: `ip_unprivileged_port_start` is 0
//! in the sprite's namespace). Without root or without `nft`, a sprite has its loopback
//! only, and the startup line says why.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use super::netlink::Route;
use crate::sys;

/// The nftables table every sprites-local server shares.
const NFT_TABLE: &str = "sprites_local";
/// Prefix of the host ends of sprites' veth pairs (what the nftables rules match).
const LINK_PREFIX: &str = "spl";
/// Sprites' addresses: 100.64.0.0/10, one /30 each.
const BLOCK: u32 = 0x6440_0000;
const BLOCK_BITS: u32 = 10;
/// How many /30s the block holds.
const SUBNETS: u32 = 1 << (32 - BLOCK_BITS - 2);

/// The host-wide rules (idempotent: every server applies the same table in one
/// transaction; flushing and re-adding leaves exactly one copy of each rule).
fn nft_script() -> String {
    let block = format!("{}/{BLOCK_BITS}", Ipv4Addr::from(BLOCK));
    let t = NFT_TABLE;
    let l = format!("\"{LINK_PREFIX}*\"");
    format!(
        "add table inet {t}
add chain inet {t} input {{ type filter hook input priority filter - 5; policy accept; }}
add chain inet {t} forward {{ type filter hook forward priority filter - 5; policy accept; }}
add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
flush chain inet {t} input
flush chain inet {t} forward
flush chain inet {t} postrouting
add rule inet {t} input iifname {l} ct state established,related accept
add rule inet {t} input iifname {l} reject with icmpx type admin-prohibited
add rule inet {t} forward iifname {l} oifname {l} reject with icmpx type admin-prohibited
add rule inet {t} forward iifname {l} ip daddr {block} reject with icmpx type admin-prohibited
add rule inet {t} forward iifname {l} ip daddr 169.254.0.0/16 reject with icmpx type admin-prohibited
add rule inet {t} forward iifname {l} meta nfproto ipv6 reject with icmpx type admin-prohibited
add rule inet {t} forward oifname {l} ct state established,related accept
add rule inet {t} forward oifname {l} drop
add rule inet {t} postrouting iifname {l} oifname != {l} masquerade
"
    )
}

/// How sprites reach the network, decided once when the runtime starts.
#[derive(Debug, Clone)]
pub enum Network {
    /// Egress through a veth pair and NAT; `resolv_conf` is the sprite's resolver file.
    Nat {
        /// Contents for the sprite's `/etc/resolv.conf`.
        resolv_conf: String,
    },
    /// Loopback only, and why.
    Isolated(String),
}

impl Network {
    /// Sets up egress for a root server (the nftables table, IPv4 forwarding); any failure
    /// leaves sprites isolated, with the reason.
    pub fn detect(privileged: bool) -> Network {
        if !privileged {
            return Network::Isolated(
                "egress needs a root server (veth pairs and NAT); loopback only".into(),
            );
        }
        if let Err(e) = apply_nft() {
            return Network::Isolated(format!("no egress: nftables: {e}; loopback only"));
        }
        if let Err(e) = enable_forwarding() {
            return Network::Isolated(format!(
                "no egress: enabling net.ipv4.ip_forward: {e}; loopback only"
            ));
        }
        Network::Nat {
            resolv_conf: resolv_conf(),
        }
    }

    /// One phrase for the startup line.
    pub fn describe(&self) -> String {
        match self {
            Network::Nat { .. } => format!(
                "own network namespace per sprite, egress through NAT from {}/{BLOCK_BITS} \
                 (nftables table inet {NFT_TABLE}); the host, its loopback and other sprites \
                 are unreachable",
                Ipv4Addr::from(BLOCK)
            ),
            Network::Isolated(why) => format!("own network namespace per sprite ({why})"),
        }
    }

    /// Whether sprites get a veth pair.
    pub fn egress(&self) -> bool {
        matches!(self, Network::Nat { .. })
    }
}

fn apply_nft() -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(e.kind(), "`nft` not found"),
            _ => e,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(nft_script().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

fn enable_forwarding() -> io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(PATH, "1")
}

/// The sprite's resolver file: its own resolver (the server answers there, applying the
/// sprite's network policy; see `crate::policy::resolver`).
/// `edns0` lets glibc take answers of up to 1200 bytes over UDP (bigger ones come back
/// truncated and are asked again over TCP).
fn resolv_conf() -> String {
    format!(
        "{RESOLV_MARKER}\nnameserver {}\noptions edns0\n",
        super::ipc::RESOLVER_ADDR.ip()
    )
}

/// Where sprites' resolvers forward allowed names by default: the first name server of the
/// host's `/etc/resolv.conf` (a loopback one too: the forwarder runs on the host).
pub fn host_upstream() -> Option<std::net::SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

/// First line of a resolver file written by us: one with it is ours to refresh, one
/// without it the sprite's user wrote and is left alone. (Its wording dates from when it
/// listed the host's name servers; it stays, so older sprites' files are still refreshed.)
pub const RESOLV_MARKER: &str = "# written by sprites-local (the host's name servers)";

/// The addresses of subnet `n` (1 ≤ n < [`SUBNETS`]): (gateway = host end, sprite).
fn subnet(n: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = BLOCK + n * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// IPv4 routes of the host's main table, as (destination, mask), default route excluded.
fn host_routes() -> Vec<(u32, u32)> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The kernel prints the network-order bytes as a native-endian hex number.
            let word = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
            };
            Some((word(f.get(1)?)?, word(f.get(7)?)?))
        })
        .filter(|(_, mask)| *mask != 0)
        .collect()
}

/// Whether `a/a_mask` and `b/b_mask` share any address.
fn overlaps((a, a_mask): (u32, u32), (b, b_mask): (u32, u32)) -> bool {
    let m = a_mask & b_mask;
    a & m == b & m
}

/// Brings loopback up in the calling process's (new, own) network namespace.
pub fn loopback_up() -> io::Result<()> {
    Route::open()?.set_up(sys::netlink::if_index("lo")?)
}

/// Where the sprite's network ends up, for its log.
#[derive(Debug)]
pub struct Joined {
    /// The sprite's address, when it has egress.
    pub address: Option<Ipv4Addr>,
}

/// Moves the calling (single-threaded, root) stub into a new network namespace owned by
/// the initial user namespace and configures it: loopback up, and with `egress` a veth
/// pair, addresses, the default route. Unprivileged ports are opened to everyone inside
/// (`ip_unprivileged_port_start = 0`: root-only ports mean nothing in a sprite) and `ping`
/// works without raw sockets.
pub fn enter(egress: bool) -> io::Result<Joined> {
    let host = if egress { Some(Route::open()?) } else { None };
    sys::mount::unshare(libc::CLONE_NEWNET)?;
    let inside = Route::open()?;
    inside.set_up(sys::netlink::if_index("lo")?)?;
    // Best effort: both are conveniences, not isolation.
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    let _ = std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    let Some(host) = host else {
        return Ok(Joined { address: None });
    };
    let ns = std::fs::File::open("/proc/self/ns/net")?;
    let routes = host_routes();
    let mut chosen = None;
    for _ in 0..64 {
        let mut r = [0u8; 4];
        crate::random::fill(&mut r)?;
        let n = u32::from_ne_bytes(r) % (SUBNETS - 1) + 1;
        let (gw, _) = subnet(n);
        if routes
            .iter()
            .any(|r| overlaps(*r, (u32::from(gw) & !3, 0xffff_fffc)))
        {
            continue;
        }
        let name = format!("{LINK_PREFIX}{n:05x}");
        match host.create_veth(&name, "eth0", ns.as_fd()) {
            Ok(()) => {
                chosen = Some((n, name));
                break;
            }
            // Another sprite (of any server) holds this subnet.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((n, name)) = chosen else {
        return Err(io::Error::other("no free sprite subnet after 64 tries"));
    };
    let (gw, addr) = subnet(n);
    let host_end = host.index(&name)?;
    host.add_address(host_end, gw, 30)?;
    host.set_up(host_end)?;
    let eth0 = sys::netlink::if_index("eth0")?;
    inside.add_address(eth0, addr, 30)?;
    inside.set_up(eth0)?;
    inside.add_default_route(eth0, gw)?;
    Ok(Joined {
        address: Some(addr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_overlaps() {
        assert_eq!(
            subnet(1),
            (Ipv4Addr::new(100, 64, 0, 5), Ipv4Addr::new(100, 64, 0, 6))
        );
        let last = subnet(SUBNETS - 1).1;
        assert_eq!(last, Ipv4Addr::new(100, 127, 255, 254));
        let net = |a: [u8; 4], bits: u32| (u32::from(Ipv4Addr::from(a)), !0u32 << (32 - bits));
        assert!(overlaps(net([100, 64, 0, 4], 30), net([100, 64, 0, 0], 10)));
        assert!(overlaps(net([100, 64, 0, 0], 10), net([100, 64, 0, 4], 30)));
        assert!(!overlaps(
            net([100, 64, 0, 4], 30),
            net([192, 168, 0, 0], 16)
        ));
        assert!(!overlaps(
            net([100, 64, 0, 4], 30),
            net([100, 64, 0, 8], 30)
        ));
    }

    #[test]
    fn the_rules_match_the_link_prefix() {
        let s = nft_script();
        assert!(s.contains("input iifname \"spl*\" reject"));
        assert!(s.contains("masquerade"));
        assert!(s.contains("ip daddr 100.64.0.0/10 reject"));
        assert!(
            s.contains("ip daddr 169.254.0.0/16 reject"),
            "cloud metadata services"
        );
    }
}
