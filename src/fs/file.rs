//! [`File`] and [`OpenOptions`]: streaming reads (with `Seek` through HTTP ranges) and
//! streaming writes (a chunked PUT fed by `write`, committed by `sync_all`, `close` or drop).

use super::{Filesystem, Metadata, Permissions, already_exists, not_found, write_query};
use crate::error::{Error, TransportError};
use crate::url::Query;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Upload chunks in flight between `write` and the HTTP thread.
const UPLOAD_CHUNKS: usize = 4;
/// The largest chunk one `write` queues.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Forward seeks shorter than this skip bytes on the open stream instead of re-requesting.
const SKIP_LIMIT: u64 = 256 * 1024;

/// Options for opening a [`File`], like `std::fs::OpenOptions`, made by
/// [`Filesystem::options`] (so always bound to a sprite's filesystem).
///
/// The API replaces whole files, so a writable file is always written from the start:
/// `write(true)` needs `truncate(true)`, `create(true)` or `create_new(true)` beside it, and
/// `append` and read+write are `Unsupported`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-options", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use std::io::Write;
/// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
/// let mut file = fs.options().write(true).create_new(true).mode(0o600).open("secret")?;
/// file.write_all(b"shh")?;
/// file.close()?; // the server's verdict
/// assert_eq!(fs.metadata("secret")?.permissions().mode() & 0o777, 0o600);
/// let again = fs.options().write(true).create_new(true).open("secret");
/// assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
/// # fs.remove_file("secret")?;
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OpenOptions {
    fs: Filesystem,
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: Option<u32>,
}

