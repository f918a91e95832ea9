//! The per-sprite agent: PID 1 of the sprite, forked by the stub ([`super::stub`]) once
//! the sprite is built.
//!
//! It mounts `/proc`, pivots into the sprite's root, then serves the control socket: it
//! forks and execs every process with the fds the server passed, reaps everything
//! (including orphans, as any init must), and reports exit statuses. Filesystem calls run
//! in forked children too (see [`fs_child`]), so the agent itself never blocks on one.
//! When the control socket closes (server gone) it exits, which ends the sprite's
//! processes.
//!
//! On a root server the agent stays host root, in namespaces that belong to the host: the
//! sprite's processes (its root included) cannot signal, trace or read it. Each child
//! enters the sprite's user namespace and becomes the sprite user just before it execs.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::ipc::{self, Event, ExecPolicy, FsCall, FsReply, ProcessLimits, Request, StubConfig};
use super::rootfs;
use super::snapshots;
use super::stub::{wait_pid, Built};
use super::upper::Ids;
use crate::fsops::{FsError, HostFs, PendingWrite, SpriteFs};
use crate::sys::process::{self as proc, CStrArray, Fork, InChild};
use crate::sys::{self, cstr};

/// PID 1 of the sprite: enter the root the stub built, then serve until the server hangs
/// up.
pub fn run(cfg: &StubConfig, mut built: Built, ctl: RawFd) -> io::Result<()> {
    // The data dir, as seen inside (when the base contains it): also masked in the upper
    // layer; a mount on top keeps it hidden even from a sprite that removes the mask.
    let masks: Vec<PathBuf> = cfg.masks.iter().map(|m| Path::new("/").join(m)).collect();
    // The network policy, read-only inside (PROTOCOL.md §13). A sprite without the
    // directory (the startup probe) goes without.
    let policy = cfg.sprite_dir.join(crate::policy::NETWORK_DIR);
    if policy.is_dir() {
        // Best effort: without it the sprite only misses that view (logged).
        if let Err(e) = rootfs::bind_readonly(&built.root, crate::policy::VISIBLE_DIR, &policy) {
            eprintln!(
                "sprites-local sandbox agent: /{}: {e}",
                crate::policy::VISIBLE_DIR
            );
        }
    }
    // Nothing in the sprite may ever trace the agent's memory. Its children's credential
    // changes would make it traceable again only where `fs.suid_dumpable` is 1: there they
    // get a copy of it (fork) rather than the memory itself (see `Agent::spawn`). Read
    // before entering the sprite's root.
    proc::set_dumpable(false)?;
    let share_memory = !proc::id_changes_stay_traceable();
    rootfs::enter(&built.root, &masks)?;
    let snapshots = built.snapshots.take().map(snapshots::Snapshots::start);
    // A pidfd for ourselves lets the server kill the sprite and know when it is gone: it
    // becomes readable only after the kernel has killed and reaped everything in our PID
    // namespace.
    let me = proc::pidfd_open(std::process::id() as libc::pid_t)?;
    let ready = Event::Ready {
        uid: built.ids.uid,
        address: built.address,
        shifted: built.shifted,
        unmapped_base: built.unmapped_base.clone(),
    };
    // The disk's filesystem, for the server to keep mounted across restarts (see
    // `disk::mount`).
    let held = snapshots.as_ref().and_then(|s| s.held_mount());
    let mut fds = vec![me.as_raw_fd()];
    fds.extend(held.as_ref().map(|f| f.as_raw_fd()));
    ipc::send(ctl, &ready, &fds)?;
    drop(held);
    drop(me);
    let terminal_owner = cfg.privileged.as_ref().map(|p| {
        (
            p.identity.base + built.ids.uid,
            p.identity.base + built.ids.gid,
        )
    });
    Agent {
        ctl,
        terminal_owner,
        ids: built.ids,
        userns: built.userns,
        limits: cfg.limits,
        live: HashSet::new(),
        end_group_with_leader: HashSet::new(),
        snapshots,
        changed_signals: proc::changed_signals(),
        stack: proc::ChildStack::new()?,
        share_memory,
    }
    .serve()
}

