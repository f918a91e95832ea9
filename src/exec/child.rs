//! [`Child`]: a running remote command, like `std::process::Child`.

use super::frame;
use super::io::{
    Control, ControlOp, Framing, MessageHandler, Outcome, Reader, SESSION_INFO_WAIT, Shared, Sink,
    StdinSource, Writer, closed_error,
};
use super::local_stdin::{self, LocalInput};
use super::pipes::{
    ChildStderr, ChildStdin, ChildStdout, Chunk, OUTPUT_CHUNKS, OutputReader, STDIN_FRAMES,
    StdinSender, StdioKind,
};
use super::ports::{PortEvent, PortEvents};
use super::status::{ExitStatus, Output};
use crate::error::Error;
use crate::sprite::Sprite;
use crate::url::Query;
use crate::ws::{self, Socket};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, select, unbounded};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::{Bytes, Message};

/// How long [`Child::session_id`] waits for the server's first message.
const SESSION_ID_WAIT: Duration = Duration::from_secs(10);
/// After a timeout's kill, how long to wait for the exit report before cutting the connection
/// (which makes the server kill the process group).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What [`Command`](crate::Command) hands to [`Child::spawn`].
pub(crate) struct Spawn {
    pub(crate) sprite: Sprite,
    pub(crate) path: String,
    /// The exec's parameters for a control connection's `op.start` (the same as `path`'s
    /// query).
    pub(crate) args: Vec<(&'static str, String)>,
    pub(crate) stdin: StdioKind,
    pub(crate) stdout: StdioKind,
    pub(crate) stderr: StdioKind,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_message: Option<MessageHandler>,
    /// A terminal session (`tty=true` is in `path`).
    pub(crate) tty: bool,
    /// Deliver port notifications as [`PortEvents`].
    pub(crate) port_events: bool,
}

/// Port events queued before the reader waits for the caller to take some.
const QUEUED_PORT_EVENTS: usize = 64;

/// A command running on a sprite, like [`std::process::Child`], or a session attached to with
/// [`Sprite::attach`].
///
/// Its pipes are `Some` when configured with [`Stdio::piped`](crate::Stdio::piped). Dropping a
/// `Child` does not stop the remote command (std's rule); [`kill`](Self::kill) does. A spawned
/// command keeps its connection (and so its output) until it exits; an attached session is
/// detached ([`detach`](Self::detach)) and keeps running without it.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-2", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("s")?;
/// use std::io::{Read, Write};
/// use sprites::Stdio;
/// let mut child = sprite.command("tr").arg("a-z").arg("A-Z")
///     .stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
/// child.stdin.take().unwrap().write_all(b"shout")?;
/// let mut upper = String::new();
/// child.stdout.take().unwrap().read_to_string(&mut upper)?;
/// assert_eq!(upper, "SHOUT");
/// assert!(child.wait()?.success());
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
pub struct Child {
    /// The command's stdin, if piped.
    pub stdin: Option<ChildStdin>,
    /// The command's stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// The command's stderr, if piped.
    pub stderr: Option<ChildStderr>,
    sprite: Sprite,
    socket: Arc<Socket>,
    shared: Arc<Shared>,
    control: Sender<Control>,
    signal_on_socket: bool,
    outcome: Receiver<Outcome>,
    finished: Option<Finished>,
    threads: Vec<JoinHandle<()>>,
    timeout: Option<(Duration, Instant)>,
    /// A terminal session: raw frames both ways, output on stdout only.
    tty: bool,
    port_events: Option<PortEvents>,
    /// Detaches an attachment when the `Child` is dropped. A field, not `Drop` on `Child`:
    /// that would forbid moving a pipe out of an owned `Child`, which std's allows.
    detach_on_drop: DetachOnDrop,
}

/// Closes the connection when dropped, if armed (an attachment; a spawned command keeps std's
/// rule and its connection).
struct DetachOnDrop {
    socket: Arc<Socket>,
    shared: Arc<Shared>,
    armed: bool,
}

impl DetachOnDrop {
    fn detach(&mut self) {
        self.armed = false;
        self.shared
            .detached
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // An attachment over control that ended has its connection back in the pool.
        if !self
            .shared
            .connection_claimed
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.socket.close_now(1000);
        }
    }
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.detach();
        }
    }
}

