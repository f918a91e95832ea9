//! The filesystem watch (PROTOCOL.md §9 "Watch"): inotify on the paths a client subscribed
//! to, turned into the protocol's JSON messages, one per line, on a socket.
//!
//! [`run`] is the whole watcher and knows nothing of HTTP: it runs wherever the paths must
//! be resolved. For the host runtime that is a thread of the server; for a sandboxed sprite
//! it is a child of the sprite's agent, inside the sprite (its root, its mount namespace,
//! its user), because `inotify_add_watch` resolves paths in the caller's namespace and with
//! its credentials: a symlink in the sprite then cannot name a host path. The server only
//! forwards the lines ([`crate::api`]'s fs watch session), checking each.
//!
//! Bounded everywhere: at most [`WatchSpec::max_watches`] inotify watches (past it, one
//! `watch_limit` error and nothing below the unwatched directories), a fixed read buffer,
//! and no queue of our own: each message is written before the next event is read, so a
//! slow reader stops us, the kernel's queue (`fs.inotify.max_queued_events`) fills, and
//! the kernel drops events with `IN_Q_OVERFLOW`, which becomes one `overflow` error
//! message.

mod events;
mod message;

pub use message::{check_line, Message, MAX_LINE};

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::fsops::join;
use crate::sys;
use events::RawEvent;

/// Watches one connection may hold, unless the server is told otherwise.
pub const DEFAULT_MAX_WATCHES: usize = 4096;

/// What a client subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchSpec {
    /// Absolute, clean paths (files or directories).
    pub paths: Vec<String>,
    /// Watch every directory below a watched directory too, including ones created later.
    pub recursive: bool,
    /// Most inotify watches (one per directory, or per watched file).
    pub max_watches: usize,
}

/// Events on a watched directory.
const DIR_MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;
/// Events on a watched file.
const FILE_MASK: u32 =
    libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
/// Enough for hundreds of events per read; the kernel's minimum is one event with a
/// NAME_MAX name.
const READ_BUF: usize = 64 * 1024;

/// Watches `spec`'s paths and writes one [`Message`] per line to `out` until the other end
/// of `out` closes (or a write fails). First a `subscribed` message, then an `error` for
/// each path that could not be watched, then the events.
pub fn run(spec: &WatchSpec, out: OwnedFd) {
    let mut w = match Watcher::new(spec, out) {
        Ok(w) => w,
        Err(_) => return,
    };
    let _ = w.serve(spec);
}

struct Watcher {
    ino: OwnedFd,
    out: OwnedFd,
    recursive: bool,
    max: usize,
    /// Watch descriptor → the path it watches.
    wds: HashMap<i32, String>,
    /// The subscribed paths' own watches: their self events are reported (a subdirectory's
    /// are reported by its parent, by name).
    roots: HashSet<i32>,
    /// The watch limit was reported.
    limit_told: bool,
}

impl Watcher {
    fn new(spec: &WatchSpec, out: OwnedFd) -> io::Result<Watcher> {
        Ok(Watcher {
            ino: sys::inotify::init()?,
            out,
            recursive: spec.recursive,
            max: spec.max_watches,
            wds: HashMap::new(),
            roots: HashSet::new(),
            limit_told: false,
        })
    }

    fn serve(&mut self, spec: &WatchSpec) -> io::Result<()> {
        let mut failures = Vec::new();
        for path in &spec.paths {
            if let Err(e) = self.add_root(path) {
                failures.push(Message::fs_error(path, &e));
            }
        }
        self.send(&Message::Subscribed {
            paths: spec.paths.clone(),
        })?;
        for m in failures {
            self.send(&m)?;
        }
        if self.limit_told {
            self.send(&self.limit_message())?;
        }
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.ino.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.out.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            match sys::fd::poll(&mut fds, -1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if fds[1].revents != 0 {
                // The server never writes: readable means it hung up.
                return Ok(());
            }
            if fds[0].revents != 0 {
                self.drain(&mut buf)?;
            }
        }
    }

    /// Reads and handles every queued event (the fd is non-blocking).
    fn drain(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            let n = match sys::fd::read(self.ino.as_fd(), buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let batch: Vec<RawEvent> = events::parse(&buf[..n]).collect();
            self.handle(&batch)?;
        }
    }

