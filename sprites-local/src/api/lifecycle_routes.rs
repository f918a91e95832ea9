//! Lifecycle routes (PROTOCOL.md §5.4, §5.5): `GET /v1/sprites/{name}/check`,
//! `POST /v1/sprites/{name}/restart`, and the NDJSON watch of `GET /v1/sprites`.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{invalid_request, sprite_not_found, Reply};
use crate::lifecycle::watch::{OrgCounts, Watch};
use crate::lifecycle::Status;
use crate::net::http::{RequestHead, Response};
use crate::net::query::Query;
use crate::state::State;

/// The organisation every sprite belongs to.
pub(crate) const ORG: &str = "local";
/// `running_limit` reported with the counts (nothing enforces it).
pub(crate) const RUNNING_LIMIT: usize = 100;
/// `warm_limit` reported with the counts (nothing enforces it).
pub(crate) const WARM_LIMIT: usize = 100;

/// How many of `statuses` are running, warm and cold.
pub(crate) fn count(statuses: &[Status]) -> OrgCounts {
    let mut c = OrgCounts::default();
    for s in statuses {
        match s {
            Status::Running => c.running += 1,
            Status::Warm => c.warm += 1,
            Status::Cold => c.cold += 1,
        }
    }
    c
}

/// The counts of every sprite now.
pub(crate) fn org_counts(state: &State) -> OrgCounts {
    let statuses: Vec<Status> = state
        .store
        .list()
        .iter()
        .map(|r| state.lifecycle.status(state, &r.name))
        .collect();
    count(&statuses)
}

/// True when `GET /v1/sprites` asks for the watch stream (`Accept: application/x-ndjson`).
pub(crate) fn wants_watch(req: &RequestHead) -> bool {
    req.header("accept").is_some_and(|a| {
        a.split(',').any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-ndjson"))
        })
    })
}

/// `GET /v1/sprites` with `Accept: application/x-ndjson`: `prefix`, `max_results` (1–100,
/// the opening snapshot's size; default all); **400** for a bad `max_results`.
pub(crate) fn watch(state: &Arc<State>, q: &Query) -> Reply {
    let max = match q.get("max_results").filter(|v| !v.is_empty()) {
        None => usize::MAX,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=super::sprites::MAX_PAGE).contains(&n) => n,
            _ => {
                return invalid_request(&format!(
                    "max_results must be an integer from 1 to {}, got {v:?}",
                    super::sprites::MAX_PAGE
                ))
                .into()
            }
        },
    };
    let prefix = q.get("prefix").unwrap_or("");
    Reply::Duplex(Box::new(Watch::new(state, prefix, max)))
}

#[derive(Serialize)]
struct CheckOut<'a> {
    sprite_name: &'a str,
    sprite_id: &'a str,
    status: &'static str,
    reason: Option<String>,
    checked_at: String,
    /// Milliseconds the check took.
    elapsed: f64,
}

/// `GET /v1/sprites/{name}/check`: whether the sprite answers, without waking it. `status`
/// is `ok` (up and its runtime answered), `cold` (not running; the next request boots it)
/// or `error` (up but not answering; `reason` says why). **404** for an unknown sprite.
pub(crate) fn check(state: &Arc<State>, name: &str) -> Response {
    let Some(rec) = state.store.get(name) else {
        return sprite_not_found(name);
    };
    let started = Instant::now();
    let (status, reason) = match state.lifecycle.status(state, name) {
        Status::Cold => ("cold", None),
        Status::Warm | Status::Running => {
            match state.runtime.health(&state.store.sprite_dir(name)) {
                Ok(()) => ("ok", None),
                Err(why) => ("error", Some(why)),
            }
        }
    };
    Response::json(
        200,
        &CheckOut {
            sprite_name: &rec.name,
            sprite_id: &rec.id,
            status,
            reason,
            checked_at: crate::time::now_rfc3339(),
            elapsed: started.elapsed().as_secs_f64() * 1000.0,
        },
    )
}

#[derive(Serialize)]
struct RestartOut<'a> {
    sprite_name: &'a str,
    machine_id: &'a str,
    message: String,
}

/// `POST /v1/sprites/{name}/restart`: every process and session of the sprite ends, it
/// goes `cold`, then boots again (`running`); files stay. **404** for an unknown sprite,
/// **500** if it cannot boot again.
pub(crate) fn restart(state: &Arc<State>, name: &str) -> Response {
    let Some(rec) = state.store.get(name) else {
        return sprite_not_found(name);
    };
    match state.lifecycle.restart(state, name) {
        Ok(()) => Response::json(
            200,
            &RestartOut {
                sprite_name: &rec.name,
                machine_id: &rec.id,
                message: format!("sprite {name} restarted"),
            },
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => sprite_not_found(name),
        Err(e) => Response::error(500, "internal", &format!("restarting sprite {name:?}: {e}")),
    }
}
