//! TCP through a sprite ([PROTOCOL.md §10](crate::protocol#10-tcp-proxy)): [`ProxyStream`], one
//! connection the server makes from inside the sprite, used like a [`TcpStream`]; and
//! [`PortForward`], local ports whose every accepted connection becomes such a tunnel.
//!
//! A `ProxyStream` is one WebSocket and no thread of its own: reads and writes run on the
//! caller's threads (one may read while another writes, through [`ProxyStream::try_clone`]).
//! A `PortForward` has one listener thread per port and two threads per open connection.
//!
//! This is not the `HTTPS_PROXY` support (which routes the client's own requests through a
//! proxy): here the sprite is the far end of the connection.

use crate::error::{Error, Result, TransportError};
use crate::sprite::Sprite;
use crate::ws::{self, Incoming, Socket};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message};

/// Largest binary frame one `write` sends: bigger writes are split (a `write` may send less
/// than it was given, as `TcpStream::write` may).
const MAX_FRAME: usize = 1 << 20;
/// A read that has waited this long with nothing from the server pings it; if another such
/// wait brings nothing either (not even the pong), the connection is presumed dead.
const SILENCE: Duration = Duration::from_secs(30);
/// Longest single wait inside a read with no timeout (the wait repeats; no busy loop).
const LONG_WAIT: Duration = Duration::from_secs(3600);
/// Buffer for each direction of a forwarded connection.
const FORWARD_BUF: usize = 256 << 10;

/// The server's answer to the init message.
#[derive(Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    half_close: bool,
}

/// A TCP connection made by the server from inside a sprite, carried over a WebSocket: a
/// [`TcpStream`] look-alike ([`Read`], [`Write`], [`shutdown`](Self::shutdown), timeouts,
/// [`try_clone`](Self::try_clone)). From [`Sprite::proxy_socket`].
///
/// The server connects from the sprite's own network: `localhost` is the sprite's loopback.
/// [`shutdown(Write)`](Self::shutdown) sends end-of-stream to the target while its answer
/// can still be read, when the server supports half-close (sprites-local does; otherwise it
/// only stops this side's writes, see PROTOCOL.md §10.4). The tunnel closes when the last
/// clone is dropped.
///
/// ```no_run
/// use std::io::{Read, Write};
/// # fn main() -> sprites::Result<()> {
/// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
/// let mut conn = sprite.proxy_socket("localhost:8080")?;
/// conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
/// let mut page = String::new();
/// conn.read_to_string(&mut page)?;
/// println!("{page}");
/// # Ok(()) }
/// ```
#[doc(alias = "ProxySocket")]
pub struct ProxyStream {
    inner: Arc<Inner>,
}

struct Inner {
    socket: Arc<Socket>,
    /// Set when the tunnel is a proxy op on a pooled control connection (§8.4): the
    /// connection goes back to the pool when the op has ended cleanly.
    op: Option<Mutex<Op>>,
    target: String,
    peer: Option<SocketAddr>,
    /// The server understands half-close (it said so in its reply).
    half_close: bool,
    read: Mutex<ReadSide>,
    /// This side's writes have ended (shutdown, or the tunnel closed).
    write_closed: AtomicBool,
    /// `shutdown(Read)`: reads return 0, what arrives is discarded.
    read_shut: AtomicBool,
    /// This side's end-of-stream (an empty frame) went out.
    eof_sent: AtomicBool,
    /// A forwarded connection's proxy op whose reply has not been read yet (it is read
    /// with the first data).
    reply_pending: AtomicBool,
    timeouts: Mutex<Timeouts>,
}

/// A proxy op's hold on its control connection.
struct Op {
    lease: Option<crate::control::Lease>,
    /// `release` was sent: the server is ending the op.
    released: bool,
}

#[derive(Default, Clone, Copy)]
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

#[derive(Default)]
struct ReadSide {
    /// Received bytes not read yet: `buf[pos..]`.
    buf: Bytes,
    pos: usize,
    /// End of stream: reads return 0.
    eof: bool,
    /// The tunnel failed: every later read returns this.
    failed: Option<(io::ErrorKind, String)>,
    /// A proxy op's end (`op.complete` or `op.error`) was read: nothing of it is left on the
    /// control connection.
    ended: bool,
    /// An error reply was read: the op's `op.error` follows at once.
    end_coming: bool,
}

impl std::fmt::Debug for ProxyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyStream")
            .field("target", &self.inner.target)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Splits `host:port` (`[v6]:port` for IPv6; a bare port means `localhost`).
