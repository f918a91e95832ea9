//! The exec over HTTP (PROTOCOL.md §6.9): `POST /v1/sprites/{name}/exec`, the request body
//! streamed to the process's stdin, its output streamed back as the chunks of a `200`
//! response, both at once and in constant memory.
//!
//! Every response chunk is exactly one frame, written with one `write` (the connection has
//! `TCP_NODELAY`): `0x01` + stdout bytes, `0x02` + stderr bytes, at most 16 KiB a frame,
//! and last `0x03` + the exit byte, then the end of the body. The exit frame follows all
//! output (both pipes at EOF and the process reaped), as on the WebSocket.
//!
//! Two threads, both ending with the exec:
//!
//! - the **connection thread** (the worker, [`feed`]) reads the body into the process's
//!   stdin (with `stdin=true`; the body's end is stdin's EOF; without it the process reads
//!   `/dev/null` and a body is read and discarded), then watches the connection, which
//!   carries nothing more. Whenever it waits — for the socket, or for room in a full stdin
//!   pipe — it also waits for the response to end, so it never outlives it;
//! - the **writer** ([`respond`]) writes the whole response: it waits in `poll(2)` on both
//!   output pipes (and on the connection thread's "client gone" eventfd), reads up to one
//!   frame, writes it as one chunk straight from the read buffer, then reaps the process
//!   and writes the exit frame.
//!
//! So a process that writes before it has read all its stdin never deadlocks: the output
//! goes out while the body waits for room in the pipe. The client going away (EOF, reset,
//! a cut body, a failed write, 45 s in which it takes no output, or silence that TCP
//! keepalive finds dead) kills the process group and ends both threads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::api::DuplexResponse;
use crate::net::body::RequestBody;
use crate::net::http::{response_head, write_response, Response};
use crate::runtime::ExecProcess;
use crate::state::State;
use crate::sys;

/// Largest frame (type byte + payload): one HTTP chunk each (§6.9 suggests ≤ 16 KiB).
pub const MAX_FRAME: usize = 16 * 1024;
/// Room in front of a frame for its chunk-size line (`4000\r\n` at most).
const CHUNK_HEAD: usize = 8;
/// Stdin bytes read from the body at a time.
const STDIN_BUF: usize = 64 * 1024;
/// How long a response write may block: a client that takes no output for this long is
/// gone (the WebSocket exec's silence limit).
const CLIENT_STALL: Duration = Duration::from_secs(45);
/// TCP keepalive: a client that vanished without a word while the process is silent is
/// found dead after about 15 s + 6 × 5 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 6;
/// Pipe capacity asked for, as the WebSocket exec does.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Frame types (the first byte of each chunk).
mod frame {
    pub const STDOUT: u8 = 0x01;
    pub const STDERR: u8 = 0x02;
    pub const EXIT: u8 = 0x03;
}

/// A started process whose response is about to be written.
pub struct HttpExec {
    state: Arc<State>,
    process: Box<dyn ExecProcess>,
    session: Arc<Session>,
}

impl HttpExec {
    /// The exec of `process`, registered as `session`.
    pub fn new(state: Arc<State>, process: Box<dyn ExecProcess>, session: Arc<Session>) -> Self {
        HttpExec {
            state,
            process,
            session,
        }
    }
}

/// An eventfd one thread sets and the other waits for in `poll`.
struct Flag(OwnedFd);

impl Flag {
    fn new() -> io::Result<Flag> {
        sys::fd::eventfd().map(Flag)
    }

    fn set(&self) {
        // Non-blocking; a failure means the counter is already set.
        let _ = sys::fd::write(self.0.as_fd(), &1u64.to_ne_bytes());
    }
}

impl DuplexResponse for HttpExec {
    fn run(self: Box<Self>, stream: &TcpStream, body: &mut dyn RequestBody) {
        let HttpExec {
            state,
            mut process,
            session,
        } = *self;
        let stdio = process.take_stdio();
        for pipe in [&stdio.stdout, &stdio.stderr].into_iter().flatten() {
            // Best effort: a refusal costs only throughput.
            let _ = sys::fd::set_pipe_size(pipe.as_fd(), PIPE_SIZE);
        }
        // The interim `100 Continue`, if the client waits for one, goes out now: after
        // this, only the writer writes to the socket.
        let _ = body.read(&mut []);
        let _ = sys::socket::set_tcp_keepalive(
            stream.as_fd(),
            KEEPALIVE_IDLE,
            KEEPALIVE_INTERVAL,
            KEEPALIVE_PROBES,
        );
        let _ = stream.set_write_timeout(Some(CLIENT_STALL));
        let group = process.group();
        let (done, gone) = match (Flag::new(), Flag::new()) {
            (Ok(d), Ok(g)) => (d, g),
            (Err(e), _) | (_, Err(e)) => {
                group.signal(libc::SIGKILL);
                process.wait(&mut || session.mark_exited());
                state.sessions.finish(&session);
                return failed(stream, &e);
            }
        };
        let writer = Writer {
            stream,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            process,
            session: session.clone(),
            state: state.clone(),
            done: &done,
            gone: &gone,
        };
        std::thread::scope(|scope| {
            let started = std::thread::Builder::new()
                .name("sprites-http-exec".into())
                .stack_size(128 * 1024)
                .spawn_scoped(scope, move || respond(writer));
            if let Err(e) = started {
                // The writer (and the process in it) went with the closure: reap by pid.
                group.signal(libc::SIGKILL);
                session.mark_exited();
                group.reap_orphaned();
                state.sessions.finish(&session);
                return failed(stream, &e);
            }
            if feed(stream, body, stdio.stdin, &done) == Outcome::ClientGone {
                session.signal(libc::SIGKILL);
                gone.set();
            }
        });
    }
}

