//! [`AgentHandle`]: the server's side of one sprite's agent (the agent itself, inside the
//! sprite, is in [`super::agent`]): starting it, sending it spawn, signal and filesystem
//! requests, and routing its replies and exit reports to the threads that wait for them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::entry::{self, CTL_FD};
use super::ipc::{self, Event, FsCall, FsReply, Request, StubConfig};
use crate::lock;
use crate::sys;
use crate::sys::socket::set_recv_timeout;

/// How long an agent may take to build the sprite's root and report ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a spawn request may take (fork + exec inside the sprite).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping an agent waits for it to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a filesystem call may take inside the sprite (a copy of a big tree is the slow
/// one); each later read of its reply is bounded by the same time.
const FS_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Largest filesystem reply accepted (a listing is capped at 100 000 entries, a few tens of
/// MiB). The reply comes from a process of the sprite's: memory grows with what it sends,
/// not with what it declares.
const MAX_FS_REPLY: u64 = 64 << 20;
/// Wait status meaning "killed by SIGKILL", reported for execs whose agent died.
const KILLED: i32 = libc::SIGKILL;

/// What to start, for [`AgentHandle::spawn`].
pub struct SpawnArgs<'a> {
    /// Program to look up in the `PATH` of `env` (or a path with a `/`).
    pub program: &'a str,
    /// Full argv.
    pub argv: &'a [String],
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sprite.
    pub cwd: &'a str,
    /// `cwd` is the default: start in `/` if it is gone.
    pub fallback_cwd: bool,
    /// A terminal of this size (rows, columns) as stdio.
    pub tty: Option<(u16, u16)>,
    /// What the sprite's policies set on the process.
    pub policy: ipc::ExecPolicy,
    /// KILL the process group when the process exits, before reaping it.
    pub end_group_with_leader: bool,
}

/// The outcome of a spawn request.
pub enum SpawnReply {
    /// Running: its pid inside the sprite, on the host, and where its exit status arrives.
    Spawned {
        /// pid inside the sprite.
        pid: i32,
        /// pid as the server sees it (unique across sprites).
        host_pid: u32,
        /// Receives the raw wait status once.
        exit: Receiver<i32>,
        /// A TTY exec's terminal master.
        terminal: Option<OwnedFd>,
    },
    /// Failed in `stage` (`dir` or `exec`) with `errno`.
    Failed {
        /// `dir` or `exec`.
        stage: String,
        /// errno.
        errno: i32,
    },
}

/// A sprite's DNS sockets and network namespace ([`AgentHandle::resolver_sockets`]).
pub struct ResolverSockets {
    /// UDP, bound inside the sprite.
    pub udp: OwnedFd,
    /// A TCP listener, bound inside the sprite.
    pub tcp: OwnedFd,
    /// The sprite's network namespace.
    pub netns: OwnedFd,
}

/// What a freshly started agent reported.
#[derive(Debug)]
pub struct Readiness {
    /// The upper layer's owners were moved to the sprite's id range.
    pub shifted: bool,
    /// Why the base is not id-mapped, if it is not.
    pub unmapped_base: Option<String>,
    /// The sprite's disk, mounted (a detached mount), for the next start.
    pub disk: Option<OwnedFd>,
}

/// Who waits for what the agent sends: spawn replies by request id, exit statuses by pid.
#[derive(Default)]
struct Waiters {
    pending: HashMap<u64, Sender<SpawnReply>>,
    exits: HashMap<i32, Sender<i32>>,
    /// The agent is gone (its socket closed); the stub may be reaped any moment.
    dead: bool,
}

/// The server's handle on a running agent.
pub struct AgentHandle {
    sock: OwnedFd,
    waiters: Arc<Mutex<Waiters>>,
    /// pidfd of the agent (PID 1 of the sprite).
    init: OwnedFd,
    next_id: AtomicU64,
    done: Receiver<()>,
}