fn split_addr(addr: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::InvalidInput(format!(
            "{addr:?} is not host:port (IPv6 in brackets: [::1]:5432)"
        ))
    };
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => ("localhost", addr),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(':') && !addr.starts_with('[') {
        return Err(bad());
    }
    let host = if host.is_empty() { "localhost" } else { host };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(bad()),
    }
}

fn io_kind_of_code(code: Option<&str>, message: &str) -> io::ErrorKind {
    use io::ErrorKind as K;
    match code {
        Some("connection_refused") => K::ConnectionRefused,
        Some("timed_out") => K::TimedOut,
        Some("host_not_found") | Some("sprite_not_found") => K::NotFound,
        Some("invalid_request") => K::InvalidInput,
        Some("unreachable") => K::HostUnreachable,
        Some(_) => K::Other,
        // A server that gives no code: its words are all there is.
        None if message.to_ascii_lowercase().contains("refused") => K::ConnectionRefused,
        None => K::Other,
    }
}

/// What came back for a proxy request.
enum Answer {
    /// The §10.3 reply.
    Reply(Reply),
    /// Over control: the op ended (or an unprefixed op end came) before any reply — the
    /// server does not serve proxies there.
    NotServed(String),
    /// Nothing within the wait.
    TimedOut,
}

/// Reads until the proxy's reply (§10.3); over control (`control`), an op end before it is
/// [`Answer::NotServed`] and other envelope messages are skipped.
fn read_answer(socket: &Socket, wait: Duration, control: bool) -> Result<Answer> {
    let deadline = Instant::now() + wait;
    loop {
        match socket.read() {
            Ok(Incoming::Message(Message::Text(text))) => {
                let text = text.as_str();
                if control && text.starts_with(crate::control::PREFIX) {
                    if let Some(end) = crate::control::parse_end(text) {
                        let why = match end {
                            crate::control::End::Error(e) => e.to_string(),
                            crate::control::End::Complete { .. } => "the op ended".into(),
                        };
                        return Ok(Answer::NotServed(why));
                    }
                    continue;
                }
                let value: serde_json::Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(_) if control => continue,
                    Err(e) => {
                        return Err(Error::Protocol(format!(
                            "the proxy's reply is not the documented JSON: {e}"
                        )));
                    }
                };
                if control && value.get("status").is_none() {
                    // A server that ends Go's unprefixed start unprefixed (§8.2).
                    if matches!(
                        value.get("type").and_then(|t| t.as_str()),
                        Some("op.error" | "op.complete")
                    ) {
                        return Ok(Answer::NotServed(value.to_string()));
                    }
                    continue;
                }
                return match serde_json::from_value::<Reply>(value) {
                    Ok(reply) => Ok(Answer::Reply(reply)),
                    Err(e) => Err(Error::Protocol(format!(
                        "the proxy's reply is not the documented JSON: {e}"
                    ))),
                };
            }
            Ok(Incoming::Message(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                    .unwrap_or((None, String::new()));
                return Err(Error::ConnectionClosed { code, reason });
            }
            Ok(Incoming::Message(_)) => {} // pings; nothing else comes before the reply
            Ok(Incoming::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let ready = socket
                    .wait_readable(left)
                    .map_err(|e| TransportError::io("waiting for the proxy's reply", e))?;
                if !ready {
                    return Ok(Answer::TimedOut);
                }
            }
            Err(e) => return Err(ws::ws_error(e)),
        }
    }
}

/// Reads a control connection until the running op's end, discarding what comes before
/// it; true when the end came within `wait` (the connection is clean).
fn drain_op(socket: &Socket, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match socket.read() {
            Ok(Incoming::Message(Message::Text(text)))
                if text.as_str().starts_with(crate::control::PREFIX) =>
            {
                if crate::control::parse_end(text.as_str()).is_some() {
                    return true;
                }
            }
            Ok(Incoming::Message(Message::Close(_))) | Err(_) => return false,
            Ok(Incoming::Message(_)) => {}
            Ok(Incoming::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !matches!(socket.wait_readable(left), Ok(true)) {
                    return false;
                }
            }
        }
    }
}

/// Go's proxy start on a control connection (§8.4), with `half_close` (ours).
fn go_start(host: &str, port: u16) -> String {
    serde_json::json!({
        "type": "start",
        "operation": "proxy",
        "params": {"host": host, "port": port, "keep_alive": true, "half_close": true},
    })
    .to_string()
}

/// Go's end of a proxy op (§8.4): unprefixed.
const RELEASE: &str = r#"{"type":"release"}"#;

