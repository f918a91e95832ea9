//! Listening TCP sockets from socket diagnostics (`NETLINK_SOCK_DIAG`, `inet_diag`: what
//! `ss -lt` uses): one dump request per address family, asking for sockets in `LISTEN`
//! only, which the kernel answers from its listening table alone.
//!
//! Why not `/proc/net/tcp{,6}`: the kernel's TCP tables are shared by every network
//! namespace, and those files walk the whole established table (all namespaces' sockets,
//! `TIME_WAIT` ones included) to find a namespace's entries or their end. On a machine
//! with 35 000 sockets in `TIME_WAIT`, reading the first bytes of an empty `tcp6` took
//! 6.5 ms; the listening dump takes about 20 µs.
//!
//! Messages are built and parsed here, by hand and bounds-checked (the kernel's structs,
//! `linux/inet_diag.h`); the socket is [`crate::sys::netlink`]'s.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

use crate::sys::netlink;

/// A listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    /// The local address it listens on (`0.0.0.0`, `::` for every address).
    pub address: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode: what `/proc/PID/fd/N` links to as `socket:[INODE]`.
    pub inode: u64,
}

/// `nlmsghdr` size.
const NLMSG_HDR: usize = 16;
/// `inet_diag_req_v2` size: family, protocol, ext, pad, states (u32), `inet_diag_sockid`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `inet_diag_sockid` size: sport, dport (be16), src, dst (4 × be32 each), if (u32),
/// cookie (2 × u32).
const SOCKID_LEN: usize = 48;
/// `inet_diag_msg` size: family, state, timer, retrans, the sockid, then expires, rqueue,
/// wqueue, uid and inode (u32 each).
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `TCP_LISTEN`.
const TCP_LISTEN: u8 = 10;
/// Receive buffer: the kernel's dump datagrams are at most 32 KiB.
pub const RECV_BUF: usize = 64 * 1024;

/// The dump request for `family`'s listening TCP sockets.
fn request(family: u8) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    // seq and pid stay 0: one request at a time on a socket of our own.
    m[16] = family;
    m[17] = libc::IPPROTO_TCP as u8;
    m[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m
}

/// What one datagram of the dump said.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// More datagrams follow.
    More,
    /// The dump ended.
    Done,
    /// More than `max` listeners: reading stopped.
    Full,
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("socket diagnostics: {what}"),
    )
}

/// Parses one datagram of `family`'s dump into `out` (which holds at most `max`).
fn parse(datagram: &[u8], family: u8, max: usize, out: &mut Vec<Socket>) -> io::Result<Step> {
    let mut at = 0;
    while at + NLMSG_HDR <= datagram.len() {
        let len = u32_ne(datagram, at).ok_or_else(|| invalid("short header"))? as usize;
        let kind = u16_ne(datagram, at + 4).ok_or_else(|| invalid("short header"))?;
        if len < NLMSG_HDR || at + len > datagram.len() {
            return Err(invalid("message length out of bounds"));
        }
        let body = &datagram[at + NLMSG_HDR..at + len];
        match kind {
            NLMSG_DONE => return Ok(Step::Done),
            NLMSG_ERROR => {
                let errno = u32_ne(body, 0).ok_or_else(|| invalid("short error"))? as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < MSG_LEN {
                    return Err(invalid("short socket message"));
                }
                if body[0] == family && body[1] == TCP_LISTEN {
                    if out.len() == max {
                        return Ok(Step::Full);
                    }
                    out.push(socket(body));
                }
            }
            _ => {} // nothing else is sent for a dump; skipped if it were
        }
        at += (len + 3) & !3;
    }
    Ok(Step::More)
}

/// The socket an `inet_diag_msg` (at least [`MSG_LEN`] bytes) describes.
fn socket(m: &[u8]) -> Socket {
    let id = &m[4..4 + SOCKID_LEN];
    let port = u16::from_be_bytes([id[0], id[1]]);
    let src = &id[4..20];
    let address = if m[0] == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(src);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let inode = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]);
    Socket {
        address,
        port,
        inode: u64::from(inode),
    }
}

