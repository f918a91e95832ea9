//! `fs.*` operations over a control connection (PROTOCOL.md §8.5): the same operations as
//! the HTTP filesystem API (§9, [`crate::fsops`]), with args keyed like its query and each
//! answered by one JSON text message (the §9 result body, or the §3.2 error body).
//!
//! `fs.read` follows its result `{"path","size"}` with one binary frame of content, so a
//! read over control is bounded by [`MAX_READ`]; a bigger file fails with `EFBIG` (clients
//! read it over HTTP instead). `fs.write` takes its content from the one binary frame the
//! client sends right after `op.start`.

use serde_json::{json, Value};

use crate::fsops::{self, FsError, FsOp, SpriteFs, WriteError, WriteSpec};
use crate::net::query::Query;
use crate::state::State;

/// The ops served here.
pub const OPS: [&str; 7] = [
    "fs.read",
    "fs.write",
    "fs.list",
    "fs.delete",
    "fs.rename",
    "fs.copy",
    "fs.chmod",
];

/// Largest content one `fs.read` sends (it travels as one WebSocket message).
pub const MAX_READ: u64 = 8 << 20;
/// The working directory when `workingDir` is absent (Go's default for control ops).
const DEFAULT_DIR: &str = "/home/sprite";

/// What an `fs.*` op came to.
pub enum Step {
    /// Finished: the JSON result, and for `fs.read` the content.
    Done(Value, Option<Vec<u8>>),
    /// Failed: the §3.2 (or §3.1) body.
    Failed(Failure),
    /// `fs.write`: waiting for its content frame.
    AwaitContent(PendingWrite),
}

/// A failed op: the message for `op.error` and the JSON body sent before it.
pub struct Failure {
    pub message: String,
    pub body: Value,
}

impl Failure {
    fn fs(e: &FsError) -> Failure {
        Failure {
            message: e.message.clone(),
            body: json!({ "error": e.message, "code": e.code(), "path": e.path, "status": e.status() }),
        }
    }

    fn request(status: u16, code: &str, message: String) -> Failure {
        Failure {
            body: json!({ "error": code, "message": message, "status": status }),
            message,
        }
    }
}

/// A write whose content has not arrived yet.
pub struct PendingWrite {
    fs: Box<dyn SpriteFs>,
    spec: WriteSpec,
}

impl PendingWrite {
    /// Writes `content` (atomically, as the HTTP write does).
    pub fn finish(self, content: &[u8]) -> Step {
        match fsops::write_atomic(&*self.fs, &self.spec, &mut &content[..]) {
            Ok(written) => Step::Done(json!(written), None),
            Err(WriteError::Body(e)) => Step::Failed(Failure::request(
                400,
                "invalid_request",
                format!("write content incomplete, nothing written: {e}"),
            )),
            Err(WriteError::Fs(e) | WriteError::Store(e)) => Step::Failed(Failure::fs(&e)),
        }
    }
}

/// Runs `op` (`fs.read`, `fs.write`, …) on sprite `sprite`.
pub fn run(state: &State, sprite: &str, op: &str, args: &Query) -> Step {
    match try_run(state, sprite, op, args) {
        Ok(step) => step,
        Err(failure) => Step::Failed(failure),
    }
}

