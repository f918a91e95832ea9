//! WebSocket connections: dialling (ws/wss through native-tls) and a [`Socket`] that a reader
//! thread and a writer thread share without blocking each other.
//!
//! `tungstenite::WebSocket` cannot be split and a TLS stream cannot be cloned, so the socket is
//! non-blocking and the `WebSocket` sits behind a mutex that is only ever held for non-blocking
//! calls. Threads wait for readiness in `poll(2)` with the lock released.

use crate::client::Client;
use crate::error::{ApiError, Error, Result};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Largest message accepted from the server. Output frames are tens of KiB; this bounds what a
/// misbehaving server can make the client buffer.
const MAX_MESSAGE: usize = 16 << 20;

/// A TCP stream, with or without TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

// EINTR is retried here, once for every caller: the blocking handshake (whose `read` with a
// timeout can be interrupted when the process reaps children, e.g. an embedded sprites-local) and
// the non-blocking data path alike.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Stream::Plain(s) => s.read(buf),
                Stream::Tls(s) => s.read(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Stream::Plain(s) => s.write(buf),
                Stream::Tls(s) => s.write(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What the server said when it accepted the upgrade.
pub(crate) struct Accepted {
    pub(crate) socket: Socket,
    /// `X-Sprite-Capabilities`, split and trimmed.
    pub(crate) capabilities: Vec<String>,
}

/// Opens a WebSocket to `path_and_query` (e.g. `/v1/sprites/x/exec?cmd=ls`).
///
/// A non-101 answer becomes [`Error::Api`] with the body parsed as an API error (§3.3).
pub(crate) fn dial(client: &Client, path_and_query: &str) -> Result<Accepted> {
    let inner = &client.inner;
    let base = &inner.base;
    let tcp = connect(base.bare_host(), base.port, inner.connect_timeout)?;
    // Bounded handshake: the HTTP timeout covers the upgrade exchange.
    tcp.set_read_timeout(Some(inner.http_timeout))
        .map_err(Error::Io)?;
    tcp.set_write_timeout(Some(inner.http_timeout))
        .map_err(Error::Io)?;
    let stream = if base.tls {
        let tls = inner.tls.connect(base.bare_host(), tcp).map_err(|e| {
            Error::Transport(format!("TLS handshake with {}: {e}", base.bare_host()))
        })?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };

    let url = base.ws_url(path_and_query);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::InvalidInput(format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    let auth = format!("Bearer {}", inner.token)
        .parse()
        .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
    headers.insert("Authorization", auth);
    if let Ok(agent) = inner.user_agent.parse() {
        headers.insert("User-Agent", agent);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));

    let (ws, response) =
        match tungstenite::client::client_with_config(request, stream, Some(config)) {
            Ok(done) => done,
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let body = response.body().as_deref().unwrap_or_default();
                return Err(ApiError::parse(status, header, body).into());
            }
            Err(HandshakeError::Failure(err)) => return Err(ws_error(err)),
            // Unreachable for a blocking stream, but a typed error is cheaper than a proof.
            Err(HandshakeError::Interrupted(_)) => {
                return Err(Error::Transport("WebSocket handshake interrupted".into()));
            }
        };
    let capabilities = response
        .headers()
        .get("x-sprite-capabilities")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();

    let tcp = ws.get_ref().tcp();
    tcp.set_read_timeout(None).map_err(Error::Io)?;
    tcp.set_write_timeout(None).map_err(Error::Io)?;
    tcp.set_nonblocking(true).map_err(Error::Io)?;
    let fd = tcp.as_raw_fd();
    Ok(Accepted {
        socket: Socket {
            ws: Mutex::new(ws),
            fd,
        },
        capabilities,
    })
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Transport(format!("resolving {host}:{port}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                // Interactive traffic (1-byte echoes) must not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Transport(match last {
        Some(e) => format!("connecting to {host}:{port}: {e}"),
        None => format!("{host}:{port} resolved to no address"),
    }))
}

