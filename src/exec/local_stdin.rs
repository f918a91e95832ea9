//! Forwarding this process's own stdin to a remote command ([`Stdio::inherit`](crate::Stdio::inherit)).
//!
//! The forwarder waits in `poll(2)` on fd 0 and on a wake-up pipe, so it stops as soon as the
//! remote command exits instead of lingering in a blocked `read` (and stealing the next line the
//! user types).

use super::frame;
use crossbeam_channel::Sender;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tungstenite::Bytes;

/// Starts forwarding; returns the function that stops it.
pub(crate) fn forward(tx: Sender<Bytes>) -> io::Result<Box<dyn FnOnce() + Send>> {
    let (wake_read, wake_write) = pipe()?;
    std::thread::Builder::new()
        .name("sprites-stdin".into())
        .spawn(move || {
            // SAFETY: fd 0 stays open for the life of the process; ManuallyDrop keeps this `File`
            // from closing it. Raw reads bypass std's buffered `Stdin`, whose buffer poll() cannot see.
            let mut stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
            let mut buf = vec![0u8; frame::MAX_STDIN_CHUNK];
            loop {
                let mut fds = [
                    libc::pollfd {
                        fd: 0,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: wake_read.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
                let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                if rc < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break;
                }
                if fds[1].revents != 0 {
                    break;
                }
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break, // EOF: dropping `tx` sends the remote EOF.
                    Ok(n) => {
                        if tx.send(frame::stdin(&buf[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(wake_read);
        })?;
    Ok(Box::new(move || {
        let mut wake = File::from(wake_write);
        let _ = wake.write_all(&[1]);
    }))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
