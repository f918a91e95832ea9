//! Control connections (PROTOCOL.md §8): `GET /v1/sprites/{name}/control`, one long-lived
//! WebSocket that carries operations **one at a time** — `exec` (an attach when its args
//! carry `id`) and the `fs.*` operations — so that clients pay the connection setup once
//! and each later operation costs one round trip.
//!
//! - [`envelope`]: which text frames start and end operations (`control:` prefix, both
//!   args dialects);
//! - [`out`]: the writer thread, the only writer of the socket;
//! - [`fs`]: the filesystem operations;
//! - here: the connection's reader (the worker thread that accepted the upgrade), which
//!   starts operations and routes the client's frames to the running one.
//!
//! A proxy op (`op.start` with `op: "proxy"`, or Go's `{"type":"start","operation":"proxy"}`)
//! connects to its target from inside the sprite as `/proxy` does (`tunnel/`), then the
//! reader writes the client's binary frames to the target and the writer relays the
//! target's bytes ([`Relay`]); it ends on the client's `release`, or when the target ends,
//! with `op.complete`, and the connection is idle again.
//!
//! An exec over control runs as a [`Hub`] session (the machinery of detachable sessions):
//! the writer forwards its output as an attachment and, on exit, sends the exit report
//! and `op.complete`. A non-detachable exec is killed when its connection ends before it
//! exits, as on a direct exec socket. Filesystem operations run on the reader itself: the
//! connection is busy until their answer is out.

mod envelope;
mod fs;
mod out;

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use serde::Deserialize;

use self::envelope::ClientText;
use self::out::{OpStart, OutMsg, ProxyOp};
use crate::exec::{self, ExecControl, Hub, Lookup, Registered, SpawnFailure};
use crate::net::http::SPRITE_VERSION;
use crate::net::query::Query;
use crate::net::ws::{self, close_code, Message, MessageReader, ReadError};
use crate::state::{Conn, State};
use crate::tunnel::relay::{Relay, Wake};
use crate::tunnel::{self, request};

/// Silence from the client after which the connection counts as gone (clients ping every
/// 15 s).
const CLIENT_SILENCE: Duration = Duration::from_secs(45);
/// How long to wait for the writer to send a close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// An accepted `/control` upgrade for one sprite.
pub struct ControlSession {
    sprite: String,
    accept_key: String,
}

impl ControlSession {
    /// A control connection to sprite `sprite`; `ws_key` is the client's
    /// `Sec-WebSocket-Key`.
    pub fn new(sprite: &str, ws_key: &str) -> ControlSession {
        ControlSession {
            sprite: sprite.to_owned(),
            accept_key: ws::accept_key(ws_key),
        }
    }
}