impl AgentHandle {
    /// Starts the helper for `cfg.sprite_dir` and waits until the sprite's root is ready.
    /// Its stderr goes to `log` (inside the data dir, invisible to the sprite).
    /// `held`: the sprite's disk as its previous start left it mounted (see
    /// `disk::mount`), passed on to the stub.
    pub fn start(
        cfg: &StubConfig,
        log: &Path,
        held: Option<&OwnedFd>,
    ) -> io::Result<(Arc<AgentHandle>, Readiness)> {
        entry::keep();
        let (ours, theirs) = sys::socket::seqpacket_pair()?;
        sys::socket::grow_socket_buffers(&ours);
        sys::socket::grow_socket_buffers(&theirs);
        let log = File::create(log)?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(entry::ARGV0)
            .arg("stub")
            // Nothing of the server's environment (its token above all) reaches a sprite.
            .env_clear()
            .env(entry::MARKER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // `theirs` stays open until the spawn below.
        sys::process::pass_fd(&mut cmd, theirs_raw, CTL_FD);
        // The server's raised open-file limit is the server's: a sprite starts with the
        // usual one.
        if let Some(soft) = sys::limits::soft_nofile_for_children() {
            sys::process::soft_nofile_on_exec(&mut cmd, soft);
        }
        let mut stub = cmd.spawn()?;
        drop(theirs);
        let pass: Vec<RawFd> = held.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = ipc::send(ours.as_raw_fd(), cfg, &pass) {
            let _ = stub.kill();
            let _ = stub.wait();
            return Err(e);
        }

        let first = recv_with_timeout(&ours, START_TIMEOUT);
        let (init, ready) = match first {
            Ok(Some((
                Event::Ready {
                    shifted,
                    unmapped_base,
                    ..
                },
                mut fds,
            ))) if matches!(fds.len(), 1 | 2) => (
                fds.remove(0),
                Readiness {
                    shifted,
                    unmapped_base,
                    disk: fds.pop(),
                },
            ),
            other => {
                let _ = stub.kill();
                let _ = stub.wait();
                return Err(match other {
                    Ok(Some((Event::Failed { message }, _))) => io::Error::other(message),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the sprite's agent did not start in time",
                    ),
                    Err(e) => e,
                    _ => io::Error::other("the sprite's agent exited during setup"),
                });
            }
        };
        set_recv_timeout(&ours, None)?;

        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let (done_tx, done) = bounded(1);
        let reader_sock = ours.try_clone()?;
        {
            let waiters = waiters.clone();
            let spawned = thread::Builder::new()
                .name("sprites-agent".into())
                .stack_size(128 * 1024)
                .spawn(move || read_events(reader_sock, &waiters, stub, done_tx));
            // On failure the closure (with the stub) is gone; dropping our socket below
            // makes the agent exit, and with it the sprite.
            spawned?;
        }
        Ok((
            Arc::new(AgentHandle {
                sock: ours,
                waiters,
                init,
                next_id: AtomicU64::new(1),
                done,
            }),
            ready,
        ))
    }

    /// False once the agent has gone away (it is then restarted on next use).
    pub fn is_alive(&self) -> bool {
        !lock(&self.waiters).dead
    }

