//! Checkpoints (PROTOCOL.md §12): point-in-time copies of a sprite's writable layer, with
//! ids `v0`, `v1`, …, and restores that bring one back.
//!
//! - [`Catalog`]: the checkpoints' metadata, persisted in the sprite's directory
//!   (`checkpoints.json`): ids, comments, creation times, lineage, and which checkpoint
//!   the live tree descends from.
//! - [`create`] and [`restore`]: the operations, each answering with the NDJSON progress
//!   lines of §12. The files are the runtime's business
//!   ([`SpriteRuntime::snapshot`](crate::runtime::SpriteRuntime::snapshot) and
//!   [`restore`](crate::runtime::SpriteRuntime::restore)): a btrfs snapshot in a sandboxed
//!   sprite, a copy ([`tree`]) in a host one.
//!
//! One operation at a time per sprite (a per-sprite lock): a restore never races a create.

pub mod tree;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lock;
use crate::state::State;

/// The metadata file in the sprite's directory.
const CATALOG: &str = "checkpoints.json";
/// How many checkpoints a sprite may keep (a create past it is refused: delete some).
pub const MAX_CHECKPOINTS: usize = 100;
/// The synthetic entry for the live state in listings.
pub const CURRENT: &str = "Current";
/// Longest comment accepted, in bytes.
pub const MAX_COMMENT: usize = 4096;
/// How long a restore waits for the sprite's exec sessions to end after SIGKILL.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(5);

/// One checkpoint, as stored and as sent (§12).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// `v0`, `v1`, … (or [`CURRENT`] in listings).
    pub id: String,
    /// RFC 3339, UTC.
    pub create_time: String,
    /// Ancestors, newest first: the checkpoint the live tree descended from when this one
    /// was taken, its own source, and so on.
    pub history: Vec<String>,
    /// The creator's comment (empty when none was given).
    pub comment: String,
    /// Made by the platform rather than a user (sprites-local makes none).
    pub is_auto: bool,
    /// The checkpoint the live tree descended from when this one was taken (`history[0]`),
    /// absent for the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Empty when the checkpoint's files are there; `missing` when they are not.
    pub health: String,
}

/// Every checkpoint of one sprite.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// The number the next id gets (never reused, even after a delete).
    pub next: u64,
    /// The checkpoint the live tree descends from (the last one made or restored).
    pub current: Option<String>,
    /// Oldest first.
    pub checkpoints: Vec<Checkpoint>,
}

impl Catalog {
    /// The sprite's catalog (empty if it never had a checkpoint).
    pub fn load(sprite_dir: &Path) -> io::Result<Catalog> {
        match std::fs::read(sprite_dir.join(CATALOG)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, sprite_dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        crate::store::write_atomic(sprite_dir, CATALOG, &bytes)
    }

    /// Checkpoint `id`.
    pub fn get(&self, id: &str) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }

    /// The lineage of the live tree: `current`, its source, … (newest first).
    fn lineage(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = self.current.clone();
        while let Some(id) = at {
            if out.contains(&id) || out.len() > self.checkpoints.len() {
                break; // never loops, whatever the file says
            }
            at = self.get(&id).and_then(|c| c.source_id.clone());
            out.push(id);
        }
        out
    }

    /// The synthetic [`CURRENT`] entry: the live state, `now`, descending from `current`.
    pub fn current_entry(&self) -> Checkpoint {
        Checkpoint {
            id: CURRENT.into(),
            create_time: crate::time::now_rfc3339(),
            history: self.lineage(),
            comment: String::new(),
            is_auto: false,
            source_id: self.current.clone(),
            health: String::new(),
        }
    }
}

/// The per-sprite operation lock.
fn sprite_lock(sprite_dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut all = lock(LOCKS.get_or_init(Default::default));
    all.entry(sprite_dir.to_owned()).or_default().clone()
}

/// A listing (§12): the checkpoints newest first, autos only with `include_auto`, only the
/// lineage of `history` (that checkpoint and its ancestors) when given, with the
/// [`CURRENT`] entry first unless a `history` filter names another checkpoint.
pub fn list(
    sprite_dir: &Path,
    include_auto: bool,
    history: Option<&str>,
) -> io::Result<Option<Vec<Checkpoint>>> {
    let cat = Catalog::load(sprite_dir)?;
    let current = cat.current_entry();
    let keep: Option<Vec<String>> = match history {
        None | Some("") => None,
        Some(CURRENT) => Some(current.history.clone()),
        Some(id) => match cat.get(id) {
            None => return Ok(None),
            Some(c) => Some(
                std::iter::once(c.id.clone())
                    .chain(c.history.clone())
                    .collect(),
            ),
        },
    };
    let mut out = Vec::new();
    if matches!(history, None | Some("") | Some(CURRENT)) {
        out.push(current);
    }
    out.extend(
        cat.checkpoints
            .iter()
            .rev()
            .filter(|c| include_auto || !c.is_auto)
            .filter(|c| keep.as_ref().is_none_or(|k| k.contains(&c.id)))
            .cloned(),
    );
    Ok(Some(out))
}

