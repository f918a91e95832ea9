//! Lifecycle as the platform shows it (PROTOCOL.md §14, docs/PROTOCOL.md §14): every
//! sprite is `cold` (nothing runs), `running` (up and in use) or `warm` (up and idle).
//!
//! - A new sprite boots at create ([`Lifecycle::created`]: its runtime brings it up — the
//!   sandbox starts its agent — on a thread of its own) and reports `running` when that is
//!   done, without any command.
//! - **Activity** keeps it `running`: a request to any path under `/v1/sprites/{name}/`
//!   (exec, attach, session list or kill, filesystem, port watch, …; not `check`, which
//!   only looks, and not `restart`, which has its own effect), a running exec session
//!   (detachable ones included), an open connection to its URL ([`Activity`]). A
//!   background process alone is not activity, nor is a service that serves no traffic.
//! - After [`LifecycleOptions::warm_after`] without activity it is `warm`; after
//!   [`LifecycleOptions::cold_after`] without activity it is halted (every process inside
//!   ends, files stay) and `cold`. Activity on a cold sprite boots it again first ("wake").
//! - [`Lifecycle::restart`]: processes and sessions end (`cold`), then it boots again.
//! - Services (`crate::services`) are stopped when a sprite halts and resumed when it
//!   wakes; a service is activity only while a connection to the sprite's URL is open.
//!
//! Every status change is an [`Event`] for the watchers of `GET /v1/sprites` in NDJSON
//! ([`watch`]): each watcher has a bounded queue, and one that falls behind by
//! [`WATCH_QUEUE`] events is cut off (its stream ends) instead of growing memory.
//!
//! One clock thread ([`Lifecycle::start_clock`]) sleeps until the next deadline (warm or
//! cold) of any sprite, or until something changes; it never polls.

pub(crate) mod watch;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::lock;
use crate::state::State;

/// Default [`LifecycleOptions::warm_after`]: the platform's ~30 s (§14).
pub const DEFAULT_WARM_AFTER: Duration = Duration::from_secs(30);
/// Default [`LifecycleOptions::cold_after`]. The platform documents no figure ("later");
/// ten minutes keeps an idle sprite's processes around for a coffee break.
pub const DEFAULT_COLD_AFTER: Duration = Duration::from_secs(600);
/// Default [`LifecycleOptions::heartbeat`] of the NDJSON watch (§5.5: every 15–30 s).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Events queued per watcher before it is cut off.
pub const WATCH_QUEUE: usize = 1024;
/// Longest a halt waits for the sprite's exec sessions to be reaped.
const HALT_WAIT: Duration = Duration::from_secs(5);
/// Longest the clock sleeps with nothing scheduled (a safety net; changes wake it).
const CLOCK_IDLE: Duration = Duration::from_secs(60);

/// The lifecycle's timings (server options, so tests can make them short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOptions {
    /// Idle time after which a `running` sprite is `warm`.
    pub warm_after: Duration,
    /// Idle time after which a sprite is halted and `cold` (at least `warm_after`).
    pub cold_after: Duration,
    /// How often a quiet NDJSON watch gets a heartbeat line.
    pub heartbeat: Duration,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        LifecycleOptions {
            warm_after: DEFAULT_WARM_AFTER,
            cold_after: DEFAULT_COLD_AFTER,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }
}

/// A sprite's status on the wire (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing runs; the next activity boots it.
    Cold,
    /// Up and idle.
    Warm,
    /// Up and in use.
    Running,
}

impl Status {
    /// `cold`, `warm` or `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Cold => "cold",
            Status::Warm => "warm",
            Status::Running => "running",
        }
    }
}

/// One status change of one sprite, as watchers get it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The sprite.
    pub name: String,
    /// `cold`, `warm`, `running`, or `deleted` (the sprite is gone).
    pub status: &'static str,
    /// From the sprite's record at the change.
    pub last_running_at: Option<String>,
    /// From the sprite's record at the change.
    pub last_warming_at: Option<String>,
    /// When the change happened (RFC 3339).
    pub timestamp: String,
}

