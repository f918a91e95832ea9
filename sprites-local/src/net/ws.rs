//! WebSocket (RFC 6455) for the server side: the upgrade response and frame I/O.
//!
//! Frame headers are tungstenite's [`FrameHeader`] (parsed and formatted there); the rest is
//! ours instead of `tungstenite::WebSocket` because an exec needs one thread reading the
//! socket while others write it, and because output frames are built in place in the
//! pump's read buffer (header written into reserved space in front of the payload), so a
//! 64 KiB stdout chunk goes to the socket in one `write` with no copy.
//!
//! The reader never trusts a declared length with memory: a payload buffer grows with the
//! bytes that actually arrive (at most [`READ_BUF`] per read), so a header announcing
//! 16 MiB followed by silence costs one read buffer, not 16 MiB.

use std::io::{self, Cursor, IoSlice, Read, Write};

use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::FrameHeader;

/// Largest message (after reassembly) we accept from a client; bigger → close 1009.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Bytes reserved in front of a payload for the largest server frame header.
pub const MAX_HEADER: usize = 10;

/// Frame opcodes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close status codes we send.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error (bad opcode, unmasked client frame, ...).
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload data (e.g. a text message that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes())
}

/// Writes a server frame header (FIN, unmasked) for a `len`-byte payload into the END of
/// `out` (so it sits right before a payload that follows `out`) and returns its length.
pub fn header_into(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::from(opcode),
        mask: None,
        ..FrameHeader::default()
    };
    let len = len as u64;
    let n = header.len(len);
    let mut tail = &mut out[MAX_HEADER - n..];
    // An unmasked header is at most MAX_HEADER bytes and `tail` has exactly its length, so
    // formatting into it cannot run out of room.
    let _ = header.format(len, &mut tail);
    n
}

