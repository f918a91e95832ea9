//! Exec and session routes (PROTOCOL.md §6, §7): start an exec, list, attach, kill.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid_request, json_body, sprite_not_found, Reply};
use crate::exec::{self, Lookup, SpawnFailure};
use crate::net::body::RequestBody;
use crate::net::http::{RequestHead, Response};
use crate::net::query::Query;
use crate::state::State;
use crate::time::parse_duration;
use crate::{signal, time};

/// `GET /v1/sprites/{name}/exec`: an exec when it is a WebSocket upgrade, else the list.
pub fn exec_or_list(
    state: &Arc<State>,
    name: &str,
    req: &RequestHead,
    q: &Query,
    body: &mut dyn RequestBody,
) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    if !req.is_websocket_upgrade() {
        return list(state, name).into();
    }
    if !body.is_done() {
        // Whatever follows the head of an upgrade is WebSocket frames, not a body.
        return invalid_request("a WebSocket upgrade request cannot have a body").into();
    }
    // Legacy attach form `/exec?id=N` (§7.2) carries no cmd.
    if let Some(id) = q.get("id").filter(|_| q.get("cmd").is_none()) {
        return attach(state, name, id, req);
    }
    let params = match exec::parse_params(q) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e.0).into(),
    };
    let key = match websocket_key(req) {
        Ok(k) => k,
        Err(resp) => return resp.into(),
    };
    match exec::spawn(state, name, &params, key) {
        Ok(up) => Reply::WebSocket(Box::new(up)),
        Err(e) => spawn_failed(name, &params.program, e).into(),
    }
}

