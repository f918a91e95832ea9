//! [`HostRuntime`]: sprites' processes run directly on this machine, as the server's user.
//! Isolates nothing.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{
    ExecProcess, PortScope, ProcessSpec, ProcessTrees, Runtime, SignalGroup, SpawnError, Spawned,
    SpriteRuntime, Stdio3,
};
use crate::fsops::journal;
use crate::sys::{self, process};

/// Runs processes directly on this machine as the server's user. A sprite is a directory;
/// its `home/` is the default working directory and `HOME`. Isolates nothing.
pub(crate) struct HostRuntime {
    /// Why `auto` chose this runtime (None when asked for explicitly).
    auto: Option<String>,
    /// Sprites whose unfinished uploads of an earlier server process were cleaned up.
    cleaned: Mutex<HashSet<PathBuf>>,
}

/// Where a host sprite's checkpoints are kept, in its directory.
const SNAPSHOTS: &str = "checkpoints";

/// The environment variable the CLI reads the token from; never passed to processes.
pub(crate) const TOKEN_ENV: &str = "SPRITES_LOCAL_TOKEN";

impl HostRuntime {
    /// The host runtime; `auto` says why `auto` chose it (None when asked for explicitly).
    pub(crate) fn new(auto: Option<String>) -> HostRuntime {
        HostRuntime {
            auto,
            cleaned: Mutex::new(HashSet::new()),
        }
    }

    fn home(sprite_dir: &Path) -> PathBuf {
        sprite_dir.join("home")
    }
}

impl SpriteRuntime for HostRuntime {
    fn kind(&self) -> Runtime {
        Runtime::Host
    }

    /// A plain connection from the server: a host sprite shares the host's network.
    fn connect_tcp(
        &self,
        _sprite_dir: &Path,
        host: &str,
        port: u16,
        timeout: std::time::Duration,
    ) -> io::Result<std::net::TcpStream> {
        super::connect_any(host, port, timeout, |addr, t| {
            std::net::TcpStream::connect_timeout(&addr, t)
        })
    }

    /// Not the host's own `/.sprite`: every sprite would share it.
    fn dot_sprite(&self, sprite_dir: &Path) -> String {
        sprite_dir.join(".sprite").to_string_lossy().into_owned()
    }

    /// The host's own files, at the host's own paths: nothing is isolated, exactly as for
    /// this runtime's commands.
    fn fs(&self, sprite_dir: &Path) -> Option<Box<dyn crate::fsops::SpriteFs>> {
        if crate::lock(&self.cleaned).insert(sprite_dir.to_owned()) {
            journal::clean(&crate::fsops::HostFs, sprite_dir);
        }
        Some(Box::new(journal::Journaled::new(
            Box::new(crate::fsops::HostFs),
            sprite_dir,
        )))
    }