/// What the lifecycle knows of one sprite.
struct Entry {
    /// Booted: its runtime brought it up and has not halted it since.
    up: bool,
    last_activity: Instant,
    /// Open connections to its URL.
    conns: usize,
    /// The status last announced.
    shown: Status,
    /// An idle halt is scheduled or running (the clock must not schedule another).
    halting: bool,
    /// Held while the sprite boots or halts, so the two never overlap.
    power: Arc<Mutex<()>>,
}

impl Entry {
    fn cold() -> Entry {
        Entry {
            up: false,
            last_activity: Instant::now(),
            conns: 0,
            shown: Status::Cold,
            halting: false,
            power: Arc::new(Mutex::new(())),
        }
    }
}

/// What an entry's status is now, and when it next changes by itself.
struct Eval {
    status: Status,
    deadline: Option<Instant>,
    /// Idle past `cold_after`: to be halted.
    halt: bool,
}

/// The lifecycle of every sprite of one server (see the module docs).
pub(crate) struct Lifecycle {
    opts: LifecycleOptions,
    entries: Mutex<HashMap<String, Entry>>,
    /// Bumped by every change that may move a deadline; the clock waits on it.
    generation: Mutex<u64>,
    changed: Condvar,
    stopping: AtomicBool,
    watchers: Mutex<Vec<Sender<Event>>>,
}

