//! Every raw system call of the crate, behind safe functions: the only module where
//! `unsafe` is allowed (the crate root denies it everywhere else).
//!
//! Each function here is safe to call: the `unsafe` block inside it carries its `SAFETY:`
//! justification, and what the function needs from its caller beyond the types (which
//! process it may run in, whose descriptor it may touch) is written in its documentation.
//! Calls that only make sense in a freshly forked child take an [`process::InChild`]
//! proof, which only [`process::fork`] hands out, and `fork` itself works only in the
//! single-threaded sandbox helper.
//!
//! - [`fd`]: pipes, eventfd, `poll`, `read`/`write`, pipe sizes, and the descriptor
//!   shuffling of a forked child;
//! - [`file`](mod@file): `sendfile`, `fchown`, `futimens`;
//! - [`inotify`]: filesystem change notifications, for the filesystem watch;
//! - [`socket`]: socket pairs, fd passing (`SCM_RIGHTS`), socket options;
//! - [`tcp`]: TCP sockets created in one network namespace and connected from another;
//! - [`process`]: `fork`, waiting, signals, pidfds, sessions, credentials and
//!   capabilities, `chdir`, `execve`;
//! - [`pty`]: pseudo-terminals (master, peer, window size, controlling terminal);
//! - [`mount`]: namespaces (`unshare`, `setns`), mounts (including detached, id-mapped
//!   ones), `pivot_root`, hostname, xattrs, `lchown`;
//! - [`dirfd`]: directory-relative calls that never follow a symlink, for trees a sprite
//!   controls;
//! - [`netlink`]: the rtnetlink socket a sprite's network is configured through;
//! - [`loopdev`]: loop devices for a sprite's disk image;
//! - [`btrfs`]: subvolumes and snapshots (sprites' checkpoints);
//! - [`signal_handler`]: the SIGINT/SIGTERM self-pipe;
//! - [`epoll`]: the reactor's readiness set;
//! - [`nonblocking`]: socket reads and writes that never block;
//! - [`limits`]: the open-file limit;
//! - [`entry`]: the ELF constructor that enters the sandbox helper before any `main`.

pub mod btrfs;
pub mod dirfd;
pub mod entry;
pub mod epoll;
pub mod fd;
pub mod file;
pub mod inotify;
pub mod limits;
pub mod loopdev;
pub mod mount;
pub mod netlink;
pub mod nonblocking;
pub mod process;
pub mod pty;
pub mod signal_handler;
pub mod socket;
pub mod tcp;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

/// A path or string as a C string; interior NULs are an `InvalidInput` error.
pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path or argument"))
}

/// `-1` (any negative result) → the current `errno` as an `io::Error`.
fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
