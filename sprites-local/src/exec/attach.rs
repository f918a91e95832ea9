//! One WebSocket connection to a detachable session's [`Hub`]: the exec that started the
//! session, or a later attach (PROTOCOL.md §7.2). Any number may be attached at once; all
//! see the output and any may type.
//!
//! Two threads per connection: this one (the connection's worker) reads the client's
//! frames — input, resizes, signals, pings, close — and a writer sends, in order, the
//! `101` and `session_info`, the scrollback, then live output and the exit report. A
//! connection that ends before the exit only detaches: the process goes on.
//!
//! Exit and close: a terminal session reports the exit as the text message
//! `{"type":"exit","exit_code":N}` and closes **at once**, with 1000 after exit 0 and
//! 1011 otherwise (the JS SDK takes a TTY command's status from the close code alone and
//! waits for the server's close: lingering would cost it seconds per command). A non-TTY
//! session sends the binary exit frame and, as an ordinary exec does, gives the client
//! [`CLOSE_WAIT`] to close first.

use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError};
use serde::Deserialize;

use super::control::{ExecControl, Registered};
use super::hub::{Attachment, Hub, Out, SLOW_ATTACHMENT};
use super::pump::{
    echo_close_code, signal_request, spawn_named, stream_id, Writer, CLIENT_SILENCE, CLOSE_WAIT,
    PING_EVERY,
};
use crate::net::http::SPRITE_VERSION;
use crate::net::ws::{self, close_code, opcode, Message, MessageReader, ReadError};
use crate::state::{Conn, State};

/// Close code after a terminal session's non-zero exit (any code but 1000 reads as
/// failure to the JS SDK).
const CLOSE_FAILED: u16 = 1011;
/// A write to a client that blocks this long means it stopped reading: it is cut.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// An accepted attach: the hub to join, and the client's accept key.
pub struct Attach {
    hub: Arc<Hub>,
    accept_key: String,
}

impl Attach {
    /// Attaches to `hub`; `ws_key` is the client's `Sec-WebSocket-Key`.
    pub fn new(hub: Arc<Hub>, ws_key: &str) -> Attach {
        Attach {
            hub,
            accept_key: ws::accept_key(ws_key),
        }
    }
}

impl crate::api::WebSocketSession for Attach {
    fn run(self: Box<Self>, state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        let attachment = self.hub.attach();
        serve(
            &state,
            conn,
            leftover,
            &self.hub,
            attachment,
            &self.accept_key,
        )
    }
}

