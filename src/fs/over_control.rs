//! Small filesystem calls over an idle pooled control connection ([PROTOCOL.md §8.5](crate::protocol#85-fs-over-control)).
//!
//! A pooled HTTP connection goes stale while the client is idle (servers and load balancers
//! close idle keep-alive connections), so the first call after a pause pays a new connection
//! (TCP, and TLS). Control connections are kept alive by the pool's keeper pings, so a call
//! that finds one idle costs one round trip whatever the pause. Calls use one only when it is
//! idle right now: none is ever dialled for them (an fs-only program does not get a WebSocket
//! it did not ask for; [`Sprite::connect`](crate::Sprite::connect) or any command warms one).
//!
//! The ops go in the Go SDK's form (the one the Sprites cloud is known to serve): unprefixed
//! `op.start` with the args as a URL-encoded string. What comes back decides:
//!
//! - `op.complete`: the result;
//! - `op.error` after a filesystem error body (§3.2, an errno `code`): the same typed error as
//!   over HTTP, through the same [`ApiError::parse`];
//! - `op.error` for a read too large for one message (`EFBIG`), for an unknown or unsupported
//!   op, or anything else: the call runs over HTTP (once); an unknown op, or an answer this
//!   module cannot read, also makes the pool remember that `fs.*` is not served over control;
//! - the connection dying (or no answer within the client's HTTP timeout): a call that changes
//!   nothing (`fs.read`, `fs.list`) runs over HTTP; one that changes something may have been
//!   applied, so it fails with that error rather than run twice. (A connection that fails
//!   while the op is being sent — its `op.start`, or a write's content frame — ran nothing:
//!   HTTP.)

use super::Filesystem;
use crate::control;
use crate::error::{ApiError, Error, TransportError};
use crate::ws::Incoming;
use serde_json::Value;
use std::io;
use std::time::Instant;
use tungstenite::{Bytes, Message};

/// Largest whole-file read or write that goes over a control connection; bigger ones (and
/// every streamed [`File`](super::File)) use HTTP streaming, in constant memory.
pub(crate) const SMALL: usize = 1 << 20;

/// One `fs.*` op: its name, args (keyed like the HTTP query, §9), and for `fs.write` the
/// content.
pub(crate) struct Call<'a> {
    pub(crate) op: &'static str,
    pub(crate) args: &'a [(&'static str, String)],
    /// `fs.write`: sent as one binary frame right after `op.start`.
    pub(crate) content: Option<&'a [u8]>,
    /// `fs.read`: the largest content frame accepted (what the args asked for).
    pub(crate) read_limit: Option<usize>,
}

impl Call<'_> {
    /// Whether the op changes the filesystem, so that running it twice is not the same as
    /// running it once.
    fn changes(&self) -> bool {
        !matches!(self.op, "fs.read" | "fs.list")
    }

    /// `{"type":"op.start","op":…,"args":"k=v&…"}`.
    fn start(&self) -> String {
        let mut query = crate::url::Query::new();
        for (key, value) in self.args {
            query.push(key, value);
        }
        let args = query.as_str().strip_prefix('?').unwrap_or_default();
        serde_json::json!({ "type": "op.start", "op": self.op, "args": args }).to_string()
    }
}

/// What a call over control came back with.
pub(crate) struct Answer {
    /// The op's result JSON (`Null` if the server sent none before `op.complete`).
    pub(crate) result: Value,
    /// `fs.read`'s content.
    pub(crate) content: Option<Vec<u8>>,
}

/// How a call over control ended.
pub(crate) enum Outcome<T> {
    Done(T),
    /// The error to return: what HTTP would have returned, or the connection's failure for a
    /// call that may have been applied.
    Failed(io::Error),
    /// Run the call over HTTP.
    Http,
}

impl<T> Outcome<T> {
    /// The result, running `http` when the call did not (or could not) run over control.
    pub(crate) fn or_http(self, http: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match self {
            Outcome::Done(value) => Ok(value),
            Outcome::Failed(err) => Err(err),
            Outcome::Http => http(),
        }
    }
}

