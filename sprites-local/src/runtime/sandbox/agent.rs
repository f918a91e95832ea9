//! The per-sprite agent: the helper process the server starts for a sprite.
//!
//! It runs as two processes, both single-threaded:
//!
//! - the **stub** (started by the server) prepares the upper layer, enters new mount, PID,
//!   UTS and IPC namespaces (plus a user namespace when the server is not root) and forks;
//!   then it only waits. Killing the stub kills the sprite: its child asked for
//!   `PR_SET_PDEATHSIG(SIGKILL)`, and when a PID namespace's init dies the kernel kills
//!   every process in it.
//! - the **agent** (the stub's child) is PID 1 of the sprite. It mounts the root, pivots
//!   into it, then serves the control socket: it forks and execs every process with the
//!   fds the server passed, reaps everything (including orphans, as any init must), and
//!   reports exit statuses. Filesystem calls run in forked children too (see [`fs_child`]),
//!   so the agent itself never blocks on one. When the control socket closes (server gone) it exits, which
//!   ends the sprite's processes.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ctx;
use super::ipc::{self, Event, FsCall, FsReply, Request};
use super::rootfs::{self, Layout};
use super::user::{self, Ids};
use crate::fsops::{FsError, HostFs, PendingWrite, SpriteFs};
use crate::sys::process::{self as proc, CStrArray, Fork, InChild};
use crate::sys::{self, cstr};

/// What the server tells the stub (as JSON in argv).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The sprite's directory in the data dir.
    pub sprite_dir: PathBuf,
    /// Lower layer.
    pub base: PathBuf,
    /// Paths to mask inside (the data dir).
    pub masks: Vec<PathBuf>,
    /// Create a user namespace (the server is not root).
    pub userns: bool,
    /// The control socket's fd number in the stub.
    pub ctl_fd: RawFd,
    /// A cgroup (with the sprite's limits) to join first, so every process inherits it.
    pub cgroup: Option<PathBuf>,
}

/// The stub's main: returns the process exit code.
pub fn stub_main(cfg: &AgentConfig) -> i32 {
    let ctl = cfg.ctl_fd;
    match stub(cfg) {
        Ok(code) => code,
        Err(e) => {
            let _ = ipc::send(
                ctl,
                &Event::Failed {
                    message: e.to_string(),
                },
                &[],
            );
            eprintln!("sprites-local sandbox: {e}");
            1
        }
    }
}

fn stub(cfg: &AgentConfig) -> io::Result<i32> {
    let layout = Layout::new(&cfg.sprite_dir, &cfg.base, cfg.masks.clone(), cfg.userns);
    layout.create_dirs()?;
    if let Some(cg) = &cfg.cgroup {
        // Best effort: without it the sprite runs unlimited (the startup line says whether
        // limits work at all).
        let _ = std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string());
    }
    let ids = ctx(
        user::prepare_upper(
            &layout.base,
            &layout.upper,
            layout.opaque_xattr(),
            !cfg.userns,
        ),
        || "preparing the sprite user".into(),
    )?;
    let (host_uid, host_gid) = (proc::getuid(), proc::getgid());
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if cfg.userns {
        flags |= libc::CLONE_NEWUSER;
    }
    ctx(sys::mount::unshare(flags), || "creating namespaces".into())?;
    if cfg.userns {
        // One id each way: the sprite user *is* the server's user, so nothing inside can
        // act as any other host uid, and the server can still manage the upper layer.
        std::fs::write("/proc/self/setgroups", "deny")?;
        ctx(
            std::fs::write("/proc/self/uid_map", format!("{} {host_uid} 1", ids.uid)),
            || "writing uid_map".into(),
        )?;
        ctx(
            std::fs::write("/proc/self/gid_map", format!("{} {host_gid} 1", ids.gid)),
            || "writing gid_map".into(),
        )?;
    }
    let child = match proc::fork()? {
        Fork::Parent(pid) => pid,
        Fork::Child(_) => {
            let _ = proc::set_parent_death_signal(libc::SIGKILL);
            let code = match init(&layout, ids, cfg) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = ipc::send(
                        cfg.ctl_fd,
                        &Event::Failed {
                            message: e.to_string(),
                        },
                        &[],
                    );
                    eprintln!("sprites-local sandbox agent: {e}");
                    1
                }
            };
            // Ends the agent without running atexit handlers of the parent's image.
            proc::exit_now(code)
        }
    };
    // The stub keeps no end of the control socket: its EOF must mean "the agent is gone".
    // Our copy of the fd the server passed is known only by number: nothing owns it here.
    sys::fd::close_raw(cfg.ctl_fd);
    Ok(wait_status_code(wait_pid(child)))
}