/// The answer when the exec cannot be served after its process started (no eventfd, no
/// thread): a 500, the process already killed.
fn failed(mut stream: &TcpStream, e: &io::Error) {
    let r = Response::error(500, "exec_failed", &format!("exec: {e}"));
    let _ = write_response(&mut stream, &r, false, false);
}

/// How the request side ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The response is complete.
    Finished,
    /// The client went away first.
    ClientGone,
}

/// Feeds the body to `stdin` (or discards it without one), then watches the connection
/// until the response is complete (`done`) or the client leaves.
fn feed(
    mut stream: &TcpStream,
    body: &mut dyn RequestBody,
    stdin: Option<File>,
    done: &Flag,
) -> Outcome {
    let mut stdin = stdin.filter(|p| sys::fd::set_nonblocking(p.as_fd()).is_ok());
    let mut buf = vec![0u8; STDIN_BUF];
    loop {
        if body.buffered() == 0 && !body.is_done() {
            match wait(None, stream, libc::POLLIN, done) {
                Woke::Done => return Outcome::Finished,
                Woke::First | Woke::Socket => {}
            }
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n.min(buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Cut short or badly framed: the client's request is broken.
            Err(_) => return Outcome::ClientGone,
        };
        if let Some(pipe) = &stdin {
            match write_stdin(pipe, &buf[..n], stream, done) {
                Ok(()) => {}
                // The process closed its stdin: the rest of the body is discarded.
                Err(Stop::Closed) => stdin = None,
                Err(Stop::Woke(Woke::Done)) => return Outcome::Finished,
                Err(Stop::Woke(_)) => return Outcome::ClientGone,
            }
        }
    }
    // The body's end is stdin's end.
    drop(stdin);
    // Nothing more may come on this connection (the response closes it): bytes are
    // ignored, and its end means the client left.
    loop {
        match wait(None, stream, libc::POLLIN, done) {
            Woke::Done => return Outcome::Finished,
            Woke::First | Woke::Socket => match stream.read(&mut buf) {
                Ok(0) => return Outcome::ClientGone,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(_) => return Outcome::ClientGone,
            },
        }
    }
}

/// Why writing to stdin stopped.
enum Stop {
    /// The process closed its end.
    Closed,
    /// `wait` returned this while the pipe was full.
    Woke(Woke),
}

/// Writes `data` to the (non-blocking) stdin pipe; while it is full, waits for room, the
/// response's end, or the client's end of the connection (`POLLRDHUP`: its data still
/// unread must not count as a sign of life).
fn write_stdin(pipe: &File, mut data: &[u8], stream: &TcpStream, done: &Flag) -> Result<(), Stop> {
    while !data.is_empty() {
        match sys::fd::write(pipe.as_fd(), data) {
            Ok(n) => data = &data[n.min(data.len())..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait(Some(pipe.as_fd()), stream, libc::POLLRDHUP, done) {
                    Woke::First => {}
                    other => return Err(Stop::Woke(other)),
                }
            }
            Err(_) => return Err(Stop::Closed),
        }
    }
    Ok(())
}

/// What ended a [`wait`].
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// The response is complete.
    Done,
    /// The first descriptor (a pipe, for `POLLOUT`) is ready.
    First,
    /// The socket has an event of those asked for (or an error).
    Socket,
}

/// Waits, without a time limit, until `done` is set, `first` is writable, or `stream` has
/// one of `sock_events` (errors and hang-ups always count). Bounded by the exec: `done` is
/// set once the response ends, and a dead client is reported by the socket (keepalive).
fn wait(
    first: Option<BorrowedFd<'_>>,
    stream: &TcpStream,
    sock_events: libc::c_short,
    done: &Flag,
) -> Woke {
    let pollfd = |fd, events| libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        let mut fds = [
            pollfd(done.0.as_raw_fd(), libc::POLLIN),
            pollfd(stream.as_raw_fd(), sock_events),
            pollfd(first.map_or(-1, |f| f.as_raw_fd()), libc::POLLOUT),
        ];
        match sys::fd::poll(&mut fds, -1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // poll itself failing (it cannot, on valid descriptors) ends the request side.
            Err(_) => return Woke::Socket,
            Ok(_) => {}
        }
        if fds[0].revents != 0 {
            return Woke::Done;
        }
        if fds[2].revents != 0 {
            return Woke::First;
        }
        if fds[1].revents != 0 {
            return Woke::Socket;
        }
    }
}

