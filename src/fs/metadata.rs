//! [`Metadata`], [`FileType`], [`Permissions`], [`ReadDir`] and [`DirEntry`], shaped like std's,
//! built from the API's `FsEntry` ([PROTOCOL.md §9](crate::protocol#9-filesystem-api)).

use serde::Deserialize;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFSOCK: u32 = 0o140000;

/// One entry as the API sends it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FsEntry {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) path: String,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) size: Option<u64>,
    #[serde(default)]
    pub(crate) mode: Option<serde_json::Value>,
    #[serde(default, rename = "modTime")]
    pub(crate) mod_time: Option<String>,
    #[serde(default, rename = "isDir")]
    pub(crate) is_dir: Option<bool>,
}

/// A listing as the API sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct FsListing {
    #[serde(default)]
    pub(crate) entries: Vec<FsEntry>,
}

/// The kind of a file, like `std::fs::FileType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileType(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// A type the server named that this client does not know.
    Unknown,
}

impl Kind {
    /// From the entry's `type` ([PROTOCOL.md §9](crate::protocol#9-filesystem-api)); unknown names are not guessed to be files.
    fn from_name(name: &str) -> Kind {
        match name {
            "file" => Kind::File,
            "directory" | "dir" => Kind::Dir,
            "symlink" | "link" => Kind::Symlink,
            "fifo" => Kind::Fifo,
            "socket" => Kind::Socket,
            "char_device" => Kind::CharDevice,
            "block_device" => Kind::BlockDevice,
            _ => Kind::Unknown,
        }
    }

    /// From the file-type bits of a mode, when a server sends them.
    fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            S_IFIFO => Kind::Fifo,
            S_IFSOCK => Kind::Socket,
            S_IFCHR => Kind::CharDevice,
            S_IFBLK => Kind::BlockDevice,
            _ => return None,
        })
    }

    fn mode_bits(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
            Kind::Fifo => S_IFIFO,
            Kind::Socket => S_IFSOCK,
            Kind::CharDevice => S_IFCHR,
            Kind::BlockDevice => S_IFBLK,
            Kind::Unknown => 0,
        }
    }
}

impl FileType {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.0 == Kind::Dir
    }
    /// A regular file: not a directory, symlink, fifo, socket or device.
    pub fn is_file(&self) -> bool {
        self.0 == Kind::File
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.0 == Kind::Symlink
    }
    /// A named pipe (`FileTypeExt::is_fifo`).
    pub fn is_fifo(&self) -> bool {
        self.0 == Kind::Fifo
    }
    /// A Unix socket (`FileTypeExt::is_socket`).
    pub fn is_socket(&self) -> bool {
        self.0 == Kind::Socket
    }
    /// A character device (`FileTypeExt::is_char_device`).
    pub fn is_char_device(&self) -> bool {
        self.0 == Kind::CharDevice
    }
    /// A block device (`FileTypeExt::is_block_device`).
    pub fn is_block_device(&self) -> bool {
        self.0 == Kind::BlockDevice
    }
}

/// Permission bits, like `std::fs::Permissions` with `std::os::unix::fs::PermissionsExt`.
///
/// ```
/// let mut perms = sprites::fs::Permissions::from_mode(0o644);
/// assert!(!perms.readonly());
/// perms.set_readonly(true);
/// assert_eq!(perms.mode() & 0o777, 0o444);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    mode: u32,
}

impl Permissions {
    /// Permissions from a mode such as `0o755`.
    pub fn from_mode(mode: u32) -> Permissions {
        Permissions { mode }
    }
    /// The mode, file-type bits included when known (as `PermissionsExt::mode`).
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// Replaces the mode.
    pub fn set_mode(&mut self, mode: u32) {
        self.mode = mode;
    }
    /// No write bit set for anyone.
    pub fn readonly(&self) -> bool {
        self.mode & 0o222 == 0
    }
    /// Clears (or sets, for the owner) the write bits, as std does on Unix.
    pub fn set_readonly(&mut self, readonly: bool) {
        if readonly {
            self.mode &= !0o222;
        } else {
            self.mode |= 0o200;
        }
    }
}

