//! Which URL an attach uses ([PROTOCOL.md §2](crate::protocol#2-versioning-capabilities-client-headers),
//! §7.2): the path form `/exec/{id}`, or the legacy `/exec?id={id}` for runtimes that predate
//! it, chosen by the sprite's `Sprite-Version` as the Go SDK chooses, with its fallback to the
//! legacy form when the path form is not found.

use crate::error::{Error, Result};
use crate::sprite::Sprite;
use crate::url::{Query, encode};
use crate::ws::{self, Accepted};
use std::collections::HashMap;
use std::sync::Mutex;

/// Sprites whose attach route the client remembers; past this the memory starts over, so a
/// client that meets many sprites does not grow without bound.
const REMEMBERED_SPRITES: usize = 1024;

/// What the client learned about sprites' runtimes, per sprite name (each sprite runs its
/// own runtime version, so one value per client, as Go keeps, would be wrong for some).
#[derive(Debug, Default)]
pub(crate) struct Runtimes {
    known: Mutex<HashMap<String, Known>>,
}

#[derive(Debug, Clone, Default)]
struct Known {
    /// `Sprite-Version`, when a response carried one.
    version: Option<String>,
    /// The path form answered 404 and the legacy form worked.
    legacy: bool,
}

impl Runtimes {
    fn get(&self, sprite: &str) -> Option<Known> {
        self.lock().get(sprite).cloned()
    }

    fn update(&self, sprite: &str, change: impl FnOnce(&mut Known)) {
        let mut known = self.lock();
        if known.len() >= REMEMBERED_SPRITES && !known.contains_key(sprite) {
            known.clear();
        }
        change(known.entry(sprite.to_owned()).or_default());
    }