impl Lifecycle {
    /// A lifecycle with `opts`; `cold_after` is raised to `warm_after` if shorter.
    pub fn new(mut opts: LifecycleOptions) -> Lifecycle {
        opts.cold_after = opts.cold_after.max(opts.warm_after);
        Lifecycle {
            opts,
            entries: Mutex::new(HashMap::new()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// The timings in force.
    pub fn options(&self) -> LifecycleOptions {
        self.opts
    }

    /// Wires the lifecycle to the server: an ended exec session moves the clock, and the
    /// clock thread starts. It holds the state weakly, so it never keeps a server alive.
    pub fn start_clock(self: &Arc<Self>, state: &Arc<State>) -> io::Result<()> {
        let me = Arc::downgrade(self);
        state.sessions.on_finish(Box::new(move |_| {
            if let Some(lc) = me.upgrade() {
                lc.notify();
            }
        }));
        let weak: Weak<State> = Arc::downgrade(state);
        std::thread::Builder::new()
            .name("sprites-lifecycle".into())
            .spawn(move || clock(weak))?;
        Ok(())
    }

    /// Ends the clock and every watch stream (server shutdown).
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.watchers).clear();
        self.notify();
    }

    fn notify(&self) {
        *lock(&self.generation) += 1;
        self.changed.notify_all();
    }

    fn eval(&self, e: &Entry, state: &State, name: &str, now: Instant) -> Eval {
        if !e.up {
            return Eval {
                status: Status::Cold,
                deadline: None,
                halt: false,
            };
        }
        let (active, ended) = state.sessions.activity(name);
        if active || e.conns > 0 {
            // Their end moves the clock (session finish hook, `Activity` drop).
            return Eval {
                status: Status::Running,
                deadline: None,
                halt: false,
            };
        }
        let last = ended.map_or(e.last_activity, |t| t.max(e.last_activity));
        let idle = now.saturating_duration_since(last);
        if idle < self.opts.warm_after {
            Eval {
                status: Status::Running,
                deadline: Some(last + self.opts.warm_after),
                halt: false,
            }
        } else if idle < self.opts.cold_after {
            Eval {
                status: Status::Warm,
                deadline: Some(last + self.opts.cold_after),
                halt: false,
            }
        } else {
            Eval {
                status: Status::Warm,
                deadline: None,
                halt: !e.halting,
            }
        }
    }

    /// Announces `to` if it is not what was shown last (called with the entries locked,
    /// so one sprite's events go out in the order its changes happened). The times are
    /// recorded in the sprite's metadata first, so the event and a later GET agree.
    fn transition(&self, state: &State, name: &str, e: &mut Entry, to: Status) {
        if e.shown == to {
            return;
        }
        e.shown = to;
        let now = crate::time::now_rfc3339();
        // In memory only: this runs under the lifecycle's lock, which every request to every
        // sprite takes, so it must not wait for a disk (the times are written with the
        // sprite's next metadata change).
        let rec = match to {
            Status::Running => state
                .store
                .note_times(name, |r| r.last_running_at = Some(now.clone())),
            Status::Warm => state
                .store
                .note_times(name, |r| r.last_warming_at = Some(now.clone())),
            Status::Cold => state.store.get(name),
        };
        let Some(rec) = rec else {
            return; // deleted meanwhile: its `deleted` event says so
        };
        self.emit(Event {
            name: name.to_owned(),
            status: to.as_str(),
            last_running_at: rec.last_running_at,
            last_warming_at: rec.last_warming_at,
            timestamp: now,
        });
    }

    /// Queues `ev` for every watcher; one whose queue is full is cut off.
    fn emit(&self, ev: Event) {
        lock(&self.watchers).retain(|w| match w.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// A new watcher's queue (see [`watch`]).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = bounded(WATCH_QUEUE);
        if !self.stopping.load(Ordering::SeqCst) {
            lock(&self.watchers).push(tx);
        }
        rx
    }

    /// A new watcher's queue and the status now of at most `max` sprites whose names start
    /// with `prefix`, in name order: taken under the lock every change is announced under,
    /// so the queue has exactly the changes after the snapshot (none twice, none missed).
    pub fn subscribe_with_snapshot(
        &self,
        state: &State,
        prefix: &str,
        max: usize,
    ) -> (Receiver<Event>, Vec<Event>) {
        let mut entries = lock(&self.entries);
        let now = Instant::now();
        let snapshot = state
            .store
            .list()
            .into_iter()
            .filter(|r| r.name.starts_with(prefix))
            .take(max)
            .map(|r| {
                let status = match entries.get_mut(&r.name) {
                    Some(e) => {
                        let st = self.eval(e, state, &r.name, now).status;
                        self.transition(state, &r.name, e, st);
                        st
                    }
                    None => Status::Cold,
                };
                // Re-read: a transition just now may have stamped a time.
                let rec = state.store.get(&r.name).unwrap_or(r);
                Event {
                    name: rec.name,
                    status: status.as_str(),
                    last_running_at: rec.last_running_at,
                    last_warming_at: rec.last_warming_at,
                    timestamp: crate::time::now_rfc3339(),
                }
            })
            .collect();
        let rx = self.subscribe();
        drop(entries);
        (rx, snapshot)
    }

    /// The status of sprite `name` now (`cold` for one the lifecycle has not seen since
    /// the server started: its processes did not survive the restart). A change found
    /// here is announced at once, so a GET and the watch never disagree.
    pub fn status(&self, state: &State, name: &str) -> Status {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(name) else {
            return Status::Cold;
        };
        let ev = self.eval(e, state, name, Instant::now());
        self.transition(state, name, e, ev.status);
        ev.status
    }

    /// A sprite was just created: announce it (`cold`), then boot it on a thread of its
    /// own, so the create answers at once and the sprite reports `running` when up.
    pub fn created(self: &Arc<Self>, state: &Arc<State>, name: &str) {
        {
            let mut entries = lock(&self.entries);
            entries.insert(name.to_owned(), Entry::cold());
            if let Some(rec) = state.store.get(name) {
                self.emit(Event {
                    name: name.to_owned(),
                    status: Status::Cold.as_str(),
                    last_running_at: rec.last_running_at,
                    last_warming_at: rec.last_warming_at,
                    timestamp: crate::time::now_rfc3339(),
                });
            }
        }
        let (lc, st, n) = (self.clone(), state.clone(), name.to_owned());
        let spawned = std::thread::Builder::new()
            .name("sprites-boot".into())
            .spawn(move || {
                if let Err(e) = lc.wake(&st, &n) {
                    eprintln!("sprites-local: sprite {n}: boot failed: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("sprites-local: sprite {name}: no thread to boot it: {e}");
        }
    }

    /// Activity on sprite `name` (see the module docs): it is `running` now, and a cold
    /// one is booted first. Unknown sprites are ignored (their request answers 404).
    pub fn touch(&self, state: &State, name: &str) {
        if !state.store.contains(name) {
            return;
        }
        {
            let mut entries = lock(&self.entries);
            let e = entries.entry(name.to_owned()).or_insert_with(Entry::cold);
            if e.up {
                e.last_activity = Instant::now();
                self.transition(state, name, e, Status::Running);
                drop(entries);
                self.notify();
                return;
            }
        }
        if let Err(e) = self.wake(state, name) {
            // The request goes on and meets the same failure in its own terms.
            eprintln!("sprites-local: sprite {name}: waking it failed: {e}");
        }
    }

    /// Boots sprite `name` if it is not up, and marks it active.
    pub fn wake(&self, state: &State, name: &str) -> io::Result<()> {
        let power = {
            let mut entries = lock(&self.entries);
            let e = entries.entry(name.to_owned()).or_insert_with(Entry::cold);
            e.power.clone()
        };
        let _power = lock(&power);
        let was_up = lock(&self.entries).get(name).is_some_and(|e| e.up);
        if !was_up {
            if !state.store.contains(name) {
                lock(&self.entries).remove(name);
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such sprite"));
            }
            if let Err(e) = state.runtime.boot(&state.store.sprite_dir(name)) {
                if !state.store.contains(name) {
                    lock(&self.entries).remove(name); // deleted while it booted
                }
                return Err(e);
            }
        }
        {
            let mut entries = lock(&self.entries);
            if let Some(e) = entries.get_mut(name) {
                e.up = true;
                e.last_activity = Instant::now();
                self.transition(state, name, e, Status::Running);
            }
        }
        self.notify();
        if !was_up {
            // Services come back on the next wake (§14); `_power` is still held, so a halt
            // cannot interleave.
            crate::services::resume(state, name);
        }
        Ok(())
    }

    /// Takes sprite `name` down: its exec sessions are killed, its runtime halts it (every
    /// process inside ends; files stay), and it is `cold`. With `only_if_idle`, nothing
    /// happens unless it is still idle past `cold_after` (the clock's decision may be
    /// stale by the time it acts).
    pub fn halt(&self, state: &State, name: &str, only_if_idle: bool) {
        let Some(power) = lock(&self.entries).get(name).map(|e| e.power.clone()) else {
            return;
        };
        let _power = lock(&power);
        {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(name) else {
                return;
            };
            if only_if_idle {
                // Still idle past cold_after? (`halting` is ours: look past it.)
                e.halting = false;
                if !self.eval(e, state, name, Instant::now()).halt {
                    return;
                }
            }
            e.up = false;
            e.halting = true;
        }
        // Services first, gracefully (TERM, then KILL after their grace): they are not
        // forgotten, and come back on the next wake.
        crate::services::stop_all(state, name);
        state.sessions.signal_sprite(name, libc::SIGKILL);
        state.runtime.halt(&state.store.sprite_dir(name));
        let deadline = Instant::now() + HALT_WAIT;
        for s in state.sessions.list(name) {
            s.wait_exited(deadline.saturating_duration_since(Instant::now()));
        }
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(name) {
            e.halting = false;
            self.transition(state, name, e, Status::Cold);
        }
    }

    /// `POST …/restart`: halt, then boot again.
    pub fn restart(&self, state: &State, name: &str) -> io::Result<()> {
        lock(&self.entries)
            .entry(name.to_owned())
            .or_insert_with(Entry::cold);
        self.halt(state, name, false);
        self.wake(state, name)
    }

    /// At server start, after services were resumed: a sprite whose services run is up
    /// (`running`, then idle like any other), not `cold`.
    pub fn adopt_running_services(&self, state: &State) {
        for rec in state.store.list() {
            if crate::services::running(state, &rec.name).is_empty() {
                continue;
            }
            let mut entries = lock(&self.entries);
            let e = entries.entry(rec.name.clone()).or_insert_with(Entry::cold);
            e.up = true;
            e.last_activity = Instant::now();
            self.transition(state, &rec.name, e, Status::Running);
        }
        self.notify();
    }

    /// A deleted sprite: forgotten, and announced as `deleted`.
    pub fn deleted(&self, name: &str) {
        let mut entries = lock(&self.entries);
        entries.remove(name);
        self.emit(Event {
            name: name.to_owned(),
            status: "deleted",
            last_running_at: None,
            last_warming_at: None,
            timestamp: crate::time::now_rfc3339(),
        });
    }

    /// Marks an open connection to sprite `name`'s URL: it counts as activity until the
    /// returned guard is dropped.
    pub fn hold(self: &Arc<Self>, state: &State, name: &str) -> Activity {
        let mut entries = lock(&self.entries);
        let e = entries.entry(name.to_owned()).or_insert_with(Entry::cold);
        e.conns += 1;
        e.last_activity = Instant::now();
        if e.up {
            self.transition(state, name, e, Status::Running);
        }
        Activity {
            lifecycle: self.clone(),
            name: name.to_owned(),
        }
    }

    /// One pass of the clock: announces what changed, starts the halt of each sprite idle
    /// past `cold_after` (each on a thread of its own: a service slow to stop must not hold
    /// up every other sprite's clock), and returns the earliest next deadline.
    fn tick(&self, state: &Arc<State>) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut to_halt = Vec::new();
        {
            let mut entries = lock(&self.entries);
            for (name, e) in entries.iter_mut() {
                let ev = self.eval(e, state, name, now);
                if ev.halt {
                    e.halting = true;
                    to_halt.push(name.clone());
                    continue;
                }
                self.transition(state, name, e, ev.status);
                if let Some(d) = ev.deadline {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        for name in to_halt {
            let (st, n) = (state.clone(), name.clone());
            let spawned = std::thread::Builder::new()
                .name("sprites-halt".into())
                .spawn(move || st.lifecycle.halt(&st, &n, true));
            if let Err(e) = spawned {
                eprintln!("sprites-local: sprite {name}: no thread to halt it: {e}");
                if let Some(e) = lock(&self.entries).get_mut(&name) {
                    e.halting = false; // the next pass tries again
                }
            }
        }
        next
    }
}

/// An open connection to a sprite's URL (see [`Lifecycle::hold`]).
pub(crate) struct Activity {
    lifecycle: Arc<Lifecycle>,
    name: String,
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.lifecycle.entries).get_mut(&self.name) {
            e.conns = e.conns.saturating_sub(1);
            e.last_activity = Instant::now();
        }
        self.lifecycle.notify();
    }
}

/// The clock thread: ticks, then sleeps until the next deadline or a change.
fn clock(weak: Weak<State>) {
    loop {
        let Some(state) = weak.upgrade() else {
            return;
        };
        let lc = state.lifecycle.clone();
        if lc.stopping.load(Ordering::SeqCst) {
            return;
        }
        let seen = *lock(&lc.generation);
        let next = lc.tick(&state);
        drop(state);
        let wait = next
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(CLOCK_IDLE)
            .min(CLOCK_IDLE);
        let g = lock(&lc.generation);
        let _ = lc
            .changed
            .wait_timeout_while(g, wait, |g| *g == seen)
            .unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event {
            name: format!("s{n}"),
            status: "running",
            last_running_at: None,
            last_warming_at: None,
            timestamp: String::new(),
        }
    }

    #[test]
    fn a_watcher_that_falls_behind_is_cut_off_not_buffered() {
        let lc = Lifecycle::new(LifecycleOptions::default());
        let slow = lc.subscribe();
        let fast = lc.subscribe();
        for n in 0..WATCH_QUEUE {
            lc.emit(event(n));
            assert_eq!(fast.recv().unwrap().name, format!("s{n}"));
        }
        assert_eq!(lock(&lc.watchers).len(), 2, "a full queue is still served");
        lc.emit(event(WATCH_QUEUE));
        assert_eq!(lock(&lc.watchers).len(), 1, "one event past it: cut off");
        assert_eq!(fast.recv().unwrap().name, format!("s{WATCH_QUEUE}"));
        // The slow one gets what was queued, then the end.
        assert_eq!(slow.iter().count(), WATCH_QUEUE);
    }

    #[test]
    fn cold_after_is_never_shorter_than_warm_after() {
        let lc = Lifecycle::new(LifecycleOptions {
            warm_after: Duration::from_secs(5),
            cold_after: Duration::from_secs(1),
            heartbeat: DEFAULT_HEARTBEAT,
        });
        assert_eq!(lc.options().cold_after, Duration::from_secs(5));
    }

    #[test]
    fn shutdown_ends_every_watch() {
        let lc = Lifecycle::new(LifecycleOptions::default());
        let w = lc.subscribe();
        lc.shutdown();
        assert!(w.recv().is_err());
        assert!(lc.subscribe().recv().is_err(), "none after shutdown");
    }
}
