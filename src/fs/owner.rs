//! Ownership: [`Filesystem::chown`] and [`Filesystem::chown_recursive`]
//! (`POST /v1/sprites/{name}/fs/chown`, [PROTOCOL.md §9](crate::protocol#9-filesystem-api)).

use super::Filesystem;
use crate::error::Error;
use serde_json::json;
use std::io;
use std::path::Path;

impl Filesystem {
    /// Changes the owner and/or group of a file or directory, as
    /// `std::os::unix::fs::chown` (a symlink given here is followed). `None` leaves that id
    /// as it is. The ids are the sprite's own (user `sprite` is 1000 on sprites-local's
    /// sandbox).
    ///
    /// The change is made with the sprite's root privileges (`asRoot`), which the sprite's
    /// own user has anyway through `sudo`: giving a file to another user needs them.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when both ids are `None`; `NotFound` for a missing path;
    /// `PermissionDenied` where even the sprite's root may not (a file that is not the
    /// sprite's); a transport error, or an API error for the sprite itself.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// let fs = sprite.fs_at("/home/sprite");
    /// fs.write("report.txt", "")?;
    /// fs.chown("report.txt", Some(0), Some(0))?;
    /// # Ok(()) }
    /// ```
    pub fn chown(
        &self,
        path: impl AsRef<Path>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<()> {
        self.change_owner(path.as_ref(), uid, gid, false)
    }

    /// Changes the owner and/or group of a whole tree, like `chown -R`: the path itself
    /// (followed if it is a symlink) and everything below it; symlinks below are changed
    /// themselves, never followed, and mounts below are not descended into.
    ///
    /// # Errors
    ///
    /// As [`chown`](Self::chown); a failure partway leaves what was already changed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// let fs = sprite.fs();
    /// fs.create_dir_all("/srv/app/static")?;
    /// fs.chown_recursive("/srv/app", Some(1000), Some(1000))?;
    /// # Ok(()) }
    /// ```
    pub fn chown_recursive(
        &self,
        path: impl AsRef<Path>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<()> {
        self.change_owner(path.as_ref(), uid, gid, true)
    }

    fn change_owner(
        &self,
        path: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
        recursive: bool,
    ) -> io::Result<()> {
        if uid.is_none() && gid.is_none() {
            return Err(io::Error::from(Error::InvalidInput(
                "chown needs a uid or a gid".into(),
            )));
        }
        let path = self.resolve(path)?;
        let body = json!({
            "path": path,
            "workingDir": self.cwd,
            "uid": uid,
            "gid": gid,
            "recursive": recursive,
            "asRoot": true,
        });
        // Over HTTP only: sprites-local serves no fs.chown over control.
        self.post("chown", body)
    }
}
