//! Sprite metadata: the in-memory table and its persistence under
//! `DATA_DIR/sprites/<name>/sprite.json`.
//!
//! Every change is written to disk atomically (temp file in the same directory, fsync,
//! rename, fsync the directory) before it becomes visible in memory, so a crash or a
//! restart never loses or half-writes a sprite.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lock;

/// Makes `dir` ready to hold sprites: created `0700` if missing (parents as `mkdir -p`
/// would), tightened to `0700` if others could read it, and refused if others could write
/// it (someone else could then swap a sprite's files, or its disk image, under us).
pub fn prepare_data_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("data dir {} is not a directory", dir.display()),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "data dir {} is writable by other users (mode {mode:04o}), who could replace \
                 sprites' files: run `chmod go-w {}` (sprites-local keeps it 0700)",
                dir.display(),
                dir.display()
            ),
        ));
    }
    if mode & 0o077 != 0 {
        // Readable by others: every sprite's files would be too.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700))?;
    }
    Ok(())
}

/// Per-sprite metadata file name.
const META_FILE: &str = "sprite.json";
/// Prefix of directories being deleted (renamed away first so the name is free at once).
const TRASH_PREFIX: &str = ".trash-";

/// Resources a sprite was created with (informational in this emulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpriteConfig {
    /// Memory in MiB.
    pub ram_mb: u64,
    /// CPU count.
    pub cpus: u64,
    /// Region; always `local` here.
    pub region: String,
    /// Disk in GB.
    pub storage_gb: u64,
}

impl Default for SpriteConfig {
    fn default() -> Self {
        SpriteConfig {
            ram_mb: 8192,
            cpus: 8,
            region: "local".into(),
            storage_gb: 100,
        }
    }
}

/// Who may reach the sprite's URL (`auth`: `sprite` or `public`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlSettings {
    /// `sprite` (org members) or `public`.
    pub auth: String,
    /// Opaque grant string passed through as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_access: Option<String>,
}

impl Default for UrlSettings {
    fn default() -> Self {
        UrlSettings {
            auth: "sprite".into(),
            private_access: None,
        }
    }
}

/// What is persisted per sprite. `status` is not stored: it follows from running execs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpriteRecord {
    /// UUID-like id.
    pub id: String,
    /// Unique name (see [`valid_name`]).
    pub name: String,
    /// Resources.
    #[serde(default)]
    pub config: SpriteConfig,
    /// Environment applied to every exec (before the exec's own `env` params).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last metadata change.
    pub updated_at: String,
    /// URL access settings.
    #[serde(default)]
    pub url_settings: UrlSettings,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// RFC 3339 time the last exec started; `None` = never ran (status `cold`).
    #[serde(default)]
    pub last_running_at: Option<String>,
    /// RFC 3339 time the sprite last went from `running` to `warm` (idle).
    #[serde(default)]
    pub last_warming_at: Option<String>,
}

/// True for a valid sprite name: `^[a-z0-9][a-z0-9-]{0,62}$` not ending in `-`
/// (a DNS label, since names appear in sprite hostnames).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Why a create failed.
#[derive(Debug)]
pub enum CreateError {
    /// The name is taken.
    Exists,
    /// Disk trouble.
    Io(io::Error),
}

/// Called with a sprite's directory when the sprite is removed, before its files go.
pub type RemoveHook = Box<dyn Fn(&Path) + Send + Sync>;

/// The sprite table.
pub struct Store {
    root: PathBuf,
    sprites: Mutex<BTreeMap<String, SpriteRecord>>,
    on_remove: std::sync::OnceLock<RemoveHook>,
}

