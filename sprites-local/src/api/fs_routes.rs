//! Filesystem routes (PROTOCOL.md §9) under `/v1/sprites/{name}/fs/`: `read`, `list`,
//! `delete`, `rename`, `copy`, `chmod`, `chown`, and `write`, whose body streams to disk
//! ([`super::fs_write`]).
//!
//! Handlers only translate HTTP to [`FsOp`]s and back; the operations live in
//! [`crate::fsops`]. Errors of the operations use the §3.2 body
//! `{"error","code","path"}`; errors of the request itself (bad JSON, unknown sprite) the
//! §3.1 body.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::sprites::parse_body;
use super::{
    fs_write, invalid_request, json_body, method_not_allowed, not_found, sprite_not_found, Reply,
};
use crate::fsops::{self, FsError, FsOp, Owner, SpriteFs};
use crate::net::body::RequestBody;
use crate::net::file::{parse_range, ByteRange, FileResponse};
use crate::net::http::{RequestHead, Response};
use crate::net::query::Query;
use crate::state::State;

/// Dispatches `/v1/sprites/{name}/fs/{op}` (auth is already checked).
pub fn route(
    state: &Arc<State>,
    name: &str,
    op: &str,
    req: &RequestHead,
    q: &Query,
    body: &mut dyn RequestBody,
) -> Reply {
    let m = req.method.as_str();
    let result = match (op, m) {
        ("read", "GET" | "HEAD") => return read(state, name, req, q),
        ("watch", "GET") => return super::fs_watch::watch(state, name, req, body),
        ("watch", _) => Err(method_not_allowed("GET")),
        ("read", _) => Err(method_not_allowed("GET, HEAD")),
        ("write", "PUT") => Ok(fs_write::handle(state, name, q, body)),
        ("write", _) => Err(method_not_allowed("PUT")),
        ("list", "GET") => list(state, name, q),
        ("list", _) => Err(method_not_allowed("GET")),
        ("delete", "DELETE") => delete(state, name, q),
        ("delete", _) => Err(method_not_allowed("DELETE")),
        ("rename", "POST") => rename(state, name, body),
        ("copy", "POST") => copy(state, name, body),
        ("chmod", "POST") => chmod(state, name, body),
        ("chown", "POST") => chown(state, name, body),
        ("rename" | "copy" | "chmod" | "chown", _) => Err(method_not_allowed("POST")),
        _ => Err(not_found()),
    };
    result.unwrap_or_else(|e| e).into()
}

/// The §3.2 body for a failed operation, with its status.
pub(super) fn fs_error(e: &FsError) -> Response {
    Response::json(
        e.status(),
        &serde_json::json!({ "error": e.message, "code": e.code(), "path": e.path }),
    )
}

/// The filesystem of sprite `name`: 404 if there is no such sprite, 501 if the runtime
/// has no filesystem API.
pub(super) fn sprite_fs(state: &State, name: &str) -> Result<Box<dyn SpriteFs>, Response> {
    if !state.store.contains(name) {
        return Err(sprite_not_found(name));
    }
    state
        .runtime
        .fs(&state.store.sprite_dir(name))
        .ok_or_else(|| {
            Response::error(
                501,
                "not_implemented",
                &format!(
                    "the filesystem API is not available with the {} runtime",
                    state.runtime.kind()
                ),
            )
        })
}

/// `path` resolved against `workingDir` (both query parameters); a missing or empty
/// `path` is `EINVAL`.
pub(super) fn query_path(q: &Query) -> Result<String, Response> {
    let path = q.get("path").unwrap_or_default();
    fsops::resolve(q.get("workingDir"), path).map_err(|e| fs_error(&e))
}

fn query_bool(q: &Query, key: &str, default: bool) -> Result<bool, Response> {
    q.get_bool(key, default).map_err(|e| invalid_request(&e.0))
}

fn run(fs: &dyn SpriteFs, op: &FsOp) -> Result<Response, Response> {
    match fs.run(op) {
        Ok(out) => Ok(Response::json(200, &out)),
        Err(e) => Err(fs_error(&e)),
    }
}