    /// Records a `Sprite-Version` header seen on a response about `sprite`.
    pub(crate) fn record_version(&self, sprite: &str, version: &str) {
        let version = version.trim();
        if !version.is_empty() {
            self.update(sprite, |k| k.version = Some(version.to_owned()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The two attach URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `/v1/sprites/{name}/exec/{id}`.
    Path,
    /// `/v1/sprites/{name}/exec?id={id}`.
    Legacy,
}

impl Form {
    fn path(self, sprite: &Sprite, id: &str) -> String {
        match self {
            Form::Path => sprite.path(&format!("/exec/{}", encode(id))),
            Form::Legacy => {
                let mut query = Query::new();
                query.push("id", id);
                sprite.path(&format!("/exec{}", query.as_str()))
            }
        }
    }
}

/// Opens the attach connection to session `id`: the form the sprite's version allows (asking
/// for the version with `HEAD /exec` when unknown), and the legacy form after a 404 of the
/// path form, remembered for the sprite once it works.
pub(crate) fn dial(sprite: &Sprite, id: &str) -> Result<Accepted> {
    if id.is_empty() {
        return Err(Error::InvalidInput("a session id must not be empty".into()));
    }
    let client = sprite.client();
    let runtimes = &client.inner.runtimes;
    // An entry exists only once a version or the legacy form was learned.
    let known = match runtimes.get(sprite.name()) {
        Some(known) => known,
        None => {
            fetch_version(sprite)?;
            runtimes.get(sprite.name()).unwrap_or_default()
        }
    };
    let form = if !known.legacy && known.version.as_deref().is_some_and(supports_path_attach) {
        Form::Path
    } else {
        Form::Legacy
    };
    match ws::dial(client, &form.path(sprite, id)) {
        // A runtime without the path form answers 404 for it; so does any runtime for an
        // unknown session, which the legacy form then reports again. Only a legacy success
        // is remembered, so an unknown id never sends later attaches the old way.
        Err(Error::Api(api)) if form == Form::Path && api.status == 404 => {
            let accepted = ws::dial(client, &Form::Legacy.path(sprite, id))?;
            runtimes.update(sprite.name(), |k| k.legacy = true);
            Ok(accepted)
        }
        other => other,
    }
}

/// `HEAD /v1/sprites/{name}/exec`, only for its `Sprite-Version` header (any status will do,
/// as in Go). A transport failure is returned: the attach could not connect either.
fn fetch_version(sprite: &Sprite) -> Result<()> {
    let client = sprite.client();
    let response = match client.request("HEAD", &sprite.path("/exec")).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => return Err(err.into()),
    };
    if let Some(version) = response.header("sprite-version") {
        client.inner.runtimes.record_version(sprite.name(), version);
    }
    Ok(())
}

/// Whether a runtime of this version serves the path form of attach: the Go SDK's rule. Dev
/// builds do; release candidates from `0.0.1-rc30` on do; releases do; an empty or unparsable
/// version does not. *(choice)* The rc number is compared as a number, where Go's semver
/// library compares it as text (and so ranks `rc4` above `rc30`).
pub(crate) fn supports_path_attach(version: &str) -> bool {
    let version = version.trim();
    let version = version.strip_prefix('v').unwrap_or(version);
    if version.is_empty() {
        return false;
    }
    if version.contains("-dev-") || version.ends_with("-dev") {
        return true;
    }
    let channel = channel_suffix(version);
    if channel.is_some_and(|(letters, _)| letters.starts_with("dev")) {
        return true;
    }
    let Some(core) = parse_semver(version) else {
        return false;
    };
    match channel {
        Some((letters, number)) if letters.starts_with("rc") => {
            // At least 0.0.1-rc30.
            core > (0, 0, 1) || (core == (0, 0, 1) && number.parse::<u64>().unwrap_or(0) >= 30)
        }
        _ => true,
    }
}

/// The trailing `-<letters><digits>` of a version (Go's `-([a-zA-Z]+)\d*$`): letters, digits.
fn channel_suffix(version: &str) -> Option<(&str, &str)> {
    let (_, tail) = version.rsplit_once('-')?;
    let letters_end = tail
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(tail.len());
    let (letters, digits) = tail.split_at(letters_end);
    (!letters.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some((letters, digits))
}

/// `MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]` → the numbers, or `None` if it is not a
/// version (what Go's lenient semver parser accepts, closely enough).
fn parse_semver(version: &str) -> Option<(u64, u64, u64)> {
    let version = match version.split_once('+') {
        Some((_, "")) => return None,
        Some((version, _)) => version,
        None => version,
    };
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    if let Some(pre) = pre
        && (pre.is_empty()
            || !pre
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    let mut numbers = [0u64; 3];
    // `split` yields at least one part, so the major number is never missing; u64 parsing
    // takes digits only (its one extra, a leading '+', went with the build metadata above).
    let mut parts = core.split('.');
    for slot in &mut numbers {
        match parts.next() {
            Some(part) => *slot = part.parse().ok()?,
            None => break,
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some((numbers[0], numbers[1], numbers[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_sdks_table() {
        for (version, expected) in [
            ("", false),
            ("v0.0.1-dev", true),
            ("v0.0.1-dev-abc123", true),
            ("0.0.1-dev-xyz789", true),
            ("0.1.2-dev-abc1234", true),
            ("v0.0.1-dev3", true),
            ("v0.0.1-rc1", false),
            ("v0.0.1-rc28", false),
            ("v0.0.1-rc29", false),
            ("v0.0.1-rc30", true),
            ("v0.0.1-rc31", true),
            ("v0.0.1-rc99", true),
            ("v0.0.1", true),
            ("v0.1.0", true),
            ("v1.0.0", true),
            ("1.0.0", true),
            ("0.1.0", true),
            ("invalid", false),
            ("not-a-version", false),
        ] {
            assert_eq!(supports_path_attach(version), expected, "{version:?}");
        }
    }

    #[test]
    fn rc_numbers_compare_as_numbers_and_later_versions_win() {
        // Go's semver compares "rc4" and "rc30" as text; here 4 < 30.
        assert!(!supports_path_attach("v0.0.1-rc4"));
        assert!(!supports_path_attach("0.0.1-rc"));
        assert!(supports_path_attach("0.0.2-rc1"));
        assert!(supports_path_attach("0.1.0-rc5"));
        assert!(!supports_path_attach("0.0.0-rc99"));
        assert!(supports_path_attach("v0.0.1-beta1"));
        assert!(supports_path_attach(" 0.1.0 "));
        assert!(supports_path_attach("1.2"));
        assert!(supports_path_attach("1.2.3+build.5"));
        // Go calls anything with "-dev-" or ending "-dev" a dev build before parsing it.
        assert!(supports_path_attach("0.0.1-dev-rc5"));
        assert!(supports_path_attach("v0.0.1-dev-build_7"));
        assert!(supports_path_attach("nightly-dev"));
        assert!(supports_path_attach("nightly-devx")); // Go: a "dev…" suffix
        assert!(!supports_path_attach("nightly-build"));
    }

    #[test]
    fn versions_that_do_not_parse() {
        for bad in [
            "1.2.3.4",
            "1..2",
            "x.1.0",
            "1.0.0-",
            "1.0.0-rc 1",
            "1.0.0+",
            "-rc30",
            "v",
        ] {
            assert_eq!(parse_semver(bad.trim_start_matches('v')), None, "{bad:?}");
            assert!(!supports_path_attach(bad), "{bad:?}");
        }
        assert_eq!(parse_semver("3"), Some((3, 0, 0)));
        assert_eq!(parse_semver("3.4"), Some((3, 4, 0)));
        assert_eq!(parse_semver("0.0.1-rc30"), Some((0, 0, 1)));
    }

    #[test]
    fn channel_suffixes() {
        assert_eq!(channel_suffix("0.0.1-rc30"), Some(("rc", "30")));
        assert_eq!(channel_suffix("0.0.1-beta"), Some(("beta", "")));
        assert_eq!(channel_suffix("0.0.1"), None);
        assert_eq!(channel_suffix("0.0.1-30"), None);
        assert_eq!(channel_suffix("0.0.1-rc3x"), None);
    }

    #[test]
    fn runtimes_remember_per_sprite_and_stay_bounded() {
        let runtimes = Runtimes::default();
        runtimes.record_version("a", " 0.1.0 ");
        runtimes.record_version("b", "");
        assert_eq!(
            runtimes.get("a").and_then(|k| k.version).as_deref(),
            Some("0.1.0")
        );
        assert!(runtimes.get("b").is_none());
        runtimes.update("a", |k| k.legacy = true);
        assert!(runtimes.get("a").is_some_and(|k| k.legacy));
        // Learning about another sprite keeps what was learned about this one.
        runtimes.record_version("c", "0.2.0");
        assert!(runtimes.get("a").is_some_and(|k| k.legacy));
        assert_eq!(runtimes.lock().len(), 2);
        // Full: a known sprite is updated in place, a new one starts the memory over.
        for i in 2..REMEMBERED_SPRITES {
            runtimes.record_version(&format!("s{i}"), "1.0.0");
        }
        assert_eq!(runtimes.lock().len(), REMEMBERED_SPRITES);
        runtimes.record_version("a", "0.3.0");
        assert_eq!(runtimes.lock().len(), REMEMBERED_SPRITES);
        assert_eq!(
            runtimes.get("a").and_then(|k| k.version).as_deref(),
            Some("0.3.0")
        );
        runtimes.record_version("new", "1.0.0");
        assert_eq!(runtimes.lock().len(), 1);
        assert!(runtimes.get("new").is_some());
    }

    #[test]
    fn attach_urls() {
        let sprite = crate::Client::builder()
            .base_url("http://127.0.0.1:1")
            .token("t")
            .build()
            .unwrap()
            .sprite("box 1");
        assert_eq!(
            Form::Path.path(&sprite, "41/7"),
            "/v1/sprites/box%201/exec/41%2F7"
        );
        assert_eq!(
            Form::Legacy.path(&sprite, "41"),
            "/v1/sprites/box%201/exec?id=41"
        );
    }
}