    /// Asks the agent to start a process: `stdio` as fds 0, 1, 2, or (with `tty`) none
    /// and a new terminal instead.
    pub fn spawn(&self, what: SpawnArgs<'_>, stdio: &[RawFd]) -> io::Result<SpawnReply> {
        let SpawnArgs {
            program,
            argv,
            env,
            cwd,
            fallback_cwd,
            tty,
            policy,
            end_group_with_leader,
        } = what;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        {
            let mut st = lock(&self.waiters);
            if st.dead {
                return Err(io::Error::other("the sprite's agent is not running"));
            }
            st.pending.insert(id, tx);
        }
        let req = Request::Spawn {
            id,
            program: program.to_owned(),
            argv: argv.to_vec(),
            env,
            cwd: cwd.to_owned(),
            fallback_cwd,
            tty,
            policy,
            end_group_with_leader,
        };
        if let Err(e) = ipc::send(self.sock.as_raw_fd(), &req, stdio) {
            lock(&self.waiters).pending.remove(&id);
            return Err(e);
        }
        match rx.recv_timeout(SPAWN_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(_) => {
                lock(&self.waiters).pending.remove(&id);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the sprite's agent did not answer the spawn request",
                ))
            }
        }
    }

    /// Runs a filesystem call inside the sprite (`file` is a commit's temp file) and returns
    /// the reply with any fd it carries. Waits at most [`FS_TIMEOUT`] for the answer.
    pub fn fs(&self, call: &FsCall, file: Option<RawFd>) -> io::Result<(FsReply, Vec<OwnedFd>)> {
        if !self.is_alive() {
            return Err(io::Error::other("the sprite's agent is not running"));
        }
        let (ours, theirs) = sys::socket::stream_pair()?;
        let mut fds = vec![theirs.as_raw_fd()];
        fds.extend(file);
        ipc::send(
            self.sock.as_raw_fd(),
            &Request::Fs { call: call.clone() },
            &fds,
        )?;
        // Only the agent's child may hold the other end now, so EOF means it is gone.
        drop(theirs);
        set_recv_timeout(&ours, Some(FS_TIMEOUT))?;
        let timed_out = |e: io::Error| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the sprite's agent did not answer the filesystem request in time",
                )
            } else {
                e
            }
        };
        let mut header = [0u8; 8];
        let mut got = 0;
        let mut received = Vec::new();
        while got < header.len() {
            let (n, fds) = sys::socket::recv_some_with_fds(ours.as_raw_fd(), &mut header[got..])
                .map_err(timed_out)?;
            received.extend(fds);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the sprite's agent ended the filesystem request without an answer",
                ));
            }
            got += n;
        }
        let len = u64::from_le_bytes(header);
        if len > MAX_FS_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "filesystem reply too large",
            ));
        }
        let mut body = Vec::new();
        File::from(ours)
            .take(len)
            .read_to_end(&mut body)
            .map_err(timed_out)?;
        if body.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the sprite's agent ended the filesystem reply early",
            ));
        }
        let reply = serde_json::from_slice(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((reply, received))
    }

    /// Starts a filesystem watch inside the sprite: the agent forks a child that runs
    /// [`crate::fswatch::run`] there (the sprite's root and mount namespace, as the sprite
    /// user) and writes its messages to the returned socket, until it is closed.
    pub fn fs_watch(&self, spec: &crate::fswatch::WatchSpec) -> io::Result<OwnedFd> {
        if !self.is_alive() {
            return Err(io::Error::other("the sprite's agent is not running"));
        }
        let (ours, theirs) = sys::socket::stream_pair()?;
        let call = FsCall::Watch { spec: spec.clone() };
        ipc::send(
            self.sock.as_raw_fd(),
            &Request::Fs { call },
            &[theirs.as_raw_fd()],
        )?;
        // Only the agent's child holds the other end now: EOF means it is gone.
        drop(theirs);
        Ok(ours)
    }

    /// Sends `sig` to the process group of exec `pid` (if it still runs).
    pub fn signal(&self, pid: i32, sig: i32) {
        let _ = ipc::send(self.sock.as_raw_fd(), &Request::Signal { pid, sig }, &[]);
    }

    /// Kills the sprite: SIGKILL to the agent, PID 1 of the sprite's PID namespace, makes
    /// the kernel kill every process in it. Returns once they are all gone (the agent's
    /// pidfd turns readable only after that), or after [`STOP_TIMEOUT`].
    pub fn stop(&self) {
        // A pidfd names exactly one process, so this can never hit a recycled pid.
        let _ = sys::process::pidfd_send_signal(self.init.as_fd(), libc::SIGKILL);
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            let mut p = [libc::pollfd {
                fd: self.init.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match sys::fd::poll(&mut p, left.as_millis() as libc::c_int) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = self.done.recv_timeout(left);
    }

    /// The agent's pid in the server's PID namespace (from its pidfd), while it runs.
    pub fn host_pid(&self) -> Option<u32> {
        pidfd_pid(&self.init)
    }

    /// A socket-diagnostics (`NETLINK_SOCK_DIAG`) socket in the sprite's network
    /// namespace, made by the agent (which lives in it): the port scanner lists the
    /// sprite's listening sockets with it. Waits at most [`SPAWN_TIMEOUT`] for it.
    pub fn port_socket(&self) -> io::Result<OwnedFd> {
        self.socket_from_agent(&Request::PortSocket, "a diagnostics socket")
    }

    /// An unconnected TCP socket (IPv6 with `v6`) in the sprite's network namespace, made
    /// by the agent: connected by the server, it reaches what the sprite's own processes
    /// would. Waits at most [`SPAWN_TIMEOUT`] for it.
    pub fn tcp_socket(&self, v6: bool) -> io::Result<OwnedFd> {
        self.socket_from_agent(&Request::TcpSocket { v6 }, "a TCP socket")
    }

    /// Sends `req`, which asks the agent for one socket back on a reply socket, and
    /// returns that socket.
    fn socket_from_agent(&self, req: &Request, what: &str) -> io::Result<OwnedFd> {
        if !self.is_alive() {
            return Err(io::Error::other("the sprite's agent is not running"));
        }
        let (ours, theirs) = sys::socket::stream_pair()?;
        ipc::send(self.sock.as_raw_fd(), req, &[theirs.as_raw_fd()])?;
        // Only the agent holds the other end now: EOF means it gave nothing.
        drop(theirs);
        set_recv_timeout(&ours, Some(SPAWN_TIMEOUT))?;
        let mut byte = [0u8; 1];
        let (n, mut fds) = sys::socket::recv_some_with_fds(ours.as_raw_fd(), &mut byte)?;
        match (n, fds.pop()) {
            (1, Some(sock)) if fds.is_empty() => Ok(sock),
            _ => Err(io::Error::other(format!(
                "the sprite's agent did not give {what}"
            ))),
        }
    }
}

impl AgentHandle {
    /// Runs a checkpoint operation in the agent (which holds the sprite's disk image open)
    /// and waits at most [`SNAPSHOT_TIMEOUT`] for its answer. `Unsupported` when the
    /// sprite's disk cannot take snapshots.
    pub fn snapshot(&self, op: super::snapshots::SnapshotOp) -> io::Result<()> {
        if !self.is_alive() {
            return Err(io::Error::other("the sprite's agent is not running"));
        }
        let (ours, theirs) = sys::socket::stream_pair()?;
        ipc::send(
            self.sock.as_raw_fd(),
            &Request::Snapshot { what: op },
            &[theirs.as_raw_fd()],
        )?;
        drop(theirs);
        set_recv_timeout(&ours, Some(SNAPSHOT_TIMEOUT))?;
        let mut body = Vec::new();
        // The agent writes one small JSON document and closes its end.
        File::from(ours).take(64 * 1024).read_to_end(&mut body)?;
        let reply: super::snapshots::SnapshotReply =
            serde_json::from_slice(&body).map_err(|_| {
                io::Error::other("the sprite's agent did not answer the checkpoint request")
            })?;
        match (reply.error, reply.errno) {
            (None, _) => Ok(()),
            (Some(_), Some(libc::EOPNOTSUPP)) | (Some(_), Some(libc::ENOTTY)) => {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this sprite's disk cannot take snapshots (it is not a btrfs image)",
                ))
            }
            (Some(msg), Some(errno)) => Err(io::Error::new(
                io::Error::from_raw_os_error(errno).kind(),
                msg,
            )),
            (Some(msg), None) => Err(io::Error::other(msg)),
        }
    }
}