/// Encodes a complete (small) server frame: `opcode` with payload `parts` concatenated.
pub fn encode_frame(opcode: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut hdr = [0u8; MAX_HEADER];
    let n = header_into(opcode, len, &mut hdr);
    let mut out = Vec::with_capacity(n + len);
    out.extend_from_slice(&hdr[MAX_HEADER - n..]);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Writes one server frame, `opcode` with payload `parts` concatenated, with vectored
/// writes: the header and the parts go out as they are, the payload never copied into a
/// frame first (a session's 64 KiB output chunk is sent from the buffer its readers share).
pub fn write_frame(out: &mut impl Write, opcode: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut hdr = [0u8; MAX_HEADER];
    let n = header_into(opcode, len, &mut hdr);
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(&hdr[MAX_HEADER - n..])
        .chain(parts.iter().copied())
        .filter(|p| !p.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match out.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(wrote) => IoSlice::advance_slices(&mut left, wrote),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A close frame payload: status code + optional UTF-8 reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    // Control frames carry at most 125 payload bytes.
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    p.extend_from_slice(reason);
    p
}

/// The close code to answer a client's close with: its own code when that may be sent on
/// the wire, else 1000.
pub fn reply_close_code(code: Option<u16>) -> u16 {
    match code {
        Some(c @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => c,
        _ => close_code::NORMAL,
    }
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Text (UTF-8 checked).
    Text(String),
    /// Binary.
    Binary(Vec<u8>),
    /// Ping with its payload (to echo in the pong).
    Ping(Vec<u8>),
    /// Pong.
    Pong,
    /// Close with the client's status code, if any.
    Close(Option<u16>),
}

/// Why no message could be read.
#[derive(Debug)]
pub enum ReadError {
    /// End of stream at a frame boundary.
    Eof,
    /// Socket error (including a read timeout and EOF inside a frame).
    Io,
    /// The client broke the protocol: close with this code.
    Protocol(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// Reads client frames (which must be masked) and reassembles fragmented messages.
pub struct MessageReader<R> {
    inner: R,
    /// Bytes read from the socket and not consumed yet: `buf[pos..end]`. Grows (once, to
    /// [`READ_BUF`]) only when a read needs room, and is not re-zeroed per read.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The last read filled the buffer: the next one gets a bigger buffer.
    grow: bool,
    /// The payload of the frame being read (kept here, not in a local, so its size is
    /// observable to tests while a frame is incomplete).
    payload: Vec<u8>,
    /// A fragmented message so far: its opcode and data.
    partial: Option<(u8, Vec<u8>)>,
}

/// Socket reads are at most this big, and so is each step of a payload's growth.
pub const READ_BUF: usize = 64 * 1024;
/// The read buffer's first size.
const MIN_READ_BUF: usize = 4 * 1024;

impl<R: Read> MessageReader<R> {
    /// Wraps `inner`; `already_read` are bytes that arrived with the HTTP upgrade request.
    pub fn new(inner: R, already_read: Vec<u8>) -> Self {
        MessageReader {
            inner,
            end: already_read.len(),
            buf: already_read,
            pos: 0,
            grow: false,
            payload: Vec::new(),
            partial: None,
        }
    }

    /// Reads the next complete message. Control frames interleaved with a fragmented
    /// message are returned as they come.
    pub fn read_message(&mut self) -> Result<Message, ReadError> {
        loop {
            let at_boundary = self.partial.is_none();
            let (fin, op, payload) = self.read_frame(at_boundary)?;
            match op {
                opcode::CLOSE => {
                    return match payload.len() {
                        0 => Ok(Message::Close(None)),
                        1 => Err(ReadError::Protocol(
                            close_code::PROTOCOL,
                            "bad close payload",
                        )),
                        _ => Ok(Message::Close(Some(u16::from_be_bytes([
                            payload[0], payload[1],
                        ])))),
                    };
                }
                opcode::PING => return Ok(Message::Ping(payload)),
                opcode::PONG => return Ok(Message::Pong),
                opcode::TEXT | opcode::BINARY => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            close_code::PROTOCOL,
                            "new message inside a fragmented one",
                        ));
                    }
                    if fin {
                        return finish(op, payload);
                    }
                    self.partial = Some((op, payload));
                }
                opcode::CONTINUATION => {
                    let Some((first_op, mut data)) = self.partial.take() else {
                        return Err(ReadError::Protocol(
                            close_code::PROTOCOL,
                            "continuation without a message",
                        ));
                    };
                    if data.len() + payload.len() > MAX_MESSAGE {
                        return Err(ReadError::Protocol(close_code::TOO_BIG, "message too big"));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return finish(first_op, data);
                    }
                    self.partial = Some((first_op, data));
                }
                // FrameHeader::parse already refuses reserved opcodes.
                _ => return Err(ReadError::Protocol(close_code::PROTOCOL, "unknown opcode")),
            }
        }
    }

    /// Bytes of memory the reader holds at the moment (its buffers' capacities).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buf.capacity()
            + self.payload.capacity()
            + self.partial.as_ref().map_or(0, |(_, d)| d.capacity())
    }

    /// Buffered bytes not yet consumed.
    fn available(&self) -> usize {
        self.end - self.pos
    }

    /// Reads more bytes behind the unconsumed ones (at most [`READ_BUF`]). EOF is a clean
    /// [`ReadError::Eof`] only when `eof_is_clean` and nothing is buffered.
    fn fill(&mut self, eof_is_clean: bool) -> Result<(), ReadError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() || (self.grow && self.buf.len() < READ_BUF) {
            // Starts small (most clients send little); a client that keeps the buffer
            // full gets it doubled up to READ_BUF. Only a frame header (at most 14 bytes)
            // is ever waited for here, so it never needs to be bigger.
            let size = (self.buf.len() * 2)
                .clamp(MIN_READ_BUF, READ_BUF)
                .max(self.end + 1);
            let grow_by = size.saturating_sub(self.buf.len());
            super::extend_zeroed(&mut self.buf, grow_by);
        }
        let room = (self.buf.len() - self.end).min(READ_BUF);
        let got = loop {
            match self.inner.read(&mut self.buf[self.end..self.end + room]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let Ok(got) = got else {
            return Err(ReadError::Io);
        };
        if got == 0 {
            // An EOF inside a frame ends the connection as an error.
            return Err(if eof_is_clean && self.available() == 0 {
                ReadError::Eof
            } else {
                ReadError::Io
            });
        }
        let got = got.min(room);
        self.grow = got == room;
        self.end += got;
        Ok(())
    }

    /// Parses the next frame header ([`FrameHeader::parse`]), reading until it is complete.
    fn read_header(&mut self, at_boundary: bool) -> Result<(FrameHeader, u64), ReadError> {
        loop {
            let mut cursor = Cursor::new(&self.buf[self.pos..self.end]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => {
                    self.pos += cursor.position() as usize;
                    return Ok(parsed);
                }
                Ok(None) => self.fill(at_boundary)?,
                // Parsing a byte slice can only fail on a reserved opcode.
                Err(_) => return Err(ReadError::Protocol(close_code::PROTOCOL, "unknown opcode")),
            }
        }
    }

    fn read_frame(&mut self, at_boundary: bool) -> Result<(bool, u8, Vec<u8>), ReadError> {
        let (header, len) = self.read_header(at_boundary)?;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "reserved bits set",
            ));
        }
        let op = u8::from(header.opcode);
        let Some(mask) = header.mask else {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "client frame not masked",
            ));
        };
        if op >= 0x8 && (len > 125 || !header.is_final) {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "bad control frame",
            ));
        }
        if len > MAX_MESSAGE as u64 {
            return Err(ReadError::Protocol(close_code::TOO_BIG, "frame too big"));
        }
        let len = len as usize;

        // What is buffered first, then straight from the socket into the payload, which
        // grows by at most READ_BUF at a time, as bytes arrive: never by the declared
        // length up front. Each byte of it is zeroed once, however small the reads.
        self.payload.clear();
        let have = self.available().min(len);
        // Room for what is here and one read more (a 64 KiB stdin frame is one allocation),
        // whatever the header says.
        self.payload.reserve(len.min(have + READ_BUF));
        self.payload
            .extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        let mut filled = have;
        while filled < len {
            if filled == self.payload.len() {
                super::extend_zeroed(&mut self.payload, (len - filled).min(READ_BUF));
            }
            let got = loop {
                match self.inner.read(&mut self.payload[filled..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            // A read error, or an EOF inside the payload, ends the connection.
            match got {
                Ok(n) if n > 0 => filled += n.min(self.payload.len() - filled),
                _ => return Err(ReadError::Io),
            }
        }
        let mut payload = std::mem::take(&mut self.payload);
        unmask(&mut payload, mask);
        Ok((header.is_final, op, payload))
    }
}

fn finish(op: u8, payload: Vec<u8>) -> Result<Message, ReadError> {
    if op == opcode::TEXT {
        String::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| ReadError::Protocol(close_code::INVALID_DATA, "text message is not UTF-8"))
    } else {
        Ok(Message::Binary(payload))
    }
}

