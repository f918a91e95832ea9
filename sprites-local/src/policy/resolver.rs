//! The resolver of one sprite: a thread of the server answering the DNS queries that the
//! sprite's programs send to its sockets at [`SPRITE_RESOLVER`] — UDP, and TCP for answers
//! too big for a datagram — bound *inside* the sprite's network namespace by its agent, so
//! the sprite gets no new path to the host: the sockets are the only thing shared, and the
//! server only reads queries from them and writes answers to them.
//!
//! For each query: a name the network policy denies gets `REFUSED`; an allowed one is
//! forwarded — as a fresh query carrying only the question (our own id, recursion desired,
//! EDNS when the client used it) — to the upstream resolver, and the answer goes back with
//! the client's id. With a default-deny policy the addresses of allowed answers are let
//! through the sprite's firewall ([`super::firewall`]).
//!
//! Bounds: one thread per running sprite; one query at a time, each waiting at most
//! [`UPSTREAM_TIMEOUT`] for the upstream; one TCP connection at a time, for at most
//! [`TCP_QUERIES`] queries and [`TCP_DEADLINE`]; queries of at most [`dns::MAX_UDP`] bytes;
//! at most [`MAX_REMEMBERED`] remembered addresses. The thread ends when the sprite does
//! (its agent's pidfd turns readable).

use std::collections::HashMap;
use std::io;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dns::{self, Query};
use super::firewall::Firewall;
use super::network::{NetworkPolicy, Verdict};
use crate::lock;

/// Where a sprite's resolver listens inside the sprite (UDP and TCP); its
/// `/etc/resolv.conf` names it.
pub(crate) const SPRITE_RESOLVER: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53);

/// Whether a listening socket in a sprite's own network namespace is its resolver's (the
/// port scanner does not report it: it is the server's).
pub(crate) fn is_sprite_resolver(address: IpAddr, port: u16) -> bool {
    address == IpAddr::V4(*SPRITE_RESOLVER.ip()) && port == SPRITE_RESOLVER.port()
}

/// How long one query waits for the upstream.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queries answered on one TCP connection from the sprite.
pub(crate) const TCP_QUERIES: usize = 8;
/// Longest a TCP connection from the sprite is served (the thread serves nothing else
/// meanwhile; each read and write is bounded by [`UPSTREAM_TIMEOUT`] too).
pub(crate) const TCP_DEADLINE: Duration = Duration::from_secs(5);
/// Most datagrams read per wake-up before checking whether the sprite is gone.
const BATCH: usize = 64;
/// Most addresses remembered for the firewall.
const MAX_REMEMBERED: usize = 4096;
/// Shortest and longest time an allowed address stays open in the firewall (the answer's
/// TTL, clamped: short TTLs would cut connections that outlive them).
const MIN_OPEN: u64 = 600;
const MAX_OPEN: u64 = 86_400;

/// What the resolver thread and the policy routes share.
struct Shared {
    sprite_dir: PathBuf,
    /// Swapped whole on a reload; each query takes the current one.
    policy: Mutex<Arc<NetworkPolicy>>,
    firewall: Option<Firewall>,
    /// Addresses let through the firewall: the name they answered and until when.
    opened: Mutex<HashMap<IpAddr, (String, Instant)>>,
}

/// The running resolver of one sprite (a handle: clones share it).
#[derive(Clone)]
pub(crate) struct Resolver {
    shared: Arc<Shared>,
}

impl Resolver {
    /// Starts answering on `udp` and `tcp` (a listener; both bound inside the sprite) until
    /// `exit` (the agent's pidfd) turns readable. `netns` is the sprite's network namespace,
    /// for the firewall (`None`: DNS only). `upstream`: where allowed names are resolved
    /// (`None`: SERVFAIL).
    pub fn start(
        sprite_dir: &Path,
        udp: OwnedFd,
        tcp: Option<OwnedFd>,
        netns: Option<OwnedFd>,
        exit: OwnedFd,
        upstream: Option<SocketAddr>,
    ) -> io::Result<Resolver> {
        let udp = UdpSocket::from(udp);
        udp.set_nonblocking(true)?;
        let tcp = tcp.map(TcpListener::from);
        if let Some(l) = &tcp {
            l.set_nonblocking(true)?;
        }
        let shared = Arc::new(Shared {
            sprite_dir: sprite_dir.to_owned(),
            policy: Mutex::new(Arc::new(NetworkPolicy::default())),
            firewall: netns.map(Firewall::new),
            opened: Mutex::new(HashMap::new()),
        });
        let r = Resolver { shared };
        r.apply(true);
        let shared = r.shared.clone();
        std::thread::Builder::new()
            .name("sprites-dns".into())
            .stack_size(256 * 1024)
            .spawn(move || serve(&shared, &udp, tcp.as_ref(), &exit, upstream))?;
        Ok(r)
    }

