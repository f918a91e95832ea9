//! The reactor: one thread, one `epoll` set over the listener, a wake eventfd and every
//! connection that is waiting for a request head — new ones and idle keep-alive ones that
//! workers handed back — plus those lingering after a refusal.
//!
//! It reads head bytes without blocking (a buffer only once bytes arrive, at most
//! [`MAX_HEAD`]), parses each head as soon as it is complete and authenticates it from the
//! head alone: an authenticated request goes to a worker with the connection; anything
//! else is answered here (401, 400, 431, …, with `Connection: close`) without reading a
//! byte of its body, and the connection lingers until the client is done sending. A
//! waiting connection costs no thread, and a quiet one no buffer.
//!
//! Deadlines are fixed when set, never pushed back by arriving bytes: a head must be
//! complete `head_timeout` after the accept (or after the first byte of a keep-alive
//! connection's next request), else 408; an idle keep-alive connection is closed after
//! `idle_timeout`; a lingering one after [`LINGER_TIME`].
//!
//! The caps: beyond `max_connections` open connections, a new one is answered 503 and
//! closed at once; at `max_unauthenticated` connections that have not presented a valid
//! head, the oldest of them is evicted (503) if it has waited [`EVICT_AFTER`], else the
//! newcomer gets the 503.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, TryRecvError};

use super::worker::{Handoff, Job, Pool};
use super::{send_now, Limits, Wake};
use crate::api;
use crate::net::http::{BadRequest, BodyFraming, HeadBuffer, RequestHead, Response};
use crate::state::{Conn, State};
use crate::sys::epoll::{self, Epoll, Ready};
use crate::sys::nonblocking;

/// Longest a refused request's unread body is drained so its client can see the status.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes of a refused request's body drained (and discarded) before giving up.
const LINGER_BYTES: usize = 256 << 20;
/// How long the oldest unauthenticated connection must have waited before a newcomer may
/// evict it: a real client sends its head within milliseconds of connecting.
const EVICT_AFTER: Duration = Duration::from_secs(1);
/// How long accepting pauses when the process is out of descriptors and even the spare
/// one could not be reopened (nothing else will tell us when one is free).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Most connections accepted per wake-up, so waiting connections get their turn.
const ACCEPT_BATCH: usize = 256;
/// Size of the one buffer the reactor reads into (head bytes, discarded lingering bytes).
const SCRATCH: usize = 64 * 1024;

const LISTENER: u64 = 0;
const WAKE: u64 = 1;
const FIRST_CONN: u64 = 2;

/// What a connection held by the reactor is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A keep-alive connection between requests, no byte of the next one yet.
    Idle,
    /// The rest of a request head.
    Head,
    /// The client to finish sending a body we refused (its answer went out already).
    Linger { discarded: usize },
}

struct Waiting {
    conn: Arc<Conn>,
    /// Head bytes so far; allocated when the first byte arrives.
    head: HeadBuffer,
    phase: Phase,
    /// Its current deadline (its key in `Reactor::timers`).
    deadline: Instant,
    /// When it arrived (accept), for eviction.
    since: Instant,
}

pub(super) struct Reactor {
    state: Arc<State>,
    limits: Limits,
    epoll: Epoll,
    listener: TcpListener,
    wake: Arc<Wake>,
    /// Connections handed back by workers.
    returned: Receiver<Handoff>,
    pool: Pool,
    conns: HashMap<u64, Waiting>,
    /// `(deadline, id)` of every held connection, earliest first.
    timers: BTreeSet<(Instant, u64)>,
    /// Ids of held connections that never presented a valid head; ids grow with accept
    /// order, so the first is the oldest.
    unauthenticated: BTreeSet<u64>,
    next_id: u64,
    /// A descriptor kept open to be given up when accept fails for lack of one, so the
    /// waiting client can still be told 503 instead of being left hanging.
    spare: Option<File>,
    /// While set, the listener is out of the epoll set until then (out of descriptors).
    paused_until: Option<Instant>,
    scratch: Box<[u8]>,
}

