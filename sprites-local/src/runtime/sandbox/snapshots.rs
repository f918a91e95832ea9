//! Checkpoints inside a sandboxed sprite: btrfs snapshots of its writable layer, made by
//! the agent (which holds the disk image open) while the sprite's processes run.
//!
//! Layout of a btrfs image (see [`super::disk`]): the subvolume `live/` holds the upper
//! layer (`live/root`) and overlayfs's work directory; `store/<id>` is checkpoint `id`, a
//! read-only snapshot of `live/`. A snapshot is one `BTRFS_IOC_SNAP_CREATE_V2`: atomic
//! (every file as it was at one instant: a file in the middle of a write is exactly what a
//! crash at that instant would leave, and a file written whole then renamed into place is
//! either absent or complete) and instant (extents are shared, not copied).
//!
//! - The stub ([`prepare`]) opens the image's root for the agent, makes the mount point
//!   `/.sprite/checkpoints` in the upper layer, and a detached copy of the image's mount,
//!   through which the agent can still reach checkpoints once it has pivoted into the
//!   sprite's root (where the image's own mount is no longer reachable).
//! - The agent ([`Snapshots`]) mounts a small tmpfs of its own at `/.sprite/checkpoints`
//!   and in it one read-only (`nosuid`, `nodev`) bind mount per visible checkpoint (the
//!   [`VISIBLE`] newest), kept current as checkpoints are taken and deleted; then it takes
//!   and deletes snapshots on the server's request.
//!
//! Restores happen before the overlay is mounted ([`super::disk::apply_restore`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::disk::{LIVE, LIVE_UPPER, STORE};
use crate::sys::{self, btrfs, dirfd};

/// Where the sprite sees its newest checkpoints.
pub const VISIBLE_AT: &str = "/.sprite/checkpoints";
/// How many of the newest checkpoints the sprite sees there.
pub const VISIBLE: usize = 5;

/// What the stub hands the agent.
pub struct Prepared {
    /// The disk image's root directory.
    pub disk: OwnedFd,
    /// A detached copy of the image's mount (`None` if it could not be made: no visible
    /// checkpoints then).
    pub tree: Option<OwnedFd>,
}

/// A checkpoint operation, server → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SnapshotOp {
    /// Snapshot the writable layer as `id`.
    Create {
        /// The new checkpoint's id.
        id: String,
    },
    /// Delete checkpoint `id`.
    Delete {
        /// Its id.
        id: String,
    },
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// `None` on success, else why it failed.
    pub error: Option<String>,
    /// The failure's errno, if it was a system call's.
    pub errno: Option<i32>,
}

/// In the stub, on a root server, with the image mounted at `disk` and before the overlay:
/// `None` when the image is not btrfs (no checkpoints). `sprite_root` is the host uid of
/// the sprite's root (the mount point's owner).
pub fn prepare(disk: &Path, upper: &Path, sprite_root: u32) -> io::Result<Option<Prepared>> {
    let root = File::open(disk)?;
    if !btrfs::is_btrfs(root.as_fd())? {
        return Ok(None);
    }
    // The mount point, made without following anything the sprite put in the way (then:
    // no visible checkpoints, nothing else).
    let tree = mount_point(upper, sprite_root)
        .and_then(|()| sys::mount::open_tree_clone(disk))
        .ok();
    Ok(Some(Prepared {
        disk: root.into(),
        tree,
    }))
}

