//! A connected proxy's bytes, both ways (PROTOCOL.md §10.4, §8.4), until both sides are done.
//!
//! [`Relay`] holds one target connection and is driven by two threads:
//!
//! - the thread that reads the client's frames hands each binary frame to
//!   [`Relay::client_frame`], which writes it to the target with a blocking write: a target
//!   that reads slowly stops this thread, which stops reading the client, whose TCP window
//!   then fills — the backpressure. An empty binary frame (with half-close) shuts the
//!   target's write side.
//! - the only writer of the client socket runs [`Relay::pump`]: it waits in `poll(2)` on
//!   the target and on an eventfd the other thread wakes it with, reads up to [`CHUNK`] from
//!   the target into a buffer with room for the frame header in front and writes the frame
//!   from there in one `write` (no copy); between reads it does the writer's other duties
//!   (pongs, pings every [`PING_EVERY`], queued messages) through a callback. A client that
//!   reads slowly blocks this thread, which stops reading the target.
//!
//! Two drivers: a `/proxy` tunnel ([`run`]: the connection's worker reads, an output thread
//! of its own pumps, and the end is a close frame) and a proxy operation on a control
//! connection (`control/`: its reader and its writer thread drive the relay, and the end is
//! `op.complete`, the connection staying open).
//!
//! Memory is one [`CHUNK`] buffer out and one client message in (at most
//! [`ws::MAX_MESSAGE`], growing only with bytes that actually arrived) per relay; queues
//! between the threads are bounded.
//!
//! Ending: without half-close, the target's EOF ends the relay at once (after all of its
//! bytes). With it, the target's EOF is an empty binary frame, the client's empty binary
//! frame shuts the target's write side, and the relay ends when both have happened. A
//! target error (reset) ends it as failed.

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
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
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
pub(crate) fn keepalive(stream: &TcpStream) {
    let _ = sys::socket::set_tcp_keepalive(
        stream.as_fd(),
        KEEPALIVE_IDLE,
        KEEPALIVE_INTERVAL,
        KEEPALIVE_PROBES,
    );
}

/// A wake-up signal for the thread in [`Relay::pump`] (an eventfd): whoever queues
/// something for that thread notifies it.
pub(crate) struct Wake(OwnedFd);

impl Wake {
    pub(crate) fn new() -> io::Result<Wake> {
        sys::fd::eventfd().map(Wake)
    }

    pub(crate) fn notify(&self) {
        // Non-blocking eventfd: failure only means the counter is already non-zero.
        let _ = sys::fd::write(self.0.as_fd(), &1u64.to_ne_bytes());
    }

    fn drain(&self) {
        let mut n = [0u8; 8];
        let _ = sys::fd::read(self.0.as_fd(), &mut n);
    }
}

/// The writer side of the client connection, as the pump needs it.
pub(crate) trait ClientOut {
    /// Writes `bytes` (whole frames); on failure, marks the connection broken and cuts it.
    fn write(&mut self, bytes: &[u8]);
    /// A write failed: nothing more can be sent.
    fn broken(&self) -> bool;
    /// One frame.
    fn frame(&mut self, op: u8, payload: &[u8]) {
        if !self.broken() {
            self.write(&ws::encode_frame(op, &[payload]));
        }
    }
}

/// How [`Relay::pump`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The target's end-of-stream is out (and, with half-close, the client's has come).
    Finished,
    /// The target connection failed: the error, for the client.
    TargetFailed(String),
    /// The callback asked to stop.
    Stopped,
    /// A write to the client failed.
    Broken,
}

/// One target connection and what the two threads driving it share.
pub(crate) struct Relay {
    target: TcpStream,
    wake: Arc<Wake>,
    half_close: bool,
    /// The client sent its end-of-stream (half-close only).
    client_done: AtomicBool,
    /// A write to the target failed: later client bytes have nowhere to go.
    target_broken: AtomicBool,
    /// The relay is over: client bytes are discarded.
    ended: AtomicBool,
}

