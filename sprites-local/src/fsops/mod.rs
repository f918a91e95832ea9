//! Filesystem operations on one namespace, with no HTTP in them (PROTOCOL.md §9).
//!
//! [`SpriteFs`] is what a runtime provides: [`HostFs`] runs the operations directly on this
//! machine's paths. The trait is shaped so a runtime can also run them *elsewhere*, e.g. an
//! agent inside a sandboxed sprite:
//!
//! - every non-streaming operation is one serialisable [`FsOp`] answered by one serialisable
//!   [`FsOutput`] or [`FsError`] (JSON over a socket works);
//! - streaming never goes through that channel: a read is an open [`File`] (a descriptor the
//!   agent can pass with `SCM_RIGHTS`), and a write is a temp file opened by
//!   [`SpriteFs::begin_write`] (again a descriptor), filled here, then committed or aborted
//!   by name with two more small requests.
//!
//! Paths given to a `SpriteFs` are absolute and lexically clean ([`resolve`] makes them so).

mod chown;
mod copy;
mod error;
mod host;
pub mod journal;
mod tree;
mod types;

pub use error::FsError;
pub use host::HostFs;
pub use types::{
    Chmodded, Chowned, Copied, CopyPair, Deleted, Entry, EntryKind, FsOp, FsOutput, Listing,
    ModeChange, Owner, OwnerChange, Renamed, WriteSpec, Written,
};

use std::fs::File;
use std::io::{self, Read, Write};

/// Buffer size for copying a request body into a file: big enough that a 1 GiB upload costs
/// a few thousand syscalls, small enough to be per-request scratch.
pub const COPY_BUF: usize = 256 * 1024;

/// A file opened for reading: the descriptor and its length when it was opened.
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file (a regular file; directories are refused with `EISDIR`).
    pub file: File,
    /// Its size in bytes at open time.
    pub len: u64,
}

/// A temp file created next to a write's target, not yet committed.
#[derive(Debug)]
pub struct PendingWrite {
    /// The open temp file to fill.
    pub file: File,
    /// The temp file's absolute path (`<dir>/.<name>.sprites-tmp-<random>`): what commit and
    /// abort refer to.
    pub temp: String,
    /// The file the temp file will replace: `spec.path` with symlinks followed.
    pub target: String,
    /// What was asked for.
    pub spec: WriteSpec,
}

/// The filesystem of one sprite (or, for the host runtime, of this machine).
///
/// Implementations must be safe to call from many connection threads at once.
pub trait SpriteFs: Send + Sync {
    /// Runs one non-streaming operation.
    fn run(&self, op: &FsOp) -> Result<FsOutput, FsError>;

    /// Opens a regular file for reading, following symlinks (a loop fails with `ELOOP`).
    /// A directory is `EISDIR`; other non-regular files (FIFOs, devices) are `EINVAL`.
    fn open_read(&self, path: &str) -> Result<OpenedFile, FsError>;

    /// Validates a write and creates its temp file in the target's directory (creating
    /// missing parents if asked). The target itself is not touched.
    fn begin_write(&self, spec: &WriteSpec) -> Result<PendingWrite, FsError>;

    /// Makes a filled temp file the target: chmod, fsync if the spec is durable, rename over
    /// the target.
    /// On failure the temp file is removed and the old target is intact.
    fn commit_write(&self, pending: PendingWrite) -> Result<Written, FsError>;

    /// Removes the temp file of a write that will not be committed.
    fn abort_write(&self, pending: PendingWrite);

    /// Starts watching `spec`'s paths (PROTOCOL.md §9 "Watch"): returns the reading end of
    /// a stream socket on which [`crate::fswatch::run`], running where the paths resolve,
    /// writes one message per line. Closing it stops the watcher.
    fn watch(&self, spec: &crate::fswatch::WatchSpec) -> Result<std::os::fd::OwnedFd, FsError> {
        let path = spec.paths.first().map_or("/", String::as_str);
        Err(FsError::with_detail(
            libc::ENOSYS,
            path,
            "this runtime cannot watch files",
        ))
    }

    /// Removes the temp file (`temp`, a path [`begin_write`](Self::begin_write) made) of a
    /// write that an earlier server process left unfinished; anything not named like such a
    /// temp file is left alone.
    fn remove_temp(&self, temp: &str);
}

