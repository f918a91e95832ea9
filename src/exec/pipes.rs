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
/// Beside [`piped`](Self::piped), [`null`](Self::null) and [`inherit`](Self::inherit), a `Stdio`
/// converts from what std's does, with the same meaning:
///
/// - a local [`std::fs::File`]: read as the command's stdin, or written with its output;
/// - another remote command's [`ChildStdout`] or [`ChildStderr`] as stdin, or its [`ChildStdin`]
///   as stdout or stderr: the two commands form a pipeline (the bytes pass through this
///   process, with backpressure both ways);
/// - a local command's `std::process::ChildStdin`, `ChildStdout` or `ChildStderr`, to chain a
///   remote command and a local one;
/// - [`std::io::Stdout`] and [`std::io::Stderr`]: output goes to this process's stdout or
///   stderr, e.g. `.stdout(std::io::stderr())`.
///
/// The other way round, a remote [`ChildStdout`] or [`ChildStderr`] converts (with `TryFrom`:
/// it needs a local pipe) into a `std::process::Stdio`, so a local command can read a remote
/// one's output.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-stdio", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use sprites::Stdio;
/// // printf on the sprite | tr on the sprite | wc on this machine.
/// let mut printf = sprite.command("printf").arg("a\\nb\\nc\\n").stdout(Stdio::piped()).spawn()?;
/// let mut tr = sprite.command("tr").args(["a-z", "A-Z"])
///     .stdin(printf.stdout.take().unwrap())
///     .stdout(Stdio::piped())
///     .spawn()?;
/// let wc = std::process::Command::new("wc").arg("-l")
///     .stdin(std::process::Stdio::try_from(tr.stdout.take().unwrap())?)
///     .output()?;
/// assert_eq!(String::from_utf8(wc.stdout)?.trim(), "3");
/// assert!(printf.wait()?.success() && tr.wait()?.success());
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Stdio(pub(crate) StdioKind);

#[derive(Debug)]
pub(crate) enum StdioKind {
    Piped,
    Null,
    Inherit,
    /// This process's stdout (`From<io::Stdout>`).
    LocalStdout,
    /// This process's stderr (`From<io::Stderr>`).
    LocalStderr,
    /// A local file or pipe end.
    File(std::fs::File),
    /// Another remote command's stdout or stderr, to read as stdin.
    RemoteOutput(OutputReader),
    /// Another remote command's stdin, to write output into.
    RemoteInput(ChildStdin),
    /// A remote pipe that an earlier spawn of the same `Command` consumed.
    Used,
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

    /// What a spawn uses, leaving what a later spawn of the same `Command` would use: a local
    /// file is duplicated (as std duplicates descriptors); a remote pipe can feed one command only.
    pub(crate) fn take_for_spawn(&mut self) -> io::Result<StdioKind> {
        Ok(match &mut self.0 {
            StdioKind::Piped => StdioKind::Piped,
            StdioKind::Null => StdioKind::Null,
            StdioKind::Inherit => StdioKind::Inherit,
            StdioKind::LocalStdout => StdioKind::LocalStdout,
            StdioKind::LocalStderr => StdioKind::LocalStderr,
            StdioKind::File(file) => StdioKind::File(file.try_clone()?),
            StdioKind::Used => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this Stdio came from another remote command's pipe, which an earlier spawn \
                     of this Command consumed",
                ));
            }
            remote @ (StdioKind::RemoteOutput(_) | StdioKind::RemoteInput(_)) => {
                std::mem::replace(remote, StdioKind::Used)
            }
        })
    }
}

impl From<std::fs::File> for Stdio {
    fn from(file: std::fs::File) -> Stdio {
        Stdio(StdioKind::File(file))
    }
}

impl From<io::Stdout> for Stdio {
    fn from(_: io::Stdout) -> Stdio {
        Stdio(StdioKind::LocalStdout)
    }
}

impl From<io::Stderr> for Stdio {
    fn from(_: io::Stderr) -> Stdio {
        Stdio(StdioKind::LocalStderr)
    }
}

impl From<ChildStdin> for Stdio {
    fn from(stdin: ChildStdin) -> Stdio {
        Stdio(StdioKind::RemoteInput(stdin))
    }
}

impl From<ChildStdout> for Stdio {
    fn from(stdout: ChildStdout) -> Stdio {
        Stdio(StdioKind::RemoteOutput(stdout.reader))
    }
}

impl From<ChildStderr> for Stdio {
    fn from(stderr: ChildStderr) -> Stdio {
        Stdio(StdioKind::RemoteOutput(stderr.reader))
    }
}

