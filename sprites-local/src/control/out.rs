//! The control connection's writer thread: the only writer of the socket. It sends what the
//! reader asks for (op results, pongs, errors) and, while an exec or attach runs, that
//! session's `session_info`, output and exit report followed by `op.complete`, in order.
//! While a proxy op runs it relays the target's bytes ([`Relay::pump`]) and does the rest
//! between reads. It pings every [`PING_EVERY`] so clients and middleboxes see a live
//! connection.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver, Sender};

use super::envelope;
use crate::exec::{Attachment, Hub, Out};
use crate::net::ws::{self, opcode};
use crate::state::Conn;
use crate::tunnel::relay::{ClientOut, PumpEnd, Relay};

/// How often the server pings a control connection.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// How long the writer waits for room in the socket before it counts the client as gone.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// A request to the writer.
pub enum OutMsg {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A pong with this payload.
    Pong(Vec<u8>),
    /// Start forwarding an exec's (or attach's) session.
    Op(OpStart),
    /// Start relaying a proxy op's target (its `connected` reply is out).
    Proxy(ProxyOp),
    /// The client released the proxy op: end it with `op.complete`.
    EndProxy,
    /// Send a close frame with this code, then stop.
    Close(u16, &'static str),
    /// The client is gone: stop.
    Gone,
}

/// An exec or attach over control: what to forward until its exit.
pub struct OpStart {
    pub hub: Arc<Hub>,
    pub attachment: Attachment,
    /// The op was started behind `control:` (its end is too).
    pub prefixed: bool,
    /// A non-detachable exec: it must not outlive the op (killed if the op ends without
    /// its exit).
    pub kill_on_cut: bool,
}

/// A proxy op over control: the relay to its target, and the sprite's activity held while
/// it is open (§14).
pub(crate) struct ProxyOp {
    pub(crate) relay: Arc<Relay>,
    /// The op is open; whichever of the reader (`release`) and the writer (the target
    /// ended) clears it sends the op's end.
    pub(crate) open: Arc<AtomicBool>,
    /// Dropped when the op ends.
    pub(crate) activity: crate::lifecycle::Activity,
}

/// Runs the writer until the reader says stop or the socket breaks. `busy` is cleared when
/// an exec op ends, just before its `op.complete`, so the client's next `op.start` (sent
/// after it reads that) always finds the connection idle. A proxy op's end is sent for
/// whichever of the writer (the target ended) and the reader (the client's `release`)
/// closes it first.
pub fn run(
    conn: Arc<Conn>,
    preamble: Vec<u8>,
    rx: Receiver<OutMsg>,
    busy: Arc<AtomicBool>,
    done: Sender<()>,
) {
    let mut w = Writer {
        conn,
        broken: false,
    };
    w.write(&preamble);
    let mut current: Option<OpStart> = None;
    let mut next_ping = Instant::now() + PING_EVERY;
    // A message that stopped a proxy op, handled next.
    let mut pending: Option<OutMsg> = None;
    while !w.broken {
        let msg = if let Some(msg) = pending.take() {
            Ok(msg)
        } else {
            let op_rx = current
                .as_ref()
                .map_or_else(never, |op| op.attachment.rx.clone());
            let wait = next_ping.saturating_duration_since(Instant::now());
            select! {
                recv(rx) -> msg => msg,
                recv(op_rx) -> out => {
                    match out {
                        Ok(Out::Data(stream, data)) => {
                            if let Some(op) = &current {
                                data_frame(&mut w, op.hub.tty, stream, &data);
                            }
                        }
                        Ok(Out::Text(text)) => w.frame(opcode::TEXT, text.as_bytes()),
                        Ok(Out::Exit(code)) => {
                            if let Some(op) = current.take() {
                                end_exec(&mut w, &op, Ok(code), &busy);
                            }
                        }
                        Err(_) => {
                            if let Some(op) = current.take() {
                                // The hub cut this client for not reading: the op is over,
                                // and a non-detachable exec with it.
                                if op.kill_on_cut {
                                    op.hub.session.signal(libc::SIGKILL);
                                }
                                end_exec(&mut w, &op, Err("the client fell behind the session's output"), &busy);
                            }
                        }
                    }
                    continue;
                },
                default(wait) => {
                    w.frame(opcode::PING, b"");
                    next_ping = Instant::now() + PING_EVERY;
                    continue;
                }
            }
        };
        match msg {
            Ok(OutMsg::Text(t)) => w.frame(opcode::TEXT, t.as_bytes()),
            Ok(OutMsg::Binary(b)) => w.frame(opcode::BINARY, &b),
            Ok(OutMsg::Pong(p)) => w.frame(opcode::PONG, &p),
            Ok(OutMsg::Op(op)) => {
                let info = serde_json::json!({
                    "type": "session_info",
                    "session_id": op.hub.session.pid.to_string(),
                    "tty": op.hub.tty,
                })
                .to_string();
                w.frame(opcode::TEXT, info.as_bytes());
                for (stream, data) in &op.attachment.replay {
                    data_frame(&mut w, op.hub.tty, *stream, data);
                }
                current = Some(op);
            }
            Ok(OutMsg::Proxy(op)) => pending = proxy(&mut w, op, &rx, &mut next_ping),
            // The client's `release` ended the proxy op (the reader closed it).
            Ok(OutMsg::EndProxy) => {
                w.frame(opcode::TEXT, envelope::complete(None, true).as_bytes());
            }
            Ok(OutMsg::Close(code, reason)) => {
                let _ = w
                    .conn
                    .stream()
                    .set_write_timeout(Some(Duration::from_secs(5)));
                w.frame(opcode::CLOSE, &ws::close_payload(code, reason));
                break;
            }
            Ok(OutMsg::Gone) | Err(_) => break,
        }
    }
    if let Some(op) = current.take() {
        op.hub.detach(op.attachment.id);
    }
    let _ = done.try_send(());
    let _ = w.conn.stream().shutdown(Shutdown::Both);
}

/// Runs a proxy op (§8.4): the target's bytes out as binary frames, and the reader's
/// requests (pongs, texts) in between, until the target ends or fails, the client releases
/// the op, or the connection ends. Returns the request that stopped it, for the main loop.
fn proxy(
    w: &mut Writer,
    op: ProxyOp,
    rx: &Receiver<OutMsg>,
    next_ping: &mut Instant,
) -> Option<OutMsg> {
    let mut stop = None;
    let end = op.relay.pump(w, next_ping, &mut |w| {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                OutMsg::Text(t) => w.frame(opcode::TEXT, t.as_bytes()),
                OutMsg::Binary(b) => w.frame(opcode::BINARY, &b),
                OutMsg::Pong(p) => w.frame(opcode::PONG, &p),
                other => {
                    stop = Some(other);
                    return false;
                }
            }
        }
        true
    });
    op.relay.close_target();
    drop(op.activity);
    let end = match end {
        PumpEnd::Finished | PumpEnd::Stopped => envelope::complete(None, true),
        PumpEnd::TargetFailed(why) => envelope::error(
            &why,
            Some(&serde_json::json!({ "code": "target_failed" })),
            true,
        ),
        PumpEnd::Broken => return stop,
    };
    // Still open: the op ended here first (a `release` crossing it finds it closed). Closed:
    // the reader's `EndProxy` is queued (or stopped the pump) and the main loop ends it.
    if op.open.swap(false, Ordering::SeqCst) {
        w.frame(opcode::TEXT, end.as_bytes());
    }
    stop
}

