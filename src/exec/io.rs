//! The two threads behind every [`Child`](crate::Child): the reader routes what the server sends,
//! the writer sends stdin, signals, resizes and keepalive pings. Both wait on readiness or
//! channels, never on a sleep.

use super::frame::{self, ServerFrame};
use super::pipes::{Chunk, OutputReader, StdinSender};
use super::ports::PortEvent;
use crate::error::{Error, TransportError};
use crate::types::ServerMessage;
use crate::ws::{Incoming, Socket, ws_error};
use crossbeam_channel::{Receiver, Sender, never, select};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Bytes, Message};

/// How often the client pings an idle connection (the official SDKs' value).
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which the connection is presumed dead (the official SDKs' value).
pub(crate) const KEEPALIVE_LIMIT: Duration = Duration::from_secs(45);
/// How long an attach waits for `session_info`, which says how to read what follows: the JS
/// and Python SDKs' bound.
pub(crate) const SESSION_INFO_WAIT: Duration = Duration::from_secs(10);
/// Output an attach holds while it waits for `session_info`. The server sends it first, so a
/// well-behaved one never fills this; a server that sends more before it is broken.
pub(crate) const EARLY_OUTPUT_LIMIT: usize = 1 << 20;

/// Keepalive timing of one connection: ping every `interval`, give up after `limit` of silence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) limit: Duration,
}

impl Keepalive {
    pub(crate) const DEFAULT: Keepalive = Keepalive {
        interval: PING_INTERVAL,
        limit: KEEPALIVE_LIMIT,
    };
}

/// A callback for the server's text messages.
pub(crate) type MessageHandler = Arc<Mutex<dyn FnMut(ServerMessage) + Send>>;

/// Where one output stream goes.
pub(crate) enum Sink {
    Channel(Sender<Chunk>),
    Stdout,
    Stderr,
    Null,
    /// A local file or pipe end.
    File(std::fs::File),
    /// Another remote command's stdin (stdin frames, with backpressure).
    Remote(StdinSender),
    /// Collected whole for a command run on the caller's thread ([`Command::output`]
    /// there: nothing reads concurrently, so nothing can be a channel).
    ///
    /// [`Command::output`]: crate::Command::output
    Collect(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    fn deliver(&mut self, data: Bytes) {
        let delivered = match self {
            // Blocks while the channel is full: that is the backpressure.
            Sink::Channel(tx) => tx.send(Chunk::Data(data)).is_ok(),
            // Local stdout/stderr going away (a closed pipe) must not stop the remote command or
            // lose its exit status; discard from then on, as a shell pipeline would.
            // One lock for write and flush: stdout is line-buffered, and a partial line must
            // not wait for the next chunk to show.
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&data).and_then(|_| out.flush()).is_ok()
            }
            Sink::Stderr => io::stderr().lock().write_all(&data).is_ok(),
            Sink::File(file) => file.write_all(&data).is_ok(),
            // A downstream command that exited drops its stdin: discard from then on, as a
            // pipeline's writer would stop at EPIPE.
            Sink::Remote(tx) => tx.send_all(&data).is_ok(),
            Sink::Collect(all) => {
                all.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&data);
                true
            }
            Sink::Null => true,
        };
        if !delivered {
            *self = Sink::Null;
        }
    }

    fn fail(&mut self, err: &Error) {
        if let Sink::Channel(tx) = self {
            // Never block here: nobody may be reading, and the error also reaches wait().
            let _ = tx.try_send(Chunk::Failed(io::Error::new(
                err.io_kind(),
                err.to_string(),
            )));
        }
    }
}

/// What the server told us about the session, shared with the [`Child`](crate::Child).
#[derive(Default)]
pub(crate) struct Shared {
    session: Mutex<SessionState>,
    session_changed: Condvar,
    pub(crate) timed_out: AtomicBool,
    /// The caller detached: the connection's end is theirs, not a failure to report on the pipes.
    pub(crate) detached: AtomicBool,
    /// Taken by whichever comes first: the reader giving a control connection back to its
    /// pool, or a detach closing it (which must never cut a pooled connection).
    pub(crate) connection_claimed: AtomicBool,
}