impl Reactor {
    pub(super) fn new(
        state: Arc<State>,
        limits: Limits,
        listener: TcpListener,
        wake: Arc<Wake>,
    ) -> io::Result<Reactor> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.add(listener.as_fd(), epoll::IN, LISTENER)?;
        epoll.add(wake.0.as_fd(), epoll::IN, WAKE)?;
        let (handoff_tx, returned) = unbounded();
        let pool = Pool::new(state.clone(), handoff_tx, wake.clone());
        Ok(Reactor {
            state,
            limits,
            epoll,
            listener,
            wake,
            returned,
            pool,
            conns: HashMap::new(),
            timers: BTreeSet::new(),
            unauthenticated: BTreeSet::new(),
            next_id: FIRST_CONN,
            spare: File::open("/dev/null").ok(),
            paused_until: None,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
        })
    }

    /// Serves until shutdown; then everything the reactor holds (the listener, waiting
    /// connections, the idle workers' queue) is dropped, which closes it.
    pub(super) fn run(mut self) {
        let mut ready: Vec<Ready> = Vec::with_capacity(epoll::MAX_EVENTS);
        while !self.state.is_shutting_down() {
            let timeout = self.next_timeout();
            if self.epoll.wait(&mut ready, timeout).is_err() {
                // Only a broken epoll set fails here; nothing could be served any more.
                return;
            }
            for r in ready.drain(..) {
                match r.token {
                    LISTENER => self.accept(),
                    WAKE => self.wake.drain(),
                    id => self.on_ready(id),
                }
            }
            self.take_returned();
            self.expire();
        }
    }

    /// Milliseconds until the earliest deadline (rounded up), or -1 for none.
    fn next_timeout(&self) -> libc::c_int {
        let first = self.timers.first().map(|(t, _)| *t);
        let next = match (first, self.paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            None => -1,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        let out_of_fds =
                            matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                        if !(out_of_fds && self.refuse_with_spare_fd()) {
                            self.pause_accepting();
                        }
                        return;
                    }
                },
            }
        }
    }

    /// Out of descriptors: gives up the spare one to accept the waiting client, tells it
    /// 503, and takes the spare back. False if that could not be done.
    fn refuse_with_spare_fd(&mut self) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        if let Ok((stream, _)) = self.listener.accept() {
            busy(&stream);
        }
        self.spare = File::open("/dev/null").ok();
        self.spare.is_some()
    }

    /// Takes the listener out of the epoll set for [`ACCEPT_PAUSE`], so a listener that is
    /// readable but cannot be accepted from does not spin the reactor.
    fn pause_accepting(&mut self) {
        if self
            .epoll
            .modify(self.listener.as_fd(), 0, LISTENER)
            .is_ok()
        {
            self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        }
    }

    /// Takes a new connection in, if the budget allows.
    fn admit(&mut self, stream: TcpStream) {
        let now = Instant::now();
        if self.state.open_conns() >= self.limits.max_connections {
            return busy(&stream);
        }
        if self.unauthenticated.len() >= self.limits.max_unauthenticated {
            let oldest = self
                .unauthenticated
                .first()
                .and_then(|id| Some((*id, self.conns.get(id)?.since)));
            match oldest {
                Some((id, since)) if now.duration_since(since) >= EVICT_AFTER => {
                    self.evict(id);
                }
                _ => return busy(&stream),
            }
        }
        let _ = stream.set_nodelay(true);
        // For the workers' blocking reads of request bodies; the reactor's own reads never
        // block, whatever this says.
        let _ = stream.set_read_timeout(Some(self.limits.idle_timeout));
        let conn = self.state.register_conn(stream);
        let id = self.next_id;
        self.next_id += 1;
        if self
            .epoll
            .add(conn.stream().as_fd(), epoll::IN | epoll::RDHUP, id)
            .is_err()
        {
            return;
        }
        let deadline = now + self.limits.head_timeout;
        self.conns.insert(
            id,
            Waiting {
                conn,
                head: HeadBuffer::new(),
                phase: Phase::Head,
                deadline,
                since: now,
            },
        );
        self.timers.insert((deadline, id));
        self.unauthenticated.insert(id);
    }

    /// An unauthenticated connection makes room for a newer one: 503 if it was still
    /// expected to send a head, then closed.
    fn evict(&mut self, id: u64) {
        if let Some(w) = self.remove(id) {
            if w.phase == Phase::Head {
                busy(w.conn.stream());
            }
        }
    }

    fn on_ready(&mut self, id: u64) {
        let Some(w) = self.conns.get(&id) else {
            return;
        };
        match w.phase {
            Phase::Linger { .. } => self.discard(id),
            Phase::Idle | Phase::Head => self.read_head(id),
        }
    }

    /// Reads what is there of a lingering connection and throws it away; closes it at its
    /// end, on an error, or once [`LINGER_BYTES`] went by.
    fn discard(&mut self, id: u64) {
        let Some(w) = self.conns.get_mut(&id) else {
            return;
        };
        let Phase::Linger { discarded } = w.phase else {
            return;
        };
        match nonblocking::recv(w.conn.stream().as_fd(), &mut self.scratch) {
            Ok(0) => self.close(id),
            Ok(n) if discarded + n >= LINGER_BYTES => self.close(id),
            Ok(n) => {
                w.phase = Phase::Linger {
                    discarded: discarded + n,
                }
            }
            Err(e) if retry_later(&e) => {}
            Err(_) => self.close(id),
        }
    }

    fn read_head(&mut self, id: u64) {
        let now = Instant::now();
        let Some(w) = self.conns.get_mut(&id) else {
            return;
        };
        // A full head buffer has been decided already (431), so there is always room.
        let room = w.head.room().clamp(1, SCRATCH);
        let n = match nonblocking::recv(w.conn.stream().as_fd(), &mut self.scratch[..room]) {
            Ok(n) => n,
            Err(e) if retry_later(&e) => return,
            Err(_) => return self.close(id),
        };
        if n == 0 {
            // The client closed its side: between requests that is goodbye; inside a head
            // it is a cut request, which still gets its answer.
            return match w.head.at_eof() {
                Ok(()) => self.close(id),
                Err(BadRequest { status, message }) => self.refuse(id, status, &message),
            };
        }
        if w.phase == Phase::Idle {
            w.phase = Phase::Head;
            let deadline = now + self.limits.head_timeout;
            self.set_deadline(id, deadline);
        }
        self.check_head(id, n);
    }

    /// Adds the `n` bytes just read into the scratch buffer to connection `id`'s head
    /// (none for bytes it already held) and acts on what that completes.
    fn check_head(&mut self, id: u64, n: usize) {
        let Some(w) = self.conns.get_mut(&id) else {
            return;
        };
        match w.head.push(&self.scratch[..n]) {
            Ok(None) => {}
            Ok(Some(parsed)) => {
                let rest = std::mem::take(&mut w.head).into_rest(parsed.len);
                self.dispatch(id, parsed.head, parsed.framing, rest);
            }
            Err(BadRequest { status, message }) => self.refuse(id, status, &message),
        }
    }

    /// A complete head: to a worker if its token is valid, else 401 here.
    fn dispatch(&mut self, id: u64, head: RequestHead, framing: BodyFraming, rest: Vec<u8>) {
        match api::authenticate(&self.state, head) {
            Ok(head) => {
                let Some(w) = self.remove(id) else {
                    return;
                };
                self.pool.dispatch(Job {
                    conn: w.conn,
                    head,
                    framing,
                    buffered: rest,
                });
            }
            Err(resp) => self.answer_and_linger(id, &resp),
        }
    }

    /// Answers a request that could not be read with `status` (§3.1 body), then lingers.
    fn refuse(&mut self, id: u64, status: u16, message: &str) {
        let resp = Response::error(status, "invalid_request", message);
        self.answer_and_linger(id, &resp);
    }

    /// Sends `resp` with `Connection: close`, half-closes, and keeps the connection only
    /// to discard what the client still sends: closing a socket with unread input makes
    /// the kernel send a reset, and a client still sending its body (ureq, for one, reads
    /// the response only after sending everything) would get a write error instead of our
    /// status.
    fn answer_and_linger(&mut self, id: u64, resp: &Response) {
        let Some(w) = self.conns.get_mut(&id) else {
            return;
        };
        let stream = w.conn.stream();
        if !send_now(stream, resp) {
            return self.close(id);
        }
        let _ = stream.shutdown(Shutdown::Write);
        w.phase = Phase::Linger { discarded: 0 };
        // Its head buffer is no longer needed.
        w.head = HeadBuffer::new();
        self.set_deadline(id, Instant::now() + LINGER_TIME);
    }

    /// Takes back connections workers are done with: idle keep-alive ones (possibly with
    /// the start of their next request) and ones to linger on.
    fn take_returned(&mut self) {
        loop {
            let h = match self.returned.try_recv() {
                Ok(h) => h,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            };
            let now = Instant::now();
            let id = self.next_id;
            self.next_id += 1;
            if self
                .epoll
                .add(h.conn.stream().as_fd(), epoll::IN | epoll::RDHUP, id)
                .is_err()
            {
                continue;
            }
            let (phase, deadline, head) = if h.linger {
                (
                    Phase::Linger { discarded: 0 },
                    now + LINGER_TIME,
                    HeadBuffer::new(),
                )
            } else if h.buffered.is_empty() {
                // A quiet connection keeps no buffer.
                (
                    Phase::Idle,
                    now + self.limits.idle_timeout,
                    HeadBuffer::new(),
                )
            } else {
                let mut buf = h.buffered;
                buf.shrink_to_fit();
                (
                    Phase::Head,
                    now + self.limits.head_timeout,
                    HeadBuffer::with_bytes(buf),
                )
            };
            let has_bytes = !head.is_empty();
            self.conns.insert(
                id,
                Waiting {
                    conn: h.conn,
                    head,
                    phase,
                    deadline,
                    since: now,
                },
            );
            self.timers.insert((deadline, id));
            if has_bytes {
                // What the worker had read may be all the head there is (it stopped at
                // the previous response); look before waiting for more.
                self.check_head(id, 0);
            }
        }
    }

    /// Ends what is past its deadline: a head too slow (408), an idle or lingering
    /// connection (closed quietly); and resumes accepting after a pause.
    fn expire(&mut self) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| t <= now)
            && self
                .epoll
                .modify(self.listener.as_fd(), epoll::IN, LISTENER)
                .is_ok()
        {
            self.paused_until = None;
        }
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                return;
            }
            let Some(w) = self.remove(id) else {
                continue;
            };
            if w.phase == Phase::Head {
                let resp = Response::error(
                    408,
                    "request_timeout",
                    "the request head did not arrive in time",
                );
                send_now(w.conn.stream(), &resp);
                let _ = w.conn.stream().shutdown(Shutdown::Both);
            }
        }
    }

    fn set_deadline(&mut self, id: u64, deadline: Instant) {
        if let Some(w) = self.conns.get_mut(&id) {
            self.timers.remove(&(w.deadline, id));
            w.deadline = deadline;
            self.timers.insert((deadline, id));
        }
    }

    /// Forgets a held connection (closing it unless someone else holds it).
    fn close(&mut self, id: u64) {
        self.remove(id);
    }

    /// Takes a connection out of every structure and the epoll set.
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let w = self.conns.remove(&id)?;
        self.timers.remove(&(w.deadline, id));
        self.unauthenticated.remove(&id);
        let _ = self.epoll.delete(w.conn.stream().as_fd());
        Some(w)
    }
}

/// `WouldBlock` or `Interrupted`: nothing to do until the next readiness report.
fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Tells a connection there is no room for it: 503 `server_busy`, `Retry-After: 1`. The
/// caller then drops it, which closes it.
fn busy(stream: &TcpStream) {
    let resp =
        Response::error(503, "server_busy", "too many connections").with_header("Retry-After", "1");
    send_now(stream, &resp);
    let _ = stream.shutdown(Shutdown::Write);
}
