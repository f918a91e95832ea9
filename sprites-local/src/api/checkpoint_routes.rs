//! Checkpoint routes (PROTOCOL.md §12): create (`POST /checkpoint`, NDJSON), list, get,
//! restore (`POST /checkpoints/{id}/restore`, NDJSON) and delete. The work is in
//! [`crate::checkpoints`].

use std::sync::Arc;

use serde::Deserialize;

use super::{invalid_request, json_body, sprite_not_found};
use crate::checkpoints::{self, Progress, Refused};
use crate::net::body::RequestBody;
use crate::net::http::Response;
use crate::net::query::Query;
use crate::state::State;

/// The create body: `{}` or `{"comment": "…"}` (an empty body is `{}` too).
#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    #[serde(default)]
    comment: Option<String>,
}

fn ndjson(p: Progress) -> Response {
    let mut resp = Response::empty(200).with_header("Content-Type", "application/x-ndjson");
    resp.body = p.body;
    resp.chunked = true;
    resp
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::NotFound(m) => Response::error(404, "checkpoint_not_found", &m),
        Refused::Conflict(m) => Response::error(409, "conflict", &m),
        Refused::Invalid(m) => invalid_request(&m),
        Refused::Unsupported(m) => Response::error(501, "not_implemented", &m),
        Refused::Internal(m) => Response::error(500, "internal", &m),
    }
}

/// `POST /v1/sprites/{name}/checkpoint`.
pub fn create(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    let bytes = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let parsed: CreateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => return invalid_request(&format!("invalid checkpoint body: {e}")),
        }
    };
    let dir = state.store.sprite_dir(name);
    match checkpoints::create(state, &dir, parsed.comment.as_deref().unwrap_or("")) {
        Ok(p) => ndjson(p),
        Err(r) => refused(r),
    }
}

/// `GET /v1/sprites/{name}/checkpoints?includeAuto=true&history=<id>`.
pub fn list(state: &Arc<State>, name: &str, q: &Query) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    // Go sends `includeAuto`; `include_auto` is accepted too.
    let include_auto = match q
        .get_bool("includeAuto", false)
        .and_then(|a| q.get_bool("include_auto", a))
    {
        Ok(b) => b,
        Err(e) => return invalid_request(&e.0),
    };
    let dir = state.store.sprite_dir(name);
    match checkpoints::list(&dir, include_auto, q.get("history")) {
        Ok(Some(list)) => Response::json(200, &list),
        Ok(None) => Response::error(
            404,
            "checkpoint_not_found",
            &format!("checkpoint {:?} not found", q.get("history").unwrap_or("")),
        ),
        Err(e) => Response::error(500, "internal", &e.to_string()),
    }
}

/// `GET /v1/sprites/{name}/checkpoints/{id}` (`Current` included).
pub fn get(state: &Arc<State>, name: &str, id: &str) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    let cat = match checkpoints::Catalog::load(&state.store.sprite_dir(name)) {
        Ok(c) => c,
        Err(e) => return Response::error(500, "internal", &e.to_string()),
    };
    if id == checkpoints::CURRENT {
        return Response::json(200, &cat.current_entry());
    }
    match cat.get(id) {
        Some(c) => Response::json(200, c),
        None => Response::error(
            404,
            "checkpoint_not_found",
            &format!("checkpoint {id:?} not found"),
        ),
    }
}

/// `POST /v1/sprites/{name}/checkpoints/{id}/restore` (no body).
pub fn restore(state: &Arc<State>, name: &str, id: &str) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    let dir = state.store.sprite_dir(name);
    match checkpoints::restore(state, name, &dir, id) {
        Ok(p) => ndjson(p),
        Err(r) => refused(r),
    }
}

/// `DELETE /v1/sprites/{name}/checkpoints/{id}` → 204 (inferred from the CLI).
pub fn delete(state: &Arc<State>, name: &str, id: &str) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    match checkpoints::delete(state, &state.store.sprite_dir(name), id) {
        Ok(()) => Response::empty(204),
        Err(r) => refused(r),
    }
}
