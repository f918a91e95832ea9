//! SIGINT and SIGTERM handlers that write to a self-pipe, so a thread can wait for them
//! with a plain blocking read.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Write end of the self-pipe the signal handler writes to (-1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_termination_signal(_sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid one-byte static.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// Installs SIGINT/SIGTERM handlers that write one byte to a pipe per signal, and returns
/// the pipe's read end (close-on-exec). The write end stays open for the life of the
/// process. Installing again replaces the pipe the handlers write to.
///
/// A handler rather than blocking the signals and `sigwait`ing: a blocked mask would be
/// inherited by every command the server spawns, while handlers reset to the default
/// action on exec, so sprites' processes see ordinary signal behaviour.
pub fn install_termination_pipe() -> io::Result<File> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array; sigaction gets a zeroed, then filled,
    // struct and a handler that only does async-signal-safe work.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_termination_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(File::from_raw_fd(fds[0]))
    }
}
