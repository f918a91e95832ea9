//! A connected proxy's bytes, both ways (PROTOCOL.md §10.4), until both sides are done.
//!
//! Two threads, both ending with the tunnel:
//!
//! - the **connection thread** (the worker that ran the session) reads client frames and
//!   writes their bytes to the target with blocking writes: a target that reads slowly
//!   stops this thread, which stops reading the client, whose TCP window then fills — the
//!   backpressure. An empty binary frame (with half-close) shuts the target's write side.
//! - the **output thread** is the only writer of the client socket: it waits in `poll(2)`
//!   on the target and on an eventfd the connection thread wakes it with, reads up to
//!   [`CHUNK`] from the target into a buffer with room for the frame header in front and
//!   writes the frame from there in one `write` (no copy); it also sends pongs, a ping
//!   every [`PING_EVERY`], and the close frame. A client that reads slowly blocks this
//!   thread, which stops reading the target.
//!
//! Memory is one [`CHUNK`] buffer out and one client message in (at most
//! [`ws::MAX_MESSAGE`], growing only with bytes that actually arrived) per tunnel; queues
//! between the threads are bounded.
//!
//! Ending: without half-close, the target's EOF closes the WebSocket (1000) at once. With
//! it, the target's EOF is an empty binary frame, the client's empty binary frame shuts
//! the target's write side, and the close (1000) follows when both have happened. A target
//! error (reset) closes with 1011 and the error as reason. A client close or a vanished
//! client ends the target connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::exec::ExecControl;
use crate::net::ws::{self, close_code, opcode, Message, MessageReader, ReadError};
use crate::state::{Conn, State};
use crate::sys;

/// Bytes read from the target per frame.
const CHUNK: usize = 256 * 1024;
/// Server ping interval (the exec's), so idle tunnels survive NATs and proxies.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long to wait for the client's close after ours, and for our close to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Close code for a target connection that failed (not a clean end): internal error.
const TARGET_FAILED: u16 = 1011;
/// TCP keepalive on the client connection: a client that vanished while the tunnel is idle
/// is noticed within idle + interval × probes (45 s), as for an exec.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 6;

/// Turns TCP keepalive on for the client's connection (best effort).
pub(super) fn keepalive(stream: &TcpStream) {
    let _ = sys::socket::set_tcp_keepalive(
        stream.as_fd(),
        KEEPALIVE_IDLE,
        KEEPALIVE_INTERVAL,
        KEEPALIVE_PROBES,
    );
}

/// Requests from the connection thread (or the server, at shutdown) to the output thread.
enum Ctrl {
    Pong(Vec<u8>),
    /// Send a close frame with this code and reason (unless ours is out), then stop.
    Close(u16, &'static str),
    /// The client is gone: stop.
    Gone,
}

/// What both threads see.
struct Shared {
    conn: Arc<Conn>,
    target: TcpStream,
    /// Wakes the output thread out of `poll`.
    wake: OwnedFd,
    /// The client sent its end-of-stream (half-close only).
    client_done: AtomicBool,
}

impl Shared {
    fn notify(&self) {
        // Non-blocking eventfd: failure only means the counter is already non-zero.
        let _ = sys::fd::write(self.wake.as_fd(), &1u64.to_ne_bytes());
    }

    fn drain(&self) {
        let mut n = [0u8; 8];
        let _ = sys::fd::read(self.wake.as_fd(), &mut n);
    }

