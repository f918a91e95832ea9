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

/// The sprite's identity: its recorded range (re-claimed if the claim went missing), or a
/// new one. `legacy` says the sprite already has files (made before identities existed),
/// which must then be moved to the new range.
pub fn ensure(sprite_dir: &Path, legacy: bool) -> io::Result<Identity> {
    Claims::host().ensure(sprite_dir, legacy, &HostIds::read())
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
    Claims::host().release(sprite_dir);
}

fn read(dir: &Path) -> Option<Identity> {
    let bytes = fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write(dir: &Path, id: &Identity) -> io::Result<()> {
    let bytes = serde_json::to_vec(id).map_err(io::Error::other)?;
    crate::store::write_atomic(dir, FILE, &bytes)
}

#[derive(Debug, PartialEq, Eq)]
enum Claim {
    Ours,
    Taken,
}

/// A sprite directory that claims `base` is live while it still records that range.
fn claim_is_live(base: u32, holder: &Path) -> bool {
    read(holder).is_some_and(|id| id.base == base)
}

/// The host-wide claims on ranges: a directory of files named by a range's base, each
/// naming the sprite directory that holds it.
struct Claims<'a> {
    dir: &'a Path,
}

impl Claims<'_> {
    fn host() -> Claims<'static> {
        Claims {
            dir: Path::new(CLAIMS_DIR),
        }
    }

    fn path(&self, base: u32) -> PathBuf {
        self.dir.join(base.to_string())
    }

    /// The sprite directory named by the claim on `base`, if any.
    fn holder(&self, base: u32) -> Option<PathBuf> {
        let s = fs::read_to_string(self.path(base)).ok()?;
        Some(PathBuf::from(s.trim_end_matches('\n')))
    }

    fn ensure(&self, sprite_dir: &Path, legacy: bool, host: &HostIds) -> io::Result<Identity> {
        let dir = sprite_dir.canonicalize()?;
        if let Some(id) = read(&dir) {
            match self.claim(id.base, &dir)? {
                Claim::Ours => return Ok(id),
                Claim::Taken => {
                    // Another live sprite holds our range (two data dirs restored from the
                    // same backup, say): move to a new one.
                    let shift_from = Some(id.shift_from.unwrap_or(id.base));
                    let base = self.allocate(&dir, shift_from, host)?;
                    return Ok(Identity { base, shift_from });
                }
            }
        }
        let shift_from = legacy.then_some(0);
        let base = self.allocate(&dir, shift_from, host)?;
        Ok(Identity { base, shift_from })
    }

    fn release(&self, sprite_dir: &Path) {
        let Ok(dir) = sprite_dir.canonicalize() else {
            return;
        };
        if let Some(id) = read(&dir) {
            if self.holder(id.base).as_deref() == Some(dir.as_path()) {
                let _ = fs::remove_file(self.path(id.base));
            }
        }
    }

    /// Claims `base` for `dir` (idempotent), taking over a stale claim. The claim file
    /// appears with its content in one step (written aside, then hard-linked into place,
    /// which fails if the name exists), so no one ever reads a half-written claim as stale.
    fn claim(&self, base: u32, dir: &Path) -> io::Result<Claim> {
        fs::create_dir_all(self.dir)?;
        let path = self.path(base);
        let tmp = self.dir.join(format!(".{base}.{}", crate::random::hex(6)?));
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{}", dir.display())?;
        f.sync_all()?;
        drop(f);
        let result = (|| {
            for _ in 0..3 {
                match fs::hard_link(&tmp, &path) {
                    Ok(()) => return Ok(Claim::Ours),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match self.holder(base) {
                            Some(h) if h == dir => return Ok(Claim::Ours),
                            Some(h) if claim_is_live(base, &h) => return Ok(Claim::Taken),
                            // Stale: its sprite is gone. Remove it and try again.
                            _ => {
                                let _ = fs::remove_file(&path);
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(Claim::Taken)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Picks and claims a free range for `dir`.
    fn allocate(&self, dir: &Path, shift_from: Option<u32>, host: &HostIds) -> io::Result<u32> {
        for _ in 0..256 {
            let mut r = [0u8; 4];
            crate::random::fill(&mut r)?;
            let base = slot_base(u32::from_ne_bytes(r));
            if !host.free(base) {
                continue;
            }
            // The sprite names the range before claiming it, so that a claim is never seen
            // without its holder naming it (which would make it look stale).
            write(dir, &Identity { base, shift_from })?;
            if let Claim::Ours = self.claim(base, dir)? {
                return Ok(base);
            }
        }
        Err(io::Error::other(
            "no free uid range for the sprite after 256 tries",
        ))
    }
}

/// The base of the range a random number picks: one of the 65 536-id slots of
/// `[FIRST, LAST]`.
fn slot_base(random: u32) -> u32 {
    let slots = (LAST - FIRST + 1) / RANGE;
    FIRST + (random % slots) * RANGE
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
        // Boundaries: the range is [base, base + RANGE).
        let edge = HostIds {
            ids: [FIRST + RANGE - 1].into_iter().collect(),
            ranges: vec![(FIRST + 2 * RANGE - 5, FIRST + 2 * RANGE)],
        };
        assert!(!edge.free(FIRST), "its last id is a host user's");
        assert!(
            edge.free(FIRST + 2 * RANGE),
            "a subuid range ending at base"
        );
        assert!(!edge.free(FIRST + RANGE), "a subuid range ending inside");
        let next = HostIds {
            ids: [FIRST + RANGE].into_iter().collect(),
            ranges: vec![(FIRST + RANGE, FIRST + 2 * RANGE)],
        };
        assert!(
            next.free(FIRST),
            "an id and a range starting right after it"
        );
    }

    #[test]
    fn slots_are_whole_ranges_inside_the_container_range() {
        for r in [0, 1, 28_663, 28_664, u32::MAX, 123_456_789] {
            let base = slot_base(r);
            assert_eq!(base % RANGE, 0, "{r}");
            assert!(base >= FIRST && base + RANGE - 1 <= LAST, "{r}: {base}");
        }
        assert_eq!(slot_base(0), FIRST);
        assert_eq!(slot_base(28_663), LAST + 1 - RANGE);
        assert_eq!(slot_base(28_664), FIRST, "wraps");
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let p = std::env::temp_dir().join(format!(
                "sprites-identity-{}",
                crate::random::hex(6).unwrap()
            ));
            fs::create_dir_all(p.join("claims")).unwrap();
            Scratch(p)
        }
        fn sprite(&self, name: &str) -> PathBuf {
            let d = self.0.join(name);
            fs::create_dir_all(&d).unwrap();
            d.canonicalize().unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn no_host_ids() -> HostIds {
        HostIds {
            ids: HashSet::new(),
            ranges: vec![],
        }
    }

    #[test]
    fn a_sprite_keeps_its_range_and_two_sprites_never_share_one() {
        let t = Scratch::new();
        let claims = t.0.join("claims");
        let c = Claims { dir: &claims };
        let (one, two) = (t.sprite("one"), t.sprite("two"));
        let a = c.ensure(&one, false, &no_host_ids()).unwrap();
        assert_eq!(a.shift_from, None);
        assert_eq!(a.base % RANGE, 0);
        assert_eq!(c.holder(a.base).as_deref(), Some(one.as_path()));
        assert_eq!(read(&one), Some(a));
        assert_eq!(c.ensure(&one, false, &no_host_ids()).unwrap(), a, "kept");
        let b = c.ensure(&two, true, &no_host_ids()).unwrap();
        assert_ne!(a.base, b.base);
        assert_eq!(
            b.shift_from,
            Some(0),
            "a legacy sprite moves from the host's ids"
        );
        shifted(&two, b).unwrap();
        assert_eq!(read(&two).unwrap().shift_from, None);
        // Only the holder's release removes a claim.
        fs::write(two.join(FILE), serde_json::to_vec(&a).unwrap()).unwrap();
        c.release(&two);
        assert!(c.path(a.base).exists(), "released someone else's claim");
        c.release(&one);
        assert!(!c.path(a.base).exists());
        // Only the claim files stay in the claims directory (no temp files).
        let names: Vec<String> = fs::read_dir(&claims)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [b.base.to_string()]);
    }

    #[test]
    fn a_stale_claim_is_taken_over_and_a_live_one_is_not() {
        let t = Scratch::new();
        let claims = t.0.join("claims");
        let c = Claims { dir: &claims };
        let (one, two) = (t.sprite("one"), t.sprite("two"));
        let a = c.ensure(&one, false, &no_host_ids()).unwrap();
        assert_eq!(c.claim(a.base, &two).unwrap(), Claim::Taken, "one is alive");
        // Two restored from a copy of one: same range on record, held by one → moves.
        fs::write(two.join(FILE), serde_json::to_vec(&a).unwrap()).unwrap();
        let b = c.ensure(&two, false, &no_host_ids()).unwrap();
        assert_ne!(b.base, a.base);
        assert_eq!(
            b.shift_from,
            Some(a.base),
            "its files move from one's range"
        );
        // One is deleted: its claim is stale, and anyone may take the range.
        fs::remove_dir_all(&one).unwrap();
        assert_eq!(c.claim(a.base, &two).unwrap(), Claim::Ours);
        assert_eq!(c.holder(a.base).as_deref(), Some(two.as_path()));
        // A claim whose holder records another range is stale too.
        let three = t.sprite("three");
        assert_eq!(c.claim(b.base, &three).unwrap(), Claim::Taken);
        // Two records b.base, so its claim on a.base (taken over above) is stale for three.
        assert_eq!(c.claim(a.base, &three).unwrap(), Claim::Ours);
    }
}
