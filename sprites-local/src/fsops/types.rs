//! The serialisable requests and results of [`SpriteFs`](super::SpriteFs). Result structs
//! serialise to exactly the JSON bodies of PROTOCOL.md §9 (field names are camelCase).

use serde::{Deserialize, Serialize};

/// One non-streaming operation. Paths are absolute and clean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum FsOp {
    /// A directory's entries (all descendants with `recursive`), or one entry for a
    /// non-directory.
    List {
        /// What to list.
        path: String,
        /// Walk the whole tree (symlinks are not followed).
        recursive: bool,
    },
    /// Remove a file, symlink or empty directory (any directory with `recursive`).
    Delete {
        /// What to remove (never `/`).
        path: String,
        /// Remove a directory's contents too.
        recursive: bool,
    },
    /// `rename(2)`, replacing `dest` if it exists.
    Rename {
        /// The existing path.
        source: String,
        /// The new path.
        dest: String,
    },
    /// Copy a file (or a tree with `recursive`).
    Copy {
        /// What to copy (a symlink given here is followed).
        source: String,
        /// Where to (an existing file is replaced, an existing directory merged into).
        dest: String,
        /// Required to copy a directory.
        recursive: bool,
        /// Keep permission bits and timestamps (and ownership when allowed).
        preserve_attrs: bool,
    },
    /// Set permission bits (on the whole tree with `recursive`; symlinks are skipped).
    Chmod {
        /// What to change (a symlink given here is followed).
        path: String,
        /// Permission bits, `<= 0o7777`.
        mode: u32,
        /// Apply to every file and directory below too.
        recursive: bool,
    },
    /// Change owner and/or group (on the whole tree with `recursive`; symlinks below are
    /// changed themselves, never followed).
    Chown {
        /// What to change (a symlink given here is followed).
        path: String,
        /// The new owner, if it changes.
        uid: Option<Owner>,
        /// The new group, if it changes.
        gid: Option<Owner>,
        /// Apply to everything below too.
        recursive: bool,
        /// Run with the sprite's root privileges (the `asRoot` field); otherwise as the
        /// sprite's user, who can only give files to itself.
        #[serde(default)]
        as_root: bool,
    },
}

/// A user or group as the chown body gives it: a number, or a name looked up in the
/// sprite's `/etc/passwd` / `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Owner {
    /// A numeric id.
    Id(u32),
    /// A user or group name.
    Name(String),
}

/// The result of an [`FsOp`]; each variant serialises as its response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FsOutput {
    /// For [`FsOp::List`].
    Listing(Listing),
    /// For [`FsOp::Delete`].
    Deleted(Deleted),
    /// For [`FsOp::Rename`].
    Renamed(Renamed),
    /// For [`FsOp::Copy`].
    Copied(Copied),
    /// For [`FsOp::Chmod`].
    Chmodded(Chmodded),
    /// For [`FsOp::Chown`].
    Chowned(Chowned),
}

/// What kind of file an [`Entry`] is (from `lstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file, or anything that is neither a directory nor a symlink.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// One `FsEntry` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The base name.
    pub name: String,
    /// The absolute path.
    pub path: String,
    /// `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits as `%04o`.
    pub mode: String,
    /// Last modification, RFC 3339 UTC.
    pub mod_time: String,
    /// `kind == directory`.
    pub is_dir: bool,
}

/// `{"path","entries","count"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The path listed.
    pub path: String,
    /// The entries, sorted by name (depth-first, pre-order when recursive).
    pub entries: Vec<Entry>,
    /// `entries.len()`.
    pub count: usize,
}

/// `{"deleted","count"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The path removed (a directory's contents are not listed one by one).
    pub deleted: Vec<String>,
    /// `deleted.len()`.
    pub count: usize,
}

/// `{"source","dest"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    /// The old path.
    pub source: String,
    /// The new path.
    pub dest: String,
}

/// One copied item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyPair {
    /// Where it came from.
    pub source: String,
    /// Where it went.
    pub dest: String,
}

/// The union of the copy result shapes: `{"source","dest","count","copied","totalBytes"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Copied {
    /// The source asked for.
    pub source: String,
    /// The destination asked for.
    pub dest: String,
    /// Files, directories and symlinks copied.
    pub count: usize,
    /// The first [`MAX_REPORTED`](super::host::MAX_REPORTED) of them.
    pub copied: Vec<CopyPair>,
    /// Bytes of file content copied.
    pub total_bytes: u64,
}

/// One changed mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeChange {
    /// The path changed.
    pub path: String,
    /// Its new mode (`%04o`).
    pub mode: String,
}

/// The union of the chmod result shapes: `{"path","mode","count","affected"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chmodded {
    /// The path asked for.
    pub path: String,
    /// The mode set (`%04o`).
    pub mode: String,
    /// How many paths changed.
    pub count: usize,
    /// The first [`MAX_REPORTED`](super::host::MAX_REPORTED) of them.
    pub affected: Vec<ModeChange>,
}

/// One changed owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChange {
    /// The path changed.
    pub path: String,
    /// Its owner now.
    pub uid: u32,
    /// Its group now.
    pub gid: u32,
}

/// The union of the chown result shapes: `{"path","uid","gid","count","affected"}` (the
/// ids are those set, `null` for one left alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chowned {
    /// The path asked for.
    pub path: String,
    /// The owner set, if any.
    pub uid: Option<u32>,
    /// The group set, if any.
    pub gid: Option<u32>,
    /// How many paths changed.
    pub count: usize,
    /// The first [`MAX_REPORTED`](super::host::MAX_REPORTED) of them.
    pub affected: Vec<OwnerChange>,
}

/// What a write asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteSpec {
    /// The target (absolute, clean). A symlink here is followed: its target is replaced.
    pub path: String,
    /// Permission bits for the new file (`<= 0o7777`, applied exactly, no umask).
    pub mode: u32,
    /// Create missing parent directories.
    pub mkdir_parents: bool,
    /// fsync the file before it replaces the target, so the answer means "on disk", not
    /// only "visible to every reader" (the server's `--durable-writes`).
    #[serde(default)]
    pub durable: bool,
}

/// `{"path","size","mode"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The path written (as asked for).
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// The mode set (`%04o`).
    pub mode: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ops_round_trip_as_json() {
        let op = FsOp::Copy {
            source: "/a".into(),
            dest: "/b".into(),
            recursive: true,
            preserve_attrs: false,
        };
        let v = serde_json::to_value(&op).unwrap();
        assert_eq!(
            v,
            json!({"op":"copy","source":"/a","dest":"/b","recursive":true,"preserveAttrs":false})
        );
        assert_eq!(serde_json::from_value::<FsOp>(v).unwrap(), op);
    }

    #[test]
    fn entry_shape() {
        let e = Entry {
            name: "a".into(),
            path: "/a".into(),
            kind: EntryKind::Directory,
            size: 0,
            mode: "0755".into(),
            mod_time: "1970-01-01T00:00:00Z".into(),
            is_dir: true,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"name":"a","path":"/a","type":"directory","size":0,"mode":"0755",
                   "modTime":"1970-01-01T00:00:00Z","isDir":true})
        );
        let c = FsOutput::Copied(Copied {
            source: "/a".into(),
            dest: "/b".into(),
            count: 0,
            copied: vec![],
            total_bytes: 3,
        });
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"source":"/a","dest":"/b","count":0,"copied":[],"totalBytes":3})
        );
    }
}
