//! A cgroup per sprite: its share of the CPU, and best-effort limits from its config
//! (`ram_mb`, `cpus`).
//!
//! Without a cgroup, every process a sprite starts in a session of its own (`setsid`) is its
//! own scheduling entity (the kernel's autogroups), so a sprite that starts a few hundred
//! busy processes takes nearly all of the CPU from the server's threads and from other
//! sprites: the API answers in seconds. Inside a cgroup of the `cpu` controller, a sprite is
//! one entity however many processes it runs, with the same weight as the server.
//!
//! Where the server's own cgroup v2 directory offers the `memory` and `cpu` controllers and
//! lets us enable them for children, each sprite gets `sprites-local-<name>-<hash>` there
//! (`memory.max`, `cpu.max`). Elsewhere the cgroup v1 hierarchies of `cpu` and `memory` are
//! used if they are mounted and writable (`cpu.cfs_quota_us`, `memory.limit_in_bytes`), each
//! on its own. The hash is of the sprite's directory, so two servers' sprites of one name
//! never share a cgroup. The sprite's helper joins them before it creates the namespaces, so
//! every process of the sprite is inside. Without any, sprites run unlimited and the startup
//! line says why.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::fingerprint::fnv1a;
use crate::store::SpriteConfig;

/// The CFS period the `cpus` quota is a multiple of: 100 ms, the kernel's default.
const PERIOD_US: u64 = 100_000;

/// Where (and whether) sprites get cgroups.
pub struct Cgroups {
    kind: Kind,
    /// Why there are none, or what is missing.
    reason: String,
}

enum Kind {
    /// cgroup v2: one directory, both controllers enabled for its children.
    Unified(PathBuf),
    /// cgroup v1: a hierarchy per controller, each where it is mounted and writable.
    Split {
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// The cgroups one sprite's helper joins.
pub struct Prepared {
    /// Directories to write the helper's pid to (`cgroup.procs`).
    pub join: Vec<PathBuf>,
    /// `ram_mb` is enforced by one of them (otherwise every process gets `RLIMIT_DATA`).
    pub memory_limited: bool,
}

impl Cgroups {
    /// Finds where the server may make child cgroups: v2 with both controllers, else v1.
    pub fn detect() -> Cgroups {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let v2 = match unified_parent(&mountinfo, &own) {
            Ok(parent) => {
                return Cgroups {
                    kind: Kind::Unified(parent),
                    reason: String::new(),
                };
            }
            Err(why) => why,
        };
        let cpu = v1_parent(&mountinfo, &own, "cpu").filter(|p| writable(p));
        let memory = v1_parent(&mountinfo, &own, "memory").filter(|p| writable(p));
        let missing: Vec<&str> = [("cpu", cpu.is_none()), ("memory", memory.is_none())]
            .into_iter()
            .filter_map(|(c, missing)| missing.then_some(c))
            .collect();
        let reason = if missing.is_empty() {
            String::new()
        } else {
            format!("{v2}; no writable cgroup v1 {}", missing.join(" or "))
        };
        Cgroups {
            kind: Kind::Split { cpu, memory },
            reason,
        }
    }

    /// How a sprite's memory is limited, in one phrase (for `resource_limits`).
    pub fn describe_memory(&self) -> String {
        match self.memory_dir() {
            Some((v, dir)) => format!("ram_mb (cgroup {v} under {})", dir.display()),
            None => format!(
                "ram_mb per process (RLIMIT_DATA; no cgroup memory controller: {})",
                self.reason
            ),
        }
    }

    /// How a sprite's CPU use is bounded, in one phrase (for `resource_limits`).
    pub fn describe_cpu(&self) -> String {
        match self.cpu_dir() {
            Some((v, dir)) => format!(
                "one scheduling weight for all of the sprite's processes, at most cpus \
                 CPUs (cgroup {v} under {})",
                dir.display()
            ),
            None => format!(
                "not limited (no cgroup cpu controller: {}): a sprite with many busy \
                 processes slows the server and other sprites",
                self.reason
            ),
        }
    }

    fn memory_dir(&self) -> Option<(&str, &Path)> {
        match &self.kind {
            Kind::Unified(p) => Some(("v2", p)),
            Kind::Split { memory, .. } => memory.as_deref().map(|p| ("v1 memory", p)),
        }
    }

    fn cpu_dir(&self) -> Option<(&str, &Path)> {
        match &self.kind {
            Kind::Unified(p) => Some(("v2", p)),
            Kind::Split { cpu, .. } => cpu.as_deref().map(|p| ("v1 cpu", p)),
        }
    }

    /// Creates the sprite's cgroups with its limits: the ones its helper should join.
    pub fn prepare(&self, sprite_dir: &Path, cfg: &SpriteConfig) -> Prepared {
        let mem = cfg.ram_mb.saturating_mul(1024 * 1024).to_string();
        let quota = cfg.cpus.max(1).saturating_mul(PERIOD_US);
        let mut prepared = Prepared {
            join: Vec::new(),
            memory_limited: false,
        };
        for (dir, controller) in self.dirs_for(sprite_dir) {
            if fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let limited = match controller {
                Controller::Both => {
                    fs::write(dir.join("memory.max"), &mem).is_ok()
                        && fs::write(dir.join("cpu.max"), format!("{quota} {PERIOD_US}")).is_ok()
                }
                Controller::Cpu => {
                    // The share is what keeps the server responsive; a quota the parent's
                    // own quota refuses leaves it at that.
                    let _ = fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())
                        .and_then(|()| fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()));
                    true
                }
                Controller::Memory => fs::write(dir.join("memory.limit_in_bytes"), &mem).is_ok(),
            };
            if limited {
                prepared.memory_limited |= controller != Controller::Cpu;
                prepared.join.push(dir);
            }
        }
        prepared
    }