/// The client's `Sec-WebSocket-Key`, or the 400 for a handshake this server cannot accept.
fn websocket_key(req: &RequestHead) -> Result<&str, Response> {
    let key = req.header("sec-websocket-key").map(str::trim).unwrap_or("");
    if key.is_empty() || req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(invalid_request(
            "WebSocket upgrade requires Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    Ok(key)
}

/// The answer to an exec whose process could not be started.
pub(super) fn spawn_failed(name: &str, program: &str, e: SpawnFailure) -> Response {
    match e {
        SpawnFailure::SpriteNotFound => sprite_not_found(name),
        SpawnFailure::InvalidDirectory(m) => Response::error(400, "invalid_directory", &m),
        SpawnFailure::CommandNotFound => Response::error(
            400,
            "command_not_found",
            &format!("exec: {program:?}: executable file not found in $PATH"),
        ),
        SpawnFailure::PermissionDenied => Response::error(
            400,
            "permission_denied",
            &format!("exec: {program:?}: permission denied"),
        ),
        SpawnFailure::Failed(e) => {
            Response::error(500, "exec_failed", &format!("exec: {program:?}: {e}"))
        }
    }
}

/// `HEAD /v1/sprites/{name}/exec`: clients only read `Sprite-Version` from it.
pub fn head(state: &Arc<State>, name: &str) -> Response {
    if state.store.contains(name) {
        Response::empty(200)
    } else {
        sprite_not_found(name)
    }
}

#[derive(Serialize)]
struct SessionOut {
    id: String,
    command: String,
    workdir: String,
    created: String,
    bytes_per_second: f64,
    is_active: bool,
    last_activity: String,
    tty: bool,
}

#[derive(Serialize)]
struct SessionsOut {
    sessions: Vec<SessionOut>,
}

fn list(state: &Arc<State>, name: &str) -> Response {
    let sessions = state
        .sessions
        .list(name)
        .into_iter()
        .map(|s| SessionOut {
            id: s.pid.to_string(),
            command: s.command.clone(),
            workdir: s.workdir.clone(),
            created: time::format_rfc3339(s.created),
            bytes_per_second: s.bytes_per_second(),
            is_active: true,
            last_activity: time::format_rfc3339(s.last_activity()),
            tty: s.tty,
        })
        .collect();
    Response::json(200, &SessionsOut { sessions })
}

fn session_not_found(id: &str) -> Response {
    Response::error(
        404,
        "session_not_found",
        &format!("session {id:?} not found"),
    )
}

/// `GET /v1/sprites/{name}/exec/{id}` and `GET …/exec?id={id}` (WebSocket attach,
/// PROTOCOL.md §7.2). Detachable sessions (every TTY session) can be attached; an
/// ordinary exec belongs to its one connection and is refused with 400.
pub fn attach(state: &Arc<State>, name: &str, id: &str, req: &RequestHead) -> Reply {
    if !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    let session = match id
        .parse::<u32>()
        .map(|pid| state.sessions.lookup(name, pid))
    {
        Ok(Lookup::Active(s)) => s,
        _ => return session_not_found(id).into(),
    };
    if !req.is_websocket_upgrade() {
        return invalid_request("attaching to a session needs a WebSocket upgrade").into();
    }
    let key = match websocket_key(req) {
        Ok(k) => k,
        Err(resp) => return resp.into(),
    };
    match session.hub() {
        Some(hub) => Reply::WebSocket(Box::new(exec::Attach::new(hub, key))),
        // Its output has ended (the exit is being reported) or it was never detachable.
        None if session.wait_exited(Duration::ZERO) => session_not_found(id).into(),
        None => invalid_request(&format!(
            "session {id} is not attachable: start it with tty=true or detachable=true"
        ))
        .into(),
    }
}

#[derive(Deserialize, Default)]
struct KillIn {
    signal: Option<serde_json::Value>,
    timeout: Option<serde_json::Value>,
}

/// `POST /v1/sprites/{name}/exec/{id}/kill`: signal from `?signal=` or a JSON body,
/// default TERM; `timeout` (seconds or a Go duration, default 10 s) is the grace period
/// before SIGKILL, and 0 means no escalation (PROTOCOL.md §7.3).
pub fn kill(
    state: &Arc<State>,
    name: &str,
    id: &str,
    q: &Query,
    body: &mut dyn RequestBody,
) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    let body = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: KillIn = if body.iter().all(u8::is_ascii_whitespace) {
        KillIn::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return invalid_request(&format!("invalid kill request body: {e}")),
        }
    };
    let sig_text = match (&body.signal, q.get("signal").filter(|s| !s.is_empty())) {
        (Some(serde_json::Value::String(s)), _) => s.clone(),
        (Some(serde_json::Value::Number(n)), _) => n.to_string(),
        (Some(serde_json::Value::Null) | None, Some(s)) => s.to_owned(),
        (Some(serde_json::Value::Null) | None, None) => "TERM".to_owned(),
        (Some(_), _) => return invalid_request("signal must be a name or a number"),
    };
    let Some(sig) = signal::parse(&sig_text) else {
        return invalid_request(&format!("unknown signal {sig_text:?}"));
    };
    let grace = match grace_period(body.timeout.as_ref(), q.get("timeout")) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Ok(pid) = id.parse::<u32>() else {
        return session_not_found(id);
    };
    let session = match state.sessions.lookup(name, pid) {
        Lookup::Active(s) => s,
        Lookup::Exited => {
            return Response::error(
                410,
                "session_exited",
                &format!("session {id} already exited"),
            )
        }
        Lookup::Unknown => return session_not_found(id),
    };
    if !session.signal(sig) {
        return Response::error(
            410,
            "session_exited",
            &format!("session {id} already exited"),
        );
    }
    let mut progress = KillProgress::new(session.pid);
    let sig_name = format!("SIG{}", signal::name(sig));
    progress.line("signal", &format!("sent {sig_name}"), |v| {
        v["signal"] = sig_name.clone().into();
    });
    let in_request = grace.min(KILL_WAIT_IN_REQUEST);
    let waited = if sig == libc::SIGKILL {
        session.wait_exit_code(KILLED_EXIT_WAIT)
    } else if grace.is_zero() {
        None // no escalation asked for, nothing to wait for
    } else {
        session.wait_exit_code(in_request)
    };
    match waited {
        Some(code) => progress.exited(code),
        None if sig != libc::SIGKILL && !grace.is_zero() && grace <= KILL_WAIT_IN_REQUEST => {
            progress.line(
                "timeout",
                &format!("still running after {} ms", grace.as_millis()),
                |_| {},
            );
            if session.signal(libc::SIGKILL) {
                progress.line("killed", "sent SIGKILL", |v| v["signal"] = "SIGKILL".into());
            }
            if let Some(code) = session.wait_exit_code(KILLED_EXIT_WAIT) {
                progress.exited(code);
            }
        }
        None if sig != libc::SIGKILL && !grace.is_zero() => {
            // A grace period longer than a request should take: escalate from a thread
            // that holds the session (not the pid), so it never signals a recycled pid.
            let s = session.clone();
            let _ = std::thread::Builder::new()
                .name("sprites-kill-grace".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    if !s.wait_exited(grace) {
                        s.signal(libc::SIGKILL);
                    }
                });
        }
        None => {}
    }
    progress.line("complete", "done", |_| {});
    let mut resp = Response::empty(200).with_header("Content-Type", "application/x-ndjson");
    resp.body = progress.body;
    resp.chunked = true;
    resp
}

