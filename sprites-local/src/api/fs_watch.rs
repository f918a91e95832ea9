//! The filesystem watch (PROTOCOL.md §9 "Watch"): `GET /v1/sprites/{name}/fs/watch`, a
//! WebSocket. The client's first text frame subscribes (`{"type":"subscribe","paths",
//! "recursive","workingDir"}`); the sprite's runtime starts a watcher
//! ([`crate::fswatch::run`], inside the sprite for the sandbox runtime) that writes the
//! protocol's messages one per line on a socket, and this session forwards each line,
//! checked, as a text frame.
//!
//! Threads, both ending with the session: the connection thread (the worker) reads the
//! client's frames (the subscription, pings, the close), and a pump thread reads the
//! watcher's lines and writes them, and a ping every [`PING_EVERY`] while quiet. Writes
//! share one lock. Nothing is queued here: a client that reads slowly blocks the pump, the
//! pump blocks the watcher, and the kernel drops events with an `overflow` message. So a
//! watch costs a line buffer and the socket buffers, whatever happens in the sprite.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::fs_routes::sprite_fs;
use super::Reply;
use crate::fsops::{self, SpriteFs};
use crate::fswatch::{check_line, Message as WatchMessage, WatchSpec, MAX_LINE};
use crate::net::body::RequestBody;
use crate::net::http::{RequestHead, Response, SPRITE_VERSION};
use crate::net::ws::{self, opcode, Message, MessageReader, ReadError};
use crate::state::{Conn, State};

/// Watch connections one sprite may have open at once (each holds up to
/// [`MAX_WATCHES`] inotify watches, so this also caps a sprite's watches).
pub const MAX_CONNECTIONS_PER_SPRITE: usize = 8;
/// inotify watches (directories, or watched files) per connection.
pub const MAX_WATCHES: usize = crate::fswatch::DEFAULT_MAX_WATCHES;
/// Paths one subscription may name.
pub const MAX_PATHS: usize = 64;
/// How long the client has to send its subscription after the upgrade.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// Server ping interval while no event comes (the exec's).
const PING_EVERY: Duration = Duration::from_secs(15);
/// Client silence (no frame, pongs included) after which it counts as gone; also the
/// longest a write may block on a client that does not read.
const CLIENT_SILENCE: Duration = Duration::from_secs(45);
/// Close codes.
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;

/// `GET /v1/sprites/{name}/fs/watch`: **404** for an unknown sprite, **400** for a request
/// that is not a WebSocket upgrade, **429** when the sprite has
/// [`MAX_CONNECTIONS_PER_SPRITE`] watches open, **501** without a filesystem API; else the
/// watch.
pub fn watch(
    state: &Arc<State>,
    name: &str,
    req: &RequestHead,
    body: &mut dyn RequestBody,
) -> Reply {
    let key = match super::accept_upgrade(state, name, req, body) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    let fs = match sprite_fs(state, name) {
        Ok(fs) => fs,
        Err(r) => return r.into(),
    };
    let Some(slot) = Slot::take(name) else {
        return Response::error(
            429,
            "too_many_watches",
            &format!("the sprite already has {MAX_CONNECTIONS_PER_SPRITE} filesystem watches open"),
        )
        .with_header("Retry-After", "1")
        .into();
    };
    Reply::WebSocket(Box::new(FsWatch {
        accept_key: ws::accept_key(key),
        fs,
        _slot: slot,
    }))
}

/// Open watch connections per sprite name.
fn open_watches() -> &'static Mutex<HashMap<String, usize>> {
    static OPEN: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// One of a sprite's [`MAX_CONNECTIONS_PER_SPRITE`] watch connections, given back on drop.
struct Slot(String);