/// The agent's loop, PID 1 inside the sprite (the server's side of it is
/// [`AgentHandle`](super::handle::AgentHandle)).
struct Agent {
    ctl: RawFd,
    /// Host ids to give a TTY exec's terminal, so it belongs to the sprite's user (`mesg`,
    /// `write`, reopening it by name). `None` when the agent already runs as that user
    /// (unprivileged server): what it opens is the user's.
    terminal_owner: Option<(u32, u32)>,
    ids: Ids,
    /// The sprite's user namespace, which children enter (root server); `None` when the
    /// agent already runs in it (unprivileged server).
    userns: Option<OwnedFd>,
    /// Set on every child.
    limits: ProcessLimits,
    /// Exec leaders not yet reaped. Signals go only to these, so a recycled pid is never
    /// signalled.
    live: HashSet<libc::pid_t>,
    /// Exec leaders whose process group is KILLed when they exit, before they are reaped
    /// (while the zombie holds the pgid, so no other group can have it).
    end_group_with_leader: HashSet<libc::pid_t>,
    /// The sprite's btrfs disk image, for checkpoints (`None`: no checkpoints).
    snapshots: Option<snapshots::Snapshots>,
    /// The signals this agent does not leave at their default disposition: the ones a
    /// child resets before its exec (taken once: the agent never changes them later).
    changed_signals: Vec<libc::c_int>,
    /// Where an exec's child runs until its `execve` (see `spawn_vfork`).
    stack: proc::ChildStack,
    /// Exec children share the agent's memory until their `execve` (`spawn_vfork`), which
    /// is safe only while the memory stays untraceable through their credential changes;
    /// else they are forked.
    share_memory: bool,
}

