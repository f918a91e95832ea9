//! [`HostFs`]: the operations run directly on this machine's paths with `std::fs`/libc.
//!
//! The host runtime isolates nothing: these are the server user's own files, exactly as its
//! commands see them.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use super::tree::{children, entry};
use super::{
    base_name, format_mode, parent_of, resolve, Chmodded, Deleted, FsError, FsOp, FsOutput,
    Listing, ModeChange, OpenedFile, PendingWrite, Renamed, SpriteFs, WriteSpec, Written,
};

/// Most entries one listing returns; a bigger one is refused (`EINVAL`) rather than built
/// in memory. List a narrower path instead.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Most items that copy and chmod report one by one (`count` is always the full total).
pub const MAX_REPORTED: usize = 10_000;
/// Most symlinks followed when resolving a write's target (the kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;

/// Runs filesystem operations directly on the host's paths. Stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFs;

impl SpriteFs for HostFs {
    fn run(&self, op: &FsOp) -> Result<FsOutput, FsError> {
        Ok(match op {
            FsOp::List { path, recursive } => FsOutput::Listing(self.list(path, *recursive)?),
            FsOp::Delete { path, recursive } => FsOutput::Deleted(self.delete(path, *recursive)?),
            FsOp::Rename { source, dest } => FsOutput::Renamed(self.rename(source, dest)?),
            FsOp::Copy {
                source,
                dest,
                recursive,
                preserve_attrs,
            } => FsOutput::Copied(self.copy(source, dest, *recursive, *preserve_attrs)?),
            FsOp::Chmod {
                path,
                mode,
                recursive,
            } => FsOutput::Chmodded(self.chmod(path, *mode, *recursive)?),
            FsOp::Chown {
                path,
                uid,
                gid,
                recursive,
                as_root: _, // the privilege is the caller's to arrange (see `FsOp::Chown`)
            } => FsOutput::Chowned(super::chown::chown(
                path,
                uid.as_ref(),
                gid.as_ref(),
                *recursive,
            )?),
        })
    }

    fn open_read(&self, path: &str) -> Result<OpenedFile, FsError> {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        // It changes nothing for the regular files we go on to accept.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| FsError::from_io(&e, path))?;
        let meta = file.metadata().map_err(|e| FsError::from_io(&e, path))?;
        if meta.is_dir() {
            return Err(FsError::new(libc::EISDIR, path));
        }
        if !meta.is_file() {
            return Err(FsError::with_detail(
                libc::EINVAL,
                path,
                "not a regular file",
            ));
        }
        Ok(OpenedFile {
            file,
            len: meta.len(),
        })
    }

    fn begin_write(&self, spec: &WriteSpec) -> Result<PendingWrite, FsError> {
        let target = follow_links(&spec.path)?;
        match fs::metadata(&target) {
            Ok(m) if m.is_dir() => return Err(FsError::new(libc::EISDIR, &spec.path)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::from_io(&e, &spec.path)),
        }
        let dir = parent_of(&target);
        if spec.mkdir_parents {
            if let Err(e) = fs::create_dir_all(dir) {
                // EEXIST here means some component is a file, which is what ENOTDIR says.
                let errno = match e.raw_os_error() {
                    Some(libc::EEXIST) => libc::ENOTDIR,
                    _ => FsError::from_io(&e, dir).errno,
                };
                return Err(FsError::new(errno, dir));
            }
        }
        let (file, temp) =
            create_temp(dir, base_name(&target)).map_err(|e| FsError::from_io(&e, &spec.path))?;
        Ok(PendingWrite {
            file,
            temp,
            target,
            spec: spec.clone(),
        })
    }