/// What is known about a file, like `std::fs::Metadata`.
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata {
    file_type: FileType,
    len: u64,
    permissions: Permissions,
    modified: Option<SystemTime>,
}

impl Metadata {
    pub(crate) fn from_entry(entry: &FsEntry) -> Metadata {
        let mode = entry.mode.as_ref().and_then(parse_mode).unwrap_or(0);
        // The type bits of the mode win where a server sends them: they are what lstat said.
        let kind = Kind::from_mode(mode).unwrap_or(match (entry.kind.as_deref(), entry.is_dir) {
            (Some(name), _) => Kind::from_name(name),
            (None, Some(true)) => Kind::Dir,
            (None, _) => Kind::File,
        });
        Metadata {
            file_type: FileType(kind),
            len: entry.size.unwrap_or(0),
            permissions: Permissions::from_mode(kind.mode_bits() | (mode & 0o7777)),
            modified: entry.mod_time.as_deref().and_then(parse_rfc3339),
        }
    }

    pub(crate) fn root() -> Metadata {
        Metadata {
            file_type: FileType(Kind::Dir),
            len: 0,
            permissions: Permissions::from_mode(S_IFDIR | 0o755),
            modified: None,
        }
    }

    /// The kind of file.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type.is_dir()
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type.is_file()
    }
    /// A symbolic link (only from [`Filesystem::symlink_metadata`](crate::fs::Filesystem::symlink_metadata)).
    pub fn is_symlink(&self) -> bool {
        self.file_type.is_symlink()
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Permission (and type) bits.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }
    /// `mode()` as `MetadataExt` gives it.
    pub fn mode(&self) -> u32 {
        self.permissions.mode
    }
    /// Last modification time; `Unsupported` when the server did not send one.
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.modified.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the server sent no modification time",
            )
        })
    }
    /// Last access time: `Unsupported`, as std's is on platforms without it — the API reports
    /// modification times only.
    pub fn accessed(&self) -> io::Result<SystemTime> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the Sprites API reports no access time",
        ))
    }
    /// Creation time: `Unsupported`, as std's is on platforms without it — the API reports
    /// modification times only.
    pub fn created(&self) -> io::Result<SystemTime> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the Sprites API reports no creation time",
        ))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("file_type", &self.file_type)
            .field("len", &self.len)
            .field("mode", &format_args!("{:o}", self.permissions.mode))
            .field("modified", &self.modified)
            .finish()
    }
}

/// One entry of a [`ReadDir`], like `std::fs::DirEntry`; its metadata came with the listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub(crate) path: PathBuf,
    pub(crate) name: OsString,
    pub(crate) metadata: Metadata,
}

impl DirEntry {
    /// The full path of the entry.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }
    /// The entry's name, without its directory.
    pub fn file_name(&self) -> OsString {
        self.name.clone()
    }
    /// The entry's metadata (not following symlinks), from the listing: no extra request.
    pub fn metadata(&self) -> io::Result<Metadata> {
        Ok(self.metadata.clone())
    }
    /// The entry's type.
    pub fn file_type(&self) -> io::Result<FileType> {
        Ok(self.metadata.file_type())
    }
}

/// The entries of a directory, like `std::fs::ReadDir` (fetched in one request).
#[derive(Debug)]
pub struct ReadDir {
    pub(crate) entries: std::vec::IntoIter<DirEntry>,
}

impl Iterator for ReadDir {
    type Item = io::Result<DirEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(Ok)
    }
}

