//! Namespaces and the sprite's root filesystem: `unshare`, `mount`, `umount2`,
//! `pivot_root`, `sethostname`, `setns`, and detached (id-mapped) mounts.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// sethostname(2): the UTS namespace's hostname (the caller is in its own one).
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: a valid buffer and its length.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`, without its
/// submounts): a mount that can be changed (id-mapped) and attached elsewhere with
/// [`move_mount`] without touching the original.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: a valid C string; a non-negative result is a new fd we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    let fd = check(r as libc::c_int)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the detached mount `mount` id-mapped through user namespace `userns`: a file
/// owned by uid N on disk is seen as owned by whatever N maps to in `userns`
/// (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux ≥ 5.12, on filesystems that support it).
pub fn set_idmap(mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a valid fd, an empty C string with AT_EMPTY_PATH, and a mount_attr of the
    // size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(r as libc::c_int).map(drop)
}

/// A detached copy of the mount tree at `rel` below directory `dir` (`open_tree` with
/// `OPEN_TREE_CLONE`, without submounts). `dir` may itself be a detached mount (Linux ≥ 6.15
/// allows cloning from one): this is how a subtree of a mount that is no longer reachable
/// by any path is attached somewhere.
pub fn open_tree_clone_at(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let p = cstr(rel)?;
    // `""`: `dir` itself.
    let empty = if rel.is_empty() {
        libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        0
    };
    // SAFETY: a valid fd and C string; a non-negative result is a new fd we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            p.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint | empty,
        )
    };
    let fd = check(r as libc::c_int)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches the detached mount `mount` at entry `name` of directory `dir` (`move_mount`).
pub fn move_mount_at(mount: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let t = super::dirfd::component(name)?;
    // SAFETY: valid fds, an empty C string with MOVE_MOUNT_F_EMPTY_PATH, a valid name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            t.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Makes the detached mount `mount` read-only, `nosuid` and `nodev` (`mount_setattr`).
pub fn set_readonly(mount: BorrowedFd<'_>) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, an empty C string with AT_EMPTY_PATH, and a mount_attr of the
    // size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Attaches the detached mount `mount` at `target` (`move_mount`).
pub fn move_mount(mount: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: a valid fd, an empty C string with MOVE_MOUNT_F_EMPTY_PATH, a valid target.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// setns(2): moves the calling process into the namespace descriptor `ns` refers to
/// (`nstype` one `CLONE_NEW*` flag). Like [`unshare`], only for the single-threaded
/// sandbox helper; `ns` is a number because the forked children that call it have
/// renumbered their descriptors.
pub fn setns(ns: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes integers; a bad number is EBADF, not undefined behaviour.
    check(unsafe { libc::setns(ns, nstype) }).map(drop)
}
