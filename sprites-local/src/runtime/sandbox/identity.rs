//! An identity per sprite (root servers): its own range of 65 536 host uids and gids.
//!
//! Inside, a sprite has the usual ids (root 0, `sprite` 1000, system users); on the host,
//! id N of sprite S is `base(S) + N`, where `base(S)` is a multiple of 65 536 in the range
//! systemd sets aside for containers (524 288 – 1 879 048 191), chosen so that no host
//! user or group has an id in it and no `/etc/subuid`/`/etc/subgid` range overlaps it.
//! Root inside a sprite is therefore nobody on the host: it cannot read host files that
//! others cannot, signal host processes or reach another sprite's files, and host users
//! cannot reach a sprite's processes either (their uids are not theirs).
//!
//! The range is kept in `identity.json` in the sprite's directory (files in its upper layer
//! are owned by those ids, so it must never change) and claimed host-wide in
//! [`CLAIMS_DIR`], one file per range naming the sprite directory that holds it, so two
//! servers (or two data dirs) never hand out the same range. A claim whose sprite
//! directory no longer names it (deleted sprite, removed data dir) is stale and is taken
//! over.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Ids per sprite: every 16-bit id inside maps to one host id.
pub const RANGE: u32 = 65_536;
/// First host id sprites may use (systemd's container range starts here).
const FIRST: u32 = 524_288;
/// Last host id of systemd's container range.
const LAST: u32 = 1_879_048_191;
/// Host-wide claims on ranges, one file per range.
pub const CLAIMS_DIR: &str = "/var/lib/sprites-local/uid-ranges";
/// The sprite's record of its range.
const FILE: &str = "identity.json";

/// What `identity.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Host id of the sprite's id 0.
    pub base: u32,
    /// The upper layer's files still carry the ids of this mapping (0 = the host's own
    /// ids, as sprites made before identities had them): they are moved over on the
    /// sprite's next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_from: Option<u32>,
}

/// Where a claim for `base` lives.
fn claim_path(base: u32) -> PathBuf {
    Path::new(CLAIMS_DIR).join(base.to_string())
}

/// The sprite's identity: its recorded range (re-claimed if the claim went missing), or a
/// new one. `legacy` says the sprite already has files (made before identities existed),
/// which must then be moved to the new range.
pub fn ensure(sprite_dir: &Path, legacy: bool) -> io::Result<Identity> {
    let dir = sprite_dir.canonicalize()?;
    if let Some(id) = read(&dir) {
        match claim(id.base, &dir)? {
            Claim::Ours => return Ok(id),
            Claim::Taken => {
                // Another live sprite holds our range (two data dirs restored from the
                // same backup, say): move to a new one.
                let shift_from = Some(id.shift_from.unwrap_or(id.base));
                let base = allocate(&dir, shift_from)?;
                return Ok(Identity { base, shift_from });
            }
        }
    }
    let shift_from = legacy.then_some(0);
    let base = allocate(&dir, shift_from)?;
    Ok(Identity { base, shift_from })
}

/// Records that the upper layer now carries `id.base`'s ids.
pub fn shifted(sprite_dir: &Path, id: Identity) -> io::Result<()> {
    write(
        sprite_dir,
        &Identity {
            base: id.base,
            shift_from: None,
        },
    )
}

/// Releases the claim of a sprite being deleted.
pub fn release(sprite_dir: &Path) {
    let Ok(dir) = sprite_dir.canonicalize() else {
        return;
    };
    if let Some(id) = read(&dir) {
        if claim_holder(id.base).as_deref() == Some(dir.as_path()) {
            let _ = fs::remove_file(claim_path(id.base));
        }
    }
}

