//! The sprite's upper layer, prepared before the overlay is mounted: the `sprite` user,
//! the directories every sprite masks, the base entries it must not see, and the files
//! that make it a machine of its own (`/etc/hosts`, the resolver, `sudo`).
//!
//! The upper layer is the sprite's to fill, symlinks included, and this runs with
//! privileges the sprite lacks (root on the host, or the server's user). So nothing here
//! joins host paths: every operation is relative to the opened upper directory and goes
//! through [`crate::sys::dirfd`], which never follows a symlink and never leaves that
//! directory. Where the sprite put a symlink or a file in the way (`/etc` → a host
//! directory), the step that needed the directory is skipped; the sprite's own object
//! already hides what lay below it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;

use super::base_scan::Hidden;
use crate::sys::dirfd;

/// The user execs run as.
pub const USER: &str = "sprite";
/// Its home directory inside the sprite.
pub const HOME: &str = "/home/sprite";
/// A directory `sprite` owns directly below `/`: clients written for the platform run
/// `mkdir -p /workspace` as `sprite`, which works there.
pub const WORKSPACE: &str = "workspace";
/// Where services' logs go (PROTOCOL.md §11), owned by `sprite`; its parents are root's.
pub const SERVICE_LOGS: &str = ".sprite/logs/services";
/// `sprite`'s uid and gid, as on the platform.
const SPRITE_ID: u32 = 1000;

/// Directories whose host contents must stay invisible: in the upper layer they are
/// *opaque* directories, so the merged view shows only the sprite's own files (persistent,
/// and per sprite) and never the host's. `(path, mode)`.
pub const MASKED: &[(&str, u32)] = &[
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

/// How ids inside the sprite are stored in the upper layer on disk.
#[derive(Debug, Clone, Copy)]
pub enum Owners {
    /// Root server: inside id N is host id `base + N` (the sprite's own range).
    Shifted {
        /// Host id of the sprite's root.
        base: u32,
    },
    /// Unprivileged server: every file belongs to the server's user, which the sprite
    /// user is mapped to; nothing is chowned.
    ServerUser,
}

impl Owners {
    fn disk(self, inside: u32) -> Option<u32> {
        match self {
            Owners::Shifted { base } => Some(base + inside),
            Owners::ServerUser => None,
        }
    }
}

/// What to prepare.
pub struct Plan<'a> {
    /// The base (lower layer) on the host: read for `/etc/passwd` and directory modes.
    pub base: &'a Path,
    /// How ids are stored.
    pub owners: Owners,
    /// `trusted.overlay.opaque` (root server) or `user.overlay.opaque` (overlay mounted
    /// with `userxattr` in a user namespace).
    pub opaque_xattr: &'static str,
    /// Base entries to hide (root server: the id-mapped base would show them).
    pub hidden: &'a [Hidden],
    /// Further directories to mask (the data dir, when the base contains it), relative.
    pub masks: &'a [String],
    /// Contents for `/etc/resolv.conf`, if the sprite has a network to resolve on.
    pub resolv_conf: Option<&'a str>,
    /// The sprite's hostname, for `/etc/hosts`.
    pub hostname: &'a str,
    /// Root inside is a real (namespaced) root: give `sprite` passwordless sudo and the
    /// files sudo needs.
    pub sudo: bool,
}

/// Prepares the upper layer at `upper` as `plan` says (idempotent: run before every
/// start). Returns the sprite user's ids.
pub fn prepare(upper: &Path, plan: &Plan<'_>) -> io::Result<Ids> {
    let root = File::open(upper)?;
    let root = root.as_fd();
    // `/` of the merged tree is the upper layer's own root directory: root's, 0755.
    if let Some(uid) = plan.owners.disk(0) {
        crate::sys::file::fchown(root, uid, uid)?;
    }
    dirfd::chmod_fd(root, 0o755)?;
    let up = Upper::new(root, plan);

    for (dir, mode) in MASKED {
        // A base where this path is a symlink (e.g. /var/run -> /run) needs no mask.
        if plan
            .base
            .join(dir)
            .symlink_metadata()
            .is_ok_and(|m| m.is_symlink())
        {
            continue;
        }
        up.opaque_dir(dir, Some(*mode))?;
    }
    for m in plan.masks {
        up.opaque_dir(m, Some(0o700))?;
    }

    let ids = up.user()?;
    let home = HOME.trim_start_matches('/');
    up.owned_dir(home, ids, 0o755)?;
    if !plan.base.join(WORKSPACE).exists() {
        up.owned_dir(WORKSPACE, ids, 0o755)?;
    }
    // Service logs are appended by a writer running as `sprite` (services::run).
    up.owned_dir(SERVICE_LOGS, ids, 0o755)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        plan.hostname
    );
    up.write_if_absent("etc", "hosts", hosts.as_bytes(), 0o644)?;
    if let Some(resolv) = plan.resolv_conf {
        up.write_resolv_conf(resolv)?;
    }
    if plan.sudo {
        up.sudo(ids)?;
    }
    for h in plan.hidden {
        up.hide(h)?;
    }
    // One flush for everything written above (each file was renamed into place whole),
    // rather than one per file: on a sprite's own disk image each costs a journal commit.
    dirfd::syncfs(root)?;
    Ok(ids)
}

