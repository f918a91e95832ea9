//! The server: builder, handle and shutdown. Connections are served by one reactor thread
//! ([`reactor`]: accepts, reads request heads without blocking, authenticates them, holds
//! idle keep-alive connections, enforces the caps and deadlines) and a pool of workers
//! ([`worker`]: run one authenticated request after another, then hand the connection
//! back).

mod reactor;
mod worker;

use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::{fmt, io};

use crate::net::http::{write_response, Response};
use crate::runtime::{self, Runtime, SandboxOptions, SpriteRuntime};
use crate::state::State;
use crate::store::Store;
use crate::{random, sys};

/// How long shutdown waits for running execs' close frames to go out.
const SHUTDOWN_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Default for [`ServerBuilder::head_timeout`].
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ServerBuilder::idle_timeout`].
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Descriptors kept out of the connection budget for everything else the server opens
/// (its data dir, the epoll and wake fds, sandbox agents' sockets, …).
const RESERVED_FDS: u64 = 256;
/// Largest default [`ServerBuilder::max_connections`], whatever the fd limit: every active
/// connection may hold a thread.
const MAX_DEFAULT_CONNECTIONS: usize = 65_536;
/// Largest default [`ServerBuilder::max_unauthenticated`]: each may buffer up to a 64 KiB
/// head until its deadline.
const MAX_DEFAULT_UNAUTHENTICATED: usize = 4096;

/// Entry point: `Server::builder()...start()`.
///
/// ```no_run
/// let server = sprites_local::Server::builder()
///     .data_dir("/tmp/sprites-data")
///     .start()?;
/// println!("{} (token {})", server.url(), server.token());
/// server.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Server {
    _private: (),
}

impl Server {
    /// A builder with the defaults: `127.0.0.1:0`, a random token, the default data dir
    /// and [`Runtime::Auto`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            addr: "127.0.0.1:0".into(),
            token: None,
            data_dir: None,
            base_dir: None,
            runtime: Runtime::Auto,
            signal_capability: true,
            control: true,
            control_proxy: true,
            durable_writes: false,
            sandbox: SandboxOptions::default(),
            max_connections: None,
            max_unauthenticated: None,
            scrollback_bytes: crate::exec::DEFAULT_SCROLLBACK,
            head_timeout: HEAD_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_ports_per_sprite: crate::ports::DEFAULT_MAX_PER_SPRITE,
            lifecycle: crate::lifecycle::LifecycleOptions::default(),
        }
    }
}

/// Configures and starts a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    addr: String,
    token: Option<String>,
    data_dir: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    runtime: Runtime,
    signal_capability: bool,
    control: bool,
    control_proxy: bool,
    durable_writes: bool,
    sandbox: SandboxOptions,
    max_connections: Option<usize>,
    max_unauthenticated: Option<usize>,
    scrollback_bytes: usize,
    head_timeout: Duration,
    idle_timeout: Duration,
    max_ports_per_sprite: usize,
    lifecycle: crate::lifecycle::LifecycleOptions,
}

impl ServerBuilder {
    /// How long a sprite stays `running` after its last activity before it is `warm`
    /// (default 30 s, the platform's figure). See the crate README's "Lifecycle".
    pub fn warm_after(mut self, idle: Duration) -> Self {
        self.lifecycle.warm_after = idle;
        self
    }

    /// How long a sprite may be idle before it is halted (its processes end; files stay)
    /// and `cold` (default 10 minutes; never shorter than [`warm_after`](Self::warm_after)).
    pub fn cold_after(mut self, idle: Duration) -> Self {
        self.lifecycle.cold_after = idle;
        self
    }

    /// How often a quiet NDJSON watch of `GET /v1/sprites` gets a heartbeat line
    /// (default 15 s).
    pub fn watch_heartbeat(mut self, every: Duration) -> Self {
        self.lifecycle.heartbeat = every;
        self
    }