    fn commit_write(&self, pending: PendingWrite) -> Result<Written, FsError> {
        let PendingWrite {
            file,
            temp,
            target,
            spec,
        } = pending;
        // fchmod on the open file: the mode is applied exactly (no umask), before the file
        // becomes visible under its name. The rename makes the new content visible whole or
        // not at all; an fsync (only when the server was asked for durable writes) would make
        // it survive a power cut too, at the cost of a disk flush on every write (PROTOCOL.md
        // §9 "Write").
        let done = file
            .set_permissions(Permissions::from_mode(spec.mode))
            .and_then(|()| {
                if spec.durable {
                    file.sync_all()
                } else {
                    Ok(())
                }
            })
            .and_then(|()| file.metadata())
            .and_then(|meta| fs::rename(&temp, &target).map(|()| meta.len()));
        match done {
            Ok(size) => Ok(Written {
                path: spec.path,
                size,
                mode: format_mode(spec.mode),
            }),
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&temp);
                Err(FsError::from_io(&e, spec.path))
            }
        }
    }

    fn abort_write(&self, pending: PendingWrite) {
        drop(pending.file);
        let _ = fs::remove_file(&pending.temp);
    }

    fn remove_temp(&self, temp: &str) {
        if super::is_temp_name(temp) {
            let _ = fs::remove_file(temp);
        }
    }

    /// The watcher runs in a thread of this process: the host runtime's paths are this
    /// machine's. It ends when the returned socket closes.
    fn watch(&self, spec: &crate::fswatch::WatchSpec) -> Result<std::os::fd::OwnedFd, FsError> {
        let path = spec.paths.first().map_or("/", String::as_str);
        let (ours, theirs) =
            crate::sys::socket::stream_pair().map_err(|e| FsError::from_io(&e, path))?;
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("sprites-fs-watch".into())
            .stack_size(256 * 1024)
            .spawn(move || crate::fswatch::run(&spec, theirs))
            .map_err(|e| FsError::from_io(&e, path))?;
        Ok(ours)
    }
}

impl HostFs {
    /// A directory's entries (every descendant, depth first, when `recursive`), or exactly
    /// one entry for a non-directory: named after `path`, with its *target's* stat.
    pub fn list(&self, path: &str, recursive: bool) -> Result<Listing, FsError> {
        let meta = fs::metadata(path).map_err(|e| FsError::from_io(&e, path))?;
        if !meta.is_dir() {
            let one = entry(base_name(path), path, &meta);
            return Ok(Listing {
                path: path.to_owned(),
                entries: vec![one],
                count: 1,
            });
        }
        let mut entries = Vec::new();
        // A stack of sorted child lists gives a sorted pre-order walk without recursion.
        let mut stack = vec![children(path)?.into_iter()];
        while let Some(level) = stack.last_mut() {
            let Some(child) = level.next() else {
                stack.pop();
                continue;
            };
            if entries.len() == MAX_LIST_ENTRIES {
                return Err(FsError::with_detail(
                    libc::EINVAL,
                    path,
                    &format!("more than {MAX_LIST_ENTRIES} entries; list a narrower path"),
                ));
            }
            entries.push(entry(&child.name, &child.path, &child.meta));
            if recursive && child.is_dir() {
                match children(&child.path) {
                    Ok(list) => stack.push(list.into_iter()),
                    // Deleted since it was listed: nothing below it to report.
                    Err(e) if e.errno == libc::ENOENT => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let count = entries.len();
        Ok(Listing {
            path: path.to_owned(),
            entries,
            count,
        })
    }

    /// Removes a file, symlink (not its target) or empty directory; any directory with
    /// `recursive`. `/` is refused with `EINVAL`.
    pub fn delete(&self, path: &str, recursive: bool) -> Result<Deleted, FsError> {
        if path == "/" {
            return Err(FsError::with_detail(
                libc::EINVAL,
                path,
                "refusing to delete /",
            ));
        }
        let meta = fs::symlink_metadata(path).map_err(|e| FsError::from_io(&e, path))?;
        let removed = if !meta.is_dir() {
            fs::remove_file(path)
        } else if recursive {
            remove_dir_all_racing_writers(std::path::Path::new(path))
        } else {
            fs::remove_dir(path)
        };
        removed.map_err(|e| FsError::from_io(&e, path))?;
        Ok(Deleted {
            deleted: vec![path.to_owned()],
            count: 1,
        })
    }

    /// `rename(2)`: replaces `dest` if it is a file or an empty directory. Across
    /// filesystems (`EXDEV`) it copies, then deletes the source, as `mv` does.
    pub fn rename(&self, source: &str, dest: &str) -> Result<Renamed, FsError> {
        match fs::rename(source, dest) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                self.copy(source, dest, true, true)?;
                self.delete(source, true)?;
            }
            Err(e) => {
                // The OS does not say which path was wrong; pick the one the errno is about.
                let about_dest = match e.raw_os_error() {
                    Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST) => true,
                    Some(libc::ENOENT) => fs::symlink_metadata(source).is_ok(),
                    _ => false,
                };
                let path = if about_dest { dest } else { source };
                return Err(FsError::from_io(&e, path));
            }
        }
        Ok(Renamed {
            source: source.to_owned(),
            dest: dest.to_owned(),
        })
    }

    /// Copies a file, or a tree with `recursive` (see [`FsOp::Copy`]).
    pub fn copy(
        &self,
        source: &str,
        dest: &str,
        recursive: bool,
        preserve_attrs: bool,
    ) -> Result<super::Copied, FsError> {
        super::copy::copy(source, dest, recursive, preserve_attrs)
    }