#[derive(Default)]
struct SessionState {
    id: Option<String>,
    /// The `tty` flag of the first `session_info`.
    tty: Option<bool>,
    /// Some message arrived: a `session_info` still missing by then is not coming (the
    /// protocol sends it first).
    heard: bool,
    ended: bool,
}

impl Shared {
    fn set_session_info(&self, id: String, tty: bool) {
        let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        state.id = Some(id);
        state.tty.get_or_insert(tty);
        self.session_changed.notify_all();
    }

    fn mark_heard(&self) {
        let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if !state.heard {
            state.heard = true;
            self.session_changed.notify_all();
        }
    }

    fn mark_ended(&self) {
        let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        state.ended = true;
        self.session_changed.notify_all();
    }

    /// The session id: at once if announced, `None` at once if the server has said something
    /// else first (it announces the session first or not at all), else waiting up to `bound`
    /// for its first message.
    pub(crate) fn session_id(&self, bound: Duration) -> Option<String> {
        let state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let (state, _) = self
            .session_changed
            .wait_timeout_while(state, bound, |s| s.id.is_none() && !s.heard && !s.ended)
            .unwrap_or_else(|p| p.into_inner());
        state.id.clone()
    }

    /// The `tty` flag of `session_info`, waiting up to `bound` for it; `None` if the
    /// connection ended first or the bound passed.
    pub(crate) fn session_tty(&self, bound: Duration) -> Option<bool> {
        let state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let (state, _) = self
            .session_changed
            .wait_timeout_while(state, bound, |s| s.tty.is_none() && !s.ended)
            .unwrap_or_else(|p| p.into_inner());
        state.tty
    }
}

/// How the reader interprets binary frames.
pub(crate) enum Framing {
    /// A stream byte first (PROTOCOL.md §6.2).
    Streams,
    /// Raw terminal output (§6.3).
    Terminal,
    /// Not known yet (an attach): held until `session_info` says, for at most
    /// [`SESSION_INFO_WAIT`] and [`EARLY_OUTPUT_LIMIT`] bytes, so that nothing is misread.
    Pending {
        deadline: Instant,
        early: Vec<Bytes>,
        bytes: usize,
    },
}

impl Framing {
    /// The framing of an attach that has not heard `session_info` yet.
    pub(crate) fn pending() -> Framing {
        Framing::Pending {
            deadline: Instant::now() + SESSION_INFO_WAIT,
            early: Vec::new(),
            bytes: 0,
        }
    }
}

/// How a connection ended.
pub(crate) enum Outcome {
    Exited(i32),
    Failed(Error),
}

/// Everything the reader thread needs.
pub(crate) struct Reader {
    pub(crate) socket: Arc<Socket>,
    pub(crate) stdout: Sink,
    pub(crate) stderr: Sink,
    pub(crate) on_message: Option<MessageHandler>,
    /// Typed port notifications, when the caller asked for them.
    pub(crate) ports: Option<Sender<PortEvent>>,
    pub(crate) framing: Framing,
    pub(crate) shared: Arc<Shared>,
    pub(crate) outcome: Sender<Outcome>,
    pub(crate) keepalive: Keepalive,
    /// Dropped when the reader finishes, which tells the writer to stop.
    pub(crate) done: Option<Sender<()>>,
    /// Wakes the local-stdin forwarder, if any, so it stops.
    pub(crate) on_finish: Option<Box<dyn FnOnce() + Send>>,
    /// Set when the command runs over a control connection (PROTOCOL.md §8.3).
    pub(crate) control: Option<ControlOp>,
    /// Pings the server every this long while it is silent: set when there is no writer
    /// thread (a command run on the caller's thread), which otherwise sends them.
    pub(crate) ping_every: Option<Duration>,
}

/// A command's hold on a control connection: given back to the pool once the op has ended
/// cleanly and the writer has stopped, closed otherwise.
pub(crate) struct ControlOp {
    pub(crate) lease: crate::control::Lease,
    /// Disconnects when the writer thread has returned.
    pub(crate) writer_finished: Receiver<()>,
    /// The exit report, once read (the op ends with `op.complete` after it).
    pub(crate) exit: Option<i32>,
    /// `op.complete` or `op.error` was read: nothing of the op is left on the wire.
    pub(crate) ended: bool,
}

