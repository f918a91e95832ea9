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
        return attach(state, name, id).into();
    }
    let params = match exec::parse_params(q) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e.0).into(),
    };
    let key = req.header("sec-websocket-key").map(str::trim).unwrap_or("");
    if key.is_empty() || req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return invalid_request(
            "WebSocket upgrade requires Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        )
        .with_header("Sec-WebSocket-Version", "13")
        .into();
    }
    match exec::spawn(state, name, &params, key) {
        Ok(up) => Reply::WebSocket(Box::new(up)),
        Err(e) => spawn_failed(name, &params.program, e).into(),
    }
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
            tty: false,
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

/// `GET /v1/sprites/{name}/exec/{id}` (WebSocket attach). Only TTY/detachable sessions can
/// be attached, and this server does not have those yet.
pub fn attach(state: &Arc<State>, name: &str, id: &str) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    match id
        .parse::<u32>()
        .map(|pid| state.sessions.lookup(name, pid))
    {
        Ok(Lookup::Active(_)) => invalid_request(&format!(
            "session {id} is not attachable: only tty sessions can be attached"
        )),
        _ => session_not_found(id),
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
    if !grace.is_zero() && sig != libc::SIGKILL {
        // Escalate to SIGKILL if the process outlives the grace period. The thread holds
        // the session (not the PID), so it can never signal a recycled PID.
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
    let line = serde_json::json!({
        "type": "info",
        "data": format!("signal {} sent to session {id}", signal::name(sig)),
    });
    let mut body = line.to_string().into_bytes();
    body.push(b'\n');
    let mut resp = Response::empty(200).with_header("Content-Type", "application/x-ndjson");
    resp.body = body;
    resp.chunked = true;
    resp
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

/// Parses a Go-style duration (`10s`, `1m30s`, `1.5s`, `500ms`, `0s`, `0`) or plain
/// seconds (`10`, `2.5`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5.0s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
