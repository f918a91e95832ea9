//! The TCP proxy route (PROTOCOL.md §10): `GET /v1/sprites/{name}/proxy`, a WebSocket.
//! What can be answered with an HTTP error is decided here, before the upgrade; the session
//! itself is [`ProxySession`].

use super::Reply;
use crate::net::body::RequestBody;
use crate::net::http::RequestHead;
use crate::state::State;
use crate::tunnel::ProxySession;

/// `GET /v1/sprites/{name}/proxy`: **404** for an unknown sprite, **400** for a request
/// that is not a WebSocket upgrade (or has a body), else the proxy session.
pub fn proxy(state: &State, name: &str, req: &RequestHead, body: &mut dyn RequestBody) -> Reply {
    let key = match super::accept_upgrade(state, name, req, body) {
        Ok(k) => k,
        Err(r) => return r.into(),
    };
    Reply::WebSocket(Box::new(ProxySession::new(name, key)))
}
