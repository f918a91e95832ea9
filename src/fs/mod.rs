//! A sprite's filesystem with the API of `std::fs` ([PROTOCOL.md §9](crate::protocol#9-filesystem-api)).
//!
//! [`Filesystem`] has the `std::fs` free functions as methods; [`File`] implements `Read`,
//! `Write` and `Seek` and streams, so a file of any size passes through constant memory.
//!
//! The API has no stat and no mkdir endpoint. [`Filesystem::metadata`] lists the parent
//! directory and picks the entry by name (listing the path itself would return a directory's
//! first child, the bug the official SDKs have); [`Filesystem::create_dir`] writes a uniquely
//! named placeholder with `mkdirParents=true` and deletes it, after checking std's preconditions.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-4", std::process::id()));
//! # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
//! # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
//! let sprite = client.create_sprite("my-sprite")?;
//! let fs = sprite.fs_at("/home/sprite");
//! fs.create_dir_all("app/src")?;
//! fs.write("app/src/main.py", "print('hi')\n")?;
//! assert_eq!(fs.read_to_string("app/src/main.py")?, "print('hi')\n");
//! for entry in fs.read_dir("app/src")? {
//!     let entry = entry?;
//!     println!("{:?} {} bytes", entry.file_name(), entry.metadata()?.len());
//! }
//! # drop(server); let _ = std::fs::remove_dir_all(dir);
//! # Ok(()) }
//! ```

mod file;
mod metadata;
mod over_control;
mod owner;
mod watch;

pub use crate::transfer::Progress;
pub use file::{File, OpenOptions};
pub use metadata::{DirEntry, FileType, Metadata, Permissions, ReadDir};
pub use watch::{EventKind, FsWatch, ModifyKind, RenameMode, WatchEvent};

use crate::error::{ApiError, Error};
use crate::sprite::Sprite;
use crate::url::Query;
use metadata::{FsEntry, FsListing};
use serde_json::json;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A sprite's filesystem, with relative paths resolved against a directory.
///
/// Get one from [`Sprite::fs`] (rooted at `/`) or [`Sprite::fs_at`].
#[derive(Debug, Clone)]
pub struct Filesystem {
    sprite: Sprite,
    cwd: String,
}

impl Sprite {
    /// The sprite's filesystem; relative paths resolve against `/`. No I/O.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// assert_eq!(sprite.fs().current_dir(), std::path::Path::new("/"));
    /// # Ok(()) }
    /// ```
    pub fn fs(&self) -> Filesystem {
        Filesystem {
            sprite: self.clone(),
            cwd: "/".into(),
        }
    }

    /// The sprite's filesystem; relative paths resolve against `dir` (itself resolved against `/`,
    /// `.` and `..` lexically). No I/O: `dir` need not exist yet.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// let fs = sprite.fs_at("/home/sprite/../sprite/app");
    /// assert_eq!(fs.current_dir(), std::path::Path::new("/home/sprite/app"));
    /// # Ok(()) }
    /// ```
    pub fn fs_at(&self, dir: impl AsRef<Path>) -> Filesystem {
        let cwd = clean(Path::new("/"), dir.as_ref())
            .to_string_lossy()
            .into_owned();
        Filesystem {
            sprite: self.clone(),
            cwd,
        }
    }
}

impl Filesystem {
    /// The directory relative paths resolve against. (What std calls the current directory is a
    /// process's; this is the filesystem handle's.)
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sprite = sprites::Client::new("t")?.sprite("s");
    /// assert_eq!(sprite.fs_at("/srv").current_dir(), std::path::Path::new("/srv"));
    /// # Ok(()) }
    /// ```
    pub fn current_dir(&self) -> &Path {
        Path::new(&self.cwd)
    }

