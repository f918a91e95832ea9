//! An upgraded exec's WebSocket session (PROTOCOL.md §6, non-TTY), from the `101` until
//! it ends.
//!
//! The process was spawned before the `101` ([`super::spawn`]). After the upgrade, one exec
//! uses these threads, all joined to the exec's lifetime:
//!
//! - the **connection thread** (the caller of [`run`]) reads client frames: stdin goes to
//!   the stdin thread, signals go to the process group, pings become pong requests;
//! - the **I/O thread** is the only writer of the socket (the 101 + `session_info`
//!   preamble, output frames, pongs, a ping every 15 s, the exit frame, the close frame), so
//!   the reader never blocks behind a slow client. It also reads both output pipes: it
//!   waits in `poll(2)` on them and on an eventfd that the others use to wake it, reads up
//!   to 64 KiB into one buffer that has room for the frame header in front, and writes the
//!   frame straight from there. Memory is one buffer per exec, and a client that stops
//!   reading stalls the process on a full pipe;
//! - the **waiter** reaps the process and hands over its status; the exit frame is written
//!   only after both pipes reached EOF and the process exited, so it always follows all
//!   output;
//! - with `stdin=true`, the connection thread writes stdin straight into the (non-blocking)
//!   pipe while it has room, and a **stdin thread** writes what does not fit, through a small
//!   bounded channel ([`super::stdin`]), so a process that doesn't read stdin cannot wedge
//!   signal handling for long.
//!
//! If the client goes away before the exit frame, the whole process group is SIGKILLed.
//!
//! While the exec is open it subscribes to its own process tree's port events
//! ([`crate::ports`], `Scope::Session`): the scanner queues them as [`Ctrl::Text`] and wakes
//! the I/O thread, which sends them as text frames until the exit report.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::control::{ExecControl, Registered};
use super::stdin::StdinSink;
use super::{Session, Upgrade};
use crate::net::http::SPRITE_VERSION;
use crate::net::ws::{self, close_code, opcode, Message, MessageReader, ReadError};
use crate::ports;
use crate::signal;
use crate::state::{Conn, State};
use crate::sys;

/// Server ping interval while an exec runs.
pub(super) const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence from the client after which it counts as gone.
pub(super) const CLIENT_SILENCE: Duration = Duration::from_secs(45);
/// How long to wait for the client's close after the exit frame (and for a close reply).
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Bytes read from a pipe per frame.
const CHUNK: usize = 256 * 1024;
/// Output buffer: frame header room + stream byte + data.
const FRAME_BUF: usize = ws::MAX_HEADER + 1 + CHUNK;
/// Pipe capacity we ask the kernel for, so a fast writer is not throttled by 64 KiB pipes.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Non-TTY stream ids (byte 0 of binary frames).
pub(super) mod stream_id {
    pub const STDIN: u8 = 0x00;
    pub const STDOUT: u8 = 0x01;
    pub const STDERR: u8 = 0x02;
    pub const EXIT: u8 = 0x03;
    pub const STDIN_EOF: u8 = 0x04;
}

/// An eventfd that wakes the I/O thread out of `poll` when a control message or the exit
/// status has been queued for it.
pub(super) struct Wake(pub(super) OwnedFd);

impl Wake {
    pub(super) fn new() -> io::Result<Arc<Wake>> {
        Ok(Arc::new(Wake(sys::fd::eventfd()?)))
    }

    pub(super) fn notify(&self) {
        // Adds 1 to the counter (8 bytes, native endian). It cannot block (non-blocking
        // eventfd); failure only means the counter is already non-zero.
        let _ = sys::fd::write(self.0.as_fd(), &1u64.to_ne_bytes());
    }

    pub(super) fn drain(&self) {
        // Reads (and so resets) the counter; non-blocking.
        let mut n = [0u8; 8];
        let _ = sys::fd::read(self.0.as_fd(), &mut n);
    }
}

/// Requests from the reader (or the server, at shutdown) to the I/O thread.
enum Ctrl {
    Pong(Vec<u8>),
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
    /// The client is gone; write nothing more.
    Gone,
    /// Send this text frame (a port event), unless the exit report is out.
    Text(String),
}

