//! The `sprite` user and the masked directories, written straight into the sprite's upper
//! layer before the overlay is mounted.
//!
//! Writing the upper layer from outside (rather than through the mounted overlay) works the
//! same with and without a user namespace: in a user namespace the lower layer's
//! root-owned `/etc/passwd` is not writable even by the namespace's root, but the upper
//! directory belongs to the server's user.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::ctx;
use crate::sys;

/// The user execs run as.
pub const USER: &str = "sprite";
/// Its home directory inside the sprite.
pub const HOME: &str = "/home/sprite";
/// Preferred uid/gid (the first regular user on most distributions).
const PREFERRED_ID: u32 = 1000;

/// Directories whose host contents must stay invisible: in the upper layer they are
/// *opaque* directories, so the merged view shows only the sprite's own files (persistent,
/// and per sprite) and never the host's. `(path, mode)`.
const MASKED: &[(&str, u32)] = &[
    ("home", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("var/tmp", 0o1777),
    ("run", 0o755),
];

/// Who the sprite user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// uid inside the sprite.
    pub uid: u32,
    /// Primary gid inside the sprite.
    pub gid: u32,
}

/// Prepares `upper` (the sprite's writable layer) over `base`: masked directories, the
/// `sprite` user in `/etc/passwd` and `/etc/group`, and its home. Idempotent; returns the
/// user's ids. `opaque_xattr` is `trusted.overlay.opaque` (real root) or
/// `user.overlay.opaque` (overlay mounted with `userxattr` in a user namespace).
/// `chown_home` is false in a user namespace, where the server's own uid *is* the sprite
/// user's uid and files it creates already have the right owner.
pub fn prepare_upper(
    base: &Path,
    upper: &Path,
    opaque_xattr: &str,
    chown_home: bool,
) -> io::Result<Ids> {
    for (dir, mode) in MASKED {
        let p = upper.join(dir);
        if p.symlink_metadata().is_ok() {
            continue; // already made (or replaced by the sprite's user: theirs to keep)
        }
        // A base where this path is a symlink (e.g. /var/run -> /run) needs no mask.
        if base
            .join(dir)
            .symlink_metadata()
            .is_ok_and(|m| m.is_symlink())
        {
            continue;
        }
        if let Some(parent) = p.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        fs::DirBuilder::new().mode(*mode).create(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?; // umask-free
        ctx(sys::mount::lsetxattr(&p, opaque_xattr, b"y"), || {
            format!("marking {} opaque ({opaque_xattr})", p.display())
        })?;
    }

    let etc = upper.join("etc");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&etc)?;
    let read = |name: &str| -> String {
        fs::read_to_string(etc.join(name))
            .or_else(|_| fs::read_to_string(base.join("etc").join(name)))
            .unwrap_or_default()
    };
    let passwd = read("passwd");
    let group = read("group");
    let ids = match find_user(&passwd) {
        Some(ids) => ids,
        None => {
            let uid = free_id(&passwd, 2);
            let gid = match find_group(&group) {
                Some(g) => g,
                None => free_id(&group, 2).max(uid),
            };
            let shell = if base.join("bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            let line = format!("{USER}:x:{uid}:{gid}:Sprite:{HOME}:{shell}\n");
            write_atomic(&etc, "passwd", &appended(&passwd, &line))?;
            Ids { uid, gid }
        }
    };
    if find_group(&group).is_none() {
        let line = format!("{USER}:x:{}:\n", ids.gid);
        write_atomic(&etc, "group", &appended(&group, &line))?;
    }

    let home = upper.join(HOME.trim_start_matches('/'));
    if !home.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&home)?;
        if chown_home {
            sys::mount::lchown(&home, ids.uid, ids.gid)?;
        }
    }
    Ok(ids)
}

/// `sprite`'s `(uid, gid)` in a passwd file.
fn find_user(passwd: &str) -> Option<Ids> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == USER).then(|| {
            Some(Ids {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })?
    })
}

/// `sprite`'s gid in a group file.
fn find_group(group: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == USER).then(|| f[2].parse().ok())?
    })
}

/// The first id from 1000 up that no line of a passwd/group file uses in field `field`.
fn free_id(file: &str, field: usize) -> u32 {
    let taken: std::collections::HashSet<u32> = file
        .lines()
        .filter_map(|l| l.split(':').nth(field)?.parse().ok())
        .collect();
    (PREFERRED_ID..60000)
        .find(|id| !taken.contains(id))
        .unwrap_or(PREFERRED_ID)
}

fn appended(file: &str, line: &str) -> String {
    let mut s = file.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(line);
    s
}

/// Readers inside a running sprite must never see a half-written passwd file.
fn write_atomic(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.sprites-local-tmp"));
    fs::write(&tmp, content)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_free_id_and_finds_an_existing_user() {
        let passwd = "root:x:0:0::/root:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n";
        assert_eq!(free_id(passwd, 2), 1001);
        assert_eq!(free_id("root:x:0:0::/:/bin/sh", 2), 1000);
        assert_eq!(find_user(passwd), None);
        let with = appended(passwd, "sprite:x:1001:1001:Sprite:/home/sprite:/bin/sh\n");
        assert_eq!(
            find_user(&with),
            Some(Ids {
                uid: 1001,
                gid: 1001
            })
        );
        assert_eq!(find_group("sprite:x:1234:\n"), Some(1234));
        assert_eq!(appended("a", "b\n"), "a\nb\n");
    }
}
