//! Workers: threads that serve authenticated requests, one connection at a time.
//!
//! A worker gets a connection from the reactor with a complete, authenticated head
//! ([`Job`]), runs the handler with the body as a stream, writes the response, and then
//! either serves the next request if it is already buffered (pipelining) or arrives within
//! [`NEXT_REQUEST_LINGER`], or hands the connection back to the reactor to wait for the
//! next one ([`Handoff`]). The linger is what a keep-alive client that sends its next
//! request as soon as it has read a response (most do) would otherwise pay twice in thread
//! hand-offs; it never serves a head that is not complete in what one non-blocking read
//! brought, so a slow client costs a worker at most the linger before the reactor's head
//! deadline takes over. An exec upgrade keeps its worker as the exec's connection thread
//! until the exec ends.
//!
//! The pool grows on demand (a job with no idle worker starts a new one; there are never
//! more workers than connections being served) and shrinks when idle: a worker that gets
//! no job for [`WORKER_IDLE`] exits.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use super::Wake;
use crate::api::WebSocketSession;
use crate::api::{self, Authenticated, Reply};
use crate::net::body::{Body, RequestBody};
use crate::net::file::write_file_response;
use crate::net::http::{write_response, BadRequest, BodyFraming, RequestReader, Response};
use crate::state::{Conn, State};
use crate::sys;

/// How long an idle worker waits for a job before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(5);
/// How long a worker waits, after a keep-alive response, for the next request before
/// handing the connection back to the reactor (poll(2)'s granularity: one millisecond).
const NEXT_REQUEST_LINGER: Duration = Duration::from_millis(1);

/// A connection with an authenticated request head, for a worker to serve.
pub(super) struct Job {
    pub conn: Arc<Conn>,
    pub head: Authenticated,
    pub framing: BodyFraming,
    /// Bytes that arrived behind the head (the body's start, pipelined requests).
    pub buffered: Vec<u8>,
}

/// A connection a worker gives back to the reactor.
pub(super) struct Handoff {
    pub conn: Arc<Conn>,
    /// Bytes of the next request already read (an incomplete head), if any.
    pub buffered: Vec<u8>,
    /// The response went out with `Connection: close` over an unread body: only discard
    /// what still comes, for a bounded while.
    pub linger: bool,
}

/// What workers share: the server state and the way back to the reactor.
struct Ctx {
    state: Arc<State>,
    handoff: Sender<Handoff>,
    wake: Arc<Wake>,
}

impl Ctx {
    fn hand_back(&self, conn: Arc<Conn>, buffered: Vec<u8>, linger: bool) {
        // After shutdown the reactor is gone: the connection is dropped, i.e. closed.
        if self
            .handoff
            .send(Handoff {
                conn,
                buffered,
                linger,
            })
            .is_ok()
        {
            self.wake.notify();
        }
    }
}

/// The workers, from the reactor's side.
pub(super) struct Pool {
    jobs: Sender<Job>,
    queue: Receiver<Job>,
    /// Workers waiting for a job, less the jobs promised to them (see [`Pool::dispatch`]).
    idle: Arc<AtomicUsize>,
    ctx: Arc<Ctx>,
}

impl Pool {
    pub(super) fn new(state: Arc<State>, handoff: Sender<Handoff>, wake: Arc<Wake>) -> Pool {
        let (jobs, queue) = unbounded();
        Pool {
            jobs,
            queue,
            idle: Arc::new(AtomicUsize::new(0)),
            ctx: Arc::new(Ctx {
                state,
                handoff,
                wake,
            }),
        }
    }

    /// Gives `job` to an idle worker, or to a new one if none is idle.
    ///
    /// A job goes into the queue only after an idle worker was claimed for it (`idle`
    /// decremented), and a worker leaves only by un-counting itself while `idle` is
    /// positive, so every queued job has a worker that will take it.
    pub(super) fn dispatch(&self, job: Job) {
        let mut idle = self.idle.load(Ordering::SeqCst);
        while idle > 0 {
            match self
                .idle
                .compare_exchange(idle, idle - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    // The receiver lives as long as the pool; a send cannot fail.
                    let _ = self.jobs.send(job);
                    return;
                }
                Err(now) => idle = now,
            }
        }
        let conn = job.conn.clone();
        let (queue, idle, ctx) = (self.queue.clone(), self.idle.clone(), self.ctx.clone());
        let spawned = thread::Builder::new()
            .name("sprites-worker".into())
            .spawn(move || worker_main(job, &queue, &idle, &ctx));
        if spawned.is_err() {
            // No thread to be had (the job went with the failed closure): say so, without
            // blocking the reactor that called us.
            super::busy(conn.stream(), "no thread available");
        }
    }
}

