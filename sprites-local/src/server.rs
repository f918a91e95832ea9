//! The server: builder, listener, per-connection threads and shutdown.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::{fmt, io};

use crate::api::{self, Reply};
use crate::net::file::write_file_response;
use crate::net::http::{write_response, RecvError, RequestReader, Response};
use crate::runtime::{self, Runtime, SandboxOptions, SpriteRuntime};
use crate::state::State;
use crate::store::Store;
use crate::{exec, random, sys};

/// How long shutdown waits for running execs' close frames to go out.
const SHUTDOWN_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long an idle keep-alive connection may sit between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a refused upload's unread body is drained so its client can see the status.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes of a refused upload's body drained (and discarded) before giving up.
const LINGER_BYTES: usize = 256 << 20;

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
            sandbox: SandboxOptions::default(),
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
    sandbox: SandboxOptions,
}

impl ServerBuilder {
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

    /// The sandbox runtime's cap on processes per user inside a sprite (threads count:
    /// `RLIMIT_NPROC`), default 4096. A fork bomb in a sprite stops there; the host and
    /// other sprites go on.
    pub fn sprite_process_limit(mut self, limit: u64) -> Self {
        self.sandbox.process_limit = limit;
        self
    }

    /// Loads the data dir, binds the address and starts accepting connections on a
    /// background thread. Returns once the server is reachable.
    pub fn start(self) -> io::Result<ServerHandle> {
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
        let listener = TcpListener::bind(&self.addr)?;
        let addr = listener.local_addr()?;
        let listener_fd = listener.as_raw_fd();
        let kind = rt.kind();
        let note = rt.note();
        let state = Arc::new(State::new(token, store, rt, self.signal_capability));
        let accept = {
            let state = state.clone();
            thread::Builder::new()
                .name("sprites-accept".into())
                .spawn(move || accept_loop(&state, listener))?
        };
        Ok(ServerHandle {
            addr,
            state,
            runtime: kind,
            note,
            accept: Some(accept),
            listener_fd,
        })
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
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Runtime,
    note: String,
    accept: Option<JoinHandle<()>>,
    listener_fd: RawFd,
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
    pub fn addr(&self) -> SocketAddr {
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

    /// Stops accepting, SIGKILLs every running exec's process group, cuts open
    /// connections and joins the accept thread. Returns within milliseconds.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.state.begin_shutdown();
        // On Linux, shutting down a listening socket wakes a thread blocked in accept()
        // (it returns EINVAL), so no self-connect trick or polling is needed.
        // The fd belongs to the listener, which the accept thread keeps open until it
        // returns, and we have not joined it yet.
        sys::socket::shutdown_raw(self.listener_fd);
        let _ = accept.join();
        // Running execs: close 1001 "going away" first (so clients get a reason rather than
        // a cut connection), then kill their processes, then give the close frames a
        // bounded moment to go out before every connection is cut.
        let execs = self.state.running_execs();
        for e in &execs {
            e.going_away();
        }
        self.state.sessions.signal_all(libc::SIGKILL);
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

fn accept_loop(state: &Arc<State>, listener: TcpListener) {
    loop {
        let accepted = listener.accept();
        if state.is_shutting_down() {
            return;
        }
        match accepted {
            Ok((stream, _)) => spawn_connection(state, stream),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) => {
                // Out of fds or memory: back off briefly instead of spinning on the error
                // (the only sleep in the server, and not on a request's path).
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn spawn_connection(state: &Arc<State>, stream: TcpStream) {
    let id = state.add_conn(&stream);
    let conn_state = state.clone();
    let spawned = thread::Builder::new()
        .name("sprites-conn".into())
        .spawn(move || {
            let panic_out = stream.try_clone().ok();
            let outcome = catch_unwind(AssertUnwindSafe(|| serve_connection(&conn_state, stream)));
            if outcome.is_err() {
                // Last resort: the handler panicked. Tell the client, then drop the
                // connection; nothing else in the server is affected.
                if let Some(mut s) = panic_out {
                    let r = Response::error(500, "internal", "internal server error");
                    let _ = write_response(&mut s, &r, false, false);
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            conn_state.remove_conn(id);
        });
    if spawned.is_err() {
        state.remove_conn(id);
    }
}

fn serve_connection(state: &Arc<State>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = RequestReader::new(stream);
    loop {
        if state.is_shutting_down() {
            return;
        }
        let (mut req, framing) = match reader.read_head() {
            Ok(Some(head)) => head,
            Ok(None) | Err(RecvError::Io) => return,
            Err(RecvError::Bad { status, message }) => return refuse(&mut out, status, &message),
        };
        let keep_alive = !req.wants_close();
        if api::fs_write::is_write(&req) {
            // Streamed: the body goes straight into the file, never into memory.
            let mut send_continue = || out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            let outcome =
                api::fs_write::handle(state, &req, &mut reader, framing, &mut send_continue);
            let keep = keep_alive && outcome.body_consumed;
            if write_response(&mut out, &outcome.response, false, keep).is_err() {
                return;
            }
            if !outcome.body_consumed {
                linger(&out);
                return;
            }
            if !keep {
                return;
            }
            continue;
        }
        let mut send_continue = || out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        match reader.read_body(&mut req, framing, &mut send_continue) {
            Ok(()) => {}
            Err(RecvError::Io) => return,
            Err(RecvError::Bad { status, message }) => return refuse(&mut out, status, &message),
        }
        let head_only = req.method == "HEAD";
        match api::handle(state, &req) {
            Reply::Response(resp) => {
                if write_response(&mut out, &resp, head_only, keep_alive).is_err() || !keep_alive {
                    return;
                }
            }
            Reply::File(file) => {
                // A file that shrank mid-send broke its Content-Length: the connection must end.
                match write_file_response(&mut out, &file, head_only, keep_alive) {
                    Ok(true) if keep_alive => {}
                    _ => return,
                }
            }
            Reply::Upgrade(up) => {
                let (stream, leftover) = reader.into_parts();
                exec::run(state.clone(), stream, leftover, *up);
                return;
            }
        }
    }
}

/// Answers a request that could not be read with `status`, then ends the connection.
fn refuse(out: &mut TcpStream, status: u16, message: &str) {
    let r = Response::error(status, "invalid_request", message);
    let _ = write_response(out, &r, false, false);
    // Let the response reach the client before the socket closes.
    let _ = out.shutdown(Shutdown::Write);
}

/// Ends a connection whose request body was left unread, after its response went out with
/// `Connection: close`.
///
/// Closing a socket with unread input makes the kernel send a reset, and a client still
/// sending its body (ureq, for one, reads the response only after sending everything) then
/// gets a write error instead of our status. So: send FIN, then read and discard what the
/// client still sends, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], as servers'
/// "lingering close" does. Nothing read is kept; a client that sends more than that sees
/// the connection reset.
fn linger(stream: &TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
