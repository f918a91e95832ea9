//! The sandbox runtime: every sprite is an isolated Linux environment (ARCHITECTURE.md §3).
//!
//! - [`entry`]: how the helper process is entered (an ELF constructor in a re-executed
//!   `/proc/self/exe`), so no namespace work ever happens in the server's threads.
//! - [`stub`]: the helper: builds the sprite (disk, upper layer, identity, root
//!   filesystem, network) and forks the agent.
//! - [`agent`]: PID 1 of the sprite, which spawns every exec and filesystem call inside.
//! - [`disk`]: the sprite's disk image (its quota); [`upper`]: its upper layer, prepared
//!   without following the sprite's symlinks; [`base_scan`]: what of the base it must not
//!   see; [`identity`]: its host id range; [`network`] and [`netlink`]: its network;
//!   [`rootfs`]: overlay, `/dev`, `/proc`, `pivot_root`.
//! - [`ipc`]: the control protocol (JSON + SCM_RIGHTS); [`handle`]: [`AgentHandle`], the
//!   server's handle on one sprite's agent; [`fs`]: the filesystem API, run inside.
//! - [`cgroup`]: a cgroup per sprite (v2, else v1): one CPU weight, memory/CPU limits.
//!
//! See the "Sandbox runtime" section of the crate README for the design and its choices.

mod agent;
mod base_scan;
mod cgroup;
mod disk;
mod entry;
mod fs;
mod handle;
mod identity;
mod ipc;
mod netlink;
mod network;
mod rootfs;
mod snapshots;
mod stub;
mod sudo;
mod upper;

pub(crate) use entry::helper_request;
pub(crate) use sudo::{is_sudo, main as sudo_main};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crossbeam_channel::Receiver;

use super::{
    ExecProcess, PortScope, ProcessSpec, ProcessTrees, Runtime, SignalGroup, SpawnError, Spawned,
    SpriteRuntime, Stdio3,
};
use crate::lock;
use crate::store::SpriteConfig;
use crate::sys;

use crate::policy::resolver::Resolver;
use base_scan::Hidden;
use handle::AgentHandle;
use ipc::{Privileged, ProcessLimits, StubConfig};

/// Options of the sandbox runtime (from the server builder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SandboxOptions {
    /// `RLIMIT_NPROC` of every sprite user: processes and threads per user inside a sprite.
    pub process_limit: u64,
    /// Where sprites' resolvers send the names their network policy allows (default: the
    /// first name server of the host's `/etc/resolv.conf`).
    pub dns_upstream: Option<std::net::SocketAddr>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            process_limit: DEFAULT_PROCESS_LIMIT,
            dns_upstream: None,
        }
    }
}

/// Default cap on processes (threads included) per user inside a sprite: enough for big
/// parallel builds, far below what would starve the host's pid space.
pub(crate) const DEFAULT_PROCESS_LIMIT: u64 = 4096;

/// Runs each sprite in its own namespaces on an overlay root (see the module docs).
pub(crate) struct SandboxRuntime {
    base: PathBuf,
    data_dir: PathBuf,
    /// The server runs as root: per-sprite id ranges, id-mapped base, disk images, veth.
    privileged: bool,
    /// Why `auto` chose this runtime (None when asked for explicitly).
    auto_reason: Option<String>,
    cgroups: cgroup::Cgroups,
    network: network::Network,
    /// Whether sprites get a disk image (their quota), or why not.
    disks: Result<(), String>,
    options: SandboxOptions,
    /// The base entries sprites must not see (root servers), computed in the background.
    hidden: Arc<Scan>,
    /// Running agents by sprite directory. Held while an agent starts, so two first execs
    /// of one sprite never start two agents.
    agents: Mutex<HashMap<PathBuf, Arc<AgentHandle>>>,
    /// Set (under `agents`) at shutdown: no agent starts after it (a sprite booting in the
    /// background would otherwise outlive the server).
    closed: std::sync::atomic::AtomicBool,
    /// Sprites' btrfs disks as detached mounts, kept across restarts of their agents (a
    /// restore restarts one) so a restart neither unmounts nor mounts the filesystem; let
    /// go when the sprite is deleted or the server stops. See `disk::mount`.
    held_disks: Mutex<HashMap<PathBuf, OwnedFd>>,
    /// The resolvers of running sprites with egress (their network policy), by directory.
    resolvers: Mutex<HashMap<PathBuf, Resolver>>,
    /// Where resolvers send allowed names.
    dns_upstream: Option<std::net::SocketAddr>,
}