impl Store {
    /// Opens (creating if needed) `data_dir/sprites` and loads every sprite in it.
    /// Unreadable entries are reported on stderr and skipped, never fatal.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let root = data_dir.join("sprites");
        fs::create_dir_all(&root)?;
        let mut sprites = BTreeMap::new();
        for entry in fs::read_dir(&root)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name.starts_with(TRASH_PREFIX) {
                // A delete that was interrupted; finish it.
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            if !valid_name(name) || !entry.path().is_dir() {
                continue;
            }
            match load(&entry.path()) {
                Ok(rec) if rec.name == name => {
                    sprites.insert(rec.name.clone(), rec);
                }
                Ok(rec) => eprintln!(
                    "sprites-local: skipping {}: metadata names sprite {:?}",
                    entry.path().display(),
                    rec.name
                ),
                Err(e) => eprintln!("sprites-local: skipping {}: {e}", entry.path().display()),
            }
        }
        Ok(Store {
            root,
            sprites: Mutex::new(sprites),
            on_remove: std::sync::OnceLock::new(),
        })
    }

    /// Sets what runs when a sprite is removed (the runtime stops its processes). Once.
    pub fn on_remove(&self, hook: RemoveHook) {
        let _ = self.on_remove.set(hook);
    }

    /// The directory holding sprite `name`'s metadata and files.
    pub fn sprite_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A copy of sprite `name`'s record.
    pub fn get(&self, name: &str) -> Option<SpriteRecord> {
        lock(&self.sprites).get(name).cloned()
    }

    /// True if sprite `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        lock(&self.sprites).contains_key(name)
    }

    /// Every record, sorted by name.
    pub fn list(&self) -> Vec<SpriteRecord> {
        lock(&self.sprites).values().cloned().collect()
    }

    /// Creates the sprite's directory, lets `prepare` lay out its files, then persists
    /// `rec`. On failure nothing is left behind.
    pub fn create(
        &self,
        rec: SpriteRecord,
        prepare: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<SpriteRecord, CreateError> {
        let mut sprites = lock(&self.sprites);
        if sprites.contains_key(&rec.name) {
            return Err(CreateError::Exists);
        }
        let dir = self.sprite_dir(&rec.name);
        let result = fs::create_dir(&dir)
            .and_then(|()| prepare(&dir))
            .and_then(|()| persist(&dir, &rec));
        match result {
            Ok(()) => {
                sprites.insert(rec.name.clone(), rec.clone());
                Ok(rec)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CreateError::Exists),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(CreateError::Io(e))
            }
        }
    }

    /// Applies `change` to sprite `name` and persists it. `Ok(None)` = no such sprite.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut SpriteRecord),
    ) -> io::Result<Option<SpriteRecord>> {
        let mut sprites = lock(&self.sprites);
        let Some(current) = sprites.get(name) else {
            return Ok(None);
        };
        let mut next = current.clone();
        change(&mut next);
        persist(&self.sprite_dir(name), &next)?;
        sprites.insert(name.to_owned(), next.clone());
        Ok(Some(next))
    }

    /// Records that an exec started now. Persisted only on a sprite's first run (cold →
    /// warm), so ordinary execs cost no fsync; later times are written with the next
    /// metadata change.
    pub fn mark_running(&self, name: &str, now: String) -> io::Result<()> {
        let mut sprites = lock(&self.sprites);
        let Some(rec) = sprites.get_mut(name) else {
            return Ok(());
        };
        let first = rec.last_running_at.is_none();
        rec.last_running_at = Some(now);
        if first {
            let snapshot = rec.clone();
            persist(&self.sprite_dir(name), &snapshot)?;
        }
        Ok(())
    }

    /// Changes sprite `name`'s status times in memory only (the lifecycle's
    /// `last_running_at`/`last_warming_at`): they are written with the next metadata change,
    /// as [`Store::mark_running`]'s later times are, so a status change costs no fsync and
    /// holds no lock across I/O. `None` if there is no such sprite.
    pub fn note_times(
        &self,
        name: &str,
        change: impl FnOnce(&mut SpriteRecord),
    ) -> Option<SpriteRecord> {
        let mut sprites = lock(&self.sprites);
        let rec = sprites.get_mut(name)?;
        change(rec);
        Some(rec.clone())
    }

    /// Removes sprite `name` and its files. Returns false if there was no such sprite.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        let trash = {
            let mut sprites = lock(&self.sprites);
            if sprites.remove(name).is_none() {
                return Ok(false);
            }
            // Under the lock: no exec can find (and restart) the sprite meanwhile.
            if let Some(hook) = self.on_remove.get() {
                hook(&self.sprite_dir(name));
            }
            // Rename first (cheap, atomic) so the name can be reused at once, then delete
            // the tree without holding the lock.
            let suffix = crate::random::hex(6).unwrap_or_default();
            let trash = self.root.join(format!("{TRASH_PREFIX}{name}-{suffix}"));
            match fs::rename(self.sprite_dir(name), &trash) {
                Ok(()) => Some(trash),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(trash) = trash {
            fs::remove_dir_all(trash)?;
        }
        Ok(true)
    }
}

