//! [`State`]: what every connection of one server shares — the token, the sprite store, the
//! exec sessions, the runtime — and the registries shutdown needs (open connections,
//! running execs).
//!
//! It only holds things; it knows nothing of HTTP, routes or the accept loop. The server
//! creates it, the API handlers and the exec sessions read it.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::exec::{ExecControl, Sessions};
use crate::lock;
use crate::runtime::SpriteRuntime;
use crate::store::Store;

/// State shared by every connection.
pub(crate) struct State {
    /// The bearer token clients must send.
    pub token: String,
    /// Sprite records.
    pub store: Store,
    /// Running (and recently exited) exec sessions.
    pub sessions: Sessions,
    /// What runs sprites' processes and serves their files.
    pub runtime: Arc<dyn SpriteRuntime>,
    /// Whether exec upgrades advertise `X-Sprite-Capabilities: signal`.
    pub signal_capability: bool,
    shutting_down: AtomicBool,
    /// Open connections, so shutdown can cut them (idle keep-alives, running execs).
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    /// Running execs by session id, so shutdown can close them with 1001.
    execs: Mutex<HashMap<u32, ExecControl>>,
}

impl State {
    /// A server's state with no connections, sessions or execs yet.
    pub fn new(
        token: String,
        store: Store,
        runtime: Arc<dyn SpriteRuntime>,
        signal_capability: bool,
    ) -> State {
        State {
            token,
            store,
            sessions: Sessions::default(),
            runtime,
            signal_capability,
            shutting_down: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            execs: Mutex::new(HashMap::new()),
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

    /// Registers an open connection (a clone of it, when one can be made) so shutdown can
    /// cut it. Returns its id for [`State::remove_conn`].
    pub fn add_conn(&self, stream: &TcpStream) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.conns).insert(id, clone);
        }
        id
    }

    /// Forgets a connection that ended.
    pub fn remove_conn(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Shuts every open connection down (both directions).
    pub fn cut_conns(&self) {
        for conn in lock(&self.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Registers a running exec under its session id.
    pub fn add_exec(&self, pid: u32, control: ExecControl) {
        lock(&self.execs).insert(pid, control);
    }

    /// Forgets an exec whose connection ended.
    pub fn remove_exec(&self, pid: u32) {
        lock(&self.execs).remove(&pid);
    }

    /// The running execs, at this moment.
    pub fn running_execs(&self) -> Vec<ExecControl> {
        lock(&self.execs).values().cloned().collect()
    }
}
