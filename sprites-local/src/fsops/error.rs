//! [`FsError`]: an errno and the path it concerns, and how it maps to the wire
//! (PROTOCOL.md §3.2: `{"error":"no such file or directory","code":"ENOENT","path":"/abs"}`).

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// A failed filesystem operation: the errno the OS (or our own validation) gave, the absolute
/// path it concerns and a lowercase, Go-style text (`no such file or directory`).
///
/// It is plain data (serde) so a runtime that performs operations elsewhere (an in-sprite
/// agent) can send it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsError {
    /// The errno number (`libc::ENOENT`, ...).
    pub errno: i32,
    /// The absolute path the error concerns.
    pub path: String,
    /// Human-readable text; the errno's own text unless validation said something more precise.
    pub message: String,
}

impl FsError {
    /// An error with the errno's standard text.
    pub fn new(errno: i32, path: impl Into<String>) -> FsError {
        FsError {
            errno,
            path: path.into(),
            message: errno_text(errno),
        }
    }

    /// An error with the errno's text followed by `detail` (`invalid argument: bad mode`).
    pub fn with_detail(errno: i32, path: impl Into<String>, detail: &str) -> FsError {
        FsError {
            errno,
            path: path.into(),
            message: format!("{}: {detail}", errno_text(errno)),
        }
    }

    /// Converts an OS error about `path`. Errors without an errno (std's own validation, such
    /// as a NUL byte in a path) are mapped by kind.
    pub fn from_io(err: &io::Error, path: impl Into<String>) -> FsError {
        let errno = err.raw_os_error().unwrap_or(match err.kind() {
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::PermissionDenied => libc::EACCES,
            io::ErrorKind::AlreadyExists => libc::EEXIST,
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => libc::EINVAL,
            _ => libc::EIO,
        });
        FsError::new(errno, path)
    }

    /// The `code` field: the errno's name for the errnos clients know, `EIO` for the rest
    /// (their text still says what happened, e.g. `no space left on device`).
    pub fn code(&self) -> &'static str {
        match self.errno {
            libc::ENOENT => "ENOENT",
            libc::EEXIST => "EEXIST",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EACCES => "EACCES",
            libc::EPERM => "EPERM",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::EINVAL => "EINVAL",
            libc::ELOOP => "ELOOP",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            _ => "EIO",
        }
    }

    /// The HTTP status for this error (the mapping PROTOCOL.md §3.2 suggests, plus ELOOP,
    /// ENAMETOOLONG and EPERM).
    pub fn status(&self) -> u16 {
        match self.errno {
            libc::ENOENT => 404,
            // A name or path too long is the request's fault, like EINVAL.
            libc::EINVAL | libc::EISDIR | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => 400,
            libc::EACCES | libc::EPERM => 403,
            libc::EEXIST | libc::ENOTEMPTY => 409,
            _ => 500,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FsError {}

/// `strerror` text in Go's style: lowercase first letter, no `(os error N)` suffix.
pub fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_look_like_go() {
        assert_eq!(errno_text(libc::ENOENT), "no such file or directory");
        assert_eq!(errno_text(libc::EISDIR), "is a directory");
        assert_eq!(errno_text(libc::ENOTEMPTY), "directory not empty");
        assert_eq!(errno_text(libc::EACCES), "permission denied");
    }

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (libc::ENOENT, "ENOENT", 404),
            (libc::EINVAL, "EINVAL", 400),
            (libc::EISDIR, "EISDIR", 400),
            (libc::ENOTDIR, "ENOTDIR", 400),
            (libc::ELOOP, "ELOOP", 400),
            (libc::ENAMETOOLONG, "ENAMETOOLONG", 400),
            (libc::EACCES, "EACCES", 403),
            (libc::EPERM, "EPERM", 403),
            (libc::EEXIST, "EEXIST", 409),
            (libc::ENOTEMPTY, "ENOTEMPTY", 409),
            (libc::EIO, "EIO", 500),
            (libc::ENOSPC, "EIO", 500),
            (libc::EXDEV, "EIO", 500),
        ];
        for (errno, code, status) in cases {
            let e = FsError::new(errno, "/p");
            assert_eq!((e.code(), e.status()), (code, status), "errno {errno}");
        }
        assert_eq!(
            FsError::new(libc::ENOSPC, "/p").message,
            "no space left on device"
        );
    }

    #[test]
    fn io_errors_without_errno_map_by_kind() {
        let nul = std::fs::metadata("a\0b").unwrap_err();
        assert_eq!(FsError::from_io(&nul, "/a").errno, libc::EINVAL);
        let other = io::Error::other("x");
        assert_eq!(FsError::from_io(&other, "/a").errno, libc::EIO);
        let os = io::Error::from_raw_os_error(libc::ELOOP);
        let e = FsError::from_io(&os, "/l");
        assert_eq!((e.code(), e.path.as_str()), ("ELOOP", "/l"));
    }
}
