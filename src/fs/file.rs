//! [`File`] and [`OpenOptions`]: streaming reads (with `Seek` through HTTP ranges) and
//! streaming writes (a chunked PUT fed by `write`).

use super::{Filesystem, Metadata, already_exists, not_found, write_query};
use crate::error::Error;
use crate::url::Query;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::thread::JoinHandle;

/// Upload chunks in flight between `write` and the HTTP thread.
const UPLOAD_CHUNKS: usize = 4;
/// Forward seeks shorter than this skip bytes on the open stream instead of re-requesting.
const SKIP_LIMIT: u64 = 256 * 1024;

/// Options for opening a [`File`], like `std::fs::OpenOptions`.
///
/// The API replaces whole files, so a writable file is always written from the start:
/// `write(true)` needs `truncate(true)`, `create(true)` or `create_new(true)` beside it, and
/// `append` and read+write are `Unsupported`.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// # let sprite = sprites::Client::from_env()?.sprite("s");
/// use std::io::Write;
/// let fs = sprite.fs();
/// let mut file = fs.options().write(true).create_new(true).mode(0o600).open("/tmp/secret")?;
/// file.write_all(b"shh")?;
/// file.sync_all()?; // the server's verdict
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    fs: Option<Filesystem>,
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: Option<u32>,
}

impl OpenOptions {
    /// All options off, like std's. Bind it with [`Filesystem::options`], or use
    /// [`open_in`](Self::open_in).
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }
    pub(crate) fn on(mut self, fs: Filesystem) -> OpenOptions {
        self.fs = Some(fs);
        self
    }
    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }
    /// Append (unsupported by the API: opening fails with `Unsupported`).
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }
    /// Truncate an existing file.
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }
    /// Create the file if missing.
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }
    /// Fail with `AlreadyExists` if the file exists (checked before the upload starts).
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }
    /// Permission bits for the written file (default `0o644`), as `OpenOptionsExt::mode`.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    /// Opens `path` on the filesystem these options were made from ([`Filesystem::options`]).
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let fs = self.fs.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "OpenOptions::new() has no filesystem: use Filesystem::options() or open_in",
            )
        })?;
        self.open_in(&fs, path.as_ref())
    }

    /// Opens `path` on `fs`.
    pub fn open_in(&self, fs: &Filesystem, path: &Path) -> io::Result<File> {
        let path = fs.resolve(path)?;
        if self.append || (self.read && self.write) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the Sprites API can only replace whole files",
            ));
        }
        if self.write {
            if !(self.truncate || self.create || self.create_new) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "writing without truncate/create would edit in place, which the Sprites API cannot do",
                ));
            }
            if self.create_new && fs.exists(&path)? {
                return Err(already_exists(&path));
            }
            if !self.create && !self.create_new && !fs.exists(&path)? {
                return Err(not_found(&path));
            }
            return File::start_upload(fs.clone(), path, self.mode.unwrap_or(0o644));
        }
        if !self.read {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "open needs read or write",
            ));
        }
        File::open_read(fs.clone(), path)
    }
}

/// An open file on a sprite: `Read + Seek` when opened for reading, `Write` when opened for
/// writing. Both stream: memory use does not depend on the file's size.
///
/// Writes go out as a chunked upload while you write. The server's verdict arrives when the
/// upload ends: [`flush`](Write::flush) and [`sync_all`](File::sync_all) end it and return that
/// verdict; dropping the file ends it too and logs a failure to stderr (drop cannot return it).
/// Writing after the upload has ended is an error.
pub struct File {
    fs: Filesystem,
    path: String,
    mode: Mode,
}

enum Mode {
    Read(ReadState),
    Write(WriteState),
}

struct ReadState {
    /// Where the next `read` starts.
    pos: u64,
    /// The open response body and the file offset it is at.
    stream: Option<(Box<dyn Read + Send + Sync>, u64)>,
    len: Option<u64>,
}

struct WriteState {
    upload: Option<Upload>,
    /// Set once the upload has ended; later writes fail.
    finished: bool,
}

struct Upload {
    tx: Sender<Vec<u8>>,
    thread: JoinHandle<Result<(), Error>>,
}

impl File {
    fn open_read(fs: Filesystem, path: String) -> io::Result<File> {
        let mut file = File {
            fs,
            path,
            mode: Mode::Read(ReadState {
                pos: 0,
                stream: None,
                len: None,
            }),
        };
        // Open now so a missing file (or a directory) fails here, as std's open does.
        file.reopen_at(0)?;
        Ok(file)
    }

    fn start_upload(fs: Filesystem, path: String, mode: u32) -> io::Result<File> {
        let (tx, rx) = bounded::<Vec<u8>>(UPLOAD_CHUNKS);
        let client = fs.sprite().client().clone();
        let url = fs.fs_path("write", &write_query(&path, &fs.cwd, mode, true));
        let thread = std::thread::Builder::new()
            .name("sprites-fs-upload".into())
            .spawn(move || {
                let request = client
                    .streaming_request("PUT", &url)
                    .set("Content-Type", "application/octet-stream");
                request
                    .send(ChunkReader {
                        rx,
                        current: Vec::new(),
                        at: 0,
                    })
                    .map(drop)
                    .map_err(Error::from)
            })?;
        Ok(File {
            fs,
            path,
            mode: Mode::Write(WriteState {
                upload: Some(Upload { tx, thread }),
                finished: false,
            }),
        })
    }

