//! The sprite's root filesystem, assembled inside its fresh mount namespace: an overlay
//! (read-only base + the sprite's upper layer), a minimal `/dev`, a fresh `/proc`, masks
//! over host paths that must stay invisible, then `pivot_root` into it.
//!
//! Runs in the agent (PID 1 of the sprite's PID namespace) before it serves requests.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::ctx;
use crate::sys::mount::{self, mount};

/// Where a sprite's layers live (all inside its directory in the data dir).
#[derive(Debug, Clone)]
pub struct Layout {
    /// Read-only lower layer (`/` unless `--base-dir`).
    pub base: PathBuf,
    /// The sprite's writable layer.
    pub upper: PathBuf,
    /// overlayfs work directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// Empty directory the merged root is mounted on before `pivot_root`.
    pub root: PathBuf,
    /// Host paths to hide inside (the data dir), as absolute paths inside the sprite.
    pub masks: Vec<PathBuf>,
    /// Running in a user namespace (overlay needs `userxattr`; device nodes are bound).
    pub userns: bool,
    /// The sprite's hostname.
    pub hostname: String,
}

impl Layout {
    /// The standard layout for the sprite stored in `sprite_dir`.
    pub fn new(sprite_dir: &Path, base: &Path, masks: Vec<PathBuf>, userns: bool) -> Layout {
        Layout {
            base: base.to_owned(),
            upper: sprite_dir.join("upper"),
            work: sprite_dir.join("work"),
            root: sprite_dir.join("root"),
            masks,
            userns,
            hostname: sprite_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sprite".into()),
        }
    }

    /// The xattr that marks an upper directory opaque for this overlay.
    pub fn opaque_xattr(&self) -> &'static str {
        if self.userns {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        }
    }

    /// Creates the sprite's directories (idempotent).
    pub fn create_dirs(&self) -> io::Result<()> {
        for d in [&self.upper, &self.work, &self.root] {
            fs::create_dir_all(d)?;
        }
        Ok(())
    }
}

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

/// Builds the root and pivots into it. Call in a new mount namespace.
pub fn enter(l: &Layout) -> io::Result<()> {
    // Nothing we mount may propagate back to the host's namespace.
    ctx(
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ),
        || "making / private".into(),
    )?;
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        escape_option(&l.base),
        escape_option(&l.upper),
        escape_option(&l.work)
    );
    if l.userns {
        opts.push_str(",userxattr");
    }
    ctx(
        mount(
            Some("overlay"),
            &l.root,
            Some("overlay"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&opts),
        ),
        || {
            let hint = if l.userns {
                "; without root, overlayfs refuses a lower directory that has other mounts \
                 below it (such as the host's /): pass a base dir without mount points \
                 (--base-dir) or run the server as root"
            } else {
                ""
            };
            format!("mounting overlay ({opts}){hint}")
        },
    )?;
    ctx(mount_dev(&l.root), || "setting up /dev".into())?;
    let proc_dir = real_dir(&l.root, "proc")?;
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
    std::env::set_current_dir(&l.root)?;
    ctx(mount::pivot_root(Path::new("."), Path::new(".")), || {
        "pivot_root".into()
    })?;
    ctx(mount::umount2(Path::new("."), libc::MNT_DETACH), || {
        "detaching the host root".into()
    })?;
    std::env::set_current_dir("/")?;

    // Now paths resolve inside the sprite, so a symlink planted there cannot redirect these.
    for m in &l.masks {
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
    // We are in our own UTS namespace.
    let _ = mount::sethostname(l.hostname.as_bytes());
    Ok(())
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
        let l = Layout::new(Path::new("/data/sprites/box"), Path::new("/"), vec![], true);
        assert_eq!(l.hostname, "box");
        assert_eq!(l.upper, Path::new("/data/sprites/box/upper"));
        assert_eq!(l.opaque_xattr(), "user.overlay.opaque");
    }
}
