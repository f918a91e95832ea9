//! Directory-relative file operations for trees a sprite controls.
//!
//! The host-side preparation of a sprite's upper layer (its `/etc/passwd`, masks, whiteouts)
//! runs with privileges the sprite does not have, on a tree the sprite can fill with
//! symlinks. A plain path join would follow them (`/etc` → a host directory) and write on
//! the host. Everything here works relative to an open directory and refuses to follow any
//! symlink: [`open_beneath`] resolves with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, and the `*at` calls take one path
//! component, never a path, so the only lookup they do is in a directory already opened
//! that way.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;

/// `name` as a C string, if it is exactly one path component (not empty, `.`, `..`, and
/// without `/` or NUL): the `*at` calls below must never walk a path.
pub fn component(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    super::cstr(name)
}

/// Opens `rel` (a relative path; `""` or `"."` is `dir` itself) below `dir` without
/// following any symlink or crossing a mount: a symlink anywhere on the way is `ELOOP`, a
/// `..` that would leave `dir` is `EXDEV`. `flags` are `open(2)` flags (`O_CLOEXEC` is
/// added); `mode` applies with `O_CREAT`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let path = super::cstr(rel)?;
    // SAFETY: open_how is plain data; all-zero is valid, and we set every field we use.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    if flags & libc::O_CREAT != 0 {
        how.mode = u64::from(mode);
    }
    how.resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    loop {
        // SAFETY: a valid C string and a valid `open_how` of the size we pass; a
        // non-negative result is a new fd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        // openat2 may ask for a retry (EAGAIN) when a rename raced the lookup.
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Err(e);
        }
    }
}

/// What a directory entry is, without following it (`fstatat(AT_SYMLINK_NOFOLLOW)`).
pub fn stat_entry(dir: BorrowedFd<'_>, name: &str) -> io::Result<libc::stat> {
    let name = component(name)?;
    // SAFETY: stat is plain data; zero is a valid bit pattern that fstatat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid dirfd, C string and stat buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// fstat(2) of an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: as in `stat_entry`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and stat buffer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// mkdirat(2): directory `name` in `dir` with `mode` (less the umask; callers chmod).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: libc::mode_t) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: a valid dirfd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// An overlayfs whiteout (a 0:0 character device) named `name` in `dir`: in an upper
/// layer it hides the lower layer's entry of that name. Needs `CAP_MKNOD`.
pub fn whiteout_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: a valid dirfd and C string; device 0:0.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR, 0) }).map(drop)
}

/// Changes the owner of entry `name` in `dir` without following it if it is a symlink.
pub fn chown_at(dir: BorrowedFd<'_>, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: a valid dirfd and C string.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// fchmod(2).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Renames entry `from` of `dir` to `to` (same directory), replacing `to`; a symlink named
/// `to` is replaced, never followed.
pub fn rename_at(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (component(from)?, component(to)?);
    // SAFETY: a valid dirfd and C strings.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(drop)
}

/// Creates symlink `name` in `dir` pointing at `target` (which is not looked at).
pub fn symlink_at(target: &str, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let (target, name) = (super::cstr(target)?, component(name)?);
    // SAFETY: valid C strings and dirfd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Removes entry `name` of `dir` (`AT_REMOVEDIR` in `flags` for a directory).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str, flags: libc::c_int) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: a valid dirfd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Sets an extended attribute on an open file or directory.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let name = super::cstr(name)?;
    // SAFETY: a valid fd, C string and value slice.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// syncfs(2): flushes the whole filesystem `fd` is on.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// The names in an open directory (not `.` and `..`), read through a duplicate of `dir`
/// so `dir` itself stays usable.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let dup = dir.try_clone_to_owned()?;
    // SAFETY: fdopendir takes ownership of the duplicate (closed by closedir below).
    let d = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup); // now owned by the DIR stream
                           // SAFETY: rewinding a valid DIR stream (the duplicate shares the offset with `dir`).
    unsafe { libc::rewinddir(d) };
    let mut names = Vec::new();
    loop {
        // SAFETY: a valid DIR stream; the entry stays valid until the next readdir.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(std::ffi::OsStr::from_bytes(bytes).to_owned());
        }
    }
    // SAFETY: closes the stream (and the duplicate fd it owns) exactly once.
    unsafe { libc::closedir(d) };
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn components_only() {
        assert!(component("passwd").is_ok());
        for bad in ["", ".", "..", "a/b", "/etc", "a\0b"] {
            assert!(component(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_are_never_followed() {
        let dir = std::env::temp_dir().join(format!(
            "sprites-dirfd-{}-{}",
            std::process::id(),
            crate::random::hex(4).unwrap()
        ));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("escape")).unwrap();
        std::os::unix::fs::symlink("real", dir.join("inside")).unwrap();
        let root = std::fs::File::open(&dir).unwrap();
        let open = |p: &str| open_beneath(root.as_fd(), p, libc::O_RDONLY | libc::O_DIRECTORY, 0);
        assert!(open("real").is_ok());
        assert!(open("").is_ok());
        let loop_err = |p: &str| open(p).unwrap_err().raw_os_error();
        assert_eq!(loop_err("escape"), Some(libc::ELOOP));
        assert_eq!(loop_err("escape/etc"), Some(libc::ELOOP));
        assert_eq!(
            loop_err("inside"),
            Some(libc::ELOOP),
            "even links that stay inside"
        );
        assert_eq!(loop_err("../"), Some(libc::EXDEV));
        let st = stat_entry(root.as_fd(), "escape").unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let mut names = list_dir(root.as_fd()).unwrap();
        names.sort();
        assert_eq!(names, ["escape", "inside", "real"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
