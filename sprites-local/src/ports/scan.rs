//! One sprite's port scanner: a thread that, while the sprite has subscribers, reads its
//! listening sockets every [`INTERVAL`], works out what opened and closed since the last
//! scan, and tells every subscriber whose scope the change is in.
//!
//! What the scanner remembers ([`Memory`]) is its own: it does the reading ([`diag`]
//! dumps, `/proc` walks for holders) without any lock, and takes the watcher's lock only to publish a scan's result. Subscribers are
//! called under that lock, in scan order, so a new subscriber's first update (its
//! snapshot) and the changes that follow it never overlap or leave a gap.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::diag::{self, Socket};
use super::procfs::{self, Budget};
use super::{PortEvent, PortEventKind, Scope, Update};
use crate::exec::Sessions;
use crate::lock;
use crate::runtime::{PortScope, ProcessTrees, SpriteRuntime};
use crate::sys::socket::set_recv_timeout;

/// How often a watched sprite is scanned. A scan is two socket-diagnostics dumps of
/// listening sockets (tens of microseconds; it walks the sprite's processes only when a
/// socket it has not seen appears), so four a second cost little, while a listener shows
/// up within a quarter of a second.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Work (descriptor links read, threads listed) one scan may spend finding who holds the
/// sockets it has not seen before. Sockets it found no holder for within this are reported
/// with pid 0 (a sprite with its own network) or not at all (a sprite that shares the
/// server's, where only a holder makes a socket the sprite's).
pub const LOOKUP_BUDGET: usize = 16 * 1024;
/// Most listening sockets read from the server's own network per scan, for a sprite that
/// shares it (the host runtime), before they are filtered down to the sprite's. Other
/// programs' listeners count too, so this is far above what a machine normally has (a
/// sprite's listener past it is neither reported nor, while unseen, reported closed).
pub const MAX_SHARED_LISTENERS: usize = 65_536;

/// A listening socket of the sprite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    socket: Socket,
    /// Its holder's pid as seen in the sprite (0 when no holder was found).
    pid: u32,
    /// The exec session (its leader's host pid) whose tree holds it.
    session: Option<u32>,
}

impl Listener {
    fn event(&self, kind: PortEventKind) -> PortEvent {
        PortEvent {
            kind,
            port: self.socket.port,
            address: self.socket.address,
            pid: self.pid,
        }
    }

    fn in_scope(&self, scope: Scope) -> bool {
        match scope {
            Scope::Sprite => true,
            Scope::Session(id) => self.session == Some(id),
        }
    }
}

