//! A sprite's sessions ([PROTOCOL.md §7](crate::protocol#7-sessions-list-attach-kill)): the list
//! ([`Session`]) and the kill endpoint ([`KillReport`]). Attaching is [`Sprite::attach`].

use super::child::normalize_signal;
use crate::client::Client;
use crate::error::{ApiError, Error, Result, TransportError};
use crate::sprite::Sprite;
use crate::url::{Query, encode};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// The most of a kill answer the client reads: its progress is a few short lines.
const MAX_KILL_BODY: u64 = 1 << 20;

/// One session on a sprite, as [`Sprite::sessions`] lists it
/// ([PROTOCOL.md §7.1](crate::protocol#71-list--get-v1spritesnameexec)).
///
/// Every field but the id may be missing on the wire; missing ones are empty, 0 or `false`.
/// Timestamps are the RFC 3339 text the server sent.
///
/// ```
/// let session: sprites::Session = serde_json::from_str(
///     r#"{"id":4127,"command":"npm run dev","workdir":"/app","created":"2026-01-13T10:30:00Z",
///         "bytes_per_second":12.5,"is_active":true,"tty":true}"#,
/// ).unwrap();
/// assert_eq!(session.id, "4127"); // older servers send a number
/// assert_eq!(session.last_activity, None);
/// assert!(session.tty && session.is_active);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Session {
    /// The session id (the process id on the sprite), for [`Sprite::attach`] and
    /// [`Sprite::kill_session`].
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The command line.
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: String,
    /// Its working directory.
    #[serde(default, deserialize_with = "null_as_default")]
    pub workdir: String,
    /// When it started (RFC 3339).
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
    /// Recent output rate.
    #[serde(default, deserialize_with = "null_as_default")]
    pub bytes_per_second: f64,
    /// Whether the server counts it as active.
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_active: bool,
    /// When it last produced output or took input (RFC 3339), if the server says.
    #[serde(default)]
    pub last_activity: Option<String>,
    /// Whether it runs in a terminal.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tty: bool,
}

#[derive(Deserialize)]
struct SessionList {
    #[serde(default, deserialize_with = "null_as_default")]
    sessions: Vec<Session>,
}

/// What the kill endpoint answered ([PROTOCOL.md §7.3](crate::protocol#73-kill--post-v1spritesnameexecidkill)).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-kill-report", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use std::time::Duration;
/// let child = sprite.command("sleep").arg("60").stdin(sprites::Stdio::null()).spawn()?;
/// let id = child.session_id().expect("announced");
/// let report = sprite.kill_session(&id, "INT", Duration::from_secs(5))?;
/// assert_eq!(report.exit_code(), Some(128 + 2)); // from the server's progress
/// for line in &report.progress {
///     println!("{}: {}", line.kind, line.message.as_deref().unwrap_or(""));
/// }
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KillReport {
    /// The session had already exited (410): nothing was signalled, and nothing needed to be.
    pub already_exited: bool,
    /// The progress lines the server streamed, in order (none from servers that send none).
    pub progress: Vec<KillProgress>,
}

impl KillReport {
    /// The exit status a progress line reported, if one did (the last such line).
    ///
    /// ```
    /// let gone = sprites::KillReport::default();
    /// assert_eq!(gone.exit_code(), None);
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        self.progress.iter().rev().find_map(|p| p.exit_code)
    }
}

/// One line of a kill's NDJSON progress. Servers differ in the fields they send (the Python
/// SDK reads `type`/`data`/`error`, the JS one `type`/`message`/`signal`/`pid`/`exit_code`);
/// this takes the union, each field when present. See [`KillReport`] for an example.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KillProgress {
    /// `signal`, `timeout`, `exited`, `killed`, `complete`, `info`...
    pub kind: String,
    /// Text for people: `message`, or `data`.
    pub message: Option<String>,
    /// The signal sent.
    pub signal: Option<String>,
    /// The process concerned.
    pub pid: Option<u32>,
    /// Its exit status, once it exited.
    pub exit_code: Option<i32>,
}

impl KillProgress {
    /// A line as the server sent it; `None` for one that is not a JSON object (skipped, as the
    /// JS and Python SDKs skip them).
    fn parse(line: &str) -> Option<(KillProgress, Option<String>)> {
        let Value::Object(map) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let text = |key: &str| match map.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let number = |key: &str| match map.get(key) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let progress = KillProgress {
            kind: text("type").unwrap_or_default(),
            message: text("message").or_else(|| text("data")),
            signal: text("signal"),
            pid: number("pid").and_then(|n| u32::try_from(n).ok()),
            exit_code: number("exit_code").and_then(|n| i32::try_from(n).ok()),
        };
        let error = (progress.kind == "error")
            .then(|| text("error").or_else(|| progress.message.clone()))
            .map(Option::unwrap_or_default);
        Some((progress, error))
    }
}

/// `GET /v1/sprites/{name}/exec`.
pub(crate) fn list(sprite: &Sprite) -> Result<Vec<Session>> {
    let client = sprite.client();
    let response = client.send(client.request("GET", &sprite.path("/exec")), None)?;
    let list: SessionList = Client::decode(response)?;
    Ok(list.sessions)
}

