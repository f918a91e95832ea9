//! What `/proc` says about sockets and processes, read for the port scanner: listening TCP
//! sockets (`net/tcp`, `net/tcp6`), a process's children and socket descriptors, and its
//! pid inside its own PID namespace.
//!
//! Every function here does bounded work: reading stops after a given number of sockets,
//! and process walks spend a [`Budget`] (one unit per descriptor or thread looked at), so
//! a sprite with a million descriptors costs a scan no more than one with a few thousand.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::runtime::ProcessTrees;

/// A listening TCP socket, as `net/tcp{,6}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    /// The local address it listens on (`0.0.0.0`, `::` for every address).
    pub address: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode: what `/proc/PID/fd/N` links to as `socket:[INODE]`.
    pub inode: u64,
}

/// `st` of a socket in `TCP_LISTEN` (10).
const LISTEN: &str = "0A";
/// Longest line read from `net/tcp{,6}`. The kernel's lines are about 150 bytes; a longer
/// one is cut (and then fails to parse), so no line costs more than this.
const MAX_LINE: u64 = 512;

/// One data line of `net/tcp` or `net/tcp6`: `Some(socket)` for a listener, `None` for a
/// socket in another state. `Err(())` for a line that is not what the kernel writes.
fn parse_line(line: &str) -> Result<Option<Socket>, ()> {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
    let mut f = line.split_whitespace();
    let local = f.nth(1).ok_or(())?;
    let state = f.nth(1).ok_or(())?;
    if state != LISTEN {
        return Ok(None);
    }
    let inode = f.nth(5).ok_or(())?.parse::<u64>().map_err(|_| ())?;
    let (addr, port) = local.split_once(':').ok_or(())?;
    let port = u16::from_str_radix(port, 16).map_err(|_| ())?;
    Ok(Some(Socket {
        address: parse_address(addr).ok_or(())?,
        port,
        inode,
    }))
}

/// An address as `net/tcp{,6}` prints it: the address's 32-bit words, each as a hex number
/// in this machine's byte order (8 digits for IPv4, 32 for IPv6).
fn parse_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let digits = hex.get(i * 8..i * 8 + 8)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok().map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Appends the listening sockets of one `net/tcp` or `net/tcp6` file to `out`, at most
/// `max` of them. True when that was all of them; false when more were left unread.
///
/// The kernel lists its listening hash table before the established one (`tcp_get_idx`
/// in `net/ipv4/tcp_ipv4.c`, shared by IPv6), so reading stops at the first socket in any
/// other state: the work is at most `max + 2` lines, whatever else the namespace holds.
pub fn read_listeners(file: impl Read, max: usize, out: &mut Vec<Socket>) -> io::Result<bool> {
    let mut r = BufReader::with_capacity(16 * 1024, file);
    let mut line = Vec::with_capacity(256);
    let mut first = true;
    let mut taken = 0;
    loop {
        line.clear();
        if (&mut r).take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            return Ok(true);
        }
        if std::mem::take(&mut first) {
            continue; // the column titles
        }
        match parse_line(&String::from_utf8_lossy(&line)) {
            Ok(Some(_)) if taken == max => return Ok(false),
            Ok(Some(s)) => {
                out.push(s);
                taken += 1;
            }
            Ok(None) => return Ok(true),
            Err(()) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected line in /proc/net/tcp",
                ))
            }
        }
    }
}

/// Work allowed for one walk of processes: one unit per descriptor link read and per
/// thread whose children are listed.
#[derive(Debug)]
pub struct Budget(usize);

impl Budget {
    /// A budget of `units`.
    pub fn new(units: usize) -> Budget {
        Budget(units)
    }

    /// Spends one unit; false (and nothing spent) when none is left.
    fn spend(&mut self) -> bool {
        if self.0 == 0 {
            return false;
        }
        self.0 -= 1;
        true
    }

    fn is_spent(&self) -> bool {
        self.0 == 0
    }
}

/// The children of process `pid` (host pids), from every one of its threads'
/// `task/TID/children`. A process that is gone has none.
fn children(pid: u32, budget: &mut Budget) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if !budget.spend() {
            break;
        }
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Calls `found` with the inode of every socket descriptor process `pid` holds, as far as
/// `budget` goes.
fn socket_inodes(pid: u32, budget: &mut Budget, mut found: impl FnMut(u64)) {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds.flatten() {
        if !budget.spend() {
            return;
        }
        if let Some(inode) = std::fs::read_link(fd.path())
            .ok()
            .as_ref()
            .and_then(|t| t.to_str())
            .and_then(socket_inode)
        {
            found(inode);
        }
    }
}