    /// Re-reads the sprite's network policy and applies it: later queries follow it, and
    /// the firewall is rebuilt (addresses of names now denied are no longer let through).
    pub fn reload(&self) {
        self.apply(false);
    }

    /// Reads the policy and sets the firewall up for it; `fresh`: the namespace has no
    /// table yet (nothing to remove when the policy needs none: starting a sprite runs no
    /// `nft` then).
    fn apply(&self, fresh: bool) {
        let s = &self.shared;
        let policy = super::network(&s.sprite_dir);
        let deny = policy.denies_by_default();
        *lock(&s.policy) = Arc::new(policy.clone());
        let Some(fw) = &s.firewall else { return };
        if fresh && !deny {
            return;
        }
        let mut result = fw.reset(deny);
        if deny && result.is_ok() {
            let now = Instant::now();
            let keep: Vec<(IpAddr, u64)> = {
                let mut opened = lock(&s.opened);
                opened.retain(|_, (name, until)| {
                    *until > now && policy.decide(name) == Verdict::Allow
                });
                opened
                    .iter()
                    .map(|(ip, (_, until))| (*ip, until.duration_since(now).as_secs().max(1)))
                    .collect()
            };
            result = fw.allow(&keep);
        }
        if let Err(e) = result {
            // The names are still filtered; the server's log says what is missing.
            firewall_failed(s, &e);
        }
    }
}

fn serve(
    shared: &Shared,
    udp: &UdpSocket,
    tcp: Option<&TcpListener>,
    exit: &OwnedFd,
    upstream: Option<SocketAddr>,
) {
    let mut buf = vec![0u8; dns::MAX_UDP];
    let pollfd = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let mut fds = [
            pollfd(exit.as_raw_fd()),
            pollfd(udp.as_raw_fd()),
            // A negative fd is skipped by poll.
            pollfd(tcp.map_or(-1, |l| l.as_raw_fd())),
        ];
        match crate::sys::fd::poll(&mut fds, -1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if fds[0].revents != 0 {
            return; // the sprite is gone
        }
        if fds[1].revents != 0 {
            for _ in 0..BATCH {
                let (n, from) = match udp.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock: drained
                };
                if let Some(answer) = answer(shared, &buf[..n], upstream, false) {
                    let _ = udp.send_to(&answer, from);
                }
            }
        }
        if let (Some(l), true) = (tcp, fds[2].revents != 0) {
            for _ in 0..BATCH {
                match l.accept() {
                    Ok((conn, _)) => serve_tcp(shared, conn, upstream),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock: none left
                }
            }
        }
    }
}

