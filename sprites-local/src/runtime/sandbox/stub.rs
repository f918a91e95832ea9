//! The stub: the helper process the server starts for a sprite. It builds the sprite — its
//! disk, upper layer, identity, root filesystem and network — then forks the agent
//! ([`super::agent`], PID 1 of the sprite) and only waits for it. Killing the stub kills the
//! sprite: the agent asked for `PR_SET_PDEATHSIG(SIGKILL)`, and when a PID namespace's init
//! dies the kernel kills every process in it.
//!
//! Both are single-threaded (see [`super::entry`]), which is what lets them fork and change
//! namespaces. The order of the steps matters and is explained where it happens; in short,
//! on a root server everything that needs the host's privileges (the disk's loop device,
//! the id-mapped base, the overlay with its `trusted.*` metadata, the veth pair) is done
//! first, in namespaces that belong to the host, so that nothing the sprite later does as
//! its own root can undo it.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::ctx;
use super::identity::{self, Identity};
use super::ipc::{self, Event, Privileged, StubConfig};
use super::upper::{self, Ids, Owners, Plan};
use super::{agent, disk, network, rootfs, snapshots};
use crate::sys;
use crate::sys::process::{self as proc, Fork};

/// What the stub built, handed to the agent.
pub struct Built {
    /// The sprite user's ids inside.
    pub ids: Ids,
    /// The sprite's user namespace (root server), which every process of the sprite
    /// enters; `None` when the stub itself already runs in it (unprivileged server).
    pub userns: Option<OwnedFd>,
    /// The merged root, mounted.
    pub root: PathBuf,
    /// The sprite's address, with egress.
    pub address: Option<std::net::Ipv4Addr>,
    /// The upper layer's owners were moved to the sprite's range.
    pub shifted: bool,
    /// Why the base is not id-mapped, if it is not.
    pub unmapped_base: Option<String>,
    /// The btrfs disk image, for checkpoints (root server with a btrfs image only).
    pub snapshots: Option<snapshots::Prepared>,
}

/// The stub's main: reads its configuration from the control socket `ctl`, builds the
/// sprite and runs it; returns the process exit code.
pub fn main(ctl: RawFd) -> i32 {
    let (cfg, held) = match ipc::recv::<StubConfig>(ctl) {
        Ok(Some((cfg, fds))) => (cfg, fds.into_iter().next()),
        Ok(None) => return 2, // the server went away before telling us anything
        Err(e) => {
            eprintln!("sprites-local sandbox: bad helper configuration: {e}");
            return 2;
        }
    };
    match run(&cfg, ctl, held) {
        Ok(code) => code,
        Err(e) => failed(ctl, "sprites-local sandbox", &e),
    }
}

/// Tells the server (and the sprite's log) why setting up failed; the exit code.
fn failed(ctl: RawFd, who: &str, e: &io::Error) -> i32 {
    let _ = ipc::send(
        ctl,
        &Event::Failed {
            message: e.to_string(),
        },
        &[],
    );
    eprintln!("{who}: {e}");
    1
}

/// `held`: the sprite's disk as its previous start left it mounted, if the server kept it.
fn run(cfg: &StubConfig, ctl: RawFd, held: Option<OwnedFd>) -> io::Result<i32> {
    // Best effort: without them the sprite runs unlimited (the startup line says whether
    // limits work at all).
    let mut cgroups = join_cgroups(&cfg.cgroups);
    let result = build_and_wait(cfg, ctl, held, &mut cgroups);
    // Whether the sprite ran and ended or could not be built: its cgroups go.
    for cgroup in cgroups {
        cgroup.leave();
    }
    result
}

