//! Control connections ([PROTOCOL.md §8](crate::protocol#8-control-connections)): a pool of
//! long-lived WebSockets per sprite that carry commands one at a time, so a command on a warm
//! connection costs one round trip (its request, stdin and EOF in one flight; its output, exit
//! and `op.complete` in one flight back) instead of a connection setup and an upgrade.
//!
//! The pool never makes a command wait for a connection: [`checkout`] hands out an idle one
//! if there is one, and otherwise the command runs on its own exec socket (as without control
//! connections) while a connection is dialled in the background for the next command. So a
//! cold client's first command costs what it always did, and the ones after it one round trip.
//! A server that answers the dial with 404 has no control connections: the pool remembers
//! that and every command uses its own socket.
//!
//! Filesystem calls use an idle connection too when there is one, and HTTP otherwise
//! (`fs/over_control.rs`); they never dial one.
//!
//! Idle connections are kept alive by a keeper thread per pool (a ping every keepalive
//! interval) and dropped when the server goes silent past the keepalive limit or closes them,
//! so a dead connection is replaced before a command is sent on it.

use crate::client::Client;
use crate::error::{ApiError, Error};
use crate::ws::{self, Incoming, Socket};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;
use tungstenite::{Bytes, Message};

/// Most connections per sprite (the official SDKs' cap). At the cap a command uses its own
/// socket rather than wait.
pub(crate) const MAX_PER_SPRITE: usize = 100;
/// When more than this many connections are open, idle ones are closed on release…
const SHRINK_ABOVE: usize = 20;
/// …down to this many.
const SHRINK_TO: usize = 10;
/// The envelope prefix of control messages (§8.2).
pub(crate) const PREFIX: &str = "control:";

// A pool's `support` starts at 0: unknown until a dial says.
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every sprite's pool, shared by all clones of a [`Client`].
#[derive(Default)]
pub(crate) struct Pools {
    by_sprite: Mutex<HashMap<String, Arc<Pool>>>,
}

impl Pools {
    fn get(&self, sprite: &str) -> Arc<Pool> {
        lock(&self.by_sprite)
            .entry(sprite.to_owned())
            .or_default()
            .clone()
    }
}

/// One sprite's connections.
#[derive(Default)]
pub(crate) struct Pool {
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// Open connections (idle, leased, or being dialled).
    open: AtomicUsize,
    /// Whether the server serves `/control` (UNKNOWN until a dial says).
    support: AtomicU8,
    /// The server answered an `fs.*` op as unknown or in a form we do not read: filesystem
    /// calls use HTTP from then on (commands still use the connections).
    fs_unsupported: AtomicBool,
    /// A background dial is under way.
    dialling: AtomicBool,
    /// The server answered a proxy op with something other than a proxy reply (or not in
    /// time): proxies use their own sockets (§8.4).
    no_proxy: AtomicBool,
    /// The server answered a proxy op with a proxy reply: it serves them, so a forwarded
    /// connection may send its first bytes before the reply (§8.4).
    proxy_served: AtomicBool,
    /// The keeper thread is running.
    keeping: AtomicBool,
    /// Dropped with the pool, which wakes the keeper at once to end.
    keeper_stop: Mutex<Option<crossbeam_channel::Sender<()>>>,
}

struct Idle {
    socket: Arc<Socket>,
    capabilities: Vec<String>,
    /// Last time anything arrived from the server.
    heard: Instant,
}

/// A connection checked out for one command.
pub(crate) struct Lease {
    pub(crate) socket: Arc<Socket>,
    pub(crate) capabilities: Vec<String>,
    pool: Arc<Pool>,
    client: Client,
    released: bool,
}

