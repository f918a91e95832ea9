//! Services (PROTOCOL.md §11): `/v1/sprites/{name}/services[/{svc}[/{op}]]`.
//!
//! Everything a client can get wrong (unknown sprite or service, a bad body or query, a
//! second `http_port`, stopping what is not running) is answered before any stream
//! starts, with a §3.1 error. Start, stop, restart, create and logs then answer `200`
//! with an NDJSON stream ([`ServiceStream`]) of §11 events ending in `complete`.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{invalid_request, json_body, method_not_allowed, sprite_not_found, Reply};
use crate::lock;
use crate::net::body::RequestBody;
use crate::net::http::{response_head, ChunkedWriter, Response};
use crate::net::query::Query;
use crate::services::def::{self, ServiceDef, MAX_SERVICES};
use crate::services::logs::{Event, RING_LINES};
use crate::services::run::{self, SignalError};
use crate::services::{self, SpriteServices, Svc, DEFAULT_GRACE};
use crate::state::State;

/// How long start/create/restart follow a service's output when `duration` is absent.
const DEFAULT_FOLLOW: Duration = Duration::from_secs(5);
/// Longest `duration` (follow window) and `timeout` (stop grace) accepted.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Lines the logs route replays when `lines` is absent.
const DEFAULT_LINES: usize = 100;

/// Routes `rest` (what follows `/services`).
pub fn route(
    state: &Arc<State>,
    sprite: &str,
    method: &str,
    rest: &[&str],
    q: &Query,
    body: &mut dyn RequestBody,
) -> Reply {
    let Some(sp) = state.services.sprite(state, sprite) else {
        return sprite_not_found(sprite).into();
    };
    match (rest, method) {
        ([], "GET") => list(&sp).into(),
        ([], _) => method_not_allowed("GET").into(),
        (["signal"], "POST") => signal(&sp, body).into(),
        ([svc], "GET") => with_svc(&sp, svc, |s| Response::json(200, &s.info())).into(),
        ([svc], "PUT") => put(state, &sp, svc, q, body),
        ([svc], "DELETE") => delete(&sp, svc, q).into(),
        ([_], _) => method_not_allowed("GET, PUT, DELETE").into(),
        ([svc, "start"], "POST") => start(state, &sp, svc, q, false),
        ([svc, "restart"], "POST") => start(state, &sp, svc, q, true),
        ([svc, "stop"], "POST") => stop(&sp, svc, q),
        ([svc, "logs"], "GET") => logs(&sp, svc, q),
        ([_, "start" | "restart" | "stop"], _) => method_not_allowed("POST").into(),
        ([_, "logs"], _) => method_not_allowed("GET").into(),
        _ => super::not_found().into(),
    }
}

fn service_not_found(svc: &str) -> Response {
    Response::error(
        404,
        "service_not_found",
        &format!("service {svc:?} not found"),
    )
}

fn conflict(message: &str) -> Response {
    Response::error(409, "conflict", message)
}

fn internal(e: impl std::fmt::Display) -> Response {
    Response::error(500, "internal", &e.to_string())
}

/// Runs `f` on service `svc`, or answers 404.
fn with_svc(sp: &SpriteServices, svc: &str, f: impl FnOnce(&Svc) -> Response) -> Response {
    match lock(&sp.svcs).get(svc) {
        Some(s) => f(s),
        None => service_not_found(svc),
    }
}

fn list(sp: &SpriteServices) -> Response {
    let all: Vec<serde_json::Value> = lock(&sp.svcs).values().map(Svc::info).collect();
    Response::json(200, &all)
}

/// A Go duration query parameter (`5s`, `1m30s`, `500ms`, `0s`; plain seconds too).
fn duration(q: &Query, key: &str, default: Duration) -> Result<Duration, Response> {
    match q.get(key) {
        None | Some("") => Ok(default),
        Some(v) => match crate::time::parse_duration(v) {
            Some(d) if d <= MAX_DURATION => Ok(d),
            Some(_) => Err(invalid_request(&format!(
                "{key} {v:?} is longer than {}s",
                MAX_DURATION.as_secs()
            ))),
            None => Err(invalid_request(&format!(
                "{key} {v:?} is not a duration (e.g. 5s, 1m30s, 500ms)"
            ))),
        },
    }
}

/// Sets whether `svc` should run and persists it; false when there is no such service.
fn want(sp: &SpriteServices, svc: &str, running: bool) -> Result<bool, Response> {
    let mut svcs = lock(&sp.svcs);
    let Some(s) = svcs.get_mut(svc) else {
        return Ok(false);
    };
    if s.want_running != running {
        s.want_running = running;
        sp.save(&svcs).map_err(internal)?;
    }
    Ok(true)
}