/// Why the sandbox cannot run here.
pub(crate) fn check(
    data_dir: &Path,
    base: &Path,
    options: SandboxOptions,
) -> Result<SandboxRuntime, String> {
    let base = base
        .canonicalize()
        .map_err(|e| format!("base dir {}: {e}", base.display()))?;
    if !base.is_dir() {
        return Err(format!("base dir {} is not a directory", base.display()));
    }
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| format!("data dir {}: {e}", data_dir.display()))?;
    let privileged = sys::process::geteuid() == 0;
    let rt = SandboxRuntime {
        hidden: if privileged {
            Scan::of(&base)
        } else {
            Arc::new(Scan::done(Vec::new()))
        },
        base,
        data_dir,
        privileged,
        auto_reason: None,
        cgroups: cgroup::Cgroups::detect(),
        network: network::Network::detect(privileged),
        disks: if privileged {
            disk::supported()
        } else {
            Err("needs a root server (loop devices)".into())
        },
        dns_upstream: options.dns_upstream.or_else(network::host_upstream),
        options,
        agents: Mutex::new(HashMap::new()),
        closed: std::sync::atomic::AtomicBool::new(false),
        held_disks: Mutex::new(HashMap::new()),
        resolvers: Mutex::new(HashMap::new()),
    };
    rt.probe()?;
    Ok(rt)
}

/// The entries to hide, or why the scan failed.
type ScanResult = Arc<Result<Vec<Hidden>, String>>;

/// A base scan shared by every server of this process with the same base (tests start
/// many), run once on a background thread.
struct Scan {
    result: Mutex<Option<ScanResult>>,
    ready: Condvar,
}

impl Scan {
    fn done(hidden: Vec<Hidden>) -> Scan {
        Scan {
            result: Mutex::new(Some(Arc::new(Ok(hidden)))),
            ready: Condvar::new(),
        }
    }

    fn of(base: &Path) -> Arc<Scan> {
        static SCANS: OnceLock<Mutex<HashMap<PathBuf, Arc<Scan>>>> = OnceLock::new();
        let mut scans = lock(SCANS.get_or_init(Default::default));
        if let Some(s) = scans.get(base) {
            return s.clone();
        }
        let scan = Arc::new(Scan {
            result: Mutex::new(None),
            ready: Condvar::new(),
        });
        scans.insert(base.to_owned(), scan.clone());
        let (s, base) = (scan.clone(), base.to_owned());
        let skip: Vec<&str> = upper::MASKED
            .iter()
            .map(|(d, _)| *d)
            .chain(["proc", "sys", "dev"])
            .collect();
        let spawned = std::thread::Builder::new()
            .name("sprites-base-scan".into())
            .spawn(move || {
                let r = base_scan::scan_cached(&base, &skip).map_err(|e| e.to_string());
                *lock(&s.result) = Some(Arc::new(r));
                s.ready.notify_all();
            });
        if let Err(e) = spawned {
            *lock(&scan.result) = Some(Arc::new(Err(e.to_string())));
        }
        scan
    }

