//! The control protocol between the server and a sprite's agent.
//!
//! One `SOCK_SEQPACKET` socket pair per sprite: every message is one JSON document, and a
//! spawn request carries the exec's stdin/stdout/stderr as SCM_RIGHTS fds. The server keeps
//! its own pipe and relay code; the agent only forks, execs with those fds as 0/1/2, and
//! reports the pid and later the wait status.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::base_scan::Hidden;
use super::identity::Identity;

use crate::fsops::{
    Chmodded, Chowned, Copied, Deleted, FsError, FsOp, FsOutput, Listing, Renamed, WriteSpec,
    Written,
};
use crate::sys;

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
        /// Run on a new pseudo-terminal of the sprite's own `devpts`, of this size (rows,
        /// columns), instead of the attached fds (none are attached then); the reply
        /// carries its master after the pidfd.
        #[serde(default)]
        tty: Option<(u16, u16)>,
        /// What the sprite's privileges and resources policies ask of a new process.
        #[serde(default)]
        policy: ExecPolicy,
        /// When the process exits, KILL what is left of its process group before reaping it
        /// (a service: what a crashed main process started must not outlive it).
        #[serde(default)]
        end_group_with_leader: bool,
    },
    /// Send `sig` to the process group led by `pid`, if that exec is still running.
    Signal {
        /// Namespace pid of the exec's leader.
        pid: i32,
        /// Signal number.
        sig: i32,
    },
    /// Run a filesystem call inside the sprite. One fd is attached: the server's reply
    /// socket (a `SOCK_STREAM` socket the answer comes back on, see [`FsReply`]); a commit
    /// also attaches the temp file as a second fd.
    Fs {
        /// What to do.
        call: FsCall,
    },
    /// Open a socket-diagnostics (`NETLINK_SOCK_DIAG`) socket in the sprite's network
    /// namespace and send it back, with one byte, on the attached reply socket (one
    /// `SOCK_STREAM` fd). The server lists the sprite's listening sockets with it.
    PortSocket,
    /// Create an unconnected TCP socket (IPv6 with `v6`, else IPv4) in the sprite's network
    /// namespace and send it back, with one byte, on the attached reply socket (one
    /// `SOCK_STREAM` fd). The server connects it: the connection starts inside the sprite,
    /// so `127.0.0.1` there is the sprite's loopback, never the host's.
    TcpSocket {
        /// IPv6 rather than IPv4.
        v6: bool,
    },
    /// A checkpoint operation on the sprite's disk image; one fd is attached, a reply
    /// socket the agent writes a [`super::snapshots::SnapshotReply`] (JSON) to, then closes.
    Snapshot {
        /// What to do.
        what: super::snapshots::SnapshotOp,
    },
    /// Bind the sprite's DNS sockets (UDP and a TCP listener, both at [`RESOLVER_ADDR`] in
    /// the sprite's network namespace) and send them back, with a handle on that namespace
    /// and one byte, on the attached reply socket (one `SOCK_STREAM` fd). The server answers
    /// the sprite's name queries on them (`crate::policy::resolver`).
    Resolver,
}

/// Where a sprite's resolver listens, inside the sprite (its `/etc/resolv.conf` names it).
pub const RESOLVER_ADDR: std::net::SocketAddrV4 = crate::policy::resolver::SPRITE_RESOLVER;

/// A filesystem call (the [`SpriteFs`](crate::fsops::SpriteFs) methods, by value). Paths
/// are paths inside the sprite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum FsCall {
    /// `SpriteFs::run`.
    Run {
        /// The operation.
        op: FsOp,
    },
    /// `SpriteFs::open_read`: the reply carries the open file.
    OpenRead {
        /// The file.
        path: String,
    },
    /// `SpriteFs::begin_write`: the reply carries the open temp file.
    BeginWrite {
        /// What to write.
        spec: WriteSpec,
    },
    /// `SpriteFs::commit_write`; the temp file's fd is attached.
    CommitWrite {
        /// The temp file (from [`FsReply::Begun`]).
        temp: String,
        /// Its target (from [`FsReply::Begun`]).
        target: String,
        /// What was asked for.
        spec: WriteSpec,
    },
    /// `SpriteFs::abort_write`: removes the temp file.
    AbortWrite {
        /// The temp file (from [`FsReply::Begun`]).
        temp: String,
    },
    /// `SpriteFs::watch`: no [`FsReply`]; the child runs [`crate::fswatch::run`] on the
    /// reply socket until the server closes it.
    Watch {
        /// What to watch.
        spec: crate::fswatch::WatchSpec,
    },
}

