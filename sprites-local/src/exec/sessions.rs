//! The registry of exec sessions: which processes run for which sprite, plus a short
//! memory of recently exited ones (so a kill can answer 410 Gone instead of 404).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::hub::Hub;
use crate::lock;
use crate::runtime::SignalGroup;

/// How many exited session ids to remember per server.
const EXITED_MEMORY: usize = 1000;

/// One running exec. The id is the PID of the process as its sprite sees it; the process
/// leads its own process group.
pub struct Session {
    /// PID in the sprite = process-group id = session id. Unique within its sprite only.
    pub pid: u32,
    /// PID on the server's host, for what reads the host's `/proc` (the port scanner).
    pub host_pid: u32,
    /// Owning sprite.
    pub sprite: String,
    /// The command line, for display.
    pub command: String,
    /// Working directory, for display.
    pub workdir: String,
    /// Start time.
    pub created: SystemTime,
    /// Runs on a pseudo-terminal.
    pub tty: bool,
    /// A detachable session's output hub, which attaches join. Weak: the hub's own threads
    /// keep it alive until the process is done, and then attaching has nothing to join.
    hub: OnceLock<Weak<Hub>>,
    /// Delivers signals to the exec's process group (on the host or inside a sprite).
    group: Arc<dyn SignalGroup>,
    /// Guards against signalling a recycled PID: set once the leader has exited, under the
    /// same lock `signal` takes (the leader is then a zombie, so its PID is still ours).
    exited: Mutex<Exit>,
    exited_cv: Condvar,
    last_activity_ns: AtomicU64,
    bytes_out: AtomicU64,
}

/// How far the session's leader is in ending.
#[derive(Default)]
struct Exit {
    /// It exited (it may not be reaped yet).
    exited: bool,
    /// Its exit byte, once reaped.
    code: Option<u8>,
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Session {
    /// A new session record for process `pid` (`host_pid` on the host), whose group `group`
    /// signals.
    pub fn new(
        pid: u32,
        host_pid: u32,
        group: Arc<dyn SignalGroup>,
        sprite: String,
        command: String,
        workdir: String,
        tty: bool,
    ) -> Session {
        let created = SystemTime::now();
        Session {
            pid,
            host_pid,
            sprite,
            command,
            workdir,
            created,
            tty,
            hub: OnceLock::new(),
            group,
            exited: Mutex::new(Exit::default()),
            exited_cv: Condvar::new(),
            last_activity_ns: AtomicU64::new(unix_ns(created)),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Sends `sig` to the session's process group. False if the leader already exited.
    pub fn signal(&self, sig: i32) -> bool {
        let exit = lock(&self.exited);
        if exit.exited {
            return false;
        }
        self.group.signal(sig);
        true
    }

    /// Marks the leader as exited (call before reaping it) and wakes waiters.
    pub fn mark_exited(&self) {
        lock(&self.exited).exited = true;
        self.exited_cv.notify_all();
    }

    /// Records the reaped leader's exit byte and wakes waiters.
    pub fn set_exit_code(&self, code: u8) {
        let mut exit = lock(&self.exited);
        exit.exited = true;
        exit.code = Some(code);
        self.exited_cv.notify_all();
    }

    /// Blocks until the leader exits or `timeout` passes; true if it exited.
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let guard = lock(&self.exited);
        let (guard, _) = self
            .exited_cv
            .wait_timeout_while(guard, timeout, |exit| !exit.exited)
            .unwrap_or_else(|e| e.into_inner());
        guard.exited
    }

    /// Blocks until the leader is reaped or `timeout` passes; its exit byte if it was.
    pub fn wait_exit_code(&self, timeout: Duration) -> Option<u8> {
        let guard = lock(&self.exited);
        let (guard, _) = self
            .exited_cv
            .wait_timeout_while(guard, timeout, |exit| exit.code.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.code
    }

    /// Makes the session attachable through `hub` (once).
    pub fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    /// The session's hub, if it is detachable and its output is still being served.
    pub fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    /// Records `n` bytes of output just now.
    pub fn note_output(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.last_activity_ns
            .store(unix_ns(SystemTime::now()), Ordering::Relaxed);
    }

    /// Time of the last output (or the start).
    pub fn last_activity(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.last_activity_ns.load(Ordering::Relaxed))
    }

    /// Average output rate since the start.
    pub fn bytes_per_second(&self) -> f64 {
        let secs = self.created.elapsed().unwrap_or_default().as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.bytes_out.load(Ordering::Relaxed) as f64 / secs
        }
    }
}

/// Outcome of looking a session id up.
pub enum Lookup {
    /// Running.
    Active(Arc<Session>),
    /// Ran recently and has exited.
    Exited,
    /// Never seen (or forgotten).
    Unknown,
}

#[derive(Default)]
struct Inner {
    /// By sprite and id: ids are pids in the sprite, so two sprites can have the same one.
    active: HashMap<(String, u32), Arc<Session>>,
    /// When each sprite's most recent session ended.
    last_ended: HashMap<String, std::time::Instant>,
    exited_order: VecDeque<(String, u32)>,
    exited: HashSet<(String, u32)>,
}

/// What runs after a session ended, with its sprite's name.
pub type FinishHook = Box<dyn Fn(&str) + Send + Sync>;

/// All sessions of the server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
    /// Called with the sprite's name after a session of it ended (the lifecycle's clock).
    on_finish: OnceLock<FinishHook>,
}

