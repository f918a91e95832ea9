//! A sprite's disk (root servers): its upper layer lives in an ext4 image of its
//! `storage_gb`, so a full disk is the sprite's `ENOSPC`, never the host's.
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

/// The image's file name in the sprite's directory.
const IMAGE: &str = "disk.img";
/// Where the image is mounted (in the sprite's mount namespace only).
const MOUNT: &str = "disk";

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

/// Makes a `bytes`-sized sparse ext4 image for a new sprite. `NotFound` when `mkfs.ext4`
/// is not installed.
pub fn create(sprite_dir: &Path, bytes: u64) -> io::Result<()> {
    let path = sprite_dir.join(IMAGE);
    let file = File::create(&path)?;
    file.set_len(bytes)?;
    drop(file);
    let out = Command::new("mkfs.ext4")
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
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
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
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The loop device reads it with direct I/O, past the page cache: it must be on disk.
    OpenOptions::new().write(true).open(&path)?.sync_all()
}

/// Mounts the sprite's image (if it has one) at `sprite_dir/disk` in the calling stub's
/// private mount namespace and returns its layers; without an image, the plain
/// `upper`/`work` directories. Creates what is missing.
pub fn mount(sprite_dir: &Path) -> io::Result<Layers> {
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
    let image = OpenOptions::new()
        .read(true)
        .write(true)
        .open(sprite_dir.join(IMAGE))?;
    let device = super::ctx(sys::loopdev::attach(&image), || {
        "attaching the sprite's disk image to a loop device".into()
    })?;
    let target = sprite_dir.join(MOUNT);
    fs::create_dir_all(&target)?;
    super::ctx(
        sys::mount::mount(
            Some(&device.path),
            &target,
            Some("ext4"),
            libc::MS_NOSUID | libc::MS_NODEV,
            // No background zeroing of inode tables (it would fill the sparse image: the
            // file reads as zeros already), and deletes give space back to the host.
            Some("noinit_itable,discard"),
        ),
        || format!("mounting the sprite's disk image ({})", device.path),
    )?;
    let (upper, work) = (target.join("upper"), target.join("work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    Ok(Layers {
        upper,
        work,
        device: Some(device),
    })
}
