//! Sockets: `AF_UNIX` pairs, messages with descriptors attached (`SCM_RIGHTS`), socket
//! options.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::check;

/// A close-on-exec `AF_UNIX` `SOCK_SEQPACKET` pair: message boundaries are kept, so one
/// request (with its fds) is one `recvmsg`.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new fds into the array.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec `AF_UNIX` `SOCK_STREAM` pair, for replies too big for one datagram (a
/// large listing): the first bytes carry the fds, the rest is read to its length.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new fds into the array.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Most fds one message carries (stdin, stdout, stderr).
pub const MAX_FDS: usize = 4;

/// Sends one message with `fds` attached (SCM_RIGHTS). Never raises SIGPIPE.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fds = &fds[..fds.len().min(MAX_FDS)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is valid and we fill the fields we use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer (64 bytes) is larger than CMSG_SPACE of 4 fds, so
        // CMSG_FIRSTHDR is non-null and the header and data fit inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message and the fds attached to it. `Ok(None)` = the peer closed.
pub fn recv_with_fds(sock: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    // Learn the message's size first (MSG_PEEK|MSG_TRUNC returns the full length for
    // SOCK_SEQPACKET), so large requests need no fixed maximum here.
    let len = loop {
        let mut probe = 0u8;
        // SAFETY: one-byte buffer; MSG_TRUNC makes the kernel report the real length.
        let r = unsafe {
            libc::recv(
                sock,
                (&mut probe as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if len == 0 {
        // We never send empty messages, so a zero length is the peer's close.
        return Ok(None);
    }
    let mut data = vec![0u8; len];
    let (n, fds) = recv_some_with_fds(sock, &mut data)?;
    data.truncate(n);
    Ok(Some((data, fds)))
}

/// One `recvmsg` into `buf` (for stream sockets): the byte count (0 = the peer closed) and
/// any fds that arrived with those bytes.
pub fn recv_some_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: plain data, zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: msg points at live buffers; MSG_CMSG_CLOEXEC as in `recv_with_fds`.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    Ok((n, take_fds(&msg)))
}

/// The fds of the SCM_RIGHTS control messages `recvmsg` wrote for `msg`.
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into the control buffer of a
    // `msg` that `recvmsg` just filled, with the CMSG macros; each SCM_RIGHTS payload is an
    // array of fds that now belong to us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p: *const RawFd = libc::CMSG_DATA(c).cast();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    fds
}

/// Asks for bigger socket buffers so large exec requests (long argv/env) fit one message.
/// Best effort: the kernel caps unprivileged requests at `wmem_max`.
pub fn grow_socket_buffers(sock: &OwnedFd) {
    let size: libc::c_int = 4 << 20;
    for opt in [
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
    ] {
        // SAFETY: setsockopt with a valid int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
    }
}

/// Turns TCP keepalive on for `sock`: after `idle` without traffic the kernel probes the
/// peer every `interval`, and after `count` unanswered probes the connection fails (a
/// `poll` reports an error, reads and writes fail). So a peer that vanished without a word
/// is noticed within `idle + interval × count` even when nothing is being sent.
pub fn set_tcp_keepalive(
    sock: BorrowedFd<'_>,
    idle: Duration,
    interval: Duration,
    count: u32,
) -> io::Result<()> {
    let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    for (level, opt, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(idle)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(interval)),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            count.clamp(1, i32::MAX as u32) as libc::c_int,
        ),
    ] {
        // SAFETY: setsockopt with a valid int option value.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets (or with `None` clears) a socket's receive timeout (`SO_RCVTIMEO`): a read that
/// waits longer fails with `WouldBlock`.
pub fn set_recv_timeout(sock: &OwnedFd, t: Option<Duration>) -> io::Result<()> {
    let tv = match t {
        Some(d) => libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        },
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: setsockopt with a valid timeval.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One send(2) of `buf` on `sock` with `MSG_NOSIGNAL`: a vanished peer is `EPIPE`, never a
/// SIGPIPE. Returns how many bytes went out.
pub fn send_nosignal(sock: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sends from a live buffer of the given length.
    let r = unsafe { libc::send(sock, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}