/// `GET /fs/read?path=&workingDir=`: the file's bytes, a `Range` of them (206), or 416.
fn read(state: &Arc<State>, name: &str, req: &RequestHead, q: &Query) -> Reply {
    let opened = sprite_fs(state, name).and_then(|fs| {
        let path = query_path(q)?;
        fs.open_read(&path).map_err(|e| fs_error(&e))
    });
    let opened = match opened {
        Ok(o) => o,
        Err(resp) => return resp.into(),
    };
    let len = opened.len;
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
    ];
    let (status, offset, count) = match parse_range(req.header("range"), len) {
        ByteRange::Full => (200, 0, len),
        ByteRange::Partial { start, end } => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
            (206, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            return Response::error(
                416,
                "range_not_satisfiable",
                &format!("the range is outside the file ({len} bytes)"),
            )
            .with_header("Content-Range", format!("bytes */{len}"))
            .into();
        }
    };
    Reply::File(Box::new(FileResponse {
        status,
        headers,
        file: opened.file,
        offset,
        len: count,
    }))
}

/// `GET /fs/list?path=&workingDir=&recursive=`; `path` defaults to the working directory.
fn list(state: &Arc<State>, name: &str, q: &Query) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let path = match q.get("path") {
        Some(p) if !p.is_empty() => query_path(q)?,
        _ => fsops::resolve(None, q.get("workingDir").unwrap_or("/")).map_err(|e| fs_error(&e))?,
    };
    let recursive = query_bool(q, "recursive", false)?;
    run(&*fs, &FsOp::List { path, recursive })
}

/// `DELETE /fs/delete?path=&workingDir=&recursive=`.
fn delete(state: &Arc<State>, name: &str, q: &Query) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let path = query_path(q)?;
    let recursive = query_bool(q, "recursive", false)?;
    run(&*fs, &FsOp::Delete { path, recursive })
}

/// A JSON path field resolved against `workingDir`; missing is a 400.
fn body_path(value: Option<String>, field: &str, wd: Option<&str>) -> Result<String, Response> {
    let Some(value) = value else {
        return Err(invalid_request(&format!("{field} is required")));
    };
    fsops::resolve(wd, &value).map_err(|e| fs_error(&e))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenameIn {
    source: Option<String>,
    dest: Option<String>,
    working_dir: Option<String>,
}

/// `POST /fs/rename {"source","dest","workingDir"}`.
fn rename(
    state: &Arc<State>,
    name: &str,
    body: &mut dyn RequestBody,
) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let body = json_body(body)?;
    let b: RenameIn = parse_body(&body)?;
    let wd = b.working_dir.as_deref();
    let source = body_path(b.source, "source", wd)?;
    let dest = body_path(b.dest, "dest", wd)?;
    run(&*fs, &FsOp::Rename { source, dest })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CopyIn {
    source: Option<String>,
    dest: Option<String>,
    working_dir: Option<String>,
    recursive: Option<bool>,
    preserve_attrs: Option<bool>,
}

/// `POST /fs/copy {"source","dest","workingDir","recursive","preserveAttrs"}`.
fn copy(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let body = json_body(body)?;
    let b: CopyIn = parse_body(&body)?;
    let wd = b.working_dir.as_deref();
    let op = FsOp::Copy {
        source: body_path(b.source, "source", wd)?,
        dest: body_path(b.dest, "dest", wd)?,
        recursive: b.recursive.unwrap_or(false),
        preserve_attrs: b.preserve_attrs.unwrap_or(false),
    };
    run(&*fs, &op)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChmodIn {
    path: Option<String>,
    working_dir: Option<String>,
    mode: Option<Value>,
    recursive: Option<bool>,
}

/// `POST /fs/chmod {"path","workingDir","mode","recursive"}`.
fn chmod(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let body = json_body(body)?;
    let b: ChmodIn = parse_body(&body)?;
    let path = body_path(b.path, "path", b.working_dir.as_deref())?;
    let Some(mode) = b.mode.as_ref().and_then(json_mode) else {
        let e = FsError::with_detail(
            libc::EINVAL,
            &path,
            "mode must be an octal string such as \"0755\" or an integer",
        );
        return Err(fs_error(&e));
    };
    let recursive = b.recursive.unwrap_or(false);
    run(
        &*fs,
        &FsOp::Chmod {
            path,
            mode,
            recursive,
        },
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChownIn {
    path: Option<String>,
    working_dir: Option<String>,
    uid: Option<Value>,
    gid: Option<Value>,
    recursive: Option<bool>,
    as_root: Option<bool>,
}

/// `POST /fs/chown {"path","workingDir","uid","gid","recursive","asRoot"}`: `uid`/`gid` are
/// numbers or names (at least one is required); without `asRoot` the change is made as the
/// sprite's user.
fn chown(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Result<Response, Response> {
    let fs = sprite_fs(state, name)?;
    let body = json_body(body)?;
    let b: ChownIn = parse_body(&body)?;
    let path = body_path(b.path, "path", b.working_dir.as_deref())?;
    let owner = |v: Option<Value>, field: &str| -> Result<Option<Owner>, Response> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => json_owner(&v).map(Some).ok_or_else(|| {
                let detail = format!("{field} must be a non-negative integer or a name");
                fs_error(&FsError::with_detail(libc::EINVAL, &path, &detail))
            }),
        }
    };
    let uid = owner(b.uid, "uid")?;
    let gid = owner(b.gid, "gid")?;
    if uid.is_none() && gid.is_none() {
        let e = FsError::with_detail(libc::EINVAL, &path, "uid or gid is required");
        return Err(fs_error(&e));
    }
    let op = FsOp::Chown {
        path,
        uid,
        gid,
        recursive: b.recursive.unwrap_or(false),
        as_root: b.as_root.unwrap_or(false),
    };
    run(&*fs, &op)
}

/// A chown id: a JSON integer in `0..u32::MAX` (`-1`, "leave alone", is what omitting the
/// field says) or a non-empty name without `:` or control characters.
fn json_owner(v: &Value) -> Option<Owner> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n != u32::MAX)
            .map(Owner::Id),
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 256
                && !s.contains(':')
                && !s.chars().any(char::is_control) =>
        {
            Some(Owner::Name(s.clone()))
        }
        _ => None,
    }
}