/// Builds the sprite, forks its agent and waits for it; the agent's exit code. The agent
/// gets no copy of `cgroups`' handles.
fn build_and_wait(
    cfg: &StubConfig,
    ctl: RawFd,
    held: Option<OwnedFd>,
    cgroups: &mut Vec<Joined>,
) -> io::Result<i32> {
    let built = match &cfg.privileged {
        Some(p) => privileged(cfg, p, held)?,
        None => unprivileged(cfg)?,
    };
    // We are in the sprite's own UTS namespace (made by either path).
    let _ = sys::mount::sethostname(cfg.hostname.as_bytes());
    let child = match proc::fork()? {
        Fork::Parent(pid) => pid,
        Fork::Child(_) => {
            // The host's cgroup directories are none of the agent's business.
            drop(std::mem::take(cgroups));
            let _ = proc::set_parent_death_signal(libc::SIGKILL);
            let code = match agent::run(cfg, built, ctl) {
                Ok(()) => 0,
                Err(e) => failed(ctl, "sprites-local sandbox agent", &e),
            };
            // Ends the agent without running atexit handlers of the parent's image.
            proc::exit_now(code)
        }
    };
    // The stub keeps no end of the control socket: its EOF must mean "the agent is gone".
    // Our copy of the fd the server passed is known only by number: nothing owns it here.
    sys::fd::close_raw(ctl);
    Ok(wait_status_code(wait_pid(child)))
}

/// A cgroup the stub joined, by its parent directory, opened before the stub's namespaces
/// hid the host's cgroup mounts.
struct Joined {
    parent: OwnedFd,
    name: String,
}

impl Joined {
    /// The sprite has ended (its init is reaped, so every process of it is gone) or was
    /// never built: moves the stub to the parent and removes the emptied cgroup. The server
    /// does the same when it stops a sprite; this is what cleans up after a server that was
    /// killed, or a start that failed.
    fn leave(self) {
        if let Ok(procs) =
            sys::dirfd::open_beneath(self.parent.as_fd(), "cgroup.procs", libc::O_WRONLY, 0)
        {
            let _ = sys::fd::write(procs.as_fd(), std::process::id().to_string().as_bytes());
        }
        let _ = sys::dirfd::unlink_at(self.parent.as_fd(), &self.name, libc::AT_REMOVEDIR);
    }
}

/// Moves the stub into `cgroups` (so every process of the sprite is inside) and keeps a
/// handle on each one it joined.
fn join_cgroups(cgroups: &[PathBuf]) -> Vec<Joined> {
    cgroups
        .iter()
        .filter_map(|cg| {
            fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).ok()?;
            let parent = fs::File::open(cg.parent()?).ok()?;
            Some(Joined {
                parent: parent.into(),
                name: cg.file_name()?.to_str()?.to_owned(),
            })
        })
        .collect()
}

