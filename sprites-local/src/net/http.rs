//! HTTP/1.1 on a byte stream: request parsing (httparse + our own body framing) and
//! response writing.
//!
//! Only what the API needs: `Content-Length` and chunked request bodies, keep-alive,
//! `Expect: 100-continue`, `Content-Length` and chunked responses. Anything malformed is
//! reported as a [`RecvError::Bad`] carrying the status to answer with; it never panics.
//!
//! A request's head is read first ([`RequestReader::read_head`]); its body is then either
//! buffered ([`RequestReader::read_body`], capped at [`MAX_BODY`]: JSON documents) or
//! streamed ([`RequestReader::body`], any size, constant memory: file uploads). Files go
//! out with `sendfile(2)` ([`file`](super::file)).

use std::io::{self, Read, Write};

use serde::Serialize;

use super::body::BodyReader;

/// The runtime version this emulator reports in `Sprite-Version` (PROTOCOL.md §2).
pub const SPRITE_VERSION: &str = "0.1.0";
/// Largest request head (request line + headers) we buffer.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body we buffer. Bodies here are JSON documents, so this is generous.
pub const MAX_BODY: usize = 16 << 20;
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 16 * 1024;

/// A parsed request with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
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
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl Request {
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
}

/// Why no request could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The peer went away or the socket failed (or timed out): close without answering.
    Io,
    /// The bytes were not an acceptable request: answer `status` with `message`, then close.
    Bad {
        /// HTTP status to answer with (400, 413, 431, 501).
        status: u16,
        /// Human-readable reason.
        message: String,
    },
}

fn bad(status: u16, message: impl Into<String>) -> RecvError {
    RecvError::Bad {
        status,
        message: message.into(),
    }
}

/// Reads successive requests from one connection, keeping bytes that arrived early
/// (pipelined requests, or WebSocket frames sent right behind an upgrade request).
pub struct RequestReader<R> {
    pub(super) inner: R,
    pub(super) buf: Vec<u8>,
}

impl<R: Read> RequestReader<R> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> Self {
        RequestReader {
            inner,
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    /// Gives back the stream and any bytes read past the last request.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.buf)
    }

    /// Reads the next request. `Ok(None)` = clean end of stream between requests.
    /// `on_expect_continue` is called before reading a body the client is holding back
    /// behind `Expect: 100-continue` (the server writes the interim `100` response there).
    #[cfg(test)]
    pub fn read_request(
        &mut self,
        on_expect_continue: &mut dyn FnMut() -> io::Result<()>,
    ) -> Result<Option<Request>, RecvError> {
        let Some((mut req, framing)) = self.read_head()? else {
            return Ok(None);
        };
        self.read_body(&mut req, framing, on_expect_continue)?;
        Ok(Some(req))
    }

    /// Reads the next request's head and works out how its body is framed; the body itself
    /// is left unread. `Ok(None)` = clean end of stream between requests.
    pub fn read_head(&mut self) -> Result<Option<(Request, BodyFraming)>, RecvError> {
        let Some(req) = self.read_head_only()? else {
            return Ok(None);
        };
        let framing = body_framing(&req)?;
        Ok(Some((req, framing)))
    }

    /// Whether the client is holding its body back until it gets `100 Continue`: it asked
    /// with `Expect: 100-continue`, a body is coming and none of it has arrived yet.
    pub fn awaits_continue(&self, req: &Request, framing: BodyFraming) -> bool {
        framing != BodyFraming::None
            && self.buf.is_empty()
            && req.header_has_token("expect", "100-continue")
    }

    /// Buffers the body of a request whose head [`read_head`](Self::read_head) returned into
    /// `req.body` (at most [`MAX_BODY`] bytes, else 413).
    pub fn read_body(
        &mut self,
        req: &mut Request,
        framing: BodyFraming,
        on_expect_continue: &mut dyn FnMut() -> io::Result<()>,
    ) -> Result<(), RecvError> {
        if let BodyFraming::Length(n) = framing {
            if n > MAX_BODY as u64 {
                return Err(bad(413, "request body too large"));
            }
        }
        if self.awaits_continue(req, framing) {
            on_expect_continue().map_err(|_| RecvError::Io)?;
        }
        req.body = match framing {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(n) => {
                // Checked against MAX_BODY above, so it fits in usize.
                let n = n as usize;
                self.ensure(n)?;
                self.buf.drain(..n).collect()
            }
            BodyFraming::Chunked => self.read_chunked()?,
        };
        Ok(())
    }

