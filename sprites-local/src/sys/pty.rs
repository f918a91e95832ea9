//! Pseudo-terminals for TTY execs: a master opened from a `ptmx`, its peer (the terminal
//! the program gets), the window size, and making the peer a session's controlling
//! terminal.
//!
//! Both ends are opened close-on-exec, so a process the server starts concurrently never
//! inherits one: the master's reads end with `EIO` exactly when the last holder of the
//! peer (the exec's own processes) closed it, and never later because a stranger held it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::process::InChild;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens a new pseudo-terminal master from `ptmx` (`/dev/ptmx`, or the `ptmx` of a
/// `devpts` instance), unlocked. Refuses anything that is not the ptmx device (char
/// device 5:2), so a path that leads elsewhere never hands back an ordinary file.
pub fn open_master(ptmx: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: open(2) on a NUL-terminated path; the result is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(check(libc::open(ptmx.as_ptr(), flags))?) };
    // SAFETY: fstat into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the descriptor is ours and open.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let is_ptmx = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 5
        && libc::minor(st.st_rdev) == 2;
    if !is_ptmx {
        return Err(io::Error::other(format!(
            "{} is not the pseudo-terminal multiplexer",
            ptmx.to_string_lossy()
        )));
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    Ok(fd)
}

/// Opens the terminal side of `master` (`TIOCGPTPEER`: no path lookup, so it is the
/// master's own peer whatever the filesystem around it looks like).
pub fn open_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new descriptor.
    let fd = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the window size of the terminal `fd` belongs to (either side); the foreground
/// process group gets `SIGWINCH` when it changes.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// The window size (rows, columns) of the terminal `fd` belongs to.
#[cfg(test)]
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    // SAFETY: a zeroed winsize is a valid value of the plain C struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize through the pointer, which lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok((ws.ws_row, ws.ws_col))
}

/// In a forked child that just became a session leader (`setsid`): makes the terminal on
/// descriptor `fd` its controlling terminal, so `/dev/tty`, job control and `^C` work.
pub fn make_controlling(_child: &InChild, fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal) and touches no memory.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// Makes `cmd`'s process the leader of a new session whose controlling terminal is the
/// terminal on its descriptor 0 (give it the peer as stdin). The process is then also the
/// leader of its own process group, as [`CommandExt::process_group`] would make it —
/// which must not be set as well (`setsid` fails for a group leader).
pub fn new_session_with_controlling_terminal(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls setsid and ioctl, which
    // are async-signal-safe, on plain data.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_master_and_its_peer_carry_bytes_and_the_window_size() {
        let master = open_master(c"/dev/ptmx").unwrap();
        let peer = open_peer(master.as_fd()).unwrap();
        set_window_size(master.as_fd(), 33, 111).unwrap();
        assert_eq!(window_size(peer.as_fd()).unwrap(), (33, 111));
        let mut m = std::fs::File::from(master);
        let mut p = std::fs::File::from(peer);
        // Output processing turns the peer's "\n" into "\r\n" on the master's side.
        p.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 4];
        m.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi\r\n");
        drop(p);
        // With the peer gone the master reads EIO: the end of a TTY exec's output.
        assert_eq!(
            m.read(&mut buf).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
    }

    /// Close-on-exec (no other child inherits an end), read-write, and never this
    /// process's controlling terminal.
    fn assert_flags(fd: BorrowedFd<'_>) {
        // SAFETY: fcntl queries on a descriptor the caller owns.
        let (fd_flags, fl_flags) = unsafe {
            (
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
            )
        };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
        assert_eq!(fl_flags & libc::O_ACCMODE, libc::O_RDWR);
    }

    #[test]
    fn both_ends_are_close_on_exec_read_write_and_not_our_terminal() {
        let master = open_master(c"/dev/ptmx").unwrap();
        let peer = open_peer(master.as_fd()).unwrap();
        assert_flags(master.as_fd());
        assert_flags(peer.as_fd());
        // O_NOCTTY: opening it did not make it the controlling terminal of this process
        // (which, under a test harness, may have none at all).
        let ours = std::fs::read_link("/proc/self/fd/0").ok();
        // SAFETY: tcgetsid on a descriptor we own; it only reads.
        let sid = unsafe { libc::tcgetsid(peer.as_raw_fd()) };
        // SAFETY: getsid(0) reads this process's session id.
        assert_ne!(sid, unsafe { libc::getsid(0) }, "{ours:?}");
    }

    #[test]
    fn only_the_multiplexer_is_accepted_as_a_master() {
        let err = open_master(c"/dev/null").unwrap_err();
        assert!(err.to_string().contains("not the pseudo-terminal"), "{err}");
        assert_eq!(
            open_master(c"/nonexistent/ptmx")
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        let master = open_master(c"/dev/ptmx").unwrap();
        assert!(set_window_size(master.as_fd(), 1, 1).is_ok());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(window_size(file.as_fd()).is_err());
        assert!(open_peer(file.as_fd()).is_err());
    }
}
