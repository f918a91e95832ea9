//! The socket side of netlink (the messages are built by their users: the sandbox's
//! `netlink` module for rtnetlink, `ports::diag` for socket diagnostics): `NETLINK_ROUTE`
//! and `NETLINK_SOCK_DIAG` sockets, sending a request, receiving replies, and
//! `if_nametoindex`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;

/// A `NETLINK_ROUTE` socket in the calling thread's current network namespace. It keeps
/// talking to that namespace whichever one the thread enters later.
pub fn route_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes integers only; a non-negative result is a new fd we own.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `NETLINK_SOCK_DIAG` socket (socket diagnostics, what `ss` uses) in the calling
/// thread's current network namespace; like every socket, it keeps talking to that
/// namespace wherever it is used later.
pub fn sock_diag_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes integers only; a non-negative result is a new fd we own.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one netlink message to the kernel.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain data; all-zero is valid (port 0 = the kernel).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: `msg` and `addr` are live for the call, with their true sizes.
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram of netlink replies into `buf`; returns its length.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reads into a live buffer of the given length.
        let r = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The index of network interface `name` in the calling thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = super::cstr(name)?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}
