//! The port watch's WebSocket session (PROTOCOL.md §10 "Port watch"): the `port_list`
//! snapshot, then `port_opened` / `port_closed` text frames, until either side closes.
//!
//! Two threads, both ending with the session: the connection thread (the worker) reads the
//! client's frames (pings, the close; anything else is ignored), and a writer thread owns
//! every write: the `101`, the port messages (from a bounded queue the scanner fills), pongs,
//! a ping every [`PING_EVERY`], the close frame. A client that reads nothing for long
//! enough to fill the queue (a change is then lost) is closed with 1008, so it costs a
//! bounded queue, never more.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};

use super::{Scope, Subscription, Update};
use crate::net::http::SPRITE_VERSION;
use crate::net::ws::{self, opcode, Message, MessageReader, ReadError};
use crate::state::{Conn, State};

/// Server ping interval (the exec's).
const PING_EVERY: Duration = Duration::from_secs(15);
/// Client silence (no frame at all, pongs included) after which it counts as gone; also the
/// longest a write may block on a client that does not read.
const CLIENT_SILENCE: Duration = Duration::from_secs(45);
/// How long the connection thread waits for the close frame to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Port messages queued for a client that is slow to read them.
const QUEUE: usize = 1024;
/// Close code for a client too slow to take its messages (policy violation).
const TOO_SLOW: u16 = 1008;

/// An accepted port watch, subscribed, waiting to write its `101`.
pub struct PortWatch {
    accept_key: String,
    sub: Subscription,
    messages: Receiver<String>,
    overflow: Arc<AtomicBool>,
}

impl PortWatch {
    /// Subscribes to `sprite`'s listeners for a client whose `Sec-WebSocket-Key` is
    /// `ws_key`. Fails only when the sprite's scanner cannot be started.
    pub fn start(state: &State, sprite: &str, ws_key: &str) -> io::Result<PortWatch> {
        let (tx, messages) = bounded::<String>(QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let full = overflow.clone();
        let sub = state.ports.subscribe(
            sprite,
            &state.store.sprite_dir(sprite),
            Scope::Sprite,
            Box::new(move |u: &Update<'_>| {
                if tx.try_send(u.to_json()).is_err() {
                    full.store(true, Ordering::SeqCst);
                }
            }),
        )?;
        Ok(PortWatch {
            accept_key: ws::accept_key(ws_key),
            sub,
            messages,
            overflow,
        })
    }
}

/// Requests from the connection thread to the writer.
enum Ctrl {
    Pong(Vec<u8>),
    /// Send a close frame with this code, then stop.
    Close(u16, &'static str),
    /// The client is gone: stop.
    Gone,
}

impl crate::api::WebSocketSession for PortWatch {
    fn run(self: Box<Self>, _state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        let PortWatch {
            accept_key,
            sub,
            messages,
            overflow,
        } = *self;
        let stream = conn.stream();
        let _ = stream.set_read_timeout(Some(CLIENT_SILENCE));
        let _ = stream.set_write_timeout(Some(CLIENT_SILENCE));
        let (ctrl_tx, ctrl_rx) = bounded::<Ctrl>(16);
        let (done_tx, done_rx) = bounded::<()>(1);
        let writer = {
            let w = Writer {
                conn: conn.clone(),
                broken: false,
            };
            std::thread::Builder::new()
                .name("sprites-port-watch".into())
                .stack_size(128 * 1024)
                .spawn(move || w.run(&accept_key, &messages, &ctrl_rx, &overflow, &done_tx))
        };
        if writer.is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let mut reader = MessageReader::new(stream, leftover);
        let close = loop {
            match reader.read_message() {
                Ok(Message::Ping(p)) => {
                    // A pong dropped while the writer is backed up is harmless: pings
                    // come again.
                    let _ = ctrl_tx.try_send(Ctrl::Pong(p));
                }
                Ok(Message::Close(code)) => break Some((ws::reply_close_code(code), "")),
                Ok(_) => {} // the client has nothing to say; text and binary are ignored
                Err(ReadError::Protocol(code, reason)) => break Some((code, reason)),
                Err(ReadError::Eof) | Err(ReadError::Io) => break None,
            }
        };
        // No more events: the writer stops once it has sent what it must.
        drop(sub);
        match close {
            Some((code, reason)) => {
                if ctrl_tx.send(Ctrl::Close(code, reason)).is_ok() {
                    let _ = done_rx.recv_timeout(CLOSE_WAIT);
                }
            }
            None => {
                let _ = ctrl_tx.try_send(Ctrl::Gone);
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// The socket's writing side, owned by the writer thread.
struct Writer {
    conn: Arc<Conn>,
    /// A write failed (or timed out): the client is gone.
    broken: bool,
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) {
        if !self.broken && self.conn.stream().write_all(bytes).is_err() {
            self.broken = true;
            // Wakes the connection thread: the session is over.
            let _ = self.conn.stream().shutdown(Shutdown::Both);
        }
    }

    fn frame(&mut self, op: u8, payload: &[u8]) {
        if !self.broken {
            self.write(&ws::encode_frame(op, &[payload]));
        }
    }

    fn close(&mut self, code: u16, reason: &str, done: &Sender<()>) {
        self.frame(opcode::CLOSE, &ws::close_payload(code, reason));
        let _ = done.try_send(());
    }

    fn run(
        mut self,
        accept_key: &str,
        messages: &Receiver<String>,
        ctrl: &Receiver<Ctrl>,
        overflow: &AtomicBool,
        done: &Sender<()>,
    ) {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept_key}\r\nSprite-Version: {SPRITE_VERSION}\r\n\r\n"
        );
        self.write(head.as_bytes());
        let mut next_ping = Instant::now() + PING_EVERY;
        while !self.broken {
            if overflow.load(Ordering::SeqCst) {
                // Some change was lost: what the client has is no longer the truth.
                self.close(TOO_SLOW, "too slow to take port events", done);
                let _ = self.conn.stream().shutdown(Shutdown::Both);
                return;
            }
            let wait = next_ping.saturating_duration_since(Instant::now());
            select! {
                recv(messages) -> m => match m {
                    Ok(text) => self.frame(opcode::TEXT, text.as_bytes()),
                    // Unsubscribed: the connection thread is ending the session.
                    Err(_) => return self.finish(ctrl, done),
                },
                recv(ctrl) -> c => match c {
                    Ok(Ctrl::Pong(p)) => self.frame(opcode::PONG, &p),
                    Ok(Ctrl::Close(code, reason)) => return self.close(code, reason, done),
                    Ok(Ctrl::Gone) | Err(_) => return,
                },
                default(wait) => {
                    self.frame(opcode::PING, b"");
                    next_ping = Instant::now() + PING_EVERY;
                }
            }
        }
    }

    /// The subscription is gone: waits (bounded) for the connection thread's last word.
    fn finish(&mut self, ctrl: &Receiver<Ctrl>, done: &Sender<()>) {
        loop {
            match ctrl.recv_timeout(CLOSE_WAIT) {
                Ok(Ctrl::Pong(p)) => self.frame(opcode::PONG, &p),
                Ok(Ctrl::Close(code, reason)) => return self.close(code, reason, done),
                Ok(Ctrl::Gone) | Err(_) => return,
            }
        }
    }
}
