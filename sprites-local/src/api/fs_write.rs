//! `PUT /v1/sprites/{name}/fs/write?path=&workingDir=&mode=0644&mkdirParents=true`, with its
//! body streamed straight into an atomic write (any size, constant memory).
//!
//! An ordinary route: everything that can be checked without the body (sprite,
//! parameters, target directory) is checked first, and only then is the body read, so a
//! refused upload never gets its `100 Continue` and none of its body is read.

use std::sync::Arc;

use super::fs_routes::{fs_error, query_path, sprite_fs};
use super::invalid_request;
use crate::fsops::{self, FsError, WriteError, WriteSpec};
use crate::net::body::RequestBody;
use crate::net::http::Response;
use crate::net::query::Query;
use crate::state::State;

/// Streams `body` into the file named by the query of a write to sprite `name`.
pub fn handle(state: &Arc<State>, name: &str, q: &Query, body: &mut dyn RequestBody) -> Response {
    let (fs, spec) = match prepare(state, name, q) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    // write_atomic validates the target (begin_write) before its first body read, so a
    // refused write never asks the client for its body.
    match fsops::write_atomic(&*fs, &spec, &mut &mut *body) {
        Ok(written) => Response::json(200, &written),
        Err(WriteError::Body(e)) => {
            invalid_request(&format!("request body incomplete, nothing written: {e}"))
        }
        Err(WriteError::Fs(e) | WriteError::Store(e)) => fs_error(&e),
    }
}

/// Checks the sprite and parameters: the sprite's filesystem and what to write.
fn prepare(
    state: &Arc<State>,
    name: &str,
    q: &Query,
) -> Result<(Box<dyn fsops::SpriteFs>, WriteSpec), Response> {
    let fs = sprite_fs(state, name)?;
    let path = query_path(q)?;
    let mode = match q.get("mode") {
        None | Some("") => 0o644,
        Some(m) => fsops::parse_mode_str(m).ok_or_else(|| {
            fs_error(&FsError::with_detail(
                libc::EINVAL,
                &path,
                &format!("invalid mode {m:?}: expected octal such as 0644"),
            ))
        })?,
    };
    // Absent means false: every SDK sends `mkdirParents=true` when it wants parents (Go and
    // Ex on every write, Py when asked), and the JS SDK's non-recursive mkdir relies on a
    // missing parent being ENOENT (PROTOCOL.md §9).
    let mkdir_parents = q
        .get_bool("mkdirParents", false)
        .map_err(|e| invalid_request(&e.0))?;
    Ok((
        fs,
        WriteSpec {
            path,
            mode,
            mkdir_parents,
            durable: state.durable_writes,
        },
    ))
}
