//! Runtimes: how a sprite's files exist and how its processes are started.
//!
//! Everything sprite-specific about running a process goes through [`SpriteRuntime`]:
//! [`HostRuntime`] ([`host`]) runs processes directly, the sandbox runtime ([`sandbox`],
//! namespaces + overlay root, ARCHITECTURE.md §3) runs them inside each sprite.
//!
//! This is the one seam between the server and a runtime, and it is made of trait
//! objects: a runtime ([`SpriteRuntime`]) starts an exec ([`ExecProcess`]), whose process
//! group is signalled through a [`SignalGroup`]. Which runtime is used is decided once, in
//! [`resolve`]; nothing above this module asks which one it has.

mod host;
mod sandbox;

pub(crate) use sandbox::SandboxOptions;
pub(crate) use sandbox::{is_sudo, sudo_main};

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use sandbox::helper_request;

use host::HostRuntime;

/// Which runtime runs sprites' processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// [`Runtime::Sandbox`] where the kernel allows it (probed once at startup), else
    /// [`Runtime::Host`].
    Auto,
    /// Isolated sprites: own overlay root filesystem, mount/PID/UTS/IPC namespaces (and a
    /// user namespace when the server is not root), processes without privileges.
    Sandbox,
    /// No isolation: processes run as the server's user, directly on this machine.
    Host,
}

impl Runtime {
    /// The lowercase name used on the command line (`auto`, `sandbox`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Auto => "auto",
            Runtime::Sandbox => "sandbox",
            Runtime::Host => "host",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;

    /// Parses `auto`, `sandbox` or `host` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Runtime::Auto),
            "sandbox" => Ok(Runtime::Sandbox),
            "host" => Ok(Runtime::Host),
            _ => Err(format!(
                "unknown runtime {s:?} (expected auto, sandbox or host)"
            )),
        }
    }
}

/// What to run for an exec, already validated by the exec layer.
#[derive(Debug)]
pub(crate) struct ProcessSpec<'a> {
    /// The program to look up in `PATH` (the `path` parameter, else `cmd[0]`).
    pub program: &'a str,
    /// Full argv; `argv[0]` is what the process sees as its name.
    pub argv: &'a [String],
    /// Environment additions in order (sprite environment, then `env` params; later win).
    pub env: &'a [(String, String)],
    /// The `dir` parameter, if any (relative paths are relative to the sprite's home).
    pub dir: Option<&'a str>,
    /// Give the process a stdin pipe (else the null device). Ignored with `tty`.
    pub stdin: bool,
    /// Run on a new pseudo-terminal of this size, as its session's controlling terminal:
    /// stdin, stdout and stderr are all the terminal, and the server keeps its master.
    pub tty: Option<crate::exec::WindowSize>,
    /// When the process exits, KILL what is left of its process group before it is reaped
    /// (services: what a crashed main process started must not outlive it, and its pgid
    /// cannot belong to anyone else while the leader is a zombie).
    pub end_group_with_leader: bool,
}

/// `TERM` for a TTY exec whose environment names none (the official CLI passes its own).
pub(crate) const DEFAULT_TERM: &str = "xterm-256color";

/// A started process and the directory it started in.
pub(crate) struct Spawned {
    /// The process; stdout and stderr are pipes, stdin a pipe if requested.
    pub process: Box<dyn ExecProcess>,
    /// The working directory, as shown in the session list.
    pub workdir: String,
}

/// The ends of a process's stdio the server keeps. For a TTY exec, `stdin` and `stdout`
/// are the pseudo-terminal's master (two descriptors of it) and `stderr` is `None`.
pub(crate) struct Stdio3 {
    /// Write end of stdin (None with `stdin=false`).
    pub stdin: Option<File>,
    /// Read end of stdout.
    pub stdout: Option<OwnedFd>,
    /// Read end of stderr.
    pub stderr: Option<OwnedFd>,
}

impl Stdio3 {
    /// A TTY exec's stdio: writes and reads both go to the terminal's `master`.
    pub fn terminal(master: OwnedFd) -> io::Result<Stdio3> {
        Ok(Stdio3 {
            stdin: Some(File::from(master.try_clone()?)),
            stdout: Some(master),
            stderr: None,
        })
    }
}

/// A running exec, whichever runtime started it: a child of the server
/// (`host::HostProcess`) or a process inside a sprite, a child of the sprite's agent
/// ([`sandbox::SandboxProcess`]).
pub(crate) trait ExecProcess: Send {
    /// The session id: the process's pid as the sprite sees it (what `$$` is inside; a
    /// sandbox has a PID namespace of its own, so ids repeat across sprites).
    fn id(&self) -> u32;

