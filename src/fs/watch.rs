//! Watching a sprite's files ([PROTOCOL.md §9 "Watch"](crate::protocol#9-filesystem-api)):
//! [`Filesystem::watch`] subscribes to paths over `GET /v1/sprites/{name}/fs/watch` and
//! yields typed [`WatchEvent`]s, modelled on the `notify` crate's event kinds.
//!
//! A thread reads the WebSocket into a small bounded queue; when the caller stops taking
//! events, the thread stops reading, the server stops forwarding, and the sprite's kernel
//! drops events, which arrive as one [`EventKind::Overflow`]. Memory stays constant
//! whatever happens in the sprite.

use super::Filesystem;
use crate::error::{Error, Result};
use crate::exec::io::{Keepalive, SESSION_INFO_WAIT, closed_error};
use crate::watch_stream;
use crate::ws::{self, Socket};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Events queued between the watch thread and the caller.
const QUEUED_EVENTS: usize = 256;

/// What happened, as the `notify` crate names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A file or directory appeared (created, or moved in from outside the watched paths).
    Create,
    /// Something changed in place.
    Modify(ModifyKind),
    /// A file or directory was removed.
    Remove,
    /// One side of a rename: [`RenameMode::From`] names the old path (it no longer
    /// exists), [`RenameMode::To`] the new one (with [`WatchEvent::from`] when the old name
    /// was seen too).
    Rename(RenameMode),
    /// The sprite's event queue overflowed: some changes were dropped and are not reported.
    /// What the caller knows about the watched files may be stale; rescan if it matters.
    Overflow,
    /// The server could not watch something, e.g. a subscribed path that does not exist
    /// (`code` `ENOENT`) or a tree with more directories than the watch limit
    /// (`watch_limit`). The watch goes on.
    Error,
}

/// What kind of change [`EventKind::Modify`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModifyKind {
    /// The contents were written.
    Data,
    /// Permissions, ownership or timestamps changed (the server's `chmod`).
    Metadata,
}

/// Which side of a rename an [`EventKind::Rename`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenameMode {
    /// The old name.
    From,
    /// The new name.
    To,
}

/// One change in a watched sprite's files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventKind,
    /// The absolute path it happened to (empty for [`EventKind::Overflow`] and for errors
    /// about no particular path).
    pub path: PathBuf,
    /// For [`RenameMode::To`]: the old name, when the watch saw it.
    pub from: Option<PathBuf>,
    /// The file's size when the server saw the change, if it still existed and is not a
    /// directory.
    pub size: Option<u64>,
    /// Whether the path is a directory.
    pub is_dir: bool,
    /// When the server saw it (RFC 3339), as sent.
    pub timestamp: String,
    /// For [`EventKind::Error`] and [`EventKind::Overflow`]: the server's code (`ENOENT`,
    /// `watch_limit`, `overflow`), if it sent one.
    pub code: Option<String>,
    /// For [`EventKind::Error`] and [`EventKind::Overflow`]: the server's message.
    pub message: Option<String>,
}

/// A wire message, any of the three types (fields of the others absent).
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "isDir")]
    is_dir: Option<bool>,
    #[serde(default, rename = "renamedFrom")]
    renamed_from: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What a text frame said.
enum Parsed {
    Subscribed(Vec<PathBuf>),
    Event(WatchEvent),
    /// Not a message of this protocol (or an event kind this client does not know).
    Other,
}

impl WatchEvent {
    fn new(kind: EventKind, path: Option<String>) -> WatchEvent {
        WatchEvent {
            kind,
            path: path.map(PathBuf::from).unwrap_or_default(),
            from: None,
            size: None,
            is_dir: false,
            timestamp: String::new(),
            code: None,
            message: None,
        }
    }
}