/// A root server's sprite. Steps, in order:
///
/// 1. a private mount namespace (owned by the host's user namespace, so the sprite's root
///    can never unmount what is mounted in it);
/// 2. the disk image (its quota) mounted there;
/// 3. ownership of an older sprite's files moved to its id range, if needed;
/// 4. the upper layer prepared (user, masks, hidden base entries, sudo);
/// 5. the sprite's user namespace (ids 0–65535 → its host range);
/// 6. the base, id-mapped through it, so the sprite's root owns what the host's root owns
///    there (what others cannot read of it is hidden in step 4);
/// 7. the overlay and `/dev`;
/// 8. the network namespace (the host's user namespace owns it too: the sprite cannot
///    re-address itself) and its veth pair;
/// 9. PID, UTS and IPC namespaces. The agent's children enter the user namespace of step
///    5 just before they exec; the agent itself stays host root, out of the sprite's reach.
fn privileged(cfg: &StubConfig, p: &Privileged, held: Option<OwnedFd>) -> io::Result<Built> {
    ctx(sys::mount::unshare(libc::CLONE_NEWNS), || {
        "creating the mount namespace".into()
    })?;
    make_root_private()?;
    let layers = disk::mount(&cfg.sprite_dir, held)?;
    let id = p.identity;
    if let Some(from) = id.shift_from {
        ctx(upper::shift_owners(&layers.upper, from, id.base), || {
            "moving the sprite's files to its id range".into()
        })?;
    }
    let plan = Plan {
        base: &cfg.base,
        owners: Owners::Shifted { base: id.base },
        opaque_xattr: "trusted.overlay.opaque",
        // A layer of its own hides them (below).
        hidden: &[],
        masks: &cfg.masks,
        resolv_conf: p.resolv_conf.as_deref().filter(|_| p.egress),
        hostname: &cfg.hostname,
        sudo: true,
    };
    let ids = ctx(upper::prepare(&layers.upper, &plan), || {
        "preparing the sprite's upper layer".into()
    })?;
    let snaps = if disk::has_image(&cfg.sprite_dir) {
        ctx(
            snapshots::prepare(&cfg.sprite_dir.join(disk::MOUNT), &layers.upper, id.base),
            || "preparing checkpoints".into(),
        )?
    } else {
        None
    };
    let userns = ctx(sprite_userns(id), || {
        "creating the sprite's user namespace".into()
    })?;
    let mapped = cfg.sprite_dir.join("lower");
    let (lower, unmapped_base) = match idmapped(&cfg.base, &userns, &mapped) {
        Ok(()) => (mapped, None),
        // A base on a filesystem without id-mapped mounts: it is used as it is, and root
        // in the sprite cannot change the host root's files there (it can still add its
        // own).
        Err(e) => (cfg.base.clone(), Some(format!("id-mapping the base: {e}"))),
    };
    // The base's private entries are hidden by a layer right over it: whiteouts and empty
    // opaque directories in a tmpfs of the sprite's own (tmpfs, not the sprite's disk:
    // making ~100 entries costs microseconds there, tens of milliseconds on some disks;
    // not the host's disk either: overlayfs refuses a layer inside another layer's tree).
    let mask = if p.hidden.is_empty() {
        None
    } else {
        let target = cfg.sprite_dir.join("mask");
        fs::create_dir_all(&target)?;
        ctx(
            sys::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("mode=0755,size=1m"),
            ),
            || "mounting the mask layer".into(),
        )?;
        // Owners as the base shows them: through the sprite's range where it is id-mapped.
        let owners = match unmapped_base {
            None => Owners::Shifted { base: id.base },
            Some(_) => Owners::Shifted { base: 0 },
        };
        ctx(
            upper::write_masks(&target, &cfg.base, owners, &p.hidden),
            || "hiding the base's private entries".into(),
        )?;
        Some(target)
    };
    let lowers: Vec<&Path> = mask
        .iter()
        .map(PathBuf::as_path)
        .chain([lower.as_path()])
        .collect();
    let root = cfg.sprite_dir.join("root");
    rootfs::overlay(&lowers, &layers.upper, &layers.work, &root, false)?;
    // The mount holds the loop device now.
    drop(layers.device);
    rootfs::dev(&root)?;
    let net = ctx(network::enter(p.egress), || "setting up the network".into())?;
    ctx(
        sys::mount::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC),
        || "creating namespaces".into(),
    )?;
    Ok(Built {
        ids,
        userns: Some(userns),
        root,
        address: net.address,
        shifted: id.shift_from.is_some(),
        unmapped_base,
        snapshots: snaps,
    })
}

/// An unprivileged server's sprite: one user namespace, made by the stub itself, mapping
/// the sprite user to the server's own uid (the only id it may map without help), with
/// every other namespace inside it; the overlay keeps its metadata in `user.*` xattrs.
fn unprivileged(cfg: &StubConfig) -> io::Result<Built> {
    let layers = disk::mount(&cfg.sprite_dir, None)?;
    let plan = Plan {
        base: &cfg.base,
        owners: Owners::ServerUser,
        opaque_xattr: "user.overlay.opaque",
        hidden: &[],
        masks: &cfg.masks,
        resolv_conf: None,
        hostname: &cfg.hostname,
        sudo: false,
    };
    let ids = ctx(upper::prepare(&layers.upper, &plan), || {
        "preparing the sprite's upper layer".into()
    })?;
    let (host_uid, host_gid) = (proc::getuid(), proc::getgid());
    ctx(
        sys::mount::unshare(
            libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWNET,
        ),
        || "creating namespaces".into(),
    )?;
    // One id each way: the sprite user *is* the server's user, so nothing inside can act
    // as any other host uid.
    fs::write("/proc/self/setgroups", "deny")?;
    ctx(
        fs::write("/proc/self/uid_map", format!("{} {host_uid} 1", ids.uid)),
        || "writing uid_map".into(),
    )?;
    ctx(
        fs::write("/proc/self/gid_map", format!("{} {host_gid} 1", ids.gid)),
        || "writing gid_map".into(),
    )?;
    make_root_private()?;
    let root = cfg.sprite_dir.join("root");
    rootfs::overlay(&[&cfg.base], &layers.upper, &layers.work, &root, true)?;
    rootfs::dev(&root)?;
    ctx(network::loopback_up(), || "bringing loopback up".into())?;
    Ok(Built {
        ids,
        userns: None,
        root,
        address: None,
        shifted: false,
        unmapped_base: None,
        snapshots: None,
    })
}