fn put(
    state: &Arc<State>,
    sp: &Arc<SpriteServices>,
    svc: &str,
    q: &Query,
    body: &mut dyn RequestBody,
) -> Reply {
    if !def::valid_name(svc) {
        return invalid_request(&format!(
            "invalid service name {svc:?}: 1-63 letters, digits, '.', '_' or '-', starting \
             with a letter or digit"
        ))
        .into();
    }
    let follow = match duration(q, "duration", DEFAULT_FOLLOW) {
        Ok(d) => d,
        Err(r) => return r.into(),
    };
    let bytes = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    let restart = {
        let mut svcs = lock(&sp.svcs);
        let others: Vec<&ServiceDef> = svcs
            .values()
            .map(|s| &s.def)
            .filter(|d| d.name != svc)
            .collect();
        let new = match def::parse_put(svc, &bytes, &others) {
            Ok(d) => d,
            Err(m) => return invalid_request(&m).into(),
        };
        if new.http_port.is_some() {
            if let Some(o) = others.iter().find(|o| o.http_port.is_some()) {
                return conflict(&format!(
                    "another service already has an HTTP port configured ({:?})",
                    o.name
                ))
                .into();
            }
        }
        let restart = match svcs.get_mut(svc) {
            Some(s) => {
                s.def = new;
                s.want_running = true;
                s.active
            }
            None => {
                if svcs.len() >= MAX_SERVICES {
                    return invalid_request(&format!(
                        "a sprite has at most {MAX_SERVICES} services"
                    ))
                    .into();
                }
                svcs.insert(svc.to_owned(), Svc::new(new, true));
                false
            }
        };
        if let Err(e) = sp.save(&svcs) {
            return internal(format!("saving services: {e}")).into();
        }
        restart
    };
    stream(ServiceStream {
        sp: sp.clone(),
        svc: svc.to_owned(),
        plan: Plan::Start {
            env: services::sprite_env(state, &sp.name),
            stop_first: restart,
            follow,
        },
    })
}

fn start(
    state: &Arc<State>,
    sp: &Arc<SpriteServices>,
    svc: &str,
    q: &Query,
    restart: bool,
) -> Reply {
    let follow = match duration(q, "duration", DEFAULT_FOLLOW) {
        Ok(d) => d,
        Err(r) => return r.into(),
    };
    match want(sp, svc, true) {
        Ok(true) => {}
        Ok(false) => return service_not_found(svc).into(),
        Err(r) => return r.into(),
    }
    let stop_first = restart && lock(&sp.svcs).get(svc).is_some_and(|s| s.active);
    stream(ServiceStream {
        sp: sp.clone(),
        svc: svc.to_owned(),
        plan: Plan::Start {
            env: services::sprite_env(state, &sp.name),
            stop_first,
            follow,
        },
    })
}

fn stop(sp: &Arc<SpriteServices>, svc: &str, q: &Query) -> Reply {
    let grace = match duration(q, "timeout", DEFAULT_GRACE) {
        Ok(d) => d,
        Err(r) => return r.into(),
    };
    match lock(&sp.svcs).get(svc) {
        None => return service_not_found(svc).into(),
        Some(s) if !s.active => return conflict(&format!("service {svc:?} is not running")).into(),
        Some(_) => {}
    }
    if let Err(r) = want(sp, svc, false) {
        return r.into();
    }
    stream(ServiceStream {
        sp: sp.clone(),
        svc: svc.to_owned(),
        plan: Plan::Stop { grace },
    })
}