/// Requests from the reader to the writer.
enum Ctrl {
    Pong(Vec<u8>),
    /// Answer the client's close with this code, then stop.
    Close(u16, &'static str),
    /// The client is gone: write nothing more.
    Gone,
}

/// A client's text message (PROTOCOL.md §6.5).
#[derive(Deserialize)]
struct Resize {
    #[serde(rename = "type")]
    kind: String,
    rows: u16,
    cols: u16,
}

/// Serves `conn` as `attachment` to `hub` until the client leaves or the process exits.
pub(super) fn serve(
    state: &Arc<State>,
    conn: Arc<Conn>,
    leftover: Vec<u8>,
    hub: &Arc<Hub>,
    attachment: Attachment,
    accept_key: &str,
) {
    let stream = conn.stream();
    let _ = stream.set_read_timeout(Some(CLIENT_SILENCE));
    let _ = stream.set_write_timeout(Some(WRITE_STALL));
    let id = attachment.id;
    let (ctrl_tx, ctrl_rx) = bounded::<Ctrl>(16);
    let (done_tx, done_rx) = bounded::<()>(1);
    let preamble = preamble(state, hub, accept_key);
    // Registered before the writer can tell the client anything (see `pump`).
    let _registered = {
        let ctrl = ctrl_tx.clone();
        let going_away = move || {
            let _ = ctrl.try_send(Ctrl::Close(close_code::GOING_AWAY, "server shutting down"));
        };
        Registered::new(state, ExecControl::new(going_away, done_rx.clone()))
    };
    let writer = {
        let (conn, tty) = (conn.clone(), hub.tty);
        spawn_named("sprites-attach-out", move || {
            let mut w = Writer {
                sock: conn,
                broken: false,
                closed: false,
            };
            write_out(&mut w, preamble, attachment, tty, &ctrl_rx);
            let _ = done_tx.try_send(());
            let _ = w.sock.stream().shutdown(Shutdown::Both);
        })
    };
    if writer.is_err() {
        hub.detach(id);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let mut reader = MessageReader::new(stream, leftover);
    let close_with = loop {
        match reader.read_message() {
            Ok(Message::Binary(data)) => input(hub, data),
            Ok(Message::Text(text)) => {
                if let Ok(r) = serde_json::from_str::<Resize>(&text) {
                    if r.kind == "resize" && r.rows > 0 && r.cols > 0 {
                        hub.resize(r.rows, r.cols);
                    }
                } else if let Some(sig) = signal_request(&text).filter(|_| state.signal_capability)
                {
                    hub.session.signal(sig);
                }
            }
            // If the writer is backed up a dropped pong is harmless: the client's next
            // ping (or ours) keeps the connection alive.
            Ok(Message::Ping(payload)) => drop(ctrl_tx.try_send(Ctrl::Pong(payload))),
            Ok(Message::Pong) => {}
            Ok(Message::Close(code)) => break Some((echo_close_code(code), "")),
            Err(ReadError::Protocol(code, reason)) => break Some((code, reason)),
            Err(ReadError::Eof) | Err(ReadError::Io) => break None,
        }
    };
    hub.detach(id);
    match close_with {
        Some((code, reason)) => {
            if ctrl_tx.try_send(Ctrl::Close(code, reason)).is_ok() {
                let _ = done_rx.recv_timeout(CLOSE_WAIT);
            }
        }
        None => drop(ctrl_tx.try_send(Ctrl::Gone)),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// The `101` and the `session_info` message that must precede any output (clients take
/// the session's TTY mode from it).
fn preamble(state: &State, hub: &Hub, accept_key: &str) -> Vec<u8> {
    let capabilities = if state.signal_capability {
        "X-Sprite-Capabilities: signal\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n{capabilities}\
         Sprite-Version: {SPRITE_VERSION}\r\n\r\n"
    )
    .into_bytes();
    let info = serde_json::json!({
        "type": "session_info",
        "session_id": hub.session.pid.to_string(),
        "tty": hub.tty,
    })
    .to_string();
    out.extend_from_slice(&ws::encode_frame(opcode::TEXT, &[info.as_bytes()]));
    out
}

/// A client's binary frame: raw keystrokes on a terminal; stream-tagged otherwise.
fn input(hub: &Hub, data: Vec<u8>) {
    if hub.tty {
        if !data.is_empty() {
            hub.write_stdin(data, 0);
        }
        return;
    }
    match data.first() {
        Some(&stream_id::STDIN) if data.len() > 1 => {
            hub.write_stdin(data, 1);
        }
        Some(&stream_id::STDIN_EOF) => hub.close_stdin(),
        _ => {} // empty frames and unknown stream ids are ignored
    }
}

/// The writer: preamble, scrollback, live output, pings, and the end.
fn write_out(
    w: &mut Writer,
    preamble: Vec<u8>,
    attachment: Attachment,
    tty: bool,
    ctrl: &Receiver<Ctrl>,
) {
    w.write(&preamble);
    for (stream, data) in &attachment.replay {
        data_frame(w, tty, *stream, data);
    }
    drop(attachment.replay);
    let mut next_ping = Instant::now() + PING_EVERY;
    loop {
        if w.broken {
            return;
        }
        let wait = next_ping.saturating_duration_since(Instant::now());
        select! {
            recv(attachment.rx) -> out => match out {
                Ok(Out::Data(stream, data)) => data_frame(w, tty, stream, &data),
                Ok(Out::Text(text)) => w.frame(opcode::TEXT, text.as_bytes()),
                Ok(Out::Exit(code)) => return report_exit(w, tty, code, ctrl),
                Err(_) => {
                    // Cut by the hub: this client fell behind the output for too long.
                    let reason = "fell behind the session's output";
                    let _ = SLOW_ATTACHMENT;
                    return w.close(close_code::GOING_AWAY, reason);
                }
            },
            recv(ctrl) -> msg => match msg {
                Ok(Ctrl::Pong(payload)) => w.frame(opcode::PONG, &payload),
                Ok(Ctrl::Close(code, reason)) => return w.close(code, reason),
                Ok(Ctrl::Gone) | Err(_) => return,
            },
            default(wait) => {
                w.frame(opcode::PING, b"");
                // An empty data frame too: see the ping in `pump` (the JS SDK's silence limit).
                w.frame(opcode::BINARY, b"");
                next_ping = Instant::now() + PING_EVERY;
            }
        }
    }
}

/// One output chunk as a frame: raw on a terminal, behind its stream id otherwise.
fn data_frame(w: &mut Writer, tty: bool, stream: u8, data: &[u8]) {
    if tty {
        w.frame(opcode::BINARY, data);
    } else {
        w.frame_of(opcode::BINARY, &[&[stream], data]);
    }
}

/// The exit report and the close (see the module docs), then a bounded wait for the
/// client's own close.
fn report_exit(w: &mut Writer, tty: bool, code: u8, ctrl: &Receiver<Ctrl>) {
    if tty {
        let exit = serde_json::json!({"type": "exit", "exit_code": code}).to_string();
        w.frame(opcode::TEXT, exit.as_bytes());
        let close = if code == 0 {
            close_code::NORMAL
        } else {
            CLOSE_FAILED
        };
        w.close(close, "");
    } else {
        w.frame(opcode::BINARY, &[stream_id::EXIT, code]);
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match ctrl.recv_deadline(deadline) {
            Ok(Ctrl::Pong(payload)) => w.frame(opcode::PONG, &payload),
            Ok(Ctrl::Close(code, reason)) => return w.close(code, reason),
            Ok(Ctrl::Gone) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => return w.close(close_code::NORMAL, ""),
        }
    }
}