/// Runs `call` over an idle control connection of `fs`'s sprite, if there is one; `decode`
/// reads the answer (`None`: not the shape the op answers with).
pub(crate) fn run<T>(
    fs: &Filesystem,
    call: &Call<'_>,
    decode: impl FnOnce(Answer) -> Option<T>,
) -> Outcome<T> {
    let client = fs.sprite().client();
    let sprite = fs.sprite().name();
    let Some(lease) = control::checkout_fs(client, sprite) else {
        return Outcome::Http;
    };
    if lease
        .socket
        .send(Message::Text(call.start().into()))
        .is_err()
    {
        // Nothing of the op reached the server: dropping the lease closes the connection.
        return Outcome::Http;
    }
    if let Some(content) = call.content
        && lease
            .socket
            .send(Message::Binary(Bytes::copy_from_slice(content)))
            .is_err()
    {
        // The server writes only once the whole frame is in, and it never was: nothing was
        // applied.
        return Outcome::Http;
    }
    let deadline = Instant::now() + client.inner.http_timeout;
    match read_reply(&lease, call, deadline) {
        Ok(Reply::Complete(answer)) => {
            lease.release();
            match decode(answer) {
                Some(value) => Outcome::Done(value),
                None => misunderstood(fs, call, "an answer of another shape"),
            }
        }
        Ok(Reply::Error { body, args }) => {
            lease.release();
            op_error(fs, body, &args)
        }
        Err(Broken::Malformed(what)) => {
            // Dropping the lease closes the connection: what else is on the wire is unknown.
            drop(lease);
            misunderstood(fs, call, &what)
        }
        Err(Broken::Died(err)) => {
            drop(lease);
            if call.changes() {
                Outcome::Failed(err.into())
            } else {
                Outcome::Http
            }
        }
    }
}

/// An answer this module cannot read: fs over control is off for this pool from now on; the
/// call runs over HTTP unless it may have been applied.
fn misunderstood<T>(fs: &Filesystem, call: &Call<'_>, what: &str) -> Outcome<T> {
    log::warn!(
        "sprites: {} over a control connection got {what}; filesystem calls use HTTP from now on",
        call.op
    );
    control::fs_unsupported(fs.sprite().client(), fs.sprite().name());
    if call.changes() {
        Outcome::Failed(
            Error::Protocol(format!(
                "{} over a control connection got {what}; it may have been applied",
                call.op
            ))
            .into(),
        )
    } else {
        Outcome::Http
    }
}

/// `op.error`: a filesystem error (an errno `code`) is the call's result; anything else runs
/// it over HTTP, which gives its own answer (an op the server refused was not applied).
fn op_error<T>(fs: &Filesystem, body: Option<Value>, args: &Value) -> Outcome<T> {
    match classify(body, args) {
        Verdict::Failed(api) => Outcome::Failed(Error::Api(api).into()),
        Verdict::Http => Outcome::Http,
        Verdict::Unsupported => {
            control::fs_unsupported(fs.sprite().client(), fs.sprite().name());
            Outcome::Http
        }
    }
}

/// What an `op.error` means.
#[derive(Debug)]
enum Verdict {
    /// A filesystem error: the same [`ApiError`] HTTP gives.
    Failed(Box<ApiError>),
    /// Run the call over HTTP (a read too big for one message, or an error HTTP will give
    /// in its own words).
    Http,
    /// The server does not serve the op over control: HTTP, now and from now on.
    Unsupported,
}

fn classify(body: Option<Value>, args: &Value) -> Verdict {
    // The §3.2 body the server sent as the op's answer; else the fields op.error carries.
    let source = body
        .filter(|b| b.get("code").is_some() || b.get("error").is_some())
        .unwrap_or_else(|| args.clone());
    match source.get("code").and_then(Value::as_str) {
        Some("EFBIG") => return Verdict::Http,
        Some(code) if is_errno(code) => {
            let status = source
                .get("status")
                .or_else(|| args.get("status"))
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(400);
            return Verdict::Failed(Box::new(ApiError::parse(
                status,
                |_| None,
                source.to_string().as_bytes(),
            )));
        }
        _ => {}
    }
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let said = format!(
        "{} {} {}",
        text(&source, "error"),
        text(&source, "message"),
        text(args, "error")
    );
    if ["unknown", "unsupported", "not supported", "not implemented"]
        .iter()
        .any(|w| said.contains(w))
    {
        Verdict::Unsupported
    } else {
        Verdict::Http
    }
}