    /// Address to listen on (default `127.0.0.1:0`: loopback, any free port).
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }

    /// The bearer token clients must send (default: 32 random hex characters).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Where sprites are stored (default: [`default_data_dir`]).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The sandbox runtime's read-only base layer: every sprite's root starts as a copy of
    /// this directory (default `/`, the host's own root, with sensitive paths masked).
    /// Ignored by the host runtime.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Which runtime runs sprites' processes (default [`Runtime::Auto`]).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Whether exec upgrades advertise the `signal` capability (default `true`). With `false`
    /// the server behaves like a runtime that predates signal messages on the exec socket
    /// (PROTOCOL.md §2), so clients must fall back to `POST …/exec/{id}/kill`; signal messages
    /// are then ignored. For testing clients against such servers.
    pub fn signal_capability(mut self, advertise: bool) -> Self {
        self.signal_capability = advertise;
        self
    }

    /// Whether `/v1/sprites/{name}/control` (control connections, PROTOCOL.md §8) is served
    /// (default `true`). With `false` it answers 404 like a server without control
    /// connections, so clients must fall back to direct exec sockets. For testing clients
    /// against such servers.
    pub fn control(mut self, enabled: bool) -> Self {
        self.control = enabled;
        self
    }

    /// Whether control connections serve TCP proxies (PROTOCOL.md §8.4; default `true`).
    /// With `false` a proxy start is an unknown operation (`op.error`), as on a server
    /// without proxy ops, so clients must fall back to `/proxy`. For testing clients
    /// against such servers.
    pub fn control_proxy(mut self, enabled: bool) -> Self {
        self.control_proxy = enabled;
        self
    }

    /// Whether filesystem writes (PROTOCOL.md §9 "Write", §8.5 `fs.write`) are fsynced
    /// before they are answered (default `false`).
    ///
    /// Either way a write replaces its target atomically (a reader sees the old content or
    /// the new, never a mix), and the new content is what every later read and command
    /// sees, also after this server process is killed. What `true` adds is survival of a
    /// power cut or a kernel crash right after the answer, for one disk flush per write
    /// (milliseconds on most disks; a round trip's worth on a fast network). Without it a
    /// write is as durable as one a program in the sprite makes with `write(2)`, which is
    /// what the kernel flushes within seconds.
    ///
    /// ```no_run
    /// let server = sprites_local::Server::builder().durable_writes(true).start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn durable_writes(mut self, durable: bool) -> Self {
        self.durable_writes = durable;
        self
    }

    /// Most connections open at once, whatever their state: waiting for a request,
    /// being served, idle between requests, running an exec. A connection beyond it is
    /// answered **503** `server_busy` (with `Retry-After: 1`) and closed. Default: derived
    /// from the open-file limit (see [`Limits`]).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Most connections open at once that have not yet presented a request with the
    /// valid token (capped at [`max_connections`](Self::max_connections)). When they are
    /// all taken, a new connection evicts the oldest of them if that one has waited at
    /// least a second (it gets the **503**), else the newcomer gets it: a client that sends
    /// its request promptly is never locked out by silent ones. Default: derived from
    /// `max_connections` (see [`Limits`]).
    pub fn max_unauthenticated(mut self, n: usize) -> Self {
        self.max_unauthenticated = Some(n);
        self
    }

    /// How long a request head may take to arrive completely, counted from the
    /// connection's accept (or from the first byte of a keep-alive connection's next
    /// request), however it trickles in; then **408** and the connection is closed.
    /// Default 10 s.
    pub fn head_timeout(mut self, t: Duration) -> Self {
        self.head_timeout = t;
        self
    }

    /// How long a keep-alive connection may sit idle between requests, in total (bytes of
    /// a next request start its head deadline instead). Default 300 s.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// The sandbox runtime's cap on processes per user inside a sprite (threads count:
    /// `RLIMIT_NPROC`), default 4096. A fork bomb in a sprite stops there; the host and
    /// other sprites go on.
    pub fn sprite_process_limit(mut self, limit: u64) -> Self {
        self.sandbox.process_limit = limit;
        self
    }

    /// Where the sandbox runtime's per-sprite resolvers send the names a sprite's network
    /// policy allows (PROTOCOL.md §13), default the first name server of the host's
    /// `/etc/resolv.conf`. Tests point it at a resolver of their own on loopback.
    pub fn dns_upstream(mut self, addr: std::net::SocketAddr) -> Self {
        self.sandbox.dns_upstream = Some(addr);
        self
    }

    /// Most listening sockets reported per sprite in port events (PROTOCOL.md §6.4, §10),
    /// default 256: each scan of a sprite reads at most this many, however many it opens
    /// (beyond it, a listener is reported once others have closed).
    pub fn max_ports_per_sprite(mut self, n: usize) -> Self {
        self.max_ports_per_sprite = n;
        self
    }

    /// How much recent output each detachable session (every TTY session) keeps for
    /// clients that attach later, in bytes. Default 1 MiB; 0 keeps none.
    pub fn scrollback_bytes(mut self, bytes: usize) -> Self {
        self.scrollback_bytes = bytes;
        self
    }

    /// Loads the data dir, binds the address and starts serving on background threads.
    /// Returns once the server is reachable.
    ///
    /// Raises this process's soft open-file limit to its hard limit first (connections
    /// are descriptors), which every process started afterwards inherits.
    pub fn start(self) -> io::Result<ServerHandle> {
        // Best effort: where it cannot be raised, the budget is derived from what it is.
        let nofile = sys::limits::raise_nofile()
            .or_else(|_| sys::limits::nofile().map(|(soft, _)| soft))
            .unwrap_or(1024);
        let limits = Limits::new(
            nofile,
            self.max_connections,
            self.max_unauthenticated,
            self.head_timeout,
            self.idle_timeout,
        )?;
        let token = match self.token {
            Some(t) if t.is_empty() || t.chars().any(char::is_whitespace) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "token must be non-empty and contain no whitespace",
                ))
            }
            Some(t) => t,
            None => random::hex(16)?,
        };
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        crate::store::prepare_data_dir(&data_dir)?;
        let base_dir = self.base_dir.unwrap_or_else(|| PathBuf::from("/"));
        let rt: Arc<dyn SpriteRuntime> = Arc::from(runtime::resolve(
            self.runtime,
            &data_dir,
            &base_dir,
            self.sandbox,
        )?);
        let store = Store::open(&data_dir)?;
        runtime::recover_uploads(&*rt, store.list().iter().map(|r| store.sprite_dir(&r.name)));
        {
            // A deleted sprite's processes must be gone before its files are removed.
            let rt = rt.clone();
            store.on_remove(Box::new(move |dir| rt.stop_sprite(dir)));
        }
        let listener = std::net::TcpListener::bind(&self.addr)?;
        let addr = listener.local_addr()?;
        let kind = rt.kind();
        let note = rt.note();
        let mut state = State::new(token, store, rt, self.signal_capability);
        state.scrollback_bytes = self.scrollback_bytes;
        state.durable_writes = self.durable_writes;
        state.url_port = addr.port();
        if self.lifecycle.warm_after.is_zero() || self.lifecycle.heartbeat.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lifecycle periods must be longer than zero",
            ));
        }
        state.lifecycle = Arc::new(crate::lifecycle::Lifecycle::new(self.lifecycle));
        state.control_enabled = self.control;
        state.control_proxy_enabled = self.control_proxy;
        let state = Arc::new(state);
        state.lifecycle.start_clock(&state)?;
        state.ports.set_max_per_sprite(self.max_ports_per_sprite);
        crate::services::resume_all(&state);
        state.lifecycle.adopt_running_services(&state);
        let wake = Arc::new(Wake::new()?);
        let reactor = reactor::Reactor::new(state.clone(), limits, listener, wake.clone())?;
        let reactor = thread::Builder::new()
            .name("sprites-reactor".into())
            .spawn(move || reactor.run())?;
        Ok(ServerHandle {
            addr,
            state,
            runtime: kind,
            note,
            limits,
            reactor: Some(reactor),
            wake,
        })
    }
}

