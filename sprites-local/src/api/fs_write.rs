//! `PUT /v1/sprites/{name}/fs/write?path=&workingDir=&mode=0644&mkdirParents=true`, with its
//! body streamed straight into an atomic write (any size, constant memory).
//!
//! The connection loop sends such a request here as soon as its head is read
//! ([`is_write`]), before any of the body. Everything that can be checked without the body
//! (token, sprite, parameters, target directory) is checked first; only then is
//! `100 Continue` sent (when asked for) and the body read.

use std::io::{self, Read};
use std::sync::Arc;

use super::fs_routes::{fs_error, query_path, sprite_fs};
use super::{invalid_request, segments};
use crate::fsops::{self, FsError, WriteError, WriteSpec};
use crate::net::auth;
use crate::net::body::BodyReader;
use crate::net::http::{BodyFraming, Request, RequestReader, Response};
use crate::net::query::Query;
use crate::state::State;

/// What became of a streamed write.
#[derive(Debug)]
pub struct WriteOutcome {
    /// The answer to send.
    pub response: Response,
    /// Whether the request body was read to its end. If not (the request was refused before
    /// its body, or the body broke off), the connection cannot carry another request.
    pub body_consumed: bool,
}

/// True for `PUT /v1/sprites/{name}/fs/write`, whose body must be streamed, not buffered.
pub fn is_write(req: &Request) -> bool {
    req.method == "PUT"
        && matches!(
            segments(&req.path),
            Ok(Some(s)) if s.len() == 4 && s[0] == "sprites" && s[2] == "fs" && s[3] == "write"
        )
}

/// Handles a write whose head has been read and whose body (framed by `framing`) is next
/// on `reader`. `send_continue` writes the interim `100 Continue`.
pub fn handle<R: Read>(
    state: &Arc<State>,
    req: &Request,
    reader: &mut RequestReader<R>,
    framing: BodyFraming,
    send_continue: &mut dyn FnMut() -> io::Result<()>,
) -> WriteOutcome {
    let refused = |response| WriteOutcome {
        response,
        // A request without a body leaves nothing unread behind it.
        body_consumed: framing == BodyFraming::None,
    };
    if !auth::is_authorized(req.header("authorization"), &state.token) {
        return refused(Response::error(
            401,
            "unauthorized",
            "missing or invalid bearer token",
        ));
    }
    let (fs, spec) = match prepare(state, req) {
        Ok(x) => x,
        Err(resp) => return refused(resp),
    };
    let awaits_continue = reader.awaits_continue(req, framing);
    let mut body = ContinueThenBody {
        body: reader.body(framing),
        send_continue: awaits_continue.then_some(send_continue),
    };
    // write_atomic validates the target (begin_write) before its first body read, so a
    // refused write never asks the client for its body.
    let result = fsops::write_atomic(&*fs, &spec, &mut body);
    let body_consumed = body.body.is_done();
    let response = match result {
        Ok(written) => Response::json(200, &written),
        Err(WriteError::Body(e)) => {
            invalid_request(&format!("request body incomplete, nothing written: {e}"))
        }
        Err(WriteError::Fs(e) | WriteError::Store(e)) => fs_error(&e),
    };
    WriteOutcome {
        response,
        body_consumed,
    }
}

/// A request body that first sends `100 Continue` (when the client waits for it), on the
/// first read: i.e. only once the write has been accepted.
struct ContinueThenBody<'a, 'b, R> {
    body: BodyReader<'a, R>,
    send_continue: Option<&'b mut dyn FnMut() -> io::Result<()>>,
}

impl<R: Read> Read for ContinueThenBody<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(send) = self.send_continue.take() {
            send()?;
        }
        self.body.read(buf)
    }
}

/// Checks the sprite and parameters: the sprite's filesystem and what to write.
fn prepare(
    state: &Arc<State>,
    req: &Request,
) -> Result<(Box<dyn fsops::SpriteFs>, WriteSpec), Response> {
    let name = match segments(&req.path) {
        Ok(Some(mut s)) if s.len() == 4 => s.swap_remove(1),
        _ => return Err(super::not_found()),
    };
    let q = Query::parse(&req.query).map_err(|e| invalid_request(&e.0))?;
    let fs = sprite_fs(state, &name)?;
    let path = query_path(&q)?;
    let mode = match q.get("mode") {
        None | Some("") => 0o644,
        Some(m) => fsops::parse_mode_str(m).ok_or_else(|| {
            fs_error(&FsError::with_detail(
                libc::EINVAL,
                &path,
                &format!("invalid mode {m:?}: expected octal such as 0644"),
            ))
        })?,
    };
    let mkdir_parents = q
        .get_bool("mkdirParents", true)
        .map_err(|e| invalid_request(&e.0))?;
    Ok((
        fs,
        WriteSpec {
            path,
            mode,
            mkdir_parents,
        },
    ))
}