    /// Ends both connections: wakes every thread blocked on either.
    fn cut(&self) {
        let _ = self.target.shutdown(Shutdown::Both);
        let _ = self.conn.stream().shutdown(Shutdown::Both);
    }
}

/// Relays between the client (`conn`, read through `reader`) and `target` until the
/// tunnel ends.
pub(super) fn run(
    state: &State,
    conn: Arc<Conn>,
    mut reader: MessageReader<&TcpStream>,
    target: TcpStream,
    half_close: bool,
) {
    let wake = match sys::fd::eventfd() {
        Ok(w) => w,
        Err(_) => {
            let _ = target.shutdown(Shutdown::Both);
            let _ = conn.stream().shutdown(Shutdown::Both);
            return;
        }
    };
    let shared = Arc::new(Shared {
        conn,
        target,
        wake,
        client_done: AtomicBool::new(false),
    });
    let (ctrl_tx, ctrl_rx) = bounded::<Ctrl>(16);
    let (done_tx, done_rx) = bounded::<()>(1);
    // Registered before the output thread starts: a shutdown closes the tunnel with 1001.
    let registration = {
        let (ctrl, shared) = (ctrl_tx.clone(), shared.clone());
        let going_away = move || {
            let _ = ctrl.try_send(Ctrl::Close(close_code::GOING_AWAY, "server shutting down"));
            shared.notify();
        };
        state.add_exec(ExecControl::new(going_away, done_rx.clone()))
    };
    let out = Output {
        shared: shared.clone(),
        ctrl: ctrl_rx,
        done: done_tx,
        half_close,
        broken: false,
        closed: false,
    };
    let spawned = std::thread::Builder::new()
        .name("sprites-proxy-out".into())
        .stack_size(128 * 1024)
        .spawn(move || out.run());
    if spawned.is_err() {
        state.remove_exec(registration);
        shared.cut();
        return;
    }

    let to_out = |msg: Ctrl| {
        let sent = ctrl_tx.try_send(msg).is_ok();
        shared.notify();
        sent
    };
    let mut target_broken = false;
    let close = loop {
        match reader.read_message() {
            Ok(Message::Binary(data)) if data.is_empty() => {
                if half_close && !shared.client_done.swap(true, Ordering::SeqCst) {
                    let _ = shared.target.shutdown(Shutdown::Write);
                    // The output thread closes once the target is done too.
                    shared.notify();
                }
            }
            Ok(Message::Binary(data)) => {
                // After a write failed (the target stopped reading for good) or after the
                // client's own end-of-stream, bytes have nowhere to go.
                if !target_broken && !shared.client_done.load(Ordering::SeqCst) {
                    target_broken = (&shared.target).write_all(&data).is_err();
                }
            }
            // Clients have nothing to say in text after the init message.
            Ok(Message::Text(_)) | Ok(Message::Pong) => {}
            Ok(Message::Ping(payload)) => {
                // A pong dropped while the output thread is backed up is harmless.
                to_out(Ctrl::Pong(payload));
            }
            Ok(Message::Close(code)) => break Some((ws::reply_close_code(code), "")),
            Err(ReadError::Protocol(code, reason)) => break Some((code, reason)),
            Err(ReadError::Eof) | Err(ReadError::Io) => break None,
        }
    };
    match close {
        Some((code, reason)) => {
            if to_out(Ctrl::Close(code, reason)) {
                // Bounded: the output thread writes the close (with a write timeout) or ends.
                let _ = done_rx.recv_timeout(CLOSE_WAIT);
            }
        }
        None => {
            to_out(Ctrl::Gone);
        }
    }
    state.remove_exec(registration);
    shared.cut();
}

/// The output thread: target → client, plus every other write to the client.
struct Output {
    shared: Arc<Shared>,
    ctrl: Receiver<Ctrl>,
    /// Signalled once our close frame is out (or we stopped without one).
    done: Sender<()>,
    half_close: bool,
    /// A write to the client failed: write nothing more.
    broken: bool,
    /// Our close frame is out: write nothing more.
    closed: bool,
}

impl Output {
    fn write(&mut self, bytes: &[u8]) {
        if self.broken || self.closed {
            return;
        }
        if self.shared.conn.stream().write_all(bytes).is_err() {
            self.broken = true;
            self.shared.cut();
        }
    }

