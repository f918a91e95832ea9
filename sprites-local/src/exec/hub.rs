//! A detachable session (PROTOCOL.md §6.3, §7): its process and output, independent of any
//! connection. Every TTY exec is one, and so is an exec with `detachable=true` or a
//! `max_run_after_disconnect`.
//!
//! The hub owns the process's stdio once the exec is upgraded. Its threads:
//!
//! - the **output thread** reads the terminal master (TTY) or both pipes, appends each
//!   chunk to the [`Scrollback`] and hands it to every attached connection's queue. With
//!   nobody attached it keeps reading, so a detached process never blocks on its output;
//!   an attachment whose queue stays full for [`SLOW_ATTACHMENT`] is cut rather than
//!   stalling the others;
//! - the **waiter** reaps the process;
//! - the **stdin thread** (when there is stdin) writes what any attachment types, through
//!   a small bounded channel;
//! - with `max_run_after_disconnect`, a **watch** ends the process once nobody has been
//!   attached for that long.
//!
//! Ordering: the scrollback copy an attachment starts with and the live chunks it is sent
//! afterwards are taken under one lock, so it sees every byte exactly once.
//!
//! End of output: a non-TTY session's output ends when both pipes reach EOF (as an
//! ordinary exec's). A terminal's master reads `EIO` once every holder of the terminal
//! closed it, after the kernel flushed what they wrote; but a process left in the
//! background (`nohup`) may hold it forever. So after the leader exits, output is
//! forwarded until `EIO`, or until the terminal has been quiet for [`TTY_QUIET`], and for
//! at most [`TTY_DRAIN_MAX`]; then the exit is reported.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::pump::{self, poll, pollfd, read_fd, spawn_named, stream_id, Wake};
use super::scrollback::Scrollback;
use super::stdin::StdinSink;
use super::Session;
use crate::runtime::ExecProcess;
use crate::state::State;
use crate::{lock, sys};

/// Output chunks queued per attachment: with chunks of at most 64 KiB, 4 MiB at most.
const QUEUE: usize = 64;
/// How long output waits on an attachment whose queue is full before cutting it.
pub const SLOW_ATTACHMENT: Duration = Duration::from_secs(10);
/// After a TTY's leader exited: how long the terminal must be quiet to count as done.
pub const TTY_QUIET: Duration = Duration::from_millis(50);
/// After a TTY's leader exited: the longest its output is still forwarded.
pub const TTY_DRAIN_MAX: Duration = Duration::from_secs(1);
/// Largest read from the process.
const CHUNK: usize = 64 * 1024;
/// Scrollback kept per session unless the server is told otherwise.
pub const DEFAULT_SCROLLBACK: usize = 1 << 20;

/// What a hub sends an attached connection.
pub enum Out {
    /// Output of a stream (`stream_id::STDOUT`/`STDERR`; a terminal's is all STDOUT).
    Data(u8, Arc<[u8]>),
    /// A text message for the client (`port_opened`, `port_closed`).
    Text(Arc<str>),
    /// The process exited with this byte and all its output was sent.
    Exit(u8),
}

/// One connection's membership of a hub.
pub struct Attachment {
    /// Its number, to detach with.
    pub id: u64,
    /// Live output, then [`Out::Exit`]. Closed without `Exit` when the hub cut it.
    pub rx: Receiver<Out>,
    /// The scrollback at the moment it joined, to send before anything from `rx`.
    pub replay: Vec<(u8, Arc<[u8]>)>,
}

struct Shared {
    scrollback: Scrollback,
    attached: Vec<(u64, Sender<Out>)>,
    next_id: u64,
    /// Since when nobody is attached (`None` while someone is).
    detached_since: Option<Instant>,
    /// Set once the exit was reported.
    exit: Option<u8>,
}

/// A detachable session's process.
pub struct Hub {
    /// The session, as listed and killed.
    pub session: Arc<Session>,
    /// The process runs on a terminal (raw frames, text `exit`, resizes).
    pub tty: bool,
    /// The terminal's master, for resizes.
    terminal: Option<File>,
    /// Where typed input goes; `None` once stdin is closed.
    stdin: Mutex<Option<Input>>,
    shared: Mutex<Shared>,
    /// Signalled when attachments come or go and at the exit.
    changed: Condvar,
}