fn read(dir: &Path) -> Option<Identity> {
    let bytes = fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write(dir: &Path, id: &Identity) -> io::Result<()> {
    let bytes = serde_json::to_vec(id).map_err(io::Error::other)?;
    crate::store::write_atomic(dir, FILE, &bytes)
}

enum Claim {
    Ours,
    Taken,
}

/// The sprite directory named by the claim on `base`, if any.
fn claim_holder(base: u32) -> Option<PathBuf> {
    let s = fs::read_to_string(claim_path(base)).ok()?;
    Some(PathBuf::from(s.trim_end_matches('\n')))
}

/// A claim is live while the directory it names still records that range.
fn claim_is_live(base: u32, holder: &Path) -> bool {
    read(holder).is_some_and(|id| id.base == base)
}

/// Claims `base` for `dir` (idempotent), taking over a stale claim. The claim file
/// appears with its content in one step (written aside, then hard-linked into place, which
/// fails if the name exists), so no one ever reads a half-written claim as stale.
fn claim(base: u32, dir: &Path) -> io::Result<Claim> {
    fs::create_dir_all(CLAIMS_DIR)?;
    let path = claim_path(base);
    let tmp = Path::new(CLAIMS_DIR).join(format!(".{base}.{}", crate::random::hex(6)?));
    let mut f = fs::File::create(&tmp)?;
    writeln!(f, "{}", dir.display())?;
    f.sync_all()?;
    drop(f);
    let result = (|| {
        for _ in 0..3 {
            match fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(Claim::Ours),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match claim_holder(base) {
                    Some(h) if h == dir => return Ok(Claim::Ours),
                    Some(h) if claim_is_live(base, &h) => return Ok(Claim::Taken),
                    // Stale: its sprite is gone. Remove it and try again.
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Ok(Claim::Taken)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Ids the host already uses: every uid and gid in `/etc/passwd` and `/etc/group`, and
/// the ranges of `/etc/subuid` and `/etc/subgid`.
struct HostIds {
    ids: HashSet<u32>,
    ranges: Vec<(u32, u32)>,
}

impl HostIds {
    fn read() -> HostIds {
        let mut ids = HashSet::new();
        for (file, field) in [("/etc/passwd", 2), ("/etc/passwd", 3), ("/etc/group", 2)] {
            let text = fs::read_to_string(file).unwrap_or_default();
            ids.extend(
                text.lines()
                    .filter_map(|l| l.split(':').nth(field)?.parse::<u32>().ok()),
            );
        }
        let mut ranges = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            ranges.extend(text.lines().filter_map(|l| {
                let mut f = l.split(':').skip(1);
                let start: u32 = f.next()?.trim().parse().ok()?;
                let count: u32 = f.next()?.trim().parse().ok()?;
                Some((start, start.saturating_add(count)))
            }));
        }
        HostIds { ids, ranges }
    }

    /// True if no host user, group or subordinate range uses an id of `[base, base+RANGE)`.
    fn free(&self, base: u32) -> bool {
        let end = base + RANGE;
        !self.ids.iter().any(|id| (base..end).contains(id))
            && !self.ranges.iter().any(|&(s, e)| s < end && base < e)
    }
}

/// Picks and claims a free range for `dir`.
fn allocate(dir: &Path, shift_from: Option<u32>) -> io::Result<u32> {
    let host = HostIds::read();
    let slots = (LAST - FIRST + 1) / RANGE;
    for _ in 0..256 {
        let mut r = [0u8; 4];
        crate::random::fill(&mut r)?;
        let base = FIRST + (u32::from_ne_bytes(r) % slots) * RANGE;
        if !host.free(base) {
            continue;
        }
        // The sprite names the range before claiming it, so that a claim is never seen
        // without its holder naming it (which would make it look stale).
        write(dir, &Identity { base, shift_from })?;
        if let Claim::Ours = claim(base, dir)? {
            return Ok(base);
        }
    }
    Err(io::Error::other(
        "no free uid range for the sprite after 256 tries",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_avoid_host_ids_and_subordinate_ranges() {
        let host = HostIds {
            ids: [0, 1000, FIRST + 5].into_iter().collect(),
            ranges: vec![(FIRST + 2 * RANGE + 10, FIRST + 2 * RANGE + 20)],
        };
        assert!(!host.free(FIRST), "uid FIRST+5 is a host user's");
        assert!(host.free(FIRST + RANGE));
        assert!(!host.free(FIRST + 2 * RANGE), "overlaps a subuid range");
        assert!(host.free(FIRST + 3 * RANGE));
        assert_eq!((LAST - FIRST + 1) / RANGE, 28_664);
    }
}