    /// A copy of `home/` in `checkpoints/<id>/` (see `crate::checkpoints::tree`: cloned,
    /// hard-linked to the previous checkpoint where unchanged, else copied).
    fn snapshot(
        &self,
        sprite_dir: &Path,
        id: &str,
        previous: Option<&str>,
        progress: &mut super::Report<'_>,
    ) -> io::Result<()> {
        let store = sprite_dir.join(SNAPSHOTS);
        std::fs::create_dir_all(&store)?;
        let home = Self::home(sprite_dir);
        std::fs::create_dir_all(&home)?;
        let tmp = store.join(format!(".{id}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        let prev = previous.map(|p| store.join(p)).filter(|p| p.is_dir());
        match crate::checkpoints::tree::copy(&home, &tmp, prev.as_deref(), progress) {
            Ok(_) => std::fs::rename(&tmp, store.join(id)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// `home/` becomes a copy of the checkpoint (the caller ended the sprite's execs: the
    /// host runtime runs nothing else for a sprite).
    fn restore(
        &self,
        sprite_dir: &Path,
        id: &str,
        progress: &mut super::Report<'_>,
    ) -> io::Result<()> {
        crate::checkpoints::tree::restore(
            &sprite_dir.join(SNAPSHOTS).join(id),
            &Self::home(sprite_dir),
            progress,
        )
    }

    fn checkpoints_supported(&self, _sprite_dir: &Path) -> Result<(), String> {
        Ok(())
    }

    fn delete_snapshot(&self, sprite_dir: &Path, id: &str) -> io::Result<()> {
        std::fs::remove_dir_all(sprite_dir.join(SNAPSHOTS).join(id))
    }

    fn note(&self) -> String {
        let how = match &self.auto {
            Some(why) => format!(" (auto: {why})"),
            None => String::new(),
        };
        format!(
            "runtime host{how}: NO ISOLATION — commands run as this user on this machine, \
             with full access to its files and network"
        )
    }

    fn create_sprite(
        &self,
        sprite_dir: &Path,
        _config: &crate::store::SpriteConfig,
    ) -> io::Result<()> {
        std::fs::create_dir_all(Self::home(sprite_dir))
    }

    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError> {
        let home = Self::home(sprite_dir);
        let cwd = match spec.dir {
            Some(dir) => {
                let d = home.join(dir); // an absolute `dir` replaces `home`
                if !d.is_dir() {
                    return Err(SpawnError::InvalidDirectory(format!(
                        "working directory {dir:?} does not exist or is not a directory"
                    )));
                }
                d
            }
            None => {
                // A user may have removed the home directory through an exec; without it
                // spawn would fail with ENOENT and look like a missing program.
                if !home.is_dir() {
                    std::fs::create_dir_all(&home).map_err(SpawnError::Io)?;
                }
                home.clone()
            }
        };
        let terminal = match spec.tty {
            Some(size) => Some(HostTerminal::open(size).map_err(SpawnError::Io)?),
            None => None,
        };
        let mut cmd = Command::new(spec.program);
        if let Some((argv0, rest)) = spec.argv.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd.current_dir(&cwd)
            .env_remove(TOKEN_ENV)
            .env("HOME", &home)
            .env("PWD", &cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(terminal) = &terminal {
            if !spec.env.iter().any(|(k, _)| k == "TERM") {
                cmd.env("TERM", super::DEFAULT_TERM);
            }
            let peer = || terminal.peer.try_clone().map(Stdio::from);
            cmd.stdin(peer().map_err(SpawnError::Io)?)
                .stdout(peer().map_err(SpawnError::Io)?)
                .stderr(peer().map_err(SpawnError::Io)?);
            // Its own session (so also its own process group) with the terminal as its
            // controlling terminal: `^C` and job control work, and signals and the
            // disconnect kill still reach the whole tree.
            sys::pty::new_session_with_controlling_terminal(&mut cmd);
        } else {
            // Own process group: signals and the disconnect kill reach the whole tree.
            cmd.process_group(0)
                .stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        process::default_signals_on_exec(&mut cmd);
        let mut child = cmd.spawn().map_err(SpawnError::Io)?;
        // `cmd` holds copies of the terminal's peer: they must close (with `terminal.peer`)
        // so the master reads EIO once the exec's processes are done with it.
        drop(cmd);
        let master = terminal.map(|t| t.master);
        if master.is_some() {
            child.stdin = None;
        }
        Ok(Spawned {
            process: Box::new(HostProcess {
                child,
                master,
                end_group_with_leader: spec.end_group_with_leader,
            }),
            workdir: cwd.to_string_lossy().into_owned(),
        })
    }

    /// The sprite shares the server's network: its sockets are those its exec sessions'
    /// process trees hold, and its pids are host pids.
    fn port_scope(&self, _sprite_dir: &Path, execs: &[u32]) -> Option<PortScope> {
        if execs.is_empty() {
            return None;
        }
        Some(PortScope {
            diag: crate::sys::netlink::sock_diag_socket().ok()?,
            own_network: false,
            trees: ProcessTrees::Roots(execs.to_vec()),
            own_pids: false,
        })
    }
}

/// A new pseudo-terminal from the host's `/dev/ptmx`, sized.
struct HostTerminal {
    master: OwnedFd,
    peer: OwnedFd,
}

impl HostTerminal {
    fn open(size: crate::exec::WindowSize) -> io::Result<HostTerminal> {
        let master = sys::pty::open_master(c"/dev/ptmx")?;
        let peer = sys::pty::open_peer(master.as_fd())?;
        sys::pty::set_window_size(master.as_fd(), size.rows, size.cols)?;
        Ok(HostTerminal { master, peer })
    }
}

/// An exec on the host: a child of the server, leading its own process group, and the
/// master of its terminal if it has one.
struct HostProcess {
    child: Child,
    master: Option<OwnedFd>,
    /// KILL the group when the leader exits, before reaping it.
    end_group_with_leader: bool,
}

impl ExecProcess for HostProcess {
    fn id(&self) -> u32 {
        self.child.id()
    }

    fn take_stdio(&mut self) -> Stdio3 {
        if let Some(master) = self.master.take() {
            if let Ok(stdio) = Stdio3::terminal(master) {
                return stdio;
            }
            // Out of descriptors: no stdio at all reads as an immediate EOF.
            return Stdio3 {
                stdin: None,
                stdout: None,
                stderr: None,
            };
        }
        let c = &mut self.child;
        Stdio3 {
            stdin: c.stdin.take().map(|s| File::from(OwnedFd::from(s))),
            stdout: c.stdout.take().map(OwnedFd::from),
            stderr: c.stderr.take().map(OwnedFd::from),
        }
    }

    fn group(&self) -> Arc<dyn SignalGroup> {
        Arc::new(HostGroup(self.child.id()))
    }

    /// Waits with `WNOWAIT` first, so `on_exit` runs while the exited child is still a
    /// zombie (its pid, and so its process group id, cannot be reused yet); only then
    /// reaps it.
    fn wait(&mut self, on_exit: &mut dyn FnMut()) -> u8 {
        let child = &mut self.child;
        let pid = child.id() as libc::id_t;
        loop {
            match process::wait_exited_nowait(pid) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                _ => break,
            }
        }
        if self.end_group_with_leader {
            // The leader is a zombie still, so the group is the one it led.
            HostGroup(pid).signal(libc::SIGKILL);
        }
        on_exit();
        match child.wait() {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => (code & 0xff) as u8,
                (None, Some(sig)) => (128 + sig) as u8,
                (None, None) => 1,
            },
            Err(_) => 1,
        }
    }
}

/// A host process group (pgid = the leader's pid).
struct HostGroup(u32);

impl SignalGroup for HostGroup {
    fn signal(&self, sig: i32) {
        crate::signal::kill_group(self.0, sig);
    }

    /// Reaps a host child whose waiter could not be started.
    fn reap_orphaned(&self) {
        // Our own child.
        let _ = process::waitpid(self.0 as libc::pid_t, 0);
    }
}
