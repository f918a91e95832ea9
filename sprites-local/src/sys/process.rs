//! Processes: `fork` (in the sandbox helper only) and leaving a process, waiting, signals
//! and pidfds, sessions and the signal mask, credentials and capabilities, `chdir` and
//! `execve`, and the descriptor a spawned `Command` inherits.

use std::ffi::{CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use super::check;

/// Set once this process is known to be the sandbox helper (see [`super::entry`]).
static IN_HELPER: AtomicBool = AtomicBool::new(false);

/// Records that this process is the sandbox helper, which is what allows [`fork`].
///
/// Only [`super::entry`] calls it: from the ELF constructor, before `main`, once argv has
/// shown that this process was started as the helper. Nothing has started a thread there,
/// and the helper (stub, agent and their children) never starts one.
pub(super) fn enter_helper() {
    IN_HELPER.store(true, Ordering::SeqCst);
}

/// Proof that the code holding it runs in a child just made by [`fork`] (a single-threaded
/// copy of the single-threaded sandbox helper) or by [`spawn_vfork`] (a process sharing the
/// helper's memory while the helper waits). The descriptor calls that only a child may make
/// ([`super::fd::dup2`], [`super::fd::move_fds`], …) require it: its descriptor table is its
/// own either way.
///
/// Such a child must end with [`exit_now`] (or a successful [`execve`]), never by returning
/// or unwinding into the frames it was forked from: owners of descriptors in those frames
/// (which the child may close or reuse by number) must never run their destructors.
#[derive(Debug)]
pub struct InChild {
    _private: (),
}

/// What [`fork`] returns in each process.
#[derive(Debug)]
pub enum Fork {
    /// In the new child.
    Child(InChild),
    /// In the parent: the child's pid.
    Parent(libc::pid_t),
}

/// fork(2), in the sandbox helper only.
///
/// Forking a multithreaded process leaves the child with locks (the allocator's, std's)
/// that threads which do not exist there may hold. The server is multithreaded, so this
/// refuses (`Unsupported`) unless the process is the single-threaded sandbox helper, as
/// recorded by its entry before `main` (forked children inherit that, and are
/// single-threaded too).
pub fn fork() -> io::Result<Fork> {
    if !IN_HELPER.load(Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "fork is only allowed in the single-threaded sandbox helper",
        ));
    }
    // SAFETY: this process is single-threaded (the sandbox helper, entered before `main`,
    // checked just above), so the child may keep using the allocator and std freely.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child(InChild { _private: () })),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// The stack a [`spawn_vfork`] child runs on: mapped once and reused (one child at a time
/// uses it, the parent being suspended meanwhile), with an inaccessible guard page below it
/// so an overflow faults instead of writing into the parent's memory.
#[derive(Debug)]
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Bytes of stack a child gets: its work (descriptors, credentials, `execve`) needs a
    /// few KiB; the rest is margin.
    pub const SIZE: usize = 256 * 1024;

    /// Maps a stack of [`Self::SIZE`] bytes plus its guard page.
    pub fn new() -> io::Result<ChildStack> {
        let guard = page_size();
        let len = Self::SIZE + guard;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it. The lowest page is
        // then made inaccessible (the guard).
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack { base, len };
            check(libc::mprotect(base, guard, libc::PROT_NONE))?;
            Ok(stack)
        }
    }

    /// One past the highest address: stacks grow down.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: within (one past the end of) the mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no child runs on it (a `spawn_vfork`
        // child is done with it before its parent resumes).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes an integer.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

/// The child side of [`spawn_vfork`]: what it runs, and the exit code it ends with when
/// that returns (it returns only on failure; success is an `execve`).
pub type VforkChild<'a> = &'a mut dyn FnMut(&InChild) -> i32;

