//! The control route (PROTOCOL.md §8.1): `GET /v1/sprites/{name}/control`, a WebSocket.
//! Everything that can be answered with an HTTP error is decided here, before the
//! upgrade; the connection itself is [`ControlSession`].

use std::sync::Arc;

use super::{method_not_allowed, not_found, Reply};
use crate::control::ControlSession;
use crate::net::body::RequestBody;
use crate::net::http::{RequestHead, Response};
use crate::state::State;

/// `GET /v1/sprites/{name}/control`: **404** when control connections are switched off
/// (what clients take as "unsupported") or for an unknown sprite, **400** for a request
/// that is not a WebSocket upgrade, else the connection.
pub fn control(
    state: &Arc<State>,
    name: &str,
    req: &RequestHead,
    body: &mut dyn RequestBody,
) -> Reply {
    if !state.control_enabled {
        return not_found().into();
    }
    let key = match super::accept_upgrade(state, name, req, body) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    Reply::WebSocket(Box::new(ControlSession::new(name, key)))
}

/// The server's own diagnostics, outside the Sprites API (`/v1/`): what no SDK asks for,
/// for tests and the compatibility checks.
pub const STATS_PATH: &str = "/_sprites-local/stats";

/// `GET /_sprites-local/stats` (token required): `{"control_upgrades": N,
/// "control_upgrades_by_sprite": {"<name>": n, ...}, "control_fs_ops": {"fs.read": n, ...}}`,
/// the control connections accepted since the server started, in all and per sprite, and
/// the `fs.*` ops served over them.
pub fn stats(state: &State, method: &str) -> Response {
    if method != "GET" {
        return method_not_allowed("GET");
    }
    let upgrades = state
        .control_upgrades
        .load(std::sync::atomic::Ordering::SeqCst);
    let by_sprite = crate::lock(&state.control_upgrades_by_sprite).clone();
    let fs_ops = crate::lock(&state.control_fs_ops).clone();
    Response::json(
        200,
        &serde_json::json!({
            "control_upgrades": upgrades,
            "control_upgrades_by_sprite": by_sprite,
            "control_fs_ops": fs_ops,
        }),
    )
}