    /// Streams the body of a request whose head [`read_head`](Self::read_head) returned:
    /// any size, constant memory. Bytes past the body stay buffered for the next request
    /// once the returned reader has reached the body's end.
    pub fn body(&mut self, framing: BodyFraming) -> BodyReader<'_, R> {
        BodyReader::new(self, framing)
    }

    fn read_head_only(&mut self) -> Result<Option<Request>, RecvError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let req = to_request(&parsed)?;
                        self.buf.drain(..n);
                        return Ok(Some(req));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() >= MAX_HEAD {
                            return Err(bad(431, "request head too large"));
                        }
                    }
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(bad(431, "too many request headers"))
                    }
                    Err(e) => return Err(bad(400, format!("malformed request: {e}"))),
                }
            }
            if self.fill()? == 0 {
                return if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    Ok(None)
                } else {
                    Err(bad(400, "connection closed in the middle of a request"))
                };
            }
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 = end of stream).
    fn fill(&mut self) -> Result<usize, RecvError> {
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let r = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        r.map_err(|_| RecvError::Io)
    }

    /// Makes sure at least `n` bytes are buffered.
    fn ensure(&mut self, n: usize) -> Result<(), RecvError> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(bad(
                    400,
                    "connection closed in the middle of a request body",
                ));
            }
        }
        Ok(())
    }

    /// Takes one CRLF-terminated line (without the CRLF), at most `max` bytes long.
    fn read_line(&mut self, max: usize) -> Result<Vec<u8>, RecvError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].windows(2).position(|w| w == b"\r\n") {
                let end = searched + i;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err(bad(400, "chunked framing line too long"));
            }
            searched = self.buf.len().saturating_sub(1);
            if self.fill()? == 0 {
                return Err(bad(
                    400,
                    "connection closed in the middle of a chunked body",
                ));
            }
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(4096)?;
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                // Trailer section: header lines until an empty one. We don't use trailers.
                while !self.read_line(MAX_HEAD)?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(bad(413, "request body too large"));
            }
            self.ensure(size + 2)?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(bad(400, "chunk data not followed by CRLF"));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
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

fn body_framing(req: &Request) -> Result<BodyFraming, RecvError> {
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

fn parse_chunk_size(line: &[u8]) -> Result<usize, RecvError> {
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size).unwrap_or("").trim();
    if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(400, "invalid chunk size"));
    }
    usize::from_str_radix(size, 16).map_err(|_| bad(400, "invalid chunk size"))
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, RecvError> {
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(bad(400, "request target must be an absolute path"));
    }
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
    Ok(Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: parsed.version.unwrap_or(1),
        headers,
        body: Vec::new(),
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
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
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
pub(super) fn response_head(
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

    fn parse_all(raw: &[u8]) -> Vec<Result<Request, String>> {
        let mut r = RequestReader::new(raw);
        let mut out = Vec::new();
        loop {
            match r.read_request(&mut || Ok(())) {
                Ok(Some(req)) => out.push(Ok(req)),
                Ok(None) => return out,
                Err(RecvError::Bad { status, message }) => {
                    out.push(Err(format!("{status}: {message}")));
                    return out;
                }
                Err(RecvError::Io) => {
                    out.push(Err("io".to_owned()));
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
        let req = r.read_request(&mut || Ok(())).unwrap().unwrap();
        assert_eq!(req.body, b"0123456789");
        assert!(r.read_request(&mut || Ok(())).unwrap().is_none());
    }

    #[test]
    fn malformed_inputs_are_rejected_not_panicked_on() {
        assert_eq!(status_of(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
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
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 16777217\r\n\r\n"),
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
    fn expect_continue_callback_runs_only_when_body_pending() {
        let mut called = 0;
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut both = raw.to_vec();
        // Body already buffered → callback skipped.
        both.extend_from_slice(b"hi");
        let mut r = RequestReader::new(&both[..]);
        r.read_request(&mut || {
            called += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(called, 0);
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
}