/// What the writer thread owns.
struct Writer<'a> {
    stream: &'a TcpStream,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    process: Box<dyn ExecProcess>,
    session: Arc<Session>,
    state: Arc<State>,
    /// Set once the response is complete.
    done: &'a Flag,
    /// Set by the connection thread when the client went away.
    gone: &'a Flag,
}

/// The response: head, output frames, exit frame, end of body. Then `done`.
fn respond(w: Writer<'_>) {
    let Writer {
        stream,
        stdout,
        stderr,
        mut process,
        session,
        state,
        done,
        gone,
    } = w;
    let mut out = Out {
        stream,
        broken: false,
    };
    out.write(
        response_head(
            200,
            &[("Content-Type", "application/octet-stream".into())],
            None,
            false,
        )
        .as_bytes(),
    );
    let mut pipes = [
        stdout.map(|p| (frame::STDOUT, p)),
        stderr.map(|p| (frame::STDERR, p)),
    ];
    let mut buf = vec![0u8; CHUNK_HEAD + MAX_FRAME + 2];
    while pipes.iter().any(Option::is_some) && !out.broken {
        let mut fds = [
            pollin(gone.0.as_raw_fd()),
            pollin(pipes[0].as_ref().map_or(-1, |(_, p)| p.as_raw_fd())),
            pollin(pipes[1].as_ref().map_or(-1, |(_, p)| p.as_raw_fd())),
        ];
        match sys::fd::poll(&mut fds, -1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        if fds[0].revents != 0 {
            break; // the client is gone (and the process group killed)
        }
        for i in 0..2 {
            if fds[i + 1].revents == 0 {
                continue;
            }
            let Some((id, pipe)) = &pipes[i] else {
                continue;
            };
            let id = *id;
            let data = &mut buf[CHUNK_HEAD + 1..CHUNK_HEAD + MAX_FRAME];
            match read_retrying(pipe.as_fd(), data) {
                Ok(0) | Err(_) => pipes[i] = None,
                Ok(n) => {
                    session.note_output(n);
                    buf[CHUNK_HEAD] = id;
                    out.chunk(&mut buf, n + 1);
                }
            }
        }
    }
    if out.broken {
        // Nobody reads the output any more: the exec is over.
        session.signal(libc::SIGKILL);
    }
    // Close our ends first: a process still writing gets EPIPE, not a full pipe.
    drop(pipes);
    let code = process.wait(&mut || session.mark_exited());
    state.sessions.finish(&session);
    let mut exit = [0u8; CHUNK_HEAD + 2 + 2];
    exit[CHUNK_HEAD] = frame::EXIT;
    exit[CHUNK_HEAD + 1] = code;
    out.chunk(&mut exit, 2);
    out.write(b"0\r\n\r\n");
    done.set();
}

fn pollin(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn read_retrying(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sys::fd::read(fd, buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The response's socket, as the writer writes it.
struct Out<'a> {
    stream: &'a TcpStream,
    /// A write failed (or blocked for [`CLIENT_STALL`]): write nothing more.
    broken: bool,
}

impl Out<'_> {
    fn write(&mut self, bytes: &[u8]) {
        if !self.broken {
            let mut s = self.stream;
            self.broken = s.write_all(bytes).is_err();
        }
    }

    /// Writes `buf[CHUNK_HEAD..CHUNK_HEAD + len]` as one chunk with one `write`: its size
    /// line goes into the room in front, its CRLF behind (`buf` has room for both).
    fn chunk(&mut self, buf: &mut [u8], len: usize) {
        let size = format!("{len:x}\r\n");
        let start = CHUNK_HEAD - size.len();
        buf[start..CHUNK_HEAD].copy_from_slice(size.as_bytes());
        buf[CHUNK_HEAD + len..CHUNK_HEAD + len + 2].copy_from_slice(b"\r\n");
        self.write(&buf[start..CHUNK_HEAD + len + 2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_chunk_is_one_frame_with_its_size_in_front() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        {
            let mut out = Out {
                stream: &server,
                broken: false,
            };
            let mut buf = vec![0u8; CHUNK_HEAD + MAX_FRAME + 2];
            buf[CHUNK_HEAD] = frame::STDOUT;
            buf[CHUNK_HEAD + 1..CHUNK_HEAD + 3].copy_from_slice(b"hi");
            out.chunk(&mut buf, 3);
            buf[CHUNK_HEAD] = frame::STDERR;
            buf[CHUNK_HEAD + 1..CHUNK_HEAD + MAX_FRAME].fill(b'x');
            out.chunk(&mut buf, MAX_FRAME);
            assert!(!out.broken);
        }
        drop(server);
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).unwrap();
        let mut want = b"3\r\n\x01hi\r\n4000\r\n\x02".to_vec();
        want.extend(std::iter::repeat_n(b'x', MAX_FRAME - 1));
        want.extend_from_slice(b"\r\n");
        assert_eq!(got, want);
    }
}