/// The connection budget and deadlines a server runs with ([`ServerHandle::limits`]).
///
/// Defaults, from the open-file limit `nofile` (after raising it to the hard limit):
/// `max_connections = clamp((nofile − 256) × 3/4, 16, 65 536)` (a connection is one
/// descriptor; the rest is left for what requests open: exec pipes, files, agents'
/// sockets) and `max_unauthenticated = clamp(max_connections / 4, 1, 4096)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections that have not presented a valid token yet.
    pub max_unauthenticated: usize,
    /// Deadline for a complete request head.
    pub head_timeout: Duration,
    /// Deadline for an idle keep-alive connection.
    pub idle_timeout: Duration,
}

impl Limits {
    fn new(
        nofile: u64,
        max_connections: Option<usize>,
        max_unauthenticated: Option<usize>,
        head_timeout: Duration,
        idle_timeout: Duration,
    ) -> io::Result<Limits> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
        if max_connections == Some(0) || max_unauthenticated == Some(0) {
            return Err(invalid("connection limits must be at least 1"));
        }
        if head_timeout.is_zero() || idle_timeout.is_zero() {
            return Err(invalid("timeouts must be longer than zero"));
        }
        let max_connections = max_connections.unwrap_or_else(|| {
            let budget = nofile.saturating_sub(RESERVED_FDS) / 4 * 3;
            usize::try_from(budget)
                .unwrap_or(usize::MAX)
                .clamp(16, MAX_DEFAULT_CONNECTIONS)
        });
        let max_unauthenticated = max_unauthenticated
            .unwrap_or_else(|| (max_connections / 4).clamp(1, MAX_DEFAULT_UNAUTHENTICATED))
            .min(max_connections);
        Ok(Limits {
            max_connections,
            max_unauthenticated,
            head_timeout,
            idle_timeout,
        })
    }
}