/// What a command run on the caller's thread ([`Child::run_inline`]) left.
pub(crate) struct Completed {
    pub(crate) status: ExitStatus,
    /// What a piped stdout collected (empty otherwise).
    pub(crate) stdout: Vec<u8>,
    /// What a piped stderr collected (empty otherwise).
    pub(crate) stderr: Vec<u8>,
}

/// The final result, kept so `wait` can be called again.
enum Finished {
    Exited(ExitStatus),
    Failed(Arc<Error>),
}

impl Child {
    pub(crate) fn spawn(spec: Spawn) -> io::Result<Child> {
        // Before connecting: a command that starts is a command that runs.
        check_directions(&spec)?;
        let client = spec.sprite.client();
        let framing = if spec.tty {
            Framing::Terminal
        } else {
            Framing::Streams
        };
        // A warm control connection: the request goes out at once, and the writer thread
        // sends stdin and its end right behind it, all without waiting for an answer.
        while let Some(lease) = crate::control::checkout(client, spec.sprite.name()) {
            let start = crate::control::exec_start(&spec.args);
            if lease.socket.send(Message::Text(start.into())).is_ok() {
                let (socket, capabilities) = (lease.socket.clone(), lease.capabilities.clone());
                return Child::start(spec, socket, &capabilities, framing, Some(lease));
            }
            // Dead before anything was sent on it: dropping the lease closes it; next.
        }
        let accepted = ws::dial(client, &spec.path)?;
        if let Some(version) = &accepted.version {
            // Saves the attach a request for it later.
            client
                .inner
                .runtimes
                .record_version(spec.sprite.name(), version);
        }
        // This command has its connection; the next one should find a control connection.
        crate::control::dial_for_next(client, spec.sprite.name());
        let socket = Arc::new(accepted.socket);
        Child::start(spec, socket, &accepted.capabilities, framing, None)
    }

    /// Runs a command to its end on the calling thread, over an idle control connection,
    /// when nothing about it needs a thread of its own: no stdin (`Stdio::null`), no
    /// timeout, no port events, output collected ([`Stdio::piped`](crate::Stdio::piped)),
    /// discarded, inherited or written to a file. Like std's `output()`, which reads both
    /// pipes on the caller's thread rather than spawn any: the round trip then pays for no
    /// thread start, hand-over or join. `Err(spec)` gives the command back when that is not
    /// the case or no connection is idle, for [`Child::spawn`].
    pub(crate) fn run_inline(spec: Spawn) -> Result<io::Result<Completed>, Box<Spawn>> {
        let fits = matches!(spec.stdin, StdioKind::Null)
            && spec.timeout.is_none()
            && !spec.port_events
            && [&spec.stdout, &spec.stderr].iter().all(|k| {
                matches!(
                    k,
                    StdioKind::Piped
                        | StdioKind::Null
                        | StdioKind::Inherit
                        | StdioKind::LocalStdout
                        | StdioKind::LocalStderr
                        | StdioKind::File(_)
                )
            });
        if !fits {
            return Err(Box::new(spec));
        }
        let client = spec.sprite.client().clone();
        let lease = loop {
            let Some(lease) = crate::control::checkout(&client, spec.sprite.name()) else {
                return Err(Box::new(spec));
            };
            let start = crate::control::exec_start(&spec.args);
            if lease.socket.send(Message::Text(start.into())).is_err() {
                // Dead before anything was sent on it: dropping the lease closes it; next.
                continue;
            }
            // The end of (no) stdin right behind the request, as the writer thread would
            // send it. From here the op is under way: a failure is the command's.
            if !spec.tty
                && let Err(err) = lease.socket.send(Message::Binary(frame::stdin_eof()))
            {
                return Ok(Err(closed_error(err).into()));
            }
            break lease;
        };
        let collect = |kind: StdioKind, inherit: Sink| match kind {
            StdioKind::Piped => {
                let all = Arc::new(std::sync::Mutex::new(Vec::new()));
                (Sink::Collect(all.clone()), Some(all))
            }
            other => (output_sink(other, inherit).0, None),
        };
        let (stdout_sink, stdout) = collect(spec.stdout, Sink::Stdout);
        let (stderr_sink, stderr) = collect(spec.stderr, Sink::Stderr);
        // No writer thread: its end is known at once.
        let (_, writer_finished) = bounded::<()>(0);
        let (outcome_tx, outcome_rx) = bounded(1);
        let keepalive = client.inner.keepalive;
        let reader = Reader {
            socket: lease.socket.clone(),
            stdout: stdout_sink,
            stderr: stderr_sink,
            on_message: spec.on_message,
            ports: None,
            framing: if spec.tty {
                Framing::Terminal
            } else {
                Framing::Streams
            },
            shared: Arc::new(Shared::default()),
            outcome: outcome_tx,
            keepalive,
            done: None,
            on_finish: None,
            control: Some(ControlOp {
                lease,
                writer_finished,
                exit: None,
                ended: false,
            }),
            ping_every: Some(keepalive.interval),
        };
        reader.run();
        let take = |all: Option<Arc<std::sync::Mutex<Vec<u8>>>>| {
            all.map(|all| std::mem::take(&mut *all.lock().unwrap_or_else(|p| p.into_inner())))
                .unwrap_or_default()
        };
        let (stdout, stderr) = (take(stdout), take(stderr));
        Ok(match outcome_rx.try_recv() {
            Ok(Outcome::Exited(code)) => Ok(Completed {
                status: ExitStatus::from_code(code),
                stdout,
                stderr,
            }),
            Ok(Outcome::Failed(err)) => Err(io::Error::new(err.io_kind(), err)),
            Err(_) => {
                Err(Error::Protocol("the command's reader ended without a result".into()).into())
            }
        })
    }