fn wait_pid(pid: libc::pid_t) -> i32 {
    loop {
        match proc::waitpid(pid, 0) {
            Ok((r, st)) if r == pid => return st,
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return 0,
            _ => {}
        }
    }
}

fn wait_status_code(st: i32) -> i32 {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    }
}

/// PID 1 of the sprite: build the root, then serve until the server hangs up.
fn init(layout: &Layout, ids: Ids, cfg: &AgentConfig) -> io::Result<()> {
    rootfs::enter(layout)?;
    let home = std::path::Path::new(user::HOME);
    if !home.is_dir() {
        // The user removed their home through an exec; give them an empty one back.
        std::fs::create_dir_all(home)?;
        if !cfg.userns {
            sys::mount::lchown(home, ids.uid, ids.gid)?;
        }
    }
    let ctl = cfg.ctl_fd;
    // A pidfd for ourselves lets the server kill the sprite and know when it is gone: it
    // becomes readable only after the kernel has killed and reaped everything in our PID
    // namespace.
    let me = proc::pidfd_open(std::process::id() as libc::pid_t)?;
    ipc::send(ctl, &Event::Ready { uid: ids.uid }, &[me.as_raw_fd()])?;
    drop(me);
    Agent {
        ctl,
        ids,
        userns: cfg.userns,
        live: HashSet::new(),
    }
    .serve()
}

