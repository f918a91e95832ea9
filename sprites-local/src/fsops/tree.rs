//! Reading directories: sorted children with their `lstat`, and FsEntry construction.
//! Walks elsewhere use explicit stacks over these, so a deep tree cannot overflow the stack
//! and symlinks are never followed into (no loops).

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, UNIX_EPOCH};

use super::{format_mode, join, Entry, EntryKind, FsError};
use crate::time::format_rfc3339;

/// A directory child: name, absolute path and `lstat` metadata.
pub(super) struct Child {
    pub name: String,
    pub path: String,
    pub meta: Metadata,
}

impl Child {
    /// A real directory (not a symlink to one).
    pub fn is_dir(&self) -> bool {
        self.meta.file_type().is_dir()
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.meta.file_type().is_symlink()
    }
}

/// The children of `dir`, sorted by name. Children that vanish while being read are left
/// out (another process may be deleting them; that is not an error of the listing).
/// Non-UTF-8 names are converted lossily: JSON strings cannot carry them.
pub(super) fn children(dir: &str) -> Result<Vec<Child>, FsError> {
    let rd = fs::read_dir(dir).map_err(|e| FsError::from_io(&e, dir))?;
    let mut out = Vec::new();
    for item in rd {
        let item = item.map_err(|e| FsError::from_io(&e, dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = join(dir, &name);
        // DirEntry::metadata is an fstatat(AT_SYMLINK_NOFOLLOW) relative to the open dir.
        match item.metadata() {
            Ok(meta) => out.push(Child { name, path, meta }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::from_io(&e, path)),
        }
    }
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An FsEntry. `meta` decides type, size, mode and time: pass `lstat` for directory
/// children, `stat` for a listed non-directory (which then reports its target).
pub(super) fn entry(name: &str, path: &str, meta: &Metadata) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else {
        EntryKind::File
    };
    // mtime from the raw fields: `modified()` cannot fail on Linux, but this cannot at all.
    let secs = u64::try_from(meta.mtime()).unwrap_or(0);
    let nanos = u32::try_from(meta.mtime_nsec())
        .unwrap_or(0)
        .min(999_999_999);
    Entry {
        name: name.to_owned(),
        path: path.to_owned(),
        kind,
        size: meta.len(),
        mode: format_mode(meta.mode()),
        mod_time: format_rfc3339(UNIX_EPOCH + Duration::new(secs, nanos)),
        is_dir: kind == EntryKind::Directory,
    }
}