impl OpenOptions {
    pub(crate) fn new(fs: Filesystem) -> OpenOptions {
        OpenOptions {
            fs,
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: None,
        }
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
    /// Fail with `AlreadyExists` if the file exists. Checked when opening: the API has no
    /// exclusive create, so two clients racing for the same name can both succeed.
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }
    /// Permission bits for the written file (default `0o644`), as `OpenOptionsExt::mode`.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    /// Opens `path` (relative to the filesystem's directory) with these options.
    ///
    /// # Errors
    ///
    /// As std's: `NotFound` for a missing file (reading, or writing without `create`) or a
    /// missing parent directory, `AlreadyExists` with `create_new`, `IsADirectory` for a
    /// directory, `InvalidInput` with neither `read` nor `write`; `Unsupported` for `append`,
    /// read+write and writing without `truncate`/`create`/`create_new`, which the API cannot do.
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let fs = &self.fs;
        let path = fs.resolve(path.as_ref())?;
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
            // std's open fails here for these; the upload would only fail when committed.
            let existing = match fs.metadata(&path) {
                Ok(meta) => Some(meta),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            match existing {
                Some(_) if self.create_new => return Err(already_exists(&path)),
                Some(meta) if meta.is_dir() => return Err(super::is_a_directory(&path)),
                Some(_) => {}
                None if !(self.create || self.create_new) => return Err(not_found(&path)),
                None => fs.check_parent(&path)?,
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
/// writing. Both stream: memory use does not depend on the file's size. Like std's, it can be
/// used through a shared reference (`&File` is `Read`, `Write` and `Seek`).
///
/// Writes go out as a chunked upload while you write. The server's verdict arrives when the
/// upload is committed, by [`sync_all`](File::sync_all), [`sync_data`](File::sync_data) or
/// [`close`](File::close), which return it, or when the file is dropped, which logs a failure
/// (through the `log` crate) since drop cannot return it. [`flush`](Write::flush) does not
/// commit, so a `BufWriter` or any code that flushes mid-stream keeps writing. After a commit
/// the file cannot be written again: the API replaces whole files.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use std::io::{BufRead, BufReader, BufWriter, Write};
/// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
/// let mut out = BufWriter::new(fs.create("lines.txt")?);
/// for i in 0..1000 {
///     writeln!(out, "line {i}")?;
/// }
/// out.into_inner()?.close()?;
///
/// let lines = BufReader::new(fs.open("lines.txt")?).lines().count();
/// assert_eq!(lines, 1000);
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
pub struct File {
    fs: Filesystem,
    path: String,
    state: Mutex<State>,
}

enum State {
    Read(ReadState),
    Write(WriteState),
}

struct ReadState {
    /// Where the next `read` starts.
    pos: u64,
    /// The open response body and the file offset it is at.
    stream: Option<(Box<dyn Read + Send + Sync>, u64)>,
    /// The file's length as the server declared it when it was opened.
    len: Option<u64>,
}

struct WriteState {
    upload: Upload,
    /// Permissions asked for while uploading, applied once the file exists.
    pending_permissions: Option<Permissions>,
}

enum Upload {
    Running {
        tx: Sender<Vec<u8>>,
        thread: JoinHandle<Result<(), Error>>,
    },
    /// Committed (`Ok`) or failed (the error, kept to report to every later call).
    Done(Result<(), (io::ErrorKind, String)>),
}

impl File {
    fn open_read(fs: Filesystem, path: String) -> io::Result<File> {
        let mut state = ReadState {
            pos: 0,
            stream: None,
            len: None,
        };
        // Open now so a missing file (or a directory) fails here, as std's open does.
        reopen_at(&fs, &path, &mut state, 0)?;
        Ok(File {
            fs,
            path,
            state: Mutex::new(State::Read(state)),
        })
    }

    fn start_upload(fs: Filesystem, path: String, mode: u32) -> io::Result<File> {
        let (tx, rx) = bounded::<Vec<u8>>(UPLOAD_CHUNKS);
        let client = fs.sprite().client().clone();
        // No mkdirParents: a missing parent is NotFound, as in std.
        let url = fs.fs_path("write", &write_query(&path, &fs.cwd, mode, false));
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
            state: Mutex::new(State::Write(WriteState {
                upload: Upload::Running { tx, thread },
                pending_permissions: None,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state consistent between statements; a panic elsewhere
        // (a caller's Read impl, say) must not make the file unusable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's metadata (a fresh request for the path it was opened at), as
    /// `File::metadata`.
    ///
    /// # Errors
    ///
    /// As [`Filesystem::metadata`]; `NotFound` for a file whose upload is not committed yet (it does
    /// not exist on the sprite until then).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file-metadata", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// let mut file = fs.create("growing")?;
    /// file.write_all(b"12345")?;
    /// file.sync_all()?;
    /// assert_eq!(file.metadata()?.len(), 5);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.fs.metadata(&self.path)
    }

    /// Sets the file's permission bits, like std's `File::set_permissions`. For a file being
    /// uploaded, they are applied when the upload is committed.
    ///
    /// # Errors
    ///
    /// As [`Filesystem::set_permissions`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file-perm", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::fs::Permissions;
    /// use std::io::Write;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// let mut script = fs.create("hello.sh")?;
    /// script.write_all(b"#!/bin/sh\necho hello\n")?;
    /// script.set_permissions(Permissions::from_mode(0o755))?;
    /// script.close()?;
    /// assert_eq!(sprite.command(fs.current_dir().join("hello.sh")).output()?.stdout, b"hello\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn set_permissions(&self, perm: Permissions) -> io::Result<()> {
        let mut state = self.lock();
        if let State::Write(write) = &mut *state
            && let Upload::Running { .. } = write.upload
        {
            write.pending_permissions = Some(perm);
            return Ok(());
        }
        drop(state);
        self.fs.set_permissions(&self.path, perm)
    }

    /// Commits a write's upload and returns the server's verdict, standing in for std's
    /// `sync_all`: once this returns `Ok`, the file exists on the sprite, whole. For a file opened
    /// for reading, or already committed, it does nothing. Later writes fail: the API replaces whole
    /// files.
    ///
    /// # Errors
    ///
    /// What the server answered to the upload (`NotFound` for a parent directory removed meanwhile,
    /// `PermissionDenied`, ...) or a transport error; the same error again on every later call.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file-sync_all", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// let mut file = fs.create("report.txt")?;
    /// file.write_all(b"done")?;
    /// file.sync_all()?;
    /// assert_eq!(fs.read_to_string("report.txt")?, "done");
    /// assert_eq!(file.write(b"more").unwrap_err().kind(), std::io::ErrorKind::Unsupported);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn sync_all(&self) -> io::Result<()> {
        self.commit()
    }

    /// Same as [`sync_all`](Self::sync_all): the API has no data-only sync.
    ///
    /// # Errors
    ///
    /// As [`sync_all`](Self::sync_all).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file-sync_data", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// let mut file = fs.create("data")?;
    /// file.write_all(b"x")?;
    /// file.sync_data()?;
    /// assert_eq!(fs.read("data")?, b"x");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn sync_data(&self) -> io::Result<()> {
        self.commit()
    }

    /// Commits a write's upload and closes the file, returning the server's verdict, which
    /// dropping the file cannot return (drop logs a failure through the `log` crate instead).
    ///
    /// # Errors
    ///
    /// As [`sync_all`](Self::sync_all).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-file-close", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// fs.create_dir("gone")?;
    /// let mut file = fs.create("gone/file")?;
    /// file.write_all(b"lost")?;
    /// fs.remove_dir_all("gone")?;
    /// assert_eq!(file.close().unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn close(self) -> io::Result<()> {
        self.commit()
    }

    fn commit(&self) -> io::Result<()> {
        let mut state = self.lock();
        let State::Write(write) = &mut *state else {
            return Ok(());
        };
        if let Upload::Running { .. } = write.upload {
            let Upload::Running { tx, thread } =
                std::mem::replace(&mut write.upload, Upload::Done(Ok(())))
            else {
                unreachable!("checked above")
            };
            // Disconnecting the channel is the end of the body.
            drop(tx);
            let result = match thread.join() {
                Ok(result) => result.map_err(io::Error::from),
                Err(_) => Err(io::Error::other("the upload thread panicked")),
            };
            let result = result.and_then(|()| match write.pending_permissions.take() {
                Some(perm) => self.fs.set_permissions(&self.path, perm),
                None => Ok(()),
            });
            write.upload = Upload::Done(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| (e.kind(), e.to_string())),
            );
            return result;
        }
        match &write.upload {
            Upload::Done(Err((kind, message))) => Err(io::Error::new(*kind, message.clone())),
            _ => Ok(()),
        }
    }

    /// `read` for `File` and `&File`.
    fn read_locked(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.lock();
        let State::Read(state) = &mut *state else {
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
                let skipped =
                    io::copy(&mut (&mut *body).take(gap), &mut io::sink()).map_err(body_error)?;
                *at += skipped;
                skipped < gap
            }
            _ => true,
        };
        if needs_reopen {
            reopen_at(&self.fs, &self.path, state, pos)?;
        }
        let Some((body, at)) = &mut state.stream else {
            return Ok(0);
        };
        if *at != state.pos {
            return Ok(0); // past the end
        }
        let n = body.read(buf).map_err(body_error)?;
        *at += n as u64;
        state.pos += n as u64;
        Ok(n)
    }