impl Sessions {
    /// Registers a started session.
    pub fn insert(&self, s: Arc<Session>) {
        let mut inner = lock(&self.inner);
        // A recycled PID must not keep answering 410 for the new session.
        let key = (s.sprite.clone(), s.pid);
        inner.exited.remove(&key);
        inner.active.insert(key, s);
    }

    /// Moves a session whose leader exited to the exited memory.
    pub fn finish(&self, s: &Session) {
        let mut inner = lock(&self.inner);
        let key = (s.sprite.clone(), s.pid);
        if inner
            .active
            .get(&key)
            .is_some_and(|a| std::ptr::eq(&**a, s))
        {
            inner.active.remove(&key);
        }
        inner
            .last_ended
            .insert(s.sprite.clone(), std::time::Instant::now());
        if inner.exited.insert(key.clone()) {
            inner.exited_order.push_back(key);
        }
        while inner.exited_order.len() > EXITED_MEMORY {
            if let Some(old) = inner.exited_order.pop_front() {
                inner.exited.remove(&old);
            }
        }
        drop(inner);
        if let Some(hook) = self.on_finish.get() {
            hook(&s.sprite);
        }
    }

    /// Sets what runs after a session ended, with its sprite's name (once).
    pub fn on_finish(&self, hook: FinishHook) {
        let _ = self.on_finish.set(hook);
    }

    /// For the lifecycle: whether `sprite` has a running session, and when its last
    /// session ended.
    pub fn activity(&self, sprite: &str) -> (bool, Option<std::time::Instant>) {
        let inner = lock(&self.inner);
        (
            inner.active.values().any(|s| s.sprite == sprite),
            inner.last_ended.get(sprite).copied(),
        )
    }

    /// Finds session `id` of sprite `sprite`.
    pub fn lookup(&self, sprite: &str, id: u32) -> Lookup {
        let inner = lock(&self.inner);
        let key = (sprite.to_owned(), id);
        match inner.active.get(&key) {
            Some(s) => Lookup::Active(s.clone()),
            None if inner.exited.contains(&key) => Lookup::Exited,
            None => Lookup::Unknown,
        }
    }

    /// Running sessions of `sprite`, oldest first.
    pub fn list(&self, sprite: &str) -> Vec<Arc<Session>> {
        let inner = lock(&self.inner);
        let mut v: Vec<_> = inner
            .active
            .values()
            .filter(|s| s.sprite == sprite)
            .cloned()
            .collect();
        v.sort_by_key(|s| (s.created, s.pid));
        v
    }

    /// Forgets a deleted sprite's activity, so a new sprite of the same name starts cold.
    pub fn forget_sprite(&self, sprite: &str) {
        lock(&self.inner).last_ended.remove(sprite);
    }

    /// Signals every running session of `sprite`.
    pub fn signal_sprite(&self, sprite: &str, sig: i32) {
        for s in self.list(sprite) {
            s.signal(sig);
        }
    }

    /// Signals every running session of every sprite.
    pub fn signal_all(&self, sig: i32) {
        let all: Vec<_> = lock(&self.inner).active.values().cloned().collect();
        for s in all {
            s.signal(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process group that is never there to signal: the registry's bookkeeping is what
    /// these tests look at.
    struct NoGroup;

    impl SignalGroup for NoGroup {
        fn signal(&self, _sig: i32) {}
    }

    fn session(sprite: &str, pid: u32) -> Arc<Session> {
        Arc::new(Session::new(
            pid,
            pid + 100_000,
            Arc::new(NoGroup),
            sprite.to_owned(),
            "sleep 1".to_owned(),
            "/".to_owned(),
            false,
        ))
    }

    fn exited(sessions: &Sessions, sprite: &str, pid: u32) -> bool {
        matches!(sessions.lookup(sprite, pid), Lookup::Exited)
    }

    #[test]
    fn the_same_id_in_two_sprites_is_two_sessions() {
        let sessions = Sessions::default();
        let (one, two) = (session("one", 7), session("two", 7));
        sessions.insert(one.clone());
        sessions.insert(two.clone());
        assert!(matches!(sessions.lookup("one", 7), Lookup::Active(s) if Arc::ptr_eq(&s, &one)));
        assert!(matches!(sessions.lookup("two", 7), Lookup::Active(s) if Arc::ptr_eq(&s, &two)));
        sessions.finish(&two);
        assert!(exited(&sessions, "two", 7));
        assert!(matches!(sessions.lookup("one", 7), Lookup::Active(_)));
        assert!(matches!(sessions.lookup("three", 7), Lookup::Unknown));
        // A recycled id is running again, not gone.
        sessions.insert(session("two", 7));
        assert!(matches!(sessions.lookup("two", 7), Lookup::Active(_)));
    }

    #[test]
    fn exactly_the_last_thousand_exited_ids_are_remembered() {
        let sessions = Sessions::default();
        for pid in 1..=EXITED_MEMORY as u32 {
            let s = session("box", pid);
            sessions.insert(s.clone());
            sessions.finish(&s);
        }
        assert!(
            exited(&sessions, "box", 1),
            "the 1000th exit forgot the first"
        );
        let s = session("box", 5000);
        sessions.insert(s.clone());
        sessions.finish(&s);
        assert!(!exited(&sessions, "box", 1), "1001 exits remembered");
        assert!(exited(&sessions, "box", 2));
        assert!(exited(&sessions, "box", 5000));
        // The bound holds as exits go on (a trim each time, not once).
        for pid in 6000..6010 {
            let s = session("box", pid);
            sessions.insert(s.clone());
            sessions.finish(&s);
        }
        assert!(!exited(&sessions, "box", 11));
        assert!(exited(&sessions, "box", 12));
    }
}
