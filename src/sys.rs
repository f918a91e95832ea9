//! Readiness waits, the only system calls the client makes itself: `poll(2)` on Unix, `WSAPoll`
//! on Windows. Everything else goes through std.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What to wait for on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// Milliseconds left until `deadline` for a poll call: rounded up, so the wait never ends
/// before the deadline and a sub-millisecond remainder does not spin, and clamped to what the
/// call takes.
fn millis_until(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    let millis = left.as_nanos().div_ceil(1_000_000);
    millis.min(i32::MAX as u128) as i32
}

/// Waits until `socket` is ready for `interest` or `timeout` passes; `Ok(false)` on timeout.
/// Hang-ups and errors count as ready, so the caller's next read or write reports them.
pub(crate) fn wait(socket: &TcpStream, interest: Interest, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        match poll_socket(socket, interest, millis_until(deadline)) {
            Ok(true) => return Ok(true),
            // A timeout is only one once the deadline has passed (clocks differ in grain).
            Ok(false) if Instant::now() >= deadline => return Ok(false),
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(unix)]
fn poll_socket(socket: &TcpStream, interest: Interest, millis: i32) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(windows)]
fn poll_socket(socket: &TcpStream, interest: Interest, millis: i32) -> io::Result<bool> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        POLLRDNORM, POLLWRNORM, SOCKET_ERROR, WSAGetLastError, WSAPOLLFD, WSAPoll,
    };
    let events = match interest {
        Interest::Read => POLLRDNORM,
        Interest::Write => POLLWRNORM,
    };
    let mut pfd = WSAPOLLFD {
        fd: socket.as_raw_socket() as _,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid WSAPOLLFD for the duration of the call and the count is 1.
    let rc = unsafe { WSAPoll(&mut pfd, 1, millis) };
    match rc {
        0 => Ok(false),
        SOCKET_ERROR => Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() })),
        _ => Ok(true),
    }
}

/// Waits until `fd` is readable or `wake` becomes readable (someone wants the waiter to stop),
/// with no time limit: the wake-up is the bound. `Ok(true)` = `fd` is readable.
#[cfg(unix)]
pub(crate) fn wait_readable_or_woken(
    fd: std::os::fd::BorrowedFd<'_>,
    wake: std::os::fd::BorrowedFd<'_>,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn socket_readiness_and_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let started = Instant::now();
        assert!(!wait(&client, Interest::Read, Duration::from_millis(50)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(wait(&client, Interest::Write, Duration::from_secs(5)).unwrap());
        server.write_all(b"x").unwrap();
        assert!(wait(&client, Interest::Read, Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn sub_millisecond_remainders_round_up() {
        assert_eq!(millis_until(Instant::now()), 0);
        let soon = Instant::now() + Duration::from_micros(300);
        assert_eq!(millis_until(soon), 1);
        let later = Instant::now() + Duration::from_secs(2);
        assert!((1990..=2000).contains(&millis_until(later)));
        let far = Instant::now() + Duration::from_secs(u64::from(u32::MAX));
        assert_eq!(millis_until(far), i32::MAX);
    }
}
