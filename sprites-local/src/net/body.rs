//! Request bodies, only ever as streams: [`BodyReader`] decodes one (`Content-Length` or
//! chunked) in constant memory, [`Body`] is what a handler gets (it sends the deferred
//! `100 Continue` on its first read), and [`read_bounded`] is the one way to have a body in
//! memory: up to a cap, beyond which it is [`BoundedError::TooLarge`].
//!
//! A body that ends early — the connection closes mid-chunk, or before `Content-Length`
//! bytes — is an error (`UnexpectedEof`), never a short `Ok(0)`, so a consumer such as an
//! atomic file write can tell a complete body from a torn one.

use std::io::{self, Read};

use super::http::{BodyFraming, RequestHead, RequestReader};

/// Largest scratch buffer of a streamed body: once a body streams fast (its reads fill the
/// buffer), the buffer doubles up to this, so a 1 GiB chunked upload costs a few thousand
/// `read` calls however small the client's chunks are.
const BLOCK: usize = 256 * 1024;
/// The scratch buffer's first size, when one is needed at all: a small JSON body never
/// costs more.
const MIN_BLOCK: usize = 16 * 1024;
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
    /// Bytes read from the socket, not yet consumed: `block[lo..hi]`. Starts as the bytes
    /// that came with the head and grows only when a read needs room.
    block: Vec<u8>,
    lo: usize,
    hi: usize,
    /// The last socket read filled the block: the next one gets a bigger block.
    grow: bool,
    framing: BodyFraming,
    state: State,
}

impl<'a, R: Read> BodyReader<'a, R> {
    pub(super) fn new(rr: &'a mut RequestReader<R>, framing: BodyFraming) -> Self {
        // Bytes that arrived with the head are the body's first bytes.
        let block = std::mem::take(&mut rr.buf);
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
        };
        let mut reader = BodyReader {
            rr,
            hi: block.len(),
            block,
            lo: 0,
            grow: false,
            framing,
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

    /// How the body is framed.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Bytes of memory the reader holds (its block's capacity).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.block.capacity()
    }

    /// The body ended normally: give unread bytes back for the next request.
    fn finish(&mut self) {
        self.state = State::Done;
        let mut rest = std::mem::take(&mut self.block);
        rest.truncate(self.hi);
        rest.drain(..self.lo);
        if self.rr.buf.is_empty() {
            self.rr.buf = rest;
        } else {
            self.rr.buf.extend_from_slice(&rest);
        }
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
        if self.hi == self.block.len() || self.grow {
            let size = (self.block.len() * 2).clamp(MIN_BLOCK, BLOCK);
            if size <= self.hi {
                // Only a framing line can be this long unconsumed (data is taken as it
                // comes), and `take_line` refuses those well before.
                return Err(invalid("chunked framing line too long"));
            }
            let grow_by = size.saturating_sub(self.block.len());
            super::extend_zeroed(&mut self.block, grow_by);
            self.grow = false;
        }
        let mut block = std::mem::take(&mut self.block);
        let hi = self.hi;
        let r = self.socket_read(&mut block[hi..]);
        let room = block.len() - hi;
        self.block = block;
        match r? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request body",
            )),
            n => {
                let n = n.min(room);
                self.grow = n == room && self.block.len() < BLOCK;
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

/// A request body as handlers see it: a stream, read only by a handler that wants it.
pub trait RequestBody: Read {
    /// True once the body has been read to its end (so the connection can carry another
    /// request).
    fn is_done(&self) -> bool;

    /// The declared size: `Some(n)` for `Content-Length: n` (`Some(0)` for no body), `None`
    /// for a chunked body, whose size is known only at its end.
    fn declared_len(&self) -> Option<u64>;

    /// Bytes already received from the connection and not yet consumed (data or framing):
    /// while this is 0, the next read waits for the socket, so a caller may wait for the
    /// socket (and other things) itself first.
    fn buffered(&self) -> usize;
}

/// The body of one request: its [`BodyReader`], plus the interim `100 Continue` the client
/// may be waiting for, sent on the first read, i.e. only once a handler has accepted the
/// request and asks for its body.
pub struct Body<'a, R> {
    reader: BodyReader<'a, R>,
    send_continue: Option<&'a mut dyn FnMut() -> io::Result<()>>,
}