    /// Attaches to session `id` ([PROTOCOL.md §7.2](crate::protocol#72-attach--websocket-v1spritesnameexecid-or-execidid)):
    /// pipes for all three streams, the framing from `session_info`.
    pub(crate) fn attach(sprite: &Sprite, id: &str) -> io::Result<Child> {
        if id.is_empty() {
            return Err(Error::InvalidInput("a session id must not be empty".into()).into());
        }
        let client = sprite.client();
        // A warm control connection (§8.3): the attach request goes out at once. Anything
        // that goes wrong before session_info (an unknown session, a server that does not
        // attach over control) falls back to the attach socket, whose answer is the
        // authoritative one (a 404 for an unknown session).
        if let Some(lease) = crate::control::checkout(client, sprite.name()) {
            let start = crate::control::attach_start(id);
            if lease.socket.send(Message::Text(start.into())).is_ok() {
                let (socket, capabilities) = (lease.socket.clone(), lease.capabilities.clone());
                match Child::attached(sprite, socket, &capabilities, Some(lease)) {
                    Ok(child) => return Ok(child),
                    Err(e) => log::debug!("attach over a control connection: {e}"),
                }
            }
        }
        let accepted = super::attach::dial(sprite, id)?;
        crate::control::dial_for_next(client, sprite.name());
        let socket = Arc::new(accepted.socket);
        Child::attached(sprite, socket, &accepted.capabilities, None)
    }

    /// The attached session on `socket` once its session_info came.
    fn attached(
        sprite: &Sprite,
        socket: Arc<Socket>,
        capabilities: &[String],
        lease: Option<crate::control::Lease>,
    ) -> io::Result<Child> {
        let spec = Spawn {
            sprite: sprite.clone(),
            path: String::new(),
            args: Vec::new(),
            stdin: StdioKind::Piped,
            stdout: StdioKind::Piped,
            stderr: StdioKind::Piped,
            timeout: None,
            on_message: None,
            tty: false,
            port_events: false,
        };
        let over_control = lease.is_some();
        let mut child = Child::start(spec, socket, capabilities, Framing::pending(), lease)?;
        child.detach_on_drop.armed = true;
        // The reader ends the connection itself when session_info is late; the margin only
        // covers scheduling.
        match child
            .shared
            .session_tty(SESSION_INFO_WAIT + Duration::from_secs(1))
        {
            Some(tty) => {
                child.tty = tty;
                if let Some(stdin) = &mut child.stdin {
                    stdin.tx.set_raw(tty);
                }
                if tty {
                    // A terminal merges stderr into stdout.
                    child.stderr = None;
                }
                Ok(child)
            }
            None => {
                child.detach_on_drop.armed = false;
                // Over control the reader has ended the op itself: it gave a clean
                // connection (an op.error read) back to the pool, which must not be cut.
                if !over_control {
                    child.socket.shutdown();
                }
                match child.wait() {
                    Err(err) => Err(err),
                    Ok(status) => Err(Error::Protocol(format!(
                        "the session ended ({status}) before the server sent session_info"
                    ))
                    .into()),
                }
            }
        }
    }