    /// Removes a sprite's cgroups (they must be empty, i.e. the sprite stopped).
    pub fn remove(&self, sprite_dir: &Path) {
        for (dir, _) in self.dirs_for(sprite_dir) {
            let _ = fs::remove_dir(dir);
        }
    }

    fn dirs_for(&self, sprite_dir: &Path) -> Vec<(PathBuf, Controller)> {
        let Some(name) = sprite_dir.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let leaf = format!(
            "sprites-local-{name}-{:08x}",
            fnv1a(sprite_dir.as_os_str().as_bytes()) as u32
        );
        match &self.kind {
            Kind::Unified(p) => vec![(p.join(&leaf), Controller::Both)],
            Kind::Split { cpu, memory } => [(cpu, Controller::Cpu), (memory, Controller::Memory)]
                .into_iter()
                .filter_map(|(p, c)| Some((p.as_ref()?.join(&leaf), c)))
                .collect(),
        }
    }
}

/// What a sprite cgroup directory controls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Controller {
    /// cgroup v2: memory and CPU.
    Both,
    Cpu,
    Memory,
}

/// The server's cgroup v2 directory, if it offers `memory` and `cpu` to children.
fn unified_parent(mountinfo: &str, own: &str) -> Result<PathBuf, String> {
    let parent = unified_dir(mountinfo, own)?;
    let controllers = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    if !offers(&controllers, &["memory", "cpu"]) {
        return Err(format!(
            "cgroup v2 at {} offers no memory/cpu controller",
            parent.display()
        ));
    }
    fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu").map_err(|e| {
        format!(
            "cannot enable memory/cpu for child cgroups of {}: {e}",
            parent.display()
        )
    })?;
    Ok(parent)
}

/// The server's directory in the cgroup v2 hierarchy: its mount point plus the server's path.
fn unified_dir(mountinfo: &str, own: &str) -> Result<PathBuf, String> {
    // Field 5 is the mount point; the filesystem type follows the " - " separator.
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup v2 mount")?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("not in a cgroup v2 hierarchy")?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Whether a `cgroup.controllers` list names every one of `wanted`.
fn offers(controllers: &str, wanted: &[&str]) -> bool {
    wanted
        .iter()
        .all(|w| controllers.split_whitespace().any(|c| c == *w))
}

/// The server's own directory in the cgroup v1 hierarchy of `controller`, from
/// `/proc/self/mountinfo` and `/proc/self/cgroup`: the hierarchy's mount point, plus the
/// server's path in it below the mount's root.
fn v1_parent(mountinfo: &str, own: &str, controller: &str) -> Option<PathBuf> {
    let (root, mount) = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split(' ');
        let (fstype, options) = (post.next()?, post.nth(1)?);
        if fstype != "cgroup" || !options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut pre = pre.split(' ').skip(3);
        Some((pre.next()?.to_owned(), PathBuf::from(pre.next()?)))
    })?;
    // `N:cpu,cpuacct:/path`.
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })?;
    let below = Path::new(path).strip_prefix(&root).ok()?;
    Some(mount.join(below))
}

/// Whether the server may make child cgroups in `dir` (made and removed at once).
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!("sprites-local-probe-{}", std::process::id()));
    fs::create_dir(&probe).is_ok() && fs::remove_dir(&probe).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 1 0:22 / / rw,relatime - overlay overlay rw