/// How long a checkpoint operation in the agent may take: a snapshot commits a btrfs
/// transaction, which waits for the sprite's dirty data to reach the image.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

impl AgentHandle {
    /// The sprite's DNS sockets (bound inside at [`ipc::RESOLVER_ADDR`]: UDP, and a TCP
    /// listener) and a handle on its network namespace, from the agent. Waits at most
    /// [`SPAWN_TIMEOUT`].
    pub fn resolver_sockets(&self) -> io::Result<ResolverSockets> {
        if !self.is_alive() {
            return Err(io::Error::other("the sprite's agent is not running"));
        }
        let (ours, theirs) = sys::socket::stream_pair()?;
        ipc::send(
            self.sock.as_raw_fd(),
            &Request::Resolver,
            &[theirs.as_raw_fd()],
        )?;
        drop(theirs);
        set_recv_timeout(&ours, Some(SPAWN_TIMEOUT))?;
        let mut byte = [0u8; 1];
        let (n, fds) = sys::socket::recv_some_with_fds(ours.as_raw_fd(), &mut byte)?;
        let mut fds = fds.into_iter();
        match (n, fds.next(), fds.next(), fds.next(), fds.next()) {
            (1, Some(udp), Some(tcp), Some(netns), None) => Ok(ResolverSockets { udp, tcp, netns }),
            _ => Err(io::Error::other(
                "the sprite's agent could not bind its DNS sockets",
            )),
        }
    }

