//! HTTP/1.1 on a byte stream: request heads (httparse) and body framing, and response
//! writing.
//!
//! Only what the API needs: `Content-Length` and chunked request bodies, keep-alive,
//! `Expect: 100-continue`, `Content-Length` and chunked responses. Anything malformed is
//! reported as a [`BadRequest`] carrying the status to answer with; it never panics.
//!
//! A request's head is parsed on its own ([`parse_head`], at most [`MAX_HEAD`] bytes), from
//! a buffer the server's reactor fills without blocking or through a blocking
//! [`RequestReader`]; its body is only ever streamed ([`RequestReader::body`],
//! [`super::body`]), and whoever wants it in memory reads it through a bound
//! ([`super::body::read_bounded`]). Files go out with `sendfile(2)`
//! ([`file`](super::file)).

use std::io::{self, Read, Write};

use serde::Serialize;

use super::body::BodyReader;

/// The runtime version this emulator reports in `Sprite-Version` (PROTOCOL.md §2).
pub const SPRITE_VERSION: &str = "0.1.0";
/// Largest request head (request line + headers) we buffer; a longer one is 431.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Bytes per read of [`RequestReader::read_head`] and [`RequestReader::read_with`].
pub const READ_CHUNK: usize = 4 * 1024;

/// A parsed request head. Its body, if any, is read separately as a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `POST`, ... as sent.
    pub method: String,
    /// The path before `?`, still percent-encoded.
    pub path: String,
    /// The raw query string after `?` (empty when absent).
    pub query: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lowercased, values as sent (non-UTF-8 bytes replaced).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True if any comma-separated token of header `name` equals `token` (case-insensitive);
    /// e.g. `Connection: keep-alive, Upgrade` has token `upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection should close after this request's response.
    pub fn wants_close(&self) -> bool {
        if self.minor_version == 0 {
            !self.header_has_token("connection", "keep-alive")
        } else {
            self.header_has_token("connection", "close")
        }
    }

    /// True for a WebSocket upgrade request (`Upgrade: websocket`).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }

    /// Whether the client is holding its body back until it gets `100 Continue`: it asked
    /// with `Expect: 100-continue` and a body is coming. (Whether any of the body has
    /// arrived anyway is for the reader of the body to see.)
    pub fn expects_continue(&self, framing: BodyFraming) -> bool {
        framing != BodyFraming::None && self.header_has_token("expect", "100-continue")
    }
}

/// Bytes that are not an acceptable request: answer `status` with `message`, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// HTTP status to answer with (400, 413, 431, 501).
    pub status: u16,
    /// Human-readable reason.
    pub message: String,
}

fn bad(status: u16, message: impl Into<String>) -> BadRequest {
    BadRequest {
        status,
        message: message.into(),
    }
}

/// A complete request head found at the start of a buffer.
#[derive(Debug)]
pub struct ParsedHead {
    /// The head.
    pub head: RequestHead,
    /// How its body is framed.
    pub framing: BodyFraming,
    /// How many bytes of the buffer the head took (the body, or the next request, follows).
    pub len: usize,
}

