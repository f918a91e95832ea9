//! [`Stdio`] and the pipes of a running command: [`ChildStdin`], [`ChildStdout`], [`ChildStderr`].
//!
//! Output travels from the connection's reader thread through a bounded channel of chunks, so a
//! pipe nobody reads holds at most [`OUTPUT_CHUNKS`] chunks before the reader thread stops
//! reading the socket. TCP flow control then stalls the server and, through its pipe, the remote
//! process: memory stays constant whatever the command prints.

use super::frame;
use crossbeam_channel::{Receiver, Sender};
use std::fmt;
use std::io::{self, Read, Write};
use tungstenite::Bytes;

/// Output chunks buffered per stream before backpressure reaches the remote process.
pub(crate) const OUTPUT_CHUNKS: usize = 32;
/// Stdin frames queued before [`ChildStdin::write`] blocks.
pub(crate) const STDIN_FRAMES: usize = 8;

/// What a command's stdin, stdout or stderr is connected to, like `std::process::Stdio`.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// # let sprite = sprites::Client::from_env()?.sprite("s");
/// use sprites::Stdio;
/// let child = sprite.command("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stdio(pub(crate) StdioKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdioKind {
    Piped,
    Null,
    Inherit,
}

impl Stdio {
    /// A pipe to this program: [`Child::stdin`](crate::Child::stdin) and friends are `Some`.
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }
    /// Nothing: stdin reads EOF at once, output is discarded.
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }
    /// This program's own stdin, stdout or stderr.
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }
}

/// One item on an output channel.
pub(crate) enum Chunk {
    Data(Bytes),
    /// The connection failed before the exit report; the reader sees this error once, then EOF.
    Failed(io::Error),
}

/// What the writer thread sends on the socket, in order.
pub(crate) type StdinSender = Sender<Bytes>;

/// The remote command's stdin. Writes are framed and queued for the connection's writer thread;
/// dropping it sends EOF (after everything written before).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// # let sprite = sprites::Client::from_env()?.sprite("s");
/// use std::io::Write;
/// let mut child = sprite.command("wc").arg("-c").stdin(sprites::Stdio::piped()).spawn()?;
/// child.stdin.take().unwrap().write_all(b"hello")?; // dropped here: EOF
/// child.wait()?;
/// # Ok(()) }
/// ```
pub struct ChildStdin {
    pub(crate) tx: StdinSender,
}

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = &buf[..buf.len().min(frame::MAX_STDIN_CHUNK)];
        self.tx.send(frame::stdin(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the remote command's stdin is closed",
            )
        })?;
        Ok(chunk.len())
    }

    /// Returns at once: queued frames are sent by the writer thread in order. There is no
    /// acknowledgement in the protocol to wait for.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for ChildStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStdin").finish_non_exhaustive()
    }
}

/// Reads a bounded channel of output chunks.
pub(crate) struct OutputReader {
    rx: Receiver<Chunk>,
    current: Bytes,
}

impl OutputReader {
    pub(crate) fn new(rx: Receiver<Chunk>) -> OutputReader {
        OutputReader {
            rx,
            current: Bytes::new(),
        }
    }

    /// The next chunk: `Ok(None)` at EOF.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        match self.rx.recv() {
            Ok(Chunk::Data(data)) => Ok(Some(data)),
            Ok(Chunk::Failed(err)) => Err(err),
            Err(_) => Ok(None),
        }
    }

    pub(crate) fn receiver(&self) -> &Receiver<Chunk> {
        &self.rx
    }

    pub(crate) fn take_current(&mut self) -> Bytes {
        std::mem::take(&mut self.current)
    }
}

impl Read for OutputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_empty() {
            match self.next_chunk()? {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

macro_rules! output_pipe {
    ($name:ident, $stream:literal) => {
        #[doc = concat!("The remote command's ", $stream, ", read like `std::process::", stringify!($name), "`.")]
        ///
        /// Reads block until output arrives and return 0 at EOF (after the exit report). If the
        /// connection fails first, a read returns that error once.
        pub struct $name {
            pub(crate) reader: OutputReader,
        }

        impl Read for $name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.reader.read(buf)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

output_pipe!(ChildStdout, "stdout");
output_pipe!(ChildStderr, "stderr");