    /// Reads a whole file, as `std::fs::read`. The body may not be longer than the server declared
    /// (its `Content-Length`, or the size its listing reports): a longer one is an error, not memory
    /// without bound.
    ///
    /// # Errors
    ///
    /// `NotFound`, `IsADirectory`, `PermissionDenied` as std; `InvalidData`
    /// ([`Error::ResponseTooLarge`]) for a body longer than declared;
    /// a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-read", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("notes.txt", "hello")?;
    /// assert_eq!(fs.read("notes.txt")?, b"hello");
    /// assert_eq!(fs.read("absent").unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn read(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let path = self.resolve(path.as_ref())?;
        // Over control, at most SMALL + 1 bytes: one more than SMALL says the file is bigger,
        // and it is read again over HTTP, whole (joining the two could tear a file replaced
        // in between).
        let args = [
            ("path", path.clone()),
            ("workingDir", self.cwd.clone()),
            ("end", (over_control::SMALL + 1).to_string()),
        ];
        let call = over_control::Call {
            op: "fs.read",
            args: &args,
            content: None,
            read_limit: Some(over_control::SMALL + 1),
        };
        let small = over_control::run(self, &call, |answer| {
            let content = answer.content?;
            let size = answer
                .result
                .get("size")
                .and_then(serde_json::Value::as_u64);
            // The declared size must be what came: anything else is not an answer we read.
            (size == Some(content.len() as u64))
                .then(|| (content.len() <= over_control::SMALL).then_some(content))
        });
        match small {
            over_control::Outcome::Done(Some(content)) => Ok(content),
            over_control::Outcome::Failed(err) => Err(err),
            over_control::Outcome::Done(None) | over_control::Outcome::Http => {
                self.open(&path)?.read_all()
            }
        }
    }

    /// Reads a whole file as UTF-8, as `std::fs::read_to_string`.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), and `InvalidData` for contents that are not UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-read_to_string", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("greeting", "héllo")?;
    /// assert_eq!(fs.read_to_string("greeting")?, "héllo");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let data = self.read(path)?;
        String::from_utf8(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes a whole file, creating it or replacing it, as `std::fs::write`. The replacement is
    /// atomic on servers that write through a temporary file (sprites-local does).
    ///
    /// # Errors
    ///
    /// `NotFound` for a missing parent directory (as std: parents are not created),
    /// `NotADirectory`, `IsADirectory`, `PermissionDenied`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-write", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("config.toml", "debug = true\n")?;
    /// assert_eq!(fs.read_to_string("config.toml")?, "debug = true\n");
    /// let err = fs.write("missing/config.toml", "x").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let path = self.resolve(path.as_ref())?;
        // No mkdirParents: a missing parent is NotFound, as in std.
        self.put(&path, contents.as_ref(), 0o644, false)
    }

    /// Metadata, following a final symlink, as `std::fs::metadata`.
    ///
    /// # Errors
    ///
    /// `NotFound` (a dangling symlink included), `NotADirectory` for a path through a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-metadata", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("data.bin", [0u8; 10])?;
    /// let meta = fs.metadata("data.bin")?;
    /// assert!(meta.is_file());
    /// assert_eq!(meta.len(), 10);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let path = self.resolve(path.as_ref())?;
        let meta = self.stat(&path)?;
        if !meta.is_symlink() {
            return Ok(meta);
        }
        // Listing through the link shows the target: a directory answers with its children,
        // anything else with one entry for itself.
        let listing = self.list(&path)?;
        match listing.as_slice() {
            [only] if only.path == path || only.path.is_empty() => Ok(Metadata::from_entry(only)),
            _ => Ok(Metadata::from_entry(&FsEntry {
                name: String::new(),
                path: path.clone(),
                kind: Some("directory".into()),
                size: Some(0),
                mode: None,
                mod_time: None,
                is_dir: Some(true),
            })),
        }
    }

    /// Metadata of the path itself: a symlink reports as a symlink, as
    /// `std::fs::symlink_metadata`.
    ///
    /// # Errors
    ///
    /// As [`metadata`](Self::metadata), except that a dangling symlink has metadata.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-symlink_metadata", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.symlink("nowhere", "dangling")?;
    /// assert!(fs.symlink_metadata("dangling")?.is_symlink());
    /// assert!(fs.metadata("dangling").is_err());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let path = self.resolve(path.as_ref())?;
        self.stat(&path)
    }

    /// Whether the path exists, following symlinks (a dangling symlink does not exist), as
    /// `std::fs::exists`.
    ///
    /// # Errors
    ///
    /// Errors other than "not found": a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-exists", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("here", "")?;
    /// assert!(fs.exists("here")?);
    /// assert!(!fs.exists("there")?);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn exists(&self, path: impl AsRef<Path>) -> io::Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries of a directory, as `std::fs::read_dir`: fetched in one request, with each
    /// entry's metadata (not following symlinks).
    ///
    /// # Errors
    ///
    /// `NotFound`, `NotADirectory` for a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-read_dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir("d")?;
    /// fs.write("d/a", "")?;
    /// fs.write("d/b", "")?;
    /// let mut names: Vec<_> = fs.read_dir("d")?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    /// names.sort();
    /// assert_eq!(names, ["a", "b"]);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<ReadDir> {
        let path = self.resolve(path.as_ref())?;
        let meta = self.metadata(&path)?;
        if !meta.is_dir() {
            return Err(not_a_directory(&path));
        }
        let base = PathBuf::from(&path);
        let entries = self
            .list(&path)?
            .into_iter()
            .map(|entry| {
                let name = if entry.name.is_empty() {
                    Path::new(&entry.path)
                        .file_name()
                        .map(OsString::from)
                        .unwrap_or_default()
                } else {
                    OsString::from(&entry.name)
                };
                DirEntry {
                    path: base.join(&name),
                    metadata: Metadata::from_entry(&entry),
                    name,
                }
            })
            .collect::<Vec<_>>();
        Ok(ReadDir {
            entries: entries.into_iter(),
        })
    }

    /// Creates one directory, as `std::fs::create_dir`.
    ///
    /// The API has no mkdir: the client checks std's preconditions, writes a uniquely named
    /// placeholder inside the new directory with `mkdirParents=true` and deletes it.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` if the path exists, `NotFound` if the parent does not, `NotADirectory` if the
    /// parent is a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-create_dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir("new")?;
    /// assert!(fs.metadata("new")?.is_dir());
    /// assert_eq!(fs.create_dir("new").unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_dir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = self.resolve(path.as_ref())?;
        if self.exists(&path)? {
            return Err(already_exists(&path));
        }
        let parent = parent_of(&path);
        match self.metadata(&parent) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(not_a_directory(&parent)),
            Err(e) => return Err(e),
        }
        self.make_dir(&path)
    }

    /// Creates a directory and any missing parents, as `std::fs::create_dir_all`; `Ok` if it
    /// already is a directory.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` if the path is a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-create_dir_all", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir_all("a/b/c")?;
    /// fs.create_dir_all("a/b/c")?;
    /// assert!(fs.metadata("a/b")?.is_dir());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = self.resolve(path.as_ref())?;
        match self.metadata(&path) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => return Err(already_exists(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.make_dir(&path)
    }

    /// Removes a file or symlink (never a symlink's target), as `std::fs::remove_file`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `IsADirectory` for a directory; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-remove_file", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("old.log", "")?;
    /// fs.remove_file("old.log")?;
    /// assert!(!fs.exists("old.log")?);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn remove_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.remove(path.as_ref(), false, false)
    }

    /// Removes an empty directory, as `std::fs::remove_dir`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `DirectoryNotEmpty`, `NotADirectory` for a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-remove_dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir("empty")?;
    /// fs.remove_dir("empty")?;
    /// assert!(!fs.exists("empty")?);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn remove_dir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.remove(path.as_ref(), true, false)
    }

    /// Removes a directory and everything in it, as `std::fs::remove_dir_all`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `NotADirectory` for a file; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-remove_dir_all", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir_all("build/out")?;
    /// fs.write("build/out/a.o", "")?;
    /// fs.remove_dir_all("build")?;
    /// assert!(!fs.exists("build")?);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn remove_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.remove(path.as_ref(), true, true)
    }

    /// Renames a file or directory, replacing `to` if it exists, as `std::fs::rename`.
    ///
    /// # Errors
    ///
    /// `NotFound` for a missing `from`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-rename", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("draft.txt", "v1")?;
    /// fs.rename("draft.txt", "final.txt")?;
    /// assert_eq!(fs.read_to_string("final.txt")?, "v1");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from, to) = (self.resolve(from.as_ref())?, self.resolve(to.as_ref())?);
        self.post(
            "rename",
            json!({ "source": from, "dest": to, "workingDir": self.cwd }),
        )?;
        Ok(())
    }

    /// Copies a file's contents and permissions, as `std::fs::copy`; returns the number of bytes
    /// copied. The copy happens on the sprite: nothing passes through this machine.
    ///
    /// # Errors
    ///
    /// `NotFound`, `IsADirectory` for a directory (see [`copy_recursive`](Self::copy_recursive)); a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-copy", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("a.txt", "abc")?;
    /// assert_eq!(fs.copy("a.txt", "b.txt")?, 3);
    /// assert_eq!(fs.read_to_string("b.txt")?, "abc");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn copy(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
        let (from, to) = (self.resolve(from.as_ref())?, self.resolve(to.as_ref())?);
        let meta = self.metadata(&from)?;
        if meta.is_dir() {
            return Err(is_a_directory(&from));
        }
        let body = json!({ "source": from, "dest": to, "workingDir": self.cwd, "recursive": false, "preserveAttrs": true });
        self.post("copy", body)?;
        Ok(meta.len())
    }

    /// Copies a directory tree on the sprite (an extra beside std).
    ///
    /// # Errors
    ///
    /// `NotFound`; copying a directory into itself is `InvalidInput`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-copy_recursive", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir_all("src/sub")?;
    /// fs.write("src/sub/f", "x")?;
    /// fs.copy_recursive("src", "backup")?;
    /// assert_eq!(fs.read_to_string("backup/sub/f")?, "x");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn copy_recursive(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from, to) = (self.resolve(from.as_ref())?, self.resolve(to.as_ref())?);
        let body = json!({ "source": from, "dest": to, "workingDir": self.cwd, "recursive": true, "preserveAttrs": true });
        self.post("copy", body)?;
        Ok(())
    }

    /// Sets permission bits (`perm.mode() & 0o7777`), following a symlink, as
    /// `std::fs::set_permissions`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `PermissionDenied`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-set_permissions", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use sprites::fs::Permissions;
    /// fs.write("script.sh", "#!/bin/sh\n")?;
    /// fs.set_permissions("script.sh", Permissions::from_mode(0o755))?;
    /// assert_eq!(fs.metadata("script.sh")?.permissions().mode() & 0o777, 0o755);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn set_permissions(&self, path: impl AsRef<Path>, perm: Permissions) -> io::Result<()> {
        self.chmod(path.as_ref(), perm.mode(), false)
    }

    /// Sets permission bits on a directory tree, like `chmod -R` (an extra beside std); symlinks
    /// inside are skipped.
    ///
    /// # Errors
    ///
    /// As [`set_permissions`](Self::set_permissions).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-set_permissions_recursive", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use sprites::fs::Permissions;
    /// fs.create_dir_all("shared/docs")?;
    /// fs.write("shared/docs/a", "")?;
    /// fs.set_permissions_recursive("shared", Permissions::from_mode(0o750))?;
    /// assert_eq!(fs.metadata("shared/docs/a")?.mode() & 0o777, 0o750);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn set_permissions_recursive(
        &self,
        path: impl AsRef<Path>,
        perm: Permissions,
    ) -> io::Result<()> {
        self.chmod(path.as_ref(), perm.mode(), true)
    }

    /// Opens a file for reading, as `File::open`. The file streams: any size reads in constant
    /// memory, and `Seek` works through HTTP ranges.
    ///
    /// # Errors
    ///
    /// `NotFound`, `IsADirectory`, `PermissionDenied`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-open", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::{Read, Seek, SeekFrom};
    /// fs.write("digits", "0123456789")?;
    /// let mut file = fs.open("digits")?;
    /// file.seek(SeekFrom::Start(7))?;
    /// let mut tail = String::new();
    /// file.read_to_string(&mut tail)?;
    /// assert_eq!(tail, "789");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.options().read(true).open(path)
    }

    /// Creates or truncates a file for writing, as `File::create`. Writes stream; the file is
    /// committed by [`File::close`], [`File::sync_all`] or drop (see [`File`]).
    ///
    /// # Errors
    ///
    /// `NotFound` for a missing parent, `IsADirectory`; a transport error, or an API error for the sprite itself (`NotFound` for a sprite that does not exist, `PermissionDenied` for a bad token).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-create", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// let mut file = fs.create("out.txt")?;
    /// writeln!(file, "line 1")?;
    /// writeln!(file, "line 2")?;
    /// file.close()?;
    /// assert_eq!(fs.read_to_string("out.txt")?, "line 1\nline 2\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates a file for writing, failing with `AlreadyExists` if it exists, as
    /// `File::create_new`. (Checked when opening: the API has no exclusive create.)
    ///
    /// # Errors
    ///
    /// `AlreadyExists`, and as [`create`](Self::create).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-create_new", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// fs.create_new("once.txt")?.write_all(b"first")?;
    /// assert_eq!(fs.create_new("once.txt").unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_new(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.options().write(true).create_new(true).open(path)
    }

    /// [`OpenOptions`] bound to this filesystem, as `File::options`:
    /// `fs.options().write(true).create(true).open(path)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-options", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// use std::io::Write;
    /// let mut file = fs.options().write(true).create(true).truncate(true).mode(0o600).open("key")?;
    /// file.write_all(b"secret")?;
    /// file.close()?;
    /// assert_eq!(fs.metadata("key")?.mode() & 0o777, 0o600);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn options(&self) -> OpenOptions {
        OpenOptions::new(self.clone())
    }

    /// The target of a symbolic link, as stored (a relative target stays relative), as
    /// `std::fs::read_link`. The API has no readlink: this runs `readlink` on the sprite.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidInput` for a path that is not a symlink; the errors of running a command.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-read_link", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.symlink("../etc/hosts", "hosts")?;
    /// assert_eq!(fs.read_link("hosts")?, std::path::Path::new("../etc/hosts"));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn read_link(&self, path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let path = self.resolve(path.as_ref())?;
        // The API has no readlink: its listing says what the path is (with std's errors), and
        // coreutils' readlink on the sprite says where it points.
        if !self.symlink_metadata(&path)?.is_symlink() {
            return Err(fs_error(
                io::ErrorKind::InvalidInput,
                "EINVAL",
                &path,
                "not a symbolic link",
            ));
        }
        let target = self.run_tool(&["readlink", "-v", "-z", "--", &path])?;
        Ok(PathBuf::from(utf8_path(strip_nul(target))?))
    }

    /// The absolute path with every symlink, `.` and `..` resolved, as `std::fs::canonicalize`
    /// (`realpath -e` on the sprite, since the API has none).
    ///
    /// # Errors
    ///
    /// `NotFound` (a dangling symlink included); the errors of running a command.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-canonicalize", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir("real")?;
    /// fs.symlink("real", "alias")?;
    /// assert_eq!(fs.canonicalize("alias/.")?, fs.canonicalize("real")?);
    /// assert!(fs.canonicalize("alias")?.ends_with("real"));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn canonicalize(&self, path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let path = self.resolve(path.as_ref())?;
        let resolved = self.run_tool(&["realpath", "-z", "-e", "--", &path])?;
        Ok(PathBuf::from(utf8_path(strip_nul(resolved))?))
    }

    /// Creates a symbolic link at `link` pointing to `original`, as
    /// `std::os::unix::fs::symlink`: `original` is stored as given (a relative one resolves against
    /// the link's directory). Runs `ln -s` on the sprite.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` for an existing `link`, `NotFound` for a missing parent; `InvalidInput` for
    /// an empty or non-UTF-8 `original`; the errors of running a command.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-symlink", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("v2.txt", "two")?;
    /// fs.symlink("v2.txt", "current")?;
    /// assert_eq!(fs.read_to_string("current")?, "two");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn symlink(&self, original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
        let original = original.as_ref().to_str().ok_or_else(|| {
            io::Error::from(Error::InvalidInput(
                "the symlink target is not valid UTF-8, which the API requires".into(),
            ))
        })?;
        if original.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty symlink target",
            ));
        }
        let link = self.resolve(link.as_ref())?;
        self.run_tool(&["ln", "-s", "-T", "--", original, &link])
            .map(drop)
    }

    /// Creates a hard link at `link` to the file `original`, as `std::fs::hard_link`: a symlink
    /// `original` is linked itself, not followed. Runs `ln` on the sprite.
    ///
    /// # Errors
    ///
    /// `NotFound`, `AlreadyExists`, `PermissionDenied` for a directory; the errors of running a command.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-mod-hard_link", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("a", "same")?;
    /// fs.hard_link("a", "b")?;
    /// assert_eq!(fs.read_to_string("b")?, "same");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn hard_link(&self, original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
        let original = self.resolve(original.as_ref())?;
        let link = self.resolve(link.as_ref())?;
        self.run_tool(&["ln", "-P", "-T", "--", &original, &link])
            .map(drop)
    }

    // ---- internals ----

    /// Runs a coreutils program on the sprite for what the API cannot do, in the C locale so its
    /// messages can be read; its stderr's `strerror` text gives the error kind.
    fn run_tool(&self, argv: &[&str]) -> io::Result<Vec<u8>> {
        let output = self
            .sprite
            .command(argv[0])
            .args(&argv[1..])
            .current_dir(&self.cwd)
            .env("LC_ALL", "C")
            .output()?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(io::Error::new(
            tool_error_kind(&message),
            if message.is_empty() {
                format!("{} failed with {}", argv[0], output.status)
            } else {
                message
            },
        ))
    }

    /// `NotFound` unless the parent of `path` is a directory (std's open fails there).
    pub(crate) fn check_parent(&self, path: &str) -> io::Result<()> {
        let parent = parent_of(path);
        match self.metadata(&parent) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(not_a_directory(&parent)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(path)),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn sprite(&self) -> &Sprite {
        &self.sprite
    }

    /// Absolute, lexically cleaned path as a UTF-8 string.
    pub(crate) fn resolve(&self, path: &Path) -> io::Result<String> {
        if path.as_os_str().is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        }
        let cleaned = clean(Path::new(&self.cwd), path);
        cleaned.to_str().map(str::to_owned).ok_or_else(|| {
            io::Error::from(Error::InvalidInput(format!(
                "the path {path:?} is not valid UTF-8, which the API requires"
            )))
        })
    }

    pub(crate) fn fs_path(&self, op: &str, query: &Query) -> String {
        self.sprite.path(&format!("/fs/{op}{}", query.as_str()))
    }

    fn stat(&self, path: &str) -> io::Result<Metadata> {
        if path == "/" {
            return Ok(Metadata::root());
        }
        let parent = parent_of(path);
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let entries = self.list(&parent)?;
        entries
            .iter()
            .find(|e| e.name == name || (e.name.is_empty() && e.path == path))
            .map(Metadata::from_entry)
            .ok_or_else(|| not_found(path))
    }

    fn list(&self, path: &str) -> io::Result<Vec<FsEntry>> {
        let args = [("path", path.to_owned()), ("workingDir", self.cwd.clone())];
        let call = over_control::Call {
            op: "fs.list",
            args: &args,
            content: None,
            read_limit: None,
        };
        over_control::run(self, &call, |answer| {
            serde_json::from_value::<FsListing>(answer.result).ok()
        })
        .or_http(|| {
            let client = self.sprite.client();
            let request = client.request("GET", &self.fs_path("list", &query_of(&args)));
            let response = client.send(request, None)?;
            crate::Client::decode::<FsListing>(response).map_err(io::Error::from)
        })
        .map(|listing| listing.entries)
    }

    fn delete(&self, path: &str, recursive: bool) -> io::Result<()> {
        let args = [
            ("path", path.to_owned()),
            ("workingDir", self.cwd.clone()),
            ("recursive", recursive.to_string()),
        ];
        let call = over_control::Call {
            op: "fs.delete",
            args: &args,
            content: None,
            read_limit: None,
        };
        over_control::run(self, &call, |_| Some(())).or_http(|| {
            let client = self.sprite.client();
            let request = client.request("DELETE", &self.fs_path("delete", &query_of(&args)));
            let response = client.send(request, None)?;
            Ok(client.drain(response)?)
        })
    }

    fn chmod(&self, path: &Path, mode: u32, recursive: bool) -> io::Result<()> {
        let path = self.resolve(path)?;
        let body = json!({ "path": path, "workingDir": self.cwd, "mode": format!("{:04o}", mode & 0o7777), "recursive": recursive });
        self.post("chmod", body)?;
        Ok(())
    }

    /// `POST /fs/{op}` with a JSON body, or (rename, copy, chmod) `fs.{op}` over control with
    /// the body's fields as args.
    fn post(&self, op: &'static str, body: serde_json::Value) -> io::Result<()> {
        let args: Vec<(&'static str, String)> = body
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| {
                let key = CONTROL_ARG_KEYS.iter().find(|k| **k == key)?;
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((*key, value))
            })
            .collect();
        let control_op = match op {
            "rename" => Some("fs.rename"),
            "copy" => Some("fs.copy"),
            "chmod" => Some("fs.chmod"),
            _ => None,
        };
        let outcome = match control_op {
            Some(op) => {
                let call = over_control::Call {
                    op,
                    args: &args,
                    content: None,
                    read_limit: None,
                };
                over_control::run(self, &call, |_| Some(()))
            }
            None => over_control::Outcome::Http,
        };
        outcome.or_http(|| {
            let client = self.sprite.client();
            let request = client.request("POST", &self.sprite.path(&format!("/fs/{op}")));
            let response = client.send(request, Some(&body))?;
            Ok(client.drain(response)?)
        })
    }

    /// One-shot upload of an in-memory body: over control when it is small and a connection
    /// is idle, else a `PUT`.
    fn put(&self, path: &str, contents: &[u8], mode: u32, mkdir_parents: bool) -> io::Result<()> {
        if contents.len() <= over_control::SMALL {
            let args = write_args(path, &self.cwd, mode, mkdir_parents);
            let call = over_control::Call {
                op: "fs.write",
                args: &args,
                content: Some(contents),
                read_limit: None,
            };
            match over_control::run(self, &call, |_| Some(())) {
                over_control::Outcome::Done(()) => return Ok(()),
                over_control::Outcome::Failed(err) => return Err(err),
                over_control::Outcome::Http => {}
            }
        }
        let client = self.sprite.client();
        let request = client
            .streaming_request(
                "PUT",
                &self.fs_path("write", &write_query(path, &self.cwd, mode, mkdir_parents)),
            )
            .set("Content-Type", "application/octet-stream");
        let response = request.send_bytes(contents).map_err(Error::from)?;
        // Read to the end so the agent pools the connection for the next call.
        Ok(client.drain(response)?)
    }

    /// `remove_file` (`dir == false`), `remove_dir`, `remove_dir_all`: std's type checks, then delete.
    fn remove(&self, path: &Path, dir: bool, recursive: bool) -> io::Result<()> {
        let path = self.resolve(path)?;
        match (self.symlink_metadata(&path)?.is_dir(), dir) {
            (true, false) => Err(is_a_directory(&path)),
            (false, true) => Err(not_a_directory(&path)),
            _ => self.delete(&path, recursive),
        }
    }

    /// mkdir through a placeholder: write `<dir>/.sprites-mkdir-<random>` with parents, delete it.
    fn make_dir(&self, path: &str) -> io::Result<()> {
        let placeholder = format!(
            "{}/.sprites-mkdir-{:016x}",
            path.trim_end_matches('/'),
            random_id()
        );
        self.put(&placeholder, b"", 0o600, true)?;
        self.delete(&placeholder, false)
    }
}