impl ProxyStream {
    pub(crate) fn connect(sprite: &Sprite, addr: &str) -> Result<ProxyStream> {
        let (host, port) = split_addr(addr)?;
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let client = sprite.client();
        let wait = client.inner.http_timeout;
        // A warm control connection: the start goes out at once, the reply is the one
        // round trip (§8.4). Anything but a proxy reply falls back to a socket of its own.
        while let Some(lease) = crate::control::checkout_for_proxy(client, sprite.name()) {
            if lease
                .socket
                .send_within(Message::text(go_start(&host, port)), wait)
                .is_err()
            {
                continue; // dead before anything was sent on it: dropping closes it; next
            }
            match read_answer(&lease.socket, wait, true) {
                Ok(Answer::Reply(reply)) => {
                    crate::control::proxy_served(client, sprite.name());
                    let socket = lease.socket.clone();
                    let op = Op {
                        lease: Some(lease),
                        released: false,
                    };
                    return ProxyStream::open(socket, Some(op), target, reply, wait);
                }
                Ok(Answer::NotServed(why)) => {
                    log::debug!("no proxy over control connections here: {why}");
                    crate::control::no_proxy_over_control(client, sprite.name());
                    lease.release(); // the op's end was read: clean
                    break;
                }
                Ok(Answer::TimedOut) => {
                    log::debug!("no proxy reply on the control connection within {wait:?}");
                    crate::control::no_proxy_over_control(client, sprite.name());
                    break;
                }
                // A connection that broke says nothing about support; the next is tried.
                Err(e) => log::debug!("proxy over a control connection: {e}"),
            }
        }
        let accepted = ws::dial(client, &sprite.path("/proxy"))?;
        // This tunnel has its connection; the next one should find a control connection.
        crate::control::dial_for_next(client, sprite.name());
        let socket = Arc::new(accepted.socket);
        let init = serde_json::json!({"host": host, "port": port, "half_close": true});
        socket
            .send_within(Message::text(init.to_string()), wait)
            .map_err(ws::ws_error)?;
        match read_answer(&socket, wait, false)? {
            Answer::Reply(reply) => ProxyStream::open(socket, None, target, reply, wait),
            _ => {
                socket.close_now(1000);
                Err(TransportError::new(
                    io::ErrorKind::TimedOut,
                    format!("waiting {wait:?} for the proxy's reply"),
                    None,
                )
                .into())
            }
        }
    }

    /// For a forwarded connection, whose first bytes are already waiting: on a pool whose
    /// server is known to serve proxies over control, the start goes out and the stream is
    /// returned at once, so those bytes go in the same flight; the reply is read with the
    /// first data (a failure then fails the reads). Otherwise [`connect`](Self::connect).
    fn connect_forwarded(sprite: &Sprite, addr: &str) -> Result<ProxyStream> {
        let (host, port) = split_addr(addr)?;
        let client = sprite.client();
        if let Some(lease) = crate::control::checkout_for_pipelined_proxy(client, sprite.name())
            && lease
                .socket
                .send_within(
                    Message::text(go_start(&host, port)),
                    client.inner.http_timeout,
                )
                .is_ok()
        {
            let target = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let socket = lease.socket.clone();
            let stream = ProxyStream {
                inner: Arc::new(Inner {
                    socket,
                    op: Some(Mutex::new(Op {
                        lease: Some(lease),
                        released: false,
                    })),
                    target,
                    peer: None,
                    // Asked for; an empty frame is harmless to a server without it.
                    half_close: true,
                    read: Mutex::new(ReadSide::default()),
                    write_closed: AtomicBool::new(false),
                    read_shut: AtomicBool::new(false),
                    eof_sent: AtomicBool::new(false),
                    reply_pending: AtomicBool::new(true),
                    timeouts: Mutex::new(Timeouts::default()),
                }),
            };
            return Ok(stream);
        }
        ProxyStream::connect(sprite, addr)
    }