/// How long a control op's end (`op.complete`) may lag behind its exit report; the server
/// sends them back to back.
const OP_END_WAIT: Duration = Duration::from_secs(5);
/// How long the reader waits for the writer to stop before it gives a connection back.
const WRITER_STOP_WAIT: Duration = Duration::from_secs(1);

impl Reader {
    pub(crate) fn run(mut self) {
        let outcome = self.read_until_exit();
        if let Some(op) = self.control.take() {
            // The writer must be done with the socket before another command may use it.
            drop(self.done.take());
            let writer_stopped = matches!(
                op.writer_finished.recv_timeout(WRITER_STOP_WAIT),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            );
            if op.ended
                && writer_stopped
                && !self.shared.connection_claimed.swap(true, Ordering::SeqCst)
            {
                op.lease.release();
            }
            // Otherwise dropping the lease closes the connection.
            if let Outcome::Failed(err) = &outcome {
                self.stdout.fail(err);
                self.stderr.fail(err);
            }
            return self.finish(outcome);
        }
        match &outcome {
            // The status is known: close now rather than let the server hold the socket ~5 s.
            Outcome::Exited(_) => self.socket.close_now(1000),
            // The server closed first: send the reply tungstenite queued, then cut.
            Outcome::Failed(err) => {
                if matches!(err, Error::ConnectionClosed { code: Some(_), .. }) {
                    self.socket.close_now(1000);
                } else {
                    self.socket.shutdown();
                }
                // After a detach the pipes just end: nothing failed that the caller did not do.
                if !self.shared.detached.load(Ordering::SeqCst) {
                    self.stdout.fail(err);
                    self.stderr.fail(err);
                }
            }
        }
        self.finish(outcome);
    }

    fn finish(mut self, outcome: Outcome) {
        // Closing the output channels is what gives readers their EOF.
        self.stdout = Sink::Null;
        self.stderr = Sink::Null;
        self.shared.mark_ended();
        if let Some(finish) = self.on_finish.take() {
            finish();
        }
        let _ = self.outcome.send(outcome);
        drop(self.done.take());
    }

    fn read_until_exit(&mut self) -> Outcome {
        let mut last_heard = Instant::now();
        let mut next_ping = self.ping_every.map(|every| Instant::now() + every);
        loop {
            if let Framing::Pending { deadline, .. } = &self.framing
                && Instant::now() >= *deadline
            {
                return Outcome::Failed(no_session_info());
            }
            match self.socket.read() {
                Ok(Incoming::Message(message)) => {
                    if let Some(outcome) = self.handle(message) {
                        return outcome;
                    }
                    // Silence is measured from here: time spent blocked on a full output
                    // channel (a slow local reader) is not the server's silence.
                    last_heard = Instant::now();
                }
                Ok(Incoming::Empty) => {
                    let silent = last_heard.elapsed();
                    if let Some(code) = self.control.as_ref().and_then(|op| op.exit) {
                        // The status is known; only the op's end is missing. Past the bound
                        // the connection is dropped rather than pooled.
                        if silent >= OP_END_WAIT {
                            return Outcome::Exited(code);
                        }
                    }
                    let limit = self.keepalive.limit;
                    if silent >= limit {
                        return Outcome::Failed(Error::KeepaliveTimeout(limit));
                    }
                    let mut bound = limit - silent;
                    if self.control.as_ref().is_some_and(|op| op.exit.is_some()) {
                        bound = bound.min(OP_END_WAIT - silent);
                    }
                    if let Framing::Pending { deadline, .. } = &self.framing {
                        bound = bound.min(deadline.saturating_duration_since(Instant::now()));
                    }
                    if let (Some(at), Some(every)) = (next_ping, self.ping_every) {
                        let now = Instant::now();
                        if now >= at {
                            next_ping = Some(now + every);
                            if let Err(err) = self.socket.send(Message::Ping(Bytes::new())) {
                                return Outcome::Failed(closed_error(err));
                            }
                        }
                        bound = bound
                            .min(next_ping.map_or(every, |at| at.saturating_duration_since(now)));
                    }
                    if let Err(err) = self.socket.wait_readable(bound) {
                        return Outcome::Failed(
                            TransportError::io("waiting for the server", err).into(),
                        );
                    }
                }
                Err(err) => return Outcome::Failed(closed_error(err)),
            }
        }
    }

