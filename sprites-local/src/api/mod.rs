//! Routing: authentication, path matching and dispatch to the handlers.

mod exec_routes;
mod fs_routes;
pub mod fs_write;
mod sprites;

use std::sync::Arc;

use crate::exec::Upgrade;
use crate::net::auth;
use crate::net::file::FileResponse;
use crate::net::http::{Request, Response};
use crate::net::query::{self, Query};
use crate::state::State;

/// What a request turns into.
pub enum Reply {
    /// An ordinary HTTP response.
    Response(Response),
    /// An accepted exec upgrade: the process is running, the 101 is still to be sent.
    Upgrade(Box<Upgrade>),
    /// A response whose body is streamed from an open file.
    File(Box<FileResponse>),
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

/// Handles one request.
pub fn handle(state: &Arc<State>, req: &Request) -> Reply {
    if !auth::is_authorized(req.header("authorization"), &state.token) {
        return Response::error(401, "unauthorized", "missing or invalid bearer token").into();
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
    match seg.as_slice() {
        ["sprites"] => match m {
            "GET" => sprites::list(state, &q).into(),
            "POST" => sprites::create(state, &req.body).into(),
            _ => method_not_allowed("GET, POST").into(),
        },
        ["sprites", name] => match m {
            "GET" => sprites::get(state, name).into(),
            "PUT" => sprites::update(state, name, &req.body).into(),
            "DELETE" => sprites::delete(state, name).into(),
            _ => method_not_allowed("GET, PUT, DELETE").into(),
        },
        ["sprites", name, "upgrade"] => match m {
            "POST" => sprites::upgrade(state, name).into(),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "exec"] => match m {
            "GET" => exec_routes::exec_or_list(state, name, req, &q),
            "HEAD" => exec_routes::head(state, name).into(),
            _ => method_not_allowed("GET, HEAD").into(),
        },
        ["sprites", name, "exec", id] => match m {
            "GET" => exec_routes::attach(state, name, id).into(),
            _ => method_not_allowed("GET").into(),
        },
        ["sprites", name, "exec", id, "kill"] => match m {
            "POST" => exec_routes::kill(state, name, id, &q, &req.body).into(),
            _ => method_not_allowed("POST").into(),
        },
        ["sprites", name, "fs", op] => fs_routes::route(state, name, op, req, &q),
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
