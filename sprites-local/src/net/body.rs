//! [`BodyReader`]: a request body streamed in constant memory, `Content-Length` or chunked.
//!
//! A body that ends early — the connection closes mid-chunk, or before `Content-Length`
//! bytes — is an error (`UnexpectedEof`), never a short `Ok(0)`, so a consumer such as an
//! atomic file write can tell a complete body from a torn one.

use std::io::{self, Read};

use super::http::{BodyFraming, RequestReader};

/// Scratch buffer per streamed body: socket reads are this big, so a 1 GiB chunked upload
/// costs a few thousand `read` calls however small the client's chunks are.
const BLOCK: usize = 256 * 1024;
/// Longest chunk-size line (`hex[;extensions]`).
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer section we read (and ignore).
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length` body with this many bytes left.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many data bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// In the trailer section; this many bytes of it read so far.
    Trailers(usize),
    /// The whole body has been read.
    Done,
    /// A previous read failed; the stream position is unknown.
    Failed,
}

/// Reads one request body from a [`RequestReader`]'s connection. Get one with
/// [`RequestReader::body`].
///
/// Reads return body bytes (framing removed) and `Ok(0)` only at the body's real end. Once
/// that end is reached, any bytes read past it are handed back to the `RequestReader`, so
/// keep-alive continues with the next request. After an error every read fails again.
pub struct BodyReader<'a, R> {
    rr: &'a mut RequestReader<R>,
    /// Bytes read from the socket, not yet consumed: `block[lo..hi]`.
    block: Vec<u8>,
    lo: usize,
    hi: usize,
    state: State,
}

impl<'a, R: Read> BodyReader<'a, R> {
    pub(super) fn new(rr: &'a mut RequestReader<R>, framing: BodyFraming) -> Self {
        // Bytes that arrived with the head are the body's first bytes.
        let early = std::mem::take(&mut rr.buf);
        let mut block = vec![0u8; BLOCK.max(early.len())];
        block[..early.len()].copy_from_slice(&early);
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
        };
        let mut reader = BodyReader {
            rr,
            block,
            lo: 0,
            hi: early.len(),
            state,
        };
        if state == State::Done {
            reader.finish();
        }
        reader
    }

    /// True once the whole body has been read (the connection can carry another request).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The body ended normally: give unread bytes back for the next request.
    fn finish(&mut self) {
        self.state = State::Done;
        self.rr.buf.extend_from_slice(&self.block[self.lo..self.hi]);
        self.lo = 0;
        self.hi = 0;
    }

    /// Reads from the socket into `buf`, retrying EINTR.
    fn socket_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.rr.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Reads more socket bytes behind the unconsumed ones (moving those to the front first).
    /// End of stream here is always an early end of the body.
    fn fill(&mut self) -> io::Result<()> {
        if self.lo > 0 {
            self.block.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == self.block.len() {
            return Err(invalid("chunked framing line too long"));
        }
        let mut block = std::mem::take(&mut self.block);
        let hi = self.hi;
        let r = self.socket_read(&mut block[hi..]);
        self.block = block;
        match r? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request body",
            )),
            n => {
                self.hi += n;
                Ok(())
            }
        }
    }

    /// Takes a CRLF-terminated line from the buffer, if a whole one is there.
    /// Returns its bounds in `block` (without the CRLF).
    fn take_line(&mut self, max: usize) -> io::Result<Option<(usize, usize)>> {
        let avail = &self.block[self.lo..self.hi];
        match avail.windows(2).position(|w| w == b"\r\n") {
            Some(i) if i <= max => {
                let line = (self.lo, self.lo + i);
                self.lo += i + 2;
                Ok(Some(line))
            }
            Some(_) => Err(invalid("chunked framing line too long")),
            None if avail.len() > max + 1 => Err(invalid("chunked framing line too long")),
            None => Ok(None),
        }
    }

    /// Copies up to `want` buffered bytes into `out`; returns how many.
    fn take_data(&mut self, out: &mut [u8], want: u64) -> usize {
        let n = (self.hi - self.lo).min(out.len()).min(clamp(want));
        out[..n].copy_from_slice(&self.block[self.lo..self.lo + n]);
        self.lo += n;
        n
    }

    /// One step of the state machine. Returns bytes put into `out`, or `None` when more
    /// socket input is needed before progress can be made.
    fn step(&mut self, out: &mut [u8], written: usize) -> io::Result<Option<usize>> {
        let buffered = self.hi > self.lo;
        match self.state {
            State::Done | State::Failed => Ok(Some(0)),
            State::Length(0) => {
                self.finish();
                Ok(Some(0))
            }
            State::ChunkData(0) => {
                self.state = State::ChunkEnd;
                Ok(Some(0))
            }
            State::Length(left) | State::ChunkData(left) => {
                let n = if buffered {
                    self.take_data(out, left)
                } else if written == 0 && left >= out.len() as u64 {
                    // Nothing buffered and the caller's buffer is all body: read straight
                    // into it, saving a copy (the common case for big uploads).
                    let n = self.socket_read(out)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before the end of the request body",
                        ));
                    }
                    n
                } else {
                    return Ok(None);
                };
                let left = left - n as u64;
                self.state = match self.state {
                    State::Length(_) => State::Length(left),
                    _ if left == 0 => State::ChunkEnd,
                    _ => State::ChunkData(left),
                };
                Ok(Some(n))
            }
            State::ChunkEnd => {
                if self.hi - self.lo < 2 {
                    return Ok(None);
                }
                if &self.block[self.lo..self.lo + 2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                self.lo += 2;
                self.state = State::ChunkSize;
                Ok(Some(0))
            }
            State::ChunkSize => {
                let Some((a, b)) = self.take_line(MAX_SIZE_LINE)? else {
                    return Ok(None);
                };
                let size = parse_chunk_size(&self.block[a..b])?;
                self.state = if size == 0 {
                    State::Trailers(0)
                } else {
                    State::ChunkData(size)
                };
                Ok(Some(0))
            }
            State::Trailers(seen) => {
                let Some((a, b)) = self.take_line(MAX_TRAILERS)? else {
                    return Ok(None);
                };
                let seen = seen + (b - a) + 2;
                if seen > MAX_TRAILERS {
                    return Err(invalid("chunked trailer section too large"));
                }
                // Trailers are header lines we do not use; an empty line ends the body.
                if a == b {
                    self.finish();
                } else {
                    self.state = State::Trailers(seen);
                }
                Ok(Some(0))
            }
        }
    }
}

impl<R: Read> Read for BodyReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state == State::Failed {
            return Err(invalid("the request body already failed"));
        }
        if out.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        // Pack as much as is buffered (several small chunks) into one read; block on the
        // socket only while nothing has been produced yet.
        while written < out.len() && self.state != State::Done {
            match self.step(&mut out[written..], written) {
                Ok(Some(n)) => written += n,
                Ok(None) if written > 0 => break,
                Ok(None) => {
                    if let Err(e) = self.fill() {
                        self.state = State::Failed;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok(written)
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `hex[;extensions]`, at most 15 hex digits (so sizes stay far from overflow).
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size).unwrap_or("").trim();
    if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("invalid chunk size"));
    }
    u64::from_str_radix(size, 16).map_err(|_| invalid("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, to exercise every partial-buffer path.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(buf.len()).min(self.step);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Reads a request head and streams its body with `out_size` reads; returns the body
    /// (or the error kind) and the path of the request that follows, if any.
    fn stream(
        raw: &[u8],
        step: usize,
        out_size: usize,
    ) -> (Result<Vec<u8>, io::ErrorKind>, Option<String>) {
        let mut rr = RequestReader::new(Trickle { data: raw, step });
        let (_, framing) = rr.read_head().unwrap().unwrap();
        let mut body = Vec::new();
        let mut buf = vec![0u8; out_size];
        let result = {
            let mut reader = rr.body(framing);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        assert!(reader.is_done());
                        break Ok(body);
                    }
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e.kind()),
                }
            }
        };
        let next = if result.is_ok() {
            rr.read_request(&mut || Ok(()))
                .ok()
                .flatten()
                .map(|r| r.path)
        } else {
            None
        };
        (result, next)
    }

    fn chunked(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut raw = b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in data.chunks(chunk) {
            raw.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
            raw.extend_from_slice(c);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        raw
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let d = data(600_000);
        for (chunk, step, out) in [
            (16_376, 1 << 20, 256 * 1024),
            (1, 7, 5),
            (100_000, 3, 1000),
            (300_000, 65_536, 256 * 1024),
            (7, 1 << 20, 1),
        ] {
            let d = &d[..if chunk == 1 || out == 1 {
                3000
            } else {
                d.len()
            }];
            let mut raw = chunked(d, chunk);
            raw.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let (body, next) = stream(&raw, step, out);
            assert!(body.unwrap() == d, "chunk {chunk} step {step} out {out}");
            assert_eq!(next.as_deref(), Some("/next"), "keep-alive continues");
        }
    }

    #[test]
    fn content_length_bodies_stream_and_keep_alive() {
        let d = data(700_000);
        for (step, out) in [(1 << 20, 256 * 1024), (1000, 4096), (1, 3)] {
            let d = &d[..if step == 1 { 5000 } else { d.len() }];
            let mut raw =
                format!("PUT /w HTTP/1.1\r\nContent-Length: {}\r\n\r\n", d.len()).into_bytes();
            raw.extend_from_slice(d);
            raw.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let (body, next) = stream(&raw, step, out);
            assert!(body.unwrap() == d, "step {step} out {out}");
            assert_eq!(next.as_deref(), Some("/next"));
        }
    }

    #[test]
    fn early_end_is_an_error_not_a_short_body() {
        // Cut inside a chunk's data, inside a size line, before the CRLF after data,
        // before the terminating chunk, inside trailers, and short of Content-Length.
        let cuts: [&[u8]; 7] = [
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nNNNN",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
            b"PUT /w HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
            b"PUT /w HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
        ];
        for raw in cuts {
            for step in [1, 4096] {
                let (body, _) = stream(raw, step, 8);
                assert_eq!(
                    body.unwrap_err(),
                    io::ErrorKind::UnexpectedEof,
                    "{:?}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
    }

    #[test]
    fn bad_framing_is_invalid_data() {
        let bad: [&[u8]; 4] = [
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abcdef0\r\n",
            b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        ];
        for raw in bad {
            let (body, _) = stream(raw, 4096, 64);
            assert_eq!(body.unwrap_err(), io::ErrorKind::InvalidData);
        }
        // A size line that never ends is refused once it is longer than any valid one.
        let mut raw = b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
        raw.extend(std::iter::repeat_n(b'0', 10_000));
        let (body, _) = stream(&raw, 4096, 64);
        assert_eq!(body.unwrap_err(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn errors_are_sticky_and_empty_bodies_are_done() {
        let raw = b"PUT /w HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        let mut rr = RequestReader::new(&raw[..]);
        let (_, framing) = rr.read_head().unwrap().unwrap();
        let mut reader = rr.body(framing);
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        assert!(reader.read(&mut buf).is_err());
        assert!(reader.read(&mut buf).is_err(), "still failing");
        assert!(!reader.is_done());

        let raw = b"PUT /w HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\n";
        let mut rr = RequestReader::new(&raw[..]);
        let (_, framing) = rr.read_head().unwrap().unwrap();
        assert_eq!(framing, BodyFraming::None);
        let mut reader = rr.body(framing);
        assert!(reader.is_done());
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
        let next = rr.read_request(&mut || Ok(())).unwrap().unwrap();
        assert_eq!(next.path, "/n");
    }
}