/// Answers the queries of one TCP connection from the sprite (RFC 1035 §4.2.2: each
/// message preceded by its length), within [`TCP_QUERIES`] and [`TCP_DEADLINE`].
fn serve_tcp(shared: &Shared, mut conn: TcpStream, upstream: Option<SocketAddr>) {
    let deadline = Instant::now() + TCP_DEADLINE;
    if conn.set_nonblocking(false).is_err() {
        return;
    }
    for _ in 0..TCP_QUERIES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || conn
                .set_read_timeout(Some(left.min(UPSTREAM_TIMEOUT)))
                .is_err()
            || conn.set_write_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
        {
            return;
        }
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n > dns::MAX_UDP {
            return; // no query is that big
        }
        let mut query = vec![0u8; n];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        let Some(answer) = answer(shared, &query, upstream, true) else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(2 + answer.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// The answer to one query from the sprite (`None`: nothing to answer), which came over TCP
/// (`tcp`: any size goes back) or UDP (at most what the client said it takes).
fn answer(
    shared: &Shared,
    packet: &[u8],
    upstream: Option<SocketAddr>,
    tcp: bool,
) -> Option<Vec<u8>> {
    let q = match dns::parse_query(packet) {
        Ok(q) => q,
        Err(_) => return dns::format_error(packet),
    };
    if q.opcode() != 0 {
        return Some(dns::error_answer(&q, dns::NOTIMP));
    }
    let policy = lock(&shared.policy).clone();
    if policy.decide(&q.name) == Verdict::Deny {
        return Some(dns::error_answer(&q, dns::REFUSED));
    }
    let Some(upstream) = upstream else {
        return Some(dns::error_answer(&q, dns::SERVFAIL));
    };
    let forwarded = match forward(&q, upstream) {
        // Truncated over UDP: a TCP client gets the whole answer.
        Ok((_, a)) if tcp && a.truncated => forward_tcp(&q, upstream),
        other => other,
    };
    let (bytes, parsed) = match forwarded {
        Ok(x) => x,
        Err(_) => return Some(dns::error_answer(&q, dns::SERVFAIL)),
    };
    if policy.denies_by_default() {
        open(shared, &q.name, &parsed.addresses);
    }
    if !tcp && bytes.len() > q.max_udp() {
        return Some(dns::truncated(&q));
    }
    Some(dns::with_id(bytes, q.id))
}

/// Sends `q` to `upstream` and waits for its answer (at most [`UPSTREAM_TIMEOUT`]).
fn forward(q: &Query, upstream: SocketAddr) -> io::Result<(Vec<u8>, dns::Answer)> {
    let local: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(upstream)?;
    let mut idb = [0u8; 2];
    crate::random::fill(&mut idb)?;
    let id = u16::from_ne_bytes(idb);
    sock.send(&dns::upstream_query(q, id))?;
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; dns::MAX_UDP];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream timed out",
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Anything that is not the answer to our question (a stale or forged datagram)
        // is dropped; the loop ends at the deadline.
        if let Ok(a) = dns::parse_answer(&buf[..n]) {
            if a.id == id && a.question == (q.name.clone(), q.qtype, q.qclass) {
                buf.truncate(n);
                return Ok((buf, a));
            }
        }
    }
}

/// Sends `q` to `upstream` over TCP and reads its answer (at most [`UPSTREAM_TIMEOUT`] in
/// all).
fn forward_tcp(q: &Query, upstream: SocketAddr) -> io::Result<(Vec<u8>, dns::Answer)> {
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut conn = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream timed out",
            ))
        } else {
            Ok(d)
        }
    };
    conn.set_write_timeout(Some(left()?))?;
    let mut idb = [0u8; 2];
    crate::random::fill(&mut idb)?;
    let id = u16::from_ne_bytes(idb);
    let query = dns::upstream_query(q, id);
    let mut out = (query.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&query);
    conn.write_all(&out)?;
    conn.set_read_timeout(Some(left()?))?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.set_read_timeout(Some(left()?))?;
    conn.read_exact(&mut buf)?;
    let a = dns::parse_answer(&buf).map_err(|e| io::Error::other(format!("{e:?}")))?;
    if a.id != id || a.question != (q.name.clone(), q.qtype, q.qclass) {
        return Err(io::Error::other("the upstream answered another question"));
    }
    Ok((buf, a))
}

/// Lets the addresses an allowed name resolved to through the firewall.
fn open(shared: &Shared, name: &str, addrs: &[(IpAddr, u32)]) {
    let Some(fw) = &shared.firewall else { return };
    let now = Instant::now();
    let mut fresh = Vec::new();
    {
        let mut opened = lock(&shared.opened);
        for (ip, ttl) in addrs {
            let secs = u64::from(*ttl).clamp(MIN_OPEN, MAX_OPEN);
            let until = now + Duration::from_secs(secs);
            // Refresh only what would close within half its time: most answers repeat.
            let known = opened
                .get(ip)
                .is_some_and(|(n, u)| n == name && *u > now + Duration::from_secs(secs / 2));
            if known {
                continue;
            }
            if opened.len() >= MAX_REMEMBERED && !opened.contains_key(ip) {
                opened.retain(|_, (_, u)| *u > now);
                if opened.len() >= MAX_REMEMBERED {
                    continue; // still full: the address stays closed
                }
            }
            opened.insert(*ip, (name.to_owned(), until));
            fresh.push((*ip, secs));
        }
    }
    if let Err(e) = fw.allow(&fresh) {
        firewall_failed(shared, &e);
    }
}

