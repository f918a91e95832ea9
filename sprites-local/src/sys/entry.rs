//! The sandbox helper's entry: an ELF constructor that runs before any `main`.
//!
//! Why a constructor, and why the helper must never run in the server's threads, is told
//! in the sandbox's `entry` module, which owns the marker, argv and what the helper does.
//! This part is here because placing a function in `.init_array` (`#[link_section]`)
//! counts as unsafe code. It is also the one place in `sys` that calls upward: into the
//! sandbox, through a plain function, once it knows the process is the helper.

use std::ffi::CStr;

use super::process;

/// The environment marker of a helper process, as a C string (the sandbox's `MARKER_ENV`
/// must name the same variable; a test checks it).
pub const MARKER: &CStr = c"SPRITES_LOCAL_SANDBOX_HELPER";

/// Placed in `.init_array`, so the C runtime calls it before `main` in every binary that
/// links this crate. Code that starts helpers calls [`keep`] so the linker keeps it.
#[used]
#[link_section = ".init_array"]
static HELPER_ENTRY: extern "C" fn() = helper_entry;

/// Makes the caller reference [`HELPER_ENTRY`], so the object holding it is linked into
/// any binary that can start a helper.
pub fn keep() {
    std::hint::black_box(&HELPER_ENTRY);
}

extern "C" fn helper_entry() {
    // SAFETY: getenv with a NUL-terminated name; only the pointer's nullness is used.
    let marked = unsafe { !libc::getenv(MARKER.as_ptr()).is_null() };
    if !marked {
        // A sprite's own `sudo` is this binary too (see the sandbox's `sudo` module).
        // SAFETY: getauxval takes an integer; AT_EXECFN's value is 0 or a pointer to the
        // NUL-terminated path the kernel put on this process's stack, valid for its life.
        let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
        if !execfn.is_null() {
            // SAFETY: see above: a valid C string.
            let path = unsafe { CStr::from_ptr(execfn) };
            if crate::runtime::is_sudo(path.to_bytes()) {
                process::exit_now(crate::runtime::sudo_main());
            }
        }
        return;
    }
    // Not started as a helper after all (argv says otherwise): carry on into `main`.
    let Some(helper) = crate::runtime::helper_request() else {
        return;
    };
    // Single-threaded from here to the exit: nothing has started a thread before `main`,
    // and the helper never does.
    process::enter_helper();
    // Ends the helper without returning into the host program's `main`.
    process::exit_now(helper.run())
}
