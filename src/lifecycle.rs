//! A sprite's lifecycle ([PROTOCOL.md §14](crate::protocol#14-lifecycle-and-environment)): its URL, health
//! check, restart, waiting for a status, and the stream of status changes of every sprite
//! ([§5.4](crate::protocol#54-get-update-delete-upgrade-restart-check),
//! [§5.5](crate::protocol#55-watch--get-v1sprites-with-accept-applicationx-ndjson)).

use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::Client;
use crate::error::{Error, Result, TransportError};
use crate::sprite::Sprite;
use crate::types::OrgStats;
use crate::url::Query;

/// Longest line of the watch stream the client accepts (a line is one small JSON object).
const MAX_WATCH_LINE: u64 = 64 * 1024;
/// How often [`Sprite::wait_until`] looks again on a server without the watch stream.
const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// A sprite's status ([PROTOCOL.md §14](crate::protocol#14-lifecycle-and-environment)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpriteStatus {
    /// Nothing runs; the next request wakes it (1–2 s on the platform).
    Cold,
    /// Up and idle: it answers at once.
    Warm,
    /// Up and in use.
    Running,
}

impl SpriteStatus {
    /// `cold`, `warm` or `running`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SpriteStatus::Cold => "cold",
            SpriteStatus::Warm => "warm",
            SpriteStatus::Running => "running",
        }
    }

    /// Parses the wire form; `None` for anything else.
    ///
    /// ```
    /// use sprites::SpriteStatus;
    /// assert_eq!(SpriteStatus::parse("warm"), Some(SpriteStatus::Warm));
    /// assert_eq!(SpriteStatus::parse("deleted"), None);
    /// ```
    pub fn parse(s: &str) -> Option<SpriteStatus> {
        match s {
            "cold" => Some(SpriteStatus::Cold),
            "warm" => Some(SpriteStatus::Warm),
            "running" => Some(SpriteStatus::Running),
            _ => None,
        }
    }
}

impl std::fmt::Display for SpriteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of [`Sprite::check`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SpriteCheck {
    /// The sprite's name.
    #[serde(default)]
    pub sprite_name: String,
    /// The sprite's id.
    #[serde(default)]
    pub sprite_id: String,
    /// The verdict (values undocumented; sprites-local says `ok`, `cold` or `error`).
    #[serde(default)]
    pub status: String,
    /// Why, when it is not healthy.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the check ran (RFC 3339).
    #[serde(default)]
    pub checked_at: Option<String>,
    /// How long the check took (sprites-local: milliseconds).
    #[serde(default)]
    pub elapsed: Option<f64>,
}

/// The answer of [`Sprite::restart`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RestartResult {
    /// The sprite's name.
    #[serde(default)]
    pub sprite_name: String,
    /// The machine behind it.
    #[serde(default)]
    pub machine_id: String,
    /// The server's words.
    #[serde(default)]
    pub message: String,
}

/// One line of [`Client::watch_sprites`]: a sprite's status, or a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SpriteEvent {
    /// `Some("heartbeat")` for a heartbeat (no sprite); `None` for a sprite's status.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The sprite.
    #[serde(default)]
    pub name: Option<String>,
    /// Its status: `cold`, `warm`, `running` (see [`SpriteEvent::status`]), or another word
    /// the server uses (sprites-local: `deleted`).
    #[serde(default, rename = "status")]
    pub status_text: Option<String>,
    /// The sprite's runtime version.
    #[serde(default)]
    pub running_version: Option<String>,
    /// When it last ran (RFC 3339).
    #[serde(default)]
    pub last_running_at: Option<String>,
    /// When it last went idle (RFC 3339).
    #[serde(default)]
    pub last_warming_at: Option<String>,
    /// When this was said (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The organisation's counts at that moment.
    #[serde(default)]
    pub org: Option<OrgStats>,
}

impl SpriteEvent {
    /// True for a heartbeat line.
    pub fn is_heartbeat(&self) -> bool {
        self.kind.as_deref() == Some("heartbeat")
    }

    /// The status as a [`SpriteStatus`], when it is one of the three.
    pub fn status(&self) -> Option<SpriteStatus> {
        self.status_text.as_deref().and_then(SpriteStatus::parse)
    }
}

/// What [`Client::watch_sprites`] watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Only sprites whose name starts with this.
    pub prefix: Option<String>,
    /// At most this many sprites in the opening snapshot (1–100).
    pub max_results: Option<u32>,
}

impl WatchOptions {
    /// Everything.
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }

    /// Only sprites whose name starts with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// At most `n` sprites in the opening snapshot.
    pub fn max_results(mut self, n: u32) -> Self {
        self.max_results = Some(n);
        self
    }
}

/// The stream of [`Client::watch_sprites`]: an iterator of events, read as they come
/// (blocking). It ends when the server ends the stream; an error (the connection broke, or
/// nothing — not even a heartbeat — came for the client's HTTP timeout) is yielded once,
/// then it ends. Dropping it closes the connection.
pub struct SpriteWatch {
    lines: BufReader<Box<dyn Read + Send + Sync + 'static>>,
    done: bool,
}