/// `socket:[123]` → 123.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Who holds a socket: the process (host pid) and the root of the tree it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The holding process, as a host pid.
    pub pid: u32,
    /// The root of its tree: an exec session's leader.
    pub root: u32,
}

/// Finds, in `trees`, a process holding each socket of `wanted`, as far as `budget` goes.
/// Trees are walked parent first, so a socket shared by a parent and its children (a
/// listener inherited across `fork`) is attributed to the parent, which opened it.
pub fn find_holders(
    trees: &ProcessTrees,
    wanted: &HashSet<u64>,
    budget: &mut Budget,
) -> HashMap<u64, Holder> {
    let mut found = HashMap::new();
    let roots = match trees {
        ProcessTrees::Roots(r) => r.clone(),
        ProcessTrees::ChildrenOf(init) => children(*init, budget),
    };
    let mut seen = HashSet::new();
    'trees: for root in roots {
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if found.len() == wanted.len() || budget.is_spent() {
                break 'trees;
            }
            if !seen.insert(pid) {
                continue;
            }
            socket_inodes(pid, budget, |inode| {
                if wanted.contains(&inode) {
                    found.entry(inode).or_insert(Holder { pid, root });
                }
            });
            stack.extend(children(pid, budget));
        }
    }
    found
}

/// The pid of host process `pid` as seen in its own (innermost) PID namespace: the last
/// field of `NSpid:` in its `status`.
pub fn pid_inside(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    nspid_last(&status)
}