macro_rules! from_local_pipe {
    ($($pipe:ty),*) => {$(
        impl From<$pipe> for Stdio {
            fn from(pipe: $pipe) -> Stdio {
                #[cfg(unix)]
                let file = std::fs::File::from(std::os::fd::OwnedFd::from(pipe));
                #[cfg(windows)]
                let file = std::fs::File::from(std::os::windows::io::OwnedHandle::from(pipe));
                Stdio(StdioKind::File(file))
            }
        }
    )*};
}

from_local_pipe!(
    std::process::ChildStdin,
    std::process::ChildStdout,
    std::process::ChildStderr
);

/// A remote command's output as a local command's stdin: a local pipe, filled by a thread that
/// ends when the remote output does or the local command stops reading.
fn local_pipe_from(mut reader: OutputReader) -> io::Result<std::process::Stdio> {
    let (pipe_reader, mut pipe_writer) = io::pipe()?;
    std::thread::Builder::new()
        .name("sprites-to-local".into())
        .spawn(move || {
            // A local reader that exits early closes the pipe (EPIPE): stop, and let the
            // remote output be discarded, as it would be in a shell pipeline.
            let _ = io::copy(&mut reader, &mut pipe_writer);
        })?;
    Ok(pipe_reader.into())
}

/// A remote command's stdout as a local command's stdin. Fallible (a local pipe and a thread
/// are made), hence `TryFrom`: `.stdin(std::process::Stdio::try_from(child.stdout.take().unwrap())?)`.
impl TryFrom<ChildStdout> for std::process::Stdio {
    type Error = io::Error;
    fn try_from(stdout: ChildStdout) -> io::Result<std::process::Stdio> {
        local_pipe_from(stdout.reader)
    }
}

/// A remote command's stderr as a local command's stdin; see the `ChildStdout` conversion.
impl TryFrom<ChildStderr> for std::process::Stdio {
    type Error = io::Error;
    fn try_from(stderr: ChildStderr) -> io::Result<std::process::Stdio> {
        local_pipe_from(stderr.reader)
    }
}

/// One item on an output channel.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Bytes),
    /// The connection failed before the exit report; the reader sees this error once, then EOF.
    Failed(io::Error),
}

/// The sending end of a command's stdin queue, framed for its session: with the stream byte
/// (`0x00`, PROTOCOL.md §6.2), or raw for a terminal (§6.3), whose frames carry keystrokes as
/// they are. The writer thread sends the queued frames on the socket, in order.
#[derive(Debug, Clone)]
pub(crate) struct StdinSender {
    tx: Sender<Bytes>,
    raw: bool,
}

impl StdinSender {
    pub(crate) fn new(tx: Sender<Bytes>, raw: bool) -> StdinSender {
        StdinSender { tx, raw }
    }

    /// Switches the framing, for an attachment that learns it from `session_info`.
    pub(crate) fn set_raw(&mut self, raw: bool) {
        self.raw = raw;
    }

    /// Queues `data` (at most [`frame::MAX_STDIN_CHUNK`] bytes) as one frame; `Err` when the
    /// command takes no more input.
    pub(crate) fn send(&self, data: &[u8]) -> Result<(), ()> {
        let frame = if self.raw {
            Bytes::copy_from_slice(data)
        } else {
            frame::stdin(data)
        };
        self.tx.send(frame).map_err(drop)
    }

    /// Queues all of `data`, in frames of at most [`frame::MAX_STDIN_CHUNK`] bytes.
    pub(crate) fn send_all(&self, data: &[u8]) -> Result<(), ()> {
        data.chunks(frame::MAX_STDIN_CHUNK)
            .try_for_each(|piece| self.send(piece))
    }
}

/// The remote command's stdin. Writes are framed and queued for the connection's writer thread;
/// dropping it sends EOF (after everything written before).
///
/// With a terminal ([`Command::tty`](crate::Command::tty)) the bytes are keystrokes, sent as
/// they are: `0x03` is Ctrl-C, `0x04` is Ctrl-D (which a shell reads as end of input), and
/// dropping the pipe sends nothing, since a terminal has no end of input of its own.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-pipes-3", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("s")?;
/// use std::io::Write;
/// let mut child = sprite.command("wc").arg("-c").stdin(sprites::Stdio::piped()).spawn()?;
/// child.stdin.take().unwrap().write_all(b"hello")?; // dropped here: EOF
/// child.wait()?;
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
pub struct ChildStdin {
    pub(crate) tx: StdinSender,
}

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    /// Returns at once: queued frames are sent by the writer thread in order. There is no
    /// acknowledgement in the protocol to wait for.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writing through a shared reference, as std's `&ChildStdin` allows.
impl Write for &ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = &buf[..buf.len().min(frame::MAX_STDIN_CHUNK)];
        self.tx.send(chunk).map_err(|_| {
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
#[derive(Debug)]
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

    pub(crate) fn into_receiver(self) -> Receiver<Chunk> {
        self.rx
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
