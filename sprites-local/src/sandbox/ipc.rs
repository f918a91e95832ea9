//! The control protocol between the server and a sprite's agent.
//!
//! One `SOCK_SEQPACKET` socket pair per sprite: every message is one JSON document, and a
//! spawn request carries the exec's stdin/stdout/stderr as SCM_RIGHTS fds. The server keeps
//! its own pipe and relay code; the agent only forks, execs with those fds as 0/1/2, and
//! reports the pid and later the wait status.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::sys;

/// Server → agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a process; three fds (stdin, stdout, stderr) are attached.
    Spawn {
        /// Correlates the reply.
        id: u64,
        /// Program to look up in the `PATH` of `env` (or a path with a `/`).
        program: String,
        /// Full argv.
        argv: Vec<String>,
        /// The complete environment (nothing is inherited from the agent).
        env: Vec<(String, String)>,
        /// Working directory inside the sprite.
        cwd: String,
        /// `cwd` is the default (home): if it is gone, start in `/` instead of failing.
        fallback_cwd: bool,
    },
    /// Send `sig` to the process group led by `pid`, if that exec is still running.
    Signal {
        /// Namespace pid of the exec's leader.
        pid: i32,
        /// Signal number.
        sig: i32,
    },
}

/// Agent → server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The sprite's root is mounted and the agent serves requests; a pidfd for the agent
    /// is attached.
    Ready {
        /// The uid execs run as inside the sprite.
        uid: u32,
    },
    /// Setting the sprite up failed; the helper exits after this.
    Failed {
        /// What went wrong, for the server's error message.
        message: String,
    },
    /// A spawn request succeeded; a pidfd for the process is attached.
    Spawned {
        /// The request's id.
        id: u64,
        /// The exec's pid inside the sprite (= its process group and session id).
        pid: i32,
    },
    /// A spawn request failed before the program ran.
    SpawnFailed {
        /// The request's id.
        id: u64,
        /// `dir` (the working directory) or `exec` (the program).
        stage: String,
        /// The errno.
        errno: i32,
    },
    /// An exec's leader was reaped; `status` is the raw wait status.
    Exited {
        /// Namespace pid.
        pid: i32,
        /// Raw `waitpid` status.
        status: i32,
    },
}

/// Sends one message (with fds) on `sock`.
pub fn send<T: Serialize>(sock: RawFd, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    sys::send_with_fds(sock, &bytes, fds)
}

/// Receives one message; `Ok(None)` = the peer closed.
pub fn recv<T: for<'de> Deserialize<'de>>(sock: RawFd) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let Some((bytes, fds)) = sys::recv_with_fds(sock)? else {
        return Ok(None);
    };
    let msg = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn messages_and_fds_cross_a_socket_pair() {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let (r, w) = sys::pipe().unwrap();
        let req = Request::Signal { pid: 7, sig: 15 };
        send(a.as_raw_fd(), &req, &[w.as_raw_fd()]).unwrap();
        drop(w);
        let (got, mut fds) = recv::<Request>(b.as_raw_fd()).unwrap().unwrap();
        assert!(matches!(got, Request::Signal { pid: 7, sig: 15 }));
        assert_eq!(fds.len(), 1);
        let mut w2 = std::fs::File::from(fds.pop().unwrap());
        w2.write_all(b"hi").unwrap();
        drop(w2);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
        drop(a);
        assert!(recv::<Request>(b.as_raw_fd()).unwrap().is_none());
    }
}