fn parse(text: &str) -> Parsed {
    let Ok(w) = serde_json::from_str::<Wire>(text) else {
        return Parsed::Other;
    };
    match w.kind.as_str() {
        "subscribed" => Parsed::Subscribed(
            w.paths
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        ),
        "error" => {
            let kind = if w.code.as_deref() == Some("overflow") {
                EventKind::Overflow
            } else {
                EventKind::Error
            };
            let mut e = WatchEvent::new(kind, w.path);
            e.code = w.code;
            e.message = w.message;
            Parsed::Event(e)
        }
        "event" => {
            // fsnotify's names: a rename's new name arrives as `create` (with the old name
            // in `renamedFrom` when the server paired them), its old name as `rename`.
            let kind = match (w.event.as_deref(), &w.renamed_from) {
                (Some("create"), Some(_)) => EventKind::Rename(RenameMode::To),
                (Some("create"), None) => EventKind::Create,
                (Some("write"), _) => EventKind::Modify(ModifyKind::Data),
                (Some("chmod"), _) => EventKind::Modify(ModifyKind::Metadata),
                (Some("remove"), _) => EventKind::Remove,
                (Some("rename"), _) => EventKind::Rename(RenameMode::From),
                _ => return Parsed::Other,
            };
            let mut e = WatchEvent::new(kind, w.path);
            e.from = w.renamed_from.map(PathBuf::from);
            e.size = w.size;
            e.is_dir = w.is_dir.unwrap_or(false);
            e.timestamp = w.timestamp.unwrap_or_default();
            Parsed::Event(e)
        }
        _ => Parsed::Other,
    }
}

impl Filesystem {
    /// Watches `paths` (files or directories, relative ones resolved against this
    /// filesystem's directory) for changes made by anything in the sprite: a directory's
    /// entries (and, with `recursive`, everything below it, including directories created
    /// later), or a file itself. An extra beside std, whose closest thing is none.
    ///
    /// Returns once the server has confirmed the subscription. A path that cannot be watched
    /// (it does not exist) is reported as an [`EventKind::Error`] event, and the rest are
    /// watched. Events come in the order the sprite's kernel reported them. Dropping the
    /// watch closes it. A caller that takes no event for 45 s while more are waiting is
    /// taken for gone by the server, which ends the watch.
    ///
    /// What is not seen: changes made outside the watched trees (a hard link's other name,
    /// another mount on top of a watched directory), anything while the watch is not open,
    /// and events the sprite's kernel dropped because they came faster than the caller took
    /// them ([`EventKind::Overflow`] says so).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty list or a path that is not UTF-8; the server's refusal
    /// (too many watches open on the sprite: [`Error::Api`] with status 429); a transport
    /// error, or a server that never confirms within 10 s.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-fs-watch", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use sprites::fs::EventKind;
    /// use std::time::Duration;
    /// let mut watch = fs.watch(["."], true)?;
    /// fs.write("notes.txt", "hi")?;
    /// while let Some(event) = watch.recv_timeout(Duration::from_secs(5))? {
    ///     if event.kind == EventKind::Rename(sprites::fs::RenameMode::To) {
    ///         // Writes through the API land by rename.
    ///         assert!(event.path.ends_with("notes.txt"));
    ///         break;
    ///     }
    /// }
    /// # drop(watch); drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn watch<P: AsRef<Path>>(
        &self,
        paths: impl IntoIterator<Item = P>,
        recursive: bool,
    ) -> std::io::Result<FsWatch> {
        let paths = paths
            .into_iter()
            .map(|p| self.resolve(p.as_ref()))
            .collect::<std::io::Result<Vec<String>>>()?;
        if paths.is_empty() {
            return Err(std::io::Error::from(Error::InvalidInput(
                "watch needs at least one path".into(),
            )));
        }
        Ok(FsWatch::open(self, paths, recursive)?)
    }
}

/// What the watch thread hands to the [`FsWatch`].
enum Item {
    Subscribed(Vec<PathBuf>),
    Event(WatchEvent),
    /// The watch ended: `None` for a normal close (1000) by the server.
    End(Option<Error>),
}

/// A running filesystem watch, from [`Filesystem::watch`]: an iterator of
/// [`WatchEvent`]s (blocking), or [`recv_timeout`](Self::recv_timeout).
///
/// Dropping it closes the connection (close 1000) and ends its thread.
pub struct FsWatch {
    paths: Vec<PathBuf>,
    rx: Option<Receiver<Item>>,
    end: Option<Error>,
    socket: Arc<Socket>,
    thread: Option<JoinHandle<()>>,
}