31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 25 0:30 /process_api /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "\
4:memory:/process_api/0b01
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn v1_hierarchies_are_found_below_their_mount_roots() {
        assert_eq!(
            v1_parent(MOUNTINFO, OWN, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/"))
        );
        // The mount's root is `/process_api`: the server's path is below it.
        assert_eq!(
            v1_parent(MOUNTINFO, OWN, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/0b01"))
        );
        assert_eq!(v1_parent(MOUNTINFO, OWN, "pids"), None);
        // A path outside the mount's root is not reachable through that mount.
        assert_eq!(
            v1_parent(MOUNTINFO, "4:memory:/elsewhere\n", "memory"),
            None
        );
        // Controllers mounted together (`cpu,cpuacct`) are found by either name.
        let together =
            "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            v1_parent(together, "3:cpu,cpuacct:/a/b\n", "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/b"))
        );
    }

    #[test]
    fn the_v2_directory_is_the_mount_point_plus_the_servers_path() {
        assert_eq!(
            unified_dir(MOUNTINFO, "0::/system.slice/x.service\n"),
            Ok(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/x.service"
            ))
        );
        assert!(unified_dir(MOUNTINFO, "1:cpu:/\n").is_err());
        let v1_only = "31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(unified_dir(v1_only, OWN).is_err());
    }

    #[test]
    fn controllers_are_matched_by_whole_name() {
        assert!(offers("cpuset cpu io memory pids", &["memory", "cpu"]));
        assert!(!offers("cpuset io memory pids", &["memory", "cpu"]));
        assert!(!offers("cpuset cpu io pids", &["memory", "cpu"]));
        assert!(!offers("", &["cpu"]));
    }

    /// A scratch directory standing in for a cgroup parent: `prepare` writes plain files
    /// there, as the kernel's cgroup files would take them.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sprites-local-cgroup-test-{tag}-{}",
            crate::random::hex(6).unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn v2_limits_are_written_and_removed_with_the_sprite() {
        let parent = scratch("v2");
        let cgroups = Cgroups {
            kind: Kind::Unified(parent.clone()),
            reason: String::new(),
        };
        let cfg = SpriteConfig {
            ram_mb: 64,
            cpus: 2,
            ..SpriteConfig::default()
        };
        let sprite = Path::new("/data/sprites/box");
        let prepared = cgroups.prepare(sprite, &cfg);
        assert_eq!(prepared.join.len(), 1);
        assert!(prepared.memory_limited);
        let dir = &prepared.join[0];
        assert_eq!(read(dir, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(dir, "cpu.max"), "200000 100000");
        for f in ["memory.max", "cpu.max"] {
            fs::remove_file(dir.join(f)).unwrap();
        }
        cgroups.remove(sprite);
        assert!(!dir.exists());
        fs::remove_dir(&parent).unwrap();
    }

    #[test]
    fn v1_limits_are_written_per_hierarchy() {
        let (cpu, memory) = (scratch("v1cpu"), scratch("v1mem"));
        let both = Cgroups {
            kind: Kind::Split {
                cpu: Some(cpu.clone()),
                memory: Some(memory.clone()),
            },
            reason: String::new(),
        };
        let cfg = SpriteConfig {
            ram_mb: 100,
            cpus: 3,
            ..SpriteConfig::default()
        };
        let sprite = Path::new("/data/sprites/box");
        let prepared = both.prepare(sprite, &cfg);
        assert_eq!(prepared.join.len(), 2);
        assert!(prepared.memory_limited);
        assert_eq!(read(&prepared.join[0], "cpu.cfs_quota_us"), "300000");
        assert_eq!(read(&prepared.join[0], "cpu.cfs_period_us"), "100000");
        assert_eq!(
            read(&prepared.join[1], "memory.limit_in_bytes"),
            (100u64 << 20).to_string()
        );
        // CPU alone: joined, but memory is left to RLIMIT_DATA.
        let cpu_only = Cgroups {
            kind: Kind::Split {
                cpu: Some(cpu.clone()),
                memory: None,
            },
            reason: "no memory".into(),
        };
        let prepared = cpu_only.prepare(sprite, &cfg);
        assert_eq!(prepared.join.len(), 1);
        assert!(!prepared.memory_limited);
        assert!(cpu_only.describe_memory().contains("RLIMIT_DATA"));
        assert!(cpu_only.describe_cpu().contains("one scheduling weight"));
        assert!(both.describe_memory().contains("cgroup v1 memory"));
        let _ = fs::remove_dir_all(&cpu);
        let _ = fs::remove_dir_all(&memory);
    }

    #[test]
    fn sprites_of_one_name_in_two_data_dirs_get_two_cgroups() {
        let cgroups = Cgroups {
            kind: Kind::Split {
                cpu: Some(PathBuf::from("/cg/cpu")),
                memory: None,
            },
            reason: String::new(),
        };
        let a = cgroups.dirs_for(Path::new("/data/one/sprites/box"));
        let b = cgroups.dirs_for(Path::new("/data/two/sprites/box"));
        assert_eq!(a.len(), 1);
        assert_ne!(a[0].0, b[0].0);
        assert!(a[0].0.starts_with("/cg/cpu"));
        let leaf = a[0].0.file_name().unwrap().to_str().unwrap();
        assert!(leaf.starts_with("sprites-local-box-"), "{leaf}");
    }
}