impl Lease {
    /// Back to the pool: the op ended cleanly (`op.complete` or `op.error` read, nothing of
    /// it left on the wire).
    pub(crate) fn release(mut self) {
        self.released = true;
        let pool = self.pool.clone();
        pool.put_back(
            Idle {
                socket: self.socket.clone(),
                capabilities: std::mem::take(&mut self.capabilities),
                heard: Instant::now(),
            },
            &self.client,
        );
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            // Not known to be clean: it may still carry the op's frames. Close it.
            self.socket.shutdown();
            self.pool.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Pool {
    fn put_back(self: &Arc<Pool>, idle: Idle, client: &Client) {
        let mut list = lock(&self.idle);
        list.push(idle);
        // Shrink a burst's leftovers (§8.6): oldest idle first.
        while self.open.load(Ordering::SeqCst) > SHRINK_ABOVE && list.len() > 1 {
            let old = list.remove(0);
            old.socket.close_now(1000);
            self.open.fetch_sub(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) <= SHRINK_TO {
                break;
            }
        }
        drop(list);
        self.keep(client);
    }

    /// Takes the most recently used idle connection that is still alive.
    fn take_idle(&self) -> Option<Idle> {
        loop {
            let mut idle = lock(&self.idle).pop()?;
            if alive(&mut idle) {
                return Some(idle);
            }
            idle.socket.shutdown();
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Starts the keeper thread unless it runs.
    fn keep(self: &Arc<Pool>, client: &Client) {
        if self.keeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = Arc::downgrade(self);
        let keepalive = client.inner.keepalive;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        *lock(&self.keeper_stop) = Some(stop_tx);
        let spawned = std::thread::Builder::new()
            .name("sprites-control-keeper".into())
            .spawn(move || keeper(pool, keepalive, stop_rx));
        if spawned.is_err() {
            self.keeping.store(false, Ordering::SeqCst);
        }
    }
}

/// Pings idle connections every keepalive interval and drops those the server closed or
/// left silent past the limit. Ends when the pool has no idle connection left (the next
/// release starts it again) or is gone.
fn keeper(
    pool: Weak<Pool>,
    keepalive: crate::exec::Keepalive,
    stop: crossbeam_channel::Receiver<()>,
) {
    loop {
        // A timer, not a poll: the wait ends early only when the pool is dropped.
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            stop.recv_timeout(keepalive.interval)
        {
            return;
        }
        let Some(pool) = pool.upgrade() else { return };
        let mut list = lock(&pool.idle);
        let before = list.len();
        list.retain_mut(|idle| {
            let ok = alive(idle)
                && idle.heard.elapsed() < keepalive.limit
                && idle.socket.send(Message::Ping(Bytes::new())).is_ok();
            if !ok {
                idle.socket.shutdown();
            }
            ok
        });
        let dropped = before - list.len();
        pool.open.fetch_sub(dropped, Ordering::SeqCst);
        if list.is_empty() {
            pool.keeping.store(false, Ordering::SeqCst);
            return;
        }
    }
}

/// Reads whatever an idle connection has buffered (pings, pongs) without blocking; false if
/// the server closed it, cut it, or sent something an idle connection should not carry.
fn alive(idle: &mut Idle) -> bool {
    loop {
        match idle.socket.read() {
            Ok(Incoming::Empty) => return true,
            Ok(Incoming::Message(Message::Ping(_) | Message::Pong(_))) => {
                idle.heard = Instant::now();
            }
            // Server keepalive envelopes and empty frames are harmless.
            Ok(Incoming::Message(Message::Text(t))) if t.as_str().starts_with(PREFIX) => {
                idle.heard = Instant::now();
            }
            Ok(Incoming::Message(Message::Binary(b))) if b.is_empty() => {
                idle.heard = Instant::now();
            }
            Ok(Incoming::Message(_)) | Err(_) => return false,
        }
    }
}

/// An idle control connection to `sprite`, if control connections are on, supported and one
/// is idle; otherwise `None`: use a direct socket, then call [`dial_for_next`].
pub(crate) fn checkout(client: &Client, sprite: &str) -> Option<Lease> {
    if !client.inner.control {
        return None;
    }
    let pool = client.inner.pools.get(sprite);
    if pool.support.load(Ordering::SeqCst) == UNSUPPORTED {
        return None;
    }
    if let Some(idle) = pool.take_idle() {
        return Some(Lease {
            socket: idle.socket,
            capabilities: idle.capabilities,
            pool,
            client: client.clone(),
            released: false,
        });
    }
    None
}

/// [`checkout`] for a proxy op: `None` also when the server is known not to serve proxies
/// over control connections.
pub(crate) fn checkout_for_proxy(client: &Client, sprite: &str) -> Option<Lease> {
    checkout_unless(client, sprite, |p| &p.no_proxy)
}

/// [`checkout`], unless the control connections are off or `known_unsupported` (one of the
/// sprite pool's flags) says its server does not serve that kind of op over them.
fn checkout_unless(
    client: &Client,
    sprite: &str,
    known_unsupported: fn(&Pool) -> &AtomicBool,
) -> Option<Lease> {
    if !client.inner.control || flag(client, sprite, known_unsupported) {
        return None;
    }
    checkout(client, sprite)
}

/// One of `sprite`'s pool flags.
fn flag(client: &Client, sprite: &str, which: fn(&Pool) -> &AtomicBool) -> bool {
    which(&client.inner.pools.get(sprite)).load(Ordering::SeqCst)
}

/// Raises one of `sprite`'s pool flags (they are never lowered).
fn raise(client: &Client, sprite: &str, which: fn(&Pool) -> &AtomicBool) {
    which(&client.inner.pools.get(sprite)).store(true, Ordering::SeqCst);
}

/// Remembers that the server answered a proxy op with a proxy reply.
pub(crate) fn proxy_served(client: &Client, sprite: &str) {
    raise(client, sprite, |p| &p.proxy_served);
}

/// [`checkout_for_proxy`], only once the server is known to serve proxies over control (a
/// proxy whose data goes out before its reply has no fallback).
pub(crate) fn checkout_for_pipelined_proxy(client: &Client, sprite: &str) -> Option<Lease> {
    if !flag(client, sprite, |p| &p.proxy_served) {
        return None;
    }
    checkout_for_proxy(client, sprite)
}

/// Remembers (for this `Client`) that the server does not serve proxies over control
/// connections: later proxies use their own sockets at once.
pub(crate) fn no_proxy_over_control(client: &Client, sprite: &str) {
    raise(client, sprite, |p| &p.no_proxy);
}

/// An idle control connection for a filesystem call ([`checkout`]), unless this sprite's
/// server has shown it does not serve `fs.*` ops over control ([`fs_unsupported`]).
pub(crate) fn checkout_fs(client: &Client, sprite: &str) -> Option<Lease> {
    checkout_unless(client, sprite, |p| &p.fs_unsupported)
}

/// Remembers that `sprite`'s server does not serve `fs.*` ops over control (as the pool
/// remembers a 404 on `/control`): later filesystem calls go straight to HTTP.
pub(crate) fn fs_unsupported(client: &Client, sprite: &str) {
    raise(client, sprite, |p| &p.fs_unsupported);
}

/// After a command ran on its own socket because no control connection was idle: dials one
/// in the background so the next command finds it. Called once that command's own
/// connection is up, so the dial never competes with it.
pub(crate) fn dial_for_next(client: &Client, sprite: &str) {
    if !client.inner.control {
        return;
    }
    let pool = client.inner.pools.get(sprite);
    if pool.support.load(Ordering::SeqCst) == UNSUPPORTED
        || !lock(&pool.idle).is_empty()
        || pool.dialling.swap(true, Ordering::SeqCst)
    {
        return;
    }
    let (client, sprite) = (client.clone(), sprite.to_owned());
    let spawned = std::thread::Builder::new()
        .name("sprites-control-dial".into())
        .spawn({
            let pool = pool.clone();
            move || {
                let _ = dial_into(&client, &sprite, &pool);
                pool.dialling.store(false, Ordering::SeqCst);
            }
        });
    if spawned.is_err() {
        pool.dialling.store(false, Ordering::SeqCst);
    }
}

/// Dials one connection and puts it in the pool as idle. `Ok(false)`: the server has no
/// control connections (404), or the pool is at its cap.
fn dial_into(client: &Client, sprite: &str, pool: &Arc<Pool>) -> crate::Result<bool> {
    if pool.open.fetch_add(1, Ordering::SeqCst) >= MAX_PER_SPRITE {
        pool.open.fetch_sub(1, Ordering::SeqCst);
        return Ok(false);
    }
    let path = format!("/v1/sprites/{}/control", crate::url::encode(sprite));
    match ws::dial(client, &path) {
        Ok(accepted) => {
            pool.support.store(SUPPORTED, Ordering::SeqCst);
            if let Some(version) = &accepted.version {
                client.inner.runtimes.record_version(sprite, version);
            }
            pool.put_back(
                Idle {
                    socket: Arc::new(accepted.socket),
                    capabilities: accepted.capabilities,
                    heard: Instant::now(),
                },
                client,
            );
            Ok(true)
        }
        Err(err) => {
            pool.open.fetch_sub(1, Ordering::SeqCst);
            // 404: no control connections here. An unknown sprite is 404 too; when the
            // server says that is what it is (§3.1 code `sprite_not_found`), the sprite may
            // yet be created, so nothing is remembered. Other failures say nothing about
            // support either.
            if matches!(&err, Error::Api(api)
                if api.status == 404 && api.code.as_deref() != Some("sprite_not_found"))
            {
                pool.support.store(UNSUPPORTED, Ordering::SeqCst);
                return Ok(false);
            }
            Err(err)
        }
    }
}

impl crate::Sprite {
    /// Warms this sprite's connections so that the next command and the next filesystem or
    /// management call do not pay for connection setup: opens a control connection
    /// ([`ClientBuilder::control_connections`](crate::ClientBuilder::control_connections))
    /// unless an idle one is pooled, and an HTTP connection (a `HEAD` request, which also
    /// checks that the sprite exists), both at once. Optional: without it the first command
    /// runs on its own connection and warms the pool for the next.
    ///
    /// A server without control connections is not an error: commands then use their own
    /// connections.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with status 404 when the sprite does not exist; a transport error when
    /// the server cannot be reached.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-connect", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # client.create_sprite("doc")?;
    /// let sprite = client.sprite("doc");
    /// sprite.connect()?;
    /// // Runs on the warm connection: one round trip.
    /// assert!(sprite.command("true").status()?.success());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn connect(&self) -> crate::Result<()> {
        let client = self.client();
        std::thread::scope(|scope| {
            let control = scope.spawn(|| warm(client, self.name()));
            let http = client
                .send(client.request("HEAD", &self.path("/exec")), None)
                .and_then(|response| client.drain(response));
            let control = control.join().unwrap_or(Ok(false));
            http?;
            control.map(|_| ())
        })
    }
}

/// Makes sure one warm connection to `sprite` is idle in the pool ([`Sprite::connect`]).
/// `Ok(false)` when control connections are off or the server has none.
pub(crate) fn warm(client: &Client, sprite: &str) -> crate::Result<bool> {
    if !client.inner.control {
        return Ok(false);
    }
    let pool = client.inner.pools.get(sprite);
    if pool.support.load(Ordering::SeqCst) == UNSUPPORTED {
        return Ok(false);
    }
    if let Some(idle) = pool.take_idle() {
        pool.put_back(idle, client);
        return Ok(true);
    }
    dial_into(client, sprite, &pool)
}

/// `control:{"type":"op.start","op":"exec","args":{…}}` for exec query pairs: repeated keys
/// (`cmd`, `env`) as arrays, `cmd` always one; the rest as strings.
pub(crate) fn exec_start(pairs: &[(&str, String)]) -> String {
    let mut args = serde_json::Map::new();
    for (key, value) in pairs {
        let repeated = *key == "cmd" || *key == "env";
        match args.get_mut(*key) {
            Some(serde_json::Value::Array(items)) => items.push(value.clone().into()),
            Some(_) => {}
            None if repeated => {
                args.insert(
                    (*key).to_owned(),
                    vec![serde_json::Value::from(value.clone())].into(),
                );
            }
            None => {
                args.insert((*key).to_owned(), value.clone().into());
            }
        }
    }
    let start = serde_json::json!({ "type": "op.start", "op": "exec", "args": args });
    format!("{PREFIX}{start}")
}

/// `control:{"type":"op.start","op":"exec","args":{"id":…}}`: attach to session `id`
/// (§8.3; `op: "exec"` with an `id`, as the Go SDK sends it).
pub(crate) fn attach_start(id: &str) -> String {
    let start = serde_json::json!({ "type": "op.start", "op": "exec", "args": { "id": id } });
    format!("{PREFIX}{start}")
}

/// How an op ended, from a `control:` message; `None` for other envelope messages.
pub(crate) enum End {
    Complete { exit_code: Option<i32> },
    Error(Error),
}

/// Reads a `control:` message (the prefix already checked).
pub(crate) fn parse_end(text: &str) -> Option<End> {
    let value: serde_json::Value = serde_json::from_str(text.strip_prefix(PREFIX)?).ok()?;
    let args = value.get("args");
    match value.get("type")?.as_str()? {
        "op.complete" => Some(End::Complete {
            exit_code: args
                .and_then(|a| a.get("exitCode"))
                .and_then(serde_json::Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
        }),
        "op.error" => {
            let message = args
                .and_then(|a| a.get("error"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("the operation failed")
                .to_owned();
            let status = args
                .and_then(|a| a.get("status"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(400);
            let code = args
                .and_then(|a| a.get("code"))
                .and_then(serde_json::Value::as_str);
            // The same error a direct exec's refused upgrade gives (§3.1).
            let body = serde_json::json!({ "error": code, "message": message }).to_string();
            Some(End::Error(
                ApiError::parse(status, |_| None, body.as_bytes()).into(),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_groups_repeated_keys() {
        let text = exec_start(&[
            ("cmd", "sh".into()),
            ("cmd", "-c".into()),
            ("cmd", "true".into()),
            ("path", "sh".into()),
            ("env", "A=1".into()),
            ("stdin", "false".into()),
        ]);
        let value: serde_json::Value =
            serde_json::from_str(text.strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"op.start","op":"exec","args":{
                "cmd":["sh","-c","true"],"path":"sh","env":["A=1"],"stdin":"false"}})
        );
    }

    #[test]
    fn op_endings() {
        assert!(matches!(
            parse_end(r#"control:{"type":"op.complete","args":{"exitCode":3,"ok":true}}"#),
            Some(End::Complete { exit_code: Some(3) })
        ));
        assert!(matches!(
            parse_end(r#"control:{"type":"op.complete","args":{"ok":true}}"#),
            Some(End::Complete { exit_code: None })
        ));
        let Some(End::Error(Error::Api(api))) = parse_end(
            r#"control:{"type":"op.error","args":{"error":"exec: \"x\": not found","code":"command_not_found","status":400}}"#,
        ) else {
            panic!("not an API error");
        };
        assert_eq!(api.status, 400);
        assert_eq!(api.code.as_deref(), Some("command_not_found"));
        assert!(parse_end(r#"control:{"type":"keepalive"}"#).is_none());
        assert!(parse_end("control:{junk").is_none());
    }
}