impl Relay {
    /// A relay to `target`; `wake` wakes the thread in [`pump`](Self::pump).
    pub(crate) fn new(target: TcpStream, half_close: bool, wake: Arc<Wake>) -> Relay {
        Relay {
            target,
            wake,
            half_close,
            client_done: AtomicBool::new(false),
            target_broken: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// One binary frame from the client: bytes for the target, or (empty, with half-close)
    /// the client's end-of-stream. Blocks while the target does not read.
    pub(crate) fn client_frame(&self, data: &[u8]) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        if data.is_empty() {
            if self.half_close && !self.client_done.swap(true, Ordering::SeqCst) {
                let _ = self.target.shutdown(Shutdown::Write);
                // The pump ends once the target is done too.
                self.wake.notify();
            }
            return;
        }
        // After a write failed (the target stopped reading for good) or after the client's
        // own end-of-stream, bytes have nowhere to go.
        if !self.target_broken.load(Ordering::SeqCst) && !self.client_done.load(Ordering::SeqCst) {
            let failed = (&self.target).write_all(data).is_err();
            if failed {
                self.target_broken.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Ends the relay: closes the target connection (which wakes a blocked
    /// [`client_frame`](Self::client_frame)); later client bytes are discarded.
    pub(crate) fn close_target(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let _ = self.target.shutdown(Shutdown::Both);
    }

    /// Target → client until the relay ends. `on_wake` runs first and whenever the wake
    /// signal fires (the writer's other duties); it returns false to stop. `next_ping` is
    /// the writer's ping schedule, kept across calls.
    pub(crate) fn pump(
        &self,
        out: &mut dyn ClientOut,
        next_ping: &mut Instant,
        on_wake: &mut dyn FnMut(&mut dyn ClientOut) -> bool,
    ) -> PumpEnd {
        let mut buf = vec![0u8; ws::MAX_HEADER + CHUNK];
        let mut target_eof = false;
        let mut woken = true;
        loop {
            if woken && !on_wake(out) {
                return PumpEnd::Stopped;
            }
            if out.broken() {
                return PumpEnd::Broken;
            }
            let client_done = self.client_done.load(Ordering::SeqCst);
            if target_eof && (!self.half_close || client_done) {
                return PumpEnd::Finished;
            }
            let mut fds = [
                pollfd(self.wake.0.as_raw_fd()),
                pollfd(if target_eof {
                    -1 // ignored by poll
                } else {
                    self.target.as_raw_fd()
                }),
            ];
            let left = next_ping.saturating_duration_since(Instant::now());
            if let Err(e) = poll(&mut fds, left) {
                return PumpEnd::TargetFailed(format!("waiting for the target: {e}"));
            }
            if Instant::now() >= *next_ping {
                out.frame(opcode::PING, b"");
                *next_ping = Instant::now() + PING_EVERY;
            }
            woken = fds[0].revents != 0;
            if woken {
                self.wake.drain();
            }
            if fds[1].revents == 0 {
                continue;
            }
            match (&self.target).read(&mut buf[ws::MAX_HEADER..]) {
                Ok(0) => {
                    target_eof = true;
                    if self.half_close {
                        out.frame(opcode::BINARY, b"");
                    }
                }
                Ok(n) => data_frame(out, &mut buf, n),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(e) => return PumpEnd::TargetFailed(format!("target connection failed: {e}")),
            }
        }
    }
}

/// Writes `n` bytes that sit at `buf[MAX_HEADER..]` as one binary frame, its header put
/// into the room in front.
fn data_frame(out: &mut dyn ClientOut, buf: &mut [u8], n: usize) {
    let mut hdr = [0u8; ws::MAX_HEADER];
    let h = ws::header_into(opcode::BINARY, n, &mut hdr);
    let start = ws::MAX_HEADER - h;
    buf[start..ws::MAX_HEADER].copy_from_slice(&hdr[start..]);
    if let Some(frame) = buf.get(start..ws::MAX_HEADER + n) {
        out.write(frame);
    }
}

/// Requests from the connection thread (or the server, at shutdown) to the output thread
/// of a `/proxy` tunnel.
enum Ctrl {
    Pong(Vec<u8>),
    /// Send a close frame with this code and reason (unless ours is out), then stop.
    Close(u16, &'static str),
    /// The client is gone: stop.
    Gone,
}

/// The client connection of a `/proxy` tunnel, written by its output thread.
struct ConnOut {
    conn: Arc<Conn>,
    /// A write to the client failed: write nothing more.
    broken: bool,
    /// Our close frame is out: write nothing more.
    closed: bool,
}

impl ClientOut for ConnOut {
    fn write(&mut self, bytes: &[u8]) {
        if self.broken || self.closed {
            return;
        }
        if self.conn.stream().write_all(bytes).is_err() {
            self.broken = true;
            let _ = self.conn.stream().shutdown(Shutdown::Both);
        }
    }

    fn broken(&self) -> bool {
        self.broken || self.closed
    }
}

/// Relays a `/proxy` tunnel between the client (`conn`, read through `reader`) and
/// `target` until it ends: the target's end closes the WebSocket (1000), its failure with
/// 1011, and a client close or a vanished client ends the target connection.
pub(super) fn run(
    state: &State,
    conn: Arc<Conn>,
    mut reader: MessageReader<&TcpStream>,
    target: TcpStream,
    half_close: bool,
) {
    let cut = |target: &TcpStream| {
        let _ = target.shutdown(Shutdown::Both);
        let _ = conn.stream().shutdown(Shutdown::Both);
    };
    let wake = match Wake::new() {
        Ok(w) => Arc::new(w),
        Err(_) => return cut(&target),
    };
    let relay = Arc::new(Relay::new(target, half_close, wake.clone()));
    let (ctrl_tx, ctrl_rx) = bounded::<Ctrl>(16);
    let (done_tx, done_rx) = bounded::<()>(1);
    // Registered before the output thread starts: a shutdown closes the tunnel with 1001.
    let registration = {
        let (ctrl, wake) = (ctrl_tx.clone(), wake.clone());
        let going_away = move || {
            let _ = ctrl.try_send(Ctrl::Close(close_code::GOING_AWAY, "server shutting down"));
            wake.notify();
        };
        state.add_exec(ExecControl::new(going_away, done_rx.clone()))
    };
    let out = Output {
        relay: relay.clone(),
        wake: wake.clone(),
        client: ConnOut {
            conn: conn.clone(),
            broken: false,
            closed: false,
        },
        ctrl: ctrl_rx,
        done: done_tx,
    };
    let spawned = std::thread::Builder::new()
        .name("sprites-proxy-out".into())
        .stack_size(128 * 1024)
        .spawn(move || out.run());
    if spawned.is_err() {
        state.remove_exec(registration);
        return cut(&relay.target);
    }

    let to_out = |msg: Ctrl| {
        let sent = ctrl_tx.try_send(msg).is_ok();
        wake.notify();
        sent
    };
    let close = loop {
        match reader.read_message() {
            Ok(Message::Binary(data)) => relay.client_frame(&data),
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
    cut(&relay.target);
}

/// The output thread of a `/proxy` tunnel: target → client, plus every other write to the
/// client.
struct Output {
    relay: Arc<Relay>,
    wake: Arc<Wake>,
    client: ConnOut,
    ctrl: Receiver<Ctrl>,
    /// Signalled once our close frame is out (or we stopped without one).
    done: Sender<()>,
}

impl Output {
    fn close(&mut self, code: u16, reason: &str) {
        if !self.client.broken() {
            // The client may not be reading: the close must not wait forever.
            let _ = self
                .client
                .conn
                .stream()
                .set_write_timeout(Some(CLOSE_WAIT));
            self.client
                .frame(opcode::CLOSE, &ws::close_payload(code, reason));
            self.client.closed = true;
        }
        let _ = self.done.try_send(());
    }

    fn run(mut self) {
        let mut next_ping = Instant::now() + PING_EVERY;
        // What the connection thread asked for when it stopped the pump.
        let mut stop: Option<Ctrl> = None;
        let ctrl = self.ctrl.clone();
        let end = self
            .relay
            .pump(&mut self.client, &mut next_ping, &mut |client| {
                while let Ok(msg) = ctrl.try_recv() {
                    match msg {
                        Ctrl::Pong(p) => client.frame(opcode::PONG, &p),
                        other => {
                            stop = Some(other);
                            return false;
                        }
                    }
                }
                true
            });
        match end {
            PumpEnd::Finished => {
                self.close(close_code::NORMAL, "");
                self.linger();
            }
            PumpEnd::TargetFailed(reason) => {
                let reason = &reason[..reason.len().min(120)];
                self.close(TARGET_FAILED, reason);
                self.linger();
            }
            PumpEnd::Stopped => {
                if let Some(Ctrl::Close(code, reason)) = stop {
                    self.close(code, reason);
                }
            }
            PumpEnd::Broken => self.relay.close_target(),
        }
        let _ = self.done.try_send(());
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
            if left.is_zero() || self.client.broken {
                return self.cut();
            }
            let mut fds = [pollfd(self.wake.0.as_raw_fd())];
            if poll(&mut fds, left).is_err() {
                return self.cut();
            }
            if fds[0].revents != 0 {
                self.wake.drain();
            }
        }
    }

    fn cut(&self) {
        self.relay.close_target();
        let _ = self.client.conn.stream().shutdown(Shutdown::Both);
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