impl Hub {
    /// Takes over `process` (just spawned for `session`) and starts serving its output,
    /// with the creator already attached: it gets every byte from the first, however far the
    /// process runs before the creator reads (a later attachment gets the scrollback, which
    /// keeps only the last part). On failure the process is killed and reaped.
    pub fn start(
        state: &Arc<State>,
        mut process: Box<dyn ExecProcess>,
        session: Arc<Session>,
        max_run_after_disconnect: Option<Duration>,
    ) -> io::Result<(Arc<Hub>, Attachment)> {
        let stdio = process.take_stdio();
        let group = process.group();
        let fail = |process: &mut Box<dyn ExecProcess>, e: io::Error| {
            group.signal(libc::SIGKILL);
            process.wait(&mut || session.mark_exited());
            state.sessions.finish(&session);
            Err(e)
        };
        let tty = session.tty;
        let terminal = match (&stdio.stdin, tty) {
            (Some(master), true) => match master.try_clone() {
                Ok(t) => Some(t),
                Err(e) => return fail(&mut process, e),
            },
            _ => None,
        };
        let wake = match Wake::new() {
            Ok(w) => w,
            Err(e) => return fail(&mut process, e),
        };
        let stdin_tx = match (stdio.stdin, tty) {
            (Some(pipe), false) => {
                match StdinSink::start(pipe, |f| spawn_named("sprites-hub-stdin", f).map(drop)) {
                    Ok(sink) => Some(Input::Pipe(Arc::new(sink))),
                    Err(e) => return fail(&mut process, e),
                }
            }
            (Some(master), true) => {
                let (tx, rx) = bounded::<(Vec<u8>, usize)>(4);
                if let Err(e) = spawn_named("sprites-hub-stdin", move || terminal_input(master, rx))
                {
                    return fail(&mut process, e);
                }
                Some(Input::Terminal(tx))
            }
            (None, _) => None,
        };
        let hub = Arc::new(Hub {
            session: session.clone(),
            tty,
            terminal,
            stdin: Mutex::new(stdin_tx),
            shared: Mutex::new(Shared {
                scrollback: Scrollback::new(state.scrollback_bytes),
                attached: Vec::new(),
                next_id: 0,
                detached_since: Some(Instant::now()),
                exit: None,
            }),
            changed: Condvar::new(),
        });
        // Before anything can read the process's output.
        let creator = hub.attach();
        let (exit_tx, exit_rx) = bounded::<u8>(1);
        let waiter = {
            let (session, wake) = (session.clone(), wake.clone());
            spawn_named("sprites-hub-wait", move || {
                let code = process.wait(&mut || session.mark_exited());
                session.set_exit_code(code);
                let _ = exit_tx.send(code);
                wake.notify();
            })
        };
        if let Err(e) = waiter {
            // The closure (and the process in it) is gone; reap by pid.
            group.signal(libc::SIGKILL);
            session.mark_exited();
            group.reap_orphaned();
            state.sessions.finish(&session);
            return Err(e);
        }
        // Port events of the session's own process tree go to whoever is attached (best
        // effort: without a scanner thread the session runs without them).
        let ports = {
            let weak = Arc::downgrade(&hub);
            state
                .ports
                .subscribe(
                    &session.sprite,
                    &state.store.sprite_dir(&session.sprite),
                    crate::ports::Scope::Session(session.host_pid),
                    Box::new(move |u: &crate::ports::Update<'_>| {
                        if let Some(hub) = weak.upgrade() {
                            hub.announce(u.to_json());
                        }
                    }),
                )
                .ok()
        };
        let output = Output {
            hub: hub.clone(),
            state: state.clone(),
            _ports: ports,
            streams: [
                stdio.stdout.map(|fd| (stream_id::STDOUT, fd)),
                stdio.stderr.map(|fd| (stream_id::STDERR, fd)),
            ],
            exit_rx,
            wake,
        };
        for (_, fd) in output.streams.iter().flatten().filter(|_| !tty) {
            pump::grow_pipe(fd.as_fd());
        }
        if let Err(e) = spawn_named("sprites-hub-out", move || output.run()) {
            // Nothing will read the output: end the process; the waiter reaps it.
            group.signal(libc::SIGKILL);
            return Err(e);
        }
        if let Some(max) = max_run_after_disconnect {
            let watched = hub.clone();
            let _ = spawn_named("sprites-hub-detached", move || {
                watched.end_when_detached(max)
            });
        }
        session.set_hub(&hub);
        Ok((hub, creator))
    }

    /// Joins: the scrollback so far and, from then on, every chunk of output.
    pub fn attach(&self) -> Attachment {
        let (tx, rx) = bounded(QUEUE);
        let mut shared = lock(&self.shared);
        let replay = shared.scrollback.snapshot();
        let id = shared.next_id;
        shared.next_id += 1;
        match shared.exit {
            Some(code) => {
                let _ = tx.try_send(Out::Exit(code));
            }
            None => {
                shared.attached.push((id, tx));
                shared.detached_since = None;
            }
        }
        drop(shared);
        self.changed.notify_all();
        Attachment { id, rx, replay }
    }

    /// Leaves (the process goes on).
    pub fn detach(&self, id: u64) {
        let mut shared = lock(&self.shared);
        shared.attached.retain(|(i, _)| *i != id);
        if shared.attached.is_empty() && shared.detached_since.is_none() {
            shared.detached_since = Some(Instant::now());
        }
        drop(shared);
        self.changed.notify_all();
    }

    /// Writes `data[offset..]` (input after a frame's stream byte, say) to the process. Input
    /// after its stdin closed (or the process exited) is dropped, as a pipe's reader that
    /// went away drops it.
    pub fn write_stdin(&self, data: Vec<u8>, offset: usize) {
        let input = lock(&self.stdin).clone();
        match input {
            Some(Input::Pipe(sink)) => drop(sink.write(data, offset)),
            Some(Input::Terminal(tx)) => drop(tx.send((data, offset))),
            None => {}
        }
    }

    /// Closes the process's stdin once what was written before is delivered (non-TTY;
    /// a terminal has no end of input, only the `^D` its line discipline interprets).
    pub fn close_stdin(&self) {
        if !self.tty {
            *lock(&self.stdin) = None;
        }
    }

    /// Sets the terminal's size; the foreground process group gets `SIGWINCH`.
    pub fn resize(&self, rows: u16, cols: u16) {
        if let Some(t) = &self.terminal {
            let _ = sys::pty::set_window_size(t.as_fd(), rows, cols);
        }
    }

    /// Output: stores `data` and queues it for every attachment.
    fn publish(&self, stream: u8, data: &[u8]) {
        self.session.note_output(data.len());
        let chunk: Arc<[u8]> = Arc::from(data);
        let targets = {
            let mut shared = lock(&self.shared);
            shared.scrollback.push(stream, &chunk);
            shared.attached.clone()
        };
        for (id, tx) in targets {
            if tx
                .send_timeout(Out::Data(stream, chunk.clone()), SLOW_ATTACHMENT)
                .is_err()
            {
                // Gone, or not reading: cutting it frees the others (its writer sees its
                // queue closed without an exit and closes the connection).
                self.detach(id);
            }
        }
    }

    /// Queues a text message for every attachment, never blocking (it runs on the port
    /// scanner's thread): an attachment whose queue is full misses it.
    fn announce(&self, text: String) {
        let text: Arc<str> = Arc::from(text);
        let shared = lock(&self.shared);
        for (_, tx) in &shared.attached {
            let _ = tx.try_send(Out::Text(text.clone()));
        }
    }

    /// Reports the exit to every attachment; later attaches get it at once.
    fn finish(&self, code: u8) {
        let targets = {
            let mut shared = lock(&self.shared);
            shared.exit = Some(code);
            std::mem::take(&mut shared.attached)
        };
        self.changed.notify_all();
        *lock(&self.stdin) = None;
        for (_, tx) in targets {
            let _ = tx.send_timeout(Out::Exit(code), SLOW_ATTACHMENT);
        }
    }

    /// Kills the process once nobody has been attached for `max` (the watch thread).
    fn end_when_detached(&self, max: Duration) {
        let mut shared = lock(&self.shared);
        loop {
            if shared.exit.is_some() {
                return;
            }
            shared = match shared.detached_since {
                // Woken by every attach, detach and the exit.
                None => self.changed.wait(shared).unwrap_or_else(|e| e.into_inner()),
                Some(since) => {
                    let left = (since + max).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        drop(shared);
                        self.session.signal(libc::SIGKILL);
                        return;
                    }
                    self.changed
                        .wait_timeout(shared, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The output thread.
struct Output {
    hub: Arc<Hub>,
    state: Arc<State>,
    /// Held while the process runs; dropping it ends the session's port events.
    _ports: Option<crate::ports::Subscription>,
    /// `(stream id, read end)`; `None` once at its end.
    streams: [Option<(u8, OwnedFd)>; 2],
    exit_rx: Receiver<u8>,
    wake: Arc<Wake>,
}

impl Output {
    fn run(mut self) {
        let code = self.forward_until_done();
        self.hub.finish(code);
        self.state.sessions.finish(&self.hub.session);
    }

    /// Forwards output until it ended and the process exited; returns the exit byte.
    fn forward_until_done(&mut self) -> u8 {
        let mut buf = vec![0u8; CHUNK];
        let mut exited: Option<(u8, Instant)> = None;
        loop {
            if exited.is_none() {
                exited = self.exit_rx.try_recv().ok().map(|c| (c, Instant::now()));
            }
            if let Some((code, _)) = exited {
                if self.streams.iter().all(Option::is_none) {
                    return code;
                }
            }
            // A terminal's leader is gone: bounded wait for the rest of its output.
            let timeout = match exited {
                Some((code, at)) if self.hub.tty => {
                    let left = TTY_DRAIN_MAX.saturating_sub(at.elapsed());
                    if left.is_zero() {
                        return code;
                    }
                    left.min(TTY_QUIET)
                }
                // Woken by output or by the waiter; an idle session costs nothing.
                _ => Duration::from_secs(3600),
            };
            let mut fds = [pollfd(self.wake_fd()), pollfd(-1), pollfd(-1)];
            for (slot, stream) in fds[1..].iter_mut().zip(&self.streams) {
                if let Some((_, fd)) = stream {
                    slot.fd = fd.as_raw_fd(); // negative fds are ignored by poll
                }
            }
            if poll(&mut fds, timeout).is_err() {
                return exited.map_or(1, |(c, _)| c);
            }
            if fds[0].revents != 0 {
                self.wake.drain();
            }
            let quiet = fds[1..].iter().all(|f| f.revents == 0) && fds[0].revents == 0;
            if let (true, Some((code, _)), true) = (quiet, exited, self.hub.tty) {
                return code; // quiet for TTY_QUIET after the exit
            }
            for i in 0..2 {
                if fds[i + 1].revents == 0 {
                    continue;
                }
                let Some((id, fd)) = &self.streams[i] else {
                    continue;
                };
                let id = *id;
                match read_fd(fd, &mut buf) {
                    // EOF of a pipe; EIO of a terminal nobody holds any more.
                    Ok(0) | Err(_) => self.streams[i] = None,
                    Ok(n) => self.hub.publish(id, &buf[..n]),
                }
            }
        }
    }

    fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake.0.as_raw_fd()
    }
}

/// Where a session's typed input goes.
#[derive(Clone)]
enum Input {
    /// A pipe: written at once while it has room, queued to a helper thread otherwise.
    Pipe(Arc<StdinSink>),
    /// A terminal's master, through [`terminal_input`]: it stays blocking, since the output
    /// thread reads the same open file.
    Terminal(Sender<(Vec<u8>, usize)>),
}

fn terminal_input(mut master: File, rx: Receiver<(Vec<u8>, usize)>) {
    for (buf, offset) in rx {
        if master.write_all(&buf[offset.min(buf.len())..]).is_err() {
            return;
        }
    }
    // Every sender is gone (stdin closed, or the process exited).
}
