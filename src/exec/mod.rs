//! Running commands on a sprite: [`Command`], [`Child`] and their pipes, mirroring
//! `std::process`, over the exec WebSocket ([PROTOCOL.md §6](crate::protocol#6-exec-over-websocket)).
//!
//! Each [`Child`] owns one WebSocket and two threads: a reader that routes output, exit reports
//! and server messages, and a writer that sends stdin, signals, resizes and keepalive pings.
//! See `docs/DESIGN.md` for why the threads never block each other. Terminal sessions, attach,
//! the session list and kill ([PROTOCOL.md §6.3, §7](crate::protocol#7-sessions-list-attach-kill))
//! and port events live here too.

mod attach;
mod child;
mod command;
mod frame;
pub(crate) mod io;
mod local_stdin;
mod pipes;
mod ports;
mod sessions;
mod status;

pub(crate) use attach::Runtimes;
pub use child::Child;
pub(crate) use child::normalize_signal;
pub use command::{Command, CommandArgs, CommandEnvs};
pub(crate) use io::Keepalive;
pub(crate) use io::closed_error;
pub use pipes::{ChildStderr, ChildStdin, ChildStdout, Stdio};
pub use ports::{PortEvent, PortEventKind, PortEvents, PortWatch};
pub use sessions::{KillProgress, KillReport, Session};
pub(crate) use sessions::{kill as kill_session, list as list_sessions};
pub use status::{ExitStatus, Output};
