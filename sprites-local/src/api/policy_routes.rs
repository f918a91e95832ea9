//! The policy routes (PROTOCOL.md §13): `GET`/`POST /v1/sprites/{name}/policy/network`,
//! and `GET`/`POST`/`DELETE` of `/policy/privileges` and `/policy/resources`.
//!
//! The documents are validated and stored by [`crate::policy`]; the runtime is told after
//! every change and applies what it can (`SpriteRuntime::policy_changed`). Every answer
//! carries [`ENFORCEMENT_HEADER`]: one line saying what this server enforces of that
//! policy, since that depends on the runtime.

use std::sync::Arc;

use super::{invalid_request, json_body, method_not_allowed, not_found, sprite_not_found, Reply};
use crate::net::body::RequestBody;
use crate::net::http::Response;
use crate::policy::{self, Kind};
use crate::state::State;

/// Response header saying what of the policy is enforced here.
pub const ENFORCEMENT_HEADER: &str = "Sprites-Local-Enforcement";

/// `/v1/sprites/{name}/policy/{kind}`.
pub fn route(
    state: &Arc<State>,
    name: &str,
    kind: &str,
    method: &str,
    body: &mut dyn RequestBody,
) -> Reply {
    let Some(kind) = Kind::parse(kind) else {
        return not_found().into();
    };
    let allowed = match kind {
        Kind::Network => "GET, POST",
        _ => "GET, POST, DELETE",
    };
    if !allowed.split(", ").any(|m| m == method) {
        return method_not_allowed(allowed).into();
    }
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    let dir = state.store.sprite_dir(name);
    let note = state.runtime.policy_note(kind);
    let resp = match method {
        "GET" => Response::json(200, &policy::load(&dir, kind)),
        "POST" => {
            let bytes = match json_body(body) {
                Ok(b) => b,
                Err(r) => return r.into(),
            };
            let doc = match kind.validate(&bytes) {
                Ok(d) => d,
                Err(why) => {
                    return invalid_request(&why)
                        .with_header(ENFORCEMENT_HEADER, note)
                        .into()
                }
            };
            match policy::store(&dir, kind, &doc) {
                Ok(()) => {
                    state.runtime.policy_changed(&dir);
                    Response::empty(204)
                }
                Err(e) => storage_error(&e),
            }
        }
        _ => match policy::reset(&dir, kind) {
            Ok(()) => {
                state.runtime.policy_changed(&dir);
                Response::empty(204)
            }
            Err(e) => storage_error(&e),
        },
    };
    resp.with_header(ENFORCEMENT_HEADER, note).into()
}

fn storage_error(e: &std::io::Error) -> Response {
    Response::error(500, "internal_error", &format!("storing the policy: {e}"))
}
