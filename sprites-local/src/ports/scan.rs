//! One sprite's port scanner: a thread that, while the sprite has subscribers, reads its
//! listening sockets every [`INTERVAL`], works out what opened and closed since the last
//! scan, and tells every subscriber whose scope the change is in.
//!
//! What the scanner remembers ([`Memory`]) is its own: it does the `/proc` reading without
//! any lock, and takes the watcher's lock only to publish a scan's result. Subscribers are
//! called under that lock, in scan order, so a new subscriber's first update (its
//! snapshot) and the changes that follow it never overlap or leave a gap.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::procfs::{self, Budget, Socket};
use super::{PortEvent, PortEventKind, Scope, Update};
use crate::exec::Sessions;
use crate::lock;
use crate::runtime::{PortScope, SpriteRuntime};

/// How often a watched sprite is scanned. A scan reads two small `/proc` files (and walks
/// the sprite's processes only when a socket it has not seen appears), so four a second
/// cost little, while a listener shows up within a quarter of a second.
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
                .map(|s| s.pid)
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
struct Memory {
    /// The sprite's listeners, by inode.
    listeners: BTreeMap<u64, Listener>,
    /// Listening sockets that are not the sprite's (or over its cap), so they are not
    /// looked up again while they exist.
    ignored: HashSet<u64>,
    /// [`MAX_SHARED_LISTENERS`] (smaller in tests).
    shared_max: usize,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            listeners: BTreeMap::new(),
            ignored: HashSet::new(),
            shared_max: MAX_SHARED_LISTENERS,
        }
    }
}