    /// The tunnel after the server's reply, or the reply's error.
    fn open(
        socket: Arc<Socket>,
        mut op: Option<Op>,
        target: String,
        reply: Reply,
        wait: Duration,
    ) -> Result<ProxyStream> {
        if reply.status != "connected" {
            let message = reply
                .error
                .unwrap_or_else(|| format!("the server answered status {:?}", reply.status));
            let kind = io_kind_of_code(reply.code.as_deref(), &message);
            match op.as_mut().and_then(|op| op.lease.take()) {
                // The op's end follows the error reply; once read, the connection is clean.
                Some(lease) => {
                    if drain_op(&lease.socket, wait) {
                        lease.release();
                    }
                }
                None => socket.close_now(1000),
            }
            return Err(Error::ProxyTarget {
                target,
                kind,
                message,
            });
        }
        // The official reply has only `target`: when that is an address, it is the peer.
        let peer = reply
            .peer
            .as_deref()
            .and_then(|p| p.parse().ok())
            .or_else(|| target.parse().ok());
        Ok(ProxyStream {
            inner: Arc::new(Inner {
                socket,
                op: op.map(Mutex::new),
                target,
                peer,
                half_close: reply.half_close,
                read: Mutex::new(ReadSide::default()),
                write_closed: AtomicBool::new(false),
                read_shut: AtomicBool::new(false),
                eof_sent: AtomicBool::new(false),
                reply_pending: AtomicBool::new(false),
                timeouts: Mutex::new(Timeouts::default()),
            }),
        })
    }

    /// Whether the tunnel is a proxy op on a pooled control connection (PROTOCOL.md §8.4)
    /// rather than a connection of its own (§10): true when a control connection was idle
    /// (after [`Sprite::connect`], or any earlier command) and the server serves proxies on
    /// it. Either way the stream behaves the same.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
    /// sprite.connect()?;
    /// let conn = sprite.proxy_socket("localhost:5432")?;
    /// println!("over a pooled control connection: {}", conn.over_control());
    /// # Ok(()) }
    /// ```
    pub fn over_control(&self) -> bool {
        self.inner.op.is_some()
    }

