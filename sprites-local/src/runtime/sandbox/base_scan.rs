//! What of the base a sprite must not see: every entry that an unprivileged host user cannot
//! read.
//!
//! A sprite's root user owns the base's root-owned files (the lower layer is id-mapped so that
//! `apt-get install` works), so ordinary permissions no longer keep it out of the host's
//! private files (`/etc/shadow`, TLS keys, `/var/log/*`, a service's 0700 state directory).
//! The rule is simple and needs no list of secrets: **a sprite sees of the base exactly what
//! any host user may see.** Every directory that others cannot read and search, and every
//! other entry that others cannot read, is hidden in each sprite: an empty opaque directory
//! or a whiteout in a layer of its own between the base and the sprite's upper layer (see
//! [`super::stub`]), wherever it is.
//!
//! The walk stays on the base's own filesystem (the overlay's lower layer does not cross
//! mount points either) and skips the directories every sprite masks anyway. It reads every
//! entry's mode (about a second for a few hundred thousand files), so its result is kept
//! for [`REUSE_FOR`] in [`CACHE_DIR`] and reused by servers started meanwhile (tests start
//! many); older results are walked again before a sprite starts.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fingerprint::fnv1a;

/// Where scan results are kept between server processes (root servers only).
pub const CACHE_DIR: &str = "/var/lib/sprites-local/base-scans";
/// How long a scan result is reused. A host file made private after the scan stays
/// visible to sprites started within this time.
pub const REUSE_FOR: Duration = Duration::from_secs(600);

/// A scan result as kept in [`CACHE_DIR`].
#[derive(Serialize, Deserialize)]
struct Cached {
    base: PathBuf,
    /// Unix seconds of the walk.
    scanned_at: u64,
    hidden: Vec<Hidden>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`scan`], or its result from a walk of the same base less than [`REUSE_FOR`] ago.
pub fn scan_cached(base: &Path, skip: &[&str]) -> io::Result<Vec<Hidden>> {
    scan_cached_in(Path::new(CACHE_DIR), base, skip)
}

/// [`scan`], or its result from a walk of the same base less than [`REUSE_FOR`] ago, kept
/// in `cache_dir`.
fn scan_cached_in(cache_dir: &Path, base: &Path, skip: &[&str]) -> io::Result<Vec<Hidden>> {
    let key = fnv1a(base.as_os_str().as_bytes());
    let file = cache_dir.join(format!("{key:016x}.json"));
    if let Some(c) = fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
    {
        let age = now_secs().saturating_sub(c.scanned_at);
        if c.base == base && age < REUSE_FOR.as_secs() {
            return Ok(c.hidden);
        }
    }
    let scanned_at = now_secs();
    let hidden = scan(base, skip)?;
    // Best effort: without the cache the next server walks again.
    let cached = Cached {
        base: base.to_owned(),
        scanned_at,
        hidden,
    };
    if let Ok(bytes) = serde_json::to_vec(&cached) {
        let _ = fs::create_dir_all(cache_dir)
            .and_then(|()| fs::set_permissions(cache_dir, fs::Permissions::from_mode(0o700)))
            .and_then(|()| {
                crate::store::write_atomic(cache_dir, &format!("{key:016x}.json"), &bytes)
            });
    }
    Ok(cached.hidden)
}

/// One base entry to hide, by its path relative to the base (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hidden {
    /// Relative path, `/`-separated.
    pub path: String,
    /// A directory (hidden by an empty opaque directory) or anything else (a whiteout).
    pub dir: bool,
}

/// Others may read (files) or read and search (directories).
fn world_visible(mode: u32, dir: bool) -> bool {
    if dir {
        mode & 0o005 == 0o005
    } else {
        mode & 0o004 != 0
    }
}