    /// Routes one message; `Some` when it ends the connection.
    fn handle(&mut self, message: Message) -> Option<Outcome> {
        // A text message is marked after it is parsed: it may be the announcement itself.
        if !matches!(message, Message::Text(_)) {
            self.shared.mark_heard();
        }
        match message {
            Message::Binary(data) => self.binary(data),
            Message::Text(text)
                if self.control.is_some() && text.as_str().starts_with(crate::control::PREFIX) =>
            {
                self.shared.mark_heard();
                self.control_message(text.as_str())
            }
            Message::Text(text) => {
                let message = ServerMessage::parse(text.as_str());
                let mut outcome = None;
                match &message {
                    ServerMessage::SessionInfo { session_id, tty } => {
                        self.shared.set_session_info(session_id.clone(), *tty);
                        outcome = self.settle_framing(*tty);
                    }
                    ServerMessage::Exit { code } => outcome = self.exited(*code),
                    ServerMessage::PortOpened { .. } | ServerMessage::PortClosed { .. } => {
                        if let (Some(tx), Some(event)) =
                            (&self.ports, PortEvent::from_message(&message))
                            && tx.send(event).is_err()
                        {
                            // Nobody listens any more.
                            self.ports = None;
                        }
                    }
                    _ => {}
                }
                self.shared.mark_heard();
                if let Some(handler) = &self.on_message {
                    (handler.lock().unwrap_or_else(|p| p.into_inner()))(message);
                }
                outcome
            }
            // A close before the exit report ends the command's connection now: a server that
            // closes without cutting TCP would otherwise leave us waiting for the keepalive
            // limit.
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (f.code.into(), f.reason.to_string())
                });
                // A terminal session whose server sent no text exit report: the close code
                // is all there is, and 1000 is a normal end (the JS SDK's reading). Any other
                // code says nothing of the status, so it stays an error.
                if code == 1000 && matches!(self.framing, Framing::Terminal) {
                    return Some(Outcome::Exited(0));
                }
                Some(Outcome::Failed(Error::ConnectionClosed {
                    code: Some(code),
                    reason,
                }))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// The exit report: the end on a socket of its own; over a control connection the op's
    /// end (`op.complete`) follows it and is read first, so the connection can be reused.
    fn exited(&mut self, code: i32) -> Option<Outcome> {
        match &mut self.control {
            Some(op) => {
                op.exit.get_or_insert(code);
                None
            }
            None => Some(Outcome::Exited(code)),
        }
    }

    /// A `control:` message: the end of the op, or something to ignore.
    fn control_message(&mut self, text: &str) -> Option<Outcome> {
        let op = self.control.as_mut()?;
        match crate::control::parse_end(text)? {
            crate::control::End::Complete { exit_code } => {
                op.ended = true;
                // The exit report is what counts; a server that only sends `op.complete`
                // says the status there. Neither: no status to report, and none is made up.
                Some(match op.exit.or(exit_code) {
                    Some(code) => Outcome::Exited(code),
                    None => Outcome::Failed(Error::Protocol(
                        "the server ended the command without an exit status".into(),
                    )),
                })
            }
            crate::control::End::Error(err) => {
                op.ended = true;
                Some(match op.exit {
                    Some(code) => Outcome::Exited(code),
                    None => Outcome::Failed(err),
                })
            }
        }
    }

    /// Routes one binary frame by the session's framing.
    fn binary(&mut self, data: Bytes) -> Option<Outcome> {
        match &mut self.framing {
            Framing::Streams => match frame::decode(data) {
                ServerFrame::Stdout(data) => self.stdout.deliver(data),
                ServerFrame::Stderr(data) => self.stderr.deliver(data),
                ServerFrame::Exit(code) => return self.exited(code),
                ServerFrame::Ignored => {}
            },
            Framing::Terminal => {
                if !data.is_empty() {
                    self.stdout.deliver(data);
                }
            }
            Framing::Pending { early, bytes, .. } => {
                *bytes += data.len();
                if *bytes > EARLY_OUTPUT_LIMIT {
                    return Some(Outcome::Failed(Error::Protocol(format!(
                        "the server sent more than {EARLY_OUTPUT_LIMIT} bytes of output before \
                         session_info, which says how to read them"
                    ))));
                }
                early.push(data);
            }
        }
        None
    }