/// Writes into the empty directory `dir` the whiteouts and opaque directories that hide
/// `hidden` entries of `base`, with the base's modes and owners (`owners` as for an upper
/// layer) on every directory it makes: a layer that, stacked over the base, hides them.
pub fn write_masks(dir: &Path, base: &Path, owners: Owners, hidden: &[Hidden]) -> io::Result<()> {
    let root = File::open(dir)?;
    let plan = Plan {
        base,
        owners,
        opaque_xattr: "trusted.overlay.opaque",
        hidden,
        masks: &[],
        resolv_conf: None,
        hostname: "",
        sudo: false,
    };
    let up = Upper::new(root.as_fd(), &plan);
    for h in hidden {
        up.hide(h)?;
    }
    dirfd::syncfs(root.as_fd())
}

/// The opened upper directory and the plan.
/// Most directories [`Upper`] keeps open at once.
const MAX_CACHED_DIRS: usize = 256;

struct Upper<'a> {
    root: BorrowedFd<'a>,
    plan: &'a Plan<'a>,
    /// Directories resolved so far by relative path (`None`: something else in the way).
    dirs: RefCell<HashMap<String, Option<Rc<OwnedFd>>>>,
}

impl<'a> Upper<'a> {
    fn new(root: BorrowedFd<'a>, plan: &'a Plan<'a>) -> Upper<'a> {
        Upper {
            root,
            plan,
            dirs: RefCell::new(HashMap::new()),
        }
    }
}

/// `Err` that means "something of the sprite's own is in the way": the step is skipped.
fn in_the_way(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

fn split(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", rel),
    }
}

/// A fresh temp file (mode 0600) in `dir` to be renamed to `name` once written: its name
/// and descriptor. A stale one of an interrupted start is replaced.
fn new_temp(dir: BorrowedFd<'_>, name: &str) -> io::Result<(String, OwnedFd)> {
    let tmp = format!(".{name}.sprites-local-tmp");
    let _ = dirfd::unlink_at(dir, &tmp, 0);
    let fd = dirfd::open_beneath(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )?;
    Ok((tmp, fd))
}

/// Opens directory `rel` below `dir` (never through a symlink).
fn open_dir_at(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    dirfd::open_beneath(dir, rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

impl Upper<'_> {
    fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        open_dir_at(self.root, rel)
    }

    /// The base's `(mode, uid, gid)` at `rel`, or root's 0755 where the base has nothing.
    fn base_attrs(&self, rel: &str) -> (u32, u32, u32) {
        self.plan
            .base
            .join(rel)
            .symlink_metadata()
            .map_or((0o755, 0, 0), |m| (m.mode() & 0o7777, m.uid(), m.gid()))
    }

    fn chown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        match (self.plan.owners.disk(uid), self.plan.owners.disk(gid)) {
            (Some(u), Some(g)) => crate::sys::file::fchown(fd, u, g),
            _ => Ok(()),
        }
    }

    /// Opens directory `rel`, creating it and any missing parents like the base's
    /// directories of the same path (mode and owner), as overlayfs's copy-up would.
    /// `Ok(None)` when the sprite has put something other than a directory in the way.
    /// Directories once resolved are remembered: a hundred hidden entries share most of
    /// their parents.
    fn ensure_dir(&self, rel: &str) -> io::Result<Option<Rc<OwnedFd>>> {
        let rel = rel.trim_matches('/');
        if let Some(hit) = self.dirs.borrow().get(rel) {
            return Ok(hit.clone());
        }
        let found = if rel.is_empty() {
            Some(Rc::new(self.root.try_clone_to_owned()?))
        } else {
            let (parent, name) = split(rel);
            match self.ensure_dir(parent)? {
                Some(p) => self.child_dir(&p, rel, name)?,
                None => None,
            }
        };
        let mut dirs = self.dirs.borrow_mut();
        // Every cached directory is an open descriptor: a base with thousands of hidden
        // entries in as many directories would exhaust the stub's usual limit of 1024
        // (EMFILE). Past the cap the cache starts over; what callers hold stays open.
        if dirs.len() >= MAX_CACHED_DIRS {
            dirs.clear();
        }
        dirs.insert(rel.to_owned(), found.clone());
        Ok(found)
    }