/// Writes `resp` (with `Connection: close`) without blocking; true if all of it went out.
/// A fresh socket's send buffer always takes a small response whole.
pub(crate) fn send_now(stream: &TcpStream, resp: &Response) -> bool {
    use std::os::fd::AsFd;
    let mut bytes = Vec::with_capacity(256);
    if write_response(&mut bytes, resp, false, false).is_err() {
        return false;
    }
    matches!(sys::nonblocking::send(stream.as_fd(), &bytes), Ok(n) if n == bytes.len())
}

/// Tells a connection that gets no service that it should come back: 503 `server_busy`
/// (`why` as its message), `Retry-After: 1`, without blocking; the caller then drops it.
pub(crate) fn busy(stream: &TcpStream, why: &str) {
    let resp = Response::error(503, "server_busy", why).with_header("Retry-After", "1");
    send_now(stream, &resp);
    let _ = stream.shutdown(Shutdown::Write);
}

/// An eventfd that wakes the reactor out of `epoll_wait`: a worker handed a connection
/// back, or shutdown began.
pub(crate) struct Wake(OwnedFd);

impl Wake {
    fn new() -> io::Result<Wake> {
        Ok(Wake(sys::fd::eventfd()?))
    }

    /// Wakes the reactor. Never blocks (the eventfd is non-blocking; a full counter means
    /// a wake-up is pending anyway).
    pub(crate) fn notify(&self) {
        use std::os::fd::AsFd;
        let _ = sys::fd::write(self.0.as_fd(), &1u64.to_ne_bytes());
    }

    /// Resets the counter after a wake-up.
    fn drain(&self) {
        use std::os::fd::AsFd;
        let mut n = [0u8; 8];
        let _ = sys::fd::read(self.0.as_fd(), &mut n);
    }
}