    /// The target as requested, `host:port`.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The target's address as the sprite sees it (`127.0.0.1:5432` for `localhost:5432`).
    /// `NotConnected` when the server did not say and the target is a name.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the server did not report the target's address",
            )
        })
    }

    /// Whether [`shutdown(Write)`](Self::shutdown) reaches the target (the server supports
    /// half-close).
    pub fn supports_half_close(&self) -> bool {
        self.inner.half_close
    }

    /// Another handle on the same tunnel (for reading in one thread and writing in
    /// another). The tunnel closes when the last handle is dropped.
    pub fn try_clone(&self) -> io::Result<ProxyStream> {
        Ok(ProxyStream {
            inner: self.inner.clone(),
        })
    }

    /// Sets how long a read may wait for data (`None`: no limit). A read that runs out of
    /// time fails with `TimedOut` and loses nothing. `Some(0)` is `InvalidInput`, as for
    /// `TcpStream`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        lock(&self.inner.timeouts).read = timeout;
        Ok(())
    }

    /// Sets how long a write may wait for the connection to take its bytes (`None`: the
    /// connection's keepalive limit, 45 s). A write that runs out of time fails with
    /// `TimedOut`, and the tunnel is then broken.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        lock(&self.inner.timeouts).write = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(lock(&self.inner.timeouts).read)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(lock(&self.inner.timeouts).write)
    }

    /// Shuts down the read side (later reads return 0; a read already waiting notices when
    /// something arrives), the write side (the target sees end-of-stream, when
    /// [`supports_half_close`](Self::supports_half_close); later writes fail with
    /// `BrokenPipe`), or both (the tunnel closes, which also wakes a waiting read).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let inner = &self.inner;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            // Not the read lock: a read in progress holds it while it waits.
            inner.read_shut.store(true, Ordering::SeqCst);
        }
        match how {
            Shutdown::Write => {
                if !inner.write_closed.swap(true, Ordering::SeqCst) && inner.half_close {
                    let stall = lock(&inner.timeouts).write.unwrap_or(SILENCE);
                    inner
                        .socket
                        .send_within(Message::Binary(Bytes::new()), stall)
                        .map_err(|e| io::Error::from(ws::ws_error(e)))?;
                    inner.eof_sent.store(true, Ordering::SeqCst);
                }
            }
            Shutdown::Both => {
                inner.write_closed.store(true, Ordering::SeqCst);
                match &inner.op {
                    // The op ends with the server's answer to `release`; the connection
                    // goes back to the pool when the last handle is dropped.
                    Some(op) => inner.release(&mut lock(op)),
                    None => inner.socket.close_now(1000),
                }
            }
            Shutdown::Read => {}
        }
        Ok(())
    }

    fn read_inner(&self, out: &mut [u8]) -> io::Result<usize> {
        let inner = &*self.inner;
        let mut side = lock(&inner.read);
        if out.is_empty() {
            return Ok(0);
        }
        let timeout = lock(&inner.timeouts).read;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut silent_since = Instant::now();
        let mut pinged = false;
        loop {
            if inner.read_shut.load(Ordering::SeqCst) {
                side.buf = Bytes::new();
                side.pos = 0;
                return Ok(0);
            }
            if side.pos < side.buf.len() {
                let n = out.len().min(side.buf.len() - side.pos);
                out[..n].copy_from_slice(&side.buf[side.pos..side.pos + n]);
                side.pos += n;
                return Ok(n);
            }
            if side.eof {
                return Ok(0);
            }
            if let Some((kind, message)) = &side.failed {
                return Err(io::Error::new(*kind, message.clone()));
            }
            match inner.socket.read() {
                Ok(Incoming::Message(message)) => {
                    silent_since = Instant::now();
                    pinged = false;
                    match message {
                        // End of stream (only a half-close server sends it; an empty
                        // frame from any other is nothing, and lands below as such).
                        Message::Binary(data) if data.is_empty() && inner.half_close => {
                            side.eof = true;
                        }
                        Message::Binary(data) => {
                            side.buf = data;
                            side.pos = 0;
                        }
                        Message::Text(text)
                            if inner.op.is_some()
                                && text.as_str().starts_with(crate::control::PREFIX) =>
                        {
                            inner.op_message(&mut side, text.as_str());
                        }
                        Message::Text(text) if inner.reply_pending.load(Ordering::SeqCst) => {
                            inner.late_reply(&mut side, text.as_str());
                        }
                        Message::Close(frame) => {
                            inner.write_closed.store(true, Ordering::SeqCst);
                            match frame {
                                Some(f)
                                    if !matches!(f.code, CloseCode::Normal | CloseCode::Away) =>
                                {
                                    side.failed = Some((
                                        io::ErrorKind::ConnectionReset,
                                        format!(
                                            "the proxy closed the tunnel (code {}): {}",
                                            u16::from(f.code),
                                            f.reason
                                        ),
                                    ));
                                }
                                _ => side.eof = true,
                            }
                        }
                        // Text frames carry nothing for a tunnel; pings are answered by
                        // the WebSocket itself.
                        _ => {}
                    }
                }
                Ok(Incoming::Empty) => {
                    let now = Instant::now();
                    let mut wait = LONG_WAIT.min(SILENCE.saturating_sub(now - silent_since));
                    if let Some(deadline) = deadline {
                        let left = deadline.saturating_duration_since(now);
                        if left.is_zero() {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the read timeout passed with nothing to read",
                            ));
                        }
                        wait = wait.min(left);
                    }
                    if wait.is_zero() {
                        if pinged {
                            let err = Error::KeepaliveTimeout(SILENCE * 2);
                            side.failed = Some((err.io_kind(), err.to_string()));
                            continue;
                        }
                        // Any message (the pong) proves the connection alive.
                        let _ = inner
                            .socket
                            .send_within(Message::Ping(Bytes::new()), SILENCE);
                        pinged = true;
                        silent_since = Instant::now();
                        continue;
                    }
                    inner.socket.wait_readable(wait)?;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
                    if inner.op.is_none() =>
                {
                    inner.write_closed.store(true, Ordering::SeqCst);
                    side.eof = true;
                }
                // A control connection that ends before the op's end cut the op short.
                Err(
                    e @ (tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    )),
                ) if inner.op.is_some() => {
                    inner.write_closed.store(true, Ordering::SeqCst);
                    side.failed = Some((
                        io::ErrorKind::ConnectionReset,
                        format!("the control connection broke during the proxy op: {e}"),
                    ));
                }
                Err(e) => {
                    let err = io::Error::from(ws::ws_error(e));
                    side.failed = Some((err.kind(), err.to_string()));
                }
            }
        }
    }

    fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        let inner = &*self.inner;
        if inner.write_closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnel's write side is shut down",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(MAX_FRAME);
        let stall = lock(&inner.timeouts).write.unwrap_or(SILENCE + SILENCE / 2);
        match inner
            .socket
            .send_within(Message::Binary(Bytes::copy_from_slice(&buf[..n])), stall)
        {
            Ok(()) => Ok(n),
            Err(e) => {
                inner.write_closed.store(true, Ordering::SeqCst);
                Err(match e {
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(_) => {
                        io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel is closed")
                    }
                    other => ws::ws_error(other).into(),
                })
            }
        }
    }
}

fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

