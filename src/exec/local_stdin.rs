//! Forwarding local input to a remote command's stdin: this process's own stdin
//! ([`Stdio::inherit`](crate::Stdio::inherit)) or a local file or pipe (`Stdio::from(file)`).
//!
//! On Unix the forwarder waits in `poll(2)` on the input and on a wake-up pipe, so it stops as
//! soon as the remote command exits instead of lingering in a blocked `read` (and stealing the
//! next line the user types). Windows has no such wait for consoles and pipes: there the
//! forwarder stops at its next read after the command exits.

use super::frame;
use super::pipes::StdinSender;
use std::io::{self, Read};

/// Where forwarded input comes from.
pub(crate) enum LocalInput {
    /// This process's stdin.
    Stdin,
    /// A local file, or a pipe from a local command.
    File(std::fs::File),
}

/// Starts forwarding `input` as stdin frames on `tx`; returns the function that stops it.
/// Dropping `tx` at the end of the input is what sends the remote EOF.
#[cfg(unix)]
pub(crate) fn forward(input: LocalInput, tx: StdinSender) -> io::Result<Box<dyn FnOnce() + Send>> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let mut source = match input {
        // A duplicate of fd 0, read directly: std's buffered `Stdin` could hold bytes that
        // poll(2) cannot see. Dropping the duplicate leaves fd 0 open.
        LocalInput::Stdin => std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?),
        LocalInput::File(file) => file,
    };
    let (wake_read, mut wake_write) = io::pipe()?;
    std::thread::Builder::new()
        .name("sprites-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; frame::MAX_STDIN_CHUNK];
            while let Ok(true) =
                crate::sys::wait_readable_or_woken(source.as_fd(), wake_read.as_fd())
            {
                if !send_next(&mut source, &mut buf, &tx) {
                    break;
                }
            }
        })?;
    Ok(Box::new(move || {
        let _ = wake_write.write_all(&[1]);
    }))
}

/// Starts forwarding `input` as stdin frames on `tx`; returns the function that stops it.
#[cfg(windows)]
pub(crate) fn forward(input: LocalInput, tx: StdinSender) -> io::Result<Box<dyn FnOnce() + Send>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("sprites-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; frame::MAX_STDIN_CHUNK];
            let mut source: Box<dyn Read> = match input {
                LocalInput::Stdin => Box::new(io::stdin()),
                LocalInput::File(file) => Box::new(file),
            };
            while !stopped.load(Ordering::SeqCst) {
                if !send_next(&mut source, &mut buf, &tx) {
                    break;
                }
            }
        })?;
    Ok(Box::new(move || stop.store(true, Ordering::SeqCst)))
}

/// Reads once and sends what came; `false` at the end of the input, on a read error, or when
/// the command no longer takes input.
fn send_next(source: &mut impl Read, buf: &mut [u8], tx: &StdinSender) -> bool {
    loop {
        match source.read(buf) {
            Ok(0) => return false,
            Ok(n) => return tx.send(&buf[..n]).is_ok(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
