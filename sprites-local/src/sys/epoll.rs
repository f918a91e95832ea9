//! `epoll(7)`: the readiness set the server's reactor waits on (the listener, its wake
//! eventfd and every connection waiting for a request head).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;

/// Readable (or a pending connection, for a listener).
pub const IN: u32 = libc::EPOLLIN as u32;
/// The peer shut its writing side down (or closed).
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;

/// Most readiness reports one [`Epoll::wait`] returns.
pub const MAX_EVENTS: usize = 256;

/// An epoll instance (close-on-exec).
#[derive(Debug)]
pub struct Epoll(OwnedFd);

/// One readiness report: the token given to [`Epoll::add`] and the ready events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// What the fd was registered with.
    pub token: u64,
    /// `EPOLLIN`, `EPOLLHUP`, … as reported.
    pub events: u32,
}

impl Epoll {
    /// A new, empty epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Starts watching `fd` for `events` (level-triggered), reported with `token`.
    ///
    /// The instance refers to the open file, not the number: the caller removes `fd`
    /// ([`Epoll::delete`]) before closing it or handing it to another thread, so that a
    /// reused number can never be reported under an old token.
    pub fn add(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what `fd` is watched for (e.g. `0` to pause it).
    pub fn modify(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the call (the kernel only reads it, and
        // ignores it for EPOLL_CTL_DEL); both fds are open for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(drop)
    }

    /// Waits at most `timeout_ms` milliseconds (-1: no limit) and replaces the contents of
    /// `out` with what is ready (at most [`MAX_EVENTS`] reports; the rest come next time).
    /// An interrupted wait returns no events.
    pub fn wait(&self, out: &mut Vec<Ready>, timeout_ms: libc::c_int) -> io::Result<()> {
        out.clear();
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // SAFETY: `raw` is a valid, exclusively borrowed array of MAX_EVENTS events.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                raw.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // Copies, not references: `epoll_event` is packed on some targets.
        out.extend(raw[..n as usize].iter().map(|e| Ready {
            token: e.u64,
            events: e.events,
        }));
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_readiness_with_tokens() {
        let ep = Epoll::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        ep.add(b.as_fd(), IN | RDHUP, 42).unwrap();
        let mut out = Vec::with_capacity(8);
        ep.wait(&mut out, 0).unwrap();
        assert!(out.is_empty());
        a.write_all(b"x").unwrap();
        ep.wait(&mut out, 1000).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token, 42);
        assert_ne!(out[0].events & IN, 0);
        ep.modify(b.as_fd(), 0, 42).unwrap();
        ep.wait(&mut out, 0).unwrap();
        assert!(out.is_empty(), "paused");
        ep.delete(b.as_fd()).unwrap();
        assert!(ep.delete(b.as_fd()).is_err(), "already removed");
    }
}