impl Inner {
    /// A `control:` message on a proxy op: its end. After `op.complete` every byte of the
    /// target is in (end-of-stream); `op.error` is a failure. Either way the op is over and
    /// this side must not send more.
    fn op_message(&self, side: &mut ReadSide, text: &str) {
        match crate::control::parse_end(text) {
            Some(crate::control::End::Complete { .. }) => {
                side.ended = true;
                side.eof = true;
            }
            Some(crate::control::End::Error(err)) => {
                side.ended = true;
                if !side.eof && side.failed.is_none() {
                    side.failed = Some((
                        io::ErrorKind::ConnectionReset,
                        format!("the proxy op failed: {err}"),
                    ));
                }
            }
            None => return, // other envelope messages carry nothing for a tunnel
        }
        self.write_closed.store(true, Ordering::SeqCst);
    }

    /// The reply of a forwarded connection's proxy op, read with its data: an error reply
    /// fails the reads (the op's `op.error` follows).
    fn late_reply(&self, side: &mut ReadSide, text: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return; // not the reply
        };
        if value.get("status").is_none() {
            // An unprefixed op end instead of a reply (a server that no longer serves
            // proxies over control): the op is over, the connection clean.
            if matches!(
                value.get("type").and_then(|t| t.as_str()),
                Some("op.error" | "op.complete")
            ) {
                self.reply_pending.store(false, Ordering::SeqCst);
                side.ended = true;
                side.failed = Some((
                    io::ErrorKind::Unsupported,
                    "the server did not serve the proxy over its control connection".into(),
                ));
                self.write_closed.store(true, Ordering::SeqCst);
            }
            return;
        }
        let Ok(reply) = serde_json::from_value::<Reply>(value) else {
            return;
        };
        self.reply_pending.store(false, Ordering::SeqCst);
        if reply.status != "connected" {
            let message = reply
                .error
                .unwrap_or_else(|| format!("the server answered status {:?}", reply.status));
            let kind = io_kind_of_code(reply.code.as_deref(), &message);
            side.failed = Some((kind, format!("{}: {message}", self.target)));
            side.end_coming = true;
            self.write_closed.store(true, Ordering::SeqCst);
        }
    }

    /// Asks the server to end the proxy op (`release`), once.
    fn release(&self, op: &mut Op) {
        if !op.released {
            op.released = true;
            let _ = self.socket.send_within(Message::text(RELEASE), SILENCE);
        }
    }
}

/// How long a proxy op's end may take once both directions have ended (the server sends it
/// right behind the target's end-of-stream).
const OP_END_WAIT: Duration = Duration::from_secs(5);

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(op) = self.op.take() else {
            self.socket.close_now(1000);
            return;
        };
        let mut op = op.into_inner().unwrap_or_else(|p| p.into_inner());
        let Some(lease) = op.lease.take() else {
            return;
        };
        let side = self.read.get_mut().unwrap_or_else(|p| p.into_inner());
        if side.ended {
            // `op.complete` (or `op.error`) was read: nothing of the op is left.
            return lease.release();
        }
        let broken = side.failed.is_some() && !side.end_coming;
        let both_ended = side.eof && self.eof_sent.load(Ordering::SeqCst);
        if broken {
            return; // dropping the lease closes the connection
        }
        if both_ended || side.end_coming {
            // The op's end is on its way: read it here, then the connection is clean.
            if drain_op(&lease.socket, OP_END_WAIT) {
                lease.release();
            }
            return;
        }
        // Ended early: `release` ends the op; its end is read off the caller's thread, and
        // the connection pooled once it came (closed if it does not come in time).
        self.release(&mut op);
        let spawned = std::thread::Builder::new()
            .name("sprites-proxy-release".into())
            .spawn(move || {
                if drain_op(&lease.socket, SILENCE) {
                    lease.release();
                }
            });
        drop(spawned);
    }
}