impl FsWatch {
    fn open(fs: &Filesystem, paths: Vec<String>, recursive: bool) -> Result<FsWatch> {
        let sprite = fs.sprite();
        let client = sprite.client();
        let accepted = ws::dial(client, &sprite.path("/fs/watch"))?;
        let socket = Arc::new(accepted.socket);
        let subscribe = serde_json::json!({
            "type": "subscribe",
            "paths": paths,
            "recursive": recursive,
            "workingDir": fs.current_dir().to_string_lossy(),
        });
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .map_err(closed_error)?;
        let (tx, rx) = bounded(QUEUED_EVENTS);
        let watcher = Watcher {
            socket: socket.clone(),
            tx,
            keepalive: client.inner.keepalive,
        };
        let thread = std::thread::Builder::new()
            .name("sprites-fs-watch".into())
            .spawn(move || watcher.run())
            .map_err(Error::Io)?;
        let mut watch = FsWatch {
            paths: Vec::new(),
            rx: Some(rx),
            end: None,
            socket,
            thread: Some(thread),
        };
        // Bounded by the thread, which gives up without a `subscribed` after
        // SESSION_INFO_WAIT.
        match watch.rx.as_ref().map(Receiver::recv) {
            Some(Ok(Item::Subscribed(paths))) => {
                watch.paths = paths;
                Ok(watch)
            }
            Some(Ok(Item::End(Some(err)))) => Err(err),
            _ => Err(Error::Protocol(
                "the server closed the filesystem watch before confirming it".into(),
            )),
        }
    }

    /// The paths the server confirmed it watches (absolute).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-fs-watch-paths", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// let watch = fs.watch(["."], false)?;
    /// assert_eq!(watch.paths(), [fs.current_dir()]);
    /// # drop(watch); drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The next event, waiting at most `timeout`: `Ok(None)` when nothing happened.
    ///
    /// # Errors
    ///
    /// Once the watch has ended: [`Error::ConnectionClosed`] (code 1000 when the server
    /// closed it normally), else what ended it. Later calls say only that it has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-fs-watch-recv", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::time::Duration;
    /// let mut watch = fs.watch(["."], false)?;
    /// // Nothing changes here: the wait ends empty-handed.
    /// assert_eq!(watch.recv_timeout(Duration::from_millis(100))?, None);
    /// # drop(watch); drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>> {
        match self.next_item(Some(Instant::now() + timeout)) {
            Some(Some(event)) => Ok(Some(event)),
            Some(None) => Ok(None),
            None => Err(self.end.take().unwrap_or_else(|| Error::ConnectionClosed {
                code: None,
                reason: "the filesystem watch has ended".into(),
            })),
        }
    }

    /// `Some(Some(event))`, `Some(None)` on timeout, `None` once ended (why: `self.end`).
    fn next_item(&mut self, deadline: Option<Instant>) -> Option<Option<WatchEvent>> {
        loop {
            let rx = self.rx.as_ref()?;
            let item = match deadline {
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(item) => item,
                    Err(RecvTimeoutError::Timeout) => return Some(None),
                    Err(RecvTimeoutError::Disconnected) => Item::End(None),
                },
                None => rx.recv().unwrap_or(Item::End(None)),
            };
            match item {
                Item::Event(event) => return Some(Some(event)),
                Item::Subscribed(_) => continue,
                Item::End(reason) => {
                    self.rx = None;
                    self.end = Some(reason.unwrap_or(Error::ConnectionClosed {
                        code: Some(1000),
                        reason: "the server closed the filesystem watch".into(),
                    }));
                    return None;
                }
            }
        }
    }
}

impl Iterator for FsWatch {
    type Item = Result<WatchEvent>;
    /// Blocks until the next event. Ends (`None`) when the server closes the watch
    /// normally; any other end is yielded once as `Err`, then `None`.
    fn next(&mut self) -> Option<Result<WatchEvent>> {
        match self.next_item(None) {
            Some(Some(event)) => Some(Ok(event)),
            Some(None) => None,
            None => match self.end.take() {
                Some(Error::ConnectionClosed {
                    code: Some(1000), ..
                })
                | None => None,
                Some(error) => Some(Err(error)),
            },
        }
    }
}