/// A subscriber's callback.
pub type OnUpdate = Box<dyn Fn(&Update<'_>) + Send + Sync>;

struct Sub {
    id: u64,
    scope: Scope,
    on_update: OnUpdate,
    /// Still waits for its first update (its snapshot).
    pending: bool,
}

/// What subscribers share with the scanner.
#[derive(Default)]
struct Shared {
    subs: Vec<Sub>,
    /// The sprite's listeners as of the last scan, oldest first.
    current: Vec<Listener>,
    /// A scan has run, so `current` is the sprite's state.
    scanned: bool,
    /// Dropping it stops the scanner thread.
    stop: Option<Sender<()>>,
}

/// One watched sprite: its subscribers and what its scanner found last.
pub struct Watcher {
    sprite: String,
    sprite_dir: PathBuf,
    runtime: Arc<dyn SpriteRuntime>,
    sessions: Arc<Sessions>,
    max: usize,
    shared: Mutex<Shared>,
}

impl Watcher {
    /// A watcher for `sprite` (stored at `sprite_dir`) with its scanner thread started;
    /// the sprite's listeners are capped at `max`.
    pub fn start(
        sprite: &str,
        sprite_dir: PathBuf,
        runtime: Arc<dyn SpriteRuntime>,
        sessions: Arc<Sessions>,
        max: usize,
    ) -> io::Result<Arc<Watcher>> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let w = Arc::new(Watcher {
            sprite: sprite.to_owned(),
            sprite_dir,
            runtime,
            sessions,
            max,
            shared: Mutex::new(Shared {
                stop: Some(stop_tx),
                ..Shared::default()
            }),
        });
        let scanner = w.clone();
        std::thread::Builder::new()
            .name("sprites-ports".into())
            .stack_size(128 * 1024)
            .spawn(move || scanner.run(&stop_rx))?;
        Ok(w)
    }

    /// Adds a subscriber. If a scan already ran, its first update (its snapshot) is
    /// delivered now, on the caller's thread; else the first scan delivers it.
    pub fn add(&self, id: u64, scope: Scope, on_update: OnUpdate) {
        let mut sh = lock(&self.shared);
        let mut sub = Sub {
            id,
            scope,
            on_update,
            pending: true,
        };
        if sh.scanned {
            first_update(&mut sub, &sh.current);
        }
        sh.subs.push(sub);
    }

    /// Removes subscriber `id`; true when none is left (the scanner then stops).
    pub fn remove(&self, id: u64) -> bool {
        let mut sh = lock(&self.shared);
        sh.subs.retain(|s| s.id != id);
        if sh.subs.is_empty() {
            sh.stop = None;
            return true;
        }
        false
    }

    fn run(&self, stop: &Receiver<()>) {
        let mut memory = Memory::default();
        loop {
            let execs: Vec<u32> = self
                .sessions
                .list(&self.sprite)
                .iter()
                .map(|s| s.host_pid)
                .collect();
            let scope = self.runtime.port_scope(&self.sprite_dir, &execs);
            let change = memory.scan(scope, self.max);
            self.publish(&memory, change);
            match stop.recv_timeout(INTERVAL) {
                Err(RecvTimeoutError::Timeout) => {}
                // Stopped (the last subscriber left): nothing is ever sent on it.
                _ => return,
            }
        }
    }

    /// Hands a scan's result to the subscribers.
    fn publish(&self, memory: &Memory, change: Option<Change>) {
        let mut sh = lock(&self.shared);
        if let Some(c) = &change {
            sh.current = memory.listeners.values().copied().collect();
            sh.current.sort_by_key(|l| l.socket.inode);
            let (closed, opened) = (&c.closed, &c.opened);
            for sub in sh.subs.iter().filter(|s| !s.pending) {
                let events = closed
                    .iter()
                    .map(|l| (l, PortEventKind::Closed))
                    .chain(opened.iter().map(|l| (l, PortEventKind::Opened)));
                for (l, kind) in events.filter(|(l, _)| l.in_scope(sub.scope)) {
                    (sub.on_update)(&Update::Event(&l.event(kind)));
                }
            }
        }
        sh.scanned = true;
        let Shared { subs, current, .. } = &mut *sh;
        for sub in subs.iter_mut().filter(|s| s.pending) {
            first_update(sub, current);
        }
    }
}

/// A subscriber's first update: the whole list for the sprite's scope, or the session's
/// own listeners as `port_opened` events (they were all opened during the session).
fn first_update(sub: &mut Sub, current: &[Listener]) {
    sub.pending = false;
    match sub.scope {
        Scope::Sprite => {
            let list: Vec<PortEvent> = current
                .iter()
                .map(|l| l.event(PortEventKind::Opened))
                .collect();
            (sub.on_update)(&Update::List(&list));
        }
        Scope::Session(_) => {
            for l in current.iter().filter(|l| l.in_scope(sub.scope)) {
                (sub.on_update)(&Update::Event(&l.event(PortEventKind::Opened)));
            }
        }
    }
}

/// What one scan found changed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Change {
    closed: Vec<Listener>,
    opened: Vec<Listener>,
}

/// The scanner's own memory of the sprite's sockets.
#[derive(Default)]
struct Memory {
    /// The sprite's listeners, by inode.
    listeners: BTreeMap<u64, Listener>,
    /// Listening sockets that are not the sprite's (or over its cap), so they are not
    /// looked up again while they exist.
    ignored: HashSet<u64>,
    /// The receive buffer of the diagnostics dumps, allocated on first use.
    buf: Vec<u8>,
}