/// Logs why the firewall could not be set (the server's stderr; names are filtered still).
fn firewall_failed(shared: &Shared, e: &io::Error) {
    eprintln!(
        "sprites-local: sprite {}: network policy firewall: {e}",
        shared.sprite_dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::dns::tests::{answer as fake_answer, query};
    use std::net::Ipv4Addr;

    fn shared(policy: &str) -> Shared {
        let v: serde_json::Value = serde_json::from_str(policy).unwrap();
        Shared {
            sprite_dir: PathBuf::from("/nonexistent"),
            policy: Mutex::new(Arc::new(
                NetworkPolicy::from_document(v.as_object().unwrap()).unwrap(),
            )),
            firewall: None,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// A one-shot upstream on loopback answering A queries with 192.0.2.7.
    fn upstream() -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let a = fake_answer(&buf[..n], &[Ipv4Addr::new(192, 0, 2, 7)]);
                sock.send_to(&a, from).unwrap();
            }
        });
        addr
    }

    #[test]
    fn denied_names_are_refused_and_allowed_ones_forwarded() {
        let s = shared(r#"{"rules":[{"domain":"*.ok.test","action":"allow"}]}"#);
        let refused = answer(&s, &query(5, "no.test", dns::TYPE_A, false), None, false).unwrap();
        let a = dns::parse_answer(&refused).unwrap();
        assert_eq!((a.id, a.rcode), (5, dns::REFUSED));
        let no_upstream =
            answer(&s, &query(6, "a.ok.test", dns::TYPE_A, false), None, false).unwrap();
        assert_eq!(
            dns::parse_answer(&no_upstream).unwrap().rcode,
            dns::SERVFAIL
        );
        let fwd = answer(
            &s,
            &query(7, "a.ok.test", dns::TYPE_A, false),
            Some(upstream()),
            false,
        )
        .unwrap();
        let a = dns::parse_answer(&fwd).unwrap();
        assert_eq!((a.id, a.rcode), (7, 0));
        assert_eq!(a.addresses[0].0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(
            answer(&s, b"junk", None, false),
            None,
            "too short to answer"
        );
        let formerr = answer(&s, &[0u8; 12], None, false).unwrap();
        assert_eq!(formerr[3] & 0xf, dns::FORMERR);
    }

    #[test]
    fn a_truncated_answer_is_fetched_again_over_tcp_for_a_tcp_client() {
        // One upstream port, UDP and TCP: UDP answers with TC set and no records, TCP in full.
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let mut a = fake_answer(&buf[..n], &[]);
                a[2] |= 0x02; // TC
                udp.send_to(&a, from).unwrap();
            }
        });
        std::thread::spawn(move || {
            let (mut c, _) = tcp.accept().unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut q).unwrap();
            let addrs = vec![Ipv4Addr::new(192, 0, 2, 9); 40]; // more than 512 bytes
            let a = fake_answer(&q, &addrs);
            c.write_all(&(a.len() as u16).to_be_bytes()).unwrap();
            c.write_all(&a).unwrap();
        });
        let s = shared(r#"{"rules":[]}"#);
        let q = query(9, "big.test", dns::TYPE_A, false);
        let over_udp = answer(&s, &q, Some(addr), false).unwrap();
        assert!(
            dns::parse_answer(&over_udp).unwrap().truncated,
            "TC passed on"
        );
        let over_tcp = answer(&s, &q, Some(addr), true).unwrap();
        let a = dns::parse_answer(&over_tcp).unwrap();
        assert_eq!((a.id, a.truncated, a.addresses.len()), (9, false, 40));
        assert!(over_tcp.len() > 512);
    }

    #[test]
    fn a_silent_upstream_is_servfail_within_the_timeout() {
        let s = shared(r#"{"rules":[]}"#);
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let r = answer(
            &s,
            &query(8, "x.test", 1, false),
            Some(silent.local_addr().unwrap()),
            false,
        );
        assert_eq!(dns::parse_answer(&r.unwrap()).unwrap().rcode, dns::SERVFAIL);
        assert!(started.elapsed() < UPSTREAM_TIMEOUT + Duration::from_secs(2));
    }
}