/// Whether `path`'s last component is named like a write's temp file
/// (`.<name>.sprites-tmp-<16 hex digits>`).
pub fn is_temp_name(path: &str) -> bool {
    let name = base_name(path);
    name.starts_with('.')
        && name
            .rsplit_once(".sprites-tmp-")
            .is_some_and(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Why [`write_atomic`] failed.
#[derive(Debug)]
pub enum WriteError {
    /// The filesystem refused (before or after the body was read).
    Fs(FsError),
    /// The body could not be read to its end (connection cut, bad framing, short body).
    /// Nothing was committed.
    Body(io::Error),
    /// The body was read but writing it to the temp file failed (e.g. `ENOSPC`).
    /// Nothing was committed.
    Store(FsError),
}

/// Writes `body` to `spec.path` atomically: the target is replaced only once the whole body
/// has been read and synced; on any failure the temp file is removed and the old file stays.
///
/// Memory is one [`COPY_BUF`] buffer whatever the body's size.
pub fn write_atomic(
    fs: &dyn SpriteFs,
    spec: &WriteSpec,
    body: &mut dyn Read,
) -> Result<Written, WriteError> {
    let pending = fs.begin_write(spec).map_err(WriteError::Fs)?;
    fill(fs, pending, body)
}

/// Copies `body` into a pending write's temp file, then commits it (or aborts on failure).
fn fill(
    fs: &dyn SpriteFs,
    mut pending: PendingWrite,
    body: &mut dyn Read,
) -> Result<Written, WriteError> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                fs.abort_write(pending);
                return Err(WriteError::Body(e));
            }
        };
        if let Err(e) = pending.file.write_all(&buf[..n]) {
            let err = FsError::from_io(&e, pending.spec.path.clone());
            fs.abort_write(pending);
            return Err(WriteError::Store(err));
        }
    }
    fs.commit_write(pending).map_err(WriteError::Fs)
}

/// Resolves `path` against `working_dir` (itself resolved against `/`; default `/`) and
/// cleans it lexically (`.`, `..`, repeated `/`), giving an absolute path. Lexical `..` is
/// what the clients do too. An empty path is `EINVAL`.
pub fn resolve(working_dir: Option<&str>, path: &str) -> Result<String, FsError> {
    if path.is_empty() {
        return Err(FsError::with_detail(libc::EINVAL, "", "empty path"));
    }
    let mut parts: Vec<&str> = Vec::new();
    let base = if path.starts_with('/') {
        ""
    } else {
        working_dir.unwrap_or("/")
    };
    for part in base.split('/').chain(path.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = String::with_capacity(path.len() + base.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The directory part of a clean absolute path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a clean absolute path (`/` for the root).
pub fn base_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) if i + 1 < path.len() => &path[i + 1..],
        _ => "/",
    }
}

/// `dir` joined with `name` (`/` + `a` → `/a`).
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Parses a mode: an octal string with or without a leading `0`/`0o` (`"0755"`, `"755"`),
/// masked to `0o7777` (so `"100644"`, a full `st_mode`, gives `0644`). Anything else is
/// `None`.
pub fn parse_mode_str(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    // Overflowing u32 fails here rather than wrapping.
    Some(u32::from_str_radix(digits, 8).ok()? & 0o7777)
}

/// A mode as `%04o` (`0644`).
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_paths() {
        let r = |wd: Option<&str>, p: &str| resolve(wd, p).unwrap();
        assert_eq!(r(None, "a/b"), "/a/b");
        assert_eq!(r(Some("/home/s"), "a/./b/../c"), "/home/s/a/c");
        assert_eq!(r(Some("/home/s"), "/etc//x/"), "/etc/x");
        assert_eq!(r(Some("/home/s"), ".."), "/home");
        assert_eq!(r(Some("/"), "../../.."), "/");
        assert_eq!(r(Some("rel/dir"), "f"), "/rel/dir/f");
        assert_eq!(r(Some(""), "f"), "/f");
        assert_eq!(r(None, "/"), "/");
        assert_eq!(r(None, "/a/.."), "/");
        assert_eq!(resolve(None, "").unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn path_pieces() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/"), "/");
        assert_eq!(base_name("/a/b"), "b");
        assert_eq!(base_name("/"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode_str("0755"), Some(0o755));
        assert_eq!(parse_mode_str("755"), Some(0o755));
        assert_eq!(parse_mode_str("0o600"), Some(0o600));
        assert_eq!(parse_mode_str("4755"), Some(0o4755));
        assert_eq!(parse_mode_str("07777"), Some(0o7777));
        assert_eq!(parse_mode_str("0"), Some(0));
        assert_eq!(parse_mode_str("100644"), Some(0o644));
        for bad in ["", "8", "0x1ff", "rwx", "-1", "0999", "1 2", "777777777777"] {
            assert_eq!(parse_mode_str(bad), None, "{bad:?}");
        }
        assert_eq!(format_mode(0o644), "0644");
        assert_eq!(format_mode(0o104755), "4755");
    }
}
