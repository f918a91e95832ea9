//! Just enough rtnetlink (NETLINK_ROUTE) to give a sprite its network: create a veth pair
//! whose one end lands in another network namespace, set addresses, bring links up and add a
//! default route. Messages are built by hand (no crate): a request is a header, a fixed
//! struct and a list of attributes, some nested.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::sys;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = 0x1;

/// One request being built: the 16-byte `nlmsghdr` is filled in by [`Message::finish`].
struct Message {
    buf: Vec<u8>,
    /// Start offsets of nested attributes still open.
    open: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Message {
            buf,
            open: Vec::new(),
        }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// `struct ifinfomsg` (AF_UNSPEC, index, flags and the mask of flags to change).
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        self.bytes(&[0, 0])
            .bytes(&0u16.to_ne_bytes())
            .bytes(&index.to_ne_bytes())
            .bytes(&flags.to_ne_bytes())
            .bytes(&change.to_ne_bytes())
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.bytes(&len.to_ne_bytes())
            .bytes(&kind.to_ne_bytes())
            .bytes(payload);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(kind, &b)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.bytes(&0u16.to_ne_bytes())
            .bytes(&(kind | NLA_F_NESTED).to_ne_bytes())
    }

    fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end() matches a begin()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(&mut self) -> &[u8] {
        debug_assert!(self.open.is_empty());
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

/// A NETLINK_ROUTE socket. It talks to the network namespace it was *created* in, whatever
/// namespace the thread later enters, which is how one process configures both ends of a
/// veth pair.
pub struct Route(OwnedFd);

impl Route {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Route> {
        sys::netlink::route_socket().map(Route)
    }

    /// Sends one request and reads replies until its acknowledgement. Returns the payload
    /// (after the 16-byte header) of the first reply that is not the acknowledgement, if
    /// any (a `GET` request's answer); a negative errno in the acknowledgement is the error.
    fn request(&self, msg: &mut Message) -> io::Result<Option<Vec<u8>>> {
        sys::netlink::send(self.0.as_fd(), msg.finish())?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut answer = None;
        loop {
            let n = sys::netlink::recv(self.0.as_fd(), &mut buf)?;
            let mut at = 0;
            while at + 16 <= n {
                let len = read_u32(&buf, at) as usize;
                let kind = read_u16(&buf, at + 4);
                if len < 16 || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ));
                }
                if kind == NLMSG_ERROR {
                    if len < 20 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "short netlink error",
                        ));
                    }
                    let errno = read_u32(&buf, at + 16) as i32;
                    return if errno == 0 {
                        Ok(answer)
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
                if answer.is_none() {
                    answer = Some(buf[at + 16..at + len].to_vec());
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// The index of link `name` in this socket's namespace.
    pub fn index(&self, name: &str) -> io::Result<u32> {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        match self.request(&mut m)? {
            // The answer starts with the link's `ifinfomsg`: index at offset 4.
            Some(p) if p.len() >= 16 => Ok(read_u32(&p, 4)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no link in the netlink answer",
            )),
        }
    }

    /// Creates a veth pair: `name` in this socket's namespace, `peer` in the namespace
    /// `peer_ns` (an open `/proc/PID/ns/net`). Fails with `EEXIST` if `name` is taken,
    /// which makes the name a host-wide, self-releasing claim (the pair goes away with the
    /// peer's namespace).
    pub fn create_veth(&self, name: &str, peer: &str, peer_ns: BorrowedFd<'_>) -> io::Result<()> {
        let ns = peer_ns.as_raw_fd() as u32;
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        m.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "veth");
        m.begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_NET_NS_FD, &ns.to_ne_bytes());
        m.end().end().end();
        self.request(&mut m).map(drop)
    }

    /// Brings link `index` up.
    pub fn set_up(&self, index: u32) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(index as i32, IFF_UP, IFF_UP);
        self.request(&mut m).map(drop)
    }

    /// Adds `addr/prefix` to link `index`.
    pub fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        m.bytes(&[libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE])
            .bytes(&index.to_ne_bytes())
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(&mut m).map(drop)
    }

    /// Adds a default route via `gateway` on link `index`.
    pub fn add_default_route(&self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        m.bytes(&[
            libc::AF_INET as u8,
            0, // dst_len: the default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ])
        .bytes(&0u32.to_ne_bytes())
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(&mut m).map(drop)
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths() {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(0, 0, 0);
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish().to_vec();
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        // header 16 + ifinfomsg 16, then the nested attribute: 4 + ("veth\0" attr: 4+5, padded to 12)
        assert_eq!(b.len(), 16 + 16 + 4 + 12);
        assert_eq!(u16::from_ne_bytes(b[32..34].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_ne_bytes(b[34..36].try_into().unwrap()),
            IFLA_LINKINFO | NLA_F_NESTED
        );
    }
}
