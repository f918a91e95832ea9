//! Execs (PROTOCOL.md §6) and their sessions (§7), without HTTP routing.
//!
//! - [`params`]: validation of the exec query;
//! - [`spawn`] (here): starts the process *before* the `101`, so a failure to start is an
//!   ordinary HTTP error ([`SpawnFailure`], which the API turns into a response);
//! - [`pump`]: an ordinary exec's WebSocket session (non-TTY, ends with its connection):
//!   its threads and I/O, until it ends;
//! - [`http`]: the exec over HTTP (§6.9): stdin from the request body, frames in the
//!   response's chunks;
//! - [`hub`]: a detachable session's process (every TTY exec, `detachable=true`): its
//!   output, scrollback and stdin, independent of any connection;
//! - [`attach`]: one WebSocket connection to a hub (the exec that started it, or a later
//!   attach), any number at once;
//! - [`scrollback`]: the bounded memory of a session's recent output;
//! - [`control`]: the server's handle on each live connection, for a clean shutdown;
//! - [`sessions`]: the registry of running execs per sprite, and recently exited ids.

mod attach;
mod control;
mod http;
mod hub;
mod params;
mod pump;
mod scrollback;
mod sessions;
mod stdin;

pub use attach::Attach;
pub use http::HttpExec;
pub use hub::DEFAULT_SCROLLBACK;
pub(crate) use hub::{Attachment, Hub, Out};
pub(crate) use pump::signal_request;

pub use control::ExecControl;
pub(crate) use control::Registered;
pub use params::{parse_params, ExecParams, WindowSize};
pub use pump::run;
pub use sessions::{Lookup, Session, Sessions};

use std::io;
use std::sync::Arc;

use crate::net::ws;
use crate::runtime::{ExecProcess, ProcessSpec, SpawnError};
use crate::state::State;

/// A spawned process waiting for its WebSocket.
pub struct Upgrade {
    process: Box<dyn ExecProcess>,
    session: Arc<Session>,
    accept_key: String,
    /// `Some` for a detachable session: how long it may run with nobody attached (`None`
    /// inside: until it exits).
    detachable: Option<Option<std::time::Duration>>,
}

/// Why an exec's process could not be started.
#[derive(Debug)]
pub enum SpawnFailure {
    /// There is no sprite of that name.
    SpriteNotFound,
    /// The requested working directory does not exist or is not a directory; the text
    /// says which.
    InvalidDirectory(String),
    /// The program was not found (`ENOENT`).
    CommandNotFound,
    /// The program may not be executed (`EACCES`, `EPERM`).
    PermissionDenied,
    /// Anything else.
    Failed(io::Error),
}

impl From<io::Error> for SpawnFailure {
    fn from(e: io::Error) -> SpawnFailure {
        match e.raw_os_error() {
            Some(libc::ENOENT) => SpawnFailure::CommandNotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => SpawnFailure::PermissionDenied,
            _ => SpawnFailure::Failed(e),
        }
    }
}

/// Spawns the process for an exec on `sprite` and registers its session. `ws_key` is the
/// client's `Sec-WebSocket-Key`.
pub fn spawn(
    state: &State,
    sprite: &str,
    params: &ExecParams,
    ws_key: &str,
) -> Result<Upgrade, SpawnFailure> {
    let (process, session) = start(state, sprite, params)?;
    Ok(Upgrade {
        process,
        session,
        accept_key: ws::accept_key(ws_key),
        detachable: params.detachable.then_some(params.max_run_after_disconnect),
    })
}

/// Spawns the process for an exec on `sprite` and registers its session, whatever carries
/// it (a WebSocket, an HTTP response).
pub(crate) fn start(
    state: &State,
    sprite: &str,
    params: &ExecParams,
) -> Result<(Box<dyn ExecProcess>, Arc<Session>), SpawnFailure> {
    let Some(rec) = state.store.get(sprite) else {
        return Err(SpawnFailure::SpriteNotFound);
    };
    let mut env: Vec<(String, String)> = rec.environment.into_iter().collect();
    env.extend(params.env.iter().cloned());
    let spec = ProcessSpec {
        program: &params.program,
        argv: &params.argv,
        env: &env,
        dir: params.dir.as_deref(),
        stdin: params.stdin,
        tty: params.tty,
        end_group_with_leader: false,
    };
    let spawned = match state.runtime.spawn(&state.store.sprite_dir(sprite), &spec) {
        Ok(s) => s,
        Err(SpawnError::InvalidDirectory(m)) => return Err(SpawnFailure::InvalidDirectory(m)),
        Err(SpawnError::Io(e)) => return Err(e.into()),
    };
    let session = Arc::new(Session::new(
        spawned.process.id(),
        spawned.process.host_pid(),
        spawned.process.group(),
        sprite.to_owned(),
        params.argv.join(" "),
        spawned.workdir,
        params.tty.is_some(),
    ));
    state.sessions.insert(session.clone());
    // Before the 101, so anyone who has seen the exec start also sees the sprite as run
    // (persisted on a sprite's first run only: one fsync in its lifetime).
    let _ = state.store.mark_running(sprite, crate::time::now_rfc3339());
    Ok((spawned.process, session))
}

impl crate::api::WebSocketSession for Upgrade {
    fn run(self: Box<Self>, state: Arc<State>, conn: Arc<crate::state::Conn>, leftover: Vec<u8>) {
        let up = *self;
        match up.detachable {
            None => run(state, conn, leftover, up),
            Some(max_run_after_disconnect) => {
                match hub::Hub::start(&state, up.process, up.session, max_run_after_disconnect) {
                    Ok((hub, attachment)) => {
                        attach::serve(&state, conn, leftover, &hub, attachment, &up.accept_key)
                    }
                    // The process was killed and reaped; the client learns it from the close.
                    Err(_) => {
                        let _ = conn.stream().shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        }
    }
}
