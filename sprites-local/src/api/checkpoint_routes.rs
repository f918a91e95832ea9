//! Checkpoint routes (PROTOCOL.md §12): create (`POST /checkpoint`, NDJSON), list, get,
//! restore (`POST /checkpoints/{id}/restore`, NDJSON, streamed as the operation goes) and
//! delete. The work is in [`crate::checkpoints`].

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use serde::Deserialize;

use super::{invalid_request, json_body, sprite_not_found, Reply};
use crate::checkpoints::{self, Progress, Refused};
use crate::net::body::RequestBody;
use crate::net::http::{response_head, ChunkedWriter, Response};
use crate::net::query::Query;
use crate::state::State;

/// The create body: `{}` or `{"comment": "…"}` (an empty body is `{}` too).
#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    #[serde(default)]
    comment: Option<String>,
}

/// A create or restore, run while its NDJSON progress is streamed: the `200` head goes out
/// first, then one chunk per line as the operation reports it (so a client sees a long
/// host-runtime copy advance, and its read timeout never runs out on a quiet stream).
struct Operation {
    state: Arc<State>,
    name: String,
    dir: std::path::PathBuf,
    what: What,
}

enum What {
    Create { comment: String },
    Restore { id: String },
}

impl super::DuplexResponse for Operation {
    fn run(self: Box<Self>, stream: &TcpStream, _body: &mut dyn RequestBody) {
        let mut s = stream;
        let head = response_head(
            200,
            &[("Content-Type", "application/x-ndjson".into())],
            None,
            false,
        );
        // A client that left does not stop the operation (it is not safely interruptible);
        // its lines then go nowhere.
        let mut broken = s.write_all(head.as_bytes()).is_err();
        let mut w = ChunkedWriter::new(stream);
        {
            let mut out = |line: &[u8]| {
                if !broken {
                    broken = w.write_all(line).is_err();
                }
            };
            let mut p = Progress::new(&mut out);
            match &self.what {
                What::Create { comment } => {
                    checkpoints::create(&self.state, &self.dir, comment, &mut p)
                }
                What::Restore { id } => {
                    checkpoints::restore(&self.state, &self.name, &self.dir, id, &mut p)
                }
            }
        }
        if !broken {
            let _ = w.finish();
        }
    }
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
pub fn create(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    let bytes = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return resp.into(),
    };
    let parsed: CreateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => return invalid_request(&format!("invalid checkpoint body: {e}")).into(),
        }
    };
    let dir = state.store.sprite_dir(name);
    let comment = parsed.comment.unwrap_or_default();
    if let Err(r) = checkpoints::check_create(state, &dir, &comment) {
        return refused(r).into();
    }
    Reply::Duplex(Box::new(Operation {
        state: state.clone(),
        name: name.to_owned(),
        dir,
        what: What::Create { comment },
    }))
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
pub fn restore(state: &Arc<State>, name: &str, id: &str) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    let dir = state.store.sprite_dir(name);
    if let Err(r) = checkpoints::check_restore(state, &dir, id) {
        return refused(r).into();
    }
    Reply::Duplex(Box::new(Operation {
        state: state.clone(),
        name: name.to_owned(),
        dir,
        what: What::Restore { id: id.to_owned() },
    }))
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