    /// The file's metadata (a fresh request).
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.fs.metadata(&self.path)
    }

    /// Ends a write's upload and returns the server's verdict. For a read handle, does nothing.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.finish_upload()
    }

    /// Same as [`sync_all`](Self::sync_all): there is no separate data-only sync in the API.
    pub fn sync_data(&mut self) -> io::Result<()> {
        self.finish_upload()
    }

    fn finish_upload(&mut self) -> io::Result<()> {
        let Mode::Write(state) = &mut self.mode else {
            return Ok(());
        };
        let Some(Upload { tx, thread }) = state.upload.take() else {
            return Ok(());
        };
        state.finished = true;
        // Disconnecting the channel is the end of the body.
        drop(tx);
        match thread.join() {
            Ok(result) => result.map_err(io::Error::from),
            Err(_) => Err(io::Error::other("the upload thread panicked")),
        }
    }

    /// Opens the response body at `offset`, with a Range request when `offset > 0`.
    fn reopen_at(&mut self, offset: u64) -> io::Result<()> {
        let Mode::Read(state) = &mut self.mode else {
            return Ok(());
        };
        let mut query = Query::new();
        query
            .push("path", &self.path)
            .push("workingDir", &self.fs.cwd);
        let client = self.fs.sprite().client();
        let mut request = client.streaming_request("GET", &self.fs.fs_path("read", &query));
        if offset > 0 {
            request = request.set("Range", &format!("bytes={offset}-"));
        }
        let response = match request.call() {
            Ok(response) => response,
            // A range that starts at (or past) the end is 416 (RFC 9110); for a reader that
            // is simply the end of the file, as std's read after seeking to the end is.
            Err(ureq::Error::Status(416, _)) if offset > 0 => {
                state.stream = Some((Box::new(io::empty()), offset));
                return Ok(());
            }
            Err(err) => return Err(Error::from(err).into()),
        };
        let ranged = response.status() == 206;
        if offset == 0 || ranged {
            if let Some(total) = content_range_total(response.header("Content-Range")) {
                state.len = Some(total);
            } else if offset == 0 {
                state.len = response
                    .header("Content-Length")
                    .and_then(|v| v.parse().ok());
            }
        }
        let mut body: Box<dyn Read + Send + Sync> = response.into_reader();
        if offset > 0 && !ranged {
            // The server ignored the Range header: skip to the offset.
            let skipped = io::copy(&mut (&mut body).take(offset), &mut io::sink())?;
            if skipped < offset {
                state.stream = Some((body, skipped));
                return Ok(());
            }
        }
        state.stream = Some((body, offset));
        Ok(())
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Mode::Read(state) = &mut self.mode else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file not opened for reading",
            ));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let pos = state.pos;
        let needs_reopen = match &mut state.stream {
            Some((_, at)) if *at == pos => false,
            Some((body, at)) if *at < pos && pos - *at <= SKIP_LIMIT => {
                let gap = pos - *at;
                let skipped = io::copy(&mut (&mut *body).take(gap), &mut io::sink())?;
                *at += skipped;
                skipped < gap
            }
            _ => true,
        };
        if needs_reopen {
            self.reopen_at(pos)?;
        }
        let Mode::Read(state) = &mut self.mode else {
            unreachable!("mode does not change")
        };
        let Some((body, at)) = &mut state.stream else {
            return Ok(0);
        };
        if *at != state.pos {
            return Ok(0); // past the end
        }
        let n = body.read(buf)?;
        *at += n as u64;
        state.pos += n as u64;
        Ok(n)
    }
}

impl Seek for File {
    /// Moves the read position; the next read re-requests from there with an HTTP `Range`
    /// (short forward moves skip on the open stream instead). `SeekFrom::End` uses the length
    /// the server reported when the file was opened.
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        let Mode::Read(state) = &mut self.mode else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot seek a file being uploaded",
            ));
        };
        let target = match from {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(delta) => state.pos.checked_add_signed(delta),
            SeekFrom::End(delta) => {
                let len = match state.len {
                    Some(len) => len,
                    None => self.fs.metadata(&self.path)?.len(),
                };
                len.checked_add_signed(delta)
            }
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        let Mode::Read(state) = &mut self.mode else {
            unreachable!("mode does not change")
        };
        state.pos = target;
        Ok(target)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Mode::Write(state) = &mut self.mode else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file not opened for writing",
            ));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(upload) = &state.upload else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload already ended (flush/sync_all commit the file); open it again to rewrite it",
            ));
        };
        let chunk = &buf[..buf.len().min(256 * 1024)];
        if upload.tx.send(chunk.to_vec()).is_err() {
            // The upload thread stopped early: its result says why.
            return Err(self
                .finish_upload()
                .err()
                .unwrap_or_else(|| io::Error::other("the upload ended early")));
        }
        Ok(chunk.len())
    }

    /// Ends the upload and returns the server's verdict (see [`File`]).
    fn flush(&mut self) -> io::Result<()> {
        self.finish_upload()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Mode::Write(WriteState {
            upload: Some(_), ..
        }) = &self.mode
        {
            if let Err(err) = self.finish_upload() {
                eprintln!(
                    "sprites: writing {} failed when the file was dropped: {err}",
                    self.path
                );
            }
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Read(state) => format!("read at {}", state.pos),
            Mode::Write(state) => if state.finished { "written" } else { "writing" }.to_owned(),
        };
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &mode)
            .finish()
    }
}

/// The request body of an upload: chunks from `File::write` until the channel disconnects.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The total from `Content-Range: bytes 0-99/1234`.
fn content_range_total(value: Option<&str>) -> Option<u64> {
    value?.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::content_range_total;

    #[test]
    fn content_range() {
        assert_eq!(content_range_total(Some("bytes 10-99/1234")), Some(1234));
        assert_eq!(content_range_total(Some("bytes 0-0/*")), None);
        assert_eq!(content_range_total(None), None);
    }
}