    fn seek_locked(&self, from: SeekFrom) -> io::Result<u64> {
        let mut state = self.lock();
        let State::Read(state) = &mut *state else {
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
        state.pos = target;
        Ok(target)
    }

    fn write_locked(&self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.lock();
        let State::Write(write) = &mut *state else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file not opened for writing",
            ));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        match &write.upload {
            Upload::Running { tx, .. } => {
                let chunk = &buf[..buf.len().min(UPLOAD_CHUNK)];
                if tx.send(chunk.to_vec()).is_ok() {
                    return Ok(chunk.len());
                }
            }
            Upload::Done(Ok(())) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the file was committed (sync_all/sync_data/close); the Sprites API replaces \
                     whole files, so open it again to rewrite it",
                ));
            }
            Upload::Done(Err((kind, message))) => {
                return Err(io::Error::new(*kind, message.clone()));
            }
        }
        // The upload thread stopped early (the server refused): its result says why.
        drop(state);
        Err(self
            .commit()
            .err()
            .unwrap_or_else(|| io::Error::other("the upload ended early")))
    }

    fn flush_locked(&self) -> io::Result<()> {
        let finished = {
            let state = self.lock();
            match &*state {
                State::Write(WriteState {
                    upload: Upload::Running { thread, .. },
                    ..
                }) => thread.is_finished(),
                State::Write(WriteState {
                    upload: Upload::Done(Err((kind, message))),
                    ..
                }) => return Err(io::Error::new(*kind, message.clone())),
                _ => false,
            }
        };
        // A running upload has nothing buffered here to push; one that stopped early failed
        // (it only ends on its own when the server answers before the body is complete).
        if finished { self.commit() } else { Ok(()) }
    }

    /// The length the server declared when the file was opened for reading.
    pub(crate) fn declared_len(&self) -> Option<u64> {
        match &*self.lock() {
            State::Read(state) => state.len,
            State::Write(_) => None,
        }
    }

    /// The whole file, at most its declared length: the body may not be longer than the
    /// server said, which bounds memory whatever the server sends.
    pub(crate) fn read_all(&self) -> io::Result<Vec<u8>> {
        let declared = match &*self.lock() {
            State::Read(state) => state.len,
            State::Write(_) => None,
        };
        let limit = match declared {
            Some(len) => len,
            // A chunked body declares nothing: the size the listing reports is the bound.
            None => self.fs.metadata(&self.path)?.len(),
        };
        // Grown as data arrives, never from the declaration alone: a declared size is a limit,
        // not a promise.
        let mut data = Vec::with_capacity(limit.min(1 << 20) as usize);
        let mut reader = self;
        (&mut reader).take(limit + 1).read_to_end(&mut data)?;
        if data.len() as u64 > limit {
            return Err(Error::ResponseTooLarge {
                what: format!("the body of {}", self.path),
                limit,
            }
            .into());
        }
        Ok(data)
    }
}

