//! inotify(7): the kernel's filesystem change notifications, for the filesystem watch
//! (`crate::fswatch`). Reading the events is a plain `read` of the descriptor
//! ([`super::fd::read`]); decoding them needs no `unsafe` and lives with the watch.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;

/// A new inotify instance, close-on-exec and non-blocking (the watch polls it).
pub fn init() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a non-negative result is a new descriptor we own.
    let fd = check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
    // SAFETY: inotify_init1 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `inotify_add_watch(2)`: watches `path` (resolved by the kernel in this process's mount
/// namespace and root, with its credentials) for the events in `mask`. Returns the watch
/// descriptor; a path already watched gets its old one back (with `mask` replacing the old
/// mask unless `IN_MASK_ADD`).
pub fn add_watch(fd: BorrowedFd<'_>, path: &str, mask: u32) -> io::Result<i32> {
    let path = super::cstr(path)?;
    // SAFETY: a valid inotify fd and C string.
    check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// `inotify_rm_watch(2)`. The kernel queues `IN_IGNORED` for `wd` afterwards.
pub fn rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: a valid inotify fd; an unknown wd is EINVAL, nothing worse.
    check(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn watches_a_directory() {
        let dir = std::env::temp_dir().join(format!("sprites-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fd = init().unwrap();
        let wd = add_watch(fd.as_fd(), dir.to_str().unwrap(), libc::IN_CREATE).unwrap();
        assert!(wd > 0);
        std::fs::write(dir.join("f"), b"").unwrap();
        let mut buf = [0u8; 4096];
        let n = super::super::fd::read(fd.as_fd(), &mut buf).unwrap();
        assert!(n >= 16, "one event at least");
        assert_eq!(i32::from_ne_bytes(buf[..4].try_into().unwrap()), wd);
        rm_watch(fd.as_fd(), wd).unwrap();
        assert!(rm_watch(fd.as_fd(), wd).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