fn delete(sp: &Arc<SpriteServices>, svc: &str, q: &Query) -> Response {
    let grace = match duration(q, "timeout", DEFAULT_GRACE) {
        Ok(d) => d,
        Err(r) => return r,
    };
    {
        let svcs = lock(&sp.svcs);
        if !svcs.contains_key(svc) {
            return service_not_found(svc);
        }
        if let Some(o) = svcs.values().find(|o| o.def.needs.iter().any(|n| n == svc)) {
            return conflict(&format!(
                "service {:?} needs {svc:?}; delete or update it first",
                o.def.name
            ));
        }
    }
    // A running service is stopped first (TERM, KILL after `timeout`); its log stays.
    let _ = run::stop(sp, svc, grace);
    let mut svcs = lock(&sp.svcs);
    if let Some(s) = svcs.remove(svc) {
        // Whatever its supervisor still does, it is no longer current.
        if let Some((_, g)) = &s.group {
            g.signal(libc::SIGKILL);
        }
    }
    sp.cv.notify_all();
    match sp.save(&svcs) {
        Ok(()) => Response::empty(204),
        Err(e) => internal(format!("saving services: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct SignalBody {
    name: Option<String>,
    signal: Option<String>,
}

fn signal(sp: &SpriteServices, body: &mut dyn RequestBody) -> Response {
    let bytes = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b: SignalBody = match super::sprites::parse_body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = b.name.filter(|n| !n.is_empty()) else {
        return invalid_request("name is required (the service to signal)");
    };
    let Some(sig_name) = b.signal.filter(|s| !s.is_empty()) else {
        return invalid_request("signal is required (e.g. TERM, HUP, SIGUSR1)");
    };
    let Some(sig) = crate::signal::parse(&sig_name) else {
        return invalid_request(&format!("unknown signal {sig_name:?}"));
    };
    match run::signal(sp, &name, sig) {
        Ok(()) => Response::empty(204),
        Err(SignalError::NotFound) => service_not_found(&name),
        Err(SignalError::NotRunning) => conflict(&format!("service {name:?} is not running")),
    }
}

fn logs(sp: &Arc<SpriteServices>, svc: &str, q: &Query) -> Reply {
    let follow = match duration(q, "duration", Duration::ZERO) {
        Ok(d) => d,
        Err(r) => return r.into(),
    };
    let lines = match q.get("lines") {
        None | Some("") => DEFAULT_LINES,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n.min(RING_LINES),
            Err(_) => {
                return invalid_request(&format!("lines {v:?} is not a non-negative integer"))
                    .into()
            }
        },
    };
    if !lock(&sp.svcs).contains_key(svc) {
        return service_not_found(svc).into();
    }
    stream(ServiceStream {
        sp: sp.clone(),
        svc: svc.to_owned(),
        plan: Plan::Logs { lines, follow },
    })
}

/// What a stream does before it ends with `complete`.
enum Plan {
    /// (Stop, then) start, then follow the output for `follow`.
    Start {
        env: Vec<(String, String)>,
        stop_first: bool,
        follow: Duration,
    },
    /// Stop with `grace`.
    Stop { grace: Duration },
    /// Replay the last `lines`, then follow for `follow`.
    Logs { lines: usize, follow: Duration },
}

/// An NDJSON response: the service's events while its plan runs.
struct ServiceStream {
    sp: Arc<SpriteServices>,
    svc: String,
    plan: Plan,
}

fn stream(s: ServiceStream) -> Reply {
    Reply::Duplex(Box::new(s))
}

/// Writes NDJSON lines, one chunk each; after a write error it only keeps count.
struct Out<'a> {
    w: ChunkedWriter<&'a TcpStream>,
    broken: bool,
}

impl Out<'_> {
    fn send(&mut self, ev: &Event) {
        if !self.broken {
            self.broken = self.w.write_all(&ev.line()).is_err();
        }
    }
}

impl super::DuplexResponse for ServiceStream {
    fn run(self: Box<Self>, stream: &TcpStream, _body: &mut dyn RequestBody) {
        let mut s = stream;
        let head = response_head(
            200,
            &[("Content-Type", "application/x-ndjson".into())],
            None,
            false,
        );
        let broken = s.write_all(head.as_bytes()).is_err();
        let mut out = Out {
            w: ChunkedWriter::new(stream),
            broken,
        };
        let Some(logs) = lock(&self.sp.svcs).get(&self.svc).map(|s| s.logs.clone()) else {
            out.send(&Event::with_data("error", "service was deleted".into()));
            out.send(&Event::complete(&self.sp.log_path(&self.svc)));
            let _ = out.w.finish();
            return;
        };
        match self.plan {
            Plan::Start {
                env,
                stop_first,
                follow,
            } => {
                let rx = logs.subscribe();
                if stop_first {
                    let _ = run::stop(&self.sp, &self.svc, DEFAULT_GRACE);
                }
                let failed = run::launch(&self.sp, &self.svc, env).is_err();
                // What happened so far (stopping, exit, stopped, started or error).
                let deadline = Instant::now() + follow;
                let mut ended = failed;
                while let Ok(ev) = rx.try_recv() {
                    out.send(&ev);
                }
                while !ended && !out.broken {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(ev) => out.send(&ev),
                        Err(_) => ended = true,
                    }
                }
            }
            Plan::Stop { grace } => {
                let rx = logs.subscribe();
                let _ = run::stop(&self.sp, &self.svc, grace);
                // In order: the stop returns only after the supervisor reported `exit`.
                while let Ok(ev) = rx.try_recv() {
                    out.send(&ev);
                }
            }
            Plan::Logs { lines, follow } => {
                let (tail, rx) = logs.tail_and_follow(lines);
                for ev in &tail {
                    out.send(ev);
                }
                let deadline = Instant::now() + follow;
                while !out.broken {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(ev) => out.send(&ev),
                        Err(_) => break,
                    }
                }
            }
        }
        out.send(&Event::complete(&self.sp.log_path(&self.svc)));
        if !out.broken {
            let _ = out.w.finish();
        }
    }
}
