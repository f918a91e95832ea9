//! A sprite's disk (root servers): its upper layer lives in a btrfs (else ext4) image of
//! its `storage_gb`, so a full disk is the sprite's `ENOSPC`, never the host's.
//!
//! On btrfs (`mkfs.btrfs`, from btrfs-progs, installed) the upper layer and overlayfs's
//! work directory live in one subvolume, `live/` (`live/root`, `live/work`: the two must be
//! in one subvolume, as overlayfs renames from one to the other), and each checkpoint is a
//! read-only snapshot of it in `store/` (see `snapshots` and `crate::checkpoints`): taken
//! atomically while the sprite runs, and sharing every extent with the live tree. A
//! restore is applied here, before the overlay is mounted (see [`apply_restore`]). ext4
//! images (without btrfs-progs, or sprites made before) have no checkpoints.
//!
//! The image is a sparse file (`disk.img` in the sprite's directory): it costs only what
//! the sprite writes, and `discard` gives space back to the host when files are deleted.
//! It is made at create with `mkfs.ext4` (a few milliseconds: lazy inode tables, no resize
//! reserve), and mounted through a loop device (direct I/O, so data is cached once) in the
//! sprite's own mount namespace only: the host never sees the sprite's files, and the loop
//! device detaches itself when the sprite stops. Without `mkfs.ext4` or loop devices a
//! sprite's upper layer is a plain directory with no quota, and the sprite's info says so.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys;
use crate::sys::dirfd;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The image's file name in the sprite's directory.
const IMAGE: &str = "disk.img";
/// Where the image is mounted (in the sprite's mount namespace only).
pub const MOUNT: &str = "disk";

/// Where a sprite's layers are.
#[derive(Debug)]
pub struct Layers {
    /// The upper layer (the sprite's files).
    pub upper: PathBuf,
    /// overlayfs's work directory, on the same filesystem.
    pub work: PathBuf,
    /// The loop device under the image, kept open until the mount holds it.
    pub device: Option<sys::loopdev::LoopDevice>,
}

/// The subvolume holding the upper layer (`root/`) and overlayfs's `work/`, in a btrfs
/// image.
pub const LIVE: &str = "live";
/// Where the checkpoints (read-only snapshots of [`LIVE`]) are, in a btrfs image.
pub const STORE: &str = "store";
/// The upper layer in [`LIVE`] and in each checkpoint.
pub const LIVE_UPPER: &str = "root";
/// The file in the sprite's directory naming the checkpoint to restore at the next start.
pub const RESTORE_PENDING: &str = "restore-pending";

/// Whether sprites can get disk images here: `mkfs.ext4` runs and loop devices exist.
pub fn supported() -> Result<(), String> {
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control)".into());
    }
    match Command::new("mkfs.ext4")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("mkfs.ext4 (e2fsprogs) not usable: {e}")),
    }
}

/// Whether the sprite at `sprite_dir` has a disk image.
pub fn has_image(sprite_dir: &Path) -> bool {
    sprite_dir.join(IMAGE).exists()
}