pub(crate) fn write_query(path: &str, cwd: &str, mode: u32, mkdir_parents: bool) -> Query {
    query_of(&write_args(path, cwd, mode, mkdir_parents))
}

/// A write's args, for the HTTP query and the control op alike.
fn write_args(
    path: &str,
    cwd: &str,
    mode: u32,
    mkdir_parents: bool,
) -> [(&'static str, String); 4] {
    [
        ("path", path.to_owned()),
        ("workingDir", cwd.to_owned()),
        ("mode", format!("{:04o}", mode & 0o7777)),
        // Explicit both ways: over control the server's default is true (§8.5).
        ("mkdirParents", mkdir_parents.to_string()),
    ]
}

/// The HTTP query of a call's args.
fn query_of(args: &[(&'static str, String)]) -> Query {
    let mut query = Query::new();
    for (key, value) in args {
        query.push(key, value);
    }
    query
}

/// The fields of the JSON bodies of rename, copy and chmod (§9), which are their args over
/// control (§8.5).
const CONTROL_ARG_KEYS: [&str; 7] = [
    "path",
    "source",
    "dest",
    "workingDir",
    "mode",
    "recursive",
    "preserveAttrs",
];

pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process from the OS; mixing in time and a counter makes
    // collisions between concurrent callers vanishingly unlikely without a rand dependency.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// The kind of a coreutils error message (C locale), from the `strerror` text it ends with.
fn tool_error_kind(message: &str) -> io::ErrorKind {
    use io::ErrorKind as K;
    const KINDS: [(&str, K); 9] = [
        ("No such file or directory", K::NotFound),
        ("File exists", K::AlreadyExists),
        ("Permission denied", K::PermissionDenied),
        ("Operation not permitted", K::PermissionDenied),
        ("hard link not allowed for directory", K::PermissionDenied),
        ("Not a directory", K::NotADirectory),
        ("Is a directory", K::IsADirectory),
        ("Invalid argument", K::InvalidInput),
        ("Read-only file system", K::ReadOnlyFilesystem),
    ];
    KINDS
        .iter()
        .find(|(text, _)| message.contains(text))
        .map_or(K::Other, |&(_, kind)| kind)
}

/// A tool's NUL-terminated output (`-z`) without the terminator.
fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

fn utf8_path(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        io::Error::from(Error::Protocol(format!(
            "a path from the sprite is not valid UTF-8: {e}"
        )))
    })
}

fn parent_of(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
        _ => "/".into(),
    }
}

