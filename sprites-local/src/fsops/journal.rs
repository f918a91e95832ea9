//! A journal of writes in progress, so a server that dies in the middle of an upload
//! leaves no temp file behind for good.
//!
//! An upload streams into `.<name>.sprites-tmp-<random>` next to its target and is renamed
//! over it at the end (see [`super::write_atomic`]); a failed upload removes its temp file.
//! Only a crash of the server itself skips that. [`Journaled`] records each temp file in
//! the sprite's directory on the host (`uploads/`, one small file per write in progress,
//! named after a hash of the temp path) and forgets it once committed or aborted;
//! [`clean`] removes what a previous server process left, through the sprite's own
//! filesystem (so, in a sandbox, as the sprite's user and inside it).

use std::fs;
use std::path::{Path, PathBuf};

use super::{FsError, FsOp, FsOutput, OpenedFile, PendingWrite, SpriteFs, WriteSpec, Written};

/// The journal's directory in a sprite's directory.
const DIR: &str = "uploads";

/// A [`SpriteFs`] whose writes are journaled in `sprite_dir/uploads/`.
pub struct Journaled {
    inner: Box<dyn SpriteFs>,
    dir: PathBuf,
}

impl Journaled {
    /// Wraps the filesystem of the sprite stored in `sprite_dir`.
    pub fn new(inner: Box<dyn SpriteFs>, sprite_dir: &Path) -> Journaled {
        Journaled {
            inner,
            dir: sprite_dir.join(DIR),
        }
    }

    fn record(&self, temp: &str) -> PathBuf {
        let hash = crate::fingerprint::fnv1a(temp.as_bytes());
        self.dir.join(format!("{hash:016x}"))
    }
}

impl SpriteFs for Journaled {
    fn run(&self, op: &FsOp) -> Result<FsOutput, FsError> {
        self.inner.run(op)
    }

    fn open_read(&self, path: &str) -> Result<OpenedFile, FsError> {
        self.inner.open_read(path)
    }

    fn begin_write(&self, spec: &WriteSpec) -> Result<PendingWrite, FsError> {
        let pending = self.inner.begin_write(spec)?;
        // Best effort: a journal that cannot be written only loses the cleanup after a
        // crash, not the upload.
        let _ = fs::create_dir_all(&self.dir)
            .and_then(|()| fs::write(self.record(&pending.temp), &pending.temp));
        Ok(pending)
    }

    fn commit_write(&self, pending: PendingWrite) -> Result<Written, FsError> {
        let record = self.record(&pending.temp);
        let result = self.inner.commit_write(pending);
        let _ = fs::remove_file(record);
        result
    }

    fn abort_write(&self, pending: PendingWrite) {
        let record = self.record(&pending.temp);
        self.inner.abort_write(pending);
        let _ = fs::remove_file(record);
    }

    fn remove_temp(&self, temp: &str) {
        self.inner.remove_temp(temp);
    }

    fn watch(&self, spec: &crate::fswatch::WatchSpec) -> Result<std::os::fd::OwnedFd, FsError> {
        self.inner.watch(spec)
    }
}

/// Whether the sprite stored in `sprite_dir` has journaled writes (unfinished, if no
/// server is running for it).
pub fn has_entries(sprite_dir: &Path) -> bool {
    fs::read_dir(sprite_dir.join(DIR)).is_ok_and(|mut d| d.next().is_some())
}

/// Removes the temp files of writes an earlier server process left unfinished in the
/// sprite stored in `sprite_dir`, through `fs` (that sprite's filesystem), and their
/// journal entries. Call before the sprite's first write of this process.
pub fn clean(fs: &dyn SpriteFs, sprite_dir: &Path) {
    let Ok(entries) = fs::read_dir(sprite_dir.join(DIR)) else {
        return;
    };
    for e in entries.flatten() {
        if let Ok(temp) = fs::read_to_string(e.path()) {
            fs.remove_temp(&temp);
        }
        let _ = fs::remove_file(e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsops::HostFs;

    #[test]
    fn a_crashed_write_is_cleaned_and_finished_ones_leave_nothing() {
        let dir = std::env::temp_dir().join(format!(
            "sprites-journal-{}",
            crate::random::hex(6).unwrap()
        ));
        let sprite = dir.join("sprite");
        let files = dir.join("files");
        fs::create_dir_all(&sprite).unwrap();
        fs::create_dir_all(&files).unwrap();
        let spec = |name: &str| WriteSpec {
            path: files.join(name).to_str().unwrap().to_owned(),
            mode: 0o644,
            mkdir_parents: false,
            durable: true,
        };
        let fs_ = Journaled::new(Box::new(HostFs), &sprite);
        // Finished writes leave no journal entry.
        let p = fs_.begin_write(&spec("done")).unwrap();
        fs_.commit_write(p).unwrap();
        let p = fs_.begin_write(&spec("aborted")).unwrap();
        fs_.abort_write(p);
        assert_eq!(fs::read_dir(sprite.join(DIR)).unwrap().count(), 0);
        assert!(!has_entries(&sprite));
        // Two writes whose server "crashed" (the pending writes are simply forgotten).
        let temps: Vec<String> = ["crashed", "crashed-too"]
            .iter()
            .map(|name| {
                let p = fs_.begin_write(&spec(name)).unwrap();
                let temp = p.temp.clone();
                std::mem::forget(p.file);
                assert!(Path::new(&temp).exists());
                temp
            })
            .collect();
        assert!(has_entries(&sprite));
        assert_eq!(
            fs::read_dir(sprite.join(DIR)).unwrap().count(),
            2,
            "one entry each"
        );
        clean(&HostFs, &sprite);
        for temp in &temps {
            assert!(!Path::new(temp).exists(), "temp file left behind");
        }
        assert!(!has_entries(&sprite));
        let names: Vec<_> = fs::read_dir(&files)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["done"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_temp_names_are_removed() {
        let dir = std::env::temp_dir().join(format!(
            "sprites-journal-names-{}",
            crate::random::hex(6).unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        let temp = dir.join(".f.sprites-tmp-0123456789abcdef");
        let other = dir.join("f");
        fs::write(&temp, "t").unwrap();
        fs::write(&other, "o").unwrap();
        let fs_ = Journaled::new(Box::new(HostFs), &dir);
        fs_.remove_temp(other.to_str().unwrap());
        fs_.remove_temp(temp.to_str().unwrap());
        assert!(
            other.exists(),
            "a file not named like a temp file was removed"
        );
        assert!(!temp.exists());
        fs::remove_dir_all(&dir).unwrap();
        assert!(crate::fsops::is_temp_name(
            "/a/.f.txt.sprites-tmp-0123456789abcdef"
        ));
        assert!(!crate::fsops::is_temp_name("/a/f.txt"));
        assert!(!crate::fsops::is_temp_name("/a/.f.sprites-tmp-xyz"));
        assert!(!crate::fsops::is_temp_name(
            "/a/f.sprites-tmp-0123456789abcdef"
        ));
    }
}