/// An errno name (`ENOENT`, `EISDIR`, …), the `code` of a §3.2 filesystem error.
fn is_errno(code: &str) -> bool {
    code.len() > 1
        && code.starts_with('E')
        && code[1..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

enum Reply {
    Complete(Answer),
    Error { body: Option<Value>, args: Value },
}

enum Broken {
    /// Something the op does not answer with: a non-JSON text, a second answer, a binary
    /// frame that was not asked for or is bigger than asked.
    Malformed(String),
    /// The connection closed, failed or stayed silent past the deadline.
    Died(Error),
}

/// Reads the op's answer, content and end.
fn read_reply(lease: &control::Lease, call: &Call<'_>, deadline: Instant) -> Result<Reply, Broken> {
    let mut gathered = Gathered::default();
    loop {
        let message = match lease.socket.read() {
            Ok(Incoming::Message(message)) => message,
            Ok(Incoming::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match lease.socket.wait_readable(left) {
                    Ok(true) => continue,
                    Ok(false) => {
                        return Err(Broken::Died(
                            TransportError::io(
                                format!("{} over a control connection", call.op),
                                io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "no answer within the HTTP timeout",
                                ),
                            )
                            .into(),
                        ));
                    }
                    Err(e) => {
                        return Err(Broken::Died(
                            TransportError::io("the control connection", e).into(),
                        ));
                    }
                }
            }
            Err(e) => return Err(Broken::Died(crate::exec::closed_error(e))),
        };
        if let Some(reply) = gathered.take(message, call.read_limit)? {
            return Ok(reply);
        }
    }
}

/// What has arrived of an op's answer.
#[derive(Default)]
struct Gathered {
    result: Option<Value>,
    content: Option<Vec<u8>>,
}

impl Gathered {
    /// Takes one message from the server; `Some` once it ends the op. `read_limit`: the
    /// largest content frame accepted (`None`: the op has no content).
    fn take(
        &mut self,
        message: Message,
        read_limit: Option<usize>,
    ) -> Result<Option<Reply>, Broken> {
        match message {
            Message::Text(text) => {
                let (body, prefixed) = match text.as_str().strip_prefix(control::PREFIX) {
                    Some(rest) => (rest, true),
                    None => (text.as_str(), false),
                };
                let Ok(value) = serde_json::from_str::<Value>(body) else {
                    return Err(Broken::Malformed("a text message that is not JSON".into()));
                };
                match value.get("type").and_then(Value::as_str) {
                    Some("op.complete") => {
                        return Ok(Some(Reply::Complete(Answer {
                            result: self.result.take().unwrap_or(Value::Null),
                            content: self.content.take(),
                        })));
                    }
                    Some("op.error") => {
                        let args = value.get("args").cloned().unwrap_or(Value::Null);
                        let body = self.result.take();
                        return Ok(Some(Reply::Error { body, args }));
                    }
                    // Envelope chatter (keepalive, dial), prefixed or not: not the op's.
                    Some("keepalive" | "dial") => {}
                    Some(_) if prefixed => {}
                    // The op's answer: one unprefixed JSON object.
                    _ if self.result.is_none() && !prefixed && value.is_object() => {
                        self.result = Some(value);
                    }
                    _ => return Err(Broken::Malformed("an unexpected text message".into())),
                }
            }
            Message::Binary(data) => match read_limit {
                Some(limit)
                    if self.result.is_some() && self.content.is_none() && data.len() <= limit =>
                {
                    self.content = Some(Vec::from(data));
                }
                _ => {
                    return Err(Broken::Malformed(format!(
                        "a binary message of {} bytes it did not ask for",
                        data.len()
                    )));
                }
            },
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                return Err(Broken::Died(Error::ConnectionClosed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        for code in ["ENOENT", "EISDIR", "E2BIG", "EACCES"] {
            assert!(is_errno(code), "{code}");
        }
        for code in [
            "E",
            "",
            "invalid_request",
            "Enoent",
            "unsupported_operation",
        ] {
            assert!(!is_errno(code), "{code}");
        }
    }

    /// Feeds `messages` to a fresh [`Gathered`]: the reply, or the first error.
    fn gather(messages: Vec<Message>, read_limit: Option<usize>) -> Result<Option<Reply>, Broken> {
        let mut gathered = Gathered::default();
        for message in messages {
            if let Some(reply) = gathered.take(message, read_limit)? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    fn text(t: &str) -> Message {
        Message::Text(t.into())
    }

    fn bin(b: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(b))
    }

    const DONE: &str = r#"{"type":"op.complete","args":{"ok":true}}"#;

    #[test]
    fn answers() {
        // Go's form: result, content, end; chatter around it ignored.
        let Ok(Some(Reply::Complete(answer))) = gather(
            vec![
                text(r#"{"type":"keepalive"}"#),
                text(r#"control:{"type":"dial"}"#),
                text(r#"control:{"type":"something-new"}"#),
                text(r#"{"path":"/x","size":2}"#),
                Message::Ping(Bytes::new()),
                bin(b"hi"),
                text(DONE),
            ],
            Some(2),
        ) else {
            panic!("not complete");
        };
        assert_eq!(answer.result, serde_json::json!({"path":"/x","size":2}));
        assert_eq!(answer.content.as_deref(), Some(&b"hi"[..]));
        // A prefixed end, no content.
        let Ok(Some(Reply::Complete(answer))) = gather(
            vec![
                text(r#"{"deleted":["/x"],"count":1}"#),
                text(r#"control:{"type":"op.complete"}"#),
            ],
            None,
        ) else {
            panic!("not complete");
        };
        assert_eq!(answer.result["count"], 1);
        assert!(answer.content.is_none());
        // An unprefixed object with some other type is the result (a listing could be).
        let Ok(Some(Reply::Complete(answer))) =
            gather(vec![text(r#"{"type":"other"}"#), text(DONE)], None)
        else {
            panic!("not complete");
        };
        assert_eq!(answer.result["type"], "other");
        // op.error keeps the body before it.
        let Ok(Some(Reply::Error { body, args })) = gather(
            vec![
                text(r#"{"error":"gone","code":"ENOENT"}"#),
                text(r#"{"type":"op.error","args":{"error":"gone"}}"#),
            ],
            None,
        ) else {
            panic!("not an error");
        };
        assert_eq!(body.unwrap()["code"], "ENOENT");
        assert_eq!(args["error"], "gone");
        assert!(matches!(gather(vec![text("{}")], None), Ok(None)));
    }

    #[test]
    fn malformed_answers() {
        let malformed = |messages: Vec<Message>, limit: Option<usize>| {
            matches!(gather(messages, limit), Err(Broken::Malformed(_)))
        };
        let result = || text(r#"{"path":"/x","size":2}"#);
        assert!(malformed(vec![text("not json")], None));
        assert!(malformed(vec![text("42")], None));
        assert!(malformed(vec![text(r#"control:{"path":"/x"}"#)], None));
        assert!(malformed(vec![result(), result()], None));
        // Content: only after the result, only once, only as much as asked, only if asked.
        assert!(malformed(vec![bin(b"hi")], Some(2)));
        assert!(malformed(vec![result(), bin(b"hi"), bin(b"")], Some(2)));
        assert!(malformed(vec![result(), bin(b"hi!")], Some(2)));
        assert!(malformed(vec![result(), bin(b"")], None));
        assert!(matches!(
            gather(vec![result(), bin(b"hi")], Some(2)),
            Ok(None)
        ));
        assert!(matches!(
            gather(vec![result(), Message::Close(None)], None),
            Err(Broken::Died(Error::ConnectionClosed { .. }))
        ));
    }

    #[test]
    fn op_errors() {
        use serde_json::json;
        // sprites-local's answer to a read of a missing file: the §3.2 body, then op.error.
        let body = json!({"error":"open /x: no such file or directory","code":"ENOENT","path":"/x","status":404});
        let args = json!({"error":"open /x: no such file or directory","code":"ENOENT","path":"/x","status":404});
        let Verdict::Failed(api) = classify(Some(body), &args) else {
            panic!("not a filesystem error");
        };
        assert_eq!((api.status, api.code.as_deref()), (404, Some("ENOENT")));
        assert_eq!(api.path.as_deref(), Some("/x"));
        assert_eq!(api.io_kind(), io::ErrorKind::NotFound);
        // The code only in op.error's args.
        let Verdict::Failed(api) =
            classify(None, &json!({"error":"is a directory","code":"EISDIR"}))
        else {
            panic!("not a filesystem error");
        };
        assert_eq!(
            (api.status, api.io_kind()),
            (400, io::ErrorKind::IsADirectory)
        );
        assert!(matches!(
            classify(
                None,
                &json!({"error":"too big","code":"EFBIG","status":413})
            ),
            Verdict::Http
        ));
        assert!(matches!(
            classify(
                Some(
                    json!({"error":"unsupported_operation","message":"unknown control operation \"fs.x\"","status":400})
                ),
                &json!({"error":"unknown control operation \"fs.x\""})
            ),
            Verdict::Unsupported
        ));
        assert!(matches!(
            classify(None, &json!({"error":"unknown op: fs.read"})),
            Verdict::Unsupported
        ));
        // Not about the op: HTTP says it in its own words, and fs stays on control.
        assert!(matches!(
            classify(None, &json!({"error":"sprite \"x\" not found"})),
            Verdict::Http
        ));
        assert!(matches!(classify(None, &Value::Null), Verdict::Http));
        // A body with a code alone is still the body.
        let Verdict::Failed(api) = classify(
            Some(json!({"code":"ENOTDIR","status":400})),
            &json!({"error":"failed"}),
        ) else {
            panic!("not a filesystem error");
        };
        assert_eq!(api.io_kind(), io::ErrorKind::NotADirectory);
        // A code that is not an errno name is not a filesystem error.
        assert!(matches!(
            classify(
                Some(json!({"error":"bad mode","code":"invalid_request","status":400})),
                &json!({"error":"bad mode"})
            ),
            Verdict::Http
        ));
    }

    #[test]
    fn start_is_the_go_form() {
        let args = [
            ("path", "/a b/ü+&".to_owned()),
            ("workingDir", "/".to_owned()),
        ];
        let call = Call {
            op: "fs.list",
            args: &args,
            content: None,
            read_limit: None,
        };
        let value: Value = serde_json::from_str(&call.start()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"op.start","op":"fs.list",
                "args":"path=%2Fa%20b%2F%C3%BC%2B%26&workingDir=%2F"})
        );
        assert!(!call.changes());
    }
}