    /// Sets permission bits on `path` (following a symlink there), and with `recursive` on
    /// every file and directory below it (symlinks below are skipped: Linux cannot chmod a
    /// link, and following it would leave the tree).
    pub fn chmod(&self, path: &str, mode: u32, recursive: bool) -> Result<Chmodded, FsError> {
        let mode = mode & 0o7777;
        let meta = fs::metadata(path).map_err(|e| FsError::from_io(&e, path))?;
        let mut report = Report::new(mode);
        if !recursive || !meta.is_dir() {
            report.set(path)?;
            return Ok(report.finish(path));
        }
        // A directory is changed before its children when the new mode lets us (the owner)
        // read and search it, and after them otherwise: either way a mode such as 0644 does
        // not lock the walk out of the directory it is walking.
        let dir_first = mode & 0o500 == 0o500;
        let mut stack = vec![(path.to_owned(), false)];
        while let Some((dir, expanded)) = stack.pop() {
            if expanded {
                report.set(&dir)?;
                continue;
            }
            if dir_first {
                report.set(&dir)?;
            } else {
                stack.push((dir.clone(), true));
            }
            for child in children(&dir)? {
                if child.is_dir() {
                    stack.push((child.path, false));
                } else if !child.is_symlink() {
                    report.set(&child.path)?;
                }
            }
        }
        Ok(report.finish(path))
    }
}

/// Applies one mode to paths and records them for the chmod result.
struct Report {
    mode: u32,
    count: usize,
    affected: Vec<ModeChange>,
}

impl Report {
    fn new(mode: u32) -> Report {
        Report {
            mode,
            count: 0,
            affected: Vec::new(),
        }
    }

    fn set(&mut self, path: &str) -> Result<(), FsError> {
        fs::set_permissions(path, Permissions::from_mode(self.mode))
            .map_err(|e| FsError::from_io(&e, path))?;
        self.count += 1;
        if self.affected.len() < MAX_REPORTED {
            self.affected.push(ModeChange {
                path: path.to_owned(),
                mode: format_mode(self.mode),
            });
        }
        Ok(())
    }

    fn finish(self, path: &str) -> Chmodded {
        Chmodded {
            path: path.to_owned(),
            mode: format_mode(self.mode),
            count: self.count,
            affected: self.affected,
        }
    }
}

/// Follows `path` while it is a symlink, so a write replaces the link's target and keeps
/// the link (as writing through it would). A dangling link gives the path it points to;
/// more than [`MAX_LINK_HOPS`] links is `ELOOP`.
fn follow_links(path: &str) -> Result<String, FsError> {
    let mut cur = path.to_owned();
    for _ in 0..MAX_LINK_HOPS {
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&cur).map_err(|e| FsError::from_io(&e, &cur))?;
                let target = target.to_str().ok_or_else(|| {
                    FsError::with_detail(libc::EINVAL, &cur, "symlink target is not UTF-8")
                })?;
                cur = resolve(Some(parent_of(&cur)), target)?;
            }
            _ => return Ok(cur),
        }
    }
    Err(FsError::new(libc::ELOOP, path))
}

/// Creates `<dir>/.<name>.sprites-tmp-<random>` exclusively (mode 0600 until commit sets the
/// real one). Returns the open file and its path.
pub(super) fn create_temp(dir: &str, name: &str) -> io::Result<(File, String)> {
    // Keep the temp name within NAME_MAX (255) however long the target's name is.
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let suffix = crate::random::hex(8)?;
    let temp = super::join(dir, &format!(".{}.sprites-tmp-{suffix}", &name[..cut]));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOCTTY)
        .open(&temp)?;
    Ok((file, temp))
}

/// `rm -rf` that tolerates a writer racing it: std's `remove_dir_all` (openat/unlinkat, never
/// following a symlink swapped in during the walk) fails with `ENOTEMPTY` when an entry appears
/// after its listing, as an upload's temporary file does when the upload began a moment before
/// the delete. A few more walks remove the newcomers; the bound keeps a writer that never stops
/// from holding the request forever, and it then gets the `ENOTEMPTY` it caused.
fn remove_dir_all_racing_writers(path: &std::path::Path) -> io::Result<()> {
    retry_while_not_empty(|| fs::remove_dir_all(path))
}

/// The walks of [`remove_dir_all_racing_writers`]: at most four.
fn retry_while_not_empty(mut walk: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    const WALKS: usize = 4;
    for _ in 1..WALKS {
        match walk() {
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
            done => return done,
        }
    }
    walk()
}

#[cfg(test)]
mod tests;
