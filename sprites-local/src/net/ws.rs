//! WebSocket (RFC 6455) for the server side: the upgrade response and frame I/O.
//!
//! Our own small codec instead of `tungstenite::WebSocket` because an exec needs one thread
//! reading the socket while others write it, and because output frames are built in place
//! in the pump's read buffer (header written into reserved space in front of the payload),
//! so a 64 KiB stdout chunk goes to the socket in one `write` with no copy.

use std::io::{self, Read};

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

/// Writes a server frame header for a `len`-byte payload into the END of `out`
/// (so it sits right before a payload that follows `out`) and returns its length.
pub fn header_into(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    let b0 = 0x80 | opcode; // FIN, never fragmented
    if len < 126 {
        out[8] = b0;
        out[9] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[6] = b0;
        out[7] = 126;
        out[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[0] = b0;
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
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

/// A close frame payload: status code + optional UTF-8 reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    // Control frames carry at most 125 payload bytes.
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    p.extend_from_slice(reason);
    p
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
    buf: Vec<u8>,
    pos: usize,
    partial: Option<(u8, Vec<u8>)>,
}

const READ_BUF: usize = 64 * 1024;

impl<R: Read> MessageReader<R> {
    /// Wraps `inner`; `already_read` are bytes that arrived with the HTTP upgrade request.
    pub fn new(inner: R, already_read: Vec<u8>) -> Self {
        MessageReader {
            inner,
            buf: already_read,
            pos: 0,
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
                _ => {
                    // CONTINUATION (read_frame rejects every other opcode).
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
            }
        }
    }

    /// Buffered bytes not yet consumed.
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Ensures `n` unconsumed bytes are buffered. EOF before any byte of a frame at a
    /// message boundary is a clean [`ReadError::Eof`].
    fn fill_to(&mut self, n: usize, eof_is_clean: bool) -> Result<(), ReadError> {
        while self.available() < n {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let old = self.buf.len();
            // `old < n` here (everything buffered is unconsumed and short), so this grows.
            self.buf.resize((old + 1).max(READ_BUF).max(n), 0);
            let got = loop {
                match self.inner.read(&mut self.buf[old..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                return Err(if eof_is_clean && self.available() == 0 {
                    ReadError::Eof
                } else {
                    ReadError::Io
                });
            }
        }
        Ok(())
    }

    fn read_frame(&mut self, at_boundary: bool) -> Result<(bool, u8, Vec<u8>), ReadError> {
        self.fill_to(2, at_boundary)?;
        let b0 = self.buf[self.pos];
        let b1 = self.buf[self.pos + 1];
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0f;
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "reserved bits set",
            ));
        }
        if !matches!(
            op,
            opcode::CONTINUATION
                | opcode::TEXT
                | opcode::BINARY
                | opcode::CLOSE
                | opcode::PING
                | opcode::PONG
        ) {
            return Err(ReadError::Protocol(close_code::PROTOCOL, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "client frame not masked",
            ));
        }
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let hdr_len = 2 + ext + 4;
        self.fill_to(hdr_len, false)?;
        let p = self.pos;
        let len = match ext {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.buf[p + 2], self.buf[p + 3]])),
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[p + 2..p + 10]);
                u64::from_be_bytes(b)
            }
        };
        if op >= 0x8 && (len > 125 || !fin) {
            return Err(ReadError::Protocol(
                close_code::PROTOCOL,
                "bad control frame",
            ));
        }
        if len > MAX_MESSAGE as u64 {
            return Err(ReadError::Protocol(close_code::TOO_BIG, "frame too big"));
        }
        let len = len as usize;
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.buf[p + 2 + ext..p + hdr_len]);
        self.pos += hdr_len;

        // Copy what is buffered, then read the rest straight into the payload so a large
        // frame is not staged through our buffer.
        let mut payload = Vec::with_capacity(len);
        let have = self.available().min(len);
        payload.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        if have < len {
            payload.resize(len, 0);
            let mut filled = have;
            while filled < len {
                match self.inner.read(&mut payload[filled..]) {
                    Ok(0) => return Err(ReadError::Io),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        unmask(&mut payload, mask);
        Ok((fin, op, payload))
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