/// Parses the request head at the start of `buf` without reading anything: `Ok(None)` if
/// it is not complete yet. Only the first [`MAX_HEAD`] bytes are looked at, so a buffer
/// holding that much without a complete head is a 431, whatever follows.
pub fn parse_head(buf: &[u8]) -> Result<Option<ParsedHead>, BadRequest> {
    if buf.is_empty() {
        return Ok(None);
    }
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(window) {
        Ok(httparse::Status::Complete(len)) => {
            let head = to_head(&parsed)?;
            let framing = body_framing(&head)?;
            Ok(Some(ParsedHead { head, framing, len }))
        }
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => {
            Err(bad(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(bad(431, "too many request headers")),
        Err(e) => Err(bad(400, format!("malformed request: {e}"))),
    }
}

/// A request head being received piece by piece, as the reactor receives it.
///
/// Parsing is not repeated per piece (a head trickled in one byte at a time would cost
/// quadratic time): the buffer is parsed once its request line is complete (so garbage is
/// refused early) and then only when a blank line arrives, which ends a head. Blank lines
/// before the request line are dropped as they come (RFC 9112 §2.2), so they cost nothing.
/// The buffer is allocated when the first byte arrives and never exceeds [`MAX_HEAD`]
/// (its owner reads at most [`HeadBuffer::room`] more).
#[derive(Debug, Default)]
pub struct HeadBuffer {
    buf: Vec<u8>,
    /// How much of `buf` was searched for the end of the head.
    scanned: usize,
    /// Bytes other than leading blank lines have arrived.
    started: bool,
    /// The request line was complete at a parse already.
    line_checked: bool,
}

impl HeadBuffer {
    /// An empty buffer (no allocation yet).
    pub fn new() -> HeadBuffer {
        HeadBuffer::default()
    }

    /// A buffer that starts with `bytes` (the beginning of a next request a worker read
    /// with the previous one). Call [`HeadBuffer::check`] to look at them.
    pub fn with_bytes(bytes: Vec<u8>) -> HeadBuffer {
        HeadBuffer {
            buf: bytes,
            ..HeadBuffer::default()
        }
    }

    /// True if nothing (but maybe dropped blank lines) arrived.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes of memory held.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// How many more bytes the head may take; a reader reads at most this much.
    pub fn room(&self) -> usize {
        MAX_HEAD.saturating_sub(self.buf.len())
    }

    /// Appends `bytes` (at most [`room`](Self::room) of them are kept) and
    /// [`check`](Self::check)s.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<ParsedHead>, BadRequest> {
        let n = bytes.len().min(self.room());
        let needed = self.buf.len() + n;
        if needed > self.buf.capacity() {
            // Double as usual, but never past MAX_HEAD.
            let target = (self.buf.capacity() * 2).max(needed).min(MAX_HEAD);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&bytes[..n]);
        self.check()
    }

    /// Whether the head is complete: `Ok(Some)` with it, `Ok(None)` if more is needed, or
    /// why it can never be a request (431 once [`MAX_HEAD`] bytes hold no head).
    pub fn check(&mut self) -> Result<Option<ParsedHead>, BadRequest> {
        if !self.started {
            let blank = leading_blank_lines(&self.buf);
            self.buf.drain(..blank);
            // A lone CR may still become a blank line's CRLF.
            self.started = !self.buf.is_empty() && self.buf != b"\r";
            if !self.started {
                return Ok(None);
            }
        }
        // A blank line may straddle what was searched and what is new.
        let new = &self.buf[self.scanned.saturating_sub(2)..];
        let has_newline = new.contains(&b'\n');
        let ends_head = has_newline
            && (new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n"));
        let line_done = !self.line_checked && has_newline;
        self.scanned = self.buf.len();
        let full = self.buf.len() >= MAX_HEAD;
        if ends_head || line_done || full {
            self.line_checked = true;
            // A full buffer without a head is a 431 here, unless it is malformed anyway.
            if let Some(head) = parse_head(&self.buf)? {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }

    /// The client closed its side: `Ok(())` if nothing but blank lines came (a clean end
    /// between requests), else the error to answer the cut request with.
    pub fn at_eof(&self) -> Result<(), BadRequest> {
        if self.buf.is_empty() || self.buf == b"\r" {
            return Ok(());
        }
        parse_head(&self.buf)?;
        Err(bad(400, "connection closed in the middle of a request"))
    }

    /// What follows a head of `len` bytes (see [`ParsedHead::len`]).
    pub fn into_rest(mut self, len: usize) -> Vec<u8> {
        self.buf.drain(..len.min(self.buf.len()));
        self.buf
    }
}

/// How many bytes of blank lines (`\r\n` or `\n`) `buf` starts with.
fn leading_blank_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\n', ..] => at += 1,
            [b'\r', b'\n', ..] => at += 2,
            _ => return at,
        }
    }
}

/// Reads successive requests from one connection, keeping bytes that arrived early
/// (pipelined requests, or WebSocket frames sent right behind an upgrade request).
///
/// The server's reactor reads heads itself, without blocking, and parses them with
/// [`parse_head`]; a worker continues with a `RequestReader` over what it read, for the
/// body and any pipelined request already buffered ([`RequestReader::buffered_head`]).
/// [`RequestReader::read_head`], the blocking loop that does what the reactor does, is
/// for tests.
pub struct RequestReader<R> {
    pub(super) inner: R,
    pub(super) buf: Vec<u8>,
}

impl<R: Read> RequestReader<R> {
    /// Wraps a byte stream.
    #[cfg(test)]
    pub fn new(inner: R) -> Self {
        Self::with_buffered(inner, Vec::new())
    }

    /// Wraps a byte stream of which `buffered` was already read (and not consumed).
    pub fn with_buffered(inner: R, buffered: Vec<u8>) -> Self {
        RequestReader {
            inner,
            buf: buffered,
        }
    }

    /// Gives back the stream and any bytes read past the last request.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.buf)
    }

    /// The stream.
    #[cfg(test)]
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes read past the last request, not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Appends what one call of `read` (a non-blocking read of the stream, say) gives, at
    /// most [`READ_CHUNK`] bytes; returns its count (0: end of stream).
    pub fn read_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let result = read(&mut self.buf[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n.min(READ_CHUNK));
        result
    }

    /// Reads the next request's head and works out how its body is framed; the body itself
    /// is left unread. `Ok(None)` = clean end of stream between requests; a failed read
    /// is a 400 here. The blocking twin of what the reactor does ([`HeadBuffer`]), so it
    /// never reads past [`MAX_HEAD`] bytes of head either.
    #[cfg(test)]
    pub fn read_head(&mut self) -> Result<Option<(RequestHead, BodyFraming)>, BadRequest> {
        let mut head = HeadBuffer::with_bytes(std::mem::take(&mut self.buf));
        if let Some(p) = head.check()? {
            self.buf = head.into_rest(p.len);
            return Ok(Some((p.head, p.framing)));
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let room = head.room().min(READ_CHUNK);
            let n = loop {
                match self.inner.read(&mut chunk[..room]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(bad(400, format!("reading the request failed: {e}"))),
                    Ok(n) => break n.min(room),
                }
            };
            if n == 0 {
                head.at_eof()?;
                return Ok(None);
            }
            if let Some(p) = head.push(&chunk[..n])? {
                self.buf = head.into_rest(p.len);
                return Ok(Some((p.head, p.framing)));
            }
        }
    }

    /// The next request's head if it is already complete in the buffer, without reading
    /// from the stream (pipelined requests); `Ok(None)` if it is not (yet).
    pub fn buffered_head(&mut self) -> Result<Option<(RequestHead, BodyFraming)>, BadRequest> {
        match parse_head(&self.buf)? {
            Some(p) => {
                self.buf.drain(..p.len);
                Ok(Some((p.head, p.framing)))
            }
            None => Ok(None),
        }
    }

    /// Streams the body of a request whose head [`read_head`](Self::read_head) returned:
    /// any size, constant memory. Bytes past the body stay buffered for the next request
    /// once the returned reader has reached the body's end.
    pub fn body(&mut self, framing: BodyFraming) -> BodyReader<'_, R> {
        BodyReader::new(self, framing)
    }

    /// Reads the next request with its body in memory (at most `cap` bytes). For tests.
    #[cfg(test)]
    pub fn read_request(
        &mut self,
        cap: usize,
    ) -> Result<Option<(RequestHead, Vec<u8>)>, BadRequest> {
        let Some((head, framing)) = self.read_head()? else {
            return Ok(None);
        };
        let mut body = self.body(framing);
        match super::body::read_bounded(&mut body, cap) {
            Ok(b) => Ok(Some((head, b))),
            Err(super::body::BoundedError::TooLarge) => Err(bad(413, "request body too large")),
            Err(super::body::BoundedError::Io(e)) => Err(bad(400, e.to_string())),
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

fn body_framing(req: &RequestHead) -> Result<BodyFraming, BadRequest> {
    let te: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let lengths: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.trim())
        .collect();
    if !te.is_empty() {
        // Both headers at once is how request smuggling starts; refuse rather than guess.
        if !lengths.is_empty() {
            return Err(bad(400, "both Transfer-Encoding and Content-Length given"));
        }
        return if te.len() == 1 && te[0].eq_ignore_ascii_case("chunked") {
            Ok(BodyFraming::Chunked)
        } else {
            Err(bad(501, "unsupported Transfer-Encoding"))
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(BodyFraming::None);
    };
    if lengths.iter().any(|l| l != first) {
        return Err(bad(400, "conflicting Content-Length headers"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(400, "invalid Content-Length"));
    }
    // The size cap depends on the route, so it is applied when the body is read.
    match first.parse::<u64>() {
        Ok(0) => Ok(BodyFraming::None),
        Ok(n) => Ok(BodyFraming::Length(n)),
        Err(_) => Err(bad(413, "request body too large")),
    }
}

/// The path and query of a request target: an origin-form target (`/path?query`) as it is,
/// the path of an absolute-form one (`http://host:port/path?query`, which RFC 9112 §3.2.2
/// says a server must accept, and which some clients send through a proxy's tunnel), `/`
/// for a URL without a path. `None` for any other form.
fn origin_form(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None; // no host
    }
    match &rest[authority_end..] {
        "" => Some("/"),
        path if path.starts_with('/') => Some(path),
        _ => None, // `http://host?query`: no path to take the query with
    }
}

fn to_head(parsed: &httparse::Request<'_, '_>) -> Result<RequestHead, BadRequest> {
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = origin_form(parsed.path.unwrap_or_default())
        .ok_or_else(|| bad(400, "request target must be an absolute path or URL"))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(RequestHead {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: parsed.version.unwrap_or(1),
        headers,
    })
}

/// A complete response, built by a handler and written by [`write_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Sprite-Version`, `Content-Length` and `Connection` are added when written).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send the body with `Transfer-Encoding: chunked` (streams such as NDJSON).
    pub chunked: bool,
}

/// The API error body (PROTOCOL.md §3.1).
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl Response {
    /// A response with no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }

    /// `value` serialised as the JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: vec![("Content-Type", "application/json".to_owned())],
                body,
                chunked: false,
            },
            Err(e) => Response::error(500, "internal", &format!("encoding response: {e}")),
        }
    }

    /// `{"error": code, "message": message}` with `status` (PROTOCOL.md §3.1).
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: code,
            message,
        })
        .unwrap_or_default();
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_owned())],
            body,
            chunked: false,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// The standard reason phrase for the statuses this server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `resp`. `head_only` omits the body (HEAD); `keep_alive == false` adds
