//! Port events (PROTOCOL.md §6.4, §10 "Port watch"): which TCP sockets a sprite's
//! processes listen on, as `port_opened` / `port_closed` messages.
//!
//! Linux has no notification for `listen(2)` short of eBPF, so sprites are **scanned**:
//! each watched sprite has one scanner thread ([`scan`]), shared by all its subscribers,
//! that lists the sprite's listening sockets every [`scan::INTERVAL`] (250 ms; socket
//! diagnostics, see [`diag`]; holders are found in `/proc`, see [`procfs`]) and reports
//! what changed. It runs only while someone subscribes, and every scan does bounded work:
//! at most [`Ports::set_max_per_sprite`] listeners (default [`DEFAULT_MAX_PER_SPRITE`])
//! and a fixed budget for finding which process holds a new socket. Where the sockets are seen is the runtime's to say
//! ([`SpriteRuntime::port_scope`](crate::runtime::SpriteRuntime)): a sandboxed sprite has
//! a network of its own, so every socket in it is the sprite's; a host-runtime sprite
//! shares the server's, so only sockets its exec sessions' process trees hold are.
//!
//! # Using it from a session
//!
//! ```ignore
//! let sub = state.ports.subscribe(
//!     &sprite,
//!     &state.store.sprite_dir(&sprite),
//!     Scope::Session(session.host_pid), // or Scope::Sprite for every listener of the sprite
//!     Box::new(move |update: &Update<'_>| {
//!         // Runs on the scanner thread with the sprite's watcher locked: only queue the
//!         // text and wake the socket's writer; never block, never touch `Ports`.
//!         let _ = tx.try_send(update.to_json());
//!         wake.notify();
//!     }),
//! )?;
//! // ... the session runs; dropping `sub` unsubscribes (the last one stops the scanner).
//! ```
//!
//! A [`Scope::Session`] subscriber first gets `port_opened` for the session's listeners
//! that already exist, then every change to them. A [`Scope::Sprite`] subscriber first
//! gets [`Update::List`] (the `port_list` snapshot), then every change in the sprite. The
//! first update comes at once when the sprite is already being scanned, else from the
//! first scan, which starts at once.

mod diag;
mod procfs;
mod scan;
mod watch;

pub use scan::OnUpdate;
pub use watch::PortWatch;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::exec::Sessions;
use crate::lock;
use crate::runtime::SpriteRuntime;

use scan::Watcher;

/// Default cap on the listeners reported per sprite. A sprite rarely listens on more than
/// a handful of ports; a hostile one cannot make a scan read more than this many.
pub const DEFAULT_MAX_PER_SPRITE: usize = 256;

/// Which listeners a subscriber hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every listener of the sprite (the port watch).
    Sprite,
    /// Only those held by the process tree of the exec session whose leader has this pid as
    /// the server sees it (`Session::host_pid`; the session id is the pid in the sprite).
    Session(u32),
}

/// Opened or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortEventKind {
    /// A process started listening.
    Opened,
    /// The socket stopped listening.
    Closed,
}

/// A listener that opened or closed (§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortEvent {
    /// Opened or closed.
    pub kind: PortEventKind,
    /// The port.
    pub port: u16,
    /// The address it listens on (`0.0.0.0` and `::` for all).
    pub address: IpAddr,
    /// The holding process's pid as seen in the sprite (0 if none was found).
    pub pid: u32,
}

#[derive(Serialize)]
struct EventOut {
    #[serde(rename = "type")]
    kind: &'static str,
    port: u16,
    address: String,
    pid: u32,
}

#[derive(Serialize)]
struct ListOut {
    #[serde(rename = "type")]
    kind: &'static str,
    ports: Vec<EventOut>,
}

impl PortEvent {
    fn out(&self) -> EventOut {
        EventOut {
            kind: match self.kind {
                PortEventKind::Opened => "port_opened",
                PortEventKind::Closed => "port_closed",
            },
            port: self.port,
            address: self.address.to_string(),
            pid: self.pid,
        }
    }

    /// The §6.4 text message: `{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":4130}`.
    pub fn to_json(self) -> String {
        serde_json::to_string(&self.out()).unwrap_or_default()
    }
}

/// What a subscriber is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update<'a> {
    /// The sprite's listeners when the subscription started ([`Scope::Sprite`] only, and
    /// always first).
    List(&'a [PortEvent]),
    /// A listener opened or closed.
    Event(&'a PortEvent),
}

impl Update<'_> {
    /// The text message: §10's `{"type":"port_list","ports":[…]}` (each entry a
    /// `port_opened` message) or an event's [`PortEvent::to_json`].
    pub fn to_json(self) -> String {
        match self {
            Update::Event(e) => e.to_json(),
            Update::List(l) => serde_json::to_string(&ListOut {
                kind: "port_list",
                ports: l.iter().map(PortEvent::out).collect(),
            })
            .unwrap_or_default(),
        }
    }
}

/// Every sprite's port watcher, created on the first subscription and stopped with the
/// last.
pub struct Ports {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn SpriteRuntime>,
    sessions: Arc<Sessions>,
    max: AtomicUsize,
    next_id: AtomicU64,
    watchers: Mutex<HashMap<String, Arc<Watcher>>>,
}