impl std::fmt::Debug for SpriteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpriteWatch")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SpriteWatch {
    fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.lines)
                .take(MAX_WATCH_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::Transport(TransportError::io("reading the sprite watch", e)))?;
            if n == 0 {
                return Ok(None);
            }
            if line.len() as u64 > MAX_WATCH_LINE {
                return Err(Error::ResponseTooLarge {
                    what: "a line of the sprite watch".into(),
                    limit: MAX_WATCH_LINE,
                });
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }
}

impl Iterator for SpriteWatch {
    type Item = Result<SpriteEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.next_line() {
            Ok(Some(line)) => serde_json::from_slice(&line).map_err(Error::Decode),
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => Err(e),
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

impl Client {
    /// Watches sprites' statuses (`GET /v1/sprites` as NDJSON): first one event per
    /// matching sprite, then one per change, with heartbeats in between.
    ///
    /// ```no_run
    /// use sprites::WatchOptions;
    /// # let client = sprites::Client::new("token")?;
    /// for event in client.watch_sprites(&WatchOptions::new().prefix("ci-"))? {
    ///     let event = event?;
    ///     if let (Some(name), Some(status)) = (&event.name, event.status()) {
    ///         println!("{name} is {status}");
    ///     }
    /// }
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn watch_sprites(&self, options: &WatchOptions) -> Result<SpriteWatch> {
        self.watch_with(options, self.streaming_request("GET", &watch_path(options)))
    }

    fn watch_with(&self, options: &WatchOptions, request: ureq::Request) -> Result<SpriteWatch> {
        if options.max_results == Some(0) {
            return Err(Error::InvalidInput("max_results must be at least 1".into()));
        }
        let response = self.send(request.set("Accept", "application/x-ndjson"), None)?;
        Ok(SpriteWatch {
            lines: BufReader::new(response.into_reader()),
            done: false,
        })
    }
}

fn watch_path(options: &WatchOptions) -> String {
    let mut q = Query::new();
    if let Some(p) = &options.prefix {
        q.push("prefix", p);
    }
    if let Some(n) = options.max_results {
        q.push("max_results", &n.to_string());
    }
    format!("/v1/sprites{}", q.as_str())
}

impl Sprite {
    /// The sprite's URL (`url` of its info): HTTP to it reaches port 8080 inside the sprite
    /// (or its `http_port` service), waking it; who may is set by its `url_settings`.
    ///
    /// ```no_run
    /// # let client = sprites::Client::new("token")?;
    /// let url = client.sprite("web").url()?;
    /// println!("serving at {url}");
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn url(&self) -> Result<String> {
        self.info()?
            .url
            .ok_or_else(|| Error::Protocol("the sprite's info has no url".into()))
    }

    /// Asks the platform whether the sprite is healthy (`GET …/check`). Does not wake it.
    ///
    /// ```no_run
    /// # let client = sprites::Client::new("token")?;
    /// let check = client.sprite("web").check()?;
    /// println!("{}: {:?}", check.status, check.reason);
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn check(&self) -> Result<SpriteCheck> {
        let response = self
            .client()
            .send(self.client().request("GET", &self.path("/check")), None)?;
        Client::decode(response)
    }

    /// Restarts the sprite (`POST …/restart`): its processes and sessions end, its services
    /// start again, its files stay. Returns once it is back.
    ///
    /// ```no_run
    /// # let client = sprites::Client::new("token")?;
    /// let done = client.sprite("web").restart()?;
    /// println!("{}", done.message);
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn restart(&self) -> Result<RestartResult> {
        let request = self
            .client()
            .request("POST", &self.path("/restart"))
            .timeout(Duration::from_secs(60));
        let response = self.client().send(request, None)?;
        Client::decode(response)
    }

    /// Waits until the sprite's status is `status`, at most `timeout`; returns its info
    /// then. Follows the watch stream (no polling) and falls back to looking once a second
    /// on a server without one. A sprite that is deleted meanwhile is an error (404).
    /// [`Sprite::wait_ready`] waits for `warm` *or* `running`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sprites::SpriteStatus;
    /// # let client = sprites::Client::new("token")?;
    /// let sprite = client.create_sprite("fresh")?;
    /// sprite.wait_until(SpriteStatus::Running, Duration::from_secs(30))?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn wait_until(&self, status: SpriteStatus, timeout: Duration) -> Result<crate::SpriteInfo> {
        self.wait_for(&[status], timeout)
    }

    /// Waits until the sprite is up — `warm` or `running`, what code that is about to use
    /// it needs — at most `timeout`; returns its info then.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = sprites::Client::new("token")?;
    /// let sprite = client.create_sprite("fresh")?;
    /// sprite.wait_ready(Duration::from_secs(45))?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn wait_ready(&self, timeout: Duration) -> Result<crate::SpriteInfo> {
        self.wait_for(&[SpriteStatus::Warm, SpriteStatus::Running], timeout)
    }

