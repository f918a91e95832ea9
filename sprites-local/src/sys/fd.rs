//! File descriptors: pipes, eventfds, `poll`, single `read`s and `write`s, pipe sizes,
//! and the descriptor shuffling a forked child does before it execs or works.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::check;
use super::process::InChild;

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new eventfd (counter 0, close-on-exec, non-blocking): a wake-up signal one thread
/// can send another that waits in [`poll`].
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One poll(2) call on `fds` for at most `timeout_ms` milliseconds (-1: no limit). Returns
/// the number of ready entries; an interrupted call is an `Interrupted` error, left to the
/// caller to handle.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One read(2) into `buf` (no retry on `EINTR`).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a valid, exclusively borrowed buffer of the given length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One write(2) of `buf` (no retry on `EINTR` or short writes).
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writes from a valid buffer of the given length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Asks for a pipe of `size` bytes (`F_SETPIPE_SZ`). The kernel may refuse (per-user pipe
/// limits).
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a pipe fd we borrow; F_SETPIPE_SZ takes an int and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) }).map(drop)
}

/// Puts `fd`'s open file description in non-blocking mode (`O_NONBLOCK`): reads and
/// writes that would wait fail with `WouldBlock` instead.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed fd; F_GETFL/F_SETFL take and return ints only.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Closes descriptor number `fd`, ignoring errors.
///
/// For a descriptor this process knows only by number (the sandbox helper's control
/// socket, passed to it in its configuration): the caller must know that nothing in the
/// process (an `OwnedFd`, a `File`) owns `fd`, since such an owner would later close
/// whatever reused the number.
pub fn close_raw(fd: RawFd) {
    // SAFETY: close takes no pointers; that nothing owns `fd` is the caller's documented
    // obligation.
    unsafe {
        libc::close(fd);
    }
}

/// In a forked child: makes `fd` also descriptor number `target` (dup2(2); its
/// close-on-exec flag is cleared). Whatever had that number is closed.
pub fn dup2(_child: &InChild, fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes no pointers. It may replace a descriptor an owner in the parent's
    // frames still names; a child never returns into those frames (see `InChild`).
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) }).map(drop)
}

/// In a forked child: marks every descriptor from `first` up close-on-exec
/// (`close_range(CLOSE_RANGE_CLOEXEC)`, else `fcntl` on each number below 4096). Marking
/// rather than closing keeps a close-on-exec error pipe working until the exec succeeds.
pub fn cloexec_from(_child: &InChild, first: RawFd) {
    // SAFETY: no pointers; only descriptor flags change, nothing is closed.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            for fd in first..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// In a forked child: moves the first `keep` of `fds` to descriptor numbers `first`,
/// `first + 1`, … (each is first copied above 100, so placing them cannot clobber one
/// another) and returns them there; `None` if a copy failed. The other descriptors of
/// `fds`, and the old numbers, are left as they are for [`close_from`] to close.
pub fn move_fds(
    _child: &InChild,
    fds: Vec<OwnedFd>,
    keep: usize,
    first: RawFd,
) -> Option<Vec<OwnedFd>> {
    // Raw from here on: the fds are renumbered, so nothing may close them by their old
    // numbers later.
    let raw: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
    let keep = keep.min(raw.len());
    let mut high = vec![-1; keep];
    // SAFETY: fcntl/dup2 on descriptors this single-threaded child owns (`raw`) or has just
    // made (`high`); the targets are replaced as `dup2` documents, and a child never
    // returns into the frames of their former owners (see `InChild`).
    unsafe {
        for i in 0..keep {
            high[i] = libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, 100);
            if high[i] < 0 {
                return None;
            }
        }
        for (i, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, first + i as RawFd) < 0 {
                return None;
            }
        }
    }
    // SAFETY: each target number was just made a copy by dup2, and this child owns it.
    Some(
        (0..keep)
            .map(|i| unsafe { OwnedFd::from_raw_fd(first + i as RawFd) })
            .collect(),
    )
}

/// In a forked child: closes every descriptor from `first` up (`close_range`, else
/// `close` on each number below 4096).
pub fn close_from(_child: &InChild, first: RawFd) {
    // SAFETY: no pointers. It closes descriptors owners in the parent's frames still name;
    // a child never returns into those frames (see `InChild`).
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) != 0 {
            for fd in first..4096 {
                libc::close(fd);
            }
        }
    }
}

/// In a forked child: points descriptors 0, 1 and 2 at `/dev/null` (of the child's root);
/// where that fails, the descriptor is closed instead.
pub fn null_stdio(_child: &InChild) {
    // SAFETY: open with a valid C string; dup2/close on the stdio numbers and on the fd
    // just opened. A child never returns into its parent's frames (see `InChild`).
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        for fd in 0..3 {
            if null < 0 || libc::dup2(null, fd) < 0 {
                libc::close(fd);
            }
        }
        if null >= 0 {
            libc::close(null);
        }
    }
}