    /// A second handle on the agent's pidfd: it turns readable once the sprite is gone.
    pub fn exit_fd(&self) -> io::Result<OwnedFd> {
        self.init.try_clone()
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_events(sock: OwnedFd, waiters: &Mutex<Waiters>, mut stub: Child, done: Sender<()>) {
    loop {
        match ipc::recv::<Event>(sock.as_raw_fd()) {
            Ok(Some((Event::Spawned { id, pid }, fds))) => {
                let host_pid = fds.first().and_then(pidfd_pid).unwrap_or(0);
                let terminal = fds.into_iter().nth(1);
                let (tx, rx) = bounded(1);
                let waiter = {
                    let mut st = lock(waiters);
                    st.exits.insert(pid, tx);
                    st.pending.remove(&id)
                };
                let reply = SpawnReply::Spawned {
                    pid,
                    host_pid,
                    exit: rx,
                    terminal,
                };
                if waiter.is_none_or(|w| w.send(reply).is_err()) {
                    // Nobody waits any more (timed out): the process must not run unseen.
                    let _ = ipc::send(
                        sock.as_raw_fd(),
                        &Request::Signal {
                            pid,
                            sig: libc::SIGKILL,
                        },
                        &[],
                    );
                }
            }
            Ok(Some((Event::SpawnFailed { id, stage, errno }, _))) => {
                if let Some(w) = lock(waiters).pending.remove(&id) {
                    let _ = w.send(SpawnReply::Failed { stage, errno });
                }
            }
            Ok(Some((Event::Exited { pid, status }, _))) => {
                if let Some(w) = lock(waiters).exits.remove(&pid) {
                    let _ = w.send(status);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    {
        let mut st = lock(waiters);
        st.dead = true;
        st.pending.clear();
        for (_, w) in st.exits.drain() {
            let _ = w.send(KILLED);
        }
    }
    // The agent closed the socket by exiting, so the stub (which only waits for it) is
    // exiting too: this wait is short.
    let _ = stub.wait();
    let _ = done.send(());
}

/// The pid (in the server's namespace) a pidfd refers to, from `/proc/self/fdinfo`.
fn pidfd_pid(fd: &OwnedFd) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|p: &u32| *p > 0)
}

type Received = Option<(Event, Vec<OwnedFd>)>;

fn recv_with_timeout(sock: &OwnedFd, t: Duration) -> io::Result<Received> {
    set_recv_timeout(sock, Some(t))?;
    ipc::recv::<Event>(sock.as_raw_fd())
}