impl FsCall {
    /// The path the call is about, for errors raised outside the operation itself.
    pub fn path(&self) -> &str {
        match self {
            FsCall::Run { op } => match op {
                FsOp::List { path, .. }
                | FsOp::Delete { path, .. }
                | FsOp::Chmod { path, .. }
                | FsOp::Chown { path, .. } => path,
                FsOp::Rename { source, .. } | FsOp::Copy { source, .. } => source,
            },
            FsCall::OpenRead { path } => path,
            FsCall::BeginWrite { spec } | FsCall::CommitWrite { spec, .. } => &spec.path,
            FsCall::AbortWrite { temp } => temp,
            FsCall::Watch { spec } => spec.paths.first().map_or("/", String::as_str),
        }
    }
}

/// The answer to an [`FsCall`], sent on the call's reply socket as an 8-byte little-endian
/// length (carrying any fd) followed by that many bytes of JSON.
///
/// [`FsOutput`] is untagged (its variants are the HTTP bodies), which cannot be parsed back
/// unambiguously; here each result has its own tag.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum FsReply {
    /// [`FsOutput::Listing`].
    Listing(Listing),
    /// [`FsOutput::Deleted`].
    Deleted(Deleted),
    /// [`FsOutput::Renamed`].
    Renamed(Renamed),
    /// [`FsOutput::Copied`].
    Copied(Copied),
    /// [`FsOutput::Chmodded`].
    Chmodded(Chmodded),
    /// [`FsOutput::Chowned`].
    Chowned(Chowned),
    /// A file opened for reading (attached), `len` bytes long.
    Opened {
        /// Its size at open time.
        len: u64,
    },
    /// A temp file created (attached) for a write.
    Begun {
        /// The temp file's path inside the sprite.
        temp: String,
        /// The target, symlinks followed.
        target: String,
    },
    /// A committed write.
    Written(Written),
    /// The temp file is gone.
    Aborted,
    /// The call failed.
    Failed(FsError),
}

impl From<FsOutput> for FsReply {
    fn from(out: FsOutput) -> FsReply {
        match out {
            FsOutput::Listing(x) => FsReply::Listing(x),
            FsOutput::Deleted(x) => FsReply::Deleted(x),
            FsOutput::Renamed(x) => FsReply::Renamed(x),
            FsOutput::Copied(x) => FsReply::Copied(x),
            FsOutput::Chmodded(x) => FsReply::Chmodded(x),
            FsOutput::Chowned(x) => FsReply::Chowned(x),
        }
    }
}

impl FsReply {
    /// The output of a [`FsCall::Run`], if this is one.
    pub fn into_output(self) -> Option<FsOutput> {
        Some(match self {
            FsReply::Listing(x) => FsOutput::Listing(x),
            FsReply::Deleted(x) => FsOutput::Deleted(x),
            FsReply::Renamed(x) => FsOutput::Renamed(x),
            FsReply::Copied(x) => FsOutput::Copied(x),
            FsReply::Chmodded(x) => FsOutput::Chmodded(x),
            FsReply::Chowned(x) => FsOutput::Chowned(x),
            _ => return None,
        })
    }
}

/// Server → stub, the first message on the control socket: which sprite to build, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StubConfig {
    /// The sprite's directory in the data dir.
    pub sprite_dir: PathBuf,
    /// The sprite's name, its hostname.
    pub hostname: String,
    /// The read-only base (lower layer).
    pub base: PathBuf,
    /// Directories of the base to mask besides the usual ones (the data dir), relative.
    pub masks: Vec<String>,
    /// How the server runs: root (`Some`) or not.
    pub privileged: Option<Privileged>,
    /// Cgroups (with the sprite's CPU weight and limits) to join first, so every process
    /// inherits them: one (cgroup v2) or one per controller (v1).
    pub cgroups: Vec<PathBuf>,
    /// Limits every process of the sprite starts with.
    pub limits: ProcessLimits,
}

