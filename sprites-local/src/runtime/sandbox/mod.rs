//! The sandbox runtime: every sprite is an isolated Linux environment (ARCHITECTURE.md §3).
//!
//! - [`entry`]: how the helper process is entered (an ELF constructor in a re-executed
//!   `/proc/self/exe`), so no namespace work ever happens in the server's threads.
//! - [`agent`]: the helper itself: a stub that creates the namespaces, and the agent (PID 1
//!   of the sprite) that spawns every exec inside them.
//! - [`rootfs`]: overlay root, `/dev`, `/proc`, masks, `pivot_root`.
//! - [`user`]: the `sprite` user and the opaque (masked) directories in the upper layer.
//! - [`ipc`]: the control protocol (JSON + SCM_RIGHTS).
//! - [`handle`]: [`AgentHandle`], the server's handle on one sprite's agent.
//! - [`fs`]: the filesystem API, run inside the sprite by the agent.
//! - [`cgroup`]: best-effort memory/CPU limits.
//!
//! See the "Sandbox runtime" section of the crate README for the design and its choices.

mod agent;
mod cgroup;
mod entry;
mod fs;
mod handle;
mod ipc;
mod rootfs;
mod user;

pub(crate) use entry::helper_request;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;

use super::{
    ExecProcess, ProcessSpec, Runtime, SignalGroup, SpawnError, Spawned, SpriteRuntime, Stdio3,
};
use crate::lock;
use crate::store::SpriteConfig;
use crate::sys;

use handle::AgentHandle;

/// Runs each sprite in its own namespaces on an overlay root (see the module docs).
pub(crate) struct SandboxRuntime {
    base: PathBuf,
    data_dir: PathBuf,
    userns: bool,
    /// Why `auto` chose this runtime (None when asked for explicitly).
    auto_reason: Option<String>,
    cgroups: cgroup::Cgroups,
    /// Running agents by sprite directory. Held while an agent starts, so two first execs
    /// of one sprite never start two agents.
    agents: Mutex<HashMap<PathBuf, Arc<AgentHandle>>>,
}

/// Why the sandbox cannot run here.
pub(crate) fn check(data_dir: &Path, base: &Path) -> Result<SandboxRuntime, String> {
    let base = base
        .canonicalize()
        .map_err(|e| format!("base dir {}: {e}", base.display()))?;
    if !base.is_dir() {
        return Err(format!("base dir {} is not a directory", base.display()));
    }
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| format!("data dir {}: {e}", data_dir.display()))?;
    let userns = sys::process::geteuid() != 0;
    let rt = SandboxRuntime {
        base,
        data_dir,
        userns,
        auto_reason: None,
        cgroups: cgroup::Cgroups::detect(),
        agents: Mutex::new(HashMap::new()),
    };
    rt.probe()?;
    Ok(rt)
}

impl SandboxRuntime {
    /// Marks this runtime as chosen by `auto`, for the startup note.
    pub(crate) fn chosen_by_auto(mut self) -> Self {
        self.auto_reason = Some("namespaces and overlayfs work here".into());
        self
    }

    fn config(&self, sprite_dir: &Path) -> agent::AgentConfig {
        // The data dir as seen inside (only if the base contains it).
        let masks = self
            .data_dir
            .strip_prefix(&self.base)
            .map(|rel| Path::new("/").join(rel))
            .into_iter()
            .collect();
        agent::AgentConfig {
            sprite_dir: sprite_dir.to_owned(),
            base: self.base.clone(),
            masks,
            userns: self.userns,
            ctl_fd: -1,
            cgroup: None,
        }
    }