/// Whether `mkfs.btrfs` runs here (checked once).
pub fn btrfs_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("mkfs.btrfs")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Makes a `bytes`-sized sparse image for a new sprite: btrfs where `mkfs.btrfs` runs
/// (checkpoints), else ext4. `NotFound` when `mkfs.ext4` is not installed either.
pub fn create(sprite_dir: &Path, bytes: u64) -> io::Result<()> {
    let path = sprite_dir.join(IMAGE);
    let file = File::create(&path)?;
    file.set_len(bytes)?;
    drop(file);
    let out = if btrfs_available() {
        // Single copies of data and metadata (the image is one file on one disk: a second
        // copy would protect nothing), no discard pass over the sparse file, and mixed
        // block groups: data and metadata share the space, so a sprite that filled its disk
        // with data can still create files once it deletes some (with separate groups the
        // metadata ones stay full and every create is ENOSPC).
        Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-K", "-M", "-m", "single", "-d", "single"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    } else {
        mkfs_ext4(&path)
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    if !out.status.success() {
        let _ = fs::remove_file(&path);
        return Err(io::Error::other(format!(
            "mkfs: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The loop device reads it with direct I/O, past the page cache: it must be on disk.
    OpenOptions::new().write(true).open(&path)?.sync_all()
}

fn mkfs_ext4(path: &Path) -> io::Result<std::process::Output> {
    Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,num_backup_sb=0,nodiscard",
            "-O",
            "sparse_super2,^resize_inode",
            "-G",
            "1024",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
}

/// Whether the sprite at `sprite_dir` has a btrfs disk image (checkpoints).
pub fn is_btrfs_image(sprite_dir: &Path) -> bool {
    image_is_btrfs(&sprite_dir.join(IMAGE)).unwrap_or(false)
}

/// Whether the image at `path` holds a btrfs filesystem (its superblock magic).
fn image_is_btrfs(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 8];
    // The primary superblock is at 64 KiB; its magic 64 bytes into it.
    match File::open(path)?.read_exact_at(&mut magic, 0x1_0040) {
        Ok(()) => Ok(&magic == b"_BHRfS_M"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Mounts the sprite's image (if it has one) at `sprite_dir/disk` in the calling stub's
/// private mount namespace and returns its layers; without an image, the plain
/// `upper`/`work` directories. Creates what is missing.
///
/// `held`: the image's filesystem as an earlier start of the sprite left it mounted (a
/// detached mount the server keeps, see `snapshots`) is attached instead of mounting the
/// image again, which spares a restart (a restore) the unmount and mount of
/// the whole filesystem, and keeps its cache. (Mounting the image afresh while that
/// filesystem lives would fail: btrfs refuses a second device with the same id.)
pub fn mount(sprite_dir: &Path, held: Option<OwnedFd>) -> io::Result<Layers> {
    if !has_image(sprite_dir) {
        let (upper, work) = (sprite_dir.join("upper"), sprite_dir.join("work"));
        fs::create_dir_all(&upper)?;
        fs::create_dir_all(&work)?;
        return Ok(Layers {
            upper,
            work,
            device: None,
        });
    }
    let btrfs = image_is_btrfs(&sprite_dir.join(IMAGE))?;
    let target = sprite_dir.join(MOUNT);
    if let (true, Some(held)) = (btrfs, held) {
        fs::create_dir_all(&target)?;
        // The detached mount itself moves here (a copy of it could only be made in the
        // mount namespace it was made in, which died with the previous start); `snapshots`
        // makes the next one from this namespace.
        super::ctx(sys::mount::move_mount(held.as_fd(), &target), || {
            "attaching the sprite's mounted disk".into()
        })?;
        return btrfs_layers(sprite_dir, &target, None);
    }
    let image = OpenOptions::new()
        .read(true)
        .write(true)
        .open(sprite_dir.join(IMAGE))?;
    let device = super::ctx(sys::loopdev::attach(&image), || {
        "attaching the sprite's disk image to a loop device".into()
    })?;
    fs::create_dir_all(&target)?;
    super::ctx(
        sys::mount::mount(
            Some(&device.path),
            &target,
            Some(if btrfs { "btrfs" } else { "ext4" }),
            libc::MS_NOSUID | libc::MS_NODEV,
            // ext4: no background zeroing of inode tables (it would fill the sparse image:
            // the file reads as zeros already). Both: deletes give space back to the host.
            Some(if btrfs {
                "discard=async"
            } else {
                "noinit_itable,discard"
            }),
        ),
        || format!("mounting the sprite's disk image ({})", device.path),
    )?;
    if btrfs {
        return btrfs_layers(sprite_dir, &target, Some(device));
    }
    let (upper, work) = (target.join("upper"), target.join("work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    Ok(Layers {
        upper,
        work,
        device: Some(device),
    })
}

/// The layers of a btrfs image mounted at `target`, after applying a pending restore.
fn btrfs_layers(
    sprite_dir: &Path,
    target: &Path,
    device: Option<sys::loopdev::LoopDevice>,
) -> io::Result<Layers> {
    let root = File::open(target)?;
    super::ctx(apply_restore(root.as_fd(), target, sprite_dir), || {
        "restoring a checkpoint".into()
    })?;
    if !target.join(LIVE).exists() {
        sys::btrfs::subvol_create(root.as_fd(), LIVE)?;
    }
    fs::create_dir_all(target.join(STORE))?;
    let live = target.join(LIVE);
    let (upper, work) = (live.join(LIVE_UPPER), live.join("work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    Ok(Layers {
        upper,
        work,
        device,
    })
}

/// Applies a restore the server asked for (the checkpoint id in the sprite directory's
/// [`RESTORE_PENDING`]) to the mounted btrfs image `root`, while no process of the sprite
/// runs: a writable snapshot of the checkpoint becomes the upper layer, the old one is
/// deleted, and overlayfs's work directory is emptied (it may hold the old layer's
/// leftovers). Each step can be repeated, so a crash part-way is finished at the next
/// start; the request file goes last.
pub fn apply_restore(root: BorrowedFd<'_>, disk: &Path, sprite_dir: &Path) -> io::Result<()> {
    let pending = sprite_dir.join(RESTORE_PENDING);
    let id = match fs::read_to_string(&pending) {
        Ok(id) => id.trim().to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let source = dirfd::open_beneath(
        root,
        &format!("{STORE}/{}", dirfd::component(&id)?.to_string_lossy()),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("checkpoint {id:?} is not on the sprite's disk: {e}"),
        )
    })?;
    // A half-made one from an interrupted attempt.
    if dirfd::stat_entry(root, "live.new").is_ok() {
        sys::btrfs::subvol_destroy(root, "live.new")?;
    }
    sys::btrfs::snapshot(source.as_fd(), root, "live.new", false)?;
    if dirfd::stat_entry(root, LIVE).is_ok() {
        if dirfd::stat_entry(root, "live.old").is_ok() {
            sys::btrfs::subvol_destroy(root, "live.old")?;
        }
        dirfd::rename_at(root, LIVE, "live.old")?;
    }
    dirfd::rename_at(root, "live.new", LIVE)?;
    if dirfd::stat_entry(root, "live.old").is_ok() {
        sys::btrfs::subvol_destroy(root, "live.old")?;
    }
    // overlayfs's leftovers from when the checkpoint was taken; nothing of the sprite's.
    let work = disk.join(LIVE).join("work");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    dirfd::syncfs(root)?;
    fs::remove_file(&pending)
}
