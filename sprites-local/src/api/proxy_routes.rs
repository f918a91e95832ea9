//! The TCP proxy route (PROTOCOL.md §10): `GET /v1/sprites/{name}/proxy`, a WebSocket.
//! What can be answered with an HTTP error is decided here, before the upgrade; the session
//! itself is [`ProxySession`].

use super::{invalid_request, port_routes::websocket_key, sprite_not_found, Reply};
use crate::net::body::RequestBody;
use crate::net::http::RequestHead;
use crate::state::State;
use crate::tunnel::ProxySession;

/// `GET /v1/sprites/{name}/proxy`: **404** for an unknown sprite, **400** for a request
/// that is not a WebSocket upgrade (or has a body), else the proxy session.
pub fn proxy(state: &State, name: &str, req: &RequestHead, body: &mut dyn RequestBody) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    let key = match websocket_key(req) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    if !body.is_done() {
        return invalid_request("a WebSocket upgrade request cannot have a body").into();
    }
    Reply::WebSocket(Box::new(ProxySession::new(name, key)))
}