    /// Waits for the scan (bounded by the walk itself: it only reads directories).
    fn get(&self) -> ScanResult {
        let mut r = lock(&self.result);
        loop {
            if let Some(done) = &*r {
                return done.clone();
            }
            r = self.ready.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl SandboxRuntime {
    /// Marks this runtime as chosen by `auto`, for the startup note.
    pub(crate) fn chosen_by_auto(mut self) -> Self {
        self.auto_reason = Some("namespaces and overlayfs work here".into());
        self
    }

    /// The data dir as a path inside sprites (only if the base contains it).
    fn data_dir_masks(&self) -> Vec<String> {
        self.data_dir
            .strip_prefix(&self.base)
            .ok()
            .and_then(|rel| rel.to_str())
            .filter(|rel| !rel.is_empty())
            .map(|rel| vec![rel.to_owned()])
            .unwrap_or_default()
    }

    /// What the stub needs to build the sprite at `sprite_dir`.
    fn stub_config(&self, sprite_dir: &Path, hidden: Vec<Hidden>) -> io::Result<StubConfig> {
        let config = read_config(sprite_dir).unwrap_or_default();
        // The directory the sprite sees at /.sprite/policy must exist (best effort: a
        // sprite without it only misses that view).
        let _ = crate::policy::ensure_network_file(sprite_dir);
        let cgroups = self.cgroups.prepare(sprite_dir, &config);
        let privileged = if self.privileged {
            // A sprite made before identities existed already has files: they move.
            let legacy = sprite_dir
                .join("upper")
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some())
                || disk::has_image(sprite_dir);
            let identity = identity::ensure(sprite_dir, legacy)?;
            Some(Privileged {
                identity,
                hidden,
                egress: self.network.egress(),
                resolv_conf: match &self.network {
                    network::Network::Nat { resolv_conf } => Some(resolv_conf.clone()),
                    network::Network::Isolated(_) => None,
                },
            })
        } else {
            None
        };
        Ok(StubConfig {
            sprite_dir: sprite_dir.to_owned(),
            hostname: sprite_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sprite".into()),
            base: self.base.clone(),
            masks: self.data_dir_masks(),
            privileged,
            limits: ProcessLimits {
                nproc: self.options.process_limit,
                data_bytes: (!cgroups.memory_limited)
                    .then(|| config.ram_mb.saturating_mul(1 << 20)),
            },
            cgroups: cgroups.join,
        })
    }

    /// Starts a throwaway sprite's agent in the data dir: proves in one go that we may
    /// create the namespaces, mount the overlay (id-mapped, on a root server), `/proc` and
    /// `/dev`, and pivot.
    fn probe(&self) -> Result<(), String> {
        let tag = crate::random::hex(6).map_err(|e| e.to_string())?;
        let dir = self.data_dir.join(format!(".sandbox-probe-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let result = (|| {
            let mut cfg = self.stub_config(&dir, Vec::new())?;
            if let Some(p) = &mut cfg.privileged {
                p.egress = false; // no veth pair for a throwaway
            }
            let (agent, _) = AgentHandle::start(&cfg, &dir.join("agent.log"), None)?;
            agent.stop();
            Ok::<(), io::Error>(())
        })()
        .map_err(|e| e.to_string());
        self.cgroups.remove(&dir);
        identity::release(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The sprite's agent, started (or restarted) if needed.
    fn agent(&self, sprite_dir: &Path) -> io::Result<Arc<AgentHandle>> {
        // The scan is waited for before the lock: other sprites' execs go on meanwhile.
        let hidden = match &*self.hidden.get() {
            Ok(h) => h.clone(),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "scanning the base for entries sprites must not see: {e}"
                )))
            }
        };
        let mut agents = lock(&self.agents);
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("the server is shutting down"));
        }
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
        let cfg = self.stub_config(sprite_dir, hidden)?;
        let held = lock(&self.held_disks).remove(sprite_dir);
        let (agent, mut ready) =
            match AgentHandle::start(&cfg, &sprite_dir.join("agent.log"), held.as_ref()) {
                Err(e) if held.is_some() => {
                    // The kept mount could not be used (a kernel that cannot copy a detached
                    // mount): let the filesystem go and mount the image afresh.
                    eprintln!(
                    "sprites-local: sprite {}: reusing its mounted disk: {e}; mounting it again",
                    cfg.hostname
                );
                    drop(held);
                    AgentHandle::start(&cfg, &sprite_dir.join("agent.log"), None)?
                }
                other => other?,
            };
        if let Some(disk) = ready.disk.take() {
            lock(&self.held_disks).insert(sprite_dir.to_owned(), disk);
        }
        if let (true, Some(p)) = (ready.shifted, &cfg.privileged) {
            identity::shifted(sprite_dir, p.identity)?;
        }
        // Uploads an earlier server process left unfinished: their temp files go now, from
        // inside the sprite.
        crate::fsops::journal::clean(
            &fs::SandboxFs {
                agent: Ok(agent.clone()),
            },
            sprite_dir,
        );
        if let Some(why) = ready.unmapped_base {
            eprintln!(
                "sprites-local: sprite {}: {why}; root inside cannot change the base's own files",
                cfg.hostname
            );
        }
        agents.insert(sprite_dir.to_owned(), agent.clone());
        if cfg.privileged.as_ref().is_some_and(|p| p.egress) {
            self.start_resolver(sprite_dir, &agent);
        }
        Ok(agent)
    }

    /// Starts the resolver of a sprite with egress (its `/etc/resolv.conf` names it). A
    /// failure is logged: the sprite then resolves nothing, which denies more, never less.
    fn start_resolver(&self, sprite_dir: &Path, agent: &AgentHandle) {
        let started = agent.resolver_sockets().and_then(|socks| {
            Resolver::start(
                sprite_dir,
                socks.udp,
                Some(socks.tcp),
                Some(socks.netns),
                agent.exit_fd()?,
                self.dns_upstream,
            )
        });
        match started {
            Ok(r) => {
                lock(&self.resolvers).insert(sprite_dir.to_owned(), r);
            }
            Err(e) => eprintln!(
                "sprites-local: sprite {}: starting its resolver: {e}",
                sprite_dir.display()
            ),
        }
    }

    /// What is enforced for the sprite at `sprite_dir`, in one phrase.
    fn describe_limits(&self, sprite_dir: Option<&Path>) -> String {
        let disk = match (&self.disks, sprite_dir) {
            (Err(why), _) => format!("disk not limited ({why})"),
            (Ok(()), Some(d)) if !disk::has_image(d) => {
                "disk not limited (the sprite predates disk images)".to_owned()
            }
            (Ok(()), Some(d)) if disk::is_btrfs_image(d) => {
                "disk limited to storage_gb (a btrfs image; checkpoints are snapshots on it)"
                    .to_owned()
            }
            (Ok(()), None) if disk::btrfs_available() => {
                "disk limited to storage_gb (a btrfs image; checkpoints are snapshots on it)"
                    .to_owned()
            }
            (Ok(()), _) => "disk limited to storage_gb (an ext4 image; no checkpoints)".to_owned(),
        };
        format!(
            "at most {} processes per user (RLIMIT_NPROC); memory: {}; cpu: {}; {disk}",
            self.options.process_limit,
            self.cgroups.describe_memory(),
            self.cgroups.describe_cpu(),
        )
    }
}

