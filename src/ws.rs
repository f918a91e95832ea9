//! WebSocket connections: dialling (ws/wss, directly or through a proxy's `CONNECT`) and a
//! [`Socket`] that a reader thread and a writer thread share without blocking each other.
//!
//! `tungstenite::WebSocket` cannot be split and a TLS stream cannot be cloned, so the socket is
//! non-blocking and the `WebSocket` sits behind a mutex that is only ever held for non-blocking
//! calls. Threads wait for readiness (`poll(2)`, `WSAPoll`) with the lock released.

use crate::client::Client;
use crate::error::{ApiError, Error, Result, TransportError};
use crate::sys::{self, Interest};
use crate::tls::Stream;
use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Largest message accepted from the server. Output frames are tens of KiB; this bounds what a
/// misbehaving server can make the client buffer.
const MAX_MESSAGE: usize = 16 << 20;
/// How long a send may wait for room in the socket before the connection counts as dead: the
/// keepalive limit's default.
const SEND_STALL: Duration = Duration::from_secs(45);

/// What the server said when it accepted the upgrade.
pub(crate) struct Accepted {
    pub(crate) socket: Socket,
    /// `X-Sprite-Capabilities`, split and trimmed.
    pub(crate) capabilities: Vec<String>,
    /// `Sprite-Version`, if the server sent it with the upgrade.
    pub(crate) version: Option<String>,
}

/// Opens a WebSocket to `path_and_query` (e.g. `/v1/sprites/x/exec?cmd=ls`).
///
/// A non-101 answer becomes [`Error::Api`] with the body parsed as an API error ([PROTOCOL.md §3.3](crate::protocol#33-websocket-upgrade-failures)).
pub(crate) fn dial(client: &Client, path_and_query: &str) -> Result<Accepted> {
    let inner = &client.inner;
    let base = &inner.base;
    let tcp = match &inner.proxy {
        Some(proxy) => {
            let host = proxy.host.trim_start_matches('[').trim_end_matches(']');
            let mut tcp = connect(host, proxy.port, inner.connect_timeout)?;
            set_timeouts(&tcp, Some(inner.http_timeout))?;
            proxy.connect(&mut tcp, &base.host, base.port, &inner.user_agent)?;
            tcp
        }
        None => connect(base.bare_host(), base.port, inner.connect_timeout)?,
    };
    // Bounded handshake: the HTTP timeout covers TLS and the upgrade exchange.
    set_timeouts(&tcp, Some(inner.http_timeout))?;
    // Kept for waiting and for shutdown(2), which need no lock on the WebSocket.
    let handle = tcp
        .try_clone()
        .map_err(|e| TransportError::io("duplicating the socket handle", e))?;
    let stream = if base.tls {
        inner.tls.connect(base.bare_host(), tcp)?
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
            // The stream blocks with timeouts, so a read that timed out (WouldBlock) is the only
            // way the handshake stops midway: the server did not answer in time.
            Err(HandshakeError::Interrupted(_)) => {
                return Err(TransportError::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "waiting {:?} for the answer to the WebSocket upgrade",
                        inner.http_timeout
                    ),
                    None,
                )
                .into());
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
    let version = response
        .headers()
        .get("sprite-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // Through the WebSocket's own handle: on Windows a duplicated handle's blocking mode is
    // not documented to be shared.
    let tcp = ws.get_ref().tcp();
    set_timeouts(tcp, None)?;
    tcp.set_nonblocking(true)
        .map_err(|e| TransportError::io("making the socket non-blocking", e))?;
    Ok(Accepted {
        socket: Socket {
            ws: Mutex::new(ws),
            tcp: handle,
        },
        capabilities,
        version,
    })
}

fn set_timeouts(tcp: &TcpStream, timeout: Option<Duration>) -> Result<()> {
    tcp.set_read_timeout(timeout)
        .and_then(|()| tcp.set_write_timeout(timeout))
        .map_err(|e| TransportError::io("setting socket timeouts", e).into())
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs = (host, port).to_socket_addrs().map_err(|e| {
        // Whatever the resolver's own code, a name that does not resolve is "not found".
        TransportError::new(
            io::ErrorKind::NotFound,
            format!("resolving {host}:{port}"),
            Some(Box::new(e)),
        )
    })?;
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
    Err(match last {
        Some(e) => TransportError::io(format!("connecting to {host}:{port}"), e),
        None => TransportError::new(
            io::ErrorKind::NotFound,
            format!("resolving {host}:{port}: no address"),
            None,
        ),
    }
    .into())
}

/// Maps a tungstenite error to ours.
pub(crate) fn ws_error(err: tungstenite::Error) -> Error {
    match err {
        tungstenite::Error::Io(e) => TransportError::io("the WebSocket connection", e).into(),
        tungstenite::Error::Capacity(e) => Error::Protocol(format!("message too large: {e}")),
        tungstenite::Error::Protocol(e) => Error::Protocol(e.to_string()),
        tungstenite::Error::Utf8(e) => Error::Protocol(format!("text frame is not UTF-8: {e}")),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::ConnectionClosed {
                code: None,
                reason: String::new(),
            }
        }
        other => Error::Protocol(other.to_string()),
    }
}

/// One WebSocket shared by a reader and a writer thread.
pub(crate) struct Socket {
    ws: Mutex<WebSocket<Stream>>,
    /// A second handle on the same socket, to wait on and shut down without the lock.
    tcp: TcpStream,
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
        sys::wait(&self.tcp, Interest::Read, timeout)
    }

    /// Sends one message, waiting (lock released) while the socket cannot take more.
    pub(crate) fn send(&self, message: Message) -> Result<(), tungstenite::Error> {
        self.send_within(message, SEND_STALL)
    }

    /// [`send`](Self::send), failing with `TimedOut` when the socket takes nothing for
    /// `stall`.
    pub(crate) fn send_within(
        &self,
        message: Message,
        stall: Duration,
    ) -> Result<(), tungstenite::Error> {
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
                    let room = sys::wait(&self.tcp, Interest::Write, stall)
                        .map_err(tungstenite::Error::Io)?;
                    if !room {
                        return Err(tungstenite::Error::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the server took nothing for {stall:?}"),
                        )));
                    }
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
        // shutdown(2) needs no lock and wakes any wait on the socket.
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