/// What only a root server does for a sprite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Privileged {
    /// The sprite's host id range.
    pub identity: Identity,
    /// Base entries to hide (the base is id-mapped, so its root-only files would show).
    pub hidden: Vec<Hidden>,
    /// Give the sprite a veth pair and NAT (else loopback only).
    pub egress: bool,
    /// The sprite's `/etc/resolv.conf`, with egress.
    pub resolv_conf: Option<String>,
}

/// Resource limits set on every process a sprite starts (execs, filesystem calls).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProcessLimits {
    /// `RLIMIT_NPROC`: processes (threads included) per user inside the sprite.
    pub nproc: u64,
    /// `RLIMIT_DATA` in bytes, where no cgroup limits memory.
    pub data_bytes: Option<u64>,
}

/// What a sprite's policies (PROTOCOL.md §13) set on one new process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ExecPolicy {
    /// Set `PR_SET_NO_NEW_PRIVS` before the exec (`noNewPrivileges`, profile `minimal`).
    pub no_new_privs: bool,
    /// `RLIMIT_DATA` in bytes (`memory.limit_mb`), lowered to it if higher.
    pub data_bytes: Option<u64>,
}

/// Agent → server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The sprite's root is mounted and the agent serves requests; a pidfd for the agent
    /// is attached, and on a btrfs disk a detached mount of it (kept by the server for the
    /// next start, see `disk::mount`).
    Ready {
        /// The uid execs run as inside the sprite.
        uid: u32,
        /// The sprite's IPv4 address, when it has egress.
        address: Option<std::net::Ipv4Addr>,
        /// The upper layer's owners were moved to the sprite's id range (see
        /// [`Identity::shift_from`]).
        shifted: bool,
        /// Why the base is not id-mapped (root inside then cannot change its files).
        unmapped_base: Option<String>,
    },
    /// Setting the sprite up failed; the helper exits after this.
    Failed {
        /// What went wrong, for the server's error message.
        message: String,
    },
    /// A spawn request succeeded; a pidfd for the process is attached, and for a TTY
    /// spawn its terminal's master after it.
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
    sys::socket::send_with_fds(sock, &bytes, fds)
}

/// Receives one message; `Ok(None)` = the peer closed.
pub fn recv<T: for<'de> Deserialize<'de>>(sock: RawFd) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let Some((bytes, fds)) = sys::socket::recv_with_fds(sock)? else {
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
    fn fs_replies_keep_their_kind() {
        // Renamed and Copied share fields: untagged FsOutput could not tell them apart.
        let copied = FsOutput::Copied(Copied {
            source: "/a".into(),
            dest: "/b".into(),
            count: 1,
            copied: vec![],
            total_bytes: 3,
        });
        let json = serde_json::to_vec(&FsReply::from(copied.clone())).unwrap();
        let back: FsReply = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.into_output(), Some(copied));
        let err = FsReply::Failed(FsError::new(libc::ELOOP, "/l"));
        let back: FsReply = serde_json::from_slice(&serde_json::to_vec(&err).unwrap()).unwrap();
        assert!(matches!(back, FsReply::Failed(e) if e.errno == libc::ELOOP && e.path == "/l"));
        let req = Request::Fs {
            call: FsCall::Run {
                op: FsOp::Delete {
                    path: "/x".into(),
                    recursive: true,
                },
            },
        };
        let back: Request = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert!(matches!(
            back,
            Request::Fs {
                call: FsCall::Run {
                    op: FsOp::Delete {
                        recursive: true,
                        ..
                    }
                }
            }
        ));
    }

    #[test]
    fn messages_and_fds_cross_a_socket_pair() {
        let (a, b) = sys::socket::seqpacket_pair().unwrap();
        let (r, w) = sys::fd::pipe().unwrap();
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