    /// The process's pid as the server sees it, for what looks at the host's `/proc` (the
    /// port scanner). The same as [`id`](Self::id) where the sprite shares the host's pids.
    fn host_pid(&self) -> u32 {
        self.id()
    }

    /// Takes the server's ends of the process's stdio.
    fn take_stdio(&mut self) -> Stdio3;

    /// What signals the process group.
    fn group(&self) -> Arc<dyn SignalGroup>;

    /// Waits until the process has exited, calls `on_exit` and returns the exit byte: the
    /// exit code, or 128 + N when killed by signal N.
    ///
    /// `on_exit` runs after the exit but *before* the process is reaped: while the zombie
    /// exists its pid cannot be reused, so a concurrent signal (which checks the flag
    /// `on_exit` sets) never hits a stranger's process group. A host child guarantees this
    /// by waiting without reaping first; in a sprite the agent gives the same guarantee
    /// itself (it signals only unreaped execs).
    fn wait(&mut self, on_exit: &mut dyn FnMut()) -> u8;
}

/// Delivers signals to one exec's process group (on the host, or inside a sprite).
pub(crate) trait SignalGroup: Send + Sync {
    /// Sends `sig` to the whole group. Errors (the group is gone) are ignored.
    fn signal(&self, sig: i32);

    /// Reaps the leader when its waiter could not be started, so it does not stay a
    /// zombie. Nothing to do where someone else reaps it (the sandbox's agent).
    fn reap_orphaned(&self) {}
}

/// Why a process could not be started.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The requested working directory does not exist or is not a directory.
    InvalidDirectory(String),
    /// `spawn` failed (ENOENT = program not found, EACCES = not executable, ...).
    Io(io::Error),
}

/// How a long runtime operation reports progress: how far it is (0.0–1.0) and what it does.
pub(crate) type Report<'a> = dyn FnMut(f32, &str) + 'a;