/// What the sprite's privileges and resources policies set on each new process.
fn exec_policy(sprite_dir: &Path) -> ipc::ExecPolicy {
    ipc::ExecPolicy {
        no_new_privs: crate::policy::privileges(sprite_dir).no_new_privs(),
        data_bytes: crate::policy::resources(sprite_dir).limit_bytes(),
    }
}

/// What the sandbox enforces of a policy (the policy routes' header; PROTOCOL.md §13).
fn policy_note(
    kind: crate::policy::Kind,
    net: &network::Network,
    upstream: Option<std::net::SocketAddr>,
) -> String {
    use crate::policy::Kind;
    match (kind, net) {
        (Kind::Network, network::Network::Nat { .. }) => format!(
            "enforced in the sprite's network namespace: names resolved through its resolver \
             (127.0.0.53, UDP and TCP) are REFUSED when denied and forwarded to {} when \
             allowed; with a default-deny list, connections to addresses no allowed name \
             resolved to are rejected (nftables); with deny rules only, addresses are not \
             blocked, and an address an allowed name also resolves to stays reachable",
            upstream.map_or("no upstream (SERVFAIL)".to_owned(), |u| u.to_string())
        ),
        (Kind::Network, network::Network::Isolated(why)) => format!(
            "nothing to enforce: sprites have no network beyond their loopback here ({why}); \
             stored and shown read-only at /.sprite/policy/network.json"
        ),
        (Kind::Privileges, _) => "noNewPrivileges (and profile \"minimal\") set \
             PR_SET_NO_NEW_PRIVS on every new process (sudo stops working); devices and the \
             other profiles are stored only"
            .to_owned(),
        (Kind::Resources, _) => "memory.limit_mb caps every new process's data segment \
             (RLIMIT_DATA, per process); autoscale is stored only"
            .to_owned(),
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
    /// pid as the server sees it, for the port scanner.
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
    /// The session id: the pid in the sprite's PID namespace.
    fn id(&self) -> u32 {
        self.pid as u32
    }

    fn host_pid(&self) -> u32 {
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
        ("HOME", upper::HOME),
        ("USER", upper::USER),
        ("LOGNAME", upper::USER),
        ("PATH", agent::DEFAULT_PATH),
        ("LANG", "C.UTF-8"),
        ("PWD", cwd),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    env
}

/// A spawn request's answer as the runtime's result. `stdio` is the server's ends of the
/// pipes; `None` for a TTY exec, whose stdio is the terminal master in the reply.
fn spawned(
    agent: Arc<AgentHandle>,
    reply: handle::SpawnReply,
    stdio: Option<Stdio3>,
    spec: &ProcessSpec<'_>,
    cwd: String,
) -> Result<Spawned, SpawnError> {
    match reply {
        handle::SpawnReply::Spawned {
            pid,
            host_pid,
            exit,
            terminal,
        } => {
            let stdio = match (stdio, terminal) {
                (Some(pipes), _) => pipes,
                (None, Some(master)) => Stdio3::terminal(master).map_err(SpawnError::Io)?,
                (None, None) => {
                    return Err(SpawnError::Io(io::Error::other(
                        "the sprite's agent sent no terminal for a TTY exec",
                    )))
                }
            };
            Ok(Spawned {
                process: Box::new(SandboxProcess {
                    agent,
                    pid,
                    host_pid,
                    exit,
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                }),
                workdir: cwd,
            })
        }
        handle::SpawnReply::Failed { stage, .. } if stage == "dir" => {
            Err(SpawnError::InvalidDirectory(format!(
                "working directory {:?} does not exist or is not a directory",
                spec.dir.unwrap_or(upper::HOME)
            )))
        }
        handle::SpawnReply::Failed { errno, .. } => {
            Err(SpawnError::Io(io::Error::from_raw_os_error(errno)))
        }
    }
}

impl SpriteRuntime for SandboxRuntime {
    fn limits(&self) -> String {
        self.describe_limits(None)
    }

    fn limits_of(&self, sprite_dir: &Path) -> String {
        self.describe_limits(Some(sprite_dir))
    }

    fn kind(&self) -> Runtime {
        Runtime::Sandbox
    }

    fn note(&self) -> String {
        let how = match &self.auto_reason {
            Some(r) => format!(" (auto: {r})"),
            None => String::new(),
        };
        let user = if self.privileged {
            format!(
                "`{}` in a user namespace of its own: ids 0-65535 inside are a range of host \
                 ids no host user has (root inside is nobody outside; `sudo` works)",
                upper::USER
            )
        } else {
            format!(
                "`{}` in a user namespace mapping it to this server's uid (no root inside)",
                upper::USER
            )
        };
        format!(
            "runtime sandbox{how}: each sprite has its own root (overlay on {}), mount, PID, \
             UTS, IPC and network namespaces; commands run as {user}; network: {}; limits: {}",
            self.base.display(),
            self.network.describe(),
            self.describe_limits(None),
        )
    }

    fn create_sprite(&self, sprite_dir: &Path, config: &SpriteConfig) -> io::Result<()> {
        if self.privileged {
            identity::ensure(sprite_dir, false)?;
        }
        if self.disks.is_ok() {
            disk::create(sprite_dir, config.storage_gb.max(1).saturating_mul(1 << 30))?;
        }
        Ok(())
    }

    fn spawn(&self, sprite_dir: &Path, spec: &ProcessSpec<'_>) -> Result<Spawned, SpawnError> {
        let agent = self.agent(sprite_dir).map_err(SpawnError::Io)?;
        let (cwd, fallback) = match spec.dir {
            Some(d) if d.starts_with('/') => (d.to_owned(), false),
            Some(d) => (format!("{}/{d}", upper::HOME), false),
            None => (upper::HOME.to_owned(), true),
        };
        let mut env = base_env(&cwd);
        if spec.tty.is_some() {
            env.insert("TERM".into(), crate::runtime::DEFAULT_TERM.into());
        }
        env.extend(spec.env.iter().cloned()); // later entries win, as with Command::envs
        if let Some(size) = spec.tty {
            let what = handle::SpawnArgs {
                program: spec.program,
                argv: spec.argv,
                env: env.into_iter().collect(),
                cwd: &cwd,
                fallback_cwd: fallback,
                tty: Some((size.rows, size.cols)),
                policy: exec_policy(sprite_dir),
                end_group_with_leader: spec.end_group_with_leader,
            };
            let reply = agent.spawn(what, &[]).map_err(SpawnError::Io)?;
            return spawned(agent, reply, None, spec, cwd);
        }
        let (out_r, out_w) = sys::fd::pipe().map_err(SpawnError::Io)?;
        let (err_r, err_w) = sys::fd::pipe().map_err(SpawnError::Io)?;
        let (stdin_ours, stdin_theirs): (Option<File>, OwnedFd) = if spec.stdin {
            let (r, w) = sys::fd::pipe().map_err(SpawnError::Io)?;
            (Some(File::from(w)), r)
        } else {
            let null = File::open("/dev/null").map_err(SpawnError::Io)?;
            (None, OwnedFd::from(null))
        };
        let what = handle::SpawnArgs {
            program: spec.program,
            argv: spec.argv,
            env: env.into_iter().collect(),
            cwd: &cwd,
            fallback_cwd: fallback,
            tty: None,
            policy: exec_policy(sprite_dir),
            end_group_with_leader: spec.end_group_with_leader,
        };
        let stdio = [
            stdin_theirs.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
        ];
        let reply = agent.spawn(what, &stdio).map_err(SpawnError::Io)?;
        // The child has its own copies now; ours must close so EOF can arrive.
        drop((stdin_theirs, out_w, err_w));
        let stdio = Stdio3 {
            stdin: stdin_ours,
            stdout: Some(out_r),
            stderr: Some(err_r),
        };
        spawned(agent, reply, Some(stdio), spec, cwd)
    }

    /// The sprite's own filesystem, served from inside it by its agent (started now if it
    /// is not running): see [`fs::SandboxFs`].
    fn fs(&self, sprite_dir: &Path) -> Option<Box<dyn crate::fsops::SpriteFs>> {
        let agent = self
            .agent(sprite_dir)
            .map_err(|e| format!("the sprite's agent could not start: {e}"));
        Some(Box::new(crate::fsops::journal::Journaled::new(
            Box::new(fs::SandboxFs { agent }),
            sprite_dir,
        )))
    }

    /// Starts the sprite's agent (PID 1 inside) if it is not running.
    fn boot(&self, sprite_dir: &Path) -> io::Result<()> {
        self.agent(sprite_dir).map(|_| ())
    }

    /// Stops the agent, which ends every process of the sprite (its PID namespace goes), and
    /// its resolver, and removes its cgroup; its identity (id range) and files stay for the
    /// next boot.
    fn halt(&self, sprite_dir: &Path) {
        lock(&self.resolvers).remove(sprite_dir);
        let agent = lock(&self.agents).remove(sprite_dir);
        if let Some(a) = agent {
            a.stop();
        }
        self.cgroups.remove(sprite_dir);
    }

    fn policy_changed(&self, sprite_dir: &Path) {
        // Not under the lock: a reload runs `nft`, other sprites need not wait for it.
        let resolver = lock(&self.resolvers).get(sprite_dir).cloned();
        if let Some(r) = resolver {
            r.reload();
        }
    }

    fn policy_note(&self, kind: crate::policy::Kind) -> String {
        policy_note(kind, &self.network, self.dns_upstream)
    }

    /// The agent runs and answers a request (it makes a socket for us: one round trip).
    fn health(&self, sprite_dir: &Path) -> Result<(), String> {
        let agent = lock(&self.agents)
            .get(sprite_dir)
            .cloned()
            .ok_or_else(|| "the sprite's agent is not running".to_owned())?;
        agent
            .port_socket()
            .map(drop)
            .map_err(|e| format!("the sprite's agent does not answer: {e}"))
    }

    fn stop_sprite(&self, sprite_dir: &Path) {
        lock(&self.resolvers).remove(sprite_dir);
        let agent = lock(&self.agents).remove(sprite_dir);
        if let Some(a) = agent {
            a.stop();
        }
        lock(&self.held_disks).remove(sprite_dir);
        self.cgroups.remove(sprite_dir);
        identity::release(sprite_dir);
    }

    fn shutdown(&self) {
        let all: Vec<(PathBuf, Arc<AgentHandle>)> = {
            let mut agents = lock(&self.agents);
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            agents.drain().collect()
        };
        lock(&self.resolvers).clear();
        for (_, a) in &all {
            a.stop();
        }
        for (dir, _) in &all {
            self.cgroups.remove(dir);
        }
        lock(&self.held_disks).clear();
    }

    /// A btrfs snapshot taken by the sprite's agent (started if needed): see [`snapshots`].
    fn snapshot(
        &self,
        sprite_dir: &Path,
        id: &str,
        _previous: Option<&str>,
        _progress: &mut super::Report<'_>,
    ) -> io::Result<()> {
        self.agent(sprite_dir)?
            .snapshot(snapshots::SnapshotOp::Create { id: id.to_owned() })
    }

    /// Stops the sprite (its agent, and so every process in it), leaves the stub a note to
    /// swap in a writable snapshot of `id` before it mounts the overlay, and starts it again
    /// so the swap happens now ([`disk::apply_restore`]).
    fn restore(
        &self,
        sprite_dir: &Path,
        id: &str,
        progress: &mut super::Report<'_>,
    ) -> io::Result<()> {
        let pending = sprite_dir.join(disk::RESTORE_PENDING);
        let tmp = sprite_dir.join(format!("{}.tmp", disk::RESTORE_PENDING));
        std::fs::write(&tmp, id)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &pending)?;
        let old = lock(&self.agents).remove(sprite_dir);
        if let Some(a) = old {
            a.stop();
        }
        progress(0.3, "Sprite stopped; starting it on the checkpoint's files");
        match self.agent(sprite_dir) {
            Ok(_) if !pending.exists() => Ok(()),
            Ok(_) => Err(io::Error::other("the restore was not applied")),
            Err(e) => {
                // A restore that cannot be applied must not keep the sprite from starting.
                let _ = std::fs::remove_file(&pending);
                let _ = self.agent(sprite_dir);
                Err(e)
            }
        }
    }

    /// Sprites with a btrfs disk image (root server, btrfs-progs installed at create).
    fn checkpoints_supported(&self, sprite_dir: &Path) -> Result<(), String> {
        if !disk::has_image(sprite_dir) {
            return Err(match &self.disks {
                Err(why) => format!("checkpoints need the sprite's own disk image: {why}"),
                Ok(()) => "this sprite predates disk images: it has no checkpoints".into(),
            });
        }
        if !disk::is_btrfs_image(sprite_dir) {
            return Err(
                "this sprite's disk is ext4 (made without btrfs-progs): checkpoints \
                        need a btrfs disk"
                    .into(),
            );
        }
        Ok(())
    }

    fn delete_snapshot(&self, sprite_dir: &Path, id: &str) -> io::Result<()> {
        self.agent(sprite_dir)?
            .snapshot(snapshots::SnapshotOp::Delete { id: id.to_owned() })
    }

    /// The sprite has a network namespace of its own, which its agent (PID 1 inside) is
    /// in: the agent makes the diagnostics socket there, so it lists exactly the sprite's
    /// sockets, and the agent's children lead its process trees. A sprite whose agent is
    /// not running has no process, hence no port (the agent is not started for this).
    /// The socket is made by the sprite's agent, in the sprite's network namespace (where
    /// it stays for its whole life), and connected here: the sprite's loopback, its view
    /// of the network. Names resolve with the server's resolver (`localhost` is a loopback
    /// address either way, and so the sprite's).
    fn connect_tcp(
        &self,
        sprite_dir: &Path,
        host: &str,
        port: u16,
        timeout: std::time::Duration,
    ) -> io::Result<std::net::TcpStream> {
        let agent = self.agent(sprite_dir)?;
        super::connect_any(host, port, timeout, |addr, t| {
            let sock = agent.tcp_socket(addr.is_ipv6())?;
            crate::sys::tcp::connect(sock, addr, t)
        })
    }

    fn port_scope(&self, sprite_dir: &Path, _execs: &[u32]) -> Option<PortScope> {
        let agent = lock(&self.agents)
            .get(sprite_dir)
            .filter(|a| a.is_alive())
            .cloned()?;
        Some(PortScope {
            diag: agent.port_socket().ok()?,
            own_network: true,
            trees: ProcessTrees::ChildrenOf(agent.host_pid()?),
            own_pids: true,
        })
    }
}