impl<'a, R: Read> Body<'a, R> {
    /// The body of the request `head` (framed by `framing`), which is next on `rr`.
    /// `send_continue` writes the interim `100 Continue`.
    pub fn new(
        rr: &'a mut RequestReader<R>,
        head: &RequestHead,
        framing: BodyFraming,
        send_continue: &'a mut dyn FnMut() -> io::Result<()>,
    ) -> Self {
        // The client holds its body back only if it asked to and none of it came yet.
        let waits = head.expects_continue(framing) && rr.buffered().is_empty();
        Body {
            reader: rr.body(framing),
            send_continue: waits.then_some(send_continue),
        }
    }
}

impl<R: Read> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(send) = self.send_continue.take() {
            send()?;
        }
        self.reader.read(buf)
    }
}

impl<R: Read> RequestBody for Body<'_, R> {
    fn is_done(&self) -> bool {
        self.reader.is_done()
    }

    fn buffered(&self) -> usize {
        RequestBody::buffered(&self.reader)
    }

    fn declared_len(&self) -> Option<u64> {
        match self.reader.framing() {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        }
    }
}

impl<R: Read> RequestBody for BodyReader<'_, R> {
    fn is_done(&self) -> bool {
        BodyReader::is_done(self)
    }

    fn buffered(&self) -> usize {
        self.hi - self.lo
    }

    fn declared_len(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        }
    }
}

/// Why [`read_bounded`] has no body for the caller.
#[derive(Debug)]
pub enum BoundedError {
    /// The body is (or declares to be) larger than the cap. A declared size over the cap
    /// is refused before anything is read, so the client is never asked for it.
    TooLarge,
    /// The body broke off or its framing was bad.
    Io(io::Error),
}

/// Reads the whole of `body` into memory, at most `cap` bytes. The buffer grows with what
/// arrives (never by a declared size up front), so its capacity stays within twice the
/// body's real size and `cap`.
pub fn read_bounded(body: &mut dyn RequestBody, cap: usize) -> Result<Vec<u8>, BoundedError> {
    if body.declared_len().is_some_and(|n| n > cap as u64) {
        return Err(BoundedError::TooLarge);
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match body.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n.min(chunk.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BoundedError::Io(e)),
        };
        if out.len() + n > cap {
            return Err(BoundedError::TooLarge);
        }
        if out.capacity() < out.len() + n {
            // Double as usual, but never past the cap.
            let want = (out.capacity() * 2).max(out.len() + n).max(256).min(cap);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
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
            rr.read_request(1 << 20)
                .ok()
                .flatten()
                .map(|(head, _)| head.path)
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
    fn buffered_counts_bytes_received_and_not_consumed() {
        let rest = "5\r\nhello\r\n0\r\n\r\n";
        let raw = format!("PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{rest}");
        let mut rr = RequestReader::new(raw.as_bytes());
        let (_, framing) = rr.read_head().unwrap().unwrap();
        let mut body = rr.body(framing);
        assert_eq!(RequestBody::buffered(&body), rest.len());
        let mut buf = [0u8; 2];
        assert_eq!(body.read(&mut buf).unwrap(), 2);
        assert_eq!(RequestBody::buffered(&body), rest.len() - "5\r\nhe".len());
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"llo");
        assert_eq!(RequestBody::buffered(&body), 0);
        assert!(RequestBody::is_done(&body));
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
        let (next, _) = rr.read_request(1 << 20).unwrap().unwrap();
        assert_eq!(next.path, "/n");
    }
}