/// `"0644"`, `"644"`, `"0o644"` or the JSON integer 420.
fn parse_mode(value: &serde_json::Value) -> Option<u32> {
    match value {
        serde_json::Value::String(s) => {
            let digits = s.trim().trim_start_matches("0o");
            u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8).ok()
        }
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// Parses RFC 3339 (`2026-01-13T10:30:00Z`, fractions and offsets allowed) to a `SystemTime`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::new(secs.unsigned_abs(), 0))?
            .checked_add(Duration::new(0, nanos))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2026-01-13T10:30:00Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_768_300_200
        );
        let t = parse_rfc3339("2026-06-02T17:11:14.555839485Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            555_839_485
        );
        let a = parse_rfc3339("2026-01-13T12:30:00+02:00").unwrap();
        assert_eq!(a, parse_rfc3339("2026-01-13T10:30:00Z").unwrap());
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_to_metadata() {
        let entry: FsEntry = serde_json::from_str(
            r#"{"name":"d","path":"/d","type":"directory","size":4096,"mode":"0755","modTime":"2026-01-13T10:30:00Z","isDir":true}"#,
        )
        .unwrap();
        let meta = Metadata::from_entry(&entry);
        assert!(meta.is_dir() && !meta.is_file());
        assert_eq!(meta.mode(), 0o40755);
        assert!(meta.modified().is_ok());
        let entry: FsEntry =
            serde_json::from_str(r#"{"name":"f","type":"file","size":3,"mode":420}"#).unwrap();
        let meta = Metadata::from_entry(&entry);
        assert_eq!(
            (
                meta.is_file(),
                meta.len(),
                meta.permissions().mode() & 0o777
            ),
            (true, 3, 0o644)
        );
        assert!(meta.modified().is_err());
        let entry: FsEntry =
            serde_json::from_str(r#"{"name":"l","type":"symlink","mode":"777"}"#).unwrap();
        assert!(Metadata::from_entry(&entry).is_symlink());
        assert!(meta.accessed().is_err() && meta.created().is_err());
        assert_eq!(
            meta.accessed().unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
    }

    #[test]
    fn special_files_are_not_regular_files() {
        let kind = |json: &str| {
            let entry: FsEntry = serde_json::from_str(json).unwrap();
            Metadata::from_entry(&entry)
        };
        let fifo = kind(r#"{"name":"p","type":"fifo","mode":"0600"}"#);
        assert!(fifo.file_type().is_fifo() && !fifo.is_file() && !fifo.is_dir());
        assert_eq!(fifo.mode(), 0o010600);
        let sock = kind(r#"{"name":"s","type":"socket","mode":"0755"}"#);
        assert!(sock.file_type().is_socket() && !sock.is_file());
        let chr = kind(r#"{"name":"null","type":"char_device"}"#);
        assert!(chr.file_type().is_char_device() && !chr.is_file());
        let blk = kind(r#"{"name":"sda","type":"block_device"}"#);
        assert!(blk.file_type().is_block_device() && !blk.is_file());
        let odd = kind(r#"{"name":"x","type":"door"}"#);
        assert!(!odd.is_file() && !odd.is_dir() && !odd.is_symlink());
        // Type bits in the mode win over the name (a server that says "file" for everything).
        let by_mode = kind(r#"{"name":"p","type":"file","mode":4516}"#);
        assert!(by_mode.file_type().is_fifo(), "0o10644 is a fifo");
        let plain = kind(r#"{"name":"f","mode":"0644"}"#);
        assert!(plain.is_file());

        // Every type the mode's bits can name, against a "type" that says otherwise; each
        // predicate true for its own type only.
        type Predicate = fn(&FileType) -> bool;
        let types: [(u32, Predicate); 7] = [
            (S_IFREG, FileType::is_file),
            (S_IFDIR, FileType::is_dir),
            (S_IFLNK, FileType::is_symlink),
            (S_IFIFO, FileType::is_fifo),
            (S_IFSOCK, FileType::is_socket),
            (S_IFCHR, FileType::is_char_device),
            (S_IFBLK, FileType::is_block_device),
        ];
        for (bits, _) in types {
            let name = if bits == S_IFDIR { "file" } else { "directory" };
            let meta = kind(&format!(
                r#"{{"name":"x","type":"{name}","mode":{}}}"#,
                bits | 0o640
            ));
            for (other, predicate) in types {
                assert_eq!(
                    predicate(&meta.file_type()),
                    other == bits,
                    "{bits:o} vs {other:o}"
                );
            }
            assert_eq!(meta.mode(), bits | 0o640);
        }
    }
}
