//! Checkpoints inside a sandboxed sprite: btrfs snapshots of its upper layer, made by the
//! agent (which holds the disk image's root open) while the sprite's processes run.
//!
//! - The stub ([`prepare`]) opens the image's root for the agent, makes the mount point
//!   `/.sprite/checkpoints` in the upper layer (owned by the sprite's root) and a detached,
//!   read-only (`nosuid`, `nodev`) bind mount of the image's `checkpoints/` directory.
//! - The agent attaches that mount at `/.sprite/checkpoints` once it has pivoted
//!   ([`attach`]): the sprite sees its five newest checkpoints there, read-only.
//! - [`run`] takes, hides and deletes snapshots on the server's request. Every checkpoint
//!   is a read-only snapshot in the image's `older/` directory (the store); the newest five
//!   also have a read-only snapshot of that snapshot in `checkpoints/` (the view). A snapshot is one
//!   `BTRFS_IOC_SNAP_CREATE_V2`: atomic (every file as it was at one instant — a file in
//!   the middle of a write is exactly what a crash at that instant would leave, and a file
//!   written whole then renamed into place is either absent or complete) and instant
//!   (extents are shared, not copied).
//!
//! Restores happen before the overlay is mounted ([`super::disk::apply_restore`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::disk::{CHECKPOINTS, OLDER, UPPER};
use crate::sys::{self, btrfs, dirfd};

/// Where the sprite sees its newest checkpoints.
pub const VISIBLE_AT: &str = "/.sprite/checkpoints";

/// What the stub hands the agent.
pub struct Prepared {
    /// The disk image's root directory.
    pub disk: OwnedFd,
    /// The read-only detached mount of `checkpoints/`, to attach at [`VISIBLE_AT`].
    pub visible: Option<OwnedFd>,
}

/// A checkpoint operation, server → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SnapshotOp {
    /// Snapshot the upper layer as `id` (and its visible copy), then drop the visible
    /// copies of `hide`.
    Create {
        /// The new checkpoint's id.
        id: String,
        /// Checkpoints no longer to show (beyond the newest five).
        hide: Vec<String>,
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
    // The mount point, made without following anything the sprite put in the way (a
    // symlink there: no visible checkpoints, nothing else).
    let visible = mount_point(upper, sprite_root).and_then(|()| {
        let tree = sys::mount::open_tree_clone(&disk.join(CHECKPOINTS))?;
        sys::mount::set_readonly(tree.as_fd())?;
        Ok(tree)
    });
    Ok(Some(Prepared {
        disk: root.into(),
        visible: visible.ok(),
    }))
}

fn mount_point(upper: &Path, owner: u32) -> io::Result<()> {
    let up = File::open(upper)?;
    let mut dir: OwnedFd = up.into();
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

/// In the agent, after `pivot_root`: attaches the checkpoints mount (paths resolve inside
/// the sprite now, so nothing planted there can send it to the host).
pub fn attach(visible: OwnedFd) -> io::Result<()> {
    sys::mount::move_mount(visible.as_fd(), Path::new(VISIBLE_AT))
}

/// Runs `op` on the image whose root is `disk`.
pub fn run(disk: &OwnedFd, op: &SnapshotOp) -> SnapshotReply {
    let r = match op {
        SnapshotOp::Create { id, hide } => create(disk, id, hide),
        SnapshotOp::Delete { id } => delete(disk, id),
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

fn open_dir(disk: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    dirfd::open_beneath(disk.as_fd(), rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

fn create(disk: &OwnedFd, id: &str, hide: &[String]) -> io::Result<()> {
    let upper = open_dir(disk, UPPER)?;
    let store = open_dir(disk, OLDER)?;
    btrfs::snapshot(upper.as_fd(), store.as_fd(), id, true)?;
    // The sprite's view: a second read-only snapshot (of the first: nothing to flush, so
    // instant). Moving one snapshot between directories is not possible (a read-only
    // subvolume's `..` cannot change), so the view is made and dropped on its own.
    let visible = open_dir(disk, CHECKPOINTS)?;
    let snap = dirfd::open_beneath(store.as_fd(), id, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    btrfs::snapshot(snap.as_fd(), visible.as_fd(), id, true)?;
    for h in hide {
        if dirfd::stat_entry(visible.as_fd(), h).is_ok() {
            btrfs::subvol_destroy(visible.as_fd(), h)?;
        }
    }
    Ok(())
}

fn delete(disk: &OwnedFd, id: &str) -> io::Result<()> {
    let mut found = false;
    for dir in [CHECKPOINTS, OLDER] {
        let d = open_dir(disk, dir)?;
        if dirfd::stat_entry(d.as_fd(), id).is_ok() {
            btrfs::subvol_destroy(d.as_fd(), id)?;
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }
}
