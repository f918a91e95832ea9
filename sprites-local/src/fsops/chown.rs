//! Chown (PROTOCOL.md §9): owner and/or group of a path, or of a whole tree.
//!
//! The tree walk is directory-relative ([`crate::sys::dirfd`]): each directory is opened
//! below the one before with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …)`, and each
//! entry is changed with `fchownat(AT_SYMLINK_NOFOLLOW)` in a directory already open. A
//! symlink below the top is changed itself, never followed, so a link (or a directory
//! swapped for one mid-walk) cannot lead the walk anywhere else. Only the path asked for is
//! followed if it is a symlink, as `chown -R` does. Mount points below the top are changed
//! but not descended into (`RESOLVE_NO_XDEV`): `/proc` or a bind mount is not the tree.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};

use super::host::MAX_REPORTED;
use super::{join, Chowned, FsError, Owner, OwnerChange};
use crate::sys::dirfd;

/// Deepest directory level a recursive chown descends to: each level holds one open
/// directory, and a tree deeper than this is refused (`ELOOP`) rather than exhausting
/// descriptors.
pub const MAX_DEPTH: usize = 256;

/// `-1` to `chown(2)`: leave this id alone.
const UNCHANGED: u32 = u32::MAX;

/// Changes the owner and/or group of `path` (following it if it is a symlink), and with
/// `recursive` of everything below it.
pub fn chown(
    path: &str,
    uid: Option<&Owner>,
    gid: Option<&Owner>,
    recursive: bool,
) -> Result<Chowned, FsError> {
    if uid.is_none() && gid.is_none() {
        return Err(FsError::with_detail(
            libc::EINVAL,
            path,
            "uid or gid is required",
        ));
    }
    let uid = uid.map(|o| resolve(o, "/etc/passwd", path)).transpose()?;
    let gid = gid.map(|o| resolve(o, "/etc/group", path)).transpose()?;
    let mut report = Report {
        uid,
        gid,
        count: 0,
        affected: Vec::new(),
    };
    let (u, g) = (uid.unwrap_or(UNCHANGED), gid.unwrap_or(UNCHANGED));
    std::os::unix::fs::chown(path, uid, gid).map_err(|e| FsError::from_io(&e, path))?;
    report.record(path)?;
    if recursive && std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        let top = File::open(path).map_err(|e| FsError::from_io(&e, path))?;
        walk(OwnedFd::from(top), path, u, g, &mut report)?;
    }
    Ok(Chowned {
        path: path.to_owned(),
        uid,
        gid,
        count: report.count,
        affected: report.affected,
    })
}

/// Changes everything below the open directory `top` (at `top_path`), depth first.
fn walk(
    top: OwnedFd,
    top_path: &str,
    uid: u32,
    gid: u32,
    report: &mut Report,
) -> Result<(), FsError> {
    let names =
        |fd: &OwnedFd, path: &str| -> Result<std::vec::IntoIter<std::ffi::OsString>, FsError> {
            let mut names = dirfd::list_dir(fd.as_fd()).map_err(|e| FsError::from_io(&e, path))?;
            names.sort();
            Ok(names.into_iter())
        };
    let first = names(&top, top_path)?;
    let mut stack = vec![(top, top_path.to_owned(), first)];
    while let Some((dir, dir_path, rest)) = stack.last_mut() {
        let Some(name) = rest.next() else {
            stack.pop();
            continue;
        };
        let Some(name) = name.to_str().map(str::to_owned) else {
            let shown = join(dir_path, &name.to_string_lossy());
            return Err(FsError::with_detail(
                libc::EINVAL,
                shown,
                "name is not UTF-8",
            ));
        };
        let path = join(dir_path, &name);
        let st = match dirfd::stat_entry(dir.as_fd(), &name) {
            Ok(st) => st,
            // Removed since the listing: nothing to change.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(FsError::from_io(&e, path)),
        };
        match dirfd::chown_at(dir.as_fd(), &name, uid, gid) {
            Ok(()) => report.record(&path)?,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(FsError::from_io(&e, path)),
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            continue;
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let sub = match dirfd::open_beneath(dir.as_fd(), &name, flags, 0) {
            Ok(sub) => sub,
            // A mount point (EXDEV), or swapped for a symlink since the stat (ELOOP), or
            // gone: not part of this tree any more.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ELOOP | libc::ENOENT)
                ) =>
            {
                continue
            }
            Err(e) => return Err(FsError::from_io(&e, path)),
        };
        if stack.len() >= MAX_DEPTH {
            return Err(FsError::with_detail(
                libc::ELOOP,
                path,
                &format!("more than {MAX_DEPTH} directory levels"),
            ));
        }
        let list = names(&sub, &path)?;
        stack.push((sub, path, list));
    }
    Ok(())
}

/// Counts the changed paths and keeps the first [`MAX_REPORTED`].
struct Report {
    uid: Option<u32>,
    gid: Option<u32>,
    count: usize,
    affected: Vec<OwnerChange>,
}

impl Report {
    /// Records `path` as changed, with the ids it has now.
    fn record(&mut self, path: &str) -> Result<(), FsError> {
        self.count += 1;
        if self.affected.len() < MAX_REPORTED {
            let (uid, gid) = match (self.uid, self.gid) {
                (Some(u), Some(g)) => (u, g),
                _ => {
                    use std::os::unix::fs::MetadataExt;
                    let m =
                        std::fs::symlink_metadata(path).map_err(|e| FsError::from_io(&e, path))?;
                    (m.uid(), m.gid())
                }
            };
            self.affected.push(OwnerChange {
                path: path.to_owned(),
                uid,
                gid,
            });
        }
        Ok(())
    }
}

