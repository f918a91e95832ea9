//! `POST /v1/sprites/{name}/exec`: the exec over HTTP (PROTOCOL.md §6.9). Everything that
//! can fail before the process runs is answered here as a §3.1 error, exactly as the
//! WebSocket exec answers it, before any of the body is read; the exec itself is
//! [`HttpExec`].

use std::sync::Arc;

use super::exec_routes::spawn_failed;
use super::{invalid_request, sprite_not_found, Reply};
use crate::exec::{self, HttpExec};
use crate::net::query::Query;
use crate::state::State;

/// Starts the process and hands the connection to it, or answers why it could not start.
pub fn post(state: &Arc<State>, name: &str, q: &Query) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    match q.get_bool("tty", false) {
        Ok(false) => {}
        Ok(true) => {
            return invalid_request(
                "tty is not available over HTTP exec: a terminal needs the WebSocket exec",
            )
            .into()
        }
        Err(e) => return invalid_request(&e.0).into(),
    }
    let params = match exec::parse_params(q) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e.0).into(),
    };
    match exec::start(state, name, &params) {
        Ok((process, session)) => {
            Reply::Duplex(Box::new(HttpExec::new(state.clone(), process, session)))
        }
        Err(e) => spawn_failed(name, &params.program, e).into(),
    }
}