    /// Starts the reader and writer threads on an accepted connection.
    fn start(
        spec: Spawn,
        socket: Arc<Socket>,
        capabilities: &[String],
        framing: Framing,
        lease: Option<crate::control::Lease>,
    ) -> io::Result<Child> {
        let attaching = matches!(framing, Framing::Pending { .. });
        let signal_on_socket = capabilities.iter().any(|c| c == "signal");
        let (finished_tx, finished_rx) = bounded::<()>(0);
        let control = lease.map(|lease| ControlOp {
            lease,
            writer_finished: finished_rx,
            exit: None,
            ended: false,
        });
        let shared = Arc::new(Shared::default());

        let (stdin_tx, stdin_rx) = bounded::<Bytes>(STDIN_FRAMES);
        let stdin_tx = StdinSender::new(stdin_tx, spec.tty);
        let (control_tx, control_rx) = unbounded();
        let (done_tx, done_rx) = bounded::<()>(0);
        let (outcome_tx, outcome_rx) = bounded(1);

        let mut on_finish = None;
        let mut stdin_source = StdinSource::Frames(stdin_rx);
        let stdin = match spec.stdin {
            StdioKind::Piped => Some(ChildStdin { tx: stdin_tx }),
            StdioKind::Inherit => {
                on_finish = Some(local_stdin::forward(LocalInput::Stdin, stdin_tx)?);
                None
            }
            StdioKind::File(file) => {
                on_finish = Some(local_stdin::forward(LocalInput::File(file), stdin_tx)?);
                None
            }
            StdioKind::RemoteOutput(reader) => {
                stdin_source = StdinSource::Upstream(reader);
                None
            }
            // Dropping the sender now makes the writer send EOF at once, as Go and Py do.
            // (The other kinds were refused by check_directions.)
            _ => None,
        };
        let (stdout_sink, stdout) = output_sink(spec.stdout, Sink::Stdout);
        let (stderr_sink, stderr) = output_sink(spec.stderr, Sink::Stderr);
        let (ports_tx, port_events) = if spec.port_events {
            let (tx, rx) = bounded::<PortEvent>(QUEUED_PORT_EVENTS);
            (Some(tx), Some(PortEvents::new(rx)))
        } else {
            (None, None)
        };

        let timeout = spec.timeout.map(|t| (t, Instant::now() + t));
        let kill_fallback: Option<Box<dyn Fn() + Send>> = if signal_on_socket {
            None
        } else {
            let sprite = spec.sprite.clone();
            let shared = shared.clone();
            Some(Box::new(move || {
                let _ = kill_over_http(&sprite, &shared, "KILL");
            }))
        };

        let reader = Reader {
            socket: socket.clone(),
            stdout: stdout_sink,
            stderr: stderr_sink,
            on_message: spec.on_message,
            ports: ports_tx,
            framing,
            shared: shared.clone(),
            outcome: outcome_tx,
            keepalive: spec.sprite.client().inner.keepalive,
            done: Some(done_tx),
            on_finish,
            control,
            ping_every: None,
        };
        let writer = Writer {
            socket: socket.clone(),
            stdin: stdin_source,
            control: control_rx,
            done: done_rx,
            deadline: timeout.map(|(_, deadline)| deadline),
            shared: shared.clone(),
            ping_interval: spec.sprite.client().inner.keepalive.interval,
            kill_fallback,
            raw_stdin: spec.tty,
            send_eof: !spec.tty && !attaching,
            finished: Some(finished_tx),
        };
        let (socket_for_guard, shared_for_guard) = (socket.clone(), shared.clone());
        let threads = vec![
            std::thread::Builder::new()
                .name("sprites-exec-reader".into())
                .spawn(move || reader.run())?,
            std::thread::Builder::new()
                .name("sprites-exec-writer".into())
                .spawn(move || writer.run())?,
        ];
        Ok(Child {
            stdin,
            stdout: stdout.map(|reader| ChildStdout { reader }),
            stderr: stderr.map(|reader| ChildStderr { reader }),
            sprite: spec.sprite,
            socket,
            shared,
            control: control_tx,
            signal_on_socket,
            outcome: outcome_rx,
            finished: None,
            threads,
            timeout,
            tty: spec.tty,
            port_events,
            detach_on_drop: DetachOnDrop {
                socket: socket_for_guard,
                shared: shared_for_guard,
                armed: false,
            },
        })
    }