/// How sprites' files and processes exist. One instance serves every sprite.
pub(crate) trait SpriteRuntime: Send + Sync {
    /// The concrete runtime (never [`Runtime::Auto`]).
    fn kind(&self) -> Runtime;
    /// One human-readable line about what this runtime isolates.
    fn note(&self) -> String;
    /// Lays out a new sprite's files under `sprite_dir` (which exists), for `config`.
    fn create_sprite(
        &self,
        sprite_dir: &Path,
        config: &crate::store::SpriteConfig,
    ) -> io::Result<()>;
    /// Starts a process for the sprite stored at `sprite_dir`, in its own process group,
    /// with stdout and stderr piped.
    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError>;
    /// Whether `config`'s `ram_mb`/`cpus` are enforced, as shown in each sprite's info.
    fn limits(&self) -> String {
        "not enforced (the host runtime isolates nothing)".to_owned()
    }
    /// What is enforced for the sprite at `sprite_dir` (its info's `resource_limits`).
    fn limits_of(&self, _sprite_dir: &Path) -> String {
        self.limits()
    }
    /// Ends every process of the sprite at `sprite_dir` before its files are removed.
    fn stop_sprite(&self, _sprite_dir: &Path) {}
    /// Ends every sprite's processes (server shutdown).
    fn shutdown(&self) {}
    /// The filesystem of the sprite at `sprite_dir`, for the filesystem API (PROTOCOL.md §9;
    /// relative paths there resolve against `/` of this view). `None` when this runtime has
    /// none yet: the API then answers 501.
    fn fs(&self, _sprite_dir: &Path) -> Option<Box<dyn crate::fsops::SpriteFs>> {
        None
    }
    /// Where the listening sockets of the sprite at `sprite_dir` can be seen (read by
    /// `crate::ports`). `execs` are the host pids of its running exec sessions. `None`: the
    /// sprite has no process that could listen (or this runtime reports no ports).
    fn port_scope(&self, _sprite_dir: &Path, _execs: &[u32]) -> Option<PortScope> {
        None
    }
    /// Lifecycle (`crate::lifecycle`): brings the sprite at `sprite_dir` up — what its
    /// first exec would otherwise do (the sandbox starts its agent). Idempotent.
    fn boot(&self, _sprite_dir: &Path) -> io::Result<()> {
        Ok(())
    }
    /// Lifecycle: takes the sprite at `sprite_dir` down (cold) — every process inside ends,
    /// files stay, and the next [`SpriteRuntime::boot`] (or exec) brings it up again.
    fn halt(&self, _sprite_dir: &Path) {}
    /// Lifecycle: whether the sprite at `sprite_dir` answers (`GET …/check`), or why not.
    /// Never boots it.
    fn health(&self, sprite_dir: &Path) -> Result<(), String> {
        if sprite_dir.is_dir() {
            Ok(())
        } else {
            Err("the sprite's directory is missing".into())
        }
    }
    /// Takes checkpoint `id` of the sprite's writable layer while its processes run
    /// (`crate::checkpoints`). `previous` is the newest existing checkpoint. `Unsupported`
    /// when this sprite cannot have checkpoints.
    fn snapshot(
        &self,
        _sprite_dir: &Path,
        _id: &str,
        _previous: Option<&str>,
        _progress: &mut Report<'_>,
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Replaces the sprite's writable layer with checkpoint `id`. The caller has ended the
    /// sprite's exec sessions; the runtime ends whatever else runs in it first.
    fn restore(&self, _sprite_dir: &Path, _id: &str, _progress: &mut Report<'_>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Whether the sprite at `sprite_dir` can have checkpoints; `Err` says why not.
    fn checkpoints_supported(&self, _sprite_dir: &Path) -> Result<(), String> {
        Err(format!("the {} runtime has no checkpoints", self.kind()))
    }
    /// Deletes checkpoint `id`'s files.
    fn delete_snapshot(&self, _sprite_dir: &Path, _id: &str) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The sprite's special directory `/.sprite` (service logs, ...) as the sprite's own
    /// processes name it. The host runtime, whose sprites have no root of their own, puts
    /// it in the sprite's directory instead.
    fn dot_sprite(&self, _sprite_dir: &Path) -> String {
        "/.sprite".to_owned()
    }
    /// A TCP connection to `host:port` as the sprite at `sprite_dir` sees it: made from the
    /// sprite's network namespace where it has one (so `localhost` is the sprite's own
    /// loopback, never the host's), else from the server's. `host` is a name or an IP
    /// literal (IPv6 with or without brackets); each address it resolves to is tried in
    /// turn, all within `timeout`. Errors: `InvalidInput` (no address), `NotFound` (the name
    /// does not resolve), `ConnectionRefused`, `TimedOut`, or whatever the last attempt met.
    fn connect_tcp(
        &self,
        sprite_dir: &Path,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> io::Result<TcpStream>;
    /// The policies of the sprite at `sprite_dir` changed (their files are written): apply
    /// what this runtime can to the running sprite now (new processes read them anyway).
    fn policy_changed(&self, _sprite_dir: &Path) {}
    /// What this runtime enforces of a policy `kind`, in one line (the policy routes send
    /// it in a header; PROTOCOL.md §13).
    fn policy_note(&self, _kind: crate::policy::Kind) -> String {
        "not enforced: the host runtime isolates nothing (the policy is stored and reported \
         back only)"
            .to_owned()
    }
}

/// Connects to the first of `host:port`'s addresses that answers, all within `timeout`;
/// `connect` makes one attempt with the time it is given. The error is the last attempt's
/// (a refusal wins over other failures: it says most about the target).
pub(crate) fn connect_any(
    host: &str,
    port: u16,
    timeout: Duration,
    mut connect: impl FnMut(SocketAddr, Duration) -> io::Result<TcpStream>,
) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let addrs = resolve_host(host, port)?;
    let mut last: Option<io::Error> = None;
    let tries = addrs.len() as u32;
    for (i, addr) in addrs.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Later addresses keep a share of the time: one address that swallows packets
        // does not starve the next.
        let share = left / (tries - i as u32);
        match connect(addr, share) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let refused = last
                    .as_ref()
                    .is_some_and(|l| l.kind() == io::ErrorKind::ConnectionRefused);
                if !refused || e.kind() == io::ErrorKind::ConnectionRefused {
                    last = Some(e);
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "connection timed out")))
}

/// The addresses of `host` (a name, an IP literal, or an IPv6 literal in brackets).
fn resolve_host(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty host"));
    }
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {bare:?}: {e}"),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{bare:?} has no address"),
        ));
    }
    Ok(addrs)
}

/// Where a sprite's listening TCP sockets are found and who holds them, as a runtime
/// describes it to `crate::ports` (which does the reading).
pub(crate) struct PortScope {
    /// A socket-diagnostics (`NETLINK_SOCK_DIAG`) socket in the sprite's network namespace
    /// (the server's own, when the sprite shares it), made for this scan.
    pub diag: OwnedFd,
    /// The sprite has that network namespace to itself, so every socket in it is the
    /// sprite's. Otherwise only the sockets one of [`PortScope::trees`] holds are.
    pub own_network: bool,
    /// The processes that may hold the sprite's sockets, as trees whose roots are exec
    /// sessions (a socket is attributed to the session whose tree holds it).
    pub trees: ProcessTrees,
    /// The sprite has a PID namespace of its own: pids are reported as seen inside it.
    pub own_pids: bool,
}