/// How long a kill request waits for the session to exit before answering (longer grace
/// periods escalate in the background).
const KILL_WAIT_IN_REQUEST: Duration = Duration::from_secs(10);
/// How long a kill request waits for a SIGKILLed session's exit status.
const KILLED_EXIT_WAIT: Duration = Duration::from_secs(2);

/// A kill's NDJSON progress (PROTOCOL.md §7.3): each line carries both shapes clients
/// parse — `type` with `message` (JS) and `data` (Python) — plus `pid`, and `signal` or
/// `exit_code` where they apply.
struct KillProgress {
    pid: u32,
    body: Vec<u8>,
}

impl KillProgress {
    fn new(pid: u32) -> KillProgress {
        KillProgress {
            pid,
            body: Vec::new(),
        }
    }

    fn line(&mut self, kind: &str, message: &str, extra: impl FnOnce(&mut serde_json::Value)) {
        let mut v = serde_json::json!({
            "type": kind,
            "message": message,
            "data": message,
            "pid": self.pid,
        });
        extra(&mut v);
        self.body.extend_from_slice(v.to_string().as_bytes());
        self.body.push(b'\n');
    }

    fn exited(&mut self, code: u8) {
        self.line("exited", &format!("exited with {code}"), |v| {
            v["exit_code"] = code.into();
        });
    }
}

/// Default grace period before SIGKILL when the request names none (PROTOCOL.md §7.3).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Longest grace period honoured; longer requests are capped (a waiting thread per kill).
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The kill grace period from the body's `timeout` (integer seconds or a duration string)
/// or the query's `timeout` (a Go duration). Zero means "no escalation".
fn grace_period(
    body: Option<&serde_json::Value>,
    query: Option<&str>,
) -> Result<Duration, Response> {
    let bad = || invalid_request("timeout must be a number of seconds or a duration like 10s");
    let grace = match (body, query.filter(|s| !s.is_empty())) {
        (Some(serde_json::Value::Number(n)), _) => n
            .as_f64()
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .ok_or_else(bad),
        (Some(serde_json::Value::String(s)), _) => parse_duration(s).ok_or_else(bad),
        (Some(serde_json::Value::Null) | None, Some(s)) => parse_duration(s).ok_or_else(bad),
        (Some(serde_json::Value::Null) | None, None) => Ok(DEFAULT_GRACE),
        (Some(_), _) => Err(bad()),
    };
    grace.map(|g| g.min(MAX_GRACE))
}
