//! The one entry for every request: [`authenticate`] a head (before any of its body is
//! read), then [`handle`] it: route, and run the handler with the body as a stream.
//!
//! Handlers decide themselves whether to read the body. The JSON routes buffer it through
//! [`json_body`] (at most [`MAX_JSON_BODY`]); the file upload streams it to disk; the rest
//! never touch it. A body a handler left unread is the connection's problem, not the
//! handler's: the server answers with `Connection: close` and discards what still comes.

mod checkpoint_routes;
mod control_routes;
mod exec_routes;
mod fs_routes;
mod fs_watch;
mod fs_write;
mod http_exec;
mod lifecycle_routes;
mod policy_routes;
mod port_routes;
mod proxy_routes;
mod service_routes;
mod sprites;

pub(crate) use lifecycle_routes::{org_counts, ORG, RUNNING_LIMIT, WARM_LIMIT};

use std::ops::Deref;
use std::sync::Arc;

use crate::net::auth;
use crate::net::body::{read_bounded, BoundedError, RequestBody};
use crate::net::file::FileResponse;
use crate::net::http::{RequestHead, Response};
use crate::net::query::{self, Query};
use crate::state::State;

/// Largest body a JSON route reads into memory; a bigger one is 413 (§3.1 body), refused
/// before it is read when its `Content-Length` says so.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// What a request turns into.
pub enum Reply {
    /// An ordinary HTTP response.
    Response(Response),
    /// An accepted WebSocket upgrade (an exec whose process is running, an attach, a
    /// watch): the session sends the 101 itself and then owns the connection.
    WebSocket(Box<dyn WebSocketSession>),
    /// A response whose body is streamed from an open file.
    File(Box<FileResponse>),
    /// A response written while the request body is still being read (the HTTP exec).
    Duplex(Box<dyn DuplexResponse>),
}

/// What runs on a connection once its WebSocket upgrade was accepted. The route decided
/// everything that could be answered with an HTTP error before returning it; from here on
/// failures are WebSocket close codes.
pub trait WebSocketSession: Send {
    /// Writes the `101` (and whatever must follow it at once), then serves the connection
    /// until it ends. `leftover` holds bytes the client sent after its request head.
    fn run(self: Box<Self>, state: Arc<State>, conn: Arc<crate::state::Conn>, leftover: Vec<u8>);
}

/// What writes a response while the request's body is still being read: the HTTP exec,
/// whose body is a process's stdin and whose response is its output, both streamed at once.
/// Its response says `Connection: close`: the connection ends with it.
pub trait DuplexResponse: Send {
    /// Serves the request on `stream`: reads as much of `body` as it wants and writes the
    /// whole response (head included).
    fn run(self: Box<Self>, stream: &std::net::TcpStream, body: &mut dyn RequestBody);
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Response(r)
    }
}

/// 404 for an unknown sprite.
pub fn sprite_not_found(name: &str) -> Response {
    Response::error(
        404,
        "sprite_not_found",
        &format!("sprite {name:?} not found"),
    )
}

/// 400 `invalid_request`.
pub fn invalid_request(message: &str) -> Response {
    Response::error(400, "invalid_request", message)
}

fn method_not_allowed(allow: &str) -> Response {
    Response::error(405, "method_not_allowed", "method not allowed on this path")
        .with_header("Allow", allow)
}

/// What every WebSocket route but exec checks before it accepts an upgrade: the sprite
/// exists (else **404**), the request is a valid upgrade (else **400**, see
/// `port_routes::websocket_key`) and has no body (else **400**: what follows an upgrade's
/// head is frames). The client's `Sec-WebSocket-Key`.
fn accept_upgrade<'r>(
    state: &State,
    name: &str,
    req: &'r RequestHead,
    body: &mut dyn RequestBody,
) -> Result<&'r str, Response> {
    if !state.store.contains(name) {
        return Err(sprite_not_found(name));
    }
    let key = port_routes::websocket_key(req)?;
    if !body.is_done() {
        return Err(invalid_request(
            "a WebSocket upgrade request cannot have a body",
        ));
    }
    Ok(key)
}

/// A request head that may be served: it carried the server's bearer token, or it is for
/// the URL of a sprite whose URL is public. Only [`authenticate`] makes one, and [`handle`]
/// takes nothing else, so no request reaches a handler unauthenticated.
#[derive(Debug)]
pub struct Authenticated {
    head: RequestHead,
    /// For a sprite's URL (`Host: <name>.localhost…`, `crate::urls`): the sprite. Such a
    /// request only ever reaches that sprite's URL proxy, never an API route.
    sprite_url: Option<String>,
}

impl Deref for Authenticated {
    type Target = RequestHead;

    fn deref(&self) -> &RequestHead {
        &self.head
    }
}