/// The agent's loop, PID 1 inside the sprite (the server's side of it is
/// [`AgentHandle`](super::handle::AgentHandle)).
struct Agent {
    ctl: RawFd,
    ids: Ids,
    userns: bool,
    /// Exec leaders not yet reaped. Signals go only to these, so a recycled pid is never
    /// signalled.
    live: HashSet<libc::pid_t>,
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
            let (pid, st) = match proc::waitpid(-1, libc::WNOHANG) {
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
            } => {
                let ev = match self.spawn(&program, &argv, &env, &cwd, fallback_cwd, &fds) {
                    Ok((pid, pidfd)) => {
                        self.live.insert(pid);
                        let ev = Event::Spawned { id, pid };
                        return ipc::send(self.ctl, &ev, &[pidfd.as_raw_fd()]);
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
                let code = fs_child(&child, self.ids, self.userns, call, fds);
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

    /// Forks and execs; returns the pid and a pidfd for it (the server learns the host pid
    /// from it), or `(stage, errno)`.
    fn spawn(
        &self,
        program: &str,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        fallback_cwd: bool,
        fds: &[OwnedFd],
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
        let (err_r, err_w) = sys::fd::pipe().map_err(|_| einval)?;
        let forked = proc::fork().map_err(|e| ("exec", e.raw_os_error().unwrap_or(libc::EIO)))?;
        let pid = match forked {
            Fork::Parent(pid) => pid,
            Fork::Child(child) => {
                drop(err_r);
                let (stage, errno) = self.child(
                    &child,
                    &c_candidates,
                    &c_argv,
                    &c_env,
                    &c_cwd,
                    fallback_cwd,
                    fds,
                );
                let mut msg = [0u8; 5];
                msg[0] = u8::from(stage == "dir");
                msg[1..].copy_from_slice(&errno.to_ne_bytes());
                let _ = sys::fd::write(err_w.as_fd(), &msg);
                proc::exit_now(127)
            }
        };
        drop(err_w);
        // Blocks only until the child's exec (which closes the CLOEXEC pipe) or failure.
        let mut msg = Vec::new();
        let _ = std::fs::File::from(err_r).read_to_end(&mut msg);
        if msg.len() == 5 {
            wait_pid(pid);
            let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
            return Err((if msg[0] == 1 { "dir" } else { "exec" }, errno));
        }
        // Our own (unreaped) child.
        let Ok(pidfd) = proc::pidfd_open(pid) else {
            // Without it the server cannot name the process; end it rather than leak it.
            let _ = proc::kill(pid, libc::SIGKILL);
            wait_pid(pid);
            return Err(("exec", libc::EMFILE));
        };
        Ok((pid, pidfd))
    }

    /// In the forked child: stdio, session, privileges, directory, exec. Returns only on
    /// failure, with `(stage, errno)`.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &self,
        child: &InChild,
        candidates: &[CString],
        argv: &[CString],
        env: &[CString],
        cwd: &CString,
        fallback_cwd: bool,
        fds: &[OwnedFd],
    ) -> (&'static str, i32) {
        let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        // This child is single-threaded (forked from the single-threaded agent).
        let _ = proc::unblock_all_signals();
        // Own session and process group: signals and kills reach the whole exec tree.
        let _ = proc::setsid();
        for (i, fd) in fds.iter().enumerate() {
            if let Err(e) = sys::fd::dup2(child, fd.as_fd(), i as RawFd) {
                return ("exec", errno(e));
            }
        }
        // Nothing but stdio may cross into the program: the agent holds its control
        // socket (fd 3, inherited without close-on-exec from the stub) and whatever the
        // server's own process inherited. Marking them close-on-exec (rather than
        // closing) keeps the CLOEXEC error pipe working until the exec succeeds.
        sys::fd::cloexec_from(child, 3);
        if let Err(e) = drop_privileges(self.ids, self.userns) {
            return ("exec", e.raw_os_error().unwrap_or(libc::EPERM));
        }
        if let Err(e) = proc::chdir(cwd) {
            if !(fallback_cwd && proc::chdir(c"/").is_ok()) {
                return ("dir", errno(e));
            }
        }
        let argv = CStrArray::new(argv);
        let env = CStrArray::new(env);
        // Like execvp: ENOENT/ENOTDIR move on, EACCES is remembered, anything else stops.
        let mut result = libc::ENOENT;
        for c in candidates {
            match errno(proc::execve(c, &argv, &env)) {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => result = libc::EACCES,
                e => return ("exec", e),
            }
        }
        ("exec", result)
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
fn fs_child(child: &InChild, ids: Ids, userns: bool, call: FsCall, fds: Vec<OwnedFd>) -> i32 {
    let keep = fds.len().min(2);
    let Some(kept) = sys::fd::move_fds(child, fds, keep, FS_REPLY_FD) else {
        return 1;
    };
    sys::fd::close_from(child, FS_REPLY_FD + keep as RawFd);
    // stdio: the sprite's /dev/null, never the agent's (its stderr is a host file).
    sys::fd::null_stdio(child);
    if drop_privileges(ids, userns).is_err() {
        return 1;
    }
    let _ = proc::chdir(c"/");
    let mut kept = kept.into_iter();
    // The reply socket is left to the exit to close, after everything else.
    let Some(reply) = kept.next().map(IntoRawFd::into_raw_fd) else {
        return 1; // never: the agent forks only for a call that came with its reply socket
    };
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
            let _ = std::fs::remove_file(&temp);
            (FsReply::Aborted, None)
        }
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

/// Whatever runs in a sprite holds no privilege over anything: in the root (no user
/// namespace) case it becomes the unprivileged sprite user; in both cases the capability
/// bounding set is emptied, every capability dropped and `no_new_privs` set, so setuid
/// binaries (sudo, su) cannot raise privileges again.
fn drop_privileges(ids: Ids, userns: bool) -> io::Result<()> {
    // In a single-threaded child about to exec (or to run a filesystem call).
    let mut cap = 0;
    while proc::drop_bounding_cap(cap).is_ok() {
        cap += 1; // stops at the first capability the kernel does not know (EINVAL)
    }
    if !userns {
        proc::setgroups(&[ids.gid])?;
    }
    proc::setresgid(ids.gid)?;
    proc::setresuid(ids.uid)?;
    proc::clear_ambient_caps()?;
    proc::set_no_new_privs()?;
    // In a user namespace we are uid 1000 but still hold every capability *in that
    // namespace*; clear them explicitly (exec would too, but be plain about it).
    proc::clear_capabilities()
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