impl Read for ProxyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Read for &ProxyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Write for ProxyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &ProxyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Local TCP ports forwarded to ports on a sprite: every connection accepted on a local
/// port becomes a [`ProxyStream`] to its sprite port. From [`Sprite::forward_port`] and
/// [`Sprite::forward_ports`].
///
/// Listens on `127.0.0.1` only (a forwarded port is as private as the local machine).
/// Each listener has a thread; each forwarded connection two more (one per direction),
/// at most [`MAX_CONNECTIONS`](Self::MAX_CONNECTIONS) at once. Dropping it (or [`close`](Self::close))
/// stops the listeners and cuts the open connections.
///
/// ```no_run
/// use std::io::{Read, Write};
/// # fn main() -> sprites::Result<()> {
/// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
/// let forward = sprite.forward_port(0, 8080)?; // 0: any free local port
/// let mut conn = std::net::TcpStream::connect(forward.local_addr())?;
/// conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// # Ok(()) }
/// ```
#[doc(alias = "ProxyPort")]
#[doc(alias = "ProxySession")]
pub struct PortForward {
    ports: Vec<(SocketAddr, u16)>,
    shared: Arc<ForwardShared>,
    listeners: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForward")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

struct ForwardShared {
    sprite: Sprite,
    stop: AtomicBool,
    /// Local ends of open forwarded connections, to cut them when the forward closes.
    open: Mutex<HashMap<u64, TcpStream>>,
    next: AtomicU64,
}

impl PortForward {
    /// Connections one `PortForward` serves at once; more are closed as they are accepted.
    pub const MAX_CONNECTIONS: usize = 256;