    /// The first `session_info` of an attach fixes the framing; output held until then is
    /// routed now, in order.
    fn settle_framing(&mut self, tty: bool) -> Option<Outcome> {
        if !matches!(self.framing, Framing::Pending { .. }) {
            return None;
        }
        let settled = if tty {
            Framing::Terminal
        } else {
            Framing::Streams
        };
        let Framing::Pending { early, .. } = std::mem::replace(&mut self.framing, settled) else {
            return None;
        };
        early.into_iter().find_map(|data| self.binary(data))
    }
}

/// The error of an attach whose server never said what the session is.
fn no_session_info() -> Error {
    Error::Protocol(format!(
        "the server sent no session_info within {SESSION_INFO_WAIT:?} of the attach"
    ))
}

/// `None` for a normal close (1000), else the close as an error (a watch stream's end).
pub(crate) fn close_reason(frame: Option<tungstenite::protocol::CloseFrame>) -> Option<Error> {
    let (code, reason) = frame.map_or((1005, String::new()), |f| {
        (f.code.into(), f.reason.to_string())
    });
    (code != 1000).then_some(Error::ConnectionClosed {
        code: Some(code),
        reason,
    })
}

/// The error for a connection that ended without an exit report or a close frame.
pub(crate) fn closed_error(err: tungstenite::Error) -> Error {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::ConnectionClosed {
                code: None,
                reason: String::new(),
            }
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Error::ConnectionClosed {
                code: None,
                reason: "connection cut without a close frame".into(),
            }
        }
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            Error::ConnectionClosed {
                code: None,
                reason: e.to_string(),
            }
        }
        other => ws_error(other),
    }
}

/// A request for the writer besides stdin.
pub(crate) enum Control {
    /// Send `{"type":"signal","signal":NAME}`.
    Signal(String),
    /// Send `{"type":"resize","cols":C,"rows":R}`.
    Resize { rows: u16, cols: u16 },
}

/// Where a command's stdin comes from, as the writer thread sees it.
pub(crate) enum StdinSource {
    /// Stdin frames (from a `ChildStdin` or a local forwarder); disconnection means EOF.
    Frames(Receiver<Bytes>),
    /// Another remote command's output, read here so that nothing lingers when this command
    /// exits: its end (or failure) means EOF.
    Upstream(OutputReader),
}

/// Everything the writer thread needs.
pub(crate) struct Writer {
    pub(crate) socket: Arc<Socket>,
    pub(crate) stdin: StdinSource,
    pub(crate) control: Receiver<Control>,
    pub(crate) done: Receiver<()>,
    /// When set, the writer kills the command at this instant and marks it timed out.
    pub(crate) deadline: Option<Instant>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ping_interval: Duration,
    /// Delivers a kill when the server cannot take signals on the socket.
    pub(crate) kill_fallback: Option<Box<dyn Fn() + Send>>,
    /// Stdin bytes go raw (a terminal) rather than behind the stream byte.
    pub(crate) raw_stdin: bool,
    /// The end of the stdin source is sent as `0x04`. Not for a terminal, which has no such
    /// frame (`0x04` there is a typed Ctrl-D), nor for an attachment, whose session other
    /// clients may still be typing into.
    pub(crate) send_eof: bool,
    /// Dropped when the writer returns (a control connection's reader waits for it).
    pub(crate) finished: Option<Sender<()>>,
}

