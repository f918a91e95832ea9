//! The port watch route (PROTOCOL.md §10 "Port watch"): `GET /v1/sprites/{name}/ports/watch`,
//! a WebSocket. Everything that can be answered with an HTTP error is decided here, before
//! the upgrade; the session itself is [`PortWatch`].

use std::sync::Arc;

use super::{invalid_request, Reply};
use crate::net::body::RequestBody;
use crate::net::http::{RequestHead, Response};
use crate::ports::PortWatch;
use crate::state::State;

/// `GET /v1/sprites/{name}/ports/watch`: **404** for an unknown sprite, **400** for a
/// request that is not a WebSocket upgrade, else the watch.
pub fn watch(
    state: &Arc<State>,
    name: &str,
    req: &RequestHead,
    body: &mut dyn RequestBody,
) -> Reply {
    let key = match super::accept_upgrade(state, name, req, body) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    match PortWatch::start(state, name, key) {
        Ok(w) => Reply::WebSocket(Box::new(w)),
        Err(e) => Response::error(
            503,
            "server_busy",
            &format!("cannot watch the sprite's ports: {e}"),
        )
        .with_header("Retry-After", "1")
        .into(),
    }
}

/// The client's `Sec-WebSocket-Key` of a valid upgrade request, else the **400** to answer.
pub(super) fn websocket_key(req: &RequestHead) -> Result<&str, Response> {
    let key = req.header("sec-websocket-key").map(str::trim).unwrap_or("");
    if !req.is_websocket_upgrade()
        || key.is_empty()
        || req.header("sec-websocket-version").map(str::trim) != Some("13")
    {
        return Err(invalid_request(
            "this endpoint is a WebSocket: the request must be an upgrade with \
             Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    Ok(key)
}