/// XORs `data` with the 4-byte client mask, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // Every full chunk is a multiple of 4 bytes, so the tail starts at mask index 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_echoed_only_when_sendable() {
        for (got, sent) in [
            (Some(1000), 1000),
            (Some(1003), 1003),
            (Some(1004), 1000),
            (Some(1005), 1000),
            (Some(1006), 1000),
            (Some(1007), 1007),
            (Some(1011), 1011),
            (Some(1012), 1000),
            (Some(2999), 1000),
            (Some(3000), 3000),
            (Some(4999), 4999),
            (Some(5000), 1000),
            (Some(999), 1000),
            (None, 1000),
        ] {
            assert_eq!(reply_close_code(got), sent, "{got:?}");
        }
    }

    /// Builds a masked client frame.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else if payload.len() <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read_all(bytes: Vec<u8>) -> Vec<Result<Message, String>> {
        let mut r = MessageReader::new(&[][..], bytes);
        let mut out = Vec::new();
        loop {
            match r.read_message() {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Eof) => return out,
                Err(ReadError::Io) => {
                    out.push(Err("io".to_owned()));
                    return out;
                }
                Err(ReadError::Protocol(c, m)) => {
                    out.push(Err(format!("{c} {m}")));
                    return out;
                }
            }
        }
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Takes at most `step` bytes per write (counting across slices, as a socket would),
    /// after one `Interrupted`.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        interrupted: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let mut room = self.step;
            for b in bufs {
                let n = b.len().min(room);
                self.got.extend_from_slice(&b[..n]);
                room -= n;
                if room == 0 {
                    break;
                }
            }
            Ok(self.step - room)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_frames_survive_partial_writes_at_every_boundary() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let cases: [&[&[u8]]; 4] = [
            &[b"\x01", b"hello"],
            &[b"", b"x", b""],
            &[b"\x01", &big[..125], &big[125..126]],
            &[b"\x02", &big],
        ];
        for parts in cases {
            let want = encode_frame(opcode::BINARY, parts);
            for step in [1, 2, 3, 7, 4096, 1 << 20] {
                let mut out = Trickle {
                    got: Vec::new(),
                    step,
                    interrupted: false,
                };
                write_frame(&mut out, opcode::BINARY, parts).unwrap();
                assert!(out.got == want, "step {step}, {} bytes", want.len());
            }
        }
        // A writer that takes nothing is an error, not a loop.
        let mut stuck = Trickle {
            got: Vec::new(),
            step: 0,
            interrupted: true,
        };
        let e = write_frame(&mut stuck, opcode::BINARY, &[b"x"]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn header_sizes() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(header_into(opcode::BINARY, 5, &mut h), 2);
        assert_eq!(&h[8..], &[0x82, 5]);
        assert_eq!(header_into(opcode::BINARY, 300, &mut h), 4);
        assert_eq!(&h[6..], &[0x82, 126, 1, 44]);
        assert_eq!(header_into(opcode::BINARY, 70_000, &mut h), 10);
        assert_eq!(h[1], 127);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn reads_messages_of_all_sizes() {
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut bytes = client_frame(0x82, &[0, 1, 2]);
        bytes.extend(client_frame(0x81, br#"{"type":"signal","signal":"TERM"}"#));
        bytes.extend(client_frame(0x82, &big));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        let msgs = read_all(bytes);
        assert_eq!(msgs[0].as_ref().unwrap(), &Message::Binary(vec![0, 1, 2]));
        assert_eq!(
            msgs[1].as_ref().unwrap(),
            &Message::Text(r#"{"type":"signal","signal":"TERM"}"#.into())
        );
        assert_eq!(msgs[2].as_ref().unwrap(), &Message::Binary(big));
        assert_eq!(msgs[3].as_ref().unwrap(), &Message::Ping(b"p".to_vec()));
        assert_eq!(msgs[4].as_ref().unwrap(), &Message::Close(Some(1000)));
        assert_eq!(msgs.len(), 5);
    }

    #[test]
    fn fragmented_message_with_interleaved_ping() {
        let mut bytes = client_frame(0x02, b"ab");
        bytes.extend(client_frame(0x89, b""));
        bytes.extend(client_frame(0x80, b"cd"));
        let msgs = read_all(bytes);
        assert_eq!(msgs[0].as_ref().unwrap(), &Message::Ping(vec![]));
        assert_eq!(
            msgs[1].as_ref().unwrap(),
            &Message::Binary(b"abcd".to_vec())
        );
    }

    #[test]
    fn protocol_violations() {
        let unmasked = vec![0x82, 0x01, 0x00];
        assert!(read_all(unmasked)[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1002"));
        assert!(read_all(client_frame(0x83, b"x"))[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1002"));
        assert!(read_all(client_frame(0xC2, b"x"))[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1002"));
        assert!(read_all(client_frame(0x80, b"x"))[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1002"));
        assert!(read_all(client_frame(0x09, b"x"))[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1002"));
        assert!(read_all(client_frame(0x81, &[0xff]))[0]
            .as_ref()
            .unwrap_err()
            .starts_with("1007"));
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&((MAX_MESSAGE as u64) + 1).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(read_all(huge)[0].as_ref().unwrap_err().starts_with("1009"));
        // Truncated frame is an I/O error, not a clean EOF.
        let mut cut = client_frame(0x82, b"hello");
        cut.truncate(5);
        assert!(read_all(cut)[0].as_ref().unwrap_err().starts_with("io"));
    }

    #[test]
    fn unmask_is_involution_at_every_length() {
        for n in 0..40 {
            let orig: Vec<u8> = (0..n as u8).collect();
            let mut d = orig.clone();
            unmask(&mut d, [1, 2, 3, 4]);
            let expect: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
                .collect();
            assert_eq!(d, expect);
            unmask(&mut d, [1, 2, 3, 4]);
            assert_eq!(d, orig);
        }
    }
}