/// Runs an upgraded exec on `conn` until it ends. `leftover` = bytes the client sent
/// right behind the upgrade request.
///
/// The connection's one socket is shared (the I/O thread holds a reference to `conn` for
/// its writes, this thread reads): no descriptor is duplicated.
pub fn run(state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>, up: Upgrade) {
    let Upgrade {
        mut process,
        session,
        accept_key,
        detachable: _,
    } = up;
    let pid = session.pid;
    let group = process.group();
    let stdio = process.take_stdio();
    let (stdin, stdout, stderr) = (stdio.stdin, stdio.stdout, stdio.stderr);
    // stdin too: a 64 KiB pipe makes the stdin thread wait for every read of the process.
    if let Some(pipe) = &stdin {
        grow_pipe(pipe.as_fd());
    }
    for fd in [
        stdout.as_ref().map(|p| p.as_fd()),
        stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        grow_pipe(fd);
    }
    let stream = conn.stream();
    let _ = stream.set_read_timeout(Some(CLIENT_SILENCE));

    // Everything that can fail before the exec is live: on failure, kill and reap here.
    let Ok(wake) = Wake::new() else {
        group.signal(libc::SIGKILL);
        process.wait(&mut || session.mark_exited());
        state.sessions.finish(&session);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };

    // Room for pongs and a burst of port events while the client is slow to read.
    let (ctrl_tx, ctrl_rx) = bounded::<Ctrl>(64);
    let (exit_tx, exit_rx) = bounded::<u8>(1);
    let (done_tx, done_rx) = bounded::<()>(1);
    let exit_sent = Arc::new(AtomicBool::new(false));

    // The waiter reaps the process whatever happens to the connection.
    let waiter = {
        let (session, state, wake) = (session.clone(), state.clone(), wake.clone());
        spawn_named("sprites-exec-wait", move || {
            let code = process.wait(&mut || session.mark_exited());
            session.set_exit_code(code);
            state.sessions.finish(&session);
            let _ = exit_tx.send(code);
            wake.notify();
        })
    };
    if waiter.is_err() {
        // The closure (and the process in it) is gone; reap by PID.
        group.signal(libc::SIGKILL);
        session.mark_exited();
        group.reap_orphaned();
        state.sessions.finish(&session);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }

    let capabilities = if state.signal_capability {
        "X-Sprite-Capabilities: signal\r\n"
    } else {
        ""
    };
    let mut preamble = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n{capabilities}\
         Sprite-Version: {SPRITE_VERSION}\r\n\r\n"
    )
    .into_bytes();
    let info = format!(r#"{{"type":"session_info","session_id":"{pid}","tty":false}}"#);
    preamble.extend_from_slice(&ws::encode_frame(opcode::TEXT, &[info.as_bytes()]));

    // Registered before the I/O thread can tell the client anything: a shutdown right after
    // the client saw `session_info` must still close this connection with 1001.
    let _registered = {
        let (ctrl, wake) = (ctrl_tx.clone(), wake.clone());
        let going_away = move || {
            let _ = ctrl.try_send(Ctrl::Close(close_code::GOING_AWAY, "server shutting down"));
            wake.notify();
        };
        Registered::new(&state, ExecControl::new(going_away, done_rx.clone()))
    };
    let io = {
        let io = Io {
            w: Writer {
                sock: conn.clone(),
                broken: false,
                closed: false,
            },
            pipes: [
                stdout.map(|p| (stream_id::STDOUT, p)),
                stderr.map(|p| (stream_id::STDERR, p)),
            ],
            ctrl_rx,
            exit_rx,
            wake: wake.clone(),
            done_tx,
            exit_sent: exit_sent.clone(),
            session: session.clone(),
        };
        spawn_named("sprites-exec-io", move || io.run(preamble))
    };
    if io.is_err() {
        // The waiter still reaps; nobody will write, so just end the connection.
        group.signal(libc::SIGKILL);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    // Port events of this session's own process tree, while the exec is open (best
    // effort: without a scanner thread the exec runs without them).
    let _ports = {
        let (tx, wake) = (ctrl_tx.clone(), wake.clone());
        state
            .ports
            .subscribe(
                &session.sprite,
                &state.store.sprite_dir(&session.sprite),
                ports::Scope::Session(session.host_pid),
                Box::new(move |u: &ports::Update<'_>| {
                    let _ = tx.try_send(Ctrl::Text(u.to_json()));
                    wake.notify();
                }),
            )
            .ok()
    };
    let mut stdin_tx = stdin.and_then(|pipe| {
        StdinSink::start(pipe, |f| spawn_named("sprites-exec-stdin", f).map(drop)).ok()
    });

    let to_io = |msg: Ctrl| {
        let sent = ctrl_tx.try_send(msg).is_ok();
        wake.notify();
        sent
    };
    let mut reader = MessageReader::new(stream, leftover);
    let close_with = loop {
        match reader.read_message() {
            Ok(Message::Binary(data)) => match data.first() {
                Some(&stream_id::STDIN) if data.len() > 1 => {
                    if let Some(tx) = &stdin_tx {
                        if tx.write(data, 1).is_err() {
                            stdin_tx = None; // the process closed its stdin
                        }
                    }
                }
                Some(&stream_id::STDIN_EOF) => stdin_tx = None,
                _ => {} // empty frames and unknown stream ids are ignored
            },
            Ok(Message::Text(text)) => {
                // Without the advertised capability the server does not understand them.
                if let Some(sig) = signal_request(&text).filter(|_| state.signal_capability) {
                    session.signal(sig);
                }
            }
            Ok(Message::Ping(payload)) => {
                // If the I/O thread is backed up, a dropped pong is harmless: the client's
                // next ping (or our own pings) keeps the connection alive.
                to_io(Ctrl::Pong(payload));
            }
            Ok(Message::Pong) => {}
            Ok(Message::Close(code)) => break Some((echo_close_code(code), "")),
            Err(ReadError::Protocol(code, reason)) => break Some((code, reason)),
            Err(ReadError::Eof) | Err(ReadError::Io) => break None,
        }
    };
    drop(stdin_tx);
    if !exit_sent.load(Ordering::SeqCst) {
        // The client left before the exit report: the exec is over for everyone.
        group.signal(libc::SIGKILL);
    }
    match close_with {
        Some((code, reason)) => {
            if to_io(Ctrl::Close(code, reason)) {
                // Wait (bounded) until the I/O thread has sent the close frame.
                let _ = done_rx.recv_timeout(CLOSE_WAIT);
            }
        }
        None => {
            to_io(Ctrl::Gone);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

pub(super) fn spawn_named(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .stack_size(128 * 1024)
        .spawn(f)
}

/// Asks for a bigger pipe so a fast producer does fewer, larger writes. Best effort: the
/// kernel may refuse (per-user pipe limits), which only costs throughput.
pub(super) fn grow_pipe(fd: BorrowedFd<'_>) {
    let _ = sys::fd::set_pipe_size(fd, PIPE_SIZE);
}

/// `{"type":"signal","signal":"TERM"}` → the signal number (names with or without `SIG`,
/// or numbers). Anything else (resize, unknown types, junk) → None.
pub(crate) fn signal_request(text: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "signal" {
        return None;
    }
    match v.get("signal")? {
        serde_json::Value::String(s) => signal::parse(s),
        serde_json::Value::Number(n) => signal::parse(&n.to_string()),
        _ => None,
    }
}

/// The close code to answer a client's close with: its own code when that may be sent on
/// the wire, else 1000.
pub(super) fn echo_close_code(code: Option<u16>) -> u16 {
    match code {
        Some(c @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => c,
        _ => close_code::NORMAL,
    }
}

/// The socket's write side, owned by the I/O thread.
pub(super) struct Writer {
    pub(super) sock: Arc<Conn>,
    /// A write failed: the peer is gone; write nothing more.
    pub(super) broken: bool,
    /// Our close frame is out: write nothing more.
    pub(super) closed: bool,
}

impl Writer {
    pub(super) fn write(&mut self, bytes: &[u8]) {
        if self.broken || self.closed {
            return;
        }
        if self.sock.stream().write_all(bytes).is_err() {
            self.broken = true;
            // Wake the reader too: the exec is over from the client's side.
            let _ = self.sock.stream().shutdown(Shutdown::Both);
        }
    }

    pub(super) fn frame(&mut self, op: u8, payload: &[u8]) {
        self.frame_of(op, &[payload]);
    }

    /// One frame whose payload is `parts` concatenated, written without joining them.
    pub(super) fn frame_of(&mut self, op: u8, parts: &[&[u8]]) {
        if self.broken || self.closed {
            return;
        }
        if ws::write_frame(&mut self.sock.stream(), op, parts).is_err() {
            self.broken = true;
            // Wake the reader too: the exec is over from the client's side.
            let _ = self.sock.stream().shutdown(Shutdown::Both);
        }
    }

    /// Writes an output chunk in place: `buf` holds the stream id at `MAX_HEADER` and the
    /// data after it; the frame header goes into the reserved bytes in front.
    fn data(&mut self, buf: &mut [u8], len: usize) {
        let mut hdr = [0u8; ws::MAX_HEADER];
        let h = ws::header_into(opcode::BINARY, len + 1, &mut hdr);
        let start = ws::MAX_HEADER - h;
        buf[start..ws::MAX_HEADER].copy_from_slice(&hdr[start..]);
        if let Some(frame) = buf.get(start..ws::MAX_HEADER + 1 + len) {
            self.write(frame);
        }
    }

    /// Sends a close frame (bounded by a write timeout, since the client may not be
    /// reading) and stops writing.
    pub(super) fn close(&mut self, code: u16, reason: &str) {
        if !(self.broken || self.closed) {
            let _ = self.sock.stream().set_write_timeout(Some(CLOSE_WAIT));
            self.frame(opcode::CLOSE, &ws::close_payload(code, reason));
            self.closed = true;
        }
    }
}

/// The exec's I/O thread: the only writer of the socket, and the reader of both output
/// pipes. It waits in `poll(2)` on the pipes and the wake fd (no busy loop), reads at most
/// one 64 KiB chunk per ready pipe and writes it as one frame straight from the read
/// buffer. A blocked socket write blocks the pipe reads, which is the backpressure.
struct Io {
    w: Writer,
    /// `(stream id, read end)`; `None` once at EOF.
    pipes: [Option<(u8, OwnedFd)>; 2],
    ctrl_rx: Receiver<Ctrl>,
    exit_rx: Receiver<u8>,
    wake: Arc<Wake>,
    /// Signalled once our close frame is out.
    done_tx: Sender<()>,
    exit_sent: Arc<AtomicBool>,
    session: Arc<Session>,
}

/// What the control messages asked for.
enum Next {
    Continue,
    Stop,
}

impl Io {
    fn run(mut self, preamble: Vec<u8>) {
        self.w.write(&preamble);
        if let Some(code) = self.pump_until_exit() {
            self.finish(code);
        }
    }

    fn handle_ctrl(&mut self) -> Next {
        while let Ok(msg) = self.ctrl_rx.try_recv() {
            match msg {
                Ctrl::Pong(p) => self.w.frame(opcode::PONG, &p),
                Ctrl::Close(code, reason) => {
                    self.w.close(code, reason);
                    let _ = self.done_tx.try_send(());
                    return Next::Stop;
                }
                Ctrl::Gone => return Next::Stop,
                Ctrl::Text(t) => {
                    // After the exit report the session is over for the client.
                    if !self.exit_sent.load(Ordering::SeqCst) {
                        self.w.frame(opcode::TEXT, t.as_bytes());
                    }
                }
            }
        }
        Next::Continue
    }

    /// Forwards output until both pipes are at EOF and the exit status is known. None =
    /// stopped early (client gone, close requested, socket broken).
    fn pump_until_exit(&mut self) -> Option<u8> {
        let mut buf = vec![0u8; FRAME_BUF];
        let mut exit_code = None;
        let mut next_ping = Instant::now() + PING_EVERY;
        loop {
            if let Next::Stop = self.handle_ctrl() {
                return None;
            }
            if self.w.broken {
                return None;
            }
            if exit_code.is_none() {
                exit_code = self.exit_rx.try_recv().ok();
            }
            if self.pipes.iter().all(Option::is_none) {
                if let Some(code) = exit_code {
                    return Some(code);
                }
            }

            let mut fds = [pollfd(self.wake.0.as_raw_fd()), pollfd(-1), pollfd(-1)];
            for (slot, pipe) in fds[1..].iter_mut().zip(&self.pipes) {
                if let Some((_, fd)) = pipe {
                    slot.fd = fd.as_raw_fd(); // negative fds are ignored by poll
                }
            }
            let timeout = next_ping.saturating_duration_since(Instant::now());
            if poll(&mut fds, timeout).is_err() {
                return None;
            }
            if Instant::now() >= next_ping {
                self.w.frame(opcode::PING, b"");
                // The JS SDK never pings and gives up on a socket that brought no message
                // for 45 s (pings are not messages to it); an empty data frame is one, and
                // every client ignores it (PROTOCOL.md §6.2, §6.6).
                self.w.frame(opcode::BINARY, b"");
                next_ping = Instant::now() + PING_EVERY;
            }
            if fds[0].revents != 0 {
                self.wake.drain();
            }
            for i in 0..2 {
                if fds[i + 1].revents == 0 {
                    continue;
                }
                let Some((id, fd)) = &self.pipes[i] else {
                    continue;
                };
                let id = *id;
                match read_fd(fd, &mut buf[ws::MAX_HEADER + 1..]) {
                    Ok(0) | Err(_) => self.pipes[i] = None,
                    Ok(n) => {
                        self.session.note_output(n);
                        buf[ws::MAX_HEADER] = id;
                        self.w.data(&mut buf, n);
                    }
                }
            }
        }
    }

    /// Sends the exit report, then gives the client CLOSE_WAIT to close (clients close as
    /// soon as they have the report) before closing ourselves.
    fn finish(&mut self, code: u8) {
        // Set before writing: a client that closes the instant it sees the exit frame must
        // not make the reader kill the (finished) process group.
        self.exit_sent.store(true, Ordering::SeqCst);
        self.w.frame(opcode::BINARY, &[stream_id::EXIT, code]);
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            if let Next::Stop = self.handle_ctrl() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.w.broken {
                self.w.close(close_code::NORMAL, "");
                let _ = self.w.sock.stream().shutdown(Shutdown::Both);
                return;
            }
            let mut fds = [pollfd(self.wake.0.as_raw_fd())];
            if poll(&mut fds, left).is_err() {
                return;
            }
            if fds[0].revents != 0 {
                self.wake.drain();
            }
        }
    }
}

pub(super) fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// poll(2) with a timeout rounded up to whole milliseconds; EINTR counts as a wake-up.
pub(super) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    if let Err(e) = sys::fd::poll(fds, ms) {
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
    Ok(())
}

pub(super) fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sys::fd::read(fd.as_fd(), buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_messages() {
        assert_eq!(
            signal_request(r#"{"type":"signal","signal":"TERM"}"#),
            Some(libc::SIGTERM)
        );
        assert_eq!(
            signal_request(r#"{"type":"signal","signal":"SIGINT"}"#),
            Some(libc::SIGINT)
        );
        assert_eq!(signal_request(r#"{"type":"signal","signal":9}"#), Some(9));
        assert_eq!(signal_request(r#"{"type":"signal","signal":"NOPE"}"#), None);
        assert_eq!(
            signal_request(r#"{"type":"resize","cols":1,"rows":2}"#),
            None
        );
        assert_eq!(signal_request("not json"), None);
    }

    #[test]
    fn close_code_echo() {
        assert_eq!(echo_close_code(Some(1000)), 1000);
        assert_eq!(echo_close_code(Some(4001)), 4001);
        assert_eq!(echo_close_code(Some(1005)), 1000);
        assert_eq!(echo_close_code(None), 1000);
    }
}