fn nspid_last(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4711 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:0BB8 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 4713 1 0000000000000000 20 4 30 10 -1\n\
   3: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4714 1 0000000000000000 100 0 0 10 0\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5002 1 0000000000000000 100 0 0 10 0\n\
   2: 0000000000000000FFFF00000100007F:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5003 1 0000000000000000 100 0 0 10 0\n";

    fn listeners(text: &str, max: usize) -> Vec<Socket> {
        let mut v = Vec::new();
        read_listeners(text.as_bytes(), max, &mut v).unwrap();
        v
    }

    fn complete(text: &str, max: usize) -> bool {
        read_listeners(text.as_bytes(), max, &mut Vec::new()).unwrap()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_listeners_up_to_the_first_other_state() {
        let v = listeners(TCP, 100);
        assert_eq!(
            v,
            [
                Socket {
                    address: addr("127.0.0.1"),
                    port: 3000,
                    inode: 4711
                },
                Socket {
                    address: addr("0.0.0.0"),
                    port: 8080,
                    inode: 4712
                },
            ],
            "the listener after the established socket is past where the kernel lists them"
        );
    }

    #[test]
    fn ipv6_addresses_in_every_form() {
        let v = listeners(TCP6, 100);
        let got: Vec<(String, u16, u64)> = v
            .iter()
            .map(|s| (s.address.to_string(), s.port, s.inode))
            .collect();
        assert_eq!(
            got,
            [
                ("::".to_owned(), 22, 5001),
                ("::1".to_owned(), 8081, 5002),
                ("::ffff:127.0.0.1".to_owned(), 3001, 5003),
            ]
        );
    }

    #[test]
    fn reading_stops_at_the_cap() {
        assert_eq!(listeners(TCP, 1).len(), 1);
        assert_eq!(listeners(TCP, 2).len(), 2);
        assert_eq!(listeners(TCP6, 2).len(), 2);
        assert_eq!(listeners(TCP6, 3).len(), 3);
        assert!(listeners(TCP, 0).is_empty());
        // Whether that was all: TCP lists 2 listeners before another state, TCP6 lists 3.
        assert!(!complete(TCP, 1));
        assert!(
            complete(TCP, 2),
            "the cap reached exactly, then another state"
        );
        assert!(!complete(TCP6, 2));
        assert!(complete(TCP6, 3), "the cap reached exactly, then the end");
        assert!(complete(TCP6, 4));
        assert!(complete("", 0));
        assert!(listeners("", 5).is_empty());
        assert!(listeners("header only\n", 5).is_empty());
    }

    #[test]
    fn junk_is_an_error_not_a_socket() {
        for bad in [
            "h\n 0: zz:0BB8 0:0 0A a b c d e 1\n",
            "h\n 0: 0100007F:XYZW 0:0 0A a b c d e 1\n",
            "h\n 0: 0100007F:0BB8 0:0 0A a b c d e notanumber\n",
            "h\n 0: 0100007F 0:0 0A a b c d e 1\n",
            "h\n 0: 0100007F:0BB8\n",
            "h\n 0: 0100007F:0BB8 0:0 0A a b\n",
            "h\n 0: 01000+7F:0BB8 0:0 0A a b c d e 1\n",
            "h\n 0: 0100007F00:0BB8 0:0 0A a b c d e 1\n",
        ] {
            let mut v = Vec::new();
            assert!(read_listeners(bad.as_bytes(), 5, &mut v).is_err(), "{bad}");
            assert!(v.is_empty());
        }
        // A line longer than any the kernel writes is cut, and the cut fails to parse.
        let long = format!("h\n 0: 0100007F:0BB8 0:0 0A {} 1\n", "x ".repeat(400));
        let mut v = Vec::new();
        assert!(read_listeners(long.as_bytes(), 5, &mut v).is_err());
    }

    #[test]
    fn socket_links_and_nspid() {
        assert_eq!(socket_inode("socket:[4711]"), Some(4711));
        assert_eq!(socket_inode("pipe:[4711]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        let status = "Name:\tpython3\nTgid:\t4130\nNSpid:\t98765\t4130\t12\nPPid:\t1\n";
        assert_eq!(nspid_last(status), Some(12));
        assert_eq!(nspid_last("Name:\tx\nNSpid:\t77\n"), Some(77));
        assert_eq!(nspid_last("Name:\tx\n"), None);
        assert_eq!(nspid_last("NSpid:\n"), None);
    }

    #[test]
    fn budgets_run_out() {
        let mut b = Budget::new(2);
        assert!(!b.is_spent());
        assert!(b.spend());
        assert!(b.spend());
        assert!(b.is_spent());
        assert!(!b.spend());
    }

    #[test]
    fn the_walk_stops_once_every_socket_is_found() {
        use std::os::fd::OwnedFd;
        use std::process::{Command, Stdio};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(
            std::fs::read_link(format!("/proc/self/fd/{}", {
                use std::os::fd::AsRawFd;
                l.as_raw_fd()
            }))
            .unwrap()
            .to_str()
            .unwrap(),
        )
        .unwrap();
        // Two `sleep`s; the first holds the socket (as its stdin).
        let sleep = |stdin: Stdio| {
            Command::new("sleep")
                .arg("30")
                .stdin(stdin)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut holder = sleep(Stdio::from(OwnedFd::from(l)));
        let mut other = sleep(Stdio::null());
        let count = |what: &str| {
            std::fs::read_dir(format!("/proc/{}/{what}", holder.id()))
                .unwrap()
                .count()
        };
        // Its descriptors (whatever else it inherited) and its threads' children lists.
        let holders_cost = count("fd") + count("task");
        let trees = ProcessTrees::Roots(vec![holder.id(), other.id()]);
        let mut budget = Budget::new(1000);
        let found = find_holders(&trees, &HashSet::from([inode]), &mut budget);
        let _ = (holder.kill(), other.kill(), holder.wait(), other.wait());
        assert_eq!(
            found.get(&inode),
            Some(&Holder {
                pid: holder.id(),
                root: holder.id()
            })
        );
        // The holder's tree only: the walk stopped before the other one.
        assert_eq!(budget.0, 1000 - holders_cost);
    }

    #[test]
    fn this_process_is_found_holding_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut v = Vec::new();
        let tcp = std::fs::File::open("/proc/self/net/tcp").unwrap();
        read_listeners(tcp, 100_000, &mut v).unwrap();
        let me = v
            .iter()
            .find(|s| s.port == port && s.address == addr("127.0.0.1"))
            .expect("our listener is listed");
        let wanted = HashSet::from([me.inode]);
        let pid = std::process::id();
        let holders = find_holders(
            &ProcessTrees::Roots(vec![pid]),
            &wanted,
            &mut Budget::new(1 << 20),
        );
        assert_eq!(holders.get(&me.inode), Some(&Holder { pid, root: pid }));
        // With no budget nothing is looked at.
        let none = find_holders(
            &ProcessTrees::Roots(vec![pid]),
            &wanted,
            &mut Budget::new(0),
        );
        assert!(none.is_empty());
        assert_eq!(pid_inside(pid).map(|_| ()), Some(()));
    }
}
