//! The TCP proxy (PROTOCOL.md §10): a WebSocket that carries one TCP connection made from
//! inside a sprite.
//!
//! - [`request`]: the init message and the replies to it;
//! - [`relay`]: the bytes both ways once the target is connected.
//!
//! The session ([`ProxySession`]) runs on the connection's worker thread: it writes the
//! `101`, waits (at most [`INIT_WAIT`]) for the init message, connects through
//! [`SpriteRuntime::connect_tcp`](crate::runtime::SpriteRuntime::connect_tcp) (in the
//! sandbox runtime the socket is made in the sprite's network namespace, so `localhost` is
//! the sprite's), answers `connected` or an error, and then relays until both sides are
//! done.

pub(crate) mod relay;
pub(crate) mod request;

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::net::http::SPRITE_VERSION;
use crate::net::ws::{self, opcode, Message, MessageReader, ReadError};
use crate::state::{Conn, State};

/// How long the client has to send its init message after the `101`.
pub const INIT_WAIT: Duration = Duration::from_secs(10);
/// How long connecting to the target may take. Below the JS SDK's 10 s wait for the
/// reply, so that client hears why rather than timing out itself.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a failed session waits for the client's close after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Close code after an error reply: the request could not be served.
const REFUSED: u16 = 1008;

/// An accepted `/proxy` upgrade, waiting to write its `101`.
pub struct ProxySession {
    accept_key: String,
    sprite: String,
}

impl ProxySession {
    /// A proxy for `sprite` and a client whose `Sec-WebSocket-Key` is `ws_key`.
    pub fn new(sprite: &str, ws_key: &str) -> ProxySession {
        ProxySession {
            accept_key: ws::accept_key(ws_key),
            sprite: sprite.to_owned(),
        }
    }
}

impl crate::api::WebSocketSession for ProxySession {
    fn run(self: Box<Self>, state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        let stream = conn.stream();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSprite-Version: {SPRITE_VERSION}\r\n\r\n",
            self.accept_key
        );
        if (&*stream).write_all(head.as_bytes()).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        relay::keepalive(stream);
        let _ = stream.set_read_timeout(Some(INIT_WAIT));
        let mut reader = MessageReader::new(stream, leftover);
        let target = match read_init(stream, &mut reader) {
            Init::Got(text) => match request::parse(&text) {
                Ok(t) => t,
                Err(why) => return refuse(stream, &mut reader, "invalid_request", &why),
            },
            Init::Refuse(why) => return refuse(stream, &mut reader, "invalid_request", why),
            Init::Closed => return,
        };
        if !state.store.contains(&self.sprite) {
            let why = format!("sprite {:?} not found", self.sprite);
            return refuse(stream, &mut reader, "sprite_not_found", &why);
        }
        // An open tunnel is traffic: the sprite stays `running` while it lasts (§14).
        let _activity = state.lifecycle.hold(&state, &self.sprite);
        let tcp = match connect(&state, &self.sprite, &target) {
            Ok(tcp) => tcp,
            Err((code, why)) => return refuse(stream, &mut reader, code, &why),
        };
        let reply = request::connected(&target, tcp.peer_addr().ok());
        if (&*stream)
            .write_all(&ws::encode_frame(opcode::TEXT, &[reply.as_bytes()]))
            .is_err()
        {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let _ = stream.set_read_timeout(None);
        relay::run(&state, conn.clone(), reader, tcp, target.half_close);
    }
}

/// Connects to `target` from inside `sprite` (§10.2), for a `/proxy` tunnel or a proxy
/// operation on a control connection (§8.4). The error is the §10.3 `code` and message.
pub(crate) fn connect(
    state: &State,
    sprite: &str,
    target: &request::Target,
) -> Result<TcpStream, (&'static str, String)> {
    if !state.store.contains(sprite) {
        return Err(("sprite_not_found", format!("sprite {sprite:?} not found")));
    }
    let dir = state.store.sprite_dir(sprite);
    match state
        .runtime
        .connect_tcp(&dir, &target.host, target.port, CONNECT_TIMEOUT)
    {
        Ok(tcp) => {
            // Interactive protocols (ssh, psql) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Err(e) => Err((
            request::error_code(&e),
            format!(
                "connecting to {} from inside the sprite: {e}",
                target.display()
            ),
        )),
    }
}

/// What came instead of (or as) the init message.
enum Init {
    /// The init message's text.
    Got(String),
    /// Something else came: answer with this error.
    Refuse(&'static str),
    /// The client closed or went away; the connection is already dealt with.
    Closed,
}

/// Reads until the first data message, answering pings meanwhile (no other thread writes
/// yet).
fn read_init(stream: &TcpStream, reader: &mut MessageReader<&TcpStream>) -> Init {
    loop {
        match reader.read_message() {
            Ok(Message::Text(text)) => return Init::Got(text),
            Ok(Message::Binary(_)) => {
                return Init::Refuse("the first message must be the text init message")
            }
            Ok(Message::Ping(p)) => {
                if (&*stream)
                    .write_all(&ws::encode_frame(opcode::PONG, &[&p]))
                    .is_err()
                {
                    let _ = stream.shutdown(Shutdown::Both);
                    return Init::Closed;
                }
            }
            Ok(Message::Pong) => {}
            Ok(Message::Close(code)) => {
                let payload = ws::close_payload(ws::reply_close_code(code), "");
                let _ = (&*stream).write_all(&ws::encode_frame(opcode::CLOSE, &[&payload]));
                let _ = stream.shutdown(Shutdown::Both);
                return Init::Closed;
            }
            Err(ReadError::Protocol(code, reason)) => {
                let payload = ws::close_payload(code, reason);
                let _ = (&*stream).write_all(&ws::encode_frame(opcode::CLOSE, &[&payload]));
                let _ = stream.shutdown(Shutdown::Both);
                return Init::Closed;
            }
            Err(ReadError::Io) if timed_out(stream) => {
                return Init::Refuse("no init message arrived in time")
            }
            Err(ReadError::Eof) | Err(ReadError::Io) => {
                let _ = stream.shutdown(Shutdown::Both);
                return Init::Closed;
            }
        }
    }
}

/// Whether the last read on `stream` failed by its timeout (the reader does not keep the
/// error): a socket that is still open and has nothing to read.
fn timed_out(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let idle = matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    let _ = stream.set_nonblocking(false);
    idle
}

/// Answers `{"status":"error",…}`, closes with [`REFUSED`], waits (briefly) for the
/// client's close, and ends the connection.
fn refuse(stream: &TcpStream, reader: &mut MessageReader<&TcpStream>, code: &str, message: &str) {
    let text = request::error(code, message);
    let mut out = ws::encode_frame(opcode::TEXT, &[text.as_bytes()]);
    out.extend(ws::encode_frame(
        opcode::CLOSE,
        &[&ws::close_payload(REFUSED, "proxy request failed")],
    ));
    let _ = stream.set_write_timeout(Some(CLOSE_WAIT));
    if (&*stream).write_all(&out).is_ok() {
        // The client's close answers ours; what comes before it is ignored.
        let _ = stream.set_read_timeout(Some(CLOSE_WAIT));
        for _ in 0..64 {
            match reader.read_message() {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