    /// Starts a throwaway sprite's agent in the data dir: proves in one go that we may
    /// create the namespaces, mount the overlay, `/proc` and `/dev`, and pivot.
    fn probe(&self) -> Result<(), String> {
        let tag = crate::random::hex(6).map_err(|e| e.to_string())?;
        let dir = self.data_dir.join(format!(".sandbox-probe-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let result = AgentHandle::start(self.config(&dir), &dir.join("agent.log"));
        let result = match result {
            Ok(agent) => {
                agent.stop();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The sprite's agent, started (or restarted) if needed.
    fn agent(&self, sprite_dir: &Path) -> io::Result<Arc<AgentHandle>> {
        let mut agents = lock(&self.agents);
        if let Some(a) = agents.get(sprite_dir) {
            if a.is_alive() {
                return Ok(a.clone());
            }
        }
        if !sprite_dir.join("sprite.json").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "sprite was deleted",
            ));
        }
        let mut cfg = self.config(sprite_dir);
        cfg.cgroup = read_config(sprite_dir).and_then(|c| self.cgroups.prepare(sprite_dir, &c));
        let agent = AgentHandle::start(cfg, &sprite_dir.join("agent.log"))?;
        agents.insert(sprite_dir.to_owned(), agent.clone());
        Ok(agent)
    }
}

/// Adds `what` to an error's message so a failed setup step names itself.
fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", what())))
}

fn read_config(sprite_dir: &Path) -> Option<SpriteConfig> {
    let bytes = std::fs::read(sprite_dir.join("sprite.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    serde_json::from_value(v.get("config")?.clone()).ok()
}

/// A process running inside a sprite, a child of the sprite's agent.
pub(crate) struct SandboxProcess {
    agent: Arc<AgentHandle>,
    /// pid inside the sprite (its process group and session there).
    pid: i32,
    /// pid as the server sees it: the session id, unique across sprites.
    host_pid: u32,
    exit: Receiver<i32>,
    /// Our ends of the stdio pipes.
    stdin: Option<File>,
    /// Read end of stdout.
    stdout: Option<OwnedFd>,
    /// Read end of stderr.
    stderr: Option<OwnedFd>,
}

impl ExecProcess for SandboxProcess {
    /// The session id (the host pid).
    fn id(&self) -> u32 {
        self.host_pid
    }

    fn take_stdio(&mut self) -> Stdio3 {
        Stdio3 {
            stdin: self.stdin.take(),
            stdout: self.stdout.take(),
            stderr: self.stderr.take(),
        }
    }

    /// A handle that signals this exec's process group through the agent.
    fn group(&self) -> Arc<dyn SignalGroup> {
        Arc::new(SandboxGroup {
            agent: self.agent.clone(),
            pid: self.pid,
        })
    }

    /// Blocks until the agent reports the exit (or dies, which killed the process). The
    /// agent reports only once it has reaped the process, and it signals only execs it has
    /// not reaped, so `on_exit` may run after the reaping here.
    fn wait(&mut self, on_exit: &mut dyn FnMut()) -> u8 {
        let st = self.exit.recv().unwrap_or(libc::SIGKILL);
        on_exit();
        if libc::WIFEXITED(st) {
            (libc::WEXITSTATUS(st) & 0xff) as u8
        } else if libc::WIFSIGNALED(st) {
            (128 + libc::WTERMSIG(st)) as u8
        } else {
            1
        }
    }
}

/// Signals one exec's process group inside its sprite.
struct SandboxGroup {
    agent: Arc<AgentHandle>,
    pid: i32,
}

impl SignalGroup for SandboxGroup {
    /// Sends `sig` to the group (the agent ignores execs that already ended).
    fn signal(&self, sig: i32) {
        self.agent.signal(self.pid, sig);
    }
}

/// The environment every exec starts from (nothing is inherited from the server).
fn base_env(cwd: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("HOME", user::HOME),
        ("USER", user::USER),
        ("LOGNAME", user::USER),
        ("PATH", agent::DEFAULT_PATH),
        ("LANG", "C.UTF-8"),
        ("PWD", cwd),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    env
}

impl SpriteRuntime for SandboxRuntime {
    fn limits(&self) -> String {
        self.cgroups.describe()
    }

    fn kind(&self) -> Runtime {
        Runtime::Sandbox
    }

    fn note(&self) -> String {
        let how = match &self.auto_reason {
            Some(r) => format!(" (auto: {r})"),
            None => String::new(),
        };
        let user = if self.userns {
            "a user namespace mapping the sprite user to this server's uid"
        } else {
            "uid 1000 `sprite` with no capabilities and no_new_privs"
        };
        format!(
            "runtime sandbox{how}: each sprite has its own root (overlay on {}), mount, PID, \
             UTS and IPC namespaces; commands run as {user}; network is shared with the host; \
             limits: {}",
            self.base.display(),
            self.cgroups.describe()
        )
    }

    fn create_sprite(&self, sprite_dir: &Path) -> io::Result<()> {
        rootfs::Layout::new(sprite_dir, &self.base, vec![], self.userns).create_dirs()
    }

    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError> {
        let agent = self.agent(sprite_dir).map_err(SpawnError::Io)?;
        let (cwd, fallback) = match spec.dir {
            Some(d) if d.starts_with('/') => (d.to_owned(), false),
            Some(d) => (format!("{}/{d}", user::HOME), false),
            None => (user::HOME.to_owned(), true),
        };
        let mut env = base_env(&cwd);
        env.extend(spec.env.iter().cloned()); // later entries win, as with Command::envs
        let (out_r, out_w) = sys::fd::pipe().map_err(SpawnError::Io)?;
        let (err_r, err_w) = sys::fd::pipe().map_err(SpawnError::Io)?;
        let (stdin_ours, stdin_theirs): (Option<File>, OwnedFd) = if spec.stdin {
            let (r, w) = sys::fd::pipe().map_err(SpawnError::Io)?;
            (Some(File::from(w)), r)
        } else {
            let null = File::open("/dev/null").map_err(SpawnError::Io)?;
            (None, OwnedFd::from(null))
        };
        let reply = agent
            .spawn(
                spec.program,
                spec.argv,
                env.into_iter().collect(),
                &cwd,
                fallback,
                [
                    stdin_theirs.as_raw_fd(),
                    out_w.as_raw_fd(),
                    err_w.as_raw_fd(),
                ],
            )
            .map_err(SpawnError::Io)?;
        // The child has its own copies now; ours must close so EOF can arrive.
        drop((stdin_theirs, out_w, err_w));
        match reply {
            handle::SpawnReply::Spawned {
                pid,
                host_pid,
                exit,
            } => Ok(Spawned {
                process: Box::new(SandboxProcess {
                    agent,
                    pid,
                    host_pid,
                    exit,
                    stdin: stdin_ours,
                    stdout: Some(out_r),
                    stderr: Some(err_r),
                }),
                workdir: cwd,
            }),
            handle::SpawnReply::Failed { stage, errno } if stage == "dir" => {
                let _ = errno;
                Err(SpawnError::InvalidDirectory(format!(
                    "working directory {:?} does not exist or is not a directory",
                    spec.dir.unwrap_or(user::HOME)
                )))
            }
            handle::SpawnReply::Failed { errno, .. } => {
                Err(SpawnError::Io(io::Error::from_raw_os_error(errno)))
            }
        }
    }

    /// The sprite's own filesystem, served from inside it by its agent (started now if it
    /// is not running): see [`fs::SandboxFs`].
    fn fs(&self, sprite_dir: &Path) -> Option<Box<dyn crate::fsops::SpriteFs>> {
        let agent = self
            .agent(sprite_dir)
            .map_err(|e| format!("the sprite's agent could not start: {e}"));
        Some(Box::new(fs::SandboxFs { agent }))
    }

    fn stop_sprite(&self, sprite_dir: &Path) {
        let agent = lock(&self.agents).remove(sprite_dir);
        if let Some(a) = agent {
            a.stop();
        }
        self.cgroups.remove(sprite_dir);
    }

    fn shutdown(&self) {
        let all: Vec<(PathBuf, Arc<AgentHandle>)> = lock(&self.agents).drain().collect();
        for (_, a) in &all {
            a.stop();
        }
        for (dir, _) in &all {
            self.cgroups.remove(dir);
        }
    }
}
