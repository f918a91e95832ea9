//! The sprite's root filesystem, assembled in the sprite's own mount namespace: an overlay
//! (read-only base + the sprite's upper layer) and a minimal `/dev`, mounted by the stub
//! ([`overlay`], [`dev`]); then, in the agent (PID 1 of the sprite's PID namespace, which a
//! fresh `/proc` must belong to), `/proc`, `pivot_root` into the root and masks over host
//! paths that must stay invisible ([`enter`]).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::ctx;
use crate::sys::mount::{self, mount};

/// overlayfs option values separate with `,` (and lowerdirs with `:`); escape both.
fn escape_option(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// A real directory under the new root, not a symlink: a mount on a path the sprite could
/// have turned into a symlink would follow it on the host side of `pivot_root`.
fn real_dir(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let p = root.join(rel);
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(io::Error::other(format!(
            "/{rel} inside the sprite is not a directory"
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(&p)?;
            Ok(p)
        }
        Err(e) => Err(e),
    }
}

/// Mounts the overlay of `lowers` (read-only, topmost first) and `upper` (with `work`) on
/// `root`.
/// `userxattr`: the overlay is mounted in a user namespace (its metadata lives in `user.*`
/// xattrs). Setuid binaries work inside (root there is the sprite's, see `identity`);
/// device nodes do not.
pub fn overlay(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    root: &Path,
    userxattr: bool,
) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers
            .iter()
            .map(|l| escape_option(l))
            .collect::<Vec<_>>()
            .join(":"),
        escape_option(upper),
        escape_option(work)
    );
    if userxattr {
        opts.push_str(",userxattr");
    }
    ctx(
        mount(
            Some("overlay"),
            root,
            Some("overlay"),
            libc::MS_NODEV,
            Some(&opts),
        ),
        || {
            let hint = if userxattr {
                "; without root, overlayfs refuses a lower directory that has other mounts \
                 below it (such as the host's /): pass a base dir without mount points \
                 (--base-dir) or run the server as root"
            } else {
                ""
            };
            format!("mounting overlay ({opts}){hint}")
        },
    )
}

/// Mounts the sprite's `/dev` in the merged `root` (see [`mount_dev`]).
pub fn dev(root: &Path) -> io::Result<()> {
    ctx(mount_dev(root), || "setting up /dev".into())
}

/// In the agent: mounts `/proc` (of the sprite's PID namespace) in `root`, pivots into
/// `root`, drops the host's tree, and hides `masks` (absolute paths inside). Call in the
/// mount namespace the stub prepared.
pub fn enter(root: &Path, masks: &[PathBuf]) -> io::Result<()> {
    let proc_dir = real_dir(root, "proc")?;
    ctx(
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        || "mounting /proc".into(),
    )?;

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the sprite's root, with no directory of ours left behind in the upper layer.
    std::env::set_current_dir(root)?;
    ctx(mount::pivot_root(Path::new("."), Path::new(".")), || {
        "pivot_root".into()
    })?;
    ctx(mount::umount2(Path::new("."), libc::MNT_DETACH), || {
        "detaching the host root".into()
    })?;
    std::env::set_current_dir("/")?;

    // Now paths resolve inside the sprite, so a symlink planted there cannot redirect these.
    for m in masks {
        if m.is_dir() {
            ctx(
                mount(
                    Some("tmpfs"),
                    m,
                    Some("tmpfs"),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    Some("size=4k,mode=000"),
                ),
                || format!("masking {}", m.display()),
            )?;
        }
    }
    Ok(())
}

/// Shows the host directory `source` read-only at `rel` (relative, `a/b`) in the merged
/// `root` (the sprite's `/.sprite/policy`). Call before [`enter`], while no process of the
/// sprite runs (so the directories checked here cannot be swapped for symlinks before the
/// mount). The mount belongs to the sprite's mount namespace, which the sprite's root
/// cannot change on a root server.
pub fn bind_readonly(root: &Path, rel: &str, source: &Path) -> io::Result<()> {
    let mut at = String::new();
    let mut target = root.to_owned();
    for part in rel.split('/') {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        target = real_dir(root, &at)?;
    }
    ctx(
        mount(
            Some(&source.to_string_lossy()),
            &target,
            None,
            libc::MS_BIND,
            None,
        ),
        || format!("binding {} at /{rel}", source.display()),
    )?;
    ctx(
        mount(
            None,
            &target,
            None,
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        ),
        || format!("making /{rel} read-only"),
    )
}

/// A fresh tmpfs `/dev` with the usual nodes bound from the host (bind mounts work in a
/// user namespace, where `mknod` does not), its own `devpts` instance and `/dev/shm`.
fn mount_dev(root: &Path) -> io::Result<()> {
    let dev = real_dir(root, "dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        fs::File::create(&target)?;
        let source = format!("/dev/{node}");
        ctx(
            mount(Some(&source), &target, None, libc::MS_BIND, None),
            || format!("binding {source}"),
        )?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    symlink("pts/ptmx", dev.join("ptmx"))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_are_escaped() {
        assert_eq!(escape_option(Path::new("/a,b:c\\d")), "/a\\,b\\:c\\\\d");
    }
}
