//! An exec's stdin pipe as the connection thread writes it: straight into the pipe when it
//! has room, through a helper thread only when it is full.
//!
//! Profiling `stdin → cat → stdout` showed every stdin frame crossing a channel to a stdin
//! thread (a wake-up and a context switch per 64 KiB frame) although the pipe almost always
//! had room. So the pipe's write end is non-blocking: the connection thread writes what fits
//! at once and hands only a remainder to the helper, which waits for room in `poll(2)`. The
//! connection thread therefore never blocks on the pipe (a process that reads no stdin
//! cannot wedge the reading of signals): it blocks only when the helper's small queue is
//! full, as before. Order is kept: the connection thread writes directly only while the
//! helper holds nothing.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::sys;

/// Frames the helper may hold before the connection thread waits.
const QUEUE: usize = 4;

/// The connection thread's side of an exec's stdin.
pub(super) struct StdinSink {
    pipe: Arc<File>,
    tx: Sender<(Vec<u8>, usize)>,
    /// Frames handed to the helper and not completely written yet.
    queued: Arc<AtomicUsize>,
}

impl StdinSink {
    /// Wraps the pipe's write end and starts the helper (`spawn` runs it on a thread).
    pub(super) fn start(
        pipe: File,
        spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> io::Result<()>,
    ) -> io::Result<StdinSink> {
        sys::fd::set_nonblocking(pipe.as_fd())?;
        let pipe = Arc::new(pipe);
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = bounded(QUEUE);
        {
            let (pipe, queued) = (pipe.clone(), queued.clone());
            spawn(Box::new(move || helper(&pipe, &rx, &queued)))?;
        }
        Ok(StdinSink { pipe, tx, queued })
    }

    /// Writes `data[offset..]`; `Err` once the process has closed its stdin (or the helper
    /// is gone), after which nothing more is accepted.
    pub(super) fn write(&self, data: Vec<u8>, mut offset: usize) -> Result<(), ()> {
        if self.queued.load(Ordering::SeqCst) == 0 {
            while offset < data.len() {
                match (&*self.pipe).write(&data[offset..]) {
                    Ok(n) => offset += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(()), // EPIPE: the process closed its stdin
                }
            }
            if offset == data.len() {
                return Ok(());
            }
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send((data, offset)).map_err(|_| ())
    }
}

/// Writes what the connection thread could not, waiting for room in `poll(2)`. Ends when
/// the sink is dropped (EOF: the last reference to the pipe closes it) or a write fails.
fn helper(pipe: &File, rx: &Receiver<(Vec<u8>, usize)>, queued: &AtomicUsize) {
    for (data, mut offset) in rx {
        while offset < data.len() {
            match (&*pipe).write(&data[offset..]) {
                Ok(n) => offset += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut p = [libc::pollfd {
                        fd: pipe.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    }];
                    // Room, or the reader gone (POLLERR), wakes it; the next write tells.
                    let _ = sys::fd::poll(&mut p, -1);
                }
                Err(_) => return,
            }
        }
        queued.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn spawn(f: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        std::thread::spawn(f);
        Ok(())
    }

    #[test]
    fn bytes_arrive_in_order_whether_the_pipe_has_room_or_not() {
        let (r, w) = sys::fd::pipe().unwrap();
        let sink = StdinSink::start(File::from(w), spawn).unwrap();
        // 64 KiB pipe: the first frame fits, later ones go through the helper.
        let frames: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10_000 + i as usize]).collect();
        let expect: Vec<u8> = frames.iter().flat_map(|f| f[1..].to_vec()).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            File::from(r).read_to_end(&mut got).unwrap();
            got
        });
        for f in frames {
            sink.write(f, 1).unwrap();
        }
        drop(sink); // EOF once the helper has written everything
        assert!(reader.join().unwrap() == expect);
    }

    #[test]
    fn a_closed_reader_is_an_error() {
        let (r, w) = sys::fd::pipe().unwrap();
        let sink = StdinSink::start(File::from(w), spawn).unwrap();
        drop(r);
        assert!(sink.write(vec![0, 1, 2], 1).is_err());
    }
}
