//! Resource limits: the open-file limit the server raises at start.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::check;

/// The soft open-file limit before [`raise_nofile`] raised it (0: never raised).
static BEFORE_RAISE: AtomicU64 = AtomicU64::new(0);

/// The soft open-file limit processes started by the server should get: the one the
/// server itself started with. Programs expect the usual soft limit (some walk every
/// possible descriptor at start); only the server needs the raised one.
pub fn soft_nofile_for_children() -> Option<u64> {
    match BEFORE_RAISE.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Where the kernel's own ceiling for the open-file limit is published.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// The open-file limit (`RLIMIT_NOFILE`): `(soft, hard)`.
// `rlim_t` is not `u64` on every target.
#[allow(clippy::unnecessary_cast)]
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid, exclusively borrowed rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    Ok((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raises the soft open-file limit to the hard limit (an unprivileged process may) and
/// returns the new soft limit. A hard limit of "unlimited" is taken as the kernel's
/// `nr_open`, the most a process can have. Process-wide: every thread (and every process
/// started afterwards) sees it.
// `rlim_t` is not `u64` on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = nofile()?;
    let target = if hard == libc::RLIM_INFINITY as u64 {
        std::fs::read_to_string(NR_OPEN)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft >= target {
        return Ok(soft);
    }
    let _ = BEFORE_RAISE.compare_exchange(0, soft.max(1), Ordering::Relaxed, Ordering::Relaxed);
    let r = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn raising_reaches_the_hard_limit() {
        let raised = raise_nofile().unwrap();
        let (soft, hard) = nofile().unwrap();
        assert_eq!(soft, raised);
        assert!(soft == hard || hard == libc::RLIM_INFINITY as u64);
    }
}