extern "C" fn vfork_trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&mut VforkChild` that `spawn_vfork` passed, alive in the
    // suspended parent's frame until this child execs or exits.
    let child = unsafe { &mut *arg.cast::<VforkChild<'_>>() };
    let code = child(&InChild { _private: () });
    exit_now(code)
}

/// Starts a process the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, the child
/// running `child` on `stack` in this process's memory while this thread waits, until the
/// child's `execve` succeeds or it exits. Returns the child's pid and a pidfd for it
/// (`CLONE_PIDFD`: no window in which the pid could name another process).
///
/// Unlike [`fork`] nothing is copied, which is what makes it fast: a fork copies the page
/// tables and the child's exec then tears the copy down (~180 µs of an exec's ~270 µs in
/// the agent, measured). The child has its own descriptor table, `fs` (root, cwd), signal
/// handlers and credentials, so it may change those (and enter a user namespace with
/// `setns`, which needs an unshared `fs`) without touching the parent's.
///
/// Memory is shared, so `child` must only borrow what the parent owns, never drop it, and
/// must free what it allocates before its `execve` (an allocation still live at the exec is
/// the parent's leak). Signals: every signal is blocked around the clone, so none runs one
/// of the parent's handlers on the child's stack before `child` resets the dispositions and
/// unblocks them; the parent's mask is restored before this returns. In the sandbox helper
/// only, like [`fork`].
pub fn spawn_vfork(
    stack: &ChildStack,
    child: VforkChild<'_>,
) -> io::Result<(libc::pid_t, OwnedFd)> {
    if !IN_HELPER.load(Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "spawn_vfork is only allowed in the single-threaded sandbox helper",
        ));
    }
    let mut child = child;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the sets are locals the calls fill or read. clone runs the trampoline on
    // `stack` (ours, unused by anything else while this thread is suspended by
    // CLONE_VFORK) with a pointer to `child`, which lives in this frame until clone
    // returns, i.e. until the child no longer uses this memory. CLONE_PIDFD writes the
    // pidfd into `pidfd`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            vfork_trampoline,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&mut child as *mut VforkChild<'_>).cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        Ok((pid, OwnedFd::from_raw_fd(pidfd)))
    }
}

/// _exit(2): ends the process at once with `code`, without destructors, atexit handlers
/// or stdio flushing (a forked child, or the helper leaving before the host's `main`).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no memory-safety preconditions; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to send `sig` to this process when its parent dies
/// (`PR_SET_PDEATHSIG`).
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig) }).map(drop)
}

/// Empties the calling thread's signal mask (a child about to exec must not pass a
/// blocked signal on).
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset manipulation on a local, zero-initialised (valid) set; sigprocmask
    // reads it and writes nothing back (null old set).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &set,
            std::ptr::null_mut(),
        ))
        .map(drop)
    }
}

/// Sets every signal's disposition to its default: an ignored signal survives `exec`, so a
/// server started under `nohup` (SIGHUP ignored) would otherwise start every command with
/// SIGHUP ignored, and a kill with HUP would do nothing. Async-signal-safe (sigaction only),
/// for a child between fork and exec.
pub fn default_all_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to SIG_DFL touches no memory of ours; signals the
        // kernel refuses (EINVAL) are left as they are.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// The signals whose disposition in this process is not the default (ignored, or with a
/// handler): what [`default_signals`] must reset in a child so that it starts with every
/// signal at its default, without a `sigaction` call for each of the 64.
pub fn changed_signals() -> Vec<libc::c_int> {
    (1..=libc::SIGRTMAX())
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .filter(|&sig| {
            // SAFETY: a query only (null new action); `old` is a local the kernel fills.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let ok = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
            ok && old.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

/// Sets `signals` to their default disposition. Async-signal-safe (signal(2) only), for a
/// child between fork and exec; with [`changed_signals`] of the parent, it has the effect of
/// [`default_all_signals`].
pub fn default_signals(signals: &[libc::c_int]) {
    for &sig in signals {
        // SAFETY: as in `default_all_signals`.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Makes `cmd`'s process start with every signal at its default disposition (see
/// [`default_all_signals`]).
pub fn default_signals_on_exec(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls signal(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            default_all_signals();
            Ok(())
        });
    }
}

/// Blocks SIGCHLD for the calling thread and returns a signalfd for it (close-on-exec,
/// non-blocking), so child exits are only ever read there.
pub fn sigchld_signalfd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local set; signalfd returns a new fd we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// setsid(2): a new session and process group, led by the caller.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// chdir(2).
pub fn chdir(dir: &CStr) -> io::Result<()> {
    // SAFETY: chdir with a valid C string.
    if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A NULL-terminated array of C string pointers (an `argv` or `envp` for [`execve`]),
/// borrowing its strings.
pub struct CStrArray<'a> {
    ptrs: Vec<*const libc::c_char>,
    _strings: PhantomData<&'a CString>,
}

impl<'a> CStrArray<'a> {
    /// The pointers of `strings`, then NULL.
    pub fn new(strings: &'a [CString]) -> CStrArray<'a> {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStrArray {
            ptrs,
            _strings: PhantomData,
        }
    }
}

/// execve(2): replaces this process's program with `path`. Returns only if that failed,
/// with the error.
pub fn execve(path: &CStr, argv: &CStrArray<'_>, env: &CStrArray<'_>) -> io::Error {
    // SAFETY: `path` is a valid C string; `argv` and `env` are NULL-terminated arrays of
    // pointers to C strings they borrow, so all outlive the call.
    unsafe {
        libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), env.ptrs.as_ptr());
    }
    io::Error::last_os_error()
}

/// kill(2): sends `sig` to `pid` (a negative `pid` names a process group).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// killpg(3): sends `sig` to process group `pgid`.
pub fn killpg(pgid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: killpg has no memory-safety preconditions.
    check(unsafe { libc::killpg(pgid, sig) }).map(drop)
}

/// One waitpid(2) call: `(pid, raw wait status)`; the pid is 0 when `WNOHANG` found no
/// exited child.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r, st))
}

/// A child of any kind that has exited, without reaping it (`WEXITED | WNOHANG | WNOWAIT`):
/// it stays a zombie, so its pid (and the group it led) cannot be reused yet. `None` when no
/// child has exited.
pub fn exited_child_nowait() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: siginfo_t is plain data, zero is a valid bit pattern.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, a valid siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 when no child had exited).
    let pid = unsafe { info.si_pid() };
    Ok((pid > 0).then_some(pid))
}

/// One waitid(2) call that waits until child `pid` has exited *without reaping it*
/// (`WEXITED | WNOWAIT`): it stays a zombie, so its pid cannot be reused yet.
pub fn wait_exited_nowait(pid: libc::id_t) -> io::Result<()> {
    // SAFETY: siginfo_t is plain data, zero is a valid bit pattern.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, a valid siginfo_t.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// pidfd_open(2): a descriptor naming exactly process `pid` (never a later process that
/// reuses the number).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2): sends `sig` to the process `pidfd` names.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a pidfd we borrow, no siginfo. A pidfd names exactly
    // one process, so this can never hit a recycled pid.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// getuid(2).
pub fn getuid() -> libc::uid_t {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// getgid(2).
pub fn getgid() -> libc::gid_t {
    // SAFETY: getgid cannot fail.
    unsafe { libc::getgid() }
}

/// geteuid(2).
pub fn geteuid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Drops capability `cap` from the bounding set (`PR_CAPBSET_DROP`); an error for a
/// capability the kernel does not know (`EINVAL`).
pub fn drop_bounding_cap(cap: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setgroups(2): the supplementary groups become exactly `gids`.
pub fn setgroups(gids: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: a valid array of `gids.len()` gids.
    check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) }).map(drop)
}

/// setresgid(2) with `gid` as real, effective and saved gid.
pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map(drop)
}

/// setresuid(2) with `uid` as real, effective and saved uid.
pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// Clears the ambient capability set (`PR_CAP_AMBIENT_CLEAR_ALL`).
pub fn clear_ambient_caps() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Sets whether this process's memory may be traced (`PR_SET_DUMPABLE`): when it may not,
/// `ptrace`, `process_vm_readv`/`writev` and `/proc/PID/mem` need `CAP_SYS_PTRACE` in the
/// user namespace the memory belongs to, whatever the caller's ids.
pub fn set_dumpable(dumpable: bool) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            libc::c_ulong::from(dumpable),
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Whether the kernel leaves a process that changed its ids traceable by those ids
/// (`fs.suid_dumpable` = 1, "debug"): a credential change sets the memory's dumpable flag to
/// this setting, and only 1 lets the new ids trace it. `true` when it cannot be read.
pub fn id_changes_stay_traceable() -> bool {
    std::fs::read_to_string("/proc/sys/fs/suid_dumpable").map_or(true, |v| v.trim() == "1")
}

/// fork(2) in the sandbox helper, the child running `child` and exiting with the code it
/// returns (it returns only on failure; success is an `execve`): [`spawn_vfork`] for where
/// the child must not share the parent's memory. Returns the pid and a pidfd for it.
pub fn fork_run(child: VforkChild<'_>) -> io::Result<(libc::pid_t, OwnedFd)> {
    match fork()? {
        Fork::Child(token) => {
            let code = child(&token);
            exit_now(code)
        }
        Fork::Parent(pid) => match pidfd_open(pid) {
            Ok(pidfd) => Ok((pid, pidfd)),
            Err(e) => {
                // Without it the caller cannot name the process: end it rather than leak it.
                let _ = kill(pid, libc::SIGKILL);
                let _ = waitpid(pid, 0);
                Err(e)
            }
        },
    }
}

/// Sets `no_new_privs`: no exec can raise privileges again (setuid binaries, file
/// capabilities).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// capset(2) with empty effective, permitted and inheritable sets: the calling thread
/// holds no capability any more.
pub fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: a valid version-3 header and the two data structs that version reads.
    check(unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } as libc::c_int).map(drop)
}

/// setrlimit(2): sets `resource`'s soft and hard limits (`RLIM_INFINITY` = no limit).
/// Raising a hard limit needs `CAP_SYS_RESOURCE` in the initial user namespace.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid rlimit struct.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// Makes `cmd`'s process start with `soft` as its soft open-file limit (its hard limit is
/// left as it is; a `soft` above it is lowered to it).
pub fn soft_nofile_on_exec(cmd: &mut Command, soft: u64) {
    // SAFETY: the closure runs between fork and exec and only calls getrlimit/setrlimit,
    // which are async-signal-safe, on plain data.
    unsafe {
        cmd.pre_exec(move || {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                return Err(io::Error::last_os_error());
            }
            r.rlim_cur = (soft as libc::rlim_t).min(r.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s process receive `fd` as descriptor number `target`, without
/// close-on-exec (dup2 before the exec; when `fd` already is `target`, its close-on-exec
/// flag is cleared instead). `fd` must still be open when `cmd` is spawned.
pub fn pass_fd(cmd: &mut Command, fd: RawFd, target: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls dup2/fcntl, which
    // are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_outside_the_helper() {
        // The test harness is multithreaded and never entered as the helper.
        let err = fork().expect_err("fork must be refused");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }
}