    fn wait_for(&self, wanted: &[SpriteStatus], timeout: Duration) -> Result<crate::SpriteInfo> {
        let deadline = Instant::now() + timeout;
        let is_wanted = |s: Option<&str>| {
            s.and_then(SpriteStatus::parse)
                .is_some_and(|s| wanted.contains(&s))
        };
        let info = self.info()?;
        if is_wanted(info.status.as_deref()) {
            return Ok(info);
        }
        // The watch, bounded as a whole by what is left of the timeout.
        let options = WatchOptions::new().prefix(self.name());
        let request = self
            .client()
            .streaming_request("GET", &watch_path(&options))
            .timeout(deadline.saturating_duration_since(Instant::now()));
        if let Ok(watch) = self.client().watch_with(&options, request) {
            for event in watch {
                let Ok(event) = event else { break };
                if event.name.as_deref() == Some(self.name())
                    && is_wanted(event.status_text.as_deref())
                {
                    return self.info();
                }
                if event.name.as_deref() == Some(self.name())
                    && event.status_text.as_deref() == Some("deleted")
                {
                    return self.info(); // the 404
                }
            }
        }
        // No watch here (or it ended): look, within what is left.
        loop {
            let info = self.info()?;
            if is_wanted(info.status.as_deref()) {
                return Ok(info);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let wanted: Vec<&str> = wanted.iter().map(|s| s.as_str()).collect();
                return Err(Error::Transport(TransportError::io(
                    format!(
                        "waiting for sprite {} to be {}",
                        self.name(),
                        wanted.join(" or ")
                    ),
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "still {} after {timeout:?}",
                            info.status.as_deref().unwrap_or("without a status")
                        ),
                    ),
                )));
            }
            std::thread::sleep(left.min(POLL_FALLBACK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_with_and_without_fields() {
        let e: SpriteEvent = serde_json::from_str(
            r#"{"name":"a","status":"warm","last_running_at":"t1","timestamp":"t2",
                "org":{"name":"o","running":1,"warm":2,"cold":3}}"#,
        )
        .unwrap();
        assert_eq!(e.status(), Some(SpriteStatus::Warm));
        assert!(!e.is_heartbeat());
        assert_eq!(e.org.unwrap().cold, Some(3));
        let hb: SpriteEvent = serde_json::from_str(r#"{"type":"heartbeat"}"#).unwrap();
        assert!(hb.is_heartbeat() && hb.name.is_none() && hb.status().is_none());
        let gone: SpriteEvent = serde_json::from_str(r#"{"name":"a","status":"deleted"}"#).unwrap();
        assert_eq!(
            (gone.status(), gone.status_text.as_deref()),
            (None, Some("deleted"))
        );
    }

    #[test]
    fn the_stream_skips_blank_lines_ends_at_eof_and_stops_after_an_error() {
        let body = b"\n{\"name\":\"a\",\"status\":\"cold\"}\n  \n{\"type\":\"heartbeat\"}".to_vec();
        let mut w = SpriteWatch {
            lines: BufReader::new(Box::new(io::Cursor::new(body))),
            done: false,
        };
        assert_eq!(w.next().unwrap().unwrap().name.as_deref(), Some("a"));
        assert!(
            w.next().unwrap().unwrap().is_heartbeat(),
            "a last line without newline"
        );
        assert!(w.next().is_none());
        let mut bad = SpriteWatch {
            lines: BufReader::new(Box::new(io::Cursor::new(b"{nope\n{}\n".to_vec()))),
            done: false,
        };
        assert!(matches!(bad.next(), Some(Err(Error::Decode(_)))));
        assert!(bad.next().is_none(), "ends after an error");
    }

    #[test]
    fn a_line_is_bounded() {
        let mut body = vec![b' '; MAX_WATCH_LINE as usize];
        body.extend_from_slice(b"{}\n");
        let mut w = SpriteWatch {
            lines: BufReader::new(Box::new(io::Cursor::new(body))),
            done: false,
        };
        assert!(matches!(
            w.next(),
            Some(Err(Error::ResponseTooLarge { .. }))
        ));
        // At the bound exactly, it is read.
        let mut body = vec![b' '; MAX_WATCH_LINE as usize - 3];
        body.extend_from_slice(b"{}\n");
        let mut w = SpriteWatch {
            lines: BufReader::new(Box::new(io::Cursor::new(body))),
            done: false,
        };
        assert!(w.next().unwrap().is_ok());
    }

    #[test]
    fn watch_paths() {
        assert_eq!(watch_path(&WatchOptions::new()), "/v1/sprites");
        assert_eq!(
            watch_path(&WatchOptions::new().prefix("a b").max_results(5)),
            "/v1/sprites?prefix=a%20b&max_results=5"
        );
    }
}