fn worker_main(first: Job, queue: &Receiver<Job>, idle: &AtomicUsize, ctx: &Ctx) {
    serve(ctx, first);
    // Whether this worker's "idle" count is out (in `idle`, or taken by a dispatch whose
    // job is on its way).
    let mut counted = false;
    loop {
        if !counted {
            idle.fetch_add(1, Ordering::SeqCst);
            counted = true;
        }
        match queue.recv_timeout(WORKER_IDLE) {
            Ok(job) => {
                counted = false; // the dispatch took our count
                serve(ctx, job);
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut n = idle.load(Ordering::SeqCst);
                while n > 0 {
                    match idle.compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => return,
                        Err(now) => n = now,
                    }
                }
                // Every idle count is promised to a job: one is coming for us.
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Serves `job`'s connection; a panic in a handler costs only this connection.
fn serve(ctx: &Ctx, job: Job) {
    let conn = job.conn.clone();
    if catch_unwind(AssertUnwindSafe(|| serve_conn(ctx, job))).is_err() {
        // Last resort: tell the client, then drop the connection; nothing else in the
        // server is affected.
        let r = Response::error(500, "internal", "internal server error");
        let _ = write_response(&mut conn.stream(), &r, false, false);
        let _ = conn.stream().shutdown(Shutdown::Both);
    }
}

/// What became of one request.
enum Next {
    /// The connection can carry another request.
    KeepAlive,
    /// Close it (the client asked to, or it broke).
    Close,
    /// The response went out over an unread body: linger, then close.
    Linger,
    /// A WebSocket upgrade was accepted: run its session on this connection.
    WebSocket(Box<dyn WebSocketSession>),
}

fn serve_conn(ctx: &Ctx, job: Job) {
    let Job {
        conn,
        head,
        framing,
        buffered,
    } = job;
    let mut reader = RequestReader::with_buffered(conn.stream(), buffered);
    let mut request = (head, framing);
    loop {
        let (head, framing) = request;
        match one_request(&ctx.state, conn.stream(), &mut reader, &head, framing) {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Linger => {
                drop(reader);
                return ctx.hand_back(conn, Vec::new(), true);
            }
            Next::WebSocket(session) => {
                let (_, leftover) = reader.into_parts();
                return session.run(ctx.state.clone(), conn, leftover);
            }
        }
        if ctx.state.is_shutting_down() {
            return;
        }
        // Pipelined: the next head may be here already, or about to be; if not, the
        // reactor waits for it.
        let mut next = reader.buffered_head();
        if matches!(next, Ok(None)) && reader.buffered().is_empty() {
            match next_request_soon(conn.stream(), &mut reader) {
                Soon::Arrived => next = reader.buffered_head(),
                Soon::NotYet => {}
                Soon::Closed => return,
            }
        }
        match next {
            Ok(Some((head, framing))) => match api::authenticate(&ctx.state, head) {
                Ok(head) => request = (head, framing),
                Err(resp) => {
                    drop(reader);
                    return refuse_and_linger(ctx, conn, &resp);
                }
            },
            Ok(None) => {
                let (_, rest) = reader.into_parts();
                return ctx.hand_back(conn, rest, false);
            }
            Err(BadRequest { status, message }) => {
                drop(reader);
                let resp = Response::error(status, "invalid_request", &message);
                return refuse_and_linger(ctx, conn, &resp);
            }
        }
    }
}

/// What came of waiting briefly for a keep-alive client's next request.
enum Soon {
    /// Bytes arrived (maybe a whole head) and are in the reader's buffer.
    Arrived,
    /// Nothing within the linger.
    NotYet,
    /// The client closed its side, or the socket failed.
    Closed,
}

/// Waits at most [`NEXT_REQUEST_LINGER`] for `stream` to become readable, then reads what
/// is there without blocking.
fn next_request_soon(stream: &TcpStream, reader: &mut RequestReader<&TcpStream>) -> Soon {
    let mut fds = [libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = NEXT_REQUEST_LINGER.as_millis() as libc::c_int;
    if !matches!(sys::fd::poll(&mut fds, ms), Ok(n) if n > 0) {
        return Soon::NotYet;
    }
    match reader.read_with(|buf| sys::nonblocking::recv(stream.as_fd(), buf)) {
        Ok(0) => Soon::Closed,
        Ok(_) => Soon::Arrived,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Soon::NotYet,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Soon::NotYet,
        Err(_) => Soon::Closed,
    }
}

/// Answers with `resp` and `Connection: close`, then lets the reactor linger.
fn refuse_and_linger(ctx: &Ctx, conn: Arc<Conn>, resp: &Response) {
    if write_response(&mut conn.stream(), resp, false, false).is_ok() {
        let _ = conn.stream().shutdown(Shutdown::Write);
        ctx.hand_back(conn, Vec::new(), true);
    }
}

/// Runs one request: the handler (with the body as a stream), then the response.
fn one_request(
    state: &Arc<State>,
    stream: &TcpStream,
    reader: &mut RequestReader<&TcpStream>,
    head: &Authenticated,
    framing: BodyFraming,
) -> Next {
    let head_only = head.method == "HEAD";
    let mut send_continue = || -> io::Result<()> {
        let mut s = stream;
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
    };
    let (reply, body_done) = {
        let mut body = Body::new(reader, head, framing, &mut send_continue);
        match api::handle(state, head, &mut body) {
            Reply::Duplex(response) => {
                // It writes its whole response while reading the body, and says
                // `Connection: close`: whatever of the body it left is discarded.
                response.run(stream, &mut body);
                let _ = stream.shutdown(Shutdown::Write);
                return Next::Linger;
            }
            reply => (reply, body.is_done()),
        }
    };
    let keep_alive = !head.wants_close() && body_done;
    let mut out = stream;
    match reply {
        Reply::Response(resp) => {
            if write_response(&mut out, &resp, head_only, keep_alive).is_err() {
                return Next::Close;
            }
        }
        Reply::File(file) => {
            // A file that shrank mid-send broke its Content-Length: the connection must end.
            if !matches!(
                write_file_response(&mut out, &file, head_only, keep_alive),
                Ok(true)
            ) {
                return Next::Close;
            }
        }
        Reply::WebSocket(session) => return Next::WebSocket(session),
        Reply::Duplex(_) => return Next::Close, // served above
    }
    if !body_done {
        let _ = stream.shutdown(Shutdown::Write);
        return Next::Linger;
    }
    if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}