    /// Directory `name` (at `rel`) in `parent`, made like the base's if missing.
    fn child_dir(
        &self,
        parent: &OwnedFd,
        rel: &str,
        name: &str,
    ) -> io::Result<Option<Rc<OwnedFd>>> {
        match open_dir_at(parent.as_fd(), name) {
            Ok(fd) => return Ok(Some(Rc::new(fd))),
            Err(e) if in_the_way(&e) => return Ok(None),
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            Err(_) => {}
        }
        match dirfd::mkdir_at(parent.as_fd(), name, 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let fd = match open_dir_at(parent.as_fd(), name) {
            Ok(fd) => fd,
            Err(e) if in_the_way(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (mode, uid, gid) = self.base_attrs(rel);
        self.chown(fd.as_fd(), uid, gid)?;
        dirfd::chmod_fd(fd.as_fd(), mode)?;
        Ok(Some(Rc::new(fd)))
    }

    /// Makes `rel` an opaque directory (the base's contents below it invisible): created
    /// with `mode` (or the base's) if absent; an existing directory is marked opaque too,
    /// keeping the sprite's own files in it.
    fn opaque_dir(&self, rel: &str, mode: Option<u32>) -> io::Result<()> {
        let (parent, name) = split(rel);
        let Some(parent_fd) = self.ensure_dir(parent)? else {
            return Ok(());
        };
        let fresh = match dirfd::stat_entry(parent_fd.as_fd(), name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => false,
            Ok(_) => return Ok(()), // the sprite's own file, link or whiteout hides it
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                dirfd::mkdir_at(parent_fd.as_fd(), name, 0o700)?;
                true
            }
            Err(e) => return Err(e),
        };
        let fd = open_dir_at(parent_fd.as_fd(), name)?;
        if fresh {
            let (base_mode, uid, gid) = self.base_attrs(rel);
            let mode = mode.unwrap_or(base_mode);
            self.chown(fd.as_fd(), uid, gid)?;
            dirfd::chmod_fd(fd.as_fd(), mode)?;
        }
        crate::sys::dirfd::set_xattr_fd(fd.as_fd(), self.plan.opaque_xattr, b"y")
    }

    /// Hides one base entry: a whiteout for a file, an empty opaque directory for a
    /// directory; nothing if the sprite already has its own entry there.
    fn hide(&self, h: &Hidden) -> io::Result<()> {
        if h.dir {
            return self.opaque_dir(&h.path, None);
        }
        let (parent, name) = split(&h.path);
        let Some(parent_fd) = self.ensure_dir(parent)? else {
            return Ok(());
        };
        match dirfd::stat_entry(parent_fd.as_fd(), name) {
            Ok(_) => Ok(()), // the sprite's own file, or a whiteout already
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                dirfd::whiteout_at(parent_fd.as_fd(), name)
            }
            Err(e) => Err(e),
        }
    }

    /// A directory owned by the sprite user (created if absent; an existing one is left
    /// as the sprite made it).
    fn owned_dir(&self, rel: &str, ids: Ids, mode: u32) -> io::Result<()> {
        let (parent, name) = split(rel);
        let Some(parent_fd) = self.ensure_dir(parent)? else {
            return Ok(());
        };
        match dirfd::mkdir_at(parent_fd.as_fd(), name, 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
            Err(e) => return Err(e),
        }
        let fd = open_dir_at(parent_fd.as_fd(), name)?;
        self.chown(fd.as_fd(), ids.uid, ids.gid)?;
        dirfd::chmod_fd(fd.as_fd(), mode)
    }

    /// The upper layer's `dir/name` as text, if it is there (a regular file).
    fn read_upper(&self, dir: &str, name: &str) -> Option<String> {
        let fd =
            dirfd::open_beneath(self.root, &format!("{dir}/{name}"), libc::O_RDONLY, 0).ok()?;
        let st = dirfd::stat_fd(fd.as_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let mut s = String::new();
        File::from(fd).take(16 << 20).read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Whether the upper layer has any entry at `dir/name`.
    fn exists(&self, dir: &str, name: &str) -> io::Result<bool> {
        let Ok(parent) = self.open_dir(dir) else {
            return Ok(false);
        };
        match dirfd::stat_entry(parent.as_fd(), name) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `dir/name` atomically (temp file + rename in the same directory), owned by
    /// the sprite's root with `mode`. Readers inside never see half a file; [`prepare`]
    /// flushes the filesystem once at its end.
    fn write_file(
        &self,
        dir: &str,
        name: &str,
        content: &[u8],
        mode: u32,
        gid: u32,
    ) -> io::Result<()> {
        let Some(dir_fd) = self.ensure_dir(dir)? else {
            return Ok(());
        };
        let (tmp, fd) = new_temp(dir_fd.as_fd(), name)?;
        self.chown(fd.as_fd(), 0, gid)?;
        dirfd::chmod_fd(fd.as_fd(), mode)?;
        let mut f = File::from(fd);
        f.write_all(content)?;
        dirfd::rename_at(dir_fd.as_fd(), &tmp, name)
    }

    fn write_if_absent(&self, dir: &str, name: &str, content: &[u8], mode: u32) -> io::Result<()> {
        if self.exists(dir, name)? {
            return Ok(());
        }
        self.write_file(dir, name, content, mode, 0)
    }

    /// Our resolver file, unless the sprite wrote its own (one without our marker).
    fn write_resolv_conf(&self, content: &str) -> io::Result<()> {
        if self.exists("etc", "resolv.conf")? {
            let ours = self
                .read_upper("etc", "resolv.conf")
                .is_some_and(|s| s.starts_with(super::network::RESOLV_MARKER));
            if !ours || self.read_upper("etc", "resolv.conf").as_deref() == Some(content) {
                return Ok(());
            }
        }
        self.write_file("etc", "resolv.conf", content.as_bytes(), 0o644, 0)
    }

    /// `sprite` in `/etc/passwd` and `/etc/group` (the upper layer's copy, else the
    /// base's, plus the user); returns its ids.
    fn user(&self) -> io::Result<Ids> {
        let base_etc = self.plan.base.join("etc");
        let read = |name: &str| -> String {
            self.read_upper("etc", name)
                .or_else(|| std::fs::read_to_string(base_etc.join(name)).ok())
                .unwrap_or_default()
        };
        let passwd = read("passwd");
        let group = read("group");
        let ids = match find_user(&passwd) {
            Some(ids) => ids,
            None => {
                // The platform's `sprite` is 1000:1000. A base user or group that has those
                // ids is the host's, not the sprite's: its entry is left out of the
                // sprite's copies (its home is masked anyway).
                let ids = Ids {
                    uid: SPRITE_ID,
                    gid: SPRITE_ID,
                };
                let shell = if self.plan.base.join("bin/bash").exists() {
                    "/bin/bash"
                } else {
                    "/bin/sh"
                };
                let line = format!("{USER}:x:{SPRITE_ID}:{SPRITE_ID}:Sprite:{HOME}:{shell}\n");
                let kept = without_id(&passwd, SPRITE_ID);
                self.write_file("etc", "passwd", appended(&kept, &line).as_bytes(), 0o644, 0)?;
                ids
            }
        };
        if find_group(&group).is_none() {
            let line = format!("{USER}:x:{}:\n", ids.gid);
            let kept = without_id(&group, ids.gid);
            self.write_file("etc", "group", appended(&kept, &line).as_bytes(), 0o644, 0)?;
        }
        Ok(ids)
    }

    /// Passwordless sudo for `sprite`, as on the platform, and the files sudo reads that
    /// the base's would otherwise provide but the sprite may not see (they are readable by
    /// root only on the host): its own `/etc/sudoers`, and `/etc/shadow`/`/etc/gshadow`
    /// with every account locked (no passwords: nothing to steal, nothing to log in with).
    fn sudo(&self, _ids: Ids) -> io::Result<()> {
        let sudoers = format!(
            "# written by sprites-local: passwordless sudo for {USER}, as on the platform\n\
             Defaults\tenv_reset\n\
             Defaults\tsecure_path=\"{}\"\n\
             root\tALL=(ALL:ALL) ALL\n\
             {USER}\tALL=(ALL:ALL) NOPASSWD: ALL\n",
            super::agent::DEFAULT_PATH
        );
        self.write_if_absent("etc", "sudoers", sudoers.as_bytes(), 0o440)?;
        let base_group =
            std::fs::read_to_string(self.plan.base.join("etc/group")).unwrap_or_default();
        let shadow_gid = find_group_named(&base_group, "shadow").unwrap_or(0);
        let users = |file: &str| -> Vec<String> {
            self.read_upper("etc", file)
                .or_else(|| std::fs::read_to_string(self.plan.base.join("etc").join(file)).ok())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(':').next())
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if !self.exists("etc", "shadow")? {
            let mut s = String::new();
            for u in users("passwd") {
                s.push_str(&format!("{u}:!::0:99999:7:::\n"));
            }
            self.write_file("etc", "shadow", s.as_bytes(), 0o640, shadow_gid)?;
        }
        self.install_sudo()?;
        if !self.exists("etc", "gshadow")? {
            let mut s = String::new();
            for g in users("group") {
                s.push_str(&format!("{g}:!::\n"));
            }
            self.write_file("etc", "gshadow", s.as_bytes(), 0o640, shadow_gid)?;
        }
        Ok(())
    }
}

impl Upper<'_> {
    /// Where the base has no `sudo`: ours (see [`super::sudo`]), setuid to the sprite's
    /// root, and a `sudo` link to it. Refreshed when the server's binary changed size.
    fn install_sudo(&self) -> io::Result<()> {
        let base = self.plan.base;
        if base.join("usr/bin/sudo").exists() || base.join("bin/sudo").exists() {
            return Ok(());
        }
        let mut exe = File::open("/proc/self/exe")?;
        let size = exe.metadata()?.len();
        let (dir, name) = split(super::sudo::PATH.trim_start_matches('/'));
        let Some(dir_fd) = self.ensure_dir(dir)? else {
            return Ok(());
        };
        let current = dirfd::stat_entry(dir_fd.as_fd(), name).ok();
        if current.is_none_or(|st| st.st_size as u64 != size) {
            let (tmp, fd) = new_temp(dir_fd.as_fd(), name)?;
            let mut out = File::from(fd);
            io::copy(&mut exe, &mut out)?;
            self.chown(out.as_fd(), 0, 0)?;
            // After the chown, which clears set-id bits.
            dirfd::chmod_fd(out.as_fd(), 0o4755)?;
            dirfd::rename_at(dir_fd.as_fd(), &tmp, name)?;
        }
        let (link_dir, link) = split(super::sudo::LINK);
        if let Some(fd) = self.ensure_dir(link_dir)? {
            match dirfd::symlink_at(super::sudo::PATH, fd.as_fd(), link) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Moves the ownership of every entry of the upper layer at `upper` from one id mapping to
/// another: ids in `[from, from + RANGE)` become `to + (id - from)`; others are left
/// alone, so the walk can be repeated after an interruption. Symlinks are not followed.
pub fn shift_owners(upper: &Path, from: u32, to: u32) -> io::Result<()> {
    let range = super::identity::RANGE;
    let map = |id: u32| (from..from + range).contains(&id).then(|| to + (id - from));
    let root = File::open(upper)?;
    let mut stack: Vec<OwnedFd> = vec![root.into()];
    while let Some(dir) = stack.pop() {
        for name in dirfd::list_dir(dir.as_fd())? {
            // A name that is not UTF-8 keeps its owner (it then shows as `nobody` inside):
            // rare, and harmless.
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            let st = dirfd::stat_entry(dir.as_fd(), &name)?;
            let (uid, gid) = (map(st.st_uid), map(st.st_gid));
            if uid.is_some() || gid.is_some() {
                dirfd::chown_at(
                    dir.as_fd(),
                    &name,
                    uid.unwrap_or(st.st_uid),
                    gid.unwrap_or(st.st_gid),
                )?;
            }
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                stack.push(open_dir_at(dir.as_fd(), &name)?);
            }
        }
    }
    Ok(())
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

/// Group `name`'s gid in a group file (`sprite` by default).
fn find_group_named(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

fn find_group(group: &str) -> Option<u32> {
    find_group_named(group, USER)
}

/// A passwd or group file without the entries whose id (field 3) is `id`.
fn without_id(file: &str, id: u32) -> String {
    let id = id.to_string();
    file.lines()
        .filter(|l| l.split(':').nth(2) != Some(id.as_str()))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn appended(file: &str, line: &str) -> String {
    let mut s = file.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(line);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_user_and_drops_the_hosts_holder_of_its_id() {
        let passwd = "root:x:0:0::/root:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n";
        assert_eq!(without_id(passwd, 1000), "root:x:0:0::/root:/bin/sh\n");
        assert_eq!(without_id("a:x:1:1:\nb", 7), "a:x:1:1:\nb\n");
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
        assert_eq!(find_group_named("shadow:x:42:\n", "shadow"), Some(42));
        assert_eq!(appended("a", "b\n"), "a\nb\n");
    }
}
