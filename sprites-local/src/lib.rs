//! `sprites-local`: a local server that speaks the Sprites API (Fly.io sandboxes) with
//! real processes and real files, for running and testing Sprites programs offline.
//!
//! ```no_run
//! use sprites_local::{Runtime, Server};
//!
//! let server = Server::builder().runtime(Runtime::Host).start()?;
//! println!("listening on {} with token {}", server.url(), server.token());
//! println!("{}", server.runtime_note());
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The wire protocol is described in `PROTOCOL.md`; the choices this server makes where
//! that document says "(inferred)" are listed in this crate's README.

#![warn(missing_docs)]
// Raw system calls live in `sys`, behind safe functions; nowhere else.
#![deny(unsafe_code)]

mod api;
mod checkpoints;
mod control;
mod exec;
mod fingerprint;
mod fsops;
mod fswatch;
#[cfg(test)]
mod fuzz;
mod lifecycle;
mod net;
mod policy;
mod ports;
mod random;
mod runtime;
mod server;
mod services;
mod signal;
mod state;
mod store;
#[allow(unsafe_code)]
mod sys;
mod time;
mod tunnel;
mod urls;

pub use runtime::Runtime;
pub use server::{default_data_dir, Limits, Server, ServerBuilder, ServerHandle};
pub use signal::TerminationSignal;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: a panicked thread must not take the server down, and
/// every structure we guard stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