/// `$XDG_DATA_HOME/sprites-local`, else `~/.local/share/sprites-local`, else
/// `./sprites-local-data`.
pub fn default_data_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(x).join("sprites-local");
    }
    if let Some(h) = non_empty("HOME") {
        return PathBuf::from(h).join(".local/share/sprites-local");
    }
    PathBuf::from("sprites-local-data")
}

/// A running server. Dropping it shuts it down like [`ServerHandle::shutdown`].
pub struct ServerHandle {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    runtime: Runtime,
    note: String,
    limits: Limits,
    reactor: Option<JoinHandle<()>>,
    wake: Arc<Wake>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Base URL for clients, e.g. `http://127.0.0.1:41234` (no trailing slash). A wildcard
    /// bind address is reported as loopback, which is where a local client can reach it.
    pub fn url(&self) -> String {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{a}")
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The runtime in use ([`Runtime::Auto`] resolved).
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// One line for humans on what the runtime isolates (the host runtime: nothing).
    pub fn runtime_note(&self) -> String {
        self.note.clone()
    }

    /// The connection budget and deadlines in force (defaults resolved).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many control connections (PROTOCOL.md §8) this server has accepted since it
    /// started: a diagnostic, e.g. for a test that checks that clients reuse them.
    pub fn control_upgrades(&self) -> u64 {
        self.state
            .control_upgrades
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many `op` ops (`"fs.read"`, `"fs.write"`, …, PROTOCOL.md §8.5) this server has
    /// served over control connections since it started: a diagnostic, e.g. for a test that
    /// checks that clients run filesystem calls over control.
    pub fn control_fs_ops(&self, op: &str) -> u64 {
        crate::lock(&self.state.control_fs_ops)
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Stops accepting, closes the connections waiting for a request, SIGKILLs every
    /// running exec's process group, cuts the connections being served and joins the
    /// reactor thread. Returns within milliseconds.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(reactor) = self.reactor.take() else {
            return;
        };
        self.state.begin_shutdown();
        self.state.lifecycle.shutdown();
        // The reactor sees the flag on its next wake-up, closes the listener and every
        // connection it holds, and returns.
        self.wake.notify();
        let _ = reactor.join();
        // Running execs: close 1001 "going away" first (so clients get a reason rather than
        // a cut connection), then kill their processes, then give the close frames a
        // bounded moment to go out before every connection is cut.
        let execs = self.state.running_execs();
        for e in &execs {
            e.going_away();
        }
        self.state.sessions.signal_all(libc::SIGKILL);
        crate::services::shutdown(&self.state);
        self.state.runtime.shutdown();
        let deadline = Instant::now() + SHUTDOWN_CLOSE_WAIT;
        for e in &execs {
            e.wait_closed(deadline);
        }
        self.state.cut_conns();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(nofile: u64, conns: Option<usize>, unauth: Option<usize>) -> (usize, usize) {
        let l = Limits::new(nofile, conns, unauth, HEAD_TIMEOUT, IDLE_TIMEOUT).unwrap();
        (l.max_connections, l.max_unauthenticated)
    }

    #[test]
    fn defaults_follow_the_open_file_limit() {
        assert_eq!(limits(1024, None, None), (576, 144));
        assert_eq!(limits(20_000, None, None), (14_808, 3702));
        assert_eq!(limits(1 << 20, None, None), (65_536, 4096), "capped");
        assert_eq!(limits(100, None, None), (16, 4), "floor");
        // Given caps win; the unauthenticated one never exceeds the total.
        assert_eq!(limits(20_000, Some(50), None), (50, 12));
        assert_eq!(limits(20_000, Some(50), Some(80)), (50, 50));
        assert!(Limits::new(1024, Some(0), None, HEAD_TIMEOUT, IDLE_TIMEOUT).is_err());
        assert!(Limits::new(1024, None, None, Duration::ZERO, IDLE_TIMEOUT).is_err());
    }
}