/// Walks `base` (not crossing into other filesystems, not descending into `skip`, which
/// are relative paths) and returns every entry to hide, sorted.
pub fn scan(base: &Path, skip: &[&str]) -> io::Result<Vec<Hidden>> {
    let root_dev = fs::symlink_metadata(base)?.dev();
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match fs::read_dir(base.join(&rel)) {
            Ok(e) => e,
            // Vanished while we walked, or unreadable even to us: nothing to hide inside.
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let child = rel.join(&name);
            let Some(child_str) = child.to_str() else {
                continue; // not UTF-8: cannot be passed on; such names are vanishingly rare
            };
            if skip.contains(&child_str) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != root_dev {
                continue; // a mount point: not part of the lower layer
            }
            let ft = meta.file_type();
            if ft.is_symlink() {
                continue; // a link's own mode says nothing; its target is checked where it is
            }
            let dir = ft.is_dir();
            if !world_visible(meta.mode(), dir) {
                out.push(Hidden {
                    path: child_str.to_owned(),
                    dir,
                });
            } else if dir {
                stack.push(child);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_private_entries_and_skips_masked_dirs() {
        let base = std::env::temp_dir().join(format!("scan-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for d in ["etc/ssl/private", "etc/ok", "home/u", "var/lib/svc"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::write(base.join("etc/shadow"), "x").unwrap();
        fs::write(base.join("etc/passwd"), "x").unwrap();
        fs::write(base.join("etc/ssl/private/key"), "k").unwrap();
        fs::write(base.join("home/u/secret"), "s").unwrap();
        let mode = |p: &str, m: u32| {
            fs::set_permissions(base.join(p), fs::Permissions::from_mode(m)).unwrap()
        };
        mode("etc/shadow", 0o640);
        mode("etc/passwd", 0o644);
        mode("etc/ssl/private", 0o700);
        mode("var/lib/svc", 0o750);
        mode("home/u/secret", 0o600);
        std::os::unix::fs::symlink("/etc/shadow", base.join("etc/link")).unwrap();
        let found = scan(&base, &["home"]).unwrap();
        let paths: Vec<(&str, bool)> = found.iter().map(|h| (h.path.as_str(), h.dir)).collect();
        assert_eq!(
            paths,
            [
                ("etc/shadow", false),
                ("etc/ssl/private", true),
                ("var/lib/svc", true)
            ]
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_scan_is_reused_for_a_while_then_walked_again() {
        let dir =
            std::env::temp_dir().join(format!("scan-cache-{}", crate::random::hex(6).unwrap()));
        let (base, cache) = (dir.join("base"), dir.join("cache"));
        fs::create_dir_all(base.join("etc")).unwrap();
        let secret = |name: &str| {
            fs::write(base.join("etc").join(name), "s").unwrap();
            fs::set_permissions(
                base.join("etc").join(name),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        };
        secret("one");
        let names = |h: &[Hidden]| h.iter().map(|h| h.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&scan_cached_in(&cache, &base, &[]).unwrap()),
            ["etc/one"]
        );
        let file = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        assert_eq!(
            fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A new secret is not seen while the result is reused...
        secret("two");
        assert_eq!(
            names(&scan_cached_in(&cache, &base, &[]).unwrap()),
            ["etc/one"]
        );
        // ...up to REUSE_FOR after the walk, not at REUSE_FOR.
        let age = |secs: u64| {
            let mut c: Cached = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
            c.scanned_at = now_secs() - secs;
            fs::write(&file, serde_json::to_vec(&c).unwrap()).unwrap();
        };
        age(REUSE_FOR.as_secs() - 5);
        assert_eq!(
            names(&scan_cached_in(&cache, &base, &[]).unwrap()),
            ["etc/one"]
        );
        age(REUSE_FOR.as_secs());
        assert_eq!(
            names(&scan_cached_in(&cache, &base, &[]).unwrap()),
            ["etc/one", "etc/two"]
        );
        // A result recorded for another base is never used.
        let mut c: Cached = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        c.base = dir.join("elsewhere");
        c.hidden.clear();
        fs::write(&file, serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(scan_cached_in(&cache, &base, &[]).unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