    /// Handles one read's events, pairing renames by cookie within it.
    fn handle(&mut self, batch: &[RawEvent]) -> io::Result<()> {
        // Cookie → the old path of a rename seen in this batch.
        let mut moved_from: HashMap<u32, String> = HashMap::new();
        // Directories renamed away whose new name has not been seen (yet).
        let mut moved_dirs: HashMap<u32, String> = HashMap::new();
        let was_told = self.limit_told;
        for ev in batch {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                self.send(&Message::overflow())?;
                continue;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                self.wds.remove(&ev.wd);
                self.roots.remove(&ev.wd);
                continue;
            }
            let Some(dir) = self.wds.get(&ev.wd) else {
                continue;
            };
            let is_root = self.roots.contains(&ev.wd);
            let is_dir = ev.mask & libc::IN_ISDIR != 0;
            let path = match &ev.name {
                Some(name) => join(dir, name),
                // A subdirectory's own events come again from its parent, by name.
                None if !is_root => continue,
                None => dir.clone(),
            };
            if ev.mask & libc::IN_CREATE != 0 {
                self.send(&Message::event(&path, "create", is_dir))?;
                if is_dir && self.recursive {
                    self.add_tree(&path, true)?;
                }
            }
            if ev.mask & libc::IN_MOVED_TO != 0 {
                let from = moved_from.get(&ev.cookie).cloned();
                let mut m = Message::event(&path, "create", is_dir);
                if let Message::Event { renamed_from, .. } = &mut m {
                    renamed_from.clone_from(&from);
                }
                self.send(&m)?;
                if is_dir && self.recursive {
                    match moved_dirs.remove(&ev.cookie) {
                        // Renamed inside the tree: its watches stay, under the new name.
                        Some(old) => self.rename_prefix(&old, &path),
                        None => self.add_tree(&path, true)?,
                    }
                }
            }
            if ev.mask & libc::IN_MODIFY != 0 {
                self.send(&Message::event(&path, "write", is_dir))?;
            }
            if ev.mask & libc::IN_ATTRIB != 0 {
                self.send(&Message::event(&path, "chmod", is_dir))?;
            }
            if ev.mask & libc::IN_DELETE != 0 {
                self.send(&Message::gone(&path, "remove", is_dir))?;
            }
            if ev.mask & libc::IN_MOVED_FROM != 0 {
                self.send(&Message::gone(&path, "rename", is_dir))?;
                moved_from.insert(ev.cookie, path.clone());
                if is_dir {
                    moved_dirs.insert(ev.cookie, path.clone());
                }
            }
            if is_root && ev.name.is_none() {
                if ev.mask & libc::IN_DELETE_SELF != 0 {
                    self.send(&Message::gone(&path, "remove", is_dir))?;
                }
                if ev.mask & libc::IN_MOVE_SELF != 0 {
                    self.send(&Message::gone(&path, "rename", is_dir))?;
                }
            }
        }
        // Renamed out of the watched tree: what is below no longer has these names, and
        // is no longer ours to report.
        for old in moved_dirs.into_values() {
            self.unwatch_prefix(&old);
        }
        if self.limit_told && !was_told {
            self.send(&self.limit_message())?;
        }
        Ok(())
    }

    /// Watches a subscribed path (a symlink there is followed), and with `recursive` every
    /// directory below it.
    fn add_root(&mut self, path: &str) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let mask = if meta.is_dir() { DIR_MASK } else { FILE_MASK };
        let Some(wd) = self.add_watch(path, mask)? else {
            return Ok(());
        };
        self.roots.insert(wd);
        if meta.is_dir() && self.recursive {
            self.add_tree(path, false)?;
        }
        Ok(())
    }

    /// Watches every directory below `top` (already watched or not), never following a
    /// symlink. With `announce`, reports a `create` for every entry found: a directory that
    /// just appeared may already have contents that were made before its watch existed.
    fn add_tree(&mut self, top: &str, announce: bool) -> io::Result<()> {
        if !self.wds.values().any(|p| p == top) {
            let flags = DIR_MASK | libc::IN_DONT_FOLLOW;
            if self.add_watch(top, flags)?.is_none() {
                return Ok(());
            }
        }
        let mut stack = vec![top.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // gone or unreadable: nothing to watch there
            };
            for entry in entries.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let path = join(&dir, &entry.file_name().to_string_lossy());
                if announce {
                    self.send(&Message::event(&path, "create", ft.is_dir()))?;
                }
                if ft.is_dir() {
                    let flags = DIR_MASK | libc::IN_DONT_FOLLOW;
                    if self.add_watch(&path, flags)?.is_some() {
                        stack.push(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds one watch: `Some(wd)`, or `None` when the limit (ours or the kernel's) is
    /// reached or the path vanished. Other errors are the caller's.
    fn add_watch(&mut self, path: &str, mask: u32) -> io::Result<Option<i32>> {
        if self.wds.len() >= self.max {
            self.limit_told = true;
            return Ok(None);
        }
        match sys::inotify::add_watch(self.ino.as_fd(), path, mask) {
            Ok(wd) => {
                self.wds.insert(wd, path.to_owned());
                Ok(Some(wd))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                self.limit_told = true;
                Ok(None)
            }
            // Gone, or replaced by something that is not a directory, since it was seen.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// After a rename inside the tree: the watches at and below `old` are at `new` now.
    fn rename_prefix(&mut self, old: &str, new: &str) {
        for path in self.wds.values_mut() {
            if let Some(rest) = under(path, old) {
                *path = format!("{new}{rest}");
            }
        }
    }

    /// Removes the watches at and below `old` (not the subscribed paths themselves).
    fn unwatch_prefix(&mut self, old: &str) {
        let gone: Vec<i32> = self
            .wds
            .iter()
            .filter(|(wd, p)| !self.roots.contains(wd) && under(p, old).is_some())
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = sys::inotify::rm_watch(self.ino.as_fd(), wd);
            self.wds.remove(&wd);
        }
    }

    fn limit_message(&self) -> Message {
        Message::Error {
            code: Some("watch_limit".into()),
            path: None,
            message: format!(
                "the watch limit ({} directories) is reached: changes in directories beyond it \
                 are not reported",
                self.max
            ),
        }
    }

    /// Writes one message and its newline. Blocks while the reader is behind: that is the
    /// back-pressure that makes the kernel drop events (with `IN_Q_OVERFLOW`) rather than
    /// this process queue them.
    fn send(&mut self, m: &Message) -> io::Result<()> {
        let mut line = serde_json::to_vec(m).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut sent = 0;
        while sent < line.len() {
            // MSG_NOSIGNAL: a server that hung up is EPIPE, never a SIGPIPE.
            match sys::socket::send_nosignal(self.out.as_raw_fd(), &line[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `Some(rest)` if `path` is `prefix` or below it (`rest` is then `""` or `/…`).
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Size of `path` now (not following a symlink), for a file that still exists.
fn size_of(path: &str) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| !m.is_dir())
        .map(|m| m.size())
}

#[cfg(test)]
mod tests;