impl Slot {
    fn take(sprite: &str) -> Option<Slot> {
        let mut open = crate::lock(open_watches());
        let n = open.entry(sprite.to_owned()).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_SPRITE {
            return None;
        }
        *n += 1;
        Some(Slot(sprite.to_owned()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = crate::lock(open_watches());
        if let Some(n) = open.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// An accepted watch, waiting to write its `101`.
struct FsWatch {
    accept_key: String,
    fs: Box<dyn SpriteFs>,
    _slot: Slot,
}

/// The client's subscription.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    paths: Vec<String>,
    #[serde(default)]
    recursive: bool,
    working_dir: Option<String>,
}

/// The socket's writing side, shared by both threads.
struct Writer {
    conn: Arc<Conn>,
    /// A write failed (or timed out): the client is gone.
    broken: bool,
    /// A close frame went out (or the client is gone): nothing more is written.
    closed: bool,
}

impl Writer {
    fn frame(&mut self, op: u8, payload: &[u8]) -> bool {
        if !self.broken
            && !self.closed
            && self
                .conn
                .stream()
                .write_all(&ws::encode_frame(op, &[payload]))
                .is_err()
        {
            self.broken = true;
            // Wakes the connection thread: the session is over.
            let _ = self.conn.stream().shutdown(Shutdown::Both);
        }
        !self.broken
    }

    fn text(&mut self, m: &WatchMessage) -> bool {
        let text = serde_json::to_string(m).unwrap_or_default();
        self.frame(opcode::TEXT, text.as_bytes())
    }

    /// Sends the one close frame of the session.
    fn close(&mut self, code: u16, reason: &str) {
        if !self.closed {
            self.frame(opcode::CLOSE, &ws::close_payload(code, reason));
            self.closed = true;
        }
    }
}

fn error_message(message: String) -> WatchMessage {
    WatchMessage::Error {
        code: None,
        path: None,
        message,
    }
}

impl super::WebSocketSession for FsWatch {
    fn run(self: Box<Self>, _state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        let FsWatch { accept_key, fs, .. } = *self;
        let stream = conn.stream();
        let _ = stream.set_write_timeout(Some(CLIENT_SILENCE));
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept_key}\r\nSprite-Version: {SPRITE_VERSION}\r\n\r\n"
        );
        if conn.stream().write_all(head.as_bytes()).is_err() {
            return;
        }
        let writer = Arc::new(Mutex::new(Writer {
            conn: conn.clone(),
            broken: false,
            closed: false,
        }));
        let mut reader = MessageReader::new(stream, leftover);
        let spec = match subscription(&mut reader, &writer) {
            Ok(spec) => spec,
            Err(Some((code, reason, message))) => {
                let mut w = crate::lock(&writer);
                if let Some(m) = message {
                    w.text(&error_message(m));
                }
                w.close(code, reason);
                drop(w);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Err(None) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        let watcher = match fs.watch(&spec) {
            Ok(fd) => UnixStream::from(fd),
            Err(e) => {
                let mut w = crate::lock(&writer);
                w.text(&error_message(format!("cannot watch: {e}")));
                w.close(INTERNAL, "cannot watch");
                drop(w);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        let _ = stream.set_read_timeout(Some(CLIENT_SILENCE));
        let pump = watcher.try_clone().ok().and_then(|lines| {
            let writer = writer.clone();
            std::thread::Builder::new()
                .name("sprites-fs-watch".into())
                .stack_size(128 * 1024)
                .spawn(move || pump(lines, &writer))
                .ok()
        });
        let Some(pump) = pump else {
            crate::lock(&writer).close(INTERNAL, "server busy");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        };
        let close = loop {
            match reader.read_message() {
                Ok(Message::Ping(p)) => {
                    crate::lock(&writer).frame(opcode::PONG, &p);
                }
                Ok(Message::Close(code)) => break Some((ws::reply_close_code(code), "")),
                Ok(_) => {} // one subscription per connection; anything else is ignored
                Err(ReadError::Protocol(code, reason)) => break Some((code, reason)),
                Err(ReadError::Eof) | Err(ReadError::Io) => break None,
            }
        };
        {
            let mut w = crate::lock(&writer);
            match close {
                Some((code, reason)) => w.close(code, reason),
                None => w.closed = true,
            }
        }
        // Stops the watcher (it sees the hang-up) and the pump (EOF on its read).
        let _ = watcher.shutdown(Shutdown::Both);
        let _ = stream.shutdown(Shutdown::Both);
        let _ = pump.join();
    }
}

/// How a session ends before it watches: the close code and reason, after an `error`
/// message if there is one to say.
type Refusal = (u16, &'static str, Option<String>);

/// Waits (at most [`SUBSCRIBE_WAIT`]) for the subscription and checks it. `Err(Some(..))`:
/// close as it says; `Err(None)`: the client is gone.
fn subscription(
    reader: &mut MessageReader<&std::net::TcpStream>,
    writer: &Mutex<Writer>,
) -> Result<WatchSpec, Option<Refusal>> {
    let stream = crate::lock(writer).conn.clone();
    let deadline = Instant::now() + SUBSCRIBE_WAIT;
    let text = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Some((POLICY, "no subscription", Some(no_subscription()))));
        }
        let _ = stream.stream().set_read_timeout(Some(left));
        match reader.read_message() {
            Ok(Message::Text(t)) => break t,
            Ok(Message::Ping(p)) => {
                crate::lock(writer).frame(opcode::PONG, &p);
            }
            Ok(Message::Close(code)) => return Err(Some((ws::reply_close_code(code), "", None))),
            Ok(_) => {}
            Err(ReadError::Protocol(code, reason)) => return Err(Some((code, reason, None))),
            Err(ReadError::Io) if Instant::now() >= deadline => {
                return Err(Some((POLICY, "no subscription", Some(no_subscription()))));
            }
            Err(_) => return Err(None),
        }
    };
    let bad = |m: String| Err(Some((POLICY, "bad subscription", Some(m))));
    let sub: Subscribe = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return bad(format!("the subscription is not valid: {e}")),
    };
    if sub.kind != "subscribe" {
        return bad(format!(
            "expected a \"subscribe\" message, got {:?}",
            sub.kind
        ));
    }
    if sub.paths.is_empty() || sub.paths.len() > MAX_PATHS {
        return bad(format!("paths must name 1 to {MAX_PATHS} paths"));
    }
    let wd = sub.working_dir.as_deref().filter(|w| !w.is_empty());
    let mut paths = Vec::with_capacity(sub.paths.len());
    for p in &sub.paths {
        match fsops::resolve(wd, p) {
            Ok(p) => paths.push(p),
            Err(e) => return bad(format!("{}: {p:?}", e.message)),
        }
    }
    Ok(WatchSpec {
        paths,
        recursive: sub.recursive,
        max_watches: MAX_WATCHES,
    })
}

fn no_subscription() -> String {
    format!("no subscribe message within {SUBSCRIBE_WAIT:?} of the upgrade")
}

/// Forwards the watcher's lines as text frames until it ends (EOF: the session closed it,
/// or the watcher died) or the client is gone. Pings while quiet.
fn pump(mut lines: UnixStream, writer: &Mutex<Writer>) {
    let _ = lines.set_read_timeout(Some(PING_EVERY));
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let outcome = loop {
        let n = match lines.read(&mut buf) {
            Ok(0) => break Some((INTERNAL, "the watch ended")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !crate::lock(writer).frame(opcode::PING, b"") {
                    break None;
                }
                continue;
            }
            Err(_) => break Some((INTERNAL, "the watch ended")),
        };
        let mut rest = &buf[..n];
        let mut ok = true;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            if !check_line(&line) {
                ok = false;
                break;
            }
            if !crate::lock(writer).frame(opcode::TEXT, &line) {
                return;
            }
            line.clear();
        }
        if !ok {
            break Some((INTERNAL, "the watcher sent an invalid message"));
        }
        line.extend_from_slice(rest);
        if line.len() > MAX_LINE {
            break Some((INTERNAL, "the watcher sent an invalid message"));
        }
    };
    let mut w = crate::lock(writer);
    if let Some((code, reason)) = outcome {
        // A no-op when the session already closed (then the EOF was its doing).
        w.close(code, reason);
    }
    let _ = w.conn.stream().shutdown(Shutdown::Both);
}
