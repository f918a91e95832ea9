//! Namespaces and the sprite's root filesystem: `unshare`, `mount`, `umount2`,
//! `pivot_root`, `sethostname`, and the two path calls the upper layer needs
//! (`lsetxattr`, `lchown`).

use std::ffi::CString;
use std::io;
use std::path::Path;

use super::{check, cstr};

/// mount(2). `source`/`fstype`/`data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            p(&source),
            target.as_ptr(),
            p(&fstype),
            flags,
            p(&data).cast(),
        )
    })
    .map(drop)
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid C string for the duration of the call.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// pivot_root(2) (glibc has no wrapper).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let (n, o) = (cstr(new_root)?, cstr(put_old)?);
    // SAFETY: both are valid C strings for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
    check(r as libc::c_int).map(drop)
}

/// unshare(2). Meant for the single-threaded sandbox helper (see [`super::entry`]), where
/// changing namespaces cannot surprise other threads.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Sets an extended attribute on a path (not following a final symlink).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (cstr(path)?, cstr(name)?);
    // SAFETY: valid C strings and a value slice that outlives the call.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// chown(2) without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid C string for the duration of the call.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) }).map(drop)
}

/// sethostname(2): the UTS namespace's hostname (the caller is in its own one).
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: a valid buffer and its length.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}