/// `POST /v1/sprites/{name}/exec/{id}/kill?signal=NAME&timeout=GRACE`.
pub(crate) fn kill(sprite: &Sprite, id: &str, signal: &str, grace: Duration) -> Result<KillReport> {
    if id.is_empty() {
        return Err(Error::InvalidInput("a session id must not be empty".into()));
    }
    let signal = normalize_signal(signal)?;
    let mut query = Query::new();
    query
        .push("signal", &signal)
        .push("timeout", &go_duration(grace));
    let path = sprite.path(&format!("/exec/{}/kill{}", encode(id), query.as_str()));
    let client = sprite.client();
    // The progress streams while the grace period runs: bound the whole exchange by it plus
    // the usual bound for an answer.
    let request = client
        .streaming_request("POST", &path)
        .timeout(grace.saturating_add(client.inner.http_timeout));
    let response = match client.send(request, None) {
        Ok(response) => response,
        Err(Error::Api(api)) if api.status == 410 => {
            return Ok(KillReport {
                already_exited: true,
                progress: Vec::new(),
            });
        }
        Err(err) => return Err(err),
    };
    let status = response.status();
    read_progress(status, response.into_reader())
}

/// Reads NDJSON progress lines (blank and unparsable ones skipped, a last line without its
/// newline kept), at most [`MAX_KILL_BODY`] bytes. A line of type `error` is the server saying
/// the kill failed.
fn read_progress(status: u16, body: impl Read) -> Result<KillReport> {
    let mut reader = BufReader::new(body.take(MAX_KILL_BODY + 1));
    let mut report = KillReport::default();
    let mut read = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| TransportError::io("reading the kill's progress", e))?;
        if n == 0 {
            return Ok(report);
        }
        read += n as u64;
        if read > MAX_KILL_BODY {
            return Err(Error::ResponseTooLarge {
                what: "the kill's progress".into(),
                limit: MAX_KILL_BODY,
            });
        }
        let Some((progress, error)) = KillProgress::parse(line.trim()) else {
            continue;
        };
        if let Some(message) = error {
            return Err(ApiError::new(status, Some("kill_failed"), message).into());
        }
        report.progress.push(progress);
    }
}

/// A duration as Go writes one, which every server parses: `10s`, `1500ms`, `0s`.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros().max(1))
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "a session id must be a string or a number, not {other}"
        ))),
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lists_tolerate_what_servers_send() {
        let list: SessionList = serde_json::from_str(
            r#"{"sessions":[
                {"id":"4127","command":"sleep 60","workdir":"/home/sprite","created":"2026-01-13T10:30:00Z",
                 "bytes_per_second":0,"is_active":true,"last_activity":"2026-01-13T10:31:00Z","tty":false},
                {"id":12,"command":null,"is_active":false,"tty":true,"brand_new":1}]}"#,
        )
        .unwrap();
        assert_eq!(list.sessions.len(), 2);
        assert_eq!(list.sessions[0].id, "4127");
        assert_eq!(
            list.sessions[0].last_activity.as_deref(),
            Some("2026-01-13T10:31:00Z")
        );
        assert_eq!(list.sessions[1].id, "12");
        assert_eq!(list.sessions[1].command, "");
        assert!(list.sessions[1].tty);
        let empty: SessionList = serde_json::from_str("{}").unwrap();
        assert!(empty.sessions.is_empty());
        let null: SessionList = serde_json::from_str(r#"{"sessions":null}"#).unwrap();
        assert!(null.sessions.is_empty());
        assert!(serde_json::from_str::<SessionList>(r#"{"sessions":[{"id":true}]}"#).is_err());
        assert!(serde_json::from_str::<SessionList>(r#"{"sessions":[{}]}"#).is_err());
    }

    #[test]
    fn kill_progress_in_both_sdk_shapes() {
        let body = concat!(
            "{\"type\":\"signal\",\"message\":\"sent SIGTERM\",\"signal\":\"SIGTERM\",\"pid\":4127}\n",
            "\n",
            "not json\n",
            "{\"type\":\"info\",\"data\":\"signal TERM sent\"}\n",
            "{\"type\":\"exited\",\"exit_code\":143,\"pid\":\"4127\"}\n",
            "{\"type\":\"complete\"}"
        );
        let report = read_progress(200, body.as_bytes()).unwrap();
        assert!(!report.already_exited);
        let kinds: Vec<_> = report.progress.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["signal", "info", "exited", "complete"]);
        assert_eq!(report.progress[0].signal.as_deref(), Some("SIGTERM"));
        assert_eq!(report.progress[0].pid, Some(4127));
        assert_eq!(
            report.progress[1].message.as_deref(),
            Some("signal TERM sent")
        );
        assert_eq!(report.progress[2].pid, Some(4127));
        assert_eq!(report.exit_code(), Some(143));
        assert_eq!(KillReport::default().exit_code(), None);
    }

    #[test]
    fn an_error_line_fails_the_kill() {
        let body = "{\"type\":\"signal\"}\n{\"type\":\"error\",\"error\":\"no such process\",\"message\":\"m\"}\n";
        let err = read_progress(200, body.as_bytes()).unwrap_err();
        let api = err.api().expect("an API error");
        assert_eq!(
            (api.status, api.code.as_deref(), api.message.as_str()),
            (200, Some("kill_failed"), "no such process")
        );
        let err =
            read_progress(200, "{\"type\":\"error\",\"message\":\"m\"}".as_bytes()).unwrap_err();
        assert_eq!(err.api().unwrap().message, "m");
    }

    #[test]
    fn progress_is_bounded() {
        let line = format!("{{\"type\":\"info\",\"data\":\"{}\"}}\n", "x".repeat(1000));
        let at_limit = line.repeat((MAX_KILL_BODY as usize) / line.len());
        assert!(at_limit.len() as u64 <= MAX_KILL_BODY);
        assert!(read_progress(200, at_limit.as_bytes()).is_ok());
        let over = format!("{at_limit}{line}");
        assert!(matches!(
            read_progress(200, over.as_bytes()),
            Err(Error::ResponseTooLarge { .. })
        ));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_micros(2500)), "2500us");
        assert_eq!(go_duration(Duration::from_nanos(1)), "1us");
    }
}
