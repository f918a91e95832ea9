//! btrfs subvolumes and snapshots (the ioctls `btrfs subvolume create|snapshot|delete` make),
//! for sprites' checkpoints: a sprite's upper layer is a subvolume of its own btrfs disk
//! image, a checkpoint a read-only snapshot of it.
//!
//! Every call works on open directories and single path components (see [`super::dirfd`]):
//! the names are the server's own (`upper`, checkpoint ids), never the sprite's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;
use super::dirfd::component;

/// `f_type` of a btrfs filesystem (`BTRFS_SUPER_MAGIC`).
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// `BTRFS_SUBVOL_RDONLY`: the snapshot is read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args` (4096 bytes).
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes): `fd`, `transid`, `flags`, a 32-byte union
/// (size / qgroup inherit) and the name.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `_IOW(0x94, nr, 4096)`.
const fn iow4096(nr: u64) -> u64 {
    (1 << 30) | (4096 << 16) | (0x94 << 8) | nr
}
const IOC_SUBVOL_CREATE: u64 = iow4096(14);
const IOC_SNAP_DESTROY: u64 = iow4096(15);
const IOC_SNAP_CREATE_V2: u64 = iow4096(23);

fn name_into(buf: &mut [u8], name: &str) -> io::Result<()> {
    let c = component(name)?;
    let bytes = c.as_bytes();
    if bytes.len() >= buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Whether `fd` is on a btrfs filesystem.
pub fn is_btrfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: statfs is plain data; all-zero is valid and fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    Ok(st.f_type as i64 == BTRFS_SUPER_MAGIC)
}

/// Creates the empty subvolume `name` in directory `parent`.
pub fn subvol_create(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    name_into(&mut args.name, name)?;
    // SAFETY: a valid fd and a properly sized, initialised argument struct.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), IOC_SUBVOL_CREATE as _, &mut args) }).map(drop)
}

/// Snapshots the subvolume `source` (an open directory that is a subvolume's root) as
/// `name` in directory `dest` — atomic, and sharing every extent with the source.
pub fn snapshot(
    source: BorrowedFd<'_>,
    dest: BorrowedFd<'_>,
    name: &str,
    readonly: bool,
) -> io::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    name_into(&mut args.name, name)?;
    // SAFETY: valid fds and a properly sized, initialised argument struct.
    check(unsafe { libc::ioctl(dest.as_raw_fd(), IOC_SNAP_CREATE_V2 as _, &mut args) }).map(drop)
}

/// Deletes the subvolume `name` in directory `parent`, with everything in it.
pub fn subvol_destroy(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    name_into(&mut args.name, name)?;
    // SAFETY: a valid fd and a properly sized, initialised argument struct.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), IOC_SNAP_DESTROY as _, &mut args) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940E);
        assert_eq!(IOC_SNAP_DESTROY, 0x5000_940F);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
    }
}