impl Drop for FsWatch {
    fn drop(&mut self) {
        // Dropping the queue first frees a thread waiting for room in it; the close wakes one
        // waiting on the socket.
        self.rx = None;
        self.socket.close_now(1000);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for FsWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsWatch")
            .field("paths", &self.paths)
            .field("ended", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}

/// The thread behind an [`FsWatch`] ([`crate::watch_stream`]): the subscription first, then
/// events.
struct Watcher {
    socket: Arc<Socket>,
    tx: Sender<Item>,
    keepalive: Keepalive,
}

impl Watcher {
    fn run(self) {
        let mut decoder = Decode { subscribed: false };
        let tx = &self.tx;
        // Blocks while the caller is behind: the server then holds back too.
        let end = watch_stream::run(&self.socket, self.keepalive, &mut decoder, |item| {
            tx.send(item).is_ok()
        });
        let _ = self.tx.send(Item::End(end));
    }
}

/// What a filesystem watch's messages mean: `subscribed`, then events.
struct Decode {
    subscribed: bool,
}

impl watch_stream::Decoder for Decode {
    type Item = Item;

    fn unconfirmed(&self) -> bool {
        !self.subscribed
    }

    fn late(&self) -> Error {
        Error::Protocol(format!(
            "the server did not confirm the filesystem watch within {SESSION_INFO_WAIT:?}"
        ))
    }

    fn text(&mut self, text: &str, deliver: &mut dyn FnMut(Item) -> bool) -> Result<bool> {
        let item = match parse(text) {
            Parsed::Subscribed(paths) if !self.subscribed => {
                self.subscribed = true;
                Item::Subscribed(paths)
            }
            Parsed::Event(event) if self.subscribed => Item::Event(event),
            Parsed::Event(_) => {
                return Err(Error::Protocol(
                    "the server sent a watch event before confirming the watch".into(),
                ));
            }
            Parsed::Subscribed(_) | Parsed::Other => return Ok(true),
        };
        Ok(deliver(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> WatchEvent {
        match parse(text) {
            Parsed::Event(e) => e,
            _ => panic!("not an event: {text}"),
        }
    }

    #[test]
    fn wire_messages_become_notify_kinds() {
        let e = event(
            r#"{"type":"event","path":"/a","event":"write","timestamp":"t","size":3,"isDir":false}"#,
        );
        assert_eq!(e.kind, EventKind::Modify(ModifyKind::Data));
        assert_eq!(
            (e.path.as_path(), e.size, e.is_dir),
            (Path::new("/a"), Some(3), false)
        );
        assert_eq!(
            event(r#"{"type":"event","path":"/a","event":"create"}"#).kind,
            EventKind::Create
        );
        let to = event(r#"{"type":"event","path":"/b","event":"create","renamedFrom":"/a"}"#);
        assert_eq!(to.kind, EventKind::Rename(RenameMode::To));
        assert_eq!(to.from.as_deref(), Some(Path::new("/a")));
        assert_eq!(
            event(r#"{"type":"event","path":"/a","event":"rename"}"#).kind,
            EventKind::Rename(RenameMode::From)
        );
        assert_eq!(
            event(r#"{"type":"event","path":"/a","event":"remove"}"#).kind,
            EventKind::Remove
        );
        assert_eq!(
            event(r#"{"type":"event","path":"/a","event":"chmod","isDir":true}"#).kind,
            EventKind::Modify(ModifyKind::Metadata)
        );
        let o = event(r#"{"type":"error","code":"overflow","message":"m"}"#);
        assert_eq!(
            (o.kind, o.message.as_deref()),
            (EventKind::Overflow, Some("m"))
        );
        let n = event(r#"{"type":"error","code":"ENOENT","path":"/x","message":"m"}"#);
        assert_eq!(
            (n.kind, n.code.as_deref()),
            (EventKind::Error, Some("ENOENT"))
        );
        assert!(matches!(
            parse(r#"{"type":"event","event":"unknown"}"#),
            Parsed::Other
        ));
        assert!(matches!(parse("garbage"), Parsed::Other));
        assert!(matches!(
            parse(r#"{"type":"subscribed","paths":["/a"]}"#),
            Parsed::Subscribed(p) if p == [PathBuf::from("/a")]
        ));
    }
}