impl Writer {
    pub(crate) fn run(self) {
        let Writer {
            socket,
            stdin,
            mut control,
            done,
            mut deadline,
            shared,
            ping_interval,
            kill_fallback,
            raw_stdin,
            send_eof,
            finished: _finished,
        } = self;
        let eof = || {
            if send_eof {
                socket.send(Message::Binary(frame::stdin_eof()))
            } else {
                Ok(())
            }
        };
        let (mut stdin, mut upstream) = match stdin {
            StdinSource::Frames(rx) => (rx, never()),
            StdinSource::Upstream(mut reader) => {
                // Bytes the caller already took off the channel but did not read yet.
                let pending = reader.take_current();
                if !pending.is_empty() && send_as_stdin(&socket, &pending, raw_stdin).is_err() {
                    return;
                }
                (never(), reader.into_receiver())
            }
        };
        let mut next_ping = Instant::now() + ping_interval;
        loop {
            let now = Instant::now();
            let wake = deadline.map_or(next_ping, |d| d.min(next_ping));
            let sent = select! {
                // Control requests made before a write reach the server before it (a resize
                // then the keystrokes that rely on it): `select!` alone picks at random among
                // ready channels.
                recv(stdin) -> chunk => send_controls(&socket, &control).and_then(|()| match chunk {
                    Ok(chunk) => socket.send(Message::Binary(chunk)),
                    Err(_) => {
                        stdin = never();
                        eof()
                    }
                }),
                recv(upstream) -> chunk => match chunk {
                    Ok(Chunk::Data(data)) => send_as_stdin(&socket, &data, raw_stdin),
                    // The upstream command ended (or its connection failed, which its own
                    // wait() reports): either way, this command's input is over.
                    Ok(Chunk::Failed(_)) | Err(_) => {
                        upstream = never();
                        eof()
                    }
                },
                recv(control) -> request => match request {
                    Ok(request) => send_control(&socket, request),
                    Err(_) => {
                        control = never();
                        Ok(())
                    }
                },
                recv(done) -> _ => return,
                default(wake.saturating_duration_since(now)) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        deadline = None;
                        shared.timed_out.store(true, Ordering::SeqCst);
                        match &kill_fallback {
                            Some(kill) => {
                                kill();
                                Ok(())
                            }
                            None => socket.send(Message::Text(signal_message("KILL").into())),
                        }
                    } else if now >= next_ping {
                        next_ping = now + ping_interval;
                        socket.send(Message::Ping(Bytes::new()))
                    } else {
                        Ok(())
                    }
                },
            };
            if sent.is_err() {
                // The reader sees the same broken socket and reports it; nothing to add here.
                return;
            }
        }
    }
}

/// Sends one control request.
fn send_control(socket: &Socket, request: Control) -> Result<(), tungstenite::Error> {
    let text = match request {
        Control::Signal(name) => signal_message(&name),
        Control::Resize { rows, cols } => resize_message(rows, cols),
    };
    socket.send(Message::Text(text.into()))
}

/// Sends every control request already queued.
fn send_controls(socket: &Socket, control: &Receiver<Control>) -> Result<(), tungstenite::Error> {
    control
        .try_iter()
        .try_for_each(|request| send_control(socket, request))
}

/// Sends `data` as stdin frames of at most [`frame::MAX_STDIN_CHUNK`] bytes: behind the
/// stream byte, or `raw` for a terminal.
fn send_as_stdin(socket: &Socket, data: &[u8], raw: bool) -> Result<(), tungstenite::Error> {
    data.chunks(frame::MAX_STDIN_CHUNK).try_for_each(|piece| {
        let frame = if raw {
            Bytes::copy_from_slice(piece)
        } else {
            frame::stdin(piece)
        };
        socket.send(Message::Binary(frame))
    })
}

/// `{"type":"signal","signal":"TERM"}`.
pub(crate) fn signal_message(name: &str) -> String {
    serde_json::json!({ "type": "signal", "signal": name }).to_string()
}

/// `{"type":"resize","cols":120,"rows":40}` (PROTOCOL.md §6.5).
pub(crate) fn resize_message(rows: u16, cols: u16) -> String {
    serde_json::json!({ "type": "resize", "cols": cols, "rows": rows }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages() {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&resize_message(40, 120)).unwrap(),
            serde_json::json!({"type": "resize", "rows": 40, "cols": 120})
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&signal_message("TERM")).unwrap(),
            serde_json::json!({"type": "signal", "signal": "TERM"})
        );
    }
}