/// An [`Owner`] as a numeric id: a number as it is (but not `-1`, which means "unchanged"),
/// a decimal string as that number, a name looked up in `db` (`/etc/passwd` or
/// `/etc/group`, of whatever root this process has: inside a sprite, the sprite's).
fn resolve(owner: &Owner, db: &str, path: &str) -> Result<u32, FsError> {
    let id = match owner {
        Owner::Id(id) => Some(*id),
        Owner::Name(name) => match name.parse::<u32>() {
            Ok(id) => Some(id),
            Err(_) => lookup(db, name),
        },
    };
    match id {
        Some(id) if id != UNCHANGED => Ok(id),
        Some(_) => Err(FsError::with_detail(libc::EINVAL, path, "invalid id")),
        None => {
            let what = if db.ends_with("passwd") {
                "user"
            } else {
                "group"
            };
            let name = match owner {
                Owner::Name(n) => n.as_str(),
                Owner::Id(_) => "",
            };
            Err(FsError::with_detail(
                libc::EINVAL,
                path,
                &format!("no {what} named {name:?}"),
            ))
        }
    }
}

/// The id of `name` in a `name:password:id:…` file; lines are read one at a time (at most
/// 64 KiB of file), so a huge or odd file costs nothing.
fn lookup(db: &str, name: &str) -> Option<u32> {
    let file = File::open(db).ok()?;
    let reader = BufReader::new(std::io::Read::take(file, 64 * 1024));
    reader
        .lines()
        .map_while(Result::ok)
        .find_map(|line| parse_line(&line, name))
}

/// `Some(id)` if `line` (`name:x:id:…`) is `name`'s.
fn parse_line(line: &str, name: &str) -> Option<u32> {
    let mut fields = line.split(':');
    if fields.next()? != name {
        return None;
    }
    fields.nth(1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        assert_eq!(
            parse_line("sprite:x:1000:1000::/home/sprite:/bin/bash", "sprite"),
            Some(1000)
        );
        assert_eq!(parse_line("root:x:0:", "root"), Some(0));
        assert_eq!(parse_line("sprite:x:1000:1000", "sprit"), None);
        assert_eq!(parse_line("broken", "broken"), None);
        assert_eq!(parse_line("a:x:notanumber:", "a"), None);
    }

    /// A temp dir, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp() -> (Dir, String, u32) {
        use std::os::unix::fs::MetadataExt;
        let d = std::env::temp_dir().join(format!(
            "sprites-chown-{}-{}",
            std::process::id(),
            crate::random::hex(4).unwrap()
        ));
        std::fs::create_dir_all(&d).unwrap();
        let uid = std::fs::metadata(&d).unwrap().uid();
        let s = d.to_str().unwrap().to_owned();
        (Dir(d), s, uid)
    }

    #[test]
    fn only_a_recursive_chown_walks_and_a_deep_tree_is_refused() {
        // Our own ids: no privilege needed, and what changes is what is counted.
        let (_d, dir, me) = temp();
        std::fs::create_dir_all(format!("{dir}/a/b")).unwrap();
        std::fs::write(format!("{dir}/a/f"), b"").unwrap();
        let me = Some(Owner::Id(me));
        let one = chown(&format!("{dir}/a"), me.as_ref(), None, false).unwrap();
        assert_eq!((one.count, one.affected.len()), (1, 1));
        let all = chown(&format!("{dir}/a"), me.as_ref(), None, true).unwrap();
        assert_eq!(all.count, 3, "{all:?}");
        let file = chown(&format!("{dir}/a/f"), me.as_ref(), None, true).unwrap();
        assert_eq!(file.count, 1, "recursive on a file is the file");
        let mut deep = format!("{dir}/deep");
        for _ in 0..MAX_DEPTH {
            deep.push_str("/d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = chown(&format!("{dir}/deep"), me.as_ref(), None, true).unwrap_err();
        assert_eq!(err.errno, libc::ELOOP, "{err}");
        assert!(err.message.contains("directory levels"), "{err}");
        // One level less is fine.
        let shallower = format!("{dir}/deep/d");
        assert!(chown(&shallower, me.as_ref(), None, true).is_ok());
        let err = chown(&format!("{dir}/nope"), me.as_ref(), None, true).unwrap_err();
        assert_eq!(err.errno, libc::ENOENT);
        let err = chown(&dir, None, None, false).unwrap_err();
        assert_eq!(err.errno, libc::EINVAL);
    }

    #[test]
    fn owners_resolve() {
        assert_eq!(resolve(&Owner::Id(7), "/etc/passwd", "/p").unwrap(), 7);
        assert_eq!(
            resolve(&Owner::Name("12".into()), "/etc/passwd", "/p").unwrap(),
            12
        );
        assert_eq!(
            resolve(&Owner::Name("root".into()), "/etc/passwd", "/p").unwrap(),
            0
        );
        assert_eq!(
            resolve(&Owner::Name("root".into()), "/etc/group", "/p").unwrap(),
            0
        );
        let e = resolve(&Owner::Name("no-such-user-x".into()), "/etc/passwd", "/p").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.message.contains("no user named"), "{}", e.message);
        assert_eq!(
            resolve(&Owner::Id(u32::MAX), "/etc/passwd", "/p")
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
    }
}