impl crate::api::WebSocketSession for ControlSession {
    fn run(self: Box<Self>, state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        state.control_upgrades.fetch_add(1, Ordering::SeqCst);
        *crate::lock(&state.control_upgrades_by_sprite)
            .entry(self.sprite.clone())
            .or_default() += 1;
        let stream = conn.stream();
        let _ = stream.set_read_timeout(Some(CLIENT_SILENCE));
        let _ = stream.set_write_timeout(Some(out::WRITE_STALL));
        let capabilities = if state.signal_capability {
            "X-Sprite-Capabilities: signal\r\n"
        } else {
            ""
        };
        let preamble = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{capabilities}Sprite-Version: {SPRITE_VERSION}\r\n\r\n",
            self.accept_key
        )
        .into_bytes();
        // Wakes the writer out of a proxy op's poll when something is queued for it.
        let wake = match Wake::new() {
            Ok(w) => Arc::new(w),
            Err(_) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        let (tx, rx) = bounded::<OutMsg>(64);
        let (done_tx, done_rx) = bounded::<()>(1);
        let busy = Arc::new(AtomicBool::new(false));
        // Registered before the writer can say anything, so shutdown closes it with 1001.
        let _registered = {
            let (tx, wake) = (tx.clone(), wake.clone());
            let going_away = move || {
                let _ = tx.try_send(OutMsg::Close(
                    close_code::GOING_AWAY,
                    "server shutting down",
                ));
                wake.notify();
            };
            Registered::new(&state, ExecControl::new(going_away, done_rx.clone()))
        };
        let writer = {
            let (conn, busy) = (conn.clone(), busy.clone());
            std::thread::Builder::new()
                .name("sprites-control-out".into())
                .stack_size(128 * 1024)
                .spawn(move || out::run(conn, preamble, rx, busy, done_tx))
        };
        if writer.is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let mut reader = Reader {
            state: &state,
            sprite: &self.sprite,
            tx,
            wake,
            busy,
            current: Current::Idle,
        };
        let close_with = reader.serve(MessageReader::new(stream, leftover));
        reader.end();
        match close_with {
            Some((code, reason)) => {
                if reader.try_send(OutMsg::Close(code, reason)) {
                    let _ = done_rx.recv_timeout(CLOSE_WAIT);
                }
            }
            None => drop(reader.try_send(OutMsg::Gone)),
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// The operation the client's data frames belong to.
enum Current {
    Idle,
    /// An exec or attach; `kill_on_disconnect` for an exec that is not detachable.
    Exec {
        hub: Arc<Hub>,
        kill_on_disconnect: bool,
    },
    /// An `fs.write` waiting for its content frame.
    Write(fs::PendingWrite, bool),
    /// A proxy op (§8.4): the client's binary frames go to its target while it is open
    /// (the flag, shared with the writer: whichever of them clears it sends the op's end).
    Proxy(Arc<Relay>, Arc<AtomicBool>),
}

struct Reader<'a> {
    state: &'a Arc<State>,
    sprite: &'a str,
    tx: Sender<OutMsg>,
    /// Wakes the writer while it relays a proxy op.
    wake: Arc<Wake>,
    /// An exec op is running (cleared by the writer when it ends).
    busy: Arc<AtomicBool>,
    current: Current,
}

/// A client's resize message (§6.5).
#[derive(Deserialize)]
struct Resize {
    #[serde(rename = "type")]
    kind: String,
    rows: u16,
    cols: u16,
}

impl Reader<'_> {
    /// Reads client frames until the connection ends; `Some` = answer with this close.
    fn serve(
        &mut self,
        mut reader: MessageReader<&std::net::TcpStream>,
    ) -> Option<(u16, &'static str)> {
        loop {
            match reader.read_message() {
                Ok(Message::Text(text)) => self.text(&text),
                Ok(Message::Binary(data)) => self.binary(data),
                Ok(Message::Ping(payload)) => drop(self.try_send(OutMsg::Pong(payload))),
                Ok(Message::Pong) => {}
                Ok(Message::Close(code)) => return Some((ws::reply_close_code(code), "")),
                Err(ReadError::Protocol(code, reason)) => return Some((code, reason)),
                Err(ReadError::Eof) | Err(ReadError::Io) => return None,
            }
        }
    }

    /// The connection ended: a running non-detachable exec dies with it.
    fn end(&mut self) {
        if let Current::Proxy(relay, _) = &self.current {
            relay.close_target();
        }
        if let Current::Exec {
            hub,
            kill_on_disconnect: true,
        } = &self.current
        {
            if self.busy.load(Ordering::SeqCst) {
                hub.session.signal(libc::SIGKILL);
            }
        }
        self.current = Current::Idle;
    }

    fn idle(&self) -> bool {
        let proxy_open =
            matches!(&self.current, Current::Proxy(_, open) if open.load(Ordering::SeqCst));
        !self.busy.load(Ordering::SeqCst)
            && !matches!(self.current, Current::Write(..))
            && !proxy_open
    }

    fn send(&self, msg: OutMsg) {
        // Blocks while the writer is backed up: that is the backpressure on a client that
        // sends operations faster than it reads their answers.
        let _ = self.tx.send(msg);
        self.wake.notify();
    }

    /// Queues `msg` unless the writer is backed up; false if it was dropped.
    fn try_send(&self, msg: OutMsg) -> bool {
        let sent = self.tx.try_send(msg).is_ok();
        self.wake.notify();
        sent
    }

    /// Ends the op with `op.error` (`extra`'s fields added to its args).
    fn fail(&self, message: &str, extra: Option<&serde_json::Value>, prefixed: bool) {
        self.send(OutMsg::Text(envelope::error(message, extra, prefixed)));
    }

    fn text(&mut self, text: &str) {
        match envelope::parse(text) {
            ClientText::Start { op, args, prefixed } => {
                if !self.idle() {
                    return self.fail(
                        "an operation is already running on this connection",
                        None,
                        prefixed,
                    );
                }
                self.start(&op, &args, prefixed);
            }
            ClientText::BadStart { message, prefixed } => self.fail(&message, None, prefixed),
            ClientText::GoStart { operation, params } => {
                if operation != "proxy" || !self.state.control_proxy_enabled {
                    return self.fail(
                        &format!("unknown control operation {operation:?}"),
                        None,
                        false,
                    );
                }
                if !self.idle() {
                    return self.fail(
                        "an operation is already running on this connection",
                        None,
                        false,
                    );
                }
                self.proxy(request::parse_params(&params));
            }
            ClientText::Release => self.release(),
            ClientText::OtherEnvelope => {}
            ClientText::Data => {
                self.exec_text(text);
            }
        }
    }

    /// A signal or resize for the running exec.
    fn exec_text(&self, text: &str) -> bool {
        let Current::Exec { hub, .. } = &self.current else {
            return false;
        };
        if !self.busy.load(Ordering::SeqCst) {
            return false;
        }
        if let Ok(r) = serde_json::from_str::<Resize>(text) {
            if r.kind == "resize" && r.rows > 0 && r.cols > 0 {
                hub.resize(r.rows, r.cols);
            }
            return true;
        }
        if let Some(sig) = exec::signal_request(text) {
            if self.state.signal_capability {
                hub.session.signal(sig);
            }
            return true;
        }
        false
    }

    fn binary(&mut self, data: Vec<u8>) {
        if let Current::Write(..) = self.current {
            if let Current::Write(pending, prefixed) =
                std::mem::replace(&mut self.current, Current::Idle)
            {
                self.answer_fs(pending.finish(&data), prefixed);
            }
            return;
        }
        if let Current::Exec { hub, .. } = &self.current {
            if self.busy.load(Ordering::SeqCst) {
                let hub = hub.clone();
                self.stdin(&hub, data);
            }
        } else if let Current::Proxy(relay, _) = &self.current {
            // After the op's end the relay discards what still comes.
            relay.client_frame(&data);
        }
    }

    /// `release` (§8.4): ends a running proxy op — the target connection is closed and the
    /// writer answers `op.complete`. Ignored when no proxy op runs (Go sends it after every
    /// op; a proxy op the target already ended has sent its `op.complete`).
    fn release(&mut self) {
        if let Current::Proxy(relay, open) = &self.current {
            if open.swap(false, Ordering::SeqCst) {
                relay.close_target();
                self.send(OutMsg::EndProxy);
            }
            self.current = Current::Idle;
        }
    }

    /// A proxy op (§8.4): connects to the target from inside the sprite, answers as the
    /// `/proxy` endpoint does (§10.3), and hands the relay to the writer. A failure is that
    /// reply followed by `op.error`; the connection stays usable.
    fn proxy(&mut self, target: Result<request::Target, String>) {
        let refuse = |this: &Self, code: &str, why: &str| {
            this.send(OutMsg::Text(request::error(code, why)));
            let extra = serde_json::json!({ "code": code });
            this.fail(why, Some(&extra), true);
        };
        let target = match target {
            Ok(t) => t,
            Err(why) => return refuse(self, "invalid_request", &why),
        };
        if !self.state.store.contains(self.sprite) {
            let why = format!("sprite {:?} not found", self.sprite);
            return refuse(self, "sprite_not_found", &why);
        }
        // An open proxy is traffic: the sprite stays `running` while it lasts (§14).
        let activity = self.state.lifecycle.hold(self.state, self.sprite);
        let tcp = match tunnel::connect(self.state, self.sprite, &target) {
            Ok(tcp) => tcp,
            Err((code, why)) => return refuse(self, code, &why),
        };
        let reply = request::connected(&target, tcp.peer_addr().ok());
        let relay = Arc::new(Relay::new(tcp, target.half_close, self.wake.clone()));
        let open = Arc::new(AtomicBool::new(true));
        self.current = Current::Proxy(relay.clone(), open.clone());
        self.send(OutMsg::Text(reply));
        self.send(OutMsg::Proxy(ProxyOp {
            relay,
            open,
            activity,
        }));
    }

    /// Stdin for the running exec, in either dialect (§8.3): a lone `0x04` is EOF, a
    /// leading `0x00` marks prefixed stdin (JS, Python, this crate's client), anything
    /// else is raw stdin (Go). A terminal takes raw bytes; the JS SDK sends its resizes and
    /// signals as binary frames, so a binary frame that is exactly such a message counts as
    /// one.
    fn stdin(&self, hub: &Hub, data: Vec<u8>) {
        if hub.tty {
            if data.first() == Some(&b'{')
                && std::str::from_utf8(&data).is_ok_and(|t| self.exec_text(t))
            {
                return;
            }
            if !data.is_empty() {
                hub.write_stdin(data, 0);
            }
            return;
        }
        match data.as_slice() {
            [] | [0x00] => {}
            [0x04] => hub.close_stdin(),
            [0x00, ..] => {
                hub.write_stdin(data, 1);
            }
            _ => {
                hub.write_stdin(data, 0);
            }
        }
    }

    fn start(&mut self, op: &str, args: &Query, prefixed: bool) {
        if op == "proxy" && self.state.control_proxy_enabled {
            // Its failures are §10.3 replies, an unknown sprite's too.
            return self.proxy(request::parse_args(args));
        }
        if !self.state.store.contains(self.sprite) {
            return self.fail(
                &format!("sprite {:?} not found", self.sprite),
                None,
                prefixed,
            );
        }
        match op {
            "exec" => self.exec(args, prefixed),
            "attach" => self.attach(args.get("id").unwrap_or_default(), prefixed),
            op if op.starts_with("fs.") => {
                // Counted by name only for the ops there are: the map stays bounded.
                if let Some(known) = fs::OPS.iter().find(|k| **k == op) {
                    *crate::lock(&self.state.control_fs_ops)
                        .entry(known)
                        .or_default() += 1;
                }
                let step = fs::run(self.state, self.sprite, op, args);
                self.answer_fs(step, prefixed);
            }
            other => self.fail(
                &format!("unknown control operation {other:?}"),
                None,
                prefixed,
            ),
        }
    }

    fn answer_fs(&mut self, step: fs::Step, prefixed: bool) {
        match step {
            fs::Step::Done(result, content) => {
                self.send(OutMsg::Text(result.to_string()));
                if let Some(content) = content {
                    self.send(OutMsg::Binary(content));
                }
                self.send(OutMsg::Text(envelope::complete(None, prefixed)));
            }
            fs::Step::Failed(f) => {
                // The §3.2 body is the op's answer (Go reads it); op.error then ends the op.
                self.send(OutMsg::Text(f.body.to_string()));
                self.fail(&f.message, Some(&f.body), prefixed);
            }
            fs::Step::AwaitContent(pending) => self.current = Current::Write(pending, prefixed),
        }
    }

    fn exec(&mut self, args: &Query, prefixed: bool) {
        if let Some(id) = args.get("id") {
            return self.attach(id, prefixed);
        }
        let params = match exec::parse_params(args) {
            Ok(p) => p,
            Err(e) => return self.fail(&e.0, None, prefixed),
        };
        let (process, session) = match exec::start(self.state, self.sprite, &params) {
            Ok(started) => started,
            Err(e) => {
                let (message, extra) = spawn_failure(&params.program, e);
                return self.fail(&message, Some(&extra), prefixed);
            }
        };
        let (hub, attachment) = match Hub::start(
            self.state,
            process,
            session,
            params.max_run_after_disconnect,
        ) {
            Ok(started) => started,
            Err(e) => return self.fail(&format!("exec: {e}"), None, prefixed),
        };
        self.run_exec(hub, attachment, !params.detachable, prefixed);
    }

    fn attach(&mut self, id: &str, prefixed: bool) {
        let hub = match id
            .parse::<u32>()
            .map(|pid| self.state.sessions.lookup(self.sprite, pid))
        {
            Ok(Lookup::Active(session)) => session.hub(),
            _ => None,
        };
        match hub {
            Some(hub) => {
                let attachment = hub.attach();
                self.run_exec(hub, attachment, false, prefixed)
            }
            None => self.fail(
                &format!("session {id:?} not found or not attachable"),
                None,
                prefixed,
            ),
        }
    }

    fn run_exec(
        &mut self,
        hub: Arc<Hub>,
        attachment: exec::Attachment,
        kill_on_disconnect: bool,
        prefixed: bool,
    ) {
        self.busy.store(true, Ordering::SeqCst);
        self.current = Current::Exec {
            hub: hub.clone(),
            kill_on_disconnect,
        };
        self.send(OutMsg::Op(OpStart {
            hub,
            attachment,
            prefixed,
            kill_on_cut: kill_on_disconnect,
        }));
    }
}

/// The `op.error` of an exec that could not start: the message, code and status of the
/// HTTP error a direct exec gets (§6.1), as `args.error`, `args.code`, `args.status`.
fn spawn_failure(program: &str, e: SpawnFailure) -> (String, serde_json::Value) {
    let (status, code, message) = match e {
        SpawnFailure::SpriteNotFound => (404, "sprite_not_found", "sprite not found".into()),
        SpawnFailure::InvalidDirectory(m) => (400, "invalid_directory", m),
        SpawnFailure::CommandNotFound => (
            400,
            "command_not_found",
            format!("exec: {program:?}: executable file not found in $PATH"),
        ),
        SpawnFailure::PermissionDenied => (
            400,
            "permission_denied",
            format!("exec: {program:?}: permission denied"),
        ),
        SpawnFailure::Failed(e) => (500, "exec_failed", format!("exec: {program:?}: {e}")),
    };
    (
        message,
        serde_json::json!({ "code": code, "status": status }),
    )
}
