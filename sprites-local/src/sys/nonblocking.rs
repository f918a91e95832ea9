//! Socket reads and writes that never block, whatever the socket's own mode: the reactor
//! uses them on connections that workers later use in blocking mode, so no mode has to be
//! switched back and forth.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// One `recv(MSG_DONTWAIT)` into `buf`: the byte count (0 = the peer closed its side), or
/// `WouldBlock` when nothing is there. No retry on `EINTR`.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: receives into a valid, exclusively borrowed buffer of the given length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `send(MSG_DONTWAIT | MSG_NOSIGNAL)` of `buf`: how many bytes the socket took (maybe
/// fewer than all), or `WouldBlock` when its buffer is full. Never raises SIGPIPE.
pub fn send(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sends from a valid buffer of the given length.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn never_blocks() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 8];
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hi").unwrap();
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap(), 2);
        assert_eq!(send(b.as_fd(), b"yo").unwrap(), 2);
        std::io::Read::read_exact(&mut a, &mut buf[..2]).unwrap();
        assert_eq!(&buf[..2], b"yo");
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap(), 0);
        assert!(send(b.as_fd(), b"x").is_err(), "EPIPE, and no SIGPIPE");
    }
}