/// Decides from a request's head alone, before any of its body is read, whether it may be
/// served: the head back as [`Authenticated`], or the **401** to answer with (§3.1 body).
///
/// An API request needs the bearer token, always. A request whose `Host` names a sprite's
/// URL needs it too unless that sprite's `url_settings.auth` is `public`; either way it is
/// marked for that sprite's URL, and [`handle`] sends it nowhere else — so no `Host` header
/// can carry a request without the token to an API route.
pub fn authenticate(state: &State, head: RequestHead) -> Result<Authenticated, Response> {
    let authorized = auth::is_authorized(head.header("authorization"), &state.token);
    let sprite_url = crate::urls::target(&head);
    let allowed = authorized
        || sprite_url
            .as_deref()
            .is_some_and(|name| crate::urls::is_public(state, name));
    if allowed {
        Ok(Authenticated { head, sprite_url })
    } else {
        Err(Response::error(
            401,
            "unauthorized",
            "missing or invalid bearer token",
        ))
    }
}

/// A JSON route's body in memory: at most [`MAX_JSON_BODY`] bytes, else **413**; a body
/// that breaks off or is badly framed is **400**.
pub fn json_body(body: &mut dyn RequestBody) -> Result<Vec<u8>, Response> {
    match read_bounded(body, MAX_JSON_BODY) {
        Ok(b) => Ok(b),
        Err(BoundedError::TooLarge) => Err(Response::error(
            413,
            "invalid_request",
            &format!("request body larger than {MAX_JSON_BODY} bytes"),
        )),
        Err(BoundedError::Io(e)) => Err(invalid_request(&format!("request body incomplete: {e}"))),
    }
}

/// Handles one authenticated request; `body` is its body, unread.
pub fn handle(state: &Arc<State>, req: &Authenticated, body: &mut dyn RequestBody) -> Reply {
    if let Some(name) = &req.sprite_url {
        return crate::urls::proxy(state, name, req);
    }
    if req.path == control_routes::STATS_PATH {
        return control_routes::stats(state, &req.method).into();
    }
    let segments = match segments(&req.path) {
        Ok(Some(s)) => s,
        Ok(None) => return not_found().into(),
        Err(resp) => return resp.into(),
    };
    let q = match Query::parse(&req.query) {
        Ok(q) => q,
        Err(e) => return invalid_request(&e.0).into(),
    };
    let m = req.method.as_str();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let ["sprites", name, sub, ..] = seg.as_slice() {
        // Activity (crate::lifecycle): any request about what is inside a sprite.
        if !matches!(*sub, "check" | "restart") {
            state.lifecycle.touch(state, name);
        }
    }
    match seg.as_slice() {
        ["sprites"] => match m {
            "GET" if lifecycle_routes::wants_watch(req) => lifecycle_routes::watch(state, &q),
            "GET" => sprites::list(state, &q).into(),
            "POST" => sprites::create(state, body).into(),
            _ => method_not_allowed("GET, POST").into(),
        },
        ["sprites", name] => match m {
            "GET" => sprites::get(state, name).into(),
            "PUT" => sprites::update(state, name, body).into(),
            "DELETE" => sprites::delete(state, name).into(),
            _ => method_not_allowed("GET, PUT, DELETE").into(),
        },
        ["sprites", name, "check"] => match m {
            "GET" => lifecycle_routes::check(state, name).into(),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "restart"] => match m {
            "POST" => lifecycle_routes::restart(state, name).into(),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "upgrade"] => match m {
            "POST" => sprites::upgrade(state, name).into(),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "exec"] => match m {
            "GET" => exec_routes::exec_or_list(state, name, req, &q, body),
            "HEAD" => exec_routes::head(state, name).into(),
            "POST" => http_exec::post(state, name, &q),
            _ => method_not_allowed("GET, HEAD, POST").into(),
        },
        ["sprites", name, "exec", id] => match m {
            "GET" => exec_routes::attach(state, name, id, req),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "exec", id, "kill"] => match m {
            "POST" => exec_routes::kill(state, name, id, &q, body).into(),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "control"] => match m {
            "GET" => control_routes::control(state, name, req, body),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "fs", op] => fs_routes::route(state, name, op, req, &q, body),
        ["sprites", name, "checkpoint"] => match m {
            "POST" => checkpoint_routes::create(state, name, body),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "checkpoints"] => match m {
            "GET" => checkpoint_routes::list(state, name, &q).into(),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "checkpoints", id] => match m {
            "GET" => checkpoint_routes::get(state, name, id).into(),
            "DELETE" => checkpoint_routes::delete(state, name, id).into(),
            _ => method_not_allowed("GET, DELETE").into(),
        },
        ["sprites", name, "checkpoints", id, "restore"] => match m {
            "POST" => checkpoint_routes::restore(state, name, id),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "policy", kind] => policy_routes::route(state, name, kind, m, body),
        ["sprites", name, "ports", "watch"] => match m {
            "GET" => port_routes::watch(state, name, req, body),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "services", rest @ ..] => {
            service_routes::route(state, name, m, rest, &q, body)
        }
        ["sprites", name, "proxy"] => match m {
            "GET" => proxy_routes::proxy(state, name, req, body),
            _ => method_not_allowed("GET").into(),
        },
        _ => not_found().into(),
    }
}

/// The decoded segments of a `/v1/...` path (a trailing `/` ignored); `Ok(None)` for a path
/// outside `/v1/`, `Err` (400) for bad percent-encoding.
fn segments(path: &str) -> Result<Option<Vec<String>>, Response> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Ok(None);
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .map(|raw| query::decode(raw, false).map_err(|e| invalid_request(&e.0)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn not_found() -> Response {
    Response::error(404, "not_found", "no such endpoint")
}
