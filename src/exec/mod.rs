//! Running commands on a sprite: [`Command`], [`Child`] and their pipes, mirroring
//! `std::process`, over the exec WebSocket ([PROTOCOL.md §6](crate::protocol#6-exec-over-websocket)).
//!
//! Each [`Child`] owns one WebSocket and two threads: a reader that routes output, exit reports
//! and server messages, and a writer that sends stdin, signals and keepalive pings. See
//! `docs/DESIGN.md` for why the threads never block each other.

mod child;
mod command;
mod frame;
mod io;
mod local_stdin;
mod pipes;
mod status;

pub use child::Child;
pub use command::{Command, CommandArgs, CommandEnvs};
pub(crate) use io::Keepalive;
pub use pipes::{ChildStderr, ChildStdin, ChildStdout, Stdio};
pub use status::{ExitStatus, Output};
