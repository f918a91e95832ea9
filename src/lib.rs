//! A blocking, synchronous client for [Sprites](https://sprites.dev): persistent Linux sandboxes
//! driven over HTTP and WebSocket.
//!
//! Programs on a sprite run through [`Command`] and [`Child`], which mirror `std::process`
//! method for method, so code that runs local commands ports by changing where the `Command`
//! comes from. There is no async runtime: each running command uses one WebSocket and two
//! threads, which makes the crate at home in build scripts, CLIs and plain synchronous programs.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use sprites::{Client, Stdio};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_env()?; // SPRITES_TOKEN, SPRITES_API_URL
//! let sprite = client.create_sprite("scratch")?;
//!
//! let output = sprite.command("uname").arg("-a").output()?;
//! println!("{}", String::from_utf8_lossy(&output.stdout));
//!
//! let mut child = sprite.command("sort").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
//! child.stdin.take().unwrap().write_all(b"pear\napple\n")?;
//! let mut sorted = String::new();
//! child.stdout.take().unwrap().read_to_string(&mut sorted)?;
//! assert_eq!(sorted, "apple\npear\n");
//! assert!(child.wait()?.success());
//!
//! sprite.delete()?;
//! # Ok(()) }
//! ```
//!
//! Interactive programs run in a terminal ([`Command::tty`]); such sessions, and any started
//! with [`Command::detachable`], outlive their connection and can be attached to again
//! ([`Sprite::attach`], [`Sprite::sessions`], [`Sprite::kill_session`]); listening ports arrive
//! as [`PortEvent`]s ([`Command::port_events`], [`Sprite::watch_ports`]). The repository's
//! `examples/console.rs` (`cargo run --example console -- NAME`) is an interactive shell built
//! on them.
//!
//! For local development and CI without an account, the `sprites-local` crate serves the same
//! API on this machine; point [`ClientBuilder::base_url`] at it.
//!
//! # Errors
//! `std`-mirror methods return [`std::io::Result`]; each `io::Error` wraps a [`sprites::Error`](Error)
//! with a mapped [`std::io::ErrorKind`], recoverable with [`Error::from_io`]. Everything else
//! returns [`sprites::Result`](Result).

#![warn(missing_docs)]

mod checkpoints;
mod client;
mod control;
mod error;
mod exec;
pub mod fs;
mod lifecycle;
mod policy;
mod proxy;
mod services;
mod sprite;
mod sys;
mod tar;
mod tls;
mod transfer;
mod tunnel;
mod types;
mod url;
mod watch_stream;
mod ws;

pub use checkpoints::{
    CURRENT_CHECKPOINT, Checkpoint, CheckpointEvent, CheckpointEventKind, CheckpointListOptions,
    CheckpointStream,
};
pub use client::{Client, ClientBuilder, DEFAULT_BASE_URL};
pub use error::{ApiError, Error, RateLimit, Result, TransportError};
pub use exec::{
    Child, ChildStderr, ChildStdin, ChildStdout, Command, CommandArgs, CommandEnvs, ExitStatus,
    KillProgress, KillReport, Output, PortEvent, PortEventKind, PortEvents, PortWatch, Session,
    Stdio,
};
pub use lifecycle::{
    RestartResult, SpriteCheck, SpriteEvent, SpriteStatus, SpriteWatch, WatchOptions,
};
pub use policy::{
    MemoryPolicy, NetworkPolicy, NetworkRule, PrivilegesPolicy, ResourcesPolicy, RuleAction,
};
pub use services::{
    LogFiles, Service, ServiceEvent, ServiceEventKind, ServiceEvents, ServiceSpec, ServiceState,
    ServiceStatus,
};
pub use sprite::{CreateOptions, ListOptions, Sprite, SpriteIter, SpriteUpdate, TempSprite};
pub use tunnel::{PortForward, ProxyStream};
pub use types::{OrgStats, ServerMessage, SpriteConfig, SpriteInfo, SpritePage, UrlSettings};

/// The wire protocol this crate speaks and `sprites-local` serves (`docs/PROTOCOL.md` in the
/// repository). The crate's documentation cites its sections as "PROTOCOL.md §N".
#[doc = include_str!("../docs/PROTOCOL.md")]
pub mod protocol {}

// The README's tour compiles (it is `no_run`: it needs a live API).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
