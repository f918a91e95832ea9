//! Copying files and trees. Each file lands atomically (temp file + rename), so a reader of
//! the destination never sees half a copy.

use std::fs::{self, File, Metadata, Permissions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::host::{create_temp, MAX_REPORTED};
use super::tree::children;
use super::{base_name, join, parent_of, Copied, CopyPair, FsError};
use crate::sys;

/// Copies `source` (a symlink there is followed) to `dest`. A directory needs `recursive`
/// (else `EISDIR`); inside it, symlinks are copied as symlinks and FIFOs, sockets and
/// devices are skipped. Permission bits are always copied (as `std::fs::copy` does);
/// `preserve` also keeps timestamps, and ownership where the OS allows it.
pub(super) fn copy(
    source: &str,
    dest: &str,
    recursive: bool,
    preserve: bool,
) -> Result<Copied, FsError> {
    let meta = fs::metadata(source).map_err(|e| FsError::from_io(&e, source))?;
    let mut run = Run {
        preserve,
        count: 0,
        pairs: Vec::new(),
        bytes: 0,
    };
    if meta.is_dir() {
        if !recursive {
            return Err(FsError::new(libc::EISDIR, source));
        }
        if is_inside(source, dest) {
            return Err(FsError::with_detail(
                libc::EINVAL,
                dest,
                "cannot copy a directory into itself",
            ));
        }
        run.tree(source, dest, meta)?;
    } else {
        run.file(source, dest, &meta)?;
    }
    Ok(Copied {
        source: source.to_owned(),
        dest: dest.to_owned(),
        count: run.count,
        copied: run.pairs,
        total_bytes: run.bytes,
    })
}

/// Whether `dest` is `source` or below it, comparing real paths (symlinks resolved) where
/// they exist. Copying a tree into itself would never end.
fn is_inside(source: &str, dest: &str) -> bool {
    let Ok(src) = fs::canonicalize(source) else {
        return false;
    };
    let dst = fs::canonicalize(dest).unwrap_or_else(|_| {
        fs::canonicalize(parent_of(dest))
            .map(|p| p.join(base_name(dest)))
            .unwrap_or_else(|_| PathBuf::from(dest))
    });
    dst.starts_with(&src) || Path::new(dest).starts_with(source)
}

/// One copy in progress: what it has done so far.
struct Run {
    preserve: bool,
    count: usize,
    pairs: Vec<CopyPair>,
    bytes: u64,
}

impl Run {
    fn record(&mut self, source: &str, dest: &str) {
        self.count += 1;
        if self.pairs.len() < MAX_REPORTED {
            self.pairs.push(CopyPair {
                source: source.to_owned(),
                dest: dest.to_owned(),
            });
        }
    }

    /// Copies one regular file through a temp file next to `dest`.
    fn file(&mut self, source: &str, dest: &str, meta: &Metadata) -> Result<(), FsError> {
        if !meta.is_file() {
            return Err(FsError::with_detail(
                libc::EINVAL,
                source,
                "not a regular file",
            ));
        }
        if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(FsError::new(libc::EISDIR, dest));
        }
        let mut input = File::open(source).map_err(|e| FsError::from_io(&e, source))?;
        let (mut out, temp) = create_temp(parent_of(dest), base_name(dest))
            .map_err(|e| FsError::from_io(&e, dest))?;
        // io::copy between two files is copy_file_range: in-kernel, reflinks where possible.
        let done = io::copy(&mut input, &mut out)
            .and_then(|n| {
                out.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
                if self.preserve {
                    set_times(&out, meta)?;
                    // Only root may give a file away; for anyone else keeping their own
                    // ownership is the right result, so the error is ignored.
                    let _ = sys::file::fchown(out.as_fd(), meta.uid(), meta.gid());
                }
                fs::rename(&temp, dest)?;
                Ok(n)
            })
            .map_err(|e| FsError::from_io(&e, dest));
        match done {
            Ok(n) => {
                self.bytes += n;
                self.record(source, dest);
                Ok(())
            }
            Err(e) => {
                drop(out);
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Recreates a symlink (its target text, not what it points to).
    fn link(&mut self, source: &str, dest: &str) -> Result<(), FsError> {
        let target = fs::read_link(source).map_err(|e| FsError::from_io(&e, source))?;
        if let Ok(m) = fs::symlink_metadata(dest) {
            if m.is_dir() {
                return Err(FsError::new(libc::EEXIST, dest));
            }
            fs::remove_file(dest).map_err(|e| FsError::from_io(&e, dest))?;
        }
        std::os::unix::fs::symlink(&target, dest).map_err(|e| FsError::from_io(&e, dest))?;
        self.record(source, dest);
        Ok(())
    }

    /// Copies a tree without recursion (explicit stack). Directories are created owner-
    /// writable and get their real mode (and times) only after everything below them is
    /// copied, so a read-only source directory can still be filled.
    fn tree(&mut self, source: &str, dest: &str, meta: Metadata) -> Result<(), FsError> {
        let mut fixups: Vec<(String, Metadata)> = Vec::new();
        let mut work = vec![(source.to_owned(), dest.to_owned(), meta)];
        while let Some((src, dst, meta)) = work.pop() {
            make_dir(&dst)?;
            self.record(&src, &dst);
            for child in children(&src)? {
                let to = join(&dst, &child.name);
                if child.is_dir() {
                    work.push((child.path, to, child.meta));
                } else if child.is_symlink() {
                    self.link(&child.path, &to)?;
                } else if child.meta.is_file() {
                    self.file(&child.path, &to, &child.meta)?;
                }
            }
            fixups.push((dst, meta));
        }
        for (dir, meta) in fixups.iter().rev() {
            let fixed = fs::set_permissions(dir, Permissions::from_mode(meta.mode() & 0o7777))
                .and_then(|()| {
                    if self.preserve {
                        set_times(&File::open(dir)?, meta)?;
                    }
                    Ok(())
                });
            fixed.map_err(|e| FsError::from_io(&e, dir))?;
        }
        Ok(())
    }
}

/// Creates a directory (0700 for now), or accepts an existing one (the copy merges into it).
fn make_dir(dir: &str) -> Result<(), FsError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(FsError::new(libc::ENOTDIR, dir)),
        },
        Err(e) => Err(FsError::from_io(&e, dir)),
    }
}

/// Gives `file` the access and modification times in `meta`.
fn set_times(file: &File, meta: &Metadata) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    sys::file::futimens(file.as_fd(), &times)
}
