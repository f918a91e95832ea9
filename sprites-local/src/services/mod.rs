//! Services (PROTOCOL.md §11): long-running processes the server starts inside a sprite,
//! in `needs` order, supervises (restarting them after a crash, with backoff), stops
//! (TERM, then KILL after a grace period), signals, and brings back after a server restart.
//!
//! - [`def`]: definitions, validation, persistence (`services.json` in the sprite's
//!   directory on the host, with each service's desired state, so a stop is sticky).
//! - [`run`]: starting, supervising and stopping processes, and the log writer.
//! - [`logs`]: recent output in memory and the live event fan-out.
//!
//! Other parts of the server call the hooks at the bottom of this file: [`resume`] (start
//! what should run: after a restore, a sprite restart, a wake), [`stop_all`] (before a
//! restore or a sprite restart), [`remove_sprite`] (before a sprite's files go),
//! [`resume_all`] / [`shutdown`] (server start and stop) and [`running`] (what runs, for
//! the idle timer).

pub(crate) mod def;
pub(crate) mod logs;
pub(crate) mod run;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::lock;
use crate::runtime::{SignalGroup, SpriteRuntime};
use crate::state::State;
use def::{ServiceDef, Stored};
use logs::Logs;

/// Grace between TERM and KILL when a client gives no `timeout`, and for [`stop_all`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A service's status on the wire (`state.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not running, and not going to be restarted.
    Stopped,
    /// Being started.
    Starting,
    /// Its process runs.
    Running,
    /// Being stopped.
    Stopping,
    /// It crashed (or could not start); `next_restart_at` says when it is tried again.
    Failed,
}

/// One service's live state.
pub(crate) struct Svc {
    pub def: ServiceDef,
    /// What a client asked for last (persisted): start/create → true, stop → false.
    pub want_running: bool,
    pub status: Status,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    pub error: String,
    pub restart_count: u32,
    pub next_restart_at: Option<String>,
    /// The running process's group (None once it has exited).
    pub group: Option<(u32, Arc<dyn SignalGroup>)>,
    /// The running process, until its supervisor has reported its `exit`.
    pub live_pid: Option<u32>,
    /// Bumped by every start and stop: a supervisor acts only while its generation is
    /// current, so a stopped service's old supervisor can never restart it.
    pub gen: u64,
    /// A supervisor of the current generation exists (running, or waiting to restart).
    pub active: bool,
    pub logs: Arc<Logs>,
}

impl Svc {
    pub fn new(def: ServiceDef, want_running: bool) -> Svc {
        Svc {
            def,
            want_running,
            status: Status::Stopped,
            pid: None,
            started_at: None,
            error: String::new(),
            restart_count: 0,
            next_restart_at: None,
            group: None,
            live_pid: None,
            gen: 0,
            active: false,
            logs: Arc::new(Logs::default()),
        }
    }

    /// The wire form: the definition plus `state`.
    pub fn info(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct StateJson<'a> {
            name: &'a str,
            status: Status,
            #[serde(skip_serializing_if = "Option::is_none")]
            pid: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            started_at: Option<&'a str>,
            error: &'a str,
            restart_count: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_restart_at: Option<&'a str>,
        }
        let mut v = serde_json::to_value(&self.def).unwrap_or_default();
        let state = StateJson {
            name: &self.def.name,
            status: self.status,
            pid: self.pid,
            started_at: self.started_at.as_deref(),
            error: &self.error,
            restart_count: self.restart_count,
            next_restart_at: self.next_restart_at.as_deref(),
        };
        v["state"] = serde_json::to_value(state).unwrap_or_default();
        v
    }
}

/// One sprite's services.
pub(crate) struct SpriteServices {
    pub name: String,
    /// The sprite's directory on the host.
    pub dir: PathBuf,
    /// `/.sprite/logs/services` as the sprite's processes see it.
    pub log_dir: String,
    pub runtime: Arc<dyn SpriteRuntime>,
    pub shutting_down: Arc<AtomicBool>,
    pub svcs: Mutex<BTreeMap<String, Svc>>,
    /// Notified whenever a service's process starts or exits or its generation changes.
    pub cv: Condvar,
    /// The sprite was deleted: nothing may start any more.
    pub removed: AtomicBool,
}

impl SpriteServices {
    /// Persists every definition and desired state (call with the lock held, passing the
    /// map, so two writers cannot interleave).
    pub fn save(&self, svcs: &BTreeMap<String, Svc>) -> std::io::Result<()> {
        if self.removed.load(Ordering::SeqCst) {
            // Its directory is gone, or already another sprite's of the same name.
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("sprite {:?} was deleted", self.name),
            ));
        }
        def::save(
            &self.dir,
            svcs.values()
                .map(|s| Stored {
                    def: s.def.clone(),
                    want_running: s.want_running,
                })
                .collect(),
        )
    }

    /// Where service `name`'s log is, as the sprite's processes see it.
    pub fn log_path(&self, name: &str) -> String {
        format!("{}/{name}.log", self.log_dir)
    }
}

/// Every sprite's services (in [`State`]).
pub(crate) struct Services {
    runtime: Arc<dyn SpriteRuntime>,
    sprites: Mutex<HashMap<String, Arc<SpriteServices>>>,
    shutting_down: Arc<AtomicBool>,
}

