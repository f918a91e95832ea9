//! What of the base a sprite must not see: every entry that an unprivileged host user cannot
//! read.
//!
//! A sprite's root user owns the base's root-owned files (the lower layer is id-mapped so that
//! `apt-get install` works), so ordinary permissions no longer keep it out of the host's
//! private files (`/etc/shadow`, TLS keys, `/var/log/*`, a service's 0700 state directory).
//! The rule is simple and needs no list of secrets: **a sprite sees of the base exactly what
//! any host user may see.** Every directory that others cannot read and search, and every
//! other entry that others cannot read, is hidden in each sprite (an empty opaque directory
//! or a whiteout in its upper layer), wherever it is.
//!
//! The walk stays on the base's own filesystem (the overlay's lower layer does not cross
//! mount points either) and skips the directories every sprite masks anyway.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One base entry to hide, by its path relative to the base (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    use std::os::unix::fs::PermissionsExt;

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
}