    fn frame(&mut self, op: u8, payload: &[u8]) {
        if !(self.broken || self.closed) {
            self.write(&ws::encode_frame(op, &[payload]));
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if !(self.broken || self.closed) {
            // The client may not be reading: the close must not wait forever.
            let _ = self
                .shared
                .conn
                .stream()
                .set_write_timeout(Some(CLOSE_WAIT));
            self.frame(opcode::CLOSE, &ws::close_payload(code, reason));
            self.closed = true;
        }
        let _ = self.done.try_send(());
    }

    /// Handles queued requests; false once the thread must stop.
    fn handle_ctrl(&mut self) -> bool {
        while let Ok(msg) = self.ctrl.try_recv() {
            match msg {
                Ctrl::Pong(p) => self.frame(opcode::PONG, &p),
                Ctrl::Close(code, reason) => {
                    self.close(code, reason);
                    return false;
                }
                Ctrl::Gone => return false,
            }
        }
        true
    }

    fn run(mut self) {
        let mut buf = vec![0u8; ws::MAX_HEADER + CHUNK];
        let mut target_eof = false;
        let mut next_ping = Instant::now() + PING_EVERY;
        loop {
            if !self.handle_ctrl() || self.broken {
                return;
            }
            let client_done = self.shared.client_done.load(Ordering::SeqCst);
            if target_eof && (!self.half_close || client_done) {
                self.close(close_code::NORMAL, "");
                return self.linger();
            }
            let mut fds = [
                pollfd(self.shared.wake.as_raw_fd()),
                pollfd(if target_eof {
                    -1 // ignored by poll
                } else {
                    self.shared.target.as_raw_fd()
                }),
            ];
            let left = next_ping.saturating_duration_since(Instant::now());
            if poll(&mut fds, left).is_err() {
                self.shared.cut();
                return;
            }
            if Instant::now() >= next_ping {
                self.frame(opcode::PING, b"");
                next_ping = Instant::now() + PING_EVERY;
            }
            if fds[0].revents != 0 {
                self.shared.drain();
            }
            if fds[1].revents == 0 {
                continue;
            }
            match (&self.shared.target).read(&mut buf[ws::MAX_HEADER..]) {
                Ok(0) => {
                    target_eof = true;
                    if self.half_close {
                        self.frame(opcode::BINARY, b"");
                    }
                }
                Ok(n) => self.data(&mut buf, n),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    let reason = format!("target connection failed: {e}");
                    let reason = &reason[..reason.len().min(120)];
                    let _ = self
                        .shared
                        .conn
                        .stream()
                        .set_write_timeout(Some(CLOSE_WAIT));
                    self.frame(opcode::CLOSE, &ws::close_payload(TARGET_FAILED, reason));
                    self.closed = true;
                    let _ = self.done.try_send(());
                    return self.linger();
                }
            }
        }
    }

    /// Writes `n` bytes that sit at `buf[MAX_HEADER..]` as one binary frame, its header
    /// put into the room in front.
    fn data(&mut self, buf: &mut [u8], n: usize) {
        let mut hdr = [0u8; ws::MAX_HEADER];
        let h = ws::header_into(opcode::BINARY, n, &mut hdr);
        let start = ws::MAX_HEADER - h;
        buf[start..ws::MAX_HEADER].copy_from_slice(&hdr[start..]);
        if let Some(frame) = buf.get(start..ws::MAX_HEADER + n) {
            let frame: &[u8] = frame;
            self.write(frame);
        }
    }

    /// After our close: gives the client [`CLOSE_WAIT`] to answer (the connection thread
    /// reads it and tells us), then cuts the connection.
    fn linger(&mut self) {
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            match self.ctrl.try_recv() {
                Ok(Ctrl::Close(..)) | Ok(Ctrl::Gone) => return,
                Ok(Ctrl::Pong(_)) => continue,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.broken {
                self.shared.cut();
                return;
            }
            let mut fds = [pollfd(self.shared.wake.as_raw_fd())];
            if poll(&mut fds, left).is_err() {
                self.shared.cut();
                return;
            }
            if fds[0].revents != 0 {
                self.shared.drain();
            }
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// poll(2) with a timeout rounded up to whole milliseconds; EINTR counts as a wake-up.
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
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