impl Services {
    /// No sprite's services loaded yet.
    pub fn new(runtime: Arc<dyn SpriteRuntime>) -> Services {
        Services {
            runtime,
            sprites: Mutex::new(HashMap::new()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sprite `name`'s services, loaded from its directory on first use. `None` when the
    /// sprite does not exist.
    pub fn sprite(&self, state: &State, name: &str) -> Option<Arc<SpriteServices>> {
        let mut map = lock(&self.sprites);
        if let Some(s) = map.get(name) {
            return Some(s.clone());
        }
        if !state.store.contains(name) {
            return None;
        }
        let dir = state.store.sprite_dir(name);
        let stored = def::load(&dir).unwrap_or_else(|e| {
            eprintln!(
                "sprites-local: {}: services.json unreadable: {e}",
                dir.display()
            );
            Vec::new()
        });
        let svcs = stored
            .into_iter()
            .map(|s| (s.def.name.clone(), Svc::new(s.def, s.want_running)))
            .collect();
        let log_dir = format!("{}/logs/services", self.runtime.dot_sprite(&dir));
        let sp = Arc::new(SpriteServices {
            name: name.to_owned(),
            dir,
            log_dir,
            runtime: self.runtime.clone(),
            shutting_down: self.shutting_down.clone(),
            svcs: Mutex::new(svcs),
            cv: Condvar::new(),
            removed: AtomicBool::new(false),
        });
        map.insert(name.to_owned(), sp.clone());
        Some(sp)
    }
}

/// The environment a sprite's services start with (the sprite's own environment).
pub(crate) fn sprite_env(state: &State, sprite: &str) -> Vec<(String, String)> {
    state
        .store
        .get(sprite)
        .map(|r| r.environment.into_iter().collect())
        .unwrap_or_default()
}

// ---- Hooks for the rest of the server ----

/// Starts every service of `sprite` that should run and does not, in `needs` order (each
/// one's process is started before the services that need it). Call after a checkpoint
/// restore, a sprite restart or a wake; the server calls it at startup ([`resume_all`]).
/// Returns how many services were started.
pub(crate) fn resume(state: &State, sprite: &str) -> usize {
    let Some(sp) = state.services.sprite(state, sprite) else {
        return 0;
    };
    let names: Vec<String> = {
        let svcs = lock(&sp.svcs);
        let defs: Vec<&ServiceDef> = svcs.values().map(|s| &s.def).collect();
        def::needs_order(&defs)
            .into_iter()
            .filter(|d| svcs[&d.name].want_running && !svcs[&d.name].active)
            .map(|d| d.name.clone())
            .collect()
    };
    let env = sprite_env(state, sprite);
    let mut started = 0;
    for name in names {
        if run::launch(&sp, &name, env.clone()).is_ok() {
            started += 1;
        }
    }
    started
}

/// Stops every running service of `sprite` — TERM to all at once, KILL to those still
/// running after [`DEFAULT_GRACE`] — and cancels pending restarts, *without* changing
/// what should run: [`resume`] starts them again. Call before a checkpoint restore or a
/// sprite restart. Returns when every process has exited (or within the grace plus 5 s).
// Called by checkpoint restore and sprite restart (other branches of issue 9).
pub(crate) fn stop_all(state: &State, sprite: &str) {
    if let Some(sp) = state.services.sprite(state, sprite) {
        run::stop_all(&sp, DEFAULT_GRACE);
    }
}

/// Forgets `sprite`'s services and KILLs their processes (their definitions go with the
/// sprite's directory). Call before a sprite's files are removed.
pub(crate) fn remove_sprite(state: &State, sprite: &str) {
    let sp = lock(&state.services.sprites).remove(sprite);
    if let Some(sp) = sp {
        sp.removed.store(true, Ordering::SeqCst);
        run::kill_all(&sp);
    }
}

/// At server start: [`resume`] every sprite that has services which should run.
pub(crate) fn resume_all(state: &State) {
    for rec in state.store.list() {
        let dir = state.store.sprite_dir(&rec.name);
        let wanted = def::load(&dir).is_ok_and(|s| s.iter().any(|s| s.want_running));
        if wanted {
            resume(state, &rec.name);
        }
    }
}

/// At server shutdown: no more restarts; every service process is KILLed. Desired states
/// are kept, so the next server start brings the services back.
pub(crate) fn shutdown(state: &State) {
    state.services.shutting_down.store(true, Ordering::SeqCst);
    let all: Vec<_> = lock(&state.services.sprites).values().cloned().collect();
    for sp in all {
        run::kill_all(&sp);
    }
}

/// The services of `sprite` whose process runs now: `(name, pid, http_port)`. For the
/// idle timer: a service counts as activity only while it serves traffic, i.e. while a
/// TCP connection to one of its listening ports is open (docs/PROTOCOL.md §11.7).
// For the lifecycle's idle timer (another branch).
#[allow(dead_code)]
pub(crate) fn running(state: &State, sprite: &str) -> Vec<(String, u32, Option<u16>)> {
    let Some(sp) = lock(&state.services.sprites).get(sprite).cloned() else {
        return Vec::new();
    };
    let svcs = lock(&sp.svcs);
    svcs.values()
        .filter_map(|s| Some((s.def.name.clone(), s.pid?, s.def.http_port)))
        .collect()
}
