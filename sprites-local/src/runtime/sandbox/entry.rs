//! How the sandbox helper process is entered.
//!
//! Namespaces and mounts must be set up in a fresh, single-threaded process, never in the
//! server's threads. The server re-executes its own binary (`/proc/self/exe`) with a marker
//! in the environment and argv. Because the server is a library, that binary may be the
//! `sprites-local` CLI, a test harness or a user's program, none of which we control the
//! `main` of; so the entry is an ELF constructor (`.init_array`) that runs before any
//! `main`, notices the marker, runs the helper and exits. Without the marker it returns at
//! once (one `getenv`).

use super::agent::{self, AgentConfig};

/// Environment marker (its value is irrelevant; argv carries the configuration).
pub const MARKER_ENV: &str = "SPRITES_LOCAL_SANDBOX_HELPER";
/// `argv[0]` of the helper.
pub const ARGV0: &str = "sprites-local-sandbox";

/// Placed in `.init_array`, so the C runtime calls it before `main` in every binary that
/// links this crate. The server references it (see [`keep`]) so the linker keeps it.
#[used]
#[link_section = ".init_array"]
static HELPER_ENTRY: extern "C" fn() = helper_entry;

/// Makes the code that starts helpers reference [`HELPER_ENTRY`], so the object holding it
/// is linked into any binary that can start one.
pub fn keep() {
    std::hint::black_box(&HELPER_ENTRY);
}

extern "C" fn helper_entry() {
    // SAFETY: getenv with a NUL-terminated name; only the pointer's nullness is used.
    let marked = unsafe { !libc::getenv(c"SPRITES_LOCAL_SANDBOX_HELPER".as_ptr()).is_null() };
    if !marked {
        return;
    }
    // argv from /proc (glibc passes argv to constructors, musl does not).
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.len() < 3 || args[0] != ARGV0.as_bytes() || args[1] != b"agent" {
        return;
    }
    let code = match serde_json::from_slice::<AgentConfig>(args[2]) {
        Ok(cfg) => agent::stub_main(&cfg),
        Err(e) => {
            eprintln!("sprites-local sandbox: bad helper configuration: {e}");
            2
        }
    };
    // SAFETY: ends the helper without returning into the host program's `main`.
    unsafe { libc::_exit(code) }
}

/// The marker name as a C string (kept in sync with [`MARKER_ENV`] by a test).
#[cfg(test)]
fn marker_c() -> &'static std::ffi::CStr {
    c"SPRITES_LOCAL_SANDBOX_HELPER"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_agree() {
        assert_eq!(marker_c().to_str().unwrap(), MARKER_ENV);
    }
}