/// The exit report (binary `0x03` frame, or the text `exit` on a terminal), then the end of
/// the op.
fn end_exec(w: &mut Writer, op: &OpStart, result: Result<u8, &str>, busy: &AtomicBool) {
    op.hub.detach(op.attachment.id);
    // The exit report and the op's end go out in one write: one segment, one wake-up of
    // the client, which waits for both.
    let mut frames = Vec::new();
    let end = match result {
        Ok(code) => {
            frames = if op.hub.tty {
                let exit = serde_json::json!({"type": "exit", "exit_code": code}).to_string();
                ws::encode_frame(opcode::TEXT, &[exit.as_bytes()])
            } else {
                ws::encode_frame(opcode::BINARY, &[&[0x03, code]])
            };
            envelope::complete(Some(code), op.prefixed)
        }
        Err(message) => envelope::error(message, None, op.prefixed),
    };
    frames.extend_from_slice(&ws::encode_frame(opcode::TEXT, &[end.as_bytes()]));
    busy.store(false, Ordering::SeqCst);
    w.write(&frames);
}

/// One output chunk: raw on a terminal, behind its stream id otherwise.
fn data_frame(w: &mut Writer, tty: bool, stream: u8, data: &[u8]) {
    if tty {
        w.frame(opcode::BINARY, data);
    } else {
        w.frame_of(opcode::BINARY, &[&[stream], data]);
    }
}

struct Writer {
    conn: Arc<Conn>,
    broken: bool,
}

impl Writer {
    /// One frame whose payload is `parts` concatenated, written without joining them.
    fn frame_of(&mut self, op: u8, parts: &[&[u8]]) {
        if !self.broken && ws::write_frame(&mut self.conn.stream(), op, parts).is_err() {
            self.fail();
        }
    }

    /// A write failed: nothing more goes out, and the connection is cut.
    fn fail(&mut self) {
        self.broken = true;
        let _ = self.conn.stream().shutdown(Shutdown::Both);
    }
}

impl ClientOut for Writer {
    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if !self.broken && self.conn.stream().write_all(bytes).is_err() {
            self.fail();
        }
    }

    fn broken(&self) -> bool {
        self.broken
    }
}