/// Maps a tungstenite error to ours.
pub(crate) fn ws_error(err: tungstenite::Error) -> Error {
    match err {
        tungstenite::Error::Io(e) => Error::Transport(e.to_string()),
        tungstenite::Error::Capacity(e) => Error::Protocol(format!("message too large: {e}")),
        tungstenite::Error::Protocol(e) => Error::Protocol(e.to_string()),
        tungstenite::Error::Utf8(e) => Error::Protocol(format!("text frame is not UTF-8: {e}")),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::ConnectionClosed {
                code: None,
                reason: String::new(),
            }
        }
        other => Error::Transport(other.to_string()),
    }
}

/// One WebSocket shared by a reader and a writer thread.
pub(crate) struct Socket {
    ws: Mutex<WebSocket<Stream>>,
    fd: RawFd,
}

/// What [`Socket::read`] found.
pub(crate) enum Incoming {
    Message(Message),
    /// Nothing buffered; wait with [`Socket::wait_readable`].
    Empty,
}

impl Socket {
    fn lock(&self) -> MutexGuard<'_, WebSocket<Stream>> {
        // A panic while holding the lock cannot leave the WebSocket half-updated in a way that
        // matters more than the panic itself; keep going so the other thread can report errors.
        self.ws
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads one message if one is available, without blocking.
    pub(crate) fn read(&self) -> Result<Incoming, tungstenite::Error> {
        let read = self.lock().read();
        match read {
            Ok(message) => Ok(Incoming::Message(message)),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                Ok(Incoming::Empty)
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                Ok(Incoming::Empty)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the socket is readable or `timeout` passes; `Ok(false)` on timeout.
    pub(crate) fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll(self.fd, libc::POLLIN, timeout)
    }

    /// Sends one message, waiting (lock released) while the socket cannot take more.
    pub(crate) fn send(&self, message: Message) -> Result<(), tungstenite::Error> {
        let mut result = self.lock().write(message);
        loop {
            match result {
                Ok(()) => {}
                // The frame is queued inside tungstenite; flushing finishes it.
                Err(tungstenite::Error::Io(ref e)) if is_retry(e) => {}
                Err(e) => return Err(e),
            }
            // Bind first: a guard in a `match` scrutinee would live through the arms and hold
            // the lock while we wait for room, starving the reader (a deadlock until timeout).
            let flushed = self.lock().flush();
            match flushed {
                Ok(()) => return Ok(()),
                Err(tungstenite::Error::Io(e)) if is_retry(&e) => {
                    // Wait for room with the lock released so the reader keeps reading.
                    poll(self.fd, libc::POLLOUT, Duration::from_secs(45))
                        .map_err(tungstenite::Error::Io)?;
                    result = Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a close frame if it fits right now and shuts the TCP connection down. Never waits:
    /// the exit status is already known, and the server would otherwise hold the socket ~5 s.
    pub(crate) fn close_now(&self, code: u16) {
        let mut ws = self.lock();
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = ws.close(Some(frame));
        let _ = ws.flush();
        drop(ws);
        self.shutdown();
    }

    /// Cuts the connection without a close frame; wakes both threads.
    pub(crate) fn shutdown(&self) {
        // shutdown(2) on the fd needs no lock and wakes any poll() on it.
        let _ = unsafe_shutdown(self.fd);
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn unsafe_shutdown(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` belongs to a socket owned by the `Socket` that called us, which is alive for
    // the duration of the call; shutdown(2) does not close or invalidate it.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// poll(2) on one fd for `events`; `Ok(false)` when `timeout` passes first. Hang-ups and errors
/// count as ready, so the caller's next read or write reports them.
pub(crate) fn poll(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // Round up so a sub-millisecond remainder does not spin.
        let millis = if millis == 0 && !left.is_zero() {
            1
        } else {
            millis
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
        if rc > 0 {
            return Ok(true);
        }
        if rc == 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
