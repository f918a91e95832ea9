//! Best-effort resource limits from a sprite's config (`ram_mb`, `cpus`) through cgroup v2.
//!
//! Limits apply only where the server's own cgroup v2 directory offers the `memory` and
//! `cpu` controllers and lets us enable them for children; otherwise sprites run without
//! limits and the startup line says why. Each sprite gets `sprites-local-<name>` below the
//! server's cgroup, and its helper moves itself there before creating the namespaces, so
//! every process of the sprite is inside.

use std::fs;
use std::path::{Path, PathBuf};

use crate::store::SpriteConfig;

/// Where (and whether) sprites can get limits.
pub struct Cgroups {
    /// The directory sprite cgroups are created in, when limits work.
    parent: Option<PathBuf>,
    /// Why limits are off.
    reason: String,
}

impl Cgroups {
    /// Finds the server's cgroup v2 directory and checks it can host limited children.
    pub fn detect() -> Cgroups {
        match find_parent() {
            Ok(p) => Cgroups {
                parent: Some(p),
                reason: String::new(),
            },
            Err(reason) => Cgroups {
                parent: None,
                reason,
            },
        }
    }

    /// Whether sprites get cgroup limits here.
    pub fn enforced(&self) -> bool {
        self.parent.is_some()
    }

    /// One phrase for the startup line.
    pub fn describe(&self) -> String {
        match &self.parent {
            Some(p) => format!(
                "ram_mb and cpus enforced by cgroup v2 under {}",
                p.display()
            ),
            None => format!("not enforced ({})", self.reason),
        }
    }

    /// The cgroup a sprite's helper should join (created with its limits), if any.
    pub fn prepare(&self, sprite_dir: &Path, cfg: &SpriteConfig) -> Option<PathBuf> {
        let dir = self.dir_for(sprite_dir)?;
        fs::create_dir_all(&dir).ok()?;
        let mem = cfg.ram_mb.saturating_mul(1024 * 1024);
        fs::write(dir.join("memory.max"), mem.to_string()).ok()?;
        // cpu.max = "quota period": `cpus` full CPUs per 100 ms period.
        let quota = cfg.cpus.max(1).saturating_mul(100_000);
        fs::write(dir.join("cpu.max"), format!("{quota} 100000")).ok()?;
        Some(dir)
    }

    /// Removes a sprite's cgroup (it must be empty, i.e. the sprite stopped).
    pub fn remove(&self, sprite_dir: &Path) {
        if let Some(dir) = self.dir_for(sprite_dir) {
            let _ = fs::remove_dir(dir);
        }
    }

    fn dir_for(&self, sprite_dir: &Path) -> Option<PathBuf> {
        let name = sprite_dir.file_name()?.to_str()?;
        Some(self.parent.as_ref()?.join(format!("sprites-local-{name}")))
    }
}

fn find_parent() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // Field 5 is the mount point; the filesystem type follows the " - " separator.
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup v2 mount")?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("not in a cgroup v2 hierarchy")?;
    let parent = mount.join(rel.trim_start_matches('/'));
    let controllers = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("memory") && has("cpu")) {
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