    /// The session id the server assigned: the remote process id, as a string
    /// ([PROTOCOL.md §6.4](crate::protocol#64-text-frames-from-the-server)).
    ///
    /// The server announces it in its first message, which arrives with the connection, so this
    /// returns at once in practice. Otherwise it waits for the server's first message (at most 10 s)
    /// and is `None` if that message is not the announcement.
    ///
    /// std's `Child::id` returns a `u32` that always exists; a remote process id only exists once the
    /// server says it, hence this name and [`pid`](Self::pid) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-session_id", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sleep").arg("60").spawn()?;
    /// let id = child.session_id().expect("announced by sprites-local");
    /// assert!(id.parse::<u32>().is_ok());
    /// child.kill()?;
    /// # child.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn session_id(&self) -> Option<String> {
        self.shared.session_id(SESSION_ID_WAIT)
    }

    /// The remote process id (on the sprite, not on this machine), when the server announced
    /// one: [`session_id`](Self::session_id) as a number.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-pid", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sleep").arg("60").spawn()?;
    /// let pid = child.pid().expect("announced by sprites-local");
    /// let out = sprite.command("ps").args(["-o", "comm=", "-p", &pid.to_string()]).output()?;
    /// assert_eq!(out.stdout, b"sleep\n");
    /// child.kill()?;
    /// # child.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.session_id()?.parse().ok()
    }

    /// Whether the session has a terminal: as asked with [`Command::tty`](crate::Command::tty),
    /// or as the server's `session_info` said for an attached session.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-is_tty", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::Stdio;
    /// let mut shell = sprite.command("sh").tty(true).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    /// assert!(shell.is_tty());
    /// let id = shell.session_id().expect("announced");
    /// shell.detach();
    /// let mut again = sprite.attach(&id)?;
    /// assert!(again.is_tty()); // from the server's session_info
    /// again.kill()?;
    /// # again.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Tells the terminal its new size, in character cells: the remote program gets `SIGWINCH`
    /// and `stty size` reads `rows cols`. Resizing a session that has ended does nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a session without a terminal, or a size of 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-resize", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::{Read, Write};
    /// use sprites::Stdio;
    /// let mut child = sprite.command("sh").tty(true).tty_size(24, 80)
    ///     .stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    /// child.resize(40, 120)?;
    /// // The resize goes out before the keystrokes queued after it.
    /// child.stdin.as_mut().unwrap().write_all(b"stty size; exit\n")?;
    /// let mut screen = String::new();
    /// child.stdout.take().unwrap().read_to_string(&mut screen)?;
    /// assert!(screen.contains("40 120"), "{screen}");
    /// # child.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn resize(&mut self, rows: u16, cols: u16) -> io::Result<()> {
        if !self.tty {
            return Err(Error::InvalidInput(
                "only a terminal session (Command::tty) can be resized".into(),
            )
            .into());
        }
        check_size(rows, cols)?;
        if self.has_exited() {
            return Ok(());
        }
        // The writer is gone only if the connection is; wait() will report that.
        let _ = self.control.send(Control::Resize { rows, cols });
        Ok(())
    }

    /// Leaves the session without stopping it: closes the connection (close 1000) and returns
    /// at once. A detachable session ([`Command::detachable`](crate::Command::detachable), any
    /// terminal session, any attached one) keeps running on the sprite, and
    /// [`Sprite::attach`] with its [`session_id`](Self::session_id) comes back to it. Any
    /// other command is killed by the server when its connection goes
    /// ([PROTOCOL.md §6.6](crate::protocol#66-exit-close-keepalive)).
    ///
    /// Pipes taken out of the `Child` end (EOF) once what had arrived is read. Dropping an
    /// attached session detaches it the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-detach", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::Stdio;
    /// let child = sprite.command("sleep").arg("60").detachable(true).stdin(Stdio::null()).spawn()?;
    /// let id = child.session_id().expect("announced");
    /// child.detach();
    /// assert!(sprite.sessions()?.iter().any(|s| s.id == id)); // still running
    /// sprite.kill_session(&id, "KILL", std::time::Duration::ZERO)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn detach(mut self) {
        if self.finished.is_none() {
            self.detach_on_drop.detach();
        }
        self.detach_on_drop.armed = false;
    }

    /// The command's port events, once: `Some` the first time after
    /// [`Command::port_events(true)`](crate::Command::port_events), `None` otherwise (not asked
    /// for, already taken, or an attached session).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-port_events", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("true").port_events(true).spawn()?;
    /// let events = child.port_events().expect("asked for");
    /// assert!(child.port_events().is_none()); // taken
    /// child.wait()?;
    /// assert_eq!(events.count(), 0); // `true` listens on nothing; the iterator ends with it
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn port_events(&mut self) -> Option<PortEvents> {
        self.port_events.take()
    }

    /// Sends a signal to the remote command: `"TERM"`, `"SIGTERM"`, `"INT"`, `"HUP"`, `"KILL"`,
    /// `"QUIT"`, `"USR1"`, `"USR2"`, ... Signalling a command that has exited does nothing. An extra
    /// beside std (whose `Child` can only `kill`).
    ///
    /// Goes over the exec socket when the server advertises the `signal` capability, else through the
    /// session kill endpoint ([PROTOCOL.md §7.3](crate::protocol#73-kill--post-v1spritesnameexecidkill)).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a name that is not a signal name; without the capability,
    /// the errors of the kill request (a transport error, or a protocol error when the server never
    /// announced a session id).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-signal", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sleep").arg("60").spawn()?;
    /// child.signal("TERM")?;
    /// assert_eq!(child.wait()?.signal(), Some(15));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn signal(&mut self, signal: &str) -> io::Result<()> {
        let name = normalize_signal(signal)?;
        if self.has_exited() {
            return Ok(());
        }
        if self.signal_on_socket {
            // The writer is gone only if the connection is; wait() will report that.
            let _ = self.control.send(Control::Signal(name));
            Ok(())
        } else {
            kill_over_http(&self.sprite, &self.shared, &name).map_err(io::Error::from)
        }
    }

    /// Kills the remote command (SIGKILL), as std's `Child::kill`: `Ok` if it has already exited.
    ///
    /// # Errors
    ///
    /// As [`signal`](Self::signal).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-kill", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sleep").arg("60").spawn()?;
    /// child.kill()?;
    /// let status = child.wait()?;
    /// assert_eq!((status.code(), status.signal()), (None, Some(9)));
    /// child.kill()?; // exited: nothing to do
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn kill(&mut self) -> io::Result<()> {
        self.signal("KILL")
    }

    /// Waits for the command to exit, closing its stdin first (std's behaviour). When it returns,
    /// nothing of the command is left in this process: no thread, no socket.
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::TimedOut`] ([`Error::TimedOut`]) after a
    ///   [`Command::timeout`](crate::Command::timeout) kill;
    /// - [`io::ErrorKind::ConnectionReset`] ([`Error::ConnectionClosed`], with the close code and
    ///   reason) when the connection ends without an exit status — never a made-up success;
    /// - [`io::ErrorKind::TimedOut`] ([`Error::KeepaliveTimeout`]) when the server says nothing for
    ///   the keepalive limit (45 s by default).
    ///
    /// A second call returns the same status or error.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-wait", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sh").args(["-c", "exit 7"]).spawn()?;
    /// assert_eq!(child.wait()?.code(), Some(7));
    /// assert_eq!(child.wait()?.code(), Some(7));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        if self.finished.is_none() {
            let outcome = match self.timeout {
                None => self
                    .outcome
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some((_, deadline)) => self.outcome.recv_deadline(deadline + KILL_GRACE),
            };
            match outcome {
                Ok(outcome) => self.finish(outcome),
                Err(RecvTimeoutError::Timeout) => {
                    // The kill got no answer: cut the connection, which makes the server kill
                    // the process group, and stop waiting.
                    self.socket.shutdown();
                    self.shared
                        .timed_out
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    let timeout = self.timeout.map(|(t, _)| t).unwrap_or_default();
                    self.finished = Some(Finished::Failed(Arc::new(Error::TimedOut(timeout))));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.finished = Some(Finished::Failed(Arc::new(Error::Protocol(
                        "the connection's reader thread stopped".into(),
                    ))));
                }
            }
        }
        self.result()
    }

    /// The exit status if the command has exited, without blocking, as std's `Child::try_wait`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), once the command has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-try_wait", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut child = sprite.command("sleep").arg("60").spawn()?;
    /// assert_eq!(child.try_wait()?, None);
    /// child.kill()?;
    /// child.wait()?;
    /// assert!(child.try_wait()?.is_some());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.finished.is_none() {
            match self.outcome.try_recv() {
                Ok(outcome) => self.finish(outcome),
                Err(_) => return Ok(None),
            }
        }
        self.result().map(Some)
    }

    /// Waits for exit while collecting all of stdout and stderr (those that are piped), reading
    /// both at once so that a command filling one cannot deadlock on the other, as std's does.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-child-wait_with_output", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::Stdio;
    /// let child = sprite.command("sh").args(["-c", "echo out; echo err >&2"])
    ///     .stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    /// let out = child.wait_with_output()?;
    /// assert_eq!((out.stdout, out.stderr), (b"out\n".to_vec(), b"err\n".to_vec()));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut out = self.stdout.take().map(|p| p.reader);
        let mut err = self.stderr.take().map(|p| p.reader);
        // Drain both at once so a command that fills one pipe while we wait on the other
        // cannot deadlock (std does the same with poll).
        loop {
            let (out_done, err_done) = match (&mut out, &mut err) {
                (None, None) => break,
                (Some(reader), None) => (drain(reader, &mut stdout), false),
                (None, Some(reader)) => (false, drain(reader, &mut stderr)),
                (Some(o), Some(e)) => {
                    let (o_rx, e_rx) = (o.receiver().clone(), e.receiver().clone());
                    select! {
                        recv(o_rx) -> chunk => (take(chunk, o, &mut stdout), false),
                        recv(e_rx) -> chunk => (false, take(chunk, e, &mut stderr)),
                    }
                }
            };
            if out_done {
                out = None;
            }
            if err_done {
                err = None;
            }
        }
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.try_wait(), Ok(Some(_)) | Err(_))
    }

    fn finish(&mut self, outcome: Outcome) {
        // The reader sent the outcome as its last act and the writer stops when the reader
        // does, so these joins are short; joining makes "wait returned" mean "nothing left".
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Ended: there is nothing left to detach from.
        self.detach_on_drop.armed = false;
        self.finished = Some(match outcome {
            Outcome::Exited(code) => Finished::Exited(ExitStatus::from_code(code)),
            Outcome::Failed(err) => Finished::Failed(Arc::new(err)),
        });
    }

    fn result(&self) -> io::Result<ExitStatus> {
        let timed_out = self
            .shared
            .timed_out
            .load(std::sync::atomic::Ordering::SeqCst);
        match (&self.finished, self.timeout) {
            (_, Some((timeout, _))) if timed_out => Err(Error::TimedOut(timeout).into()),
            (Some(Finished::Exited(status)), _) => Ok(*status),
            (Some(Finished::Failed(err)), _) => Err(io::Error::new(err.io_kind(), err.clone())),
            (None, _) => Err(io::Error::other("the command has not finished")),
        }
    }
}

fn output_sink(kind: StdioKind, inherit: Sink) -> (Sink, Option<OutputReader>) {
    match kind {
        StdioKind::Piped => {
            let (tx, rx) = bounded::<Chunk>(OUTPUT_CHUNKS);
            (Sink::Channel(tx), Some(OutputReader::new(rx)))
        }
        StdioKind::Inherit => (inherit, None),
        StdioKind::LocalStdout => (Sink::Stdout, None),
        StdioKind::LocalStderr => (Sink::Stderr, None),
        StdioKind::File(file) => (Sink::File(file), None),
        StdioKind::RemoteInput(stdin) => (Sink::Remote(stdin.tx), None),
        // Refused by check_directions.
        StdioKind::Null | StdioKind::RemoteOutput(_) | StdioKind::Used => (Sink::Null, None),
    }
}

/// Refuses a `Stdio` used in a direction it cannot go: this process's stdout as a command's
/// input, another command's stdout as a command's output, and the like.
fn check_directions(spec: &Spawn) -> io::Result<()> {
    let refuse = |what: &str, role: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} cannot be a command's {role}"),
        ))
    };
    match &spec.stdin {
        StdioKind::LocalStdout => return refuse("this process's stdout", "stdin"),
        StdioKind::LocalStderr => return refuse("this process's stderr", "stdin"),
        StdioKind::RemoteInput(_) => return refuse("another command's stdin", "stdin"),
        _ => {}
    }
    for (kind, role) in [(&spec.stdout, "stdout"), (&spec.stderr, "stderr")] {
        if let StdioKind::RemoteOutput(_) = kind {
            return refuse("another command's output", role);
        }
    }
    Ok(())
}

/// Reads a pipe to its end; returns `true` (done).
fn drain(reader: &mut OutputReader, into: &mut Vec<u8>) -> bool {
    into.extend_from_slice(&reader.take_current());
    // Errors surface from wait(); here we just stop collecting.
    while let Ok(Some(chunk)) = reader.next_chunk() {
        into.extend_from_slice(&chunk);
    }
    true
}

/// Appends one received chunk; returns `true` when the pipe has ended.
fn take(
    chunk: Result<Chunk, crossbeam_channel::RecvError>,
    reader: &mut OutputReader,
    into: &mut Vec<u8>,
) -> bool {
    into.extend_from_slice(&reader.take_current());
    match chunk {
        Ok(Chunk::Data(data)) => {
            into.extend_from_slice(&data);
            false
        }
        Ok(Chunk::Failed(_)) | Err(_) => true,
    }
}

/// `SIGTERM`, `term`, `TERM` → `TERM`. Numbers pass through.
pub(crate) fn normalize_signal(signal: &str) -> Result<String, Error> {
    let upper = signal.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::InvalidInput(format!(
            "{signal:?} is not a signal name"
        )));
    }
    Ok(name.to_owned())
}

/// `POST /exec/{id}/kill?signal=NAME&timeout=0s`; 410 (already exited) counts as success.
fn kill_over_http(sprite: &Sprite, shared: &Shared, signal: &str) -> Result<(), Error> {
    let id = shared.session_id(SESSION_ID_WAIT).ok_or_else(|| {
        Error::Protocol("the server never announced a session id to signal".into())
    })?;
    let mut query = Query::new();
    query.push("signal", signal).push("timeout", "0s");
    let path = sprite.path(&format!(
        "/exec/{}/kill{}",
        crate::url::encode(&id),
        query.as_str()
    ));
    let client = sprite.client();
    match client.send(client.request("POST", &path), None) {
        Ok(_) => Ok(()),
        Err(Error::Api(api)) if api.status == 410 => Ok(()),
        Err(err) => Err(err),
    }
}

/// A terminal size must be at least one cell each way.
pub(crate) fn check_size(rows: u16, cols: u16) -> Result<(), Error> {
    if rows == 0 || cols == 0 {
        return Err(Error::InvalidInput(format!(
            "a terminal of {rows} rows and {cols} columns cannot show anything"
        )));
    }
    Ok(())
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("sprite", &self.sprite.name())
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("tty", &self.tty)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_signal;

    #[test]
    fn signal_names() {
        assert_eq!(normalize_signal("SIGTERM").unwrap(), "TERM");
        assert_eq!(normalize_signal(" kill ").unwrap(), "KILL");
        assert_eq!(normalize_signal("9").unwrap(), "9");
        assert!(normalize_signal("").is_err());
        assert!(normalize_signal("TERM;rm").is_err());
    }
}