/// The roots of a sprite's process trees, as host pids.
pub(crate) enum ProcessTrees {
    /// Each pid leads an exec session's tree (the host runtime: the execs themselves).
    Roots(Vec<u32>),
    /// The children of this pid lead the trees (a sprite's init: its children are the
    /// exec sessions, plus orphans it adopted).
    ChildrenOf(u32),
}

/// At server start: removes the temp files of uploads a previous server process left
/// unfinished in any of `sprite_dirs` (a crash mid-upload), through each sprite's own
/// filesystem (in a sandbox this starts the sprite's agent, for those sprites only).
pub(crate) fn recover_uploads(rt: &dyn SpriteRuntime, sprite_dirs: impl Iterator<Item = PathBuf>) {
    for dir in sprite_dirs.filter(|d| crate::fsops::journal::has_entries(d)) {
        if let Some(fs) = rt.fs(&dir) {
            crate::fsops::journal::clean(&*fs, &dir);
        }
    }
}

/// Resolves the requested runtime to an implementation. `data_dir` must exist; the
/// sandbox probe runs there. `base_dir` is the sandbox's read-only lower layer.
pub(crate) fn resolve(
    requested: Runtime,
    data_dir: &Path,
    base_dir: &Path,
    options: sandbox::SandboxOptions,
) -> io::Result<Box<dyn SpriteRuntime>> {
    match requested {
        Runtime::Host => Ok(Box::new(HostRuntime::new(None))),
        Runtime::Sandbox => match sandbox::check(data_dir, base_dir, options) {
            Ok(rt) => Ok(Box::new(rt)),
            Err(why) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("sandbox runtime unavailable: {why}"),
            )),
        },
        Runtime::Auto => match sandbox::check(data_dir, base_dir, options) {
            Ok(rt) => Ok(Box::new(rt.chosen_by_auto())),
            Err(why) => Ok(Box::new(HostRuntime::new(Some(format!(
                "sandbox unavailable: {why}"
            ))))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_literals_brackets_and_names() {
        let v6 = resolve_host("[::1]", 80).unwrap();
        assert_eq!(v6, vec!["[::1]:80".parse().unwrap()]);
        assert_eq!(resolve_host("::1", 80).unwrap(), v6);
        let v4 = resolve_host("127.0.0.1", 5).unwrap();
        assert_eq!(v4, vec!["127.0.0.1:5".parse().unwrap()]);
        assert!(resolve_host("localhost", 1)
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback()));
        assert_eq!(
            resolve_host("", 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            resolve_host("no-such-host.invalid", 1).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn connect_any_tries_each_address_and_keeps_a_refusal() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = connect_any("localhost", port, Duration::from_secs(5), |a, t| {
            TcpStream::connect_timeout(&a, t)
        })
        .unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
        drop(l);
        let err = connect_any("127.0.0.1", port, Duration::from_secs(5), |a, t| {
            TcpStream::connect_timeout(&a, t)
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn parse_runtime() {
        assert_eq!("HOST".parse::<Runtime>(), Ok(Runtime::Host));
        assert_eq!("auto".parse::<Runtime>(), Ok(Runtime::Auto));
        assert_eq!("sandbox".parse::<Runtime>(), Ok(Runtime::Sandbox));
        assert!("vm".parse::<Runtime>().is_err());
    }

    #[test]
    fn a_missing_base_dir_makes_auto_host_and_sandbox_an_error() {
        let data = std::env::temp_dir();
        let base = Path::new("/nonexistent-sprites-local-base");
        let auto = resolve(Runtime::Auto, &data, base, Default::default()).unwrap();
        assert_eq!(auto.kind(), Runtime::Host);
        assert!(auto.note().contains("NO ISOLATION"), "{}", auto.note());
        assert!(auto.note().contains("auto: sandbox unavailable"));
        let err = resolve(Runtime::Sandbox, &data, base, Default::default())
            .err()
            .unwrap();
        assert!(err
            .to_string()
            .starts_with("sandbox runtime unavailable: base dir"));
        assert_eq!(
            resolve(Runtime::Host, &data, base, Default::default())
                .unwrap()
                .kind(),
            Runtime::Host
        );
    }
}