impl Memory {
    /// Reads the sprite's sockets through `scope` (`None`: it has no process) and updates
    /// the memory. `None` when they could not be read: nothing is known to have changed.
    fn scan(&mut self, scope: Option<PortScope>, max: usize) -> Option<Change> {
        let (sockets, complete) = match &scope {
            Some(s) => read_sockets(s, max, self.shared_max).ok()?,
            None => (Vec::new(), true),
        };
        let present: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
        let mut change = Change::default();
        // In a network of its own the sprite's first `max` listeners are the ones it has
        // (the cap); in a shared one, a listener left unread is not known to be closed.
        let absent_is_closed = complete || scope.as_ref().is_some_and(|s| s.own_network);
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
        let (Some(scope), false) = (scope, sockets.is_empty()) else {
            return Some(change);
        };
        let new: Vec<Socket> = sockets
            .into_iter()
            .filter(|s| !self.listeners.contains_key(&s.inode) && !self.ignored.contains(&s.inode))
            .collect();
        if new.is_empty() {
            return Some(change);
        }
        let wanted: HashSet<u64> = new.iter().map(|s| s.inode).collect();
        let holders = procfs::find_holders(&scope.trees, &wanted, &mut Budget::new(LOOKUP_BUDGET));
        for socket in new {
            let listener = match holders.get(&socket.inode) {
                Some(h) => Listener {
                    socket,
                    pid: if scope.own_pids {
                        procfs::pid_inside(h.pid).unwrap_or(0)
                    } else {
                        h.pid
                    },
                    session: Some(h.root),
                },
                None if scope.own_network => Listener {
                    socket,
                    pid: 0,
                    session: None,
                },
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
        Some(change)
    }
}

/// The listening sockets `scope` shows: at most `max` where every socket is the sprite's,
/// else at most `shared_max` (to be filtered by holder). True when they were all read.
fn read_sockets(
    scope: &PortScope,
    max: usize,
    shared_max: usize,
) -> io::Result<(Vec<Socket>, bool)> {
    let tcp = File::open(scope.net_dir.join("tcp"))?;
    // A kernel without IPv6 has no tcp6.
    let tcp6 = File::open(scope.net_dir.join("tcp6")).ok();
    if !(scope.still_valid)() {
        // The files may belong to whoever has the pid now: the sprite has no sockets.
        return Ok((Vec::new(), true));
    }
    let max = if scope.own_network { max } else { shared_max };
    let mut out = Vec::new();
    let mut complete = procfs::read_listeners(tcp, max, &mut out)?;
    if let Some(tcp6) = tcp6 {
        let left = max - out.len();
        complete &= procfs::read_listeners(tcp6, left, &mut out)?;
    }
    Ok((out, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ProcessTrees;
    use std::io::Write;

    /// A scope over a fake `net` dir holding `tcp` (and an empty `tcp6`).
    fn scope(dir: &std::path::Path, own_network: bool, roots: Vec<u32>) -> PortScope {
        PortScope {
            net_dir: dir.to_owned(),
            own_network,
            trees: ProcessTrees::Roots(roots),
            own_pids: false,
            still_valid: Box::new(|| true),
        }
    }

    struct FakeNet(PathBuf);

    impl FakeNet {
        fn new() -> FakeNet {
            let d = std::env::temp_dir().join(format!(
                "sprites-ports-test-{}",
                crate::random::hex(6).unwrap()
            ));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("tcp6"), "header\n").unwrap();
            FakeNet(d)
        }

        /// Listeners on ports `ports` with inodes 1000 + port.
        fn set(&self, ports: &[u16]) {
            let v: Vec<(u16, u64)> = ports.iter().map(|p| (*p, 1000 + u64::from(*p))).collect();
            self.set_inodes(&v);
        }

        /// Listeners on `(port, inode)`.
        fn set_inodes(&self, sockets: &[(u16, u64)]) {
            self.write("tcp", sockets);
        }

        /// IPv6 listeners on `::` and ports `ports`, with inodes 2000 + port.
        fn set6(&self, ports: &[u16]) {
            let mut f = File::create(self.0.join("tcp6")).unwrap();
            writeln!(f, "header").unwrap();
            for (i, p) in ports.iter().enumerate() {
                writeln!(
                    f,
                    "{i}: {:032X}:{p:04X} {:032X}:0000 0A 00000000:00000000 00:00000000 00000000 0 0 {} 1",
                    0,
                    0,
                    2000 + u64::from(*p)
                )
                .unwrap();
            }
        }

        fn write(&self, file: &str, sockets: &[(u16, u64)]) {
            let mut f = File::create(self.0.join(file)).unwrap();
            writeln!(f, "header").unwrap();
            for (i, (p, inode)) in sockets.iter().enumerate() {
                writeln!(
                    f,
                    "{i}: 00000000:{p:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 {inode} 1"
                )
                .unwrap();
            }
        }
    }

    impl Drop for FakeNet {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ports(v: &[Listener]) -> Vec<u16> {
        v.iter().map(|l| l.socket.port).collect()
    }

    #[test]
    fn changes_between_scans() {
        let net = FakeNet::new();
        let mut m = Memory::default();
        net.set(&[80, 443]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 10).unwrap();
        assert_eq!(ports(&c.opened), [80, 443]);
        assert!(c.closed.is_empty());
        assert_eq!(c.opened[0].pid, 0, "nobody holds a fake socket");
        assert_eq!(c.opened[0].session, None);

        let c = m.scan(Some(scope(&net.0, true, vec![])), 10).unwrap();
        assert_eq!(c, Change::default(), "nothing changed");

        net.set(&[443, 8080]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 10).unwrap();
        assert_eq!(ports(&c.closed), [80]);
        assert_eq!(ports(&c.opened), [8080]);

        // No process: everything closed.
        let c = m.scan(None, 10).unwrap();
        assert_eq!(ports(&c.closed), [443, 8080]);
        assert!(m.listeners.is_empty());

        // Unreadable: nothing known, nothing changes.
        net.set(&[1]);
        let c = m.scan(Some(scope(&net.0.join("missing"), true, vec![])), 10);
        assert_eq!(c, None);
    }

    #[test]
    fn the_cap_holds_at_its_boundary() {
        let net = FakeNet::new();
        let mut m = Memory::default();
        net.set(&[1, 2, 3]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 3).unwrap();
        assert_eq!(ports(&c.opened), [1, 2, 3], "exactly the cap: all of them");
        net.set(&[1, 2, 3, 4]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 3).unwrap();
        assert!(c.opened.is_empty(), "one over the cap: not read");
        assert_eq!(m.listeners.len(), 3);
        // Room again: the next one shows.
        net.set(&[2, 3, 4]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 3).unwrap();
        assert_eq!((ports(&c.closed), ports(&c.opened)), (vec![1], vec![4]));
    }

    #[test]
    fn the_cap_counts_both_families() {
        let net = FakeNet::new();
        let mut m = Memory::default();
        net.set(&[1, 2]);
        net.set6(&[3, 4]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 3).unwrap();
        assert_eq!(ports(&c.opened), [1, 2, 3]);
        let c = m.scan(Some(scope(&net.0, true, vec![])), 4).unwrap();
        assert_eq!(ports(&c.opened), [4]);
        assert_eq!(c.opened[0].socket.address.to_string(), "::");
    }

    #[test]
    fn a_shared_network_reports_only_held_sockets() {
        let net = FakeNet::new();
        let mut m = Memory::default();
        net.set(&[80, 81]);
        // Nobody in the (empty) trees holds them: not the sprite's, and remembered as such.
        let c = m
            .scan(Some(scope(&net.0, false, vec![std::process::id()])), 10)
            .unwrap();
        assert_eq!(c, Change::default());
        assert_eq!(m.ignored.len(), 2);
        net.set(&[81]);
        let c = m.scan(Some(scope(&net.0, false, vec![])), 10).unwrap();
        assert_eq!(c, Change::default());
        assert_eq!(m.ignored.len(), 1, "forgotten once gone");
    }

    /// The inode of a real listening socket of this process.
    fn inode_of(l: &std::net::TcpListener) -> u64 {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let link = link.to_str().unwrap();
        link["socket:[".len()..link.len() - 1].parse().unwrap()
    }

    #[test]
    fn a_shared_network_read_in_part_closes_nothing_unseen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = (4242, inode_of(&l));
        let net = FakeNet::new();
        // A shared network whose only tree is this process.
        let me = || Some(scope(&net.0, false, vec![std::process::id()]));
        let mut m = Memory {
            shared_max: 2,
            ..Memory::default()
        };
        net.set_inodes(&[(80, 1080), ours]);
        let c = m.scan(me(), 10).unwrap();
        assert_eq!(
            ports(&c.opened),
            [4242],
            "held by this process: the sprite's"
        );
        assert_eq!(c.opened[0].pid, std::process::id());
        assert_eq!(c.opened[0].session, Some(std::process::id()));
        // Two others listed first, ours past the read: unseen, but not closed.
        net.set_inodes(&[(80, 1080), (81, 1081), ours]);
        assert_eq!(m.scan(me(), 10).unwrap(), Change::default());
        // Read whole and absent: closed.
        net.set_inodes(&[(80, 1080)]);
        let c = m.scan(me(), 10).unwrap();
        assert_eq!(ports(&c.closed), [4242]);
        drop(l);
    }

    #[test]
    fn an_invalid_scope_has_no_sockets() {
        let net = FakeNet::new();
        net.set(&[80]);
        let mut s = scope(&net.0, true, vec![]);
        s.still_valid = Box::new(|| false);
        assert_eq!(read_sockets(&s, 10, 10).unwrap(), (Vec::new(), true));
    }
}
