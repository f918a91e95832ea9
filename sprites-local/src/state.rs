//! [`State`]: what every connection of one server shares — the token, the sprite store, the
//! exec sessions, the port watchers, the runtime — and the registries shutdown needs (open
//! connections, running execs).
//!
//! It only holds things; it knows nothing of HTTP, routes or the reactor. The server
//! creates it, the API handlers and the exec sessions read it.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::exec::{ExecControl, Sessions};
use crate::lock;
use crate::ports::Ports;
use crate::runtime::SpriteRuntime;
use crate::store::Store;

/// State shared by every connection.
pub(crate) struct State {
    /// The bearer token clients must send.
    pub token: String,
    /// Sprite records.
    pub store: Store,
    /// Running (and recently exited) exec sessions.
    pub sessions: Arc<Sessions>,
    /// What runs sprites' processes and serves their files.
    pub runtime: Arc<dyn SpriteRuntime>,
    /// Whether exec upgrades advertise `X-Sprite-Capabilities: signal`.
    pub signal_capability: bool,
    /// Output each detachable session keeps for clients that attach later, in bytes.
    pub scrollback_bytes: usize,
    /// Filesystem writes are fsynced before they are answered (`--durable-writes`).
    pub durable_writes: bool,
    shutting_down: AtomicBool,
    /// Open connections: how many (the cap counts them), and a way to cut them at shutdown.
    conns: Arc<Conns>,
    /// Live exec and attach connections by registration number, so shutdown can close
    /// them with 1001.
    execs: Mutex<HashMap<u64, ExecControl>>,
    next_exec: AtomicU64,
    /// Port watchers: who listens on what in each sprite, for whoever subscribes.
    pub ports: Ports,
    /// Sprites' statuses (cold/warm/running), their clock and their watchers.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// The API listener's port, for sprites' URLs (`http://<name>.localhost:<port>`).
    pub url_port: u16,
    /// Each sprite's services (PROTOCOL.md §11).
    pub services: crate::services::Services,
    /// Whether `/control` (PROTOCOL.md §8) is served; when not, it answers 404 as a server
    /// without control connections does.
    pub control_enabled: bool,
    /// Whether control connections serve proxy ops (PROTOCOL.md §8.4).
    pub control_proxy_enabled: bool,
    /// Control connections accepted (upgraded) since the server started.
    pub control_upgrades: AtomicU64,
    /// The same, by sprite (for `GET /_sprites-local/stats`: clients checking their own
    /// sprite's count are not confused by others' connections).
    pub control_upgrades_by_sprite: Mutex<HashMap<String, u64>>,
    /// `fs.*` ops served over control connections, by op (for `GET /_sprites-local/stats`:
    /// tests check that clients run filesystem calls over control).
    pub control_fs_ops: Mutex<HashMap<&'static str, u64>>,
}

impl State {
    /// A server's state with no connections, sessions or execs yet.
    pub fn new(
        token: String,
        store: Store,
        runtime: Arc<dyn SpriteRuntime>,
        signal_capability: bool,
    ) -> State {
        let sessions = Arc::new(Sessions::default());
        State {
            token,
            store,
            ports: Ports::new(runtime.clone(), sessions.clone()),
            services: crate::services::Services::new(runtime.clone()),
            sessions,
            runtime,
            signal_capability,
            scrollback_bytes: crate::exec::DEFAULT_SCROLLBACK,
            durable_writes: false,
            shutting_down: AtomicBool::new(false),
            conns: Arc::new(Conns::default()),
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            lifecycle: Arc::new(crate::lifecycle::Lifecycle::new(Default::default())),
            url_port: 0,
            control_enabled: true,
            control_proxy_enabled: true,
            control_upgrades: AtomicU64::new(0),
            control_upgrades_by_sprite: Mutex::new(HashMap::new()),
            control_fs_ops: Mutex::new(HashMap::new()),
        }
    }

    /// True once shutdown has begun: no new connection or request is served.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks the server as shutting down.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Takes an accepted connection into the registry: it counts as open until the last
    /// reference to the returned [`Conn`] is dropped, which also closes its socket.
    pub fn register_conn(&self, stream: TcpStream) -> Arc<Conn> {
        self.conns.register(stream)
    }

    /// How many connections are open (waiting for a request, being served, or running
    /// an exec).
    pub fn open_conns(&self) -> usize {
        self.conns.count.load(Ordering::SeqCst)
    }

    /// Shuts every open connection down (both directions), which wakes whatever thread is
    /// blocked reading it.
    pub fn cut_conns(&self) {
        let open: Vec<Arc<Conn>> = lock(&self.conns.open)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for conn in open {
            let _ = conn.stream().shutdown(Shutdown::Both);
        }
    }

    /// Registers a live exec or attach connection; returns its registration number.
    pub fn add_exec(&self, control: ExecControl) -> u64 {
        let id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        lock(&self.execs).insert(id, control);
        id
    }

    /// Forgets a connection whose exec or attach ended.
    pub fn remove_exec(&self, id: u64) {
        lock(&self.execs).remove(&id);
    }

    /// The running execs, at this moment.
    pub fn running_execs(&self) -> Vec<ExecControl> {
        lock(&self.execs).values().cloned().collect()
    }
}

/// One open client connection: its socket, shared by whoever serves it (`Arc<Conn>`: the
/// reactor, a worker, an exec's threads) as one descriptor, never a `dup`.
///
/// Dropping the last reference closes the socket and takes the connection out of the
/// registry, so "open" always means "holds a descriptor".
pub(crate) struct Conn {
    stream: TcpStream,
    id: u64,
    registry: Arc<Conns>,
}

impl Conn {
    /// The socket. `&TcpStream` reads and writes, so threads share it without copies.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.registry.open).remove(&self.id);
        self.registry.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections. The registry holds [`Weak`] references: it can reach a
/// connection to cut it, but never keeps one (or its descriptor) alive.
#[derive(Default)]
pub(crate) struct Conns {
    open: Mutex<HashMap<u64, Weak<Conn>>>,
    count: AtomicUsize,
    next: AtomicU64,
}

impl Conns {
    fn register(self: &Arc<Self>, stream: TcpStream) -> Arc<Conn> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            stream,
            id,
            registry: self.clone(),
        });
        lock(&self.open).insert(id, Arc::downgrade(&conn));
        conn
    }
}