fn try_run(state: &State, sprite: &str, op: &str, args: &Query) -> Result<Step, Failure> {
    let fs = state
        .runtime
        .fs(&state.store.sprite_dir(sprite))
        .ok_or_else(|| {
            Failure::request(
                501,
                "not_implemented",
                format!(
                    "the filesystem API is not available with the {} runtime",
                    state.runtime.kind()
                ),
            )
        })?;
    let wd = Some(args.get("workingDir").unwrap_or(DEFAULT_DIR));
    let path = |key: &str| -> Result<String, Failure> {
        fsops::resolve(wd, args.get(key).unwrap_or_default()).map_err(|e| Failure::fs(&e))
    };
    let flag = |key: &str, default: bool| -> Result<bool, Failure> {
        args.get_bool(key, default)
            .map_err(|e| Failure::request(400, "invalid_request", e.0))
    };
    let mode = |path: &str, default: u32| -> Result<u32, Failure> {
        match args.get("mode") {
            None | Some("") => Ok(default),
            Some(m) => fsops::parse_mode_str(m).ok_or_else(|| {
                Failure::fs(&FsError::with_detail(
                    libc::EINVAL,
                    path,
                    &format!("invalid mode {m:?}: expected octal such as 0644"),
                ))
            }),
        }
    };
    let op = match op {
        "fs.read" => return read(&*fs, &path("path")?, args).map(|(v, b)| Step::Done(v, Some(b))),
        "fs.write" => {
            let path = path("path")?;
            let spec = WriteSpec {
                mode: mode(&path, 0o644)?,
                // Over control, parents are made unless the client says not to (Go sends
                // `mkdirParents=false` only to disable it).
                mkdir_parents: flag("mkdirParents", true)?,
                durable: state.durable_writes,
                path,
            };
            return Ok(Step::AwaitContent(PendingWrite { fs, spec }));
        }
        "fs.list" => FsOp::List {
            path: match args.get("path") {
                Some(p) if !p.is_empty() => path("path")?,
                _ => path("workingDir")?,
            },
            recursive: flag("recursive", false)?,
        },
        "fs.delete" => FsOp::Delete {
            path: path("path")?,
            recursive: flag("recursive", false)?,
        },
        "fs.rename" => FsOp::Rename {
            source: path("source")?,
            dest: path("dest")?,
        },
        "fs.copy" => FsOp::Copy {
            source: path("source")?,
            dest: path("dest")?,
            recursive: flag("recursive", false)?,
            preserve_attrs: flag("preserveAttrs", false)?,
        },
        "fs.chmod" => {
            let path = path("path")?;
            if args.get("mode").is_none_or(str::is_empty) {
                return Err(Failure::fs(&FsError::with_detail(
                    libc::EINVAL,
                    &path,
                    "mode is required",
                )));
            }
            FsOp::Chmod {
                mode: mode(&path, 0)?,
                recursive: flag("recursive", false)?,
                path,
            }
        }
        other => {
            return Err(Failure::request(
                400,
                "unsupported_operation",
                format!("unknown control operation {other:?}"),
            ))
        }
    };
    fs.run(&op)
        .map(|out| Step::Done(json!(out), None))
        .map_err(|e| Failure::fs(&e))
}

/// `fs.read`: the result and the content of `[start, end)` (`end` absent or 0: to the end).
fn read(fs: &dyn SpriteFs, path: &str, args: &Query) -> Result<(Value, Vec<u8>), Failure> {
    use std::io::{Read, Seek, SeekFrom};
    let number = |key: &str| -> Result<u64, Failure> {
        match args.get(key) {
            None | Some("") => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                Failure::request(
                    400,
                    "invalid_request",
                    format!("{key} must be a byte offset, got {v:?}"),
                )
            }),
        }
    };
    let (start, end) = (number("start")?, number("end")?);
    let opened = fs.open_read(path).map_err(|e| Failure::fs(&e))?;
    let end = if end == 0 {
        opened.len
    } else {
        end.min(opened.len)
    };
    let len = end.saturating_sub(start);
    if len > MAX_READ {
        // Not a §3.2 code the SDKs know; clients take it as "read this over HTTP".
        let message = format!(
            "a read over a control connection is at most {MAX_READ} bytes: read it over HTTP"
        );
        return Err(Failure {
            body: json!({ "error": message, "code": "EFBIG", "path": path, "status": 413 }),
            message,
        });
    }
    let mut file = opened.file;
    let mut content = Vec::with_capacity(len as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(len).read_to_end(&mut content))
        .map_err(|e| Failure::fs(&FsError::from_io(&e, path)))?;
    Ok((json!({ "path": path, "size": content.len() }), content))
}
