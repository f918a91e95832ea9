//! File responses: `Range` parsing, and streaming a byte range of an open file to the socket
//! with `sendfile(2)` (no user-space buffer at all; a bounded `pread` loop where sendfile is
//! not possible).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use super::http::response_head;
use crate::sys;

/// Buffer for the `pread` fallback.
const FALLBACK_BUF: usize = 256 * 1024;
/// Most bytes one `sendfile` call is asked for (the kernel caps a call near 2 GiB anyway).
const SENDFILE_MAX: u64 = 1 << 30;

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send the whole file with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A valid range that selects nothing (starts at or past the end): 416.
    Unsatisfiable,
}

/// Parses `Range: bytes=N-`, `bytes=N-M` or `bytes=-SUFFIX` against a file of `len` bytes
/// (RFC 9110 §14). A missing, malformed, non-`bytes` or multi-range header is ignored
/// (`Full`), as the RFC allows; `M` past the end is clamped.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(value) = header else {
        return ByteRange::Full;
    };
    let value = value.trim();
    let Some(unit) = value.get(..6) else {
        return ByteRange::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes=") || value.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = value[6..].trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // More digits than u64 holds: later than any file's end.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    if first.trim().is_empty() {
        // Suffix range: the last N bytes.
        return match num(last) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: len - n.min(len),
                end: len - 1,
            },
        };
    }
    let Some(start) = num(first) else {
        return ByteRange::Full;
    };
    let end = if last.trim().is_empty() {
        u64::MAX
    } else {
        match num(last) {
            Some(end) if end >= start => end,
            _ => return ByteRange::Full,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// A response whose body is `len` bytes of `file` from `offset`.
#[derive(Debug)]
pub struct FileResponse {
    /// 200 or 206.
    pub status: u16,
    /// Extra headers (`Content-Length`, `Sprite-Version` and `Connection` are added).
    pub headers: Vec<(&'static str, String)>,
    /// The open file.
    pub file: File,
    /// First byte to send.
    pub offset: u64,
    /// How many bytes to send (the `Content-Length`).
    pub len: u64,
}

/// Writes `resp`: head, then the file range (unless `head_only`). Returns whether the whole
/// promised body was sent: `false` means the file shrank meanwhile, and since the
/// `Content-Length` can no longer be honoured the caller must close the connection.
pub fn write_file_response<W: Write + AsFd>(
    out: &mut W,
    resp: &FileResponse,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let head = response_head(resp.status, &resp.headers, Some(resp.len), keep_alive);
    out.write_all(head.as_bytes())?;
    if head_only {
        out.flush()?;
        return Ok(true);
    }
    let sent = send_file(out, &resp.file, resp.offset, resp.len)?;
    out.flush()?;
    Ok(sent == resp.len)
}

/// Sends `len` bytes of `file` from `offset` to `out`; returns how many were sent (fewer
/// only if the file ended early). Does not move the file's position.
pub fn send_file<W: Write + AsFd>(
    out: &mut W,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    let mut sent = 0u64;
    while sent < len {
        let Ok(mut off) = libc::off_t::try_from(offset + sent) else {
            break;
        };
        let want = (len - sent).min(SENDFILE_MAX) as usize;
        let n = match sys::file::sendfile(out.as_fd(), file.as_fd(), &mut off, want) {
            Ok(n) => n,
            Err(err) => match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not sendfile-able (some filesystems, non-socket outputs on old kernels):
                // copy through a bounded buffer instead.
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if sent == 0 => {
                    return copy_range(out, file, offset, len);
                }
                _ => return Err(err),
            },
        };
        if n == 0 {
            break; // the file is shorter than it was when opened
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// `pread` + `write` with one [`FALLBACK_BUF`] buffer.
fn copy_range<W: Write>(out: &mut W, file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; FALLBACK_BUF.min(usize::try_from(len).unwrap_or(FALLBACK_BUF))];
    let mut sent = 0u64;
    while sent < len {
        let want = buf
            .len()
            .min(usize::try_from(len - sent).unwrap_or(buf.len()));
        let n = match file.read_at(&mut buf[..want], offset + sent) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        sent += n as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        let r = |h: &str, len| parse_range(Some(h), len);
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=3-", 10), Partial { start: 3, end: 9 });
        assert_eq!(r("bytes=3-5", 10), Partial { start: 3, end: 5 });
        assert_eq!(r("bytes=3-3", 10), Partial { start: 3, end: 3 });
        assert_eq!(r("bytes=3-99", 10), Partial { start: 3, end: 9 });
        assert_eq!(r("BYTES= 3 - 5 ", 10), Partial { start: 3, end: 5 });
        assert_eq!(r("bytes=-4", 10), Partial { start: 6, end: 9 });
        assert_eq!(r("bytes=-40", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=11-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999999-", 10), Unsatisfiable);
        for ignored in [
            "bytes=5-3",
            "bytes=a-",
            "bytes=-",
            "bytes=1-2,4-5",
            "items=0-1",
            "bytes",
            "",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored, 10), Full, "{ignored:?}");
        }
    }

    fn temp_file(data: &[u8]) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "sprites-local-sendfile-{}-{}",
            std::process::id(),
            crate::random::hex(6).unwrap()
        ));
        std::fs::write(&path, data).unwrap();
        (File::open(&path).unwrap(), path)
    }

    #[test]
    fn sends_ranges_to_a_socket_and_to_a_file() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let (file, path) = temp_file(&data);
        // A Unix socket pair: sendfile's real target type.
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut b, &mut got).unwrap();
            got
        });
        assert_eq!(send_file(&mut a, &file, 1000, 500_000).unwrap(), 500_000);
        drop(a);
        assert!(reader.join().unwrap() == data[1000..501_000]);
        // Past the end: only what exists is sent, and the caller can tell.
        let (_, out_path) = temp_file(b"");
        let mut out = std::fs::OpenOptions::new()
            .append(true)
            .open(&out_path)
            .unwrap();
        assert_eq!(send_file(&mut out, &file, 599_990, 100).unwrap(), 10);
        assert_eq!(copy_range(&mut out, &file, 0, 5).unwrap(), 5);
        assert_eq!(std::fs::read(&out_path).unwrap().len(), 15);
        drop(out);
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(out_path);
    }
}