/// What one scan read.
struct Reading {
    /// Listening sockets: the sprite's, or the shared network's (to be filtered).
    sockets: Vec<Socket>,
    /// They were all read (none left past the cap).
    complete: bool,
    /// Who may hold them.
    trees: ProcessTrees,
    /// Every socket read is the sprite's.
    own_network: bool,
    /// Report pids as seen in the sprite's own PID namespace.
    own_pids: bool,
}

impl Memory {
    /// Reads the sprite's sockets through `scope` (`None`: it has no process) and updates
    /// the memory. `None` when they could not be read: nothing is known to have changed.
    fn scan(&mut self, scope: Option<PortScope>, max: usize) -> Option<Change> {
        let reading = match scope {
            Some(s) => {
                if self.buf.is_empty() {
                    self.buf = vec![0u8; diag::RECV_BUF];
                }
                Some(read(s, max, MAX_SHARED_LISTENERS, &mut self.buf).ok()?)
            }
            None => None,
        };
        Some(self.update(reading, max))
    }

    /// Works out what changed since the last scan from what this one read (`None`: the
    /// sprite has no process), finding the holders of sockets not seen before.
    fn update(&mut self, reading: Option<Reading>, max: usize) -> Change {
        let mut change = Change::default();
        let (sockets, complete) = match &reading {
            Some(r) => (&r.sockets[..], r.complete),
            None => (&[][..], true),
        };
        let present: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
        // In a network of its own the sprite's first `max` listeners are the ones it has
        // (the cap); in a shared one, a listener left unread is not known to be closed.
        let absent_is_closed = complete || reading.as_ref().is_some_and(|r| r.own_network);
        let gone: Vec<u64> = self
            .listeners
            .keys()
            .filter(|i| absent_is_closed && !present.contains(i))
            .copied()
            .collect();
        for inode in gone {
            change.closed.extend(self.listeners.remove(&inode));
        }
        self.ignored.retain(|i| present.contains(i));
        let Some(reading) = reading else {
            return change;
        };
        let new: Vec<Socket> = reading
            .sockets
            .iter()
            .filter(|s| !self.listeners.contains_key(&s.inode) && !self.ignored.contains(&s.inode))
            .copied()
            .collect();
        if new.is_empty() {
            return change;
        }
        let wanted: HashSet<u64> = new.iter().map(|s| s.inode).collect();
        let holders =
            procfs::find_holders(&reading.trees, &wanted, &mut Budget::new(LOOKUP_BUDGET));
        for socket in new {
            let listener = match holders.get(&socket.inode) {
                Some(h) => Listener {
                    socket,
                    pid: if reading.own_pids {
                        procfs::pid_inside(h.pid).unwrap_or(0)
                    } else {
                        h.pid
                    },
                    session: Some(h.root),
                },
                // The sprite's resolver (held by the server, not the sprite) is no port of
                // the sprite's.
                None if reading.own_network
                    && !crate::policy::resolver::is_sprite_resolver(
                        socket.address,
                        socket.port,
                    ) =>
                {
                    Listener {
                        socket,
                        pid: 0,
                        session: None,
                    }
                }
                None => {
                    self.ignored.insert(socket.inode);
                    continue;
                }
            };
            if self.listeners.len() >= max {
                self.ignored.insert(socket.inode);
                continue;
            }
            self.listeners.insert(socket.inode, listener);
            change.opened.push(listener);
        }
        change
    }
}

