//! Files: `sendfile`, and the ownership and timestamps a copy preserves.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;

/// One sendfile(2): up to `count` bytes of `input` from `*offset` to `out`, advancing
/// `*offset` (the file's own position does not move). Returns how many bytes went out (0
/// at the end of the file).
pub fn sendfile(
    out: BorrowedFd<'_>,
    input: BorrowedFd<'_>,
    offset: &mut libc::off_t,
    count: usize,
) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call and `offset` is a
    // valid, exclusively borrowed off_t.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), input.as_raw_fd(), offset, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// fchown(2): gives the open file to `uid`:`gid`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a descriptor we borrow; no memory is involved.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// futimens(2): sets the open file's access and modification times (`times[0]`,
/// `times[1]`).
pub fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` is a valid two-element array for the duration of the call.
    if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ioctl(FICLONE)`: makes `dst` share every extent of `src` (a reflink copy: instant, no
/// space used until either changes). `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the filesystem
/// cannot (ext4, or two filesystems).
pub fn reflink(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor by value.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE as _, src.as_raw_fd()) }).map(drop)
}

/// mkfifo(3), for tests that need a FIFO.
#[cfg(test)]
pub fn mkfifo(path: &std::path::Path, mode: libc::mode_t) -> io::Result<()> {
    let p = super::cstr(path)?;
    // SAFETY: a valid C string for the duration of the call.
    check(unsafe { libc::mkfifo(p.as_ptr(), mode) }).map(drop)
}