impl Agent {
    fn serve(mut self) -> io::Result<()> {
        let sfd = proc::sigchld_signalfd()?;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.ctl,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            match sys::fd::poll(&mut fds, -1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if fds[1].revents != 0 {
                let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
                // The fd is non-blocking.
                let _ = sys::fd::read(sfd.as_fd(), &mut buf);
                self.reap()?;
            }
            if fds[0].revents != 0 {
                match ipc::recv::<Request>(self.ctl) {
                    Ok(Some((req, fds))) => self.handle(req, fds)?,
                    // The server is gone (or sent garbage): the sprite ends with us.
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        }
    }

    /// Reaps every exited child; reports the exec leaders among them.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            let Ok(Some(pid)) = proc::exited_child_nowait() else {
                return Ok(());
            };
            if self.end_group_with_leader.remove(&pid) {
                // The leader is a zombie still, so the group is the one it led.
                let _ = proc::kill(-pid, libc::SIGKILL);
            }
            let (pid, st) = match proc::waitpid(pid, libc::WNOHANG) {
                Ok((pid, st)) if pid > 0 => (pid, st),
                _ => return Ok(()),
            };
            if self.live.remove(&pid) {
                ipc::send(self.ctl, &Event::Exited { pid, status: st }, &[])?;
            }
        }
    }

    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> io::Result<()> {
        match req {
            Request::Signal { pid, sig } => {
                if self.live.contains(&pid) && pid > 1 {
                    // The group leader is unreaped (in `live`), so its pgid cannot have
                    // been recycled.
                    let _ = proc::kill(-pid, sig);
                }
                Ok(())
            }
            Request::Spawn {
                id,
                program,
                argv,
                env,
                cwd,
                fallback_cwd,
                tty,
                policy,
                end_group_with_leader,
            } => {
                let (fds, master) = match tty.map(|size| self.open_terminal(size)).transpose() {
                    Ok(Some((master, stdio))) => (stdio, Some(master)),
                    Ok(None) => (fds, None),
                    Err(e) => {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        let ev = Event::SpawnFailed {
                            id,
                            stage: "exec".into(),
                            errno,
                        };
                        return ipc::send(self.ctl, &ev, &[]);
                    }
                };
                let spawned = self.spawn(
                    &program,
                    &argv,
                    &env,
                    &cwd,
                    fallback_cwd,
                    &fds,
                    master.is_some(),
                    policy,
                );
                drop(fds); // the child has its copies; the terminal's must close for EIO
                let ev = match spawned {
                    Ok((pid, pidfd)) => {
                        self.live.insert(pid);
                        if end_group_with_leader {
                            self.end_group_with_leader.insert(pid);
                        }
                        let ev = Event::Spawned { id, pid };
                        let mut out = vec![pidfd.as_raw_fd()];
                        out.extend(master.as_ref().map(|m| m.as_raw_fd()));
                        return ipc::send(self.ctl, &ev, &out);
                    }
                    Err((stage, errno)) => Event::SpawnFailed {
                        id,
                        stage: stage.into(),
                        errno,
                    },
                };
                ipc::send(self.ctl, &ev, &[])
            }
            Request::Fs { call } => {
                self.fs(call, fds);
                Ok(())
            }
            Request::Snapshot { what } => {
                // Quick (an ioctl and a mount or two), so done here rather than in a child.
                let reply = match &mut self.snapshots {
                    Some(snaps) => snaps.run(&what),
                    None => snapshots::SnapshotReply {
                        error: Some("this sprite's disk has no snapshots (not btrfs)".into()),
                        errno: Some(libc::EOPNOTSUPP),
                    },
                };
                if let Some(sock) = fds.first() {
                    let body = serde_json::to_vec(&reply).map_err(io::Error::other)?;
                    let _ = sys::socket::send_nosignal(sock.as_raw_fd(), &body);
                }
                Ok(())
            }
            Request::PortSocket => {
                // Made here, in the sprite's network namespace. On failure the reply
                // socket closes unanswered, which the server reads as an error.
                if let (Some(reply), Ok(sock)) = (fds.first(), sys::netlink::sock_diag_socket()) {
                    let _ =
                        sys::socket::send_with_fds(reply.as_raw_fd(), b"k", &[sock.as_raw_fd()]);
                }
                Ok(())
            }
            Request::TcpSocket { v6 } => {
                // Made here, in the sprite's network namespace; connecting (which may
                // take a while) is the server's business, so the agent never waits on it.
                if let (Some(reply), Ok(sock)) = (fds.first(), sys::tcp::socket(v6)) {
                    let _ =
                        sys::socket::send_with_fds(reply.as_raw_fd(), b"k", &[sock.as_raw_fd()]);
                }
                Ok(())
            }
            Request::Resolver => {
                // Bound here, in the sprite's network namespace; the server answers on it
                // from outside. On failure the reply socket closes unanswered.
                let made = (|| {
                    let udp = std::net::UdpSocket::bind(ipc::RESOLVER_ADDR)?;
                    let tcp = std::net::TcpListener::bind(ipc::RESOLVER_ADDR)?;
                    Ok::<_, io::Error>((udp, tcp, File::open("/proc/self/ns/net")?))
                })();
                if let (Some(reply), Ok((udp, tcp, netns))) = (fds.first(), made) {
                    let _ = sys::socket::send_with_fds(
                        reply.as_raw_fd(),
                        b"k",
                        &[udp.as_raw_fd(), tcp.as_raw_fd(), netns.as_raw_fd()],
                    );
                }
                Ok(())
            }
        }
    }

    /// Runs a filesystem call in a forked child, so the agent goes straight back to its
    /// loop however long the call takes (a big copy). The child answers on the reply socket
    /// (`fds[0]`) itself and exits; the agent only reaps it.
    fn fs(&self, call: FsCall, fds: Vec<OwnedFd>) {
        let Some(reply) = fds.first() else {
            return; // nowhere to answer
        };
        match proc::fork() {
            Ok(Fork::Child(child)) => {
                let code = fs_child(&child, self, call, fds);
                // Ends the child without unwinding into the agent's loop.
                proc::exit_now(code)
            }
            Ok(Fork::Parent(_)) => {} // our copies of the fds close here; the child has its own
            Err(e) => {
                let err = FsError::from_io(&e, call.path());
                let _ = send_fs_reply(reply.as_raw_fd(), &FsReply::Failed(err), None);
            }
        }
    }

    /// A new pseudo-terminal from the sprite's own `devpts` (its `/dev/ptmx`: this agent's
    /// root is the sprite's, and its `/dev` is a mount the sprite cannot change), sized
    /// `(rows, cols)` and owned by the sprite's user: the master, and the terminal three
    /// times over as a child's stdio.
    fn open_terminal(&self, (rows, cols): (u16, u16)) -> io::Result<(OwnedFd, Vec<OwnedFd>)> {
        let master = sys::pty::open_master(c"/dev/ptmx")?;
        let peer = sys::pty::open_peer(master.as_fd())?;
        sys::pty::set_window_size(master.as_fd(), rows, cols)?;
        if let Some((uid, gid)) = self.terminal_owner {
            sys::file::fchown(peer.as_fd(), uid, gid)?;
        }
        let stdio = vec![peer.try_clone()?, peer.try_clone()?, peer];
        Ok((master, stdio))
    }

    /// Forks and execs; returns the pid and a pidfd for it (the server learns the host pid
    /// from it), or `(stage, errno)`. With `tty`, `fds` are a terminal, which becomes the
    /// new session's controlling terminal.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        program: &str,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        fallback_cwd: bool,
        fds: &[OwnedFd],
        tty: bool,
        policy: ExecPolicy,
    ) -> Result<(libc::pid_t, OwnedFd), (&'static str, i32)> {
        let einval = ("exec", libc::EINVAL);
        if fds.len() != 3 {
            return Err(einval);
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        let candidates = candidates(program, path);
        let c_candidates: Vec<CString> = candidates.iter().filter_map(|c| cstr(c).ok()).collect();
        let c_argv: Vec<CString> = argv.iter().filter_map(|a| cstr(a).ok()).collect();
        let c_env: Vec<CString> = env
            .iter()
            .filter_map(|(k, v)| cstr(format!("{k}={v}")).ok())
            .collect();
        let c_cwd = cstr(cwd).map_err(|_| ("dir", libc::EINVAL))?;
        // Built here, not in the child: its memory is ours (see `spawn_vfork`), and what it
        // allocated would still be allocated at its exec, i.e. leaked here.
        let argv = CStrArray::new(&c_argv);
        let env = CStrArray::new(&c_env);
        let (err_r, err_w) = sys::fd::pipe().map_err(|_| einval)?;
        let mut child = |child: &InChild| -> i32 {
            // The child's own descriptor for the pipe's write end (`err_w` is the agent's):
            // it moves and closes it as it likes. Without one there is nothing to report on;
            // the exit (127) says enough.
            let Ok(err_w) = err_w.try_clone() else {
                return 127;
            };
            let (stage, errno, err_w) = self.child(
                child,
                &c_candidates,
                &argv,
                &env,
                &c_cwd,
                fallback_cwd,
                fds,
                tty,
                policy,
                err_w,
            );
            let mut msg = [0u8; 5];
            msg[0] = u8::from(stage == "dir");
            msg[1..].copy_from_slice(&errno.to_ne_bytes());
            if let Some(w) = err_w {
                let _ = sys::fd::write(w.as_fd(), &msg);
            }
            127
        };
        // Between its `setns` into the sprite's user namespace and its `execve` the child is
        // a process the sprite's root (and, once its ids changed, the sprite's user) may
        // trace, were its memory traceable: shared, that memory is the agent's. It is not
        // (`set_dumpable(false)` at the start, and a credential change keeps it so unless
        // `fs.suid_dumpable` is 1, when `share_memory` is false).
        let spawned = if self.share_memory {
            proc::spawn_vfork(&self.stack, &mut child)
        } else {
            proc::fork_run(&mut child)
        };
        let (pid, pidfd) = spawned.map_err(|e| ("exec", e.raw_os_error().unwrap_or(libc::EIO)))?;
        drop(err_w);
        // The pipe holds the child's whole report, if any, then its end, which comes with its
        // `execve` or exit (at once after `spawn_vfork`): read to that end or to a full
        // report. (A plain read: `read_to_end` would first stat and seek the pipe for a size
        // hint.)
        let mut pipe = std::fs::File::from(err_r);
        let mut msg = [0u8; 5];
        let mut got = 0;
        loop {
            match pipe.read(&mut msg[got..]) {
                // The end, or a full report (a read into nothing).
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got == msg.len() {
            wait_pid(pid);
            let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
            return Err((if msg[0] == 1 { "dir" } else { "exec" }, errno));
        }
        Ok((pid, pidfd))
    }

    /// In the child (sharing the agent's memory, see `spawn_vfork`): stdio, session,
    /// descriptors, privileges, directory, exec. Returns only on failure, with
    /// `(stage, errno)` and the error pipe to report on. Whatever it allocates is freed
    /// before the exec.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &self,
        child: &InChild,
        candidates: &[CString],
        argv: &CStrArray<'_>,
        env: &CStrArray<'_>,
        cwd: &CString,
        fallback_cwd: bool,
        fds: &[OwnedFd],
        tty: bool,
        policy: ExecPolicy,
        err_w: OwnedFd,
    ) -> (&'static str, i32, Option<OwnedFd>) {
        let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        // This child is single-threaded (forked from the single-threaded agent).
        // Nothing ignored by whoever started the server reaches the sprite's programs: every
        // disposition back to its default (only the agent's changed ones need a call), then
        // the mask emptied, so a signal is never delivered to a handler of the agent's.
        proc::default_signals(&self.changed_signals);
        let _ = proc::unblock_all_signals();
        // Own session and process group: signals and kills reach the whole exec tree.
        let _ = proc::setsid();
        for (i, fd) in fds.iter().enumerate() {
            if let Err(e) = sys::fd::dup2(child, fd.as_fd(), i as RawFd) {
                return ("exec", errno(e), Some(err_w));
            }
        }
        if tty {
            if let Err(e) = sys::pty::make_controlling(child, 0) {
                return ("exec", errno(e), Some(err_w));
            }
        }
        // Nothing but stdio may cross into the program, and nothing of the agent's may
        // stay open once this process is the sprite's (its root could take descriptors
        // from it before the exec): keep the error pipe and the user namespace as 3 and
        // 4, close the rest (the control socket, the agent's log), mark those two
        // close-on-exec.
        let (keep, userns) = match self.keep_only(child, err_w) {
            Ok(k) => k,
            Err(e) => return ("exec", errno(e), None),
        };
        let mut keep = keep.into_iter();
        let err_w = keep.next();
        let became = self.become_sprite_user(userns, false);
        // The namespace's descriptor (close-on-exec) and the list's memory, which is the
        // agent's: freed now, not leaked at the exec.
        drop(keep);
        if let Err(e) = became {
            return ("exec", e.raw_os_error().unwrap_or(libc::EPERM), err_w);
        }
        if let Err(e) = self.apply_policy(policy) {
            return ("exec", e.raw_os_error().unwrap_or(libc::EPERM), err_w);
        }
        if let Err(e) = proc::chdir(cwd) {
            if !(fallback_cwd && proc::chdir(c"/").is_ok()) {
                return ("dir", errno(e), err_w);
            }
        }
        // Like execvp: ENOENT/ENOTDIR move on, EACCES is remembered, anything else stops.
        let mut result = libc::ENOENT;
        for c in candidates {
            match errno(proc::execve(c, argv, env)) {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => result = libc::EACCES,
                e => return ("exec", e, err_w),
            }
        }
        ("exec", result, err_w)
    }

    /// In a forked child, as the sprite user: what the sprite's policies ask of the new
    /// process. Both only ever take something away, which needs no privilege.
    fn apply_policy(&self, policy: ExecPolicy) -> io::Result<()> {
        if let Some(asked) = policy.data_bytes {
            // Never above the limit the sprite already has (raising a hard limit is not
            // ours to do here).
            let data = self.limits.data_bytes.map_or(asked, |d| d.min(asked));
            proc::set_rlimit(libc::RLIMIT_DATA, data, data)?;
        }
        if policy.no_new_privs {
            proc::set_no_new_privs()?;
        }
        Ok(())
    }

    /// In a forked child, after its stdio is in place: keeps `first` (and the sprite's
    /// user namespace, if any) as descriptors 3 (and 4), closes every other descriptor
    /// from 3 up, and marks the kept ones close-on-exec. Returns the kept descriptors
    /// (`first` first) and the namespace's.
    fn keep_only(
        &self,
        child: &InChild,
        first: OwnedFd,
    ) -> io::Result<(Vec<OwnedFd>, Option<RawFd>)> {
        let mut fds = vec![first];
        if let Some(ns) = &self.userns {
            fds.push(ns.try_clone()?);
        }
        let n = fds.len();
        let kept = sys::fd::move_fds(child, fds, n, 3)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        sys::fd::close_from(child, 3 + n as RawFd);
        sys::fd::cloexec_from(child, 3);
        let userns = (n == 2).then_some(4);
        Ok((kept, userns))
    }
}

/// Sends an [`FsReply`] on a reply socket: the length (with `fd` attached), then the JSON.
fn send_fs_reply(sock: RawFd, reply: &FsReply, fd: Option<RawFd>) -> io::Result<()> {
    let body = serde_json::to_vec(reply).map_err(io::Error::other)?;
    let len = (body.len() as u64).to_le_bytes();
    let fds: Vec<RawFd> = fd.into_iter().collect();
    sys::socket::send_with_fds(sock, &len, &fds)?;
    let mut sent = 0;
    while sent < body.len() {
        // MSG_NOSIGNAL turns a vanished server into EPIPE rather than a signal.
        match sys::socket::send_nosignal(sock, &body[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The fd number the reply socket gets in a filesystem child (the temp file of a commit
/// gets the next one).
const FS_REPLY_FD: RawFd = 3;

/// In the forked filesystem child: keep only the reply socket (and a commit's temp file),
/// take on exactly the confinement of an exec (the sprite user, no capabilities,
/// `no_new_privs`; the root is already the sprite's root), run the call with [`HostFs`]
/// and answer. Returns the exit code.
///
/// Closing every other fd matters: the agent holds its log (a host file) as stderr and the
/// control socket, which `/proc/self/fd/N` would otherwise reach.
fn fs_child(child: &InChild, agent: &Agent, call: FsCall, mut fds: Vec<OwnedFd>) -> i32 {
    let keep = fds.len().min(2);
    fds.truncate(keep);
    // The sprite's user namespace (root server) comes along, right after the kept ones.
    if let Some(ns) = &agent.userns {
        match ns.try_clone() {
            Ok(ns) => fds.push(ns),
            Err(_) => return 1,
        }
    }
    let n = fds.len();
    let Some(mut kept) = sys::fd::move_fds(child, fds, n, FS_REPLY_FD) else {
        return 1;
    };
    sys::fd::close_from(child, FS_REPLY_FD + n as RawFd);
    // stdio: the sprite's /dev/null, never the agent's (its stderr is a host file).
    sys::fd::null_stdio(child);
    let userns = (n > keep).then(|| kept.pop()).flatten();
    let userns_fd = userns.as_ref().map(|f| f.as_raw_fd());
    // `asRoot` (a chown's): the sprite's root, which any of its execs can become with sudo.
    let as_root = matches!(
        &call,
        FsCall::Run {
            op: crate::fsops::FsOp::Chown { as_root: true, .. }
        }
    );
    let became = if as_root {
        agent.become_sprite_root(userns_fd)
    } else {
        agent.become_sprite_user(userns_fd, true)
    };
    if became.is_err() {
        return 1;
    }
    drop(userns);
    let _ = proc::chdir(c"/");
    let mut kept = kept.into_iter();
    // The reply socket is left to the exit to close, after everything else.
    let Some(reply) = kept.next() else {
        return 1; // never: the agent forks only for a call that came with its reply socket
    };
    if let FsCall::Watch { spec } = &call {
        // Runs until the server closes the socket (or the sprite ends).
        crate::fswatch::run(spec, reply);
        return 0;
    }
    let reply = reply.into_raw_fd();
    let extra = kept.next().map(File::from);
    let (reply_msg, file) = run_fs_call(call, extra);
    let sent = send_fs_reply(reply, &reply_msg, file.as_ref().map(|f| f.as_raw_fd()));
    i32::from(sent.is_err())
}

/// Runs one call with [`HostFs`] (whose `/` is the sprite's root here). Returns the reply
/// and the file to pass back, if any.
fn run_fs_call(call: FsCall, extra: Option<File>) -> (FsReply, Option<File>) {
    let fs = HostFs;
    let failed = |e| (FsReply::Failed(e), None);
    match call {
        FsCall::Run { op } => match fs.run(&op) {
            Ok(out) => (out.into(), None),
            Err(e) => failed(e),
        },
        FsCall::OpenRead { path } => match fs.open_read(&path) {
            Ok(o) => (FsReply::Opened { len: o.len }, Some(o.file)),
            Err(e) => failed(e),
        },
        FsCall::BeginWrite { spec } => match fs.begin_write(&spec) {
            Ok(p) => (
                FsReply::Begun {
                    temp: p.temp,
                    target: p.target,
                },
                Some(p.file),
            ),
            Err(e) => failed(e),
        },
        FsCall::CommitWrite { temp, target, spec } => {
            let Some(file) = extra else {
                return failed(FsError::with_detail(
                    libc::EINVAL,
                    spec.path,
                    "commit without its temp file",
                ));
            };
            let pending = PendingWrite {
                file,
                temp,
                target,
                spec,
            };
            match fs.commit_write(pending) {
                Ok(w) => (FsReply::Written(w), None),
                Err(e) => failed(e),
            }
        }
        FsCall::AbortWrite { temp } => {
            fs.remove_temp(&temp);
            (FsReply::Aborted, None)
        }
        // Served by `fs_child` itself, never here.
        FsCall::Watch { spec } => failed(FsError::new(
            libc::EINVAL,
            spec.paths.first().cloned().unwrap_or_default(),
        )),
    }
}

/// `PATH` when the exec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The paths to try for `program`: itself when it contains a `/`, else each `PATH` entry.
fn candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
        .collect()
}

impl Agent {
    /// In a forked filesystem child: become the sprite's root (uid 0 of its user namespace,
    /// with the capabilities root has there and nowhere else), with the sprite's limits and
    /// `no_new_privs`. What `sudo` gives any exec in the sprite; on the host it is nobody.
    /// An unprivileged server has no root to give: the child is the sprite user then.
    fn become_sprite_root(&self, userns: Option<RawFd>) -> io::Result<()> {
        let Some(ns) = userns else {
            return self.become_sprite_user(None, true);
        };
        proc::set_rlimit(libc::RLIMIT_NPROC, self.limits.nproc, self.limits.nproc)?;
        if let Some(data) = self.limits.data_bytes {
            proc::set_rlimit(libc::RLIMIT_DATA, data, data)?;
        }
        sys::mount::setns(ns, libc::CLONE_NEWUSER)?;
        proc::setgroups(&[0])?;
        proc::setresgid(0)?;
        // From host root (not the namespace's root) to the namespace's root: the
        // capabilities setns gave in the namespace stay, as root's do there.
        proc::setresuid(0)?;
        proc::clear_ambient_caps()?;
        proc::set_no_new_privs()
    }

    /// In a forked child: take on the sprite user's identity and limits.
    ///
    /// Root server: enter the sprite's user namespace and become `sprite` there, with no
    /// capabilities. The capability bounding set stays full and `no_new_privs` unset, so
    /// `sudo` (setuid root, and root here is the sprite's own range) works as on the
    /// platform. `no_new_privs`: set for filesystem calls, which never exec.
    ///
    /// Unprivileged server: the agent runs in the (single-id) user namespace already;
    /// there is no root to become, so the bounding set is emptied and `no_new_privs` set.
    fn become_sprite_user(&self, userns: Option<RawFd>, no_exec: bool) -> io::Result<()> {
        let ids = self.ids;
        // Lowering limits needs no privilege; they are set before the uid changes so the
        // process cap counts from the first process.
        proc::set_rlimit(libc::RLIMIT_NPROC, self.limits.nproc, self.limits.nproc)?;
        if let Some(data) = self.limits.data_bytes {
            proc::set_rlimit(libc::RLIMIT_DATA, data, data)?;
        }
        match userns {
            Some(ns) => {
                sys::mount::setns(ns, libc::CLONE_NEWUSER)?;
                proc::setgroups(&[ids.gid])?;
                proc::setresgid(ids.gid)?;
                proc::setresuid(ids.uid)?;
                proc::clear_ambient_caps()?;
                if no_exec {
                    proc::set_no_new_privs()?;
                }
                // Changing uids from outside the namespace's root keeps every capability
                // in it; drop them explicitly.
                proc::clear_capabilities()
            }
            None => {
                let mut cap = 0;
                while proc::drop_bounding_cap(cap).is_ok() {
                    cap += 1; // stops at the first capability the kernel does not know
                }
                proc::setresgid(ids.gid)?;
                proc::setresuid(ids.uid)?;
                proc::clear_ambient_caps()?;
                proc::set_no_new_privs()?;
                // We are uid 1000 in the namespace but still hold every capability in it;
                // clear them explicitly (exec would too, but be plain about it).
                proc::clear_capabilities()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_candidates() {
        assert_eq!(candidates("/bin/ls", "/x"), ["/bin/ls"]);
        assert_eq!(candidates("./a", "/x"), ["./a"]);
        assert_eq!(
            candidates("ls", "/a:/b/::"),
            ["/a/ls", "/b/ls", "./ls", "./ls"]
        );
    }
}