/// Appends the listening TCP sockets of `family` (`AF_INET` or `AF_INET6`) in `sock`'s
/// network namespace to `out`, which ends with at most `max`. True when that was all of
/// them; false when more were left (the dump is then unfinished: `sock` must not be used
/// again). `buf` is the receive buffer (at least [`RECV_BUF`] bytes).
pub fn listeners(
    sock: BorrowedFd<'_>,
    family: u8,
    max: usize,
    out: &mut Vec<Socket>,
    buf: &mut [u8],
) -> io::Result<bool> {
    netlink::send(sock, &request(family))?;
    loop {
        let n = netlink::recv(sock, buf)?;
        if n == 0 {
            return Err(invalid("the dump ended without its end"));
        }
        match parse(&buf[..n.min(buf.len())], family, max, out)? {
            Step::More => {}
            Step::Done => return Ok(true),
            Step::Full => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// One `SOCK_DIAG_BY_FAMILY` message as the kernel writes it.
    fn message(family: u8, state: u8, addr: &[u8], port: u16, inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + MSG_LEN];
        m[0..4].copy_from_slice(&((NLMSG_HDR + MSG_LEN) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let b = &mut m[NLMSG_HDR..];
        b[0] = family;
        b[1] = state;
        b[4..6].copy_from_slice(&port.to_be_bytes());
        b[8..8 + addr.len()].copy_from_slice(addr);
        b[68..72].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    fn control(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR];
        m[0..4].copy_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    const V4: u8 = libc::AF_INET as u8;
    const V6: u8 = libc::AF_INET6 as u8;

    #[test]
    fn the_request_asks_for_listeners_of_one_family() {
        let r = request(V6);
        assert_eq!(u32_ne(&r, 0), Some(72));
        assert_eq!(u16_ne(&r, 4), Some(20));
        assert_eq!(u16_ne(&r, 6), Some(0x301));
        assert_eq!((r[16], r[17]), (V6, 6));
        assert_eq!(u32_ne(&r, 20), Some(1 << 10));
    }

    #[test]
    fn messages_become_sockets() {
        let mut d = message(V4, TCP_LISTEN, &[127, 0, 0, 1], 3000, 4711);
        d.extend(message(V4, TCP_LISTEN, &[0, 0, 0, 0], 8080, 4712));
        // Another state or family is not a listener of this dump.
        d.extend(message(V4, 1, &[10, 0, 0, 1], 22, 4713));
        d.extend(message(V6, TCP_LISTEN, &[0; 16], 22, 4714));
        let mut out = Vec::new();
        assert_eq!(parse(&d, V4, 10, &mut out).unwrap(), Step::More);
        let got: Vec<(String, u16, u64)> = out
            .iter()
            .map(|s| (s.address.to_string(), s.port, s.inode))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1".to_owned(), 3000, 4711),
                ("0.0.0.0".to_owned(), 8080, 4712)
            ]
        );
        let mut one = [0u8; 16];
        one[15] = 1;
        let d = message(V6, TCP_LISTEN, &one, 443, 9);
        let mut out = Vec::new();
        parse(&d, V6, 10, &mut out).unwrap();
        assert_eq!(out[0].address.to_string(), "::1");
        assert_eq!((out[0].port, out[0].inode), (443, 9));
    }

    #[test]
    fn the_end_errors_and_the_cap() {
        let mut d = message(V4, TCP_LISTEN, &[127, 0, 0, 1], 1, 1);
        d.extend(message(V4, TCP_LISTEN, &[127, 0, 0, 1], 2, 2));
        let mut done = d.clone();
        done.extend(control(NLMSG_DONE, &0i32.to_ne_bytes()));
        let mut out = Vec::new();
        assert_eq!(parse(&done, V4, 2, &mut out).unwrap(), Step::Done);
        assert_eq!(out.len(), 2, "exactly the cap");
        let mut out = Vec::new();
        assert_eq!(parse(&done, V4, 1, &mut out).unwrap(), Step::Full);
        assert_eq!(out.len(), 1, "one over the cap");
        let mut out = Vec::new();
        assert_eq!(parse(&d, V4, 0, &mut out).unwrap(), Step::Full);
        let e = parse(
            &control(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()),
            V4,
            5,
            &mut out,
        );
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EPERM));
        for bad in [
            control(SOCK_DIAG_BY_FAMILY, &[0u8; 10]), // short socket message
            control(NLMSG_ERROR, &[]),                // short error
            {
                let mut m = message(V4, TCP_LISTEN, &[0; 4], 1, 1);
                m[0..4].copy_from_slice(&1000u32.to_ne_bytes()); // longer than the datagram
                m
            },
            {
                let mut m = message(V4, TCP_LISTEN, &[0; 4], 1, 1);
                m[0..4].copy_from_slice(&4u32.to_ne_bytes()); // shorter than a header
                m
            },
        ] {
            assert_eq!(
                parse(&bad, V4, 5, &mut Vec::new()).unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
        }
        // Unknown message types are skipped (one with no payload at all too); a trailing
        // partial header is ignored.
        let mut d = control(99, &[1, 2, 3, 4]);
        d.extend(control(98, &[]));
        d.extend(message(V4, TCP_LISTEN, &[0; 4], 7, 7));
        d.extend([0u8; 8]);
        let mut out = Vec::new();
        assert_eq!(parse(&d, V4, 5, &mut out).unwrap(), Step::More);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn this_process_sees_its_own_listener() {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let sock = netlink::sock_diag_socket().unwrap();
        let mut buf = vec![0u8; RECV_BUF];
        let mut out = Vec::new();
        assert!(listeners(sock.as_fd(), V6, 100_000, &mut out, &mut buf).unwrap());
        assert!(out
            .iter()
            .any(|s| s.port == port && s.address.to_string() == "::1" && s.inode > 0));
        // The same socket serves the next dump once one has ended.
        let mut again = Vec::new();
        assert!(listeners(sock.as_fd(), V6, 100_000, &mut again, &mut buf).unwrap());
        assert!(again.iter().any(|s| s.port == port));
        // A cap of 0 with a listener present: unfinished.
        let mut none = Vec::new();
        let fresh = netlink::sock_diag_socket().unwrap();
        assert!(!listeners(fresh.as_fd(), V6, 0, &mut none, &mut buf).unwrap());
        assert!(none.is_empty());
    }
}