/// `Connection: close`. Small responses go out in a single write.
pub fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let bodyless_status = bodyless(resp.status);
    let len = (!resp.chunked).then_some(resp.body.len() as u64);
    let head = response_head(resp.status, &resp.headers, len, keep_alive);
    let send_body = !head_only && !bodyless_status;
    if !send_body {
        w.write_all(head.as_bytes())?;
    } else if resp.chunked {
        w.write_all(head.as_bytes())?;
        let mut cw = ChunkedWriter::new(&mut *w);
        cw.write_all(&resp.body)?;
        cw.finish()?;
    } else if resp.body.len() <= 64 * 1024 {
        let mut all = head.into_bytes();
        all.extend_from_slice(&resp.body);
        w.write_all(&all)?;
    } else {
        w.write_all(head.as_bytes())?;
        w.write_all(&resp.body)?;
    }
    w.flush()
}

/// Statuses that never carry a body.
fn bodyless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// A response head: status line, `Sprite-Version`, `headers`, then `Content-Length: len`
/// (or `Transfer-Encoding: chunked` when `len` is `None`) unless the status has no body,
/// and `Connection: close` unless `keep_alive`.
pub(crate) fn response_head(
    status: u16,
    headers: &[(&'static str, String)],
    len: Option<u64>,
    keep_alive: bool,
) -> String {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nSprite-Version: {SPRITE_VERSION}\r\n",
        status,
        reason(status)
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if !bodyless(status) {
        match len {
            Some(n) => {
                let _ = write!(head, "Content-Length: {n}\r\n");
            }
            None => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Writes a chunked body: each `write` is one chunk, [`ChunkedWriter::finish`] ends it.
pub struct ChunkedWriter<W: Write> {
    inner: W,
}

impl<W: Write> ChunkedWriter<W> {
    /// Starts a chunked body on `inner` (headers must already be written).
    pub fn new(inner: W) -> Self {
        ChunkedWriter { inner }
    }

    /// Writes the terminating zero-length chunk and returns the stream.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // An empty chunk would terminate the body, so empty writes are no-ops.
        if data.is_empty() {
            return Ok(0);
        }
        let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
        frame.extend_from_slice(data);
        frame.extend_from_slice(b"\r\n");
        self.inner.write_all(&frame)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head with the body that followed it.
    #[derive(Debug)]
    struct Request {
        head: RequestHead,
        body: Vec<u8>,
    }

    impl std::ops::Deref for Request {
        type Target = RequestHead;
        fn deref(&self) -> &RequestHead {
            &self.head
        }
    }

    /// The cap the JSON routes use for bodies they buffer.
    const CAP: usize = 1 << 20;

    fn parse_all(raw: &[u8]) -> Vec<Result<Request, String>> {
        let mut r = RequestReader::new(raw);
        let mut out = Vec::new();
        loop {
            match r.read_request(CAP) {
                Ok(Some((head, body))) => out.push(Ok(Request { head, body })),
                Ok(None) => return out,
                Err(BadRequest { status, message }) => {
                    out.push(Err(format!("{status}: {message}")));
                    return out;
                }
            }
        }
    }

    fn parse_one(raw: &[u8]) -> Result<Request, String> {
        parse_all(raw).into_iter().next().expect("one result")
    }

    fn status_of(raw: &[u8]) -> u16 {
        let err = parse_one(raw).unwrap_err();
        err.split(':').next().unwrap().parse().unwrap()
    }

    #[test]
    fn simple_get_with_query() {
        let req = parse_one(b"GET /v1/sprites?prefix=a&max_results=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n").unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/v1/sprites");
        assert_eq!(req.query, "prefix=a&max_results=2");
        assert_eq!(req.header("AUTHORIZATION"), Some("Bearer t"));
        assert!(req.body.is_empty());
        assert!(!req.wants_close());
    }

    #[test]
    fn content_length_body_and_pipelining() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let reqs = parse_all(raw);
        assert_eq!(reqs.len(), 2);
        let a = reqs[0].as_ref().unwrap();
        assert_eq!(a.body, b"hello");
        let b = reqs[1].as_ref().unwrap();
        assert_eq!(b.path, "/b");
        assert!(b.wants_close());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n";
        let req = parse_one(raw).unwrap();
        assert_eq!(req.body, b"hello, world");
    }

    #[test]
    fn chunked_body_split_across_reads() {
        // A reader that returns one byte at a time exercises every partial-buffer path.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let raw =
            b"PUT /a HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n";
        let mut r = RequestReader::new(Trickle(raw));
        let (_, body) = r.read_request(CAP).unwrap().unwrap();
        assert_eq!(body, b"0123456789");
        assert!(r.read_request(CAP).unwrap().is_none());
    }

    #[test]
    fn malformed_inputs_are_rejected_not_panicked_on() {
        assert_eq!(status_of(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET ftp://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET * HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n"),
            413,
            "buffered bodies stay capped"
        );
        assert_eq!(
            status_of(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n"),
            400
        );
        // Truncated head and truncated body.
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost"), 400);
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            400
        );
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            400
        );
    }

    #[test]
    fn oversized_head_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(status_of(&raw), 431);
    }

    #[test]
    fn clean_eof_and_http10() {
        assert!(parse_all(b"").is_empty());
        let req = parse_one(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(req.wants_close());
    }

    #[test]
    fn expect_continue_needs_a_body() {
        let req =
            parse_one(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
                .unwrap();
        assert!(req.expects_continue(BodyFraming::Length(2)));
        assert!(!req.expects_continue(BodyFraming::None));
        let req = parse_one(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert!(!req.expects_continue(BodyFraming::Length(2)));
    }

    #[test]
    fn heads_parse_from_a_buffer_without_reading() {
        let raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n";
        let p = parse_head(raw).unwrap().unwrap();
        assert_eq!(p.head.path, "/a");
        assert_eq!(&raw[p.len..], b"GET /b HTTP/1.1\r\n");
        assert!(parse_head(&raw[p.len..]).unwrap().is_none(), "partial");
        assert!(parse_head(b"").unwrap().is_none());
        // A head that is complete but longer than MAX_HEAD is still too large.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_head(&long),
            Err(BadRequest { status: 431, .. })
        ));
    }

    #[test]
    fn websocket_upgrade_detection() {
        let req = parse_one(
            b"GET /x HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
        )
        .unwrap();
        assert!(req.is_websocket_upgrade());
        assert!(req.header_has_token("connection", "upgrade"));
    }

    #[test]
    fn error_body_shape() {
        let r = Response::error(404, "sprite_not_found", "sprite \"x\" not found");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "sprite_not_found", "message": "sprite \"x\" not found"})
        );
        assert!(r
            .headers
            .contains(&("Content-Type", "application/json".to_owned())));
    }

    #[test]
    fn response_writing() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &Response::json(200, &serde_json::json!({"a":1})),
            false,
            true,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nSprite-Version: 0.1.0\r\n"));
        assert!(s.contains("Content-Length: 7\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"a\":1}"));

        let mut out = Vec::new();
        write_response(&mut out, &Response::empty(204), false, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("Content-Length"));
        assert!(s.contains("Connection: close\r\n"));

        let mut out = Vec::new();
        let mut r = Response::json(200, &1);
        r.chunked = true;
        write_response(&mut out, &r, false, true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Transfer-Encoding: chunked\r\n"));
        assert!(s.ends_with("\r\n\r\n1\r\n1\r\n0\r\n\r\n"));

        let mut out = Vec::new();
        write_response(&mut out, &Response::json(200, &1), true, true).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Content-Length: 1\r\n\r\n"));
    }

    #[test]
    fn read_with_appends_one_read_and_keeps_nothing_of_a_failed_one() {
        let mut r = RequestReader::with_buffered(&b""[..], b"GE".to_vec());
        let n = r
            .read_with(|buf| {
                assert_eq!(buf.len(), READ_CHUNK);
                buf[..3].copy_from_slice(b"T /");
                Ok(3)
            })
            .unwrap();
        assert_eq!((n, r.buffered()), (3, &b"GET /"[..]));
        let err = r.read_with(|_| Err(io::ErrorKind::WouldBlock.into()));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(r.buffered(), b"GET /");
        assert_eq!(r.read_with(|_| Ok(0)).unwrap(), 0);
        assert_eq!(r.buffered(), b"GET /");
        // A reader claiming more than it was given cannot grow the buffer past one chunk.
        r.read_with(|_| Ok(READ_CHUNK + 10)).unwrap();
        assert_eq!(r.buffered().len(), 5 + READ_CHUNK);
    }

    #[test]
    fn absolute_form_targets_are_their_path() {
        assert_eq!(origin_form("/a?b=1"), Some("/a?b=1"));
        assert_eq!(
            origin_form("http://x/v1/sprites?m=1"),
            Some("/v1/sprites?m=1")
        );
        assert_eq!(origin_form("HTTPS://x:8443/v1"), Some("/v1"));
        assert_eq!(origin_form("http://127.0.0.1:80"), Some("/"));
        for no in [
            "",
            "x",
            "*",
            "x:443",
            "ftp://x/",
            "http:///a",
            "http://x?q",
            "http//x/",
        ] {
            assert_eq!(origin_form(no), None, "{no:?}");
        }
        let mut r = RequestReader::new(&b"GET https://h:1/v1/sprites/a?x=1 HTTP/1.1\r\n\r\n"[..]);
        let (head, _) = r.read_head().unwrap().unwrap();
        assert_eq!(
            (head.path.as_str(), head.query.as_str()),
            ("/v1/sprites/a", "x=1")
        );
    }
}