/// Makes every mount of the (new) mount namespace private: nothing mounted here may
/// propagate back to the host's namespace.
fn make_root_private() -> io::Result<()> {
    ctx(
        sys::mount::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ),
        || "making / private".into(),
    )
}

/// The sprite's user namespace: ids 0–65535 inside are `base`–`base + 65535` on the host.
///
/// A process cannot make a user namespace and keep its privileges outside it, and only a
/// privileged process in the parent namespace may map a range of ids; so a short-lived
/// child makes the namespace and we, still host root, write its maps and keep a handle.
fn sprite_userns(id: Identity) -> io::Result<OwnedFd> {
    // A user namespace records its creator's process limit as the ceiling for everything
    // inside; a root server's own limit must not cap the sum of its sprites' processes
    // (each sprite user has its own cap, set on every exec).
    let _ = proc::set_rlimit(libc::RLIMIT_NPROC, libc::RLIM_INFINITY, libc::RLIM_INFINITY);
    let (ready_r, ready_w) = sys::fd::pipe()?;
    let (go_r, go_w) = sys::fd::pipe()?;
    let pid = match proc::fork()? {
        Fork::Child(_) => {
            drop((ready_r, go_w));
            let made = sys::mount::unshare(libc::CLONE_NEWUSER).is_ok();
            let _ = sys::fd::write(ready_w.as_fd(), &[u8::from(made)]);
            // Stay until the parent has its handle (it closes `go_w`: EOF).
            let mut b = [0u8; 1];
            let _ = sys::fd::read(go_r.as_fd(), &mut b);
            proc::exit_now(0)
        }
        Fork::Parent(pid) => pid,
    };
    drop((ready_w, go_r));
    let mut made = [0u8; 1];
    let got = sys::fd::read(ready_r.as_fd(), &mut made);
    let result = (|| {
        if got.ok() != Some(1) || made[0] != 1 {
            return Err(io::Error::other(
                "the child could not create a user namespace",
            ));
        }
        let map = format!("0 {} {}\n", id.base, identity::RANGE);
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok(OwnedFd::from(fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    drop(go_w);
    wait_pid(pid);
    result
}

/// Attaches at `target` a copy of the mount at `source` (without its submounts: the
/// overlay's lower layer does not cross mounts either), id-mapped through `userns`, so a
/// file the host's root owns there belongs to the sprite's root.
fn idmapped(source: &Path, userns: &OwnedFd, target: &Path) -> io::Result<()> {
    fs::create_dir_all(target)?;
    let tree = sys::mount::open_tree_clone(source)?;
    sys::mount::set_idmap(tree.as_fd(), userns.as_fd())?;
    sys::mount::move_mount(tree.as_fd(), target)
}

/// Waits for child `pid`; its raw wait status (0 if it cannot be waited for).
pub fn wait_pid(pid: libc::pid_t) -> i32 {
    loop {
        match proc::waitpid(pid, 0) {
            Ok((r, st)) if r == pid => return st,
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return 0,
            _ => {}
        }
    }
}

fn wait_status_code(st: i32) -> i32 {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    }
}
