//! The non-TTY exec framing ([PROTOCOL.md §6.2](crate::protocol#62-binary-frames-the-first-byte-names-the-stream)): binary frames whose first byte names the stream.

use tungstenite::Bytes;

/// Client → server: stdin bytes.
pub(crate) const STDIN: u8 = 0x00;
/// Server → client: stdout bytes.
pub(crate) const STDOUT: u8 = 0x01;
/// Server → client: stderr bytes.
pub(crate) const STDERR: u8 = 0x02;
/// Server → client: exit status, one byte.
pub(crate) const EXIT: u8 = 0x03;
/// Client → server: close the process's stdin.
pub(crate) const STDIN_EOF: u8 = 0x04;

/// Largest stdin payload per frame; bigger writes are split.
pub(crate) const MAX_STDIN_CHUNK: usize = 64 * 1024;

/// A decoded server → client binary frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerFrame {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(i32),
    /// Empty frames and unknown stream ids, which the protocol says to ignore.
    Ignored,
}

/// Decodes a binary frame without copying its payload.
pub(crate) fn decode(frame: Bytes) -> ServerFrame {
    match frame.first() {
        Some(&STDOUT) if frame.len() > 1 => ServerFrame::Stdout(frame.slice(1..)),
        Some(&STDERR) if frame.len() > 1 => ServerFrame::Stderr(frame.slice(1..)),
        // One status byte; an empty payload means 0. Go/JS/Py read payload[0] only.
        Some(&EXIT) => ServerFrame::Exit(frame.get(1).copied().map_or(0, i32::from)),
        _ => ServerFrame::Ignored,
    }
}

/// Encodes a stdin frame: the stream byte, then the data.
pub(crate) fn stdin(data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(STDIN);
    frame.extend_from_slice(data);
    frame.into()
}

/// The stdin EOF frame.
pub(crate) fn stdin_eof() -> Bytes {
    Bytes::from_static(&[STDIN_EOF])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_protocol_example() {
        // `sh -c 'echo hi; echo err >&2; exit 3'` from PROTOCOL.md §6.2.
        assert_eq!(
            decode(Bytes::from_static(b"\x01hi\n")),
            ServerFrame::Stdout(Bytes::from_static(b"hi\n"))
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x02err\n")),
            ServerFrame::Stderr(Bytes::from_static(b"err\n"))
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x03\x03")),
            ServerFrame::Exit(3)
        );
    }

    #[test]
    fn edge_cases() {
        assert_eq!(decode(Bytes::from_static(b"\x03")), ServerFrame::Exit(0));
        assert_eq!(
            decode(Bytes::from_static(b"\x03\xff\x00\x00")),
            ServerFrame::Exit(255)
        );
        assert_eq!(decode(Bytes::new()), ServerFrame::Ignored);
        assert_eq!(decode(Bytes::from_static(b"\x01")), ServerFrame::Ignored);
        assert_eq!(
            decode(Bytes::from_static(b"\x09junk")),
            ServerFrame::Ignored
        );
    }

    #[test]
    fn encodes_stdin() {
        assert_eq!(&stdin(b"hi")[..], b"\x00hi");
        assert_eq!(&stdin_eof()[..], b"\x04");
    }
}