    pub(crate) fn start(sprite: &Sprite, ports: &[(u16, u16)]) -> Result<PortForward> {
        if ports.is_empty() {
            return Err(Error::InvalidInput("no ports to forward".into()));
        }
        if let Some((_, remote)) = ports.iter().find(|(_, r)| *r == 0) {
            return Err(Error::InvalidInput(format!(
                "sprite port {remote} cannot be forwarded to"
            )));
        }
        // Every port is bound before anything runs: all or nothing.
        let mut bound = Vec::with_capacity(ports.len());
        for &(local, remote) in ports {
            let listener = TcpListener::bind(("127.0.0.1", local))
                .map_err(|e| TransportError::io(format!("listening on 127.0.0.1:{local}"), e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| TransportError::io("reading the listener's address", e))?;
            bound.push((listener, addr, remote));
        }
        let shared = Arc::new(ForwardShared {
            sprite: sprite.clone(),
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let mut forward = PortForward {
            ports: bound.iter().map(|(_, a, r)| (*a, *r)).collect(),
            shared: shared.clone(),
            listeners: Vec::new(),
        };
        for (listener, addr, remote) in bound {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sprites-forward-{}", addr.port()))
                .spawn(move || accept_loop(&listener, remote, &shared));
            match spawned {
                Ok(handle) => forward.listeners.push(handle),
                // Dropping `forward` stops the listeners already running.
                Err(e) => return Err(TransportError::io("starting a listener thread", e).into()),
            }
        }
        Ok(forward)
    }

    /// The first (or only) local address being forwarded.
    pub fn local_addr(&self) -> SocketAddr {
        self.ports[0].0
    }

    /// Every forwarded port: (local address, sprite port), in the order given.
    pub fn ports(&self) -> &[(SocketAddr, u16)] {
        &self.ports
    }

    /// Forwarded connections open right now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.open).len()
    }

    /// Stops listening and cuts every open forwarded connection (what dropping does).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A connection to each listener wakes its blocked accept, which then sees `stop`.
        for (addr, _) in &self.ports {
            let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
        }
        for handle in self.listeners.drain(..) {
            let _ = handle.join();
        }
        for (_, conn) in lock(&self.shared.open).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, remote: u16, shared: &Arc<ForwardShared>) {
    loop {
        let conn = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((conn, _)) = conn else {
            // Out of descriptors and the like: the next accept may work; do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if lock(&shared.open).len() >= PortForward::MAX_CONNECTIONS {
            log::warn!("port forward to sprite port {remote}: too many connections; closing one");
            continue; // dropping `conn` closes it
        }
        let id = shared.next.fetch_add(1, Ordering::Relaxed);
        match conn.try_clone() {
            Ok(handle) => {
                lock(&shared.open).insert(id, handle);
            }
            Err(_) => continue,
        }
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sprites-forward-conn".into())
            .spawn(move || {
                serve_forwarded(conn, remote, &shared2);
                lock(&shared2.open).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.open).remove(&id);
        }
    }
}

/// One forwarded connection: a tunnel, bytes both ways, half-closes passed on.
fn serve_forwarded(local: TcpStream, remote: u16, shared: &ForwardShared) {
    let _ = local.set_nodelay(true);
    let tunnel =
        match ProxyStream::connect_forwarded(&shared.sprite, &format!("localhost:{remote}")) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("port forward to sprite port {remote}: {e}");
                return; // dropping `local` closes it: the local client sees the failure
            }
        };
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let (Ok(local2), Ok(tunnel2)) = (local.try_clone(), tunnel.try_clone()) else {
        return;
    };
    // Sprite → local on a second thread; local → sprite here. An end-of-stream is passed on
    // as a half-close; a failure on either side ends both directions.
    let down = std::thread::Builder::new()
        .name("sprites-forward-down".into())
        .spawn(move || {
            if copy(&tunnel2, &local2) {
                let _ = local2.shutdown(Shutdown::Write);
            } else {
                let _ = local2.shutdown(Shutdown::Both);
                let _ = tunnel2.shutdown(Shutdown::Both);
            }
        });
    if copy(&local, &tunnel) {
        let _ = tunnel.shutdown(Shutdown::Write);
    } else {
        let _ = tunnel.shutdown(Shutdown::Both);
        let _ = local.shutdown(Shutdown::Both);
    }
    if let Ok(down) = down {
        let _ = down.join();
    }
}

/// Copies until EOF (true) or an error on either side (false).
fn copy(mut from: impl Read, mut to: impl Write) -> bool {
    let mut buf = vec![0u8; FORWARD_BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

impl Sprite {
    /// Opens a TCP connection from inside the sprite to `addr` (`host:port`; `[v6]:port`
    /// for IPv6; a bare port means `localhost`) and returns it as a [`ProxyStream`].
    /// `localhost` is the sprite's own loopback.
    ///
    /// Errors: [`Error::ProxyTarget`] when the server could not connect (its
    /// [`io_kind`](Error::io_kind) says why: `ConnectionRefused`, `TimedOut`, `NotFound`),
    /// [`Error::InvalidInput`] for a malformed `addr`, API and transport errors as for any
    /// request.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// # fn main() -> sprites::Result<()> {
    /// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
    /// let mut redis = sprite.proxy_socket("localhost:6379")?;
    /// redis.write_all(b"PING\r\n")?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "ProxySocket")]
    pub fn proxy_socket(&self, addr: &str) -> Result<ProxyStream> {
        ProxyStream::connect(self, addr)
    }

    /// Forwards `local` (on `127.0.0.1`; 0 picks a free port, see
    /// [`PortForward::local_addr`]) to port `remote` on the sprite's `localhost`: each
    /// accepted connection gets its own tunnel. Runs until the [`PortForward`] is dropped.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
    /// let forward = sprite.forward_port(5432, 5432)?;
    /// println!("psql -h {} -p {}", forward.local_addr().ip(), forward.local_addr().port());
    /// # Ok(()) }
    /// ```
    #[doc(alias = "ProxyPort")]
    pub fn forward_port(&self, local: u16, remote: u16) -> Result<PortForward> {
        PortForward::start(self, &[(local, remote)])
    }

    /// Forwards several `(local, remote)` port pairs at once, all or nothing: if any local
    /// port cannot be bound, none is forwarded.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let sprite = sprites::Client::from_env()?.sprite("my-sprite");
    /// let forward = sprite.forward_ports(&[(8080, 80), (0, 5432)])?;
    /// for (local, remote) in forward.ports() {
    ///     println!("{local} -> sprite port {remote}");
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "ProxyPorts")]
    pub fn forward_ports(&self, ports: &[(u16, u16)]) -> Result<PortForward> {
        PortForward::start(self, ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            split_addr("localhost:5432").unwrap(),
            ("localhost".into(), 5432)
        );
        assert_eq!(split_addr("[::1]:22").unwrap(), ("::1".into(), 22));
        assert_eq!(split_addr("10.0.0.1:80").unwrap(), ("10.0.0.1".into(), 80));
        assert_eq!(split_addr("8080").unwrap(), ("localhost".into(), 8080));
        assert_eq!(split_addr(":8080").unwrap(), ("localhost".into(), 8080));
        for bad in ["", "host:", "host:0", "host:65536", "::1:22", "host:http"] {
            assert!(split_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_codes() {
        use io::ErrorKind as K;
        assert_eq!(
            io_kind_of_code(Some("connection_refused"), ""),
            K::ConnectionRefused
        );
        assert_eq!(io_kind_of_code(Some("timed_out"), ""), K::TimedOut);
        assert_eq!(io_kind_of_code(Some("host_not_found"), ""), K::NotFound);
        assert_eq!(
            io_kind_of_code(Some("invalid_request"), ""),
            K::InvalidInput
        );
        assert_eq!(io_kind_of_code(Some("what"), "refused"), K::Other);
        assert_eq!(
            io_kind_of_code(None, "dial tcp: connection refused"),
            K::ConnectionRefused
        );
        assert_eq!(io_kind_of_code(None, "nope"), K::Other);
    }
}