/// One line of a create or restore stream (§12): `type` (`info` or `error`), `data` (the
/// message, for every SDK), `error` (the failure, on `error` lines), and two fields of
/// ours clients may ignore: `timestamp` (Unix ms) and `progress` (0.0–1.0, how far the
/// operation is).
#[derive(Debug, Serialize)]
pub struct Event {
    /// `info` or `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The message.
    pub data: String,
    /// On an `error` line, the same message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub timestamp: u64,
    /// How far the operation is, 0.0–1.0.
    pub progress: f32,
}

/// Where an operation's progress lines go (the response, as they happen).
pub struct Progress<'a> {
    out: &'a mut dyn FnMut(&[u8]),
}

impl<'a> Progress<'a> {
    /// Progress written to `out`, one NDJSON line per call.
    pub fn new(out: &'a mut dyn FnMut(&[u8])) -> Progress<'a> {
        Progress { out }
    }

    fn push(&mut self, kind: &'static str, data: String, progress: f32) {
        let ev = Event {
            error: (kind == "error").then(|| data.clone()),
            kind,
            data,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            progress,
        };
        if let Ok(mut line) = serde_json::to_vec(&ev) {
            line.push(b'\n');
            (self.out)(&line);
        }
    }

    /// An `info` line.
    pub fn info(&mut self, data: impl Into<String>, progress: f32) {
        self.push("info", data.into(), progress);
    }

    /// An `error` line (the operation failed; the HTTP status is still 200, as on the
    /// platform, since the stream had begun).
    pub fn error(&mut self, data: impl Into<String>) {
        self.push("error", data.into(), 1.0);
    }
}

/// Why an operation was refused before it started (an HTTP error rather than a stream).
#[derive(Debug)]
pub enum Refused {
    /// No such checkpoint (404).
    NotFound(String),
    /// Not possible in this state (409 for the limit, 400 for `Current`).
    Conflict(String),
    /// Bad input (400).
    Invalid(String),
    /// This sprite cannot have checkpoints (501).
    Unsupported(String),
    /// Reading the catalog failed (500).
    Internal(String),
}

/// What refuses a create before it starts (the route answers with an HTTP error then).
pub fn check_create(state: &State, sprite_dir: &Path, comment: &str) -> Result<(), Refused> {
    if comment.len() > MAX_COMMENT {
        return Err(Refused::Invalid(format!(
            "comment longer than {MAX_COMMENT} bytes"
        )));
    }
    state
        .runtime
        .checkpoints_supported(sprite_dir)
        .map_err(Refused::Unsupported)?;
    let cat = Catalog::load(sprite_dir).map_err(|e| Refused::Internal(e.to_string()))?;
    check_room(&cat)
}

fn check_room(cat: &Catalog) -> Result<(), Refused> {
    if cat.checkpoints.len() >= MAX_CHECKPOINTS {
        return Err(Refused::Conflict(format!(
            "the sprite has {MAX_CHECKPOINTS} checkpoints, the most it may keep: delete some first"
        )));
    }
    Ok(())
}

/// What refuses a restore before it starts.
pub fn check_restore(state: &State, sprite_dir: &Path, id: &str) -> Result<(), Refused> {
    if id == CURRENT {
        return Err(Refused::Invalid(
            "\"Current\" is the live state, not a checkpoint: it cannot be restored".into(),
        ));
    }
    let cat = Catalog::load(sprite_dir).map_err(|e| Refused::Internal(e.to_string()))?;
    if cat.get(id).is_none() {
        return Err(Refused::NotFound(format!("checkpoint {id:?} not found")));
    }
    state
        .runtime
        .checkpoints_supported(sprite_dir)
        .map_err(Refused::Unsupported)
}

/// Takes a checkpoint of the sprite at `sprite_dir` with `comment`, reporting to `p` as it
/// goes ([`check_create`] first; what changed since is reported as an `error` line).
pub fn create(state: &State, sprite_dir: &Path, comment: &str, p: &mut Progress<'_>) {
    let guard = sprite_lock(sprite_dir);
    let _held = lock(&guard);
    let mut cat = match Catalog::load(sprite_dir) {
        Ok(c) => c,
        Err(e) => return p.error(format!("reading the checkpoints: {e}")),
    };
    if let Err(Refused::Conflict(m)) = check_room(&cat) {
        return p.error(m);
    }
    let id = format!("v{}", cat.next);
    p.info(format!("Creating checkpoint {id}..."), 0.0);
    let started = std::time::Instant::now();
    let previous = cat.checkpoints.last().map(|c| c.id.clone());
    let snapshot = {
        let mut report = |done: f32, what: &str| p.info(what, 0.05 + 0.8 * done);
        state
            .runtime
            .snapshot(sprite_dir, &id, previous.as_deref(), &mut report)
    };
    if let Err(e) = snapshot {
        return p.error(format!("checkpoint {id} failed: {e}"));
    }
    let history = cat.lineage();
    cat.checkpoints.push(Checkpoint {
        id: id.clone(),
        create_time: crate::time::now_rfc3339(),
        source_id: history.first().cloned(),
        history,
        comment: comment.to_owned(),
        is_auto: false,
        health: String::new(),
    });
    cat.next += 1;
    cat.current = Some(id.clone());
    if let Err(e) = cat.save(sprite_dir) {
        let _ = state.runtime.delete_snapshot(sprite_dir, &id);
        return p.error(format!("recording checkpoint {id}: {e}"));
    }
    p.info(
        format!("Snapshot taken in {} ms", started.elapsed().as_millis()),
        0.9,
    );
    // The two lines the platform's stream has, which clients parse for the new id.
    p.info(format!("  ID: {id}"), 1.0);
    p.info(format!("Checkpoint {id} created successfully"), 1.0);
}

/// Restores checkpoint `id` of sprite `name`: ends its services, processes and sessions,
/// replaces its writable layer, starts it again and resumes its services, reporting to `p`
/// as it goes ([`check_restore`] first).
pub fn restore(state: &State, name: &str, sprite_dir: &Path, id: &str, p: &mut Progress<'_>) {
    let guard = sprite_lock(sprite_dir);
    let _held = lock(&guard);
    let mut cat = match Catalog::load(sprite_dir) {
        Ok(c) => c,
        Err(e) => return p.error(format!("reading the checkpoints: {e}")),
    };
    if cat.get(id).is_none() {
        return p.error(format!("checkpoint {id:?} not found"));
    }
    p.info(format!("Restoring checkpoint {id}..."), 0.0);
    // Services first (TERM, then KILL after their grace), so they neither see their files
    // change under them nor get restarted by their supervisor meanwhile.
    p.info("Stopping services", 0.05);
    crate::services::stop_all(state, name);
    p.info("Stopping processes and sessions", 0.1);
    let sessions = state.sessions.list(name);
    for s in &sessions {
        s.signal(libc::SIGKILL);
    }
    for s in &sessions {
        s.wait_exited(SESSION_EXIT_WAIT);
    }
    p.info("Replacing the filesystem", 0.3);
    let started = std::time::Instant::now();
    let replaced = {
        let mut report = |done: f32, what: &str| p.info(what, 0.3 + 0.6 * done);
        state.runtime.restore(sprite_dir, id, &mut report)
    };
    if let Err(e) = replaced {
        return p.error(format!("restoring checkpoint {id} failed: {e}"));
    }
    cat.current = Some(id.to_owned());
    if let Err(e) = cat.save(sprite_dir) {
        return p.error(format!("recording the restore of {id}: {e}"));
    }
    p.info(
        format!(
            "Filesystem replaced in {} ms",
            started.elapsed().as_millis()
        ),
        0.9,
    );
    // Services that should run come back on the restored files (the checkpoint does not
    // hold the services' definitions: those live in the sprite's directory).
    let resumed = crate::services::resume(state, name);
    if resumed > 0 {
        p.info(format!("Started {resumed} service(s)"), 0.95);
    }
    p.info(format!("Checkpoint {id} restored successfully"), 1.0);
}

/// Deletes checkpoint `id` (not part of the SDKs; the CLI's `sprite checkpoint delete`).
pub fn delete(state: &State, sprite_dir: &Path, id: &str) -> Result<(), Refused> {
    let guard = sprite_lock(sprite_dir);
    let _held = lock(&guard);
    let mut cat = Catalog::load(sprite_dir).map_err(|e| Refused::Internal(e.to_string()))?;
    if id == CURRENT {
        return Err(Refused::Invalid("\"Current\" cannot be deleted".into()));
    }
    if cat.get(id).is_none() {
        return Err(Refused::NotFound(format!("checkpoint {id:?} not found")));
    }
    if cat.current.as_deref() == Some(id) {
        return Err(Refused::Conflict(format!(
            "checkpoint {id} is the one the sprite is on: it cannot be deleted"
        )));
    }
    match state.runtime.delete_snapshot(sprite_dir, id) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Refused::Internal(e.to_string())),
    }
    cat.checkpoints.retain(|c| c.id != id);
    cat.save(sprite_dir)
        .map_err(|e| Refused::Internal(e.to_string()))
}
