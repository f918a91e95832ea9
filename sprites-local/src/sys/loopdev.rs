//! Loop devices: a file seen as a block device, so a sprite's disk can be a filesystem
//! image with a fixed size (its quota).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use super::check;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// Detach the device when its last user (the mount) goes away.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Read and write the backing file with O_DIRECT: the data is cached once (by the
/// filesystem inside), not twice.
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, `LOOP_CONFIGURE`, Linux ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A configured loop device. Keep it open until the filesystem on it is mounted: the
/// device is set to detach itself when its last user goes away, and until the mount
/// exists this handle is that user.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: String,
    _dev: File,
}

/// Attaches `backing` (a filesystem image, synced to disk: direct I/O bypasses the page
/// cache) to a free loop device, with autoclear and direct I/O.
pub fn attach(backing: &File) -> io::Result<LoopDevice> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the device we were offered before we configure it (EBUSY):
    // ask again, a bounded number of times.
    for _ in 0..16 {
        // SAFETY: an ioctl without argument on the loop control device.
        let n = check(unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        let path = format!("/dev/loop{n}");
        let dev = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: LoopConfig is plain data; all-zero is its documented "unset" state.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.block_size = 4096;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `cfg` is.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok(LoopDevice { path, _dev: dev });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
    }
    Err(io::Error::other("no free loop device after 16 tries"))
}