impl Ports {
    /// No watchers yet; `sessions` are the exec sessions (a host-runtime sprite's sockets
    /// are those its sessions' process trees hold).
    pub fn new(runtime: Arc<dyn SpriteRuntime>, sessions: Arc<Sessions>) -> Ports {
        Ports {
            inner: Arc::new(Inner {
                runtime,
                sessions,
                max: AtomicUsize::new(DEFAULT_MAX_PER_SPRITE),
                next_id: AtomicU64::new(1),
                watchers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets the cap on listeners reported per sprite, for watchers started from now on.
    pub fn set_max_per_sprite(&self, max: usize) {
        self.inner.max.store(max, Ordering::Relaxed);
    }

    /// Subscribes to the listeners of `sprite` (stored at `sprite_dir`) in `scope`;
    /// dropping the [`Subscription`] unsubscribes. `on_update` runs on the sprite's scanner
    /// thread (or, for the first update, on the caller's) while the sprite's watcher is
    /// locked: it must return quickly, and must not subscribe or drop a subscription.
    ///
    /// Fails only when the scanner thread cannot be started.
    pub fn subscribe(
        &self,
        sprite: &str,
        sprite_dir: &Path,
        scope: Scope,
        on_update: OnUpdate,
    ) -> io::Result<Subscription> {
        let mut watchers = lock(&self.inner.watchers);
        let watcher = match watchers.get(sprite) {
            Some(w) => w.clone(),
            None => {
                let w = Watcher::start(
                    sprite,
                    sprite_dir.to_owned(),
                    self.inner.runtime.clone(),
                    self.inner.sessions.clone(),
                    self.inner.max.load(Ordering::Relaxed),
                )?;
                watchers.insert(sprite.to_owned(), w.clone());
                w
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        watcher.add(id, scope, on_update);
        Ok(Subscription {
            inner: self.inner.clone(),
            sprite: sprite.to_owned(),
            watcher,
            id,
        })
    }

    /// How many sprites are being scanned now.
    #[cfg(test)]
    fn watched(&self) -> usize {
        lock(&self.inner.watchers).len()
    }
}

/// A subscription to a sprite's port events; dropping it unsubscribes.
pub struct Subscription {
    inner: Arc<Inner>,
    sprite: String,
    watcher: Arc<Watcher>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watchers = lock(&self.inner.watchers);
        if self.watcher.remove(self.id)
            && watchers
                .get(&self.sprite)
                .is_some_and(|w| Arc::ptr_eq(w, &self.watcher))
        {
            watchers.remove(&self.sprite);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = PortEvent {
            kind: PortEventKind::Opened,
            port: 3000,
            address: "0.0.0.0".parse().unwrap(),
            pid: 4130,
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":4130}"#
        );
        let c = PortEvent {
            kind: PortEventKind::Closed,
            address: "::".parse().unwrap(),
            ..e
        };
        assert_eq!(
            Update::Event(&c).to_json(),
            r#"{"type":"port_closed","port":3000,"address":"::","pid":4130}"#
        );
        assert_eq!(
            Update::List(&[e, c]).to_json(),
            r#"{"type":"port_list","ports":[{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":4130},{"type":"port_closed","port":3000,"address":"::","pid":4130}]}"#
        );
        assert_eq!(
            Update::List(&[]).to_json(),
            r#"{"type":"port_list","ports":[]}"#
        );
    }

    #[test]
    fn one_scanner_per_sprite_while_subscribed() {
        let rt: Arc<dyn SpriteRuntime> = Arc::from(
            crate::runtime::resolve(
                crate::runtime::Runtime::Host,
                &std::env::temp_dir(),
                Path::new("/"),
                Default::default(),
            )
            .unwrap(),
        );
        let ports = Ports::new(rt, Arc::new(Sessions::default()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let cb = |tx: crossbeam_channel::Sender<String>| -> OnUpdate {
            Box::new(move |u: &Update<'_>| {
                let _ = tx.send(u.to_json());
            })
        };
        let dir = Path::new("/nonexistent");
        let a = ports
            .subscribe("a", dir, Scope::Sprite, cb(tx.clone()))
            .unwrap();
        let b = ports
            .subscribe("a", dir, Scope::Sprite, cb(tx.clone()))
            .unwrap();
        let c = ports
            .subscribe("c", dir, Scope::Session(1), cb(tx))
            .unwrap();
        assert_eq!(ports.watched(), 2);
        // No exec session: no process, no port; each sprite-wide subscriber gets its list.
        let timeout = std::time::Duration::from_secs(10);
        for _ in 0..2 {
            assert_eq!(
                rx.recv_timeout(timeout).unwrap(),
                r#"{"type":"port_list","ports":[]}"#
            );
        }
        drop(a);
        assert_eq!(ports.watched(), 2);
        drop(b);
        assert_eq!(ports.watched(), 1);
        drop(c);
        assert_eq!(ports.watched(), 0);
        // Every callback (and its sender) went with its subscription.
        assert!(rx.recv_timeout(timeout).is_err());
    }
}