fn mount_point(upper: &Path, owner: u32) -> io::Result<()> {
    let mut dir: OwnedFd = File::open(upper)?.into();
    for name in [".sprite", "checkpoints"] {
        match dirfd::mkdir_at(dir.as_fd(), name, 0o755) {
            Ok(()) => dirfd::chown_at(dir.as_fd(), name, owner, owner)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = dirfd::open_beneath(dir.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    }
    Ok(())
}

/// The agent's side: the image, and the views it shows the sprite.
pub struct Snapshots {
    disk: OwnedFd,
    tree: Option<OwnedFd>,
    /// The tmpfs at [`VISIBLE_AT`], once mounted.
    views: Option<OwnedFd>,
    /// Checkpoints mounted there.
    shown: BTreeSet<String>,
}

impl Snapshots {
    /// In the agent, after `pivot_root` (paths resolve inside the sprite now, so nothing
    /// planted there can send a mount to the host): mounts the views. Failing to show them
    /// is logged, never fatal.
    pub fn start(p: Prepared) -> Snapshots {
        let mut s = Snapshots {
            disk: p.disk,
            tree: p.tree,
            views: None,
            shown: BTreeSet::new(),
        };
        if s.tree.is_some() {
            match mount_views() {
                Ok(fd) => s.views = Some(fd),
                Err(e) => eprintln!("sprites-local sandbox agent: {VISIBLE_AT}: {e}"),
            }
        }
        s.refresh();
        s
    }

    /// A copy of the descriptor of the image's detached mount, for the server to hold.
    pub fn held_mount(&self) -> Option<OwnedFd> {
        self.tree.as_ref().and_then(|t| t.try_clone().ok())
    }

    /// Runs `op`.
    pub fn run(&mut self, op: &SnapshotOp) -> SnapshotReply {
        let r = match op {
            SnapshotOp::Create { id } => self.create(id),
            SnapshotOp::Delete { id } => self.delete(id),
        };
        match r {
            Ok(()) => SnapshotReply {
                error: None,
                errno: None,
            },
            Err(e) => SnapshotReply {
                errno: e.raw_os_error(),
                error: Some(e.to_string()),
            },
        }
    }

    fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        dirfd::open_beneath(
            self.disk.as_fd(),
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    }

    fn create(&mut self, id: &str) -> io::Result<()> {
        let live = self.open_dir(LIVE)?;
        let store = self.open_dir(STORE)?;
        btrfs::snapshot(live.as_fd(), store.as_fd(), id, true)?;
        self.refresh();
        Ok(())
    }

    fn delete(&mut self, id: &str) -> io::Result<()> {
        let store = self.open_dir(STORE)?;
        dirfd::stat_entry(store.as_fd(), id)?;
        // Its view first: a subvolume with a mount into it would stay pinned.
        self.hide(id);
        let r = btrfs::subvol_destroy(store.as_fd(), id);
        self.refresh();
        r
    }

    /// The ids in the store, oldest first (`v<N>`, by N).
    fn stored(&self) -> io::Result<Vec<String>> {
        let store = self.open_dir(STORE)?;
        let mut ids: Vec<(u64, String)> = dirfd::list_dir(store.as_fd())?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter_map(|n| Some((n.strip_prefix('v')?.parse().ok()?, n)))
            .collect();
        ids.sort();
        Ok(ids.into_iter().map(|(_, n)| n).collect())
    }

    /// Shows the [`VISIBLE`] newest checkpoints, and only them.
    fn refresh(&mut self) {
        if self.views.is_none() {
            return;
        }
        let want: BTreeSet<String> = match self.stored() {
            Ok(ids) => ids.into_iter().rev().take(VISIBLE).collect(),
            Err(e) => {
                eprintln!("sprites-local sandbox agent: listing checkpoints: {e}");
                return;
            }
        };
        let gone: Vec<String> = self.shown.difference(&want).cloned().collect();
        for id in gone {
            self.hide(&id);
        }
        for id in want.difference(&self.shown.clone()) {
            if let Err(e) = self.show(id) {
                eprintln!("sprites-local sandbox agent: showing checkpoint {id}: {e}");
            }
        }
    }

    fn show(&mut self, id: &str) -> io::Result<()> {
        let (Some(views), Some(tree)) = (&self.views, &self.tree) else {
            return Ok(());
        };
        let view = sys::mount::open_tree_clone_at(
            tree.as_fd(),
            &format!(
                "{STORE}/{}/{LIVE_UPPER}",
                dirfd::component(id)?.to_string_lossy()
            ),
        )?;
        sys::mount::set_readonly(view.as_fd())?;
        match dirfd::mkdir_at(views.as_fd(), id, 0o755) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        sys::mount::move_mount_at(view.as_fd(), views.as_fd(), id)?;
        self.shown.insert(id.to_owned());
        Ok(())
    }

    fn hide(&mut self, id: &str) {
        let Some(views) = &self.views else {
            return;
        };
        if self.shown.remove(id) {
            let at = format!("/proc/self/fd/{}/{id}", views.as_raw_fd());
            let _ = sys::mount::umount2(Path::new(&at), libc::MNT_DETACH);
        }
        let _ = dirfd::unlink_at(views.as_fd(), id, libc::AT_REMOVEDIR);
    }
}

/// Mounts the views' tmpfs (owned by the host's root, whom the sprite cannot act as: the
/// sprite reads it and cannot change it) and opens it.
fn mount_views() -> io::Result<OwnedFd> {
    sys::mount::mount(
        Some("tmpfs"),
        Path::new(VISIBLE_AT),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=64"),
    )?;
    Ok(File::open(VISIBLE_AT)?.into())
}