/// `base.join(path)` with `.` and `..` resolved lexically, always absolute.
fn clean(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

pub(crate) fn not_a_directory(path: &str) -> io::Error {
    fs_error(
        io::ErrorKind::NotADirectory,
        "ENOTDIR",
        path,
        "not a directory",
    )
}

pub(crate) fn is_a_directory(path: &str) -> io::Error {
    fs_error(
        io::ErrorKind::IsADirectory,
        "EISDIR",
        path,
        "is a directory",
    )
}

pub(crate) fn already_exists(path: &str) -> io::Error {
    fs_error(io::ErrorKind::AlreadyExists, "EEXIST", path, "file exists")
}

pub(crate) fn not_found(path: &str) -> io::Error {
    fs_error(
        io::ErrorKind::NotFound,
        "ENOENT",
        path,
        "no such file or directory",
    )
}

/// An `io::Error` of `kind` wrapping an API-shaped error, for checks the client makes itself.
fn fs_error(kind: io::ErrorKind, errno: &str, path: &str, text: &str) -> io::Error {
    let mut api = ApiError::new(0, Some(errno), format!("{text}: {path}"));
    api.path = Some(path.to_owned());
    io::Error::new(kind, Error::from(api))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        let base = Path::new("/home/sprite");
        assert_eq!(
            clean(base, Path::new("a/./b/../c")),
            Path::new("/home/sprite/a/c")
        );
        assert_eq!(clean(base, Path::new("/etc/../../x")), Path::new("/x"));
        assert_eq!(clean(base, Path::new("..")), Path::new("/home"));
        assert_eq!(clean(Path::new("/"), Path::new("")), Path::new("/"));
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/a/b"), "/a");
    }
}