/// An error reading a response body: a timeout surfaces as `WouldBlock` on some platforms,
/// which a blocking `Read` must not return; it is `TimedOut`, with the transport error inside.
fn body_error(err: io::Error) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::from(TransportError::io("reading a file from the server", err)).into()
        }
        _ => err,
    }
}

/// Opens the response body at `offset`, with a Range request when `offset > 0`.
fn reopen_at(fs: &Filesystem, path: &str, state: &mut ReadState, offset: u64) -> io::Result<()> {
    let mut query = Query::new();
    query.push("path", path).push("workingDir", &fs.cwd);
    let client = fs.sprite().client();
    let mut request = client.streaming_request("GET", &fs.fs_path("read", &query));
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
        let skipped =
            io::copy(&mut (&mut body).take(offset), &mut io::sink()).map_err(body_error)?;
        if skipped < offset {
            state.stream = Some((body, skipped));
            return Ok(());
        }
    }
    state.stream = Some((body, offset));
    Ok(())
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_locked(buf)
    }
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_locked(buf)
    }
}

impl Seek for File {
    /// Moves the read position; the next read re-requests from there with an HTTP `Range`
    /// (short forward moves skip on the open stream instead). `SeekFrom::End` uses the length
    /// the server reported when the file was opened.
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        self.seek_locked(from)
    }
}

impl Seek for &File {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        self.seek_locked(from)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_locked(buf)
    }

    /// Does not commit (see [`File`]); reports a failure the upload already met.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_locked()
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_locked(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_locked()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let running = matches!(
            &*self.lock(),
            State::Write(WriteState {
                upload: Upload::Running { .. },
                ..
            })
        );
        if running && let Err(err) = self.commit() {
            log::error!(
                "sprites: the upload of {} failed when the file was dropped (call close() to get this error): {err}",
                self.path
            );
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &*self.lock() {
            State::Read(state) => format!("read at {}", state.pos),
            State::Write(WriteState {
                upload: Upload::Running { .. },
                ..
            }) => "writing".to_owned(),
            State::Write(WriteState {
                upload: Upload::Done(Ok(())),
                ..
            }) => "committed".to_owned(),
            State::Write(_) => "failed".to_owned(),
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
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(content_range_total(Some("bytes 10-99/1234")), Some(1234));
        assert_eq!(content_range_total(Some("bytes 0-0/*")), None);
        assert_eq!(content_range_total(None), None);
    }

    #[test]
    fn chunk_reader_concatenates_until_disconnected() {
        let (tx, rx) = bounded(4);
        tx.send(b"ab".to_vec()).unwrap();
        tx.send(Vec::new()).unwrap();
        tx.send(b"cde".to_vec()).unwrap();
        drop(tx);
        let mut reader = ChunkReader {
            rx,
            current: Vec::new(),
            at: 0,
        };
        let mut small = [0u8; 2];
        assert_eq!(reader.read(&mut small).unwrap(), 2);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!((&small[..], &rest[..]), (&b"ab"[..], &b"cde"[..]));
    }

    #[test]
    fn timeouts_reading_a_body_are_timed_out() {
        let err = body_error(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(Error::from_io(&err), Some(Error::Transport(_))));
        let other = body_error(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(other.kind(), io::ErrorKind::ConnectionReset);
    }
}
