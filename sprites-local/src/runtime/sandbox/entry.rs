//! How the sandbox helper process is entered.
//!
//! Namespaces and mounts must be set up in a fresh, single-threaded process, never in the
//! server's threads. The server re-executes its own binary (`/proc/self/exe`) with a marker
//! in the environment and argv. Because the server is a library, that binary may be the
//! `sprites-local` CLI, a test harness or a user's program, none of which we control the
//! `main` of; so the entry is an ELF constructor (`.init_array`, in
//! [`crate::sys::entry`]) that runs before any `main`, notices the marker, asks
//! [`helper_request`] what to run, runs the helper and exits. Without the marker it returns
//! at once (one `getenv`). The helper's configuration comes as the first message on its
//! control socket (fd [`CTL_FD`]): it can be larger than one argv string may be.

use std::os::fd::RawFd;

use super::stub;
use crate::sys;

/// Environment marker (its value is irrelevant; argv carries the configuration).
pub const MARKER_ENV: &str = "SPRITES_LOCAL_SANDBOX_HELPER";
/// `argv[0]` of the helper.
pub const ARGV0: &str = "sprites-local-sandbox";
/// The fd number the control socket has in the helper.
pub const CTL_FD: RawFd = 3;

/// Makes the code that starts helpers reference the ELF constructor, so the object holding
/// it is linked into any binary that can start one.
pub fn keep() {
    sys::entry::keep();
}

/// A process started as the sandbox helper (the stub).
pub(crate) struct HelperRequest(());

/// Called by the ELF constructor in a process that carries the marker: the helper's job,
/// from argv, or `None` if argv does not ask for one (the process then carries on into its
/// own `main`).
pub(crate) fn helper_request() -> Option<HelperRequest> {
    // argv from /proc (glibc passes argv to constructors, musl does not).
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.len() < 2 || args[0] != ARGV0.as_bytes() || args[1] != b"stub" {
        return None;
    }
    Some(HelperRequest(()))
}

impl HelperRequest {
    /// Runs the helper; returns its exit code.
    pub(crate) fn run(self) -> i32 {
        stub::main(CTL_FD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_agree() {
        assert_eq!(sys::entry::MARKER.to_str().unwrap(), MARKER_ENV);
    }
}