/// A mode given as an octal string (`"0755"`, `"755"`) or a JSON integer (`493`), masked to
/// `0o7777`.
fn json_mode(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => fsops::parse_mode_str(s),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| n & 0o7777),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_from_json() {
        assert_eq!(json_mode(&json!("0755")), Some(0o755));
        assert_eq!(json_mode(&json!("644")), Some(0o644));
        assert_eq!(json_mode(&json!(493)), Some(0o755));
        assert_eq!(json_mode(&json!(0o100644)), Some(0o644), "type bits masked");
        assert_eq!(json_mode(&json!("100644")), Some(0o644));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("9"),
            json!("rwx"),
            json!(null),
            json!(true),
            json!(""),
        ] {
            assert_eq!(json_mode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn owners_from_json() {
        assert_eq!(json_owner(&json!(1000)), Some(Owner::Id(1000)));
        assert_eq!(json_owner(&json!(0)), Some(Owner::Id(0)));
        assert_eq!(
            json_owner(&json!("sprite")),
            Some(Owner::Name("sprite".into()))
        );
        for bad in [
            json!(-1),
            json!(4294967295u64),
            json!(1.5),
            json!(""),
            json!("a:b"),
            json!("a\nb"),
            json!(true),
            json!([1]),
        ] {
            assert_eq!(json_owner(&bad), None, "{bad}");
        }
    }

    #[test]
    fn fs_error_body_and_status() {
        let r = fs_error(&FsError::new(libc::ENOENT, "/x/y"));
        assert_eq!(r.status, 404);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"error":"no such file or directory","code":"ENOENT","path":"/x/y"})
        );
        assert_eq!(fs_error(&FsError::new(libc::ENOTEMPTY, "/d")).status, 409);
        let r = fs_error(&FsError::new(libc::ENOSPC, "/f"));
        assert_eq!(r.status, 500);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], "EIO");
        assert_eq!(v["error"], "no space left on device");
    }
}
