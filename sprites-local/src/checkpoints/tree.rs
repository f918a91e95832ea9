//! Checkpoints of the host runtime: a checkpoint is a copy of the sprite's `home/` in
//! `checkpoints/<id>/` of its directory, and a restore copies one back.
//!
//! Space is shared where the filesystem allows it: each file is first cloned
//! (`FICLONE`: btrfs, XFS with reflink, bcachefs — instant and sharing every extent);
//! where that is refused (ext4), a file whose size, modification time and mode match the
//! same file in the previous checkpoint is hard-linked to it (checkpoints are never
//! written, so the link is safe; the live tree is never linked, so changing it never
//! changes a checkpoint), and any other file is copied (`copy_file_range`).
//!
//! Consistency is per file, not across the tree (the host runtime has no filesystem of its
//! own to snapshot at one instant): a file whose size or times change while it is copied
//! is copied again (up to [`RETRIES`] times), so a file written whole and renamed into
//! place is either absent or complete; one still being written after that is kept as last
//! read. The sandbox runtime's checkpoints are atomic snapshots instead.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use std::time::{Duration, Instant};

use crate::runtime::Report;
use crate::sys;

/// How many times a file that changed while it was copied is copied again.
pub const RETRIES: u32 = 3;

/// How files got into a checkpoint (for the progress messages and the docs' figures).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Files cloned (shared extents).
    pub cloned: u64,
    /// Files hard-linked to the previous checkpoint's.
    pub linked: u64,
    /// Files copied byte for byte.
    pub copied: u64,
}

/// How often a copy reports progress.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A copy in progress: what it did, and where it reports.
struct Run<'a, 'b> {
    stats: Stats,
    /// Files in the source, counted first (for the fraction done).
    total: u64,
    progress: &'a mut Report<'b>,
    last: Instant,
}

impl Run<'_, '_> {
    fn file_done(&mut self) {
        if self.last.elapsed() >= REPORT_EVERY {
            self.last = Instant::now();
            let done = self.stats.cloned + self.stats.linked + self.stats.copied;
            (self.progress)(
                done as f32 / self.total.max(1) as f32,
                &format!("{done} of {} files", self.total),
            );
        }
    }
}

/// Counts the regular files below `dir` (not following symlinks).
fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Copies the tree `src` to `dst` (which must not exist). `previous`: an earlier copy
/// whose unchanged files may be hard-linked (never pass the live tree). Reports how far it
/// is to `progress` every [`REPORT_EVERY`] or so.
pub fn copy(
    src: &Path,
    dst: &Path,
    previous: Option<&Path>,
    progress: &mut Report<'_>,
) -> io::Result<Stats> {
    let mut run = Run {
        stats: Stats::default(),
        total: count_files(src),
        progress,
        last: Instant::now(),
    };
    copy_dir(src, dst, previous, &mut run)?;
    Ok(run.stats)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    prev: Option<&Path>,
    stats: &mut Run<'_, '_>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let (s, d) = (src.join(&name), dst.join(&name));
        let p = prev.map(|p| p.join(&name));
        let m = match fs::symlink_metadata(&s) {
            Ok(m) => m,
            // Deleted since the listing: not in the checkpoint.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ft = m.file_type();
        let r = if ft.is_dir() {
            copy_dir(&s, &d, p.as_deref(), stats)
        } else if ft.is_symlink() {
            fs::read_link(&s).and_then(|t| std::os::unix::fs::symlink(t, &d))
        } else if ft.is_file() {
            let r = copy_file(&s, &d, p.as_deref(), &mut stats.stats);
            stats.file_done();
            r
        } else {
            Ok(()) // sockets, FIFOs, devices: not files a checkpoint keeps
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // gone meanwhile
            other => other?,
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    set_times(&File::open(dst)?, &meta)
}

fn set_times(f: &File, m: &fs::Metadata) -> io::Result<()> {
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s as libc::time_t,
        tv_nsec: ns as _,
    };
    sys::file::futimens(
        f.as_fd(),
        &[ts(m.atime(), m.atime_nsec()), ts(m.mtime(), m.mtime_nsec())],
    )
}

fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

fn copy_file(src: &Path, dst: &Path, prev: Option<&Path>, stats: &mut Stats) -> io::Result<()> {
    let input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)?;
    let mut before = input.metadata()?;
    if let Some(p) = prev {
        if let Ok(pm) = fs::symlink_metadata(p) {
            if pm.is_file()
                && pm.len() == before.len()
                && pm.mtime() == before.mtime()
                && pm.mtime_nsec() == before.mtime_nsec()
                && pm.mode() == before.mode()
                && fs::hard_link(p, dst).is_ok()
            {
                stats.linked += 1;
                return Ok(());
            }
        }
    }
    for attempt in 0..=RETRIES {
        let _ = fs::remove_file(dst);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)?;
        let cloned = sys::file::reflink(input.as_fd(), out.as_fd()).is_ok();
        if !cloned {
            io::copy(&mut &input, &mut out)?;
        }
        let after = input.metadata()?;
        if same_version(&before, &after) || attempt == RETRIES {
            out.set_permissions(fs::Permissions::from_mode(after.mode() & 0o7777))?;
            set_times(&out, &after)?;
            if cloned {
                stats.cloned += 1;
            } else {
                stats.copied += 1;
            }
            return Ok(());
        }
        // Written to while we copied: the copy may mix two versions. Again, from the start.
        before = after;
        (&input).seek_start()?;
    }
    Ok(())
}

trait SeekStart {
    fn seek_start(self) -> io::Result<()>;
}

impl SeekStart for &File {
    fn seek_start(mut self) -> io::Result<()> {
        io::Seek::seek(&mut self, io::SeekFrom::Start(0)).map(drop)
    }
}

/// Replaces the tree `live` with a copy of checkpoint `from` (cloned or copied, never
/// linked: the live tree must not share inodes with a checkpoint). The copy is made next
/// to `live` and swapped in by renames, so a failure leaves `live` as it was.
pub fn restore(from: &Path, live: &Path, progress: &mut Report<'_>) -> io::Result<()> {
    let parent = live.parent().unwrap_or(Path::new("."));
    let tag = crate::random::hex(4)?;
    let fresh = parent.join(format!(".restore-{tag}"));
    let old = parent.join(format!(".replaced-{tag}"));
    if let Err(e) = copy(from, &fresh, None, progress) {
        let _ = fs::remove_dir_all(&fresh);
        return Err(e);
    }
    // What earlier restores left to delete (a crash before their deletes finished).
    if let Ok(entries) = fs::read_dir(parent) {
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(".replaced-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let had = live.exists();
    if had {
        fs::rename(live, &old)?;
    }
    fs::rename(&fresh, live)?;
    if had {
        // Out of sight now; deleting a big tree can take far longer than copying it
        // (38 s for 1 GiB in 10 000 files on this machine's ext4), so it happens after the
        // restore has answered. A crash meanwhile leaves it to the next restore (above).
        let spawned = std::thread::Builder::new()
            .name("sprites-cp-trash".into())
            .stack_size(256 * 1024)
            .spawn({
                let old = old.clone();
                move || {
                    let _ = fs::remove_dir_all(old);
                }
            });
        if spawned.is_err() {
            fs::remove_dir_all(&old)?;
        }
    }
    Ok(())
}