fn load(dir: &Path) -> io::Result<SpriteRecord> {
    let bytes = fs::read(dir.join(META_FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn persist(dir: &Path, rec: &SpriteRecord) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    write_atomic(dir, META_FILE, &bytes)
}

/// Writes `dir/name` so that readers see either the old or the new content, never a mix,
/// even across a crash.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let suffix = crate::random::hex(6)?;
    let tmp = dir.join(format!(".{name}.tmp-{suffix}"));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        // The rename itself lives in the directory; sync it so it survives a crash too.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sprites-local-store-{tag}-{}",
            crate::random::hex(6).unwrap()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn record(name: &str) -> SpriteRecord {
        SpriteRecord {
            id: "id".into(),
            name: name.into(),
            config: SpriteConfig::default(),
            environment: BTreeMap::new(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            url_settings: UrlSettings::default(),
            labels: vec![],
            last_running_at: None,
            last_warming_at: None,
        }
    }

    #[test]
    fn name_validation() {
        for ok in ["a", "0", "my-sprite", "a1-b2", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "my_sprite",
            "a.b",
            "a b",
            "ü",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_update_reload_remove() {
        let dir = temp_dir("crud");
        let store = Store::open(&dir).unwrap();
        store.create(record("one"), |_| Ok(())).unwrap();
        assert!(matches!(
            store.create(record("one"), |_| Ok(())),
            Err(CreateError::Exists)
        ));
        store
            .update("one", |r| r.labels = vec!["x".into()])
            .unwrap()
            .unwrap();
        assert!(store.update("two", |_| {}).unwrap().is_none());
        store
            .mark_running("one", "2026-01-02T00:00:00Z".into())
            .unwrap();
        drop(store);

        let store = Store::open(&dir).unwrap();
        let rec = store.get("one").unwrap();
        assert_eq!(rec.labels, ["x"]);
        assert_eq!(rec.last_running_at.as_deref(), Some("2026-01-02T00:00:00Z"));
        // Status times: seen at once, on disk only with the next metadata change.
        let noted = store
            .note_times("one", |r| {
                r.last_warming_at = Some("2026-01-03T00:00:00Z".into())
            })
            .unwrap();
        assert_eq!(
            noted.last_warming_at.as_deref(),
            Some("2026-01-03T00:00:00Z")
        );
        assert!(store.note_times("two", |_| {}).is_none());
        assert_eq!(
            Store::open(&dir)
                .unwrap()
                .get("one")
                .unwrap()
                .last_warming_at,
            None
        );
        store.update("one", |_| {}).unwrap().unwrap();
        assert_eq!(
            Store::open(&dir)
                .unwrap()
                .get("one")
                .unwrap()
                .last_warming_at
                .as_deref(),
            Some("2026-01-03T00:00:00Z")
        );
        assert!(store.remove("one").unwrap());
        assert!(!store.remove("one").unwrap());
        assert!(!store.sprite_dir("one").exists());
        drop(store);
        assert!(Store::open(&dir).unwrap().list().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failed_prepare_leaves_nothing() {
        let dir = temp_dir("prep");
        let store = Store::open(&dir).unwrap();
        let r = store.create(record("x"), |_| Err(io::Error::other("boom")));
        assert!(matches!(r, Err(CreateError::Io(_))));
        assert!(!store.contains("x"));
        assert!(!store.sprite_dir("x").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_metadata_is_skipped() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(dir.join("sprites/bad")).unwrap();
        fs::write(dir.join("sprites/bad/sprite.json"), b"{not json").unwrap();
        let store = Store::open(&dir).unwrap();
        assert!(store.list().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
