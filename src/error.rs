//! Errors: [`Error`] for everything the client does, [`ApiError`] for what the API said.
//!
//! The std-mirror surfaces ([`Command`](crate::Command), [`Child`](crate::Child) and its pipes)
//! return [`std::io::Result`] so that code written against `std::process` ports by changing only
//! where the value comes from. Every such `io::Error` wraps a [`sprites::Error`](Error) with an
//! [`io::ErrorKind`] mapped from it, and [`Error::from_io`] gets it back.

use std::fmt;
use std::io;
use std::time::Duration;

/// A `Result` whose error is [`sprites::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the Sprites API.
///
/// ```
/// use sprites::Error;
/// let err = Error::InvalidInput("empty sprite name".into());
/// assert_eq!(err.to_string(), "invalid input: empty sprite name");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error status (≥ 400). Boxed: it is large and rare, and
    /// `Result<T, Error>` should stay small on the happy path.
    #[error(transparent)]
    Api(Box<ApiError>),

    /// The request never got an answer, or its connection broke: name resolution, connect,
    /// TLS, a proxy, a timeout or a reset. [`TransportError::kind`] says which, truthfully, and
    /// [`source`](std::error::Error::source) is the underlying error.
    #[error(transparent)]
    Transport(TransportError),

    /// An exec WebSocket closed before the server reported an exit status.
    ///
    /// `code` and `reason` come from the close frame; both are `None`/empty when the
    /// connection was cut without one (server killed, network gone).
    #[error(
        "connection closed before the exit status arrived (close code {code:?}, reason {reason:?})"
    )]
    ConnectionClosed {
        /// The WebSocket close code, if a close frame arrived.
        code: Option<u16>,
        /// The close reason, if any.
        reason: String,
    },

    /// Nothing arrived from the server for this long (keepalive pings unanswered).
    #[error("no message from the server for {0:?}; connection presumed dead")]
    KeepaliveTimeout(Duration),

    /// A command ran past its [`Command::timeout`](crate::Command::timeout) and was killed.
    #[error("command timed out after {0:?} and was killed")]
    TimedOut(Duration),

    /// The server sent something that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A response body is not the JSON the API documents; the source is the JSON error.
    #[error("the server's response is not the JSON the API documents")]
    Decode(#[source] serde_json::Error),

    /// The server sent more than the client accepts: more than it declared, or more than a
    /// bound that keeps a misbehaving server from exhausting memory.
    #[error("{what} is larger than {limit} bytes")]
    ResponseTooLarge {
        /// What was being received.
        what: String,
        /// The size declared or allowed.
        limit: u64,
    },

    /// A command exited unsuccessfully where success was required
    /// ([`Output::exit_ok`](crate::Output::exit_ok)).
    #[error("{status}{}", stderr_suffix(stderr_tail))]
    CommandFailed {
        /// How the command ended.
        status: crate::ExitStatus,
        /// The end of its stderr (at most [`STDERR_TAIL`](crate::Output::STDERR_TAIL) bytes),
        /// decoded lossily.
        stderr_tail: String,
    },

    /// A proxy tunnel ([`Sprite::proxy_socket`](crate::Sprite::proxy_socket), a
    /// [`PortForward`](crate::PortForward)) could not be opened: the server could not connect
    /// to `target` from inside the sprite, or refused the request
    /// ([PROTOCOL.md §10](crate::protocol#10-tcp-proxy)). `kind` says why —
    /// `ConnectionRefused` (nothing listens there), `TimedOut`, `NotFound` (the name does not
    /// resolve), `InvalidInput` (a malformed request) — and is what
    /// [`io_kind`](Error::io_kind) returns.
    #[error("proxy to {target}: {message}")]
    ProxyTarget {
        /// `host:port` as requested.
        target: String,
        /// What the failure is.
        kind: io::ErrorKind,
        /// The server's message.
        message: String,
    },

    /// The caller passed something the API cannot express.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The client is not configured (no token, bad URL).
    #[error("configuration error: {0}")]
    Config(String),

    /// A local I/O error (reading local stdin, writing local stdout, ...).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Recovers the `sprites::Error` inside an `io::Error` returned by a std-mirror method.
    ///
    /// ```
    /// use sprites::Error;
    /// let io_err: std::io::Error = Error::TimedOut(std::time::Duration::from_secs(1)).into();
    /// assert_eq!(io_err.kind(), std::io::ErrorKind::TimedOut);
    /// assert!(matches!(Error::from_io(&io_err), Some(Error::TimedOut(_))));
    /// ```
    pub fn from_io(err: &io::Error) -> Option<&Error> {
        let inner = err.get_ref()?;
        // A finished Child keeps its error in an Arc so that repeated waits can report it.
        inner.downcast_ref::<Error>().or_else(|| {
            inner
                .downcast_ref::<std::sync::Arc<Error>>()
                .map(|arc| &**arc)
        })
    }

    /// The API error, if the server answered with an error status.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(api) => Some(api),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] this error maps to when it crosses a std-mirror surface.
    pub fn io_kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::Api(api) => api.io_kind(),
            Error::Transport(err) => err.kind(),
            Error::ConnectionClosed { .. } => K::ConnectionReset,
            Error::KeepaliveTimeout(_) | Error::TimedOut(_) => K::TimedOut,
            Error::Protocol(_) | Error::Decode(_) | Error::ResponseTooLarge { .. } => {
                K::InvalidData
            }
            Error::CommandFailed { .. } => K::Other,
            Error::ProxyTarget { kind, .. } => *kind,
            Error::InvalidInput(_) | Error::Config(_) => K::InvalidInput,
            Error::Io(err) => err.kind(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err {
            // Keep a plain local io::Error as it is: wrapping it again would hide its kind
            // and OS code behind ours.
            Error::Io(inner) => inner,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}

impl From<ApiError> for Error {
    fn from(err: ApiError) -> Error {
        Error::Api(Box::new(err))
    }
}

impl From<ureq::Error> for Error {
    fn from(err: ureq::Error) -> Error {
        match err {
            ureq::Error::Status(status, response) => {
                ApiError::from_response(status, response).into()
            }
            ureq::Error::Transport(transport) => {
                Error::Transport(TransportError::from_ureq(transport))
            }
        }
    }
}

impl From<TransportError> for Error {
    fn from(err: TransportError) -> Error {
        Error::Transport(err)
    }
}

fn stderr_suffix(tail: &str) -> String {
    let tail = tail.trim_end();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr ends with: {tail}")
    }
}

/// Why a request or a connection failed below the API.
///
/// [`kind`](Self::kind) is what the failure is — `NotFound` for a host name that does not
/// resolve, `ConnectionRefused`, `TimedOut` for a connect, read or write that ran past its
/// bound, `ConnectionReset` or `UnexpectedEof` for a connection cut mid-exchange, `InvalidData`
/// for a TLS or HTTP exchange the server got wrong — and [`source`](std::error::Error::source)
/// is the error it came from (an [`io::Error`], or the HTTP or TLS library's error).
///
/// ```
/// use std::io;
/// let client = sprites::Client::builder()
///     .base_url("http://no-such-host.invalid")
///     .token("t")
///     .build()?;
/// let err = client.get_sprite("x").unwrap_err();
/// let sprites::Error::Transport(transport) = &err else { panic!("{err:?}") };
/// assert_eq!(transport.kind(), io::ErrorKind::NotFound);
/// assert_eq!(err.io_kind(), io::ErrorKind::NotFound);
/// # Ok::<(), sprites::Error>(())
/// ```
#[derive(Debug)]
pub struct TransportError {
    kind: io::ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TransportError {
    pub(crate) fn new(
        kind: io::ErrorKind,
        context: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> TransportError {
        TransportError {
            kind,
            context: context.into(),
            source,
        }
    }

    /// A failed socket operation. A read or write that ran past its timeout surfaces as
    /// `WouldBlock` on some platforms; it is `TimedOut` here, which is what it means.
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> TransportError {
        TransportError::new(normalize_kind(err.kind()), context, Some(Box::new(err)))
    }

    fn from_ureq(transport: ureq::Transport) -> TransportError {
        use ureq::ErrorKind as U;
        let found = io_kind_in_chain(&transport);
        let kind = match transport.kind() {
            U::Dns => io::ErrorKind::NotFound,
            U::InvalidUrl | U::UnknownScheme | U::InvalidProxyUrl | U::InsecureRequestHttpsOnly => {
                io::ErrorKind::InvalidInput
            }
            U::BadStatus | U::BadHeader => io::ErrorKind::InvalidData,
            U::ProxyUnauthorized => io::ErrorKind::PermissionDenied,
            _ if is_tls_error(&transport) => io::ErrorKind::InvalidData,
            U::ConnectionFailed | U::ProxyConnect => {
                found.unwrap_or(io::ErrorKind::ConnectionRefused)
            }
            _ => found.unwrap_or(io::ErrorKind::Other),
        };
        let doing = match transport.kind() {
            U::Dns => "resolving the host of",
            U::ConnectionFailed => "connecting to",
            U::ProxyConnect | U::ProxyUnauthorized => "connecting through the proxy to",
            U::BadStatus | U::BadHeader => "reading the response of",
            _ => "requesting",
        };
        let context = match transport.url() {
            Some(url) => format!("{doing} {}", redact(url.as_str())),
            None => doing
                .trim_end_matches(" of")
                .trim_end_matches(" to")
                .to_owned(),
        };
        TransportError::new(kind, context, Some(Box::new(transport)))
    }

    /// What kind of failure this is, as std would classify it.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kind in words, not the source's text: the source is returned by `source()`, and
        // printing it here too would repeat it in every error chain.
        let phrase = match self.kind {
            io::ErrorKind::NotFound => "the name does not resolve".to_owned(),
            io::ErrorKind::UnexpectedEof => "the connection ended early".to_owned(),
            io::ErrorKind::InvalidData => "the server's answer is invalid".to_owned(),
            io::ErrorKind::Other => match &self.source {
                Some(source) => source.to_string(),
                None => "failed".to_owned(),
            },
            kind => kind.to_string(),
        };
        write!(f, "{}: {phrase}", self.context)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn normalize_kind(kind: io::ErrorKind) -> io::ErrorKind {
    match kind {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut,
        other => other,
    }
}

/// The kind of the first `io::Error` in an error's source chain.
fn io_kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut next = err.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            // An io::Error may itself wrap a more specific one (ureq does this).
            return Some(io_kind_in_chain(io).unwrap_or_else(|| normalize_kind(io.kind())));
        }
        next = e.source();
    }
    None
}

fn is_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = err.source();
    while let Some(e) = next {
        #[cfg(feature = "native-tls")]
        if e.is::<native_tls::Error>() {
            return true;
        }
        #[cfg(feature = "rustls")]
        if e.is::<rustls::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A URL without its query string, which may carry file paths or command lines the caller
/// would not want in a log line.
fn redact(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

/// Rate-limit headers the API sent with an error (`X-RateLimit-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-RateLimit-Limit`: requests allowed in the window.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`: requests left in the window.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`: when the window resets, in Unix seconds.
    pub reset: Option<u64>,
}

/// An error status from the API with its body ([PROTOCOL.md §3.1](crate::protocol#31-api-error-body)); every field but the status is
/// optional on the wire.
///
/// ```
/// let err = sprites::ApiError::new(404, Some("sprite_not_found"), "no sprite named x");
/// assert!(err.is_not_found());
/// assert_eq!(err.to_string(), "API error 404 (sprite_not_found): no sprite named x");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Machine-readable code (`error` in the body), e.g. `sprite_creation_rate_limited`.
    pub code: Option<String>,
    /// Human-readable message; the raw body when it was not JSON.
    pub message: String,
    /// How long to wait before retrying: `retry_after_seconds` from the body, else `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The `X-RateLimit-*` headers.
    pub rate_limit: RateLimit,
    /// `limit` from the body (rate and concurrency errors).
    pub limit: Option<u64>,
    /// `window_seconds` from the body.
    pub window_seconds: Option<u64>,
    /// `current_count` from the body (concurrency errors).
    pub current_count: Option<u64>,
    /// `upgrade_available` from the body.
    pub upgrade_available: Option<bool>,
    /// `upgrade_url` from the body.
    pub upgrade_url: Option<String>,
    /// `path` from a filesystem error body ([PROTOCOL.md §3.2](crate::protocol#32-filesystem-error-body)).
    pub path: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct ApiErrorBody {
    error: Option<String>,
    message: Option<String>,
    limit: Option<u64>,
    window_seconds: Option<u64>,
    retry_after_seconds: Option<u64>,
    current_count: Option<u64>,
    upgrade_available: Option<bool>,
    upgrade_url: Option<String>,
    /// Filesystem errors put an errno name here (`ENOENT`) and text in `error`.
    code: Option<String>,
    path: Option<String>,
}

impl ApiError {
    /// An error with just a status, code and message.
    pub fn new(status: u16, code: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.map(str::to_owned),
            message: message.into(),
            retry_after: None,
            rate_limit: RateLimit::default(),
            limit: None,
            window_seconds: None,
            current_count: None,
            upgrade_available: None,
            upgrade_url: None,
            path: None,
        }
    }

    /// Parses an error response: status, headers (looked up by `header`) and body.
    ///
    /// A JSON body fills the fields; any other body becomes the message; an empty body gives
    /// `API error (status N)`. Header values that are not integers are ignored.
    ///
    /// ```
    /// let body = br#"{"error":"sprite_creation_rate_limited","message":"slow down","retry_after_seconds":30}"#;
    /// let err = sprites::ApiError::parse(429, |h| (h == "x-ratelimit-limit").then(|| "10".to_string()), body);
    /// assert!(err.is_rate_limited());
    /// assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(30)));
    /// assert_eq!(err.rate_limit.limit, Some(10));
    /// ```
    pub fn parse(status: u16, header: impl Fn(&str) -> Option<String>, body: &[u8]) -> ApiError {
        let int_header = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let parsed: Option<ApiErrorBody> = serde_json::from_str(text).ok();
        let (code, message, parsed) = match parsed {
            Some(b) => {
                let message = b
                    .message
                    .clone()
                    .or_else(|| b.error.clone())
                    .unwrap_or_else(|| format!("API error (status {status})"));
                // A filesystem body's `code` (an errno name) is the machine-readable one.
                (b.code.clone().or_else(|| b.error.clone()), message, b)
            }
            None if text.is_empty() => (
                None,
                format!("API error (status {status})"),
                ApiErrorBody::default(),
            ),
            None => (None, text.to_owned(), ApiErrorBody::default()),
        };
        let retry_after = parsed
            .retry_after_seconds
            .or_else(|| int_header("retry-after"))
            .map(Duration::from_secs);
        ApiError {
            status,
            code,
            message,
            retry_after,
            rate_limit: RateLimit {
                limit: int_header("x-ratelimit-limit"),
                remaining: int_header("x-ratelimit-remaining"),
                reset: int_header("x-ratelimit-reset"),
            },
            limit: parsed.limit,
            window_seconds: parsed.window_seconds,
            current_count: parsed.current_count,
            upgrade_available: parsed.upgrade_available,
            upgrade_url: parsed.upgrade_url,
            path: parsed.path,
        }
    }

    pub(crate) fn from_response(status: u16, response: ureq::Response) -> ApiError {
        let headers: Vec<(String, String)> = response
            .headers_names()
            .into_iter()
            .filter_map(|name| {
                let value = response.header(&name)?.to_owned();
                Some((name.to_ascii_lowercase(), value))
            })
            .collect();
        // Error bodies are small; cap what we read so a hostile server cannot exhaust memory.
        let mut body = Vec::new();
        let _ = io::Read::read_to_end(
            &mut io::Read::take(response.into_reader(), 64 * 1024),
            &mut body,
        );
        ApiError::parse(
            status,
            |name| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            },
            &body,
        )
    }

    /// 404: the sprite (or session, or file) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    /// 401: the token is missing or wrong.
    pub fn is_unauthorized(&self) -> bool {
        self.status == 401
    }

    /// 429: a rate or concurrency limit; see [`retry_after`](Self::retry_after).
    pub fn is_rate_limited(&self) -> bool {
        self.status == 429
    }

    /// The name is taken (409, or a 400 whose code says the sprite exists).
    pub fn is_already_exists(&self) -> bool {
        self.status == 409
            || self
                .code
                .as_deref()
                .is_some_and(|c| c.contains("already_exists"))
    }

    /// The [`io::ErrorKind`] for this error: from the errno name of a filesystem error, else
    /// from the status.
    pub fn io_kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match (self.status, self.code.as_deref()) {
            // An exec's missing working directory is chdir's ENOENT for std.
            (_, Some("command_not_found" | "invalid_directory" | "ENOENT")) => K::NotFound,
            (_, Some("EEXIST")) => K::AlreadyExists,
            (_, Some("ENOTDIR")) => K::NotADirectory,
            (_, Some("EISDIR")) => K::IsADirectory,
            (_, Some("ENOTEMPTY")) => K::DirectoryNotEmpty,
            (_, Some("EACCES" | "EPERM")) => K::PermissionDenied,
            (_, Some("EINVAL")) => K::InvalidInput,
            (_, Some("EIO")) => K::Other,
            (_, Some("permission_denied")) => K::PermissionDenied,
            (401 | 403 | 407, _) => K::PermissionDenied,
            (404 | 410, _) => K::NotFound,
            (409, _) => K::AlreadyExists,
            (400 | 422, _) => K::InvalidInput,
            (408 | 504, _) => K::TimedOut,
            (429, _) => K::WouldBlock,
            _ => K::Other,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "API error {} ({}): {}", self.status, code, self.message),
            None => write!(f, "API error {}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_body_names_the_status() {
        let err = ApiError::parse(502, no_headers, b"");
        assert_eq!(err.message, "API error (status 502)");
        assert_eq!(err.code, None);
    }

    #[test]
    fn plain_text_body_becomes_the_message() {
        let err = ApiError::parse(400, no_headers, b"bad policy\n");
        assert_eq!(err.message, "bad policy");
    }

    #[test]
    fn body_retry_after_wins_over_header_and_bad_headers_are_ignored() {
        let headers = |h: &str| match h {
            "retry-after" => Some("99".to_string()),
            "x-ratelimit-remaining" => Some("lots".to_string()),
            "x-ratelimit-reset" => Some("1780000000".to_string()),
            _ => None,
        };
        let body = br#"{"error":"concurrent_sprite_limit_exceeded","current_count":5,"retry_after_seconds":7,"upgrade_available":true}"#;
        let err = ApiError::parse(429, headers, body);
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(err.rate_limit.remaining, None);
        assert_eq!(err.rate_limit.reset, Some(1_780_000_000));
        assert_eq!(err.current_count, Some(5));
        assert_eq!(err.upgrade_available, Some(true));
        assert_eq!(err.message, "concurrent_sprite_limit_exceeded");
    }

    #[test]
    fn header_retry_after_used_when_body_has_none() {
        let err = ApiError::parse(429, |h| (h == "retry-after").then(|| "3".into()), b"{}");
        assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn filesystem_bodies_map_errno_names() {
        let err = ApiError::parse(
            404,
            no_headers,
            br#"{"error":"no such file or directory","code":"ENOENT","path":"/x"}"#,
        );
        assert_eq!(err.code.as_deref(), Some("ENOENT"));
        assert_eq!(err.message, "no such file or directory");
        assert_eq!(err.path.as_deref(), Some("/x"));
        assert_eq!(err.io_kind(), io::ErrorKind::NotFound);
        let err = ApiError::parse(
            409,
            no_headers,
            br#"{"error":"directory not empty","code":"ENOTEMPTY"}"#,
        );
        assert_eq!(err.io_kind(), io::ErrorKind::DirectoryNotEmpty);
    }

    #[test]
    fn statuses_and_codes_map_to_std_kinds() {
        use io::ErrorKind as K;
        for (status, kind) in [
            (401, K::PermissionDenied),
            (403, K::PermissionDenied),
            (407, K::PermissionDenied),
            (404, K::NotFound),
            (410, K::NotFound),
            (409, K::AlreadyExists),
            (400, K::InvalidInput),
            (422, K::InvalidInput),
            (408, K::TimedOut),
            (504, K::TimedOut),
            (429, K::WouldBlock),
            (500, K::Other),
        ] {
            assert_eq!(ApiError::new(status, None, "m").io_kind(), kind, "{status}");
        }
        for (code, kind) in [
            ("command_not_found", K::NotFound),
            ("invalid_directory", K::NotFound),
            ("ENOENT", K::NotFound),
            ("EEXIST", K::AlreadyExists),
            ("ENOTDIR", K::NotADirectory),
            ("EISDIR", K::IsADirectory),
            ("ENOTEMPTY", K::DirectoryNotEmpty),
            ("EACCES", K::PermissionDenied),
            ("EPERM", K::PermissionDenied),
            ("permission_denied", K::PermissionDenied),
            ("EINVAL", K::InvalidInput),
            ("EIO", K::Other),
        ] {
            // The code wins over a status that would say something else.
            assert_eq!(
                ApiError::new(418, Some(code), "m").io_kind(),
                kind,
                "{code}"
            );
        }
    }

    #[test]
    fn api_errors_display_their_code_when_they_have_one() {
        assert_eq!(
            ApiError::new(404, Some("sprite_not_found"), "no sprite x").to_string(),
            "API error 404 (sprite_not_found): no sprite x"
        );
        assert_eq!(
            ApiError::new(502, None, "bad gateway").to_string(),
            "API error 502: bad gateway"
        );
        let err = ApiError::new(409, Some("EEXIST"), "file exists");
        assert!(err.is_already_exists() && !err.is_not_found() && !err.is_rate_limited());
        assert!(ApiError::new(400, Some("sprite_already_exists"), "").is_already_exists());
        assert!(!ApiError::new(400, Some("invalid_name"), "").is_already_exists());
        assert!(ApiError::new(429, None, "").is_rate_limited());
        assert!(ApiError::new(401, None, "").is_unauthorized());
        assert!(!ApiError::new(404, None, "").is_unauthorized());
        assert!(ApiError::new(404, None, "").is_not_found());
    }

    #[test]
    fn every_error_has_its_kind_and_io_errors_stay_themselves() {
        use io::ErrorKind as K;
        let cases = [
            (
                Error::ConnectionClosed {
                    code: None,
                    reason: String::new(),
                },
                K::ConnectionReset,
            ),
            (Error::KeepaliveTimeout(Duration::from_secs(1)), K::TimedOut),
            (Error::TimedOut(Duration::from_secs(1)), K::TimedOut),
            (Error::Protocol("p".into()), K::InvalidData),
            (
                Error::ResponseTooLarge {
                    what: "w".into(),
                    limit: 1,
                },
                K::InvalidData,
            ),
            (Error::InvalidInput("i".into()), K::InvalidInput),
            (Error::Config("c".into()), K::InvalidInput),
            (Error::Io(io::Error::from(K::BrokenPipe)), K::BrokenPipe),
            (
                Error::Transport(TransportError::new(K::HostUnreachable, "connecting", None)),
                K::HostUnreachable,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.io_kind(), kind, "{err}");
            assert_eq!(io::Error::from(err).kind(), kind);
        }
        // A local io::Error comes back out as itself, OS code included.
        let local = io::Error::from_raw_os_error(2);
        let back = io::Error::from(Error::Io(local));
        assert_eq!(back.raw_os_error(), Some(2));
        assert!(Error::from_io(&back).is_none());
        assert!(Error::Protocol("p".into()).api().is_none());
        assert!(Error::from(ApiError::new(404, None, "")).api().is_some());
    }

    #[test]
    fn transport_errors_say_what_failed_and_keep_the_cause() {
        use std::error::Error as _;
        let timed = TransportError::io(
            "reading the response",
            io::Error::from(io::ErrorKind::WouldBlock),
        );
        assert_eq!(
            timed.kind(),
            io::ErrorKind::TimedOut,
            "a socket timeout is a timeout"
        );
        assert_eq!(timed.to_string(), "reading the response: timed out");
        let cause = timed
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .unwrap();
        assert_eq!(cause.kind(), io::ErrorKind::WouldBlock);
        let dns = TransportError::new(io::ErrorKind::NotFound, "resolving x:1", None);
        assert_eq!(dns.to_string(), "resolving x:1: the name does not resolve");
        assert!(dns.source().is_none());
        let cut = TransportError::new(io::ErrorKind::UnexpectedEof, "reading", None);
        assert_eq!(cut.to_string(), "reading: the connection ended early");
        let bad = TransportError::new(io::ErrorKind::InvalidData, "TLS", None);
        assert_eq!(bad.to_string(), "TLS: the server's answer is invalid");
        let other = TransportError::new(
            io::ErrorKind::Other,
            "requesting",
            Some(Box::new(io::Error::other("odd"))),
        );
        assert_eq!(other.to_string(), "requesting: odd");
        assert_eq!(
            TransportError::new(io::ErrorKind::Other, "x", None).to_string(),
            "x: failed"
        );
        let refused = TransportError::new(io::ErrorKind::ConnectionRefused, "connecting", None);
        assert_eq!(refused.to_string(), "connecting: connection refused");
        assert_eq!(
            Error::from(refused).to_string(),
            "connecting: connection refused"
        );
        // Error::Transport is transparent: its source is the transport error's cause.
        let err = Error::from(TransportError::new(
            io::ErrorKind::ConnectionRefused,
            "connecting",
            Some(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        ));
        assert!(err.source().is_some_and(|s| s.is::<io::Error>()));
    }

    #[test]
    fn ureq_io_errors_keep_their_kind_and_queries_stay_out_of_messages() {
        let err = Error::from(ureq::Error::from(io::Error::from(
            io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(err.io_kind(), io::ErrorKind::ConnectionReset);
        let err = Error::from(ureq::Error::from(io::Error::from(
            io::ErrorKind::WouldBlock,
        )));
        assert_eq!(err.io_kind(), io::ErrorKind::TimedOut);
        assert_eq!(redact("http://h/v1/x?path=%2Fsecret"), "http://h/v1/x");
        assert_eq!(redact("http://h/v1/x"), "http://h/v1/x");
    }

    #[test]
    fn io_error_round_trip_keeps_the_sprites_error() {
        let io_err: io::Error =
            Error::from(ApiError::new(401, Some("unauthorized"), "nope")).into();
        assert_eq!(io_err.kind(), io::ErrorKind::PermissionDenied);
        let back = Error::from_io(&io_err)
            .and_then(Error::api)
            .expect("wrapped ApiError");
        assert!(back.is_unauthorized());
    }
}