/// How long one diagnostics dump may take (the kernel answers at once; this only bounds
/// the wait if it did not).
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the listening sockets `scope` shows: at most `max` (+ 1, the sprite's resolver)
/// where every socket is the sprite's, else at most `shared_max` (to be filtered by holder).
fn read(scope: PortScope, max: usize, shared_max: usize, buf: &mut [u8]) -> io::Result<Reading> {
    let PortScope {
        diag,
        own_network,
        trees,
        own_pids,
    } = scope;
    set_recv_timeout(&diag, Some(DUMP_TIMEOUT))?;
    // One more in a network of the sprite's own: its resolver's listener, which is read
    // but never reported (the cap on what is reported holds in `Memory::scan`).
    let max = if own_network { max + 1 } else { shared_max };
    let (sockets, complete) = both_families(max, |family, left, out| {
        diag::listeners(diag.as_fd(), family, left, out, buf)
    })?;
    Ok(Reading {
        sockets,
        complete,
        trees,
        own_network,
        own_pids,
    })
}

/// IPv4 then IPv6 listeners from `dump(family, at most, into)`, at most `max` in all; true
/// when that was all of them. A kernel without IPv6 answers its dump with an error, which
/// means none.
fn both_families(
    max: usize,
    mut dump: impl FnMut(u8, usize, &mut Vec<Socket>) -> io::Result<bool>,
) -> io::Result<(Vec<Socket>, bool)> {
    let mut out = Vec::new();
    if !dump(libc::AF_INET as u8, max, &mut out)? {
        return Ok((out, false));
    }
    let left = max - out.len();
    let complete = match dump(libc::AF_INET6 as u8, left, &mut out) {
        Ok(c) => c,
        Err(e) if e.kind() != io::ErrorKind::InvalidData => true,
        Err(e) => return Err(e),
    };
    Ok((out, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn sock(port: u16) -> Socket {
        Socket {
            address: IpAddr::from([0, 0, 0, 0]),
            port,
            inode: 1000 + u64::from(port),
        }
    }

    /// What a scan of a sprite with a network of its own reads: `ports`, all of them or not.
    fn own(ports: &[u16], complete: bool) -> Option<Reading> {
        Some(Reading {
            sockets: ports.iter().map(|p| sock(*p)).collect(),
            complete,
            trees: ProcessTrees::Roots(vec![]),
            own_network: true,
            own_pids: false,
        })
    }

    fn ports(v: &[Listener]) -> Vec<u16> {
        v.iter().map(|l| l.socket.port).collect()
    }

    #[test]
    fn changes_between_scans() {
        let mut m = Memory::default();
        let c = m.update(own(&[80, 443], true), 10);
        assert_eq!(ports(&c.opened), [80, 443]);
        assert!(c.closed.is_empty());
        assert_eq!(c.opened[0].pid, 0, "nobody holds a made-up socket");
        assert_eq!(c.opened[0].session, None);
        assert_eq!(m.update(own(&[80, 443], true), 10), Change::default());
        let c = m.update(own(&[443, 8080], true), 10);
        assert_eq!((ports(&c.closed), ports(&c.opened)), (vec![80], vec![8080]));
        // No process: everything closed.
        let c = m.update(None, 10);
        assert_eq!(ports(&c.closed), [443, 8080]);
        assert!(m.listeners.is_empty());
    }

    #[test]
    fn the_cap_holds_at_its_boundary() {
        let mut m = Memory::default();
        let c = m.update(own(&[1, 2, 3], true), 3);
        assert_eq!(ports(&c.opened), [1, 2, 3], "exactly the cap: all of them");
        // One over the cap: a reading stops at the cap.
        assert_eq!(m.update(own(&[1, 2, 3], false), 3), Change::default());
        assert_eq!(m.listeners.len(), 3);
        // Room again: the next one shows.
        let c = m.update(own(&[2, 3, 4], false), 3);
        assert_eq!((ports(&c.closed), ports(&c.opened)), (vec![1], vec![4]));
        // More read than the cap (a shared network's reading): the rest is ignored.
        let mut m = Memory::default();
        let c = m.update(own(&[1, 2, 3, 4], true), 3);
        assert_eq!(ports(&c.opened), [1, 2, 3]);
        assert!(m.ignored.contains(&1004));
    }

    #[test]
    fn both_families_share_the_cap() {
        let fake = |v4: Vec<u16>, v6: Vec<u16>| {
            move |family: u8, max: usize, out: &mut Vec<Socket>| -> io::Result<bool> {
                let list = if family == libc::AF_INET as u8 {
                    &v4
                } else {
                    &v6
                };
                for (i, p) in list.iter().enumerate() {
                    if i == max {
                        return Ok(false);
                    }
                    out.push(sock(*p));
                }
                Ok(true)
            }
        };
        let got = |(v, c): (Vec<Socket>, bool)| (v.iter().map(|s| s.port).collect::<Vec<_>>(), c);
        assert_eq!(
            got(both_families(3, fake(vec![1, 2], vec![3, 4])).unwrap()),
            (vec![1, 2, 3], false)
        );
        assert_eq!(
            got(both_families(4, fake(vec![1, 2], vec![3, 4])).unwrap()),
            (vec![1, 2, 3, 4], true)
        );
        assert_eq!(
            got(both_families(1, fake(vec![1, 2], vec![3])).unwrap()),
            (vec![1], false)
        );
        // No IPv6 in the kernel: its dump fails, and there are no IPv6 sockets.
        let no_v6 = |family: u8, _: usize, out: &mut Vec<Socket>| {
            if family == libc::AF_INET as u8 {
                out.push(sock(1));
                Ok(true)
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
        };
        assert_eq!(got(both_families(5, no_v6).unwrap()), (vec![1], true));
        let garbled = |_: u8, _: usize, _: &mut Vec<Socket>| -> io::Result<bool> {
            Err(io::Error::new(io::ErrorKind::InvalidData, "x"))
        };
        assert!(both_families(5, garbled).is_err());
    }

    /// The inode of a real listening socket of this process.
    fn inode_of(l: &std::net::TcpListener) -> u64 {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let link = link.to_str().unwrap();
        link["socket:[".len()..link.len() - 1].parse().unwrap()
    }

    /// What a scan of a shared network reads: `(port, inode)` sockets, this process's tree.
    fn shared(sockets: &[(u16, u64)], complete: bool) -> Option<Reading> {
        Some(Reading {
            sockets: sockets
                .iter()
                .map(|(port, inode)| Socket {
                    address: IpAddr::from([127, 0, 0, 1]),
                    port: *port,
                    inode: *inode,
                })
                .collect(),
            complete,
            trees: ProcessTrees::Roots(vec![std::process::id()]),
            own_network: false,
            own_pids: false,
        })
    }

    #[test]
    fn a_shared_network_reports_only_held_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = (4242, inode_of(&l));
        let mut m = Memory::default();
        let c = m.update(shared(&[(80, 1080), ours], true), 10);
        assert_eq!(
            ports(&c.opened),
            [4242],
            "held by this process: the sprite's"
        );
        assert_eq!(c.opened[0].pid, std::process::id());
        assert_eq!(c.opened[0].session, Some(std::process::id()));
        assert_eq!(
            m.ignored,
            HashSet::from([1080]),
            "not held: remembered as not ours"
        );
        // Ours not among what was read, the reading incomplete: unseen, not closed.
        assert_eq!(
            m.update(shared(&[(80, 1080)], false), 10),
            Change::default()
        );
        // Read whole and absent: closed; gone sockets are forgotten.
        let c = m.update(shared(&[(81, 1081)], true), 10);
        assert_eq!(ports(&c.closed), [4242]);
        assert_eq!(m.ignored, HashSet::from([1081]));
        drop(l);
    }

    #[test]
    fn a_real_scan_of_this_processs_network() {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let scope = || PortScope {
            diag: crate::sys::netlink::sock_diag_socket().unwrap(),
            own_network: false,
            trees: ProcessTrees::Roots(vec![std::process::id()]),
            own_pids: false,
        };
        let mut m = Memory::default();
        let c = m.scan(Some(scope()), 10).unwrap();
        let mine: Vec<&Listener> = c.opened.iter().filter(|l| l.socket.port == port).collect();
        assert_eq!(mine.len(), 1, "{:?}", c.opened);
        assert_eq!(mine[0].socket.address.to_string(), "::1");
        drop(l);
        let c = m.scan(Some(scope()), 10).unwrap();
        assert!(c.closed.iter().any(|l| l.socket.port == port));
        // A descriptor that is not a diagnostics socket: nothing read, nothing changes.
        let not_diag = PortScope {
            diag: std::fs::File::open("/dev/null").unwrap().into(),
            ..scope()
        };
        assert_eq!(m.scan(Some(not_diag), 10), None);
    }
}
