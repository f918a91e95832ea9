//! Checkpoints ([PROTOCOL.md §12](crate::protocol#12-checkpoints)): point-in-time copies of a
//! sprite's writable filesystem, and restores that bring one back.
//!
//! [`Sprite::create_checkpoint`] and [`Sprite::restore_checkpoint`] return a
//! [`CheckpointStream`]: an iterator of [`CheckpointEvent`]s (each with the operation's
//! [`progress`](CheckpointEvent::progress), for a progress bar) whose
//! [`wait`](CheckpointStream::wait) drains it and turns an `error` event into `Err`.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Client;
use crate::error::{ApiError, Error, Result, TransportError};
use crate::sprite::Sprite;
use crate::url::{Query, encode};

/// The most of a create or restore stream the client reads (a handful of short lines).
const MAX_STREAM: u64 = 1 << 20;
/// How long a create or restore may take in all, answer included (a restore of a large
/// tree on a server that copies files takes seconds; the platform's take milliseconds).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);

/// The id of the synthetic entry listings include for the live state
/// ([`Checkpoint::is_current`]).
pub const CURRENT_CHECKPOINT: &str = "Current";

/// One checkpoint, as [`Sprite::list_checkpoints`] and [`Sprite::get_checkpoint`] return it.
/// Fields missing on the wire are empty.
///
/// ```
/// let cp: sprites::Checkpoint = serde_json::from_str(
///     r#"{"id":"v3","create_time":"2026-01-13T10:30:00Z","history":["v2","v1"],
///         "comment":"before upgrade","is_auto":false,"source_id":"v2","health":""}"#,
/// ).unwrap();
/// assert_eq!((cp.id.as_str(), cp.source_id.as_deref()), ("v3", Some("v2")));
/// assert!(!cp.is_current() && cp.is_healthy());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// `v0`, `v1`, …, platform-made `auto-…`, or [`CURRENT_CHECKPOINT`] for the live state.
    pub id: String,
    /// When it was taken (RFC 3339 text as sent).
    #[serde(default)]
    pub create_time: String,
    /// Its ancestors, newest first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub history: Vec<String>,
    /// The creator's comment.
    #[serde(default, deserialize_with = "null_as_default")]
    pub comment: String,
    /// Made by the platform, not by a user.
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_auto: bool,
    /// The checkpoint the sprite's state descended from when this one was taken.
    #[serde(default)]
    pub source_id: Option<String>,
    /// Empty when healthy, otherwise a marker word from the server.
    #[serde(default, deserialize_with = "null_as_default")]
    pub health: String,
}

impl Checkpoint {
    /// Whether this is the synthetic entry for the live state (not restorable).
    pub fn is_current(&self) -> bool {
        self.id == CURRENT_CHECKPOINT
    }

    /// Whether the server reports nothing wrong with it.
    pub fn is_healthy(&self) -> bool {
        self.health.is_empty()
    }
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What [`Sprite::list_checkpoints`] asks for.
#[derive(Debug, Clone, Default)]
pub struct CheckpointListOptions {
    include_auto: bool,
    history: Option<String>,
}

impl CheckpointListOptions {
    /// Every user checkpoint, plus the live state's entry.
    pub fn new() -> CheckpointListOptions {
        CheckpointListOptions::default()
    }

    /// Include the platform's automatic checkpoints (`includeAuto=true`).
    pub fn include_auto(mut self, yes: bool) -> Self {
        self.include_auto = yes;
        self
    }

    /// Only `id` and its ancestors (`history=<id>`; sprites-local's reading of the
    /// platform's filter, PROTOCOL.md §12).
    pub fn history(mut self, id: impl Into<String>) -> Self {
        self.history = Some(id.into());
        self
    }
}

/// What kind of line a [`CheckpointEvent`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointEventKind {
    /// Progress text.
    Info,
    /// Output of a step, as the server relays it.
    Stdout,
    /// Error output of a step.
    Stderr,
    /// The operation failed (even though the HTTP status was 200).
    Error,
    /// A type this client does not know, as sent.
    Other(String),
}

/// One line of a create or restore stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckpointEvent {
    /// What it is.
    pub kind: CheckpointEventKind,
    /// Its text.
    pub data: String,
    /// On an error line, the failure.
    pub error: Option<String>,
    /// When the server wrote it (Unix ms), if it says.
    pub timestamp: Option<u64>,
    /// How far the operation is, 0.0–1.0, if the server says (sprites-local does).
    pub progress: Option<f32>,
}

impl CheckpointEvent {
    fn parse(line: &str) -> Option<CheckpointEvent> {
        let v: Value = serde_json::from_str(line).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = match v.get("type").and_then(Value::as_str)? {
            "info" => CheckpointEventKind::Info,
            "stdout" => CheckpointEventKind::Stdout,
            "stderr" => CheckpointEventKind::Stderr,
            "error" => CheckpointEventKind::Error,
            other => CheckpointEventKind::Other(other.to_owned()),
        };
        Some(CheckpointEvent {
            kind,
            data: text("data").unwrap_or_default(),
            error: text("error"),
            timestamp: v.get("timestamp").and_then(Value::as_u64),
            progress: v
                .get("progress")
                .and_then(Value::as_f64)
                .map(|p| p.clamp(0.0, 1.0) as f32),
        })
    }

    /// The checkpoint id this line announces, from the platform's `  ID: v1` or
    /// `Checkpoint v1 created successfully` lines.
    ///
    /// ```
    /// fn ev(data: &str) -> Option<String> {
    ///     let line = serde_json::json!({"type": "info", "data": data}).to_string();
    ///     let mut stream = sprites::CheckpointStream::from_reader(std::io::Cursor::new(line));
    ///     let event = stream.next()?.ok()?;
    ///     event.checkpoint_id().map(str::to_owned)
    /// }
    /// assert_eq!(ev("  ID: v7").as_deref(), Some("v7"));
    /// assert_eq!(ev("Checkpoint v7 created successfully").as_deref(), Some("v7"));
    /// assert_eq!(ev("Creating checkpoint..."), None);
    /// ```
    pub fn checkpoint_id(&self) -> Option<&str> {
        let d = self.data.trim();
        if let Some(id) = d.strip_prefix("ID:") {
            return Some(id.trim()).filter(|s| !s.is_empty());
        }
        d.strip_prefix("Checkpoint ")
            .and_then(|r| r.strip_suffix(" created successfully"))
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.contains(' '))
    }
}

/// The progress of a checkpoint create or restore: an iterator of [`CheckpointEvent`]s read
/// from the response as it arrives (at most 1 MiB of it).
///
/// ```no_run
/// # fn main() -> sprites::Result<()> {
/// # let sprite = sprites::Client::from_env()?.sprite("dev");
/// for event in sprite.create_checkpoint_with_comment("before upgrade")? {
///     let event = event?;
///     println!("{:>3.0}% {}", event.progress.unwrap_or(0.0) * 100.0, event.data);
/// }
/// # Ok(()) }
/// ```
pub struct CheckpointStream {
    reader: BufReader<std::io::Take<Box<dyn Read + Send>>>,
    status: u16,
    failed: bool,
    done: bool,
    id: Option<String>,
}

impl std::fmt::Debug for CheckpointStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStream")
            .field("status", &self.status)
            .field("done", &self.done)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CheckpointStream {
    /// A stream over NDJSON lines from `reader` (what the API's response body holds): for
    /// tests and for replaying a recorded stream.
    pub fn from_reader(reader: impl Read + Send + 'static) -> CheckpointStream {
        CheckpointStream::new(200, Box::new(reader), None)
    }

    fn new(status: u16, body: Box<dyn Read + Send>, id: Option<String>) -> CheckpointStream {
        CheckpointStream {
            reader: BufReader::new(body.take(MAX_STREAM + 1)),
            status,
            failed: false,
            done: false,
            id,
        }
    }

    /// Reads the stream to its end. Returns the checkpoint's id (the new one for a create,
    /// the restored one for a restore).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with code `checkpoint_failed` for an `error` line; [`Error::Protocol`]
    /// when a create's stream ends without naming the new checkpoint; transport errors.
    pub fn wait(mut self) -> Result<String> {
        for event in self.by_ref() {
            event?;
        }
        self.id
            .ok_or_else(|| Error::Protocol("the checkpoint stream named no checkpoint".into()))
    }

    /// The checkpoint id announced so far (a restore's is known from the start).
    pub fn checkpoint_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

impl Iterator for CheckpointStream {
    type Item = Result<CheckpointEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut line = String::new();
        loop {
            line.clear();
            let n = match self.reader.read_line(&mut line) {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some(Err(
                        TransportError::io("reading checkpoint progress", e).into()
                    ));
                }
            };
            if n == 0 {
                self.done = true;
                if self.reader.get_ref().limit() == 0 {
                    return Some(Err(Error::ResponseTooLarge {
                        what: "the checkpoint progress".into(),
                        limit: MAX_STREAM,
                    }));
                }
                return None;
            }
            let Some(event) = CheckpointEvent::parse(line.trim()) else {
                continue; // blank or unparsable: skipped, as the SDKs do
            };
            if event.kind == CheckpointEventKind::Error {
                self.done = true;
                self.failed = true;
                let message = event
                    .error
                    .clone()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| event.data.clone());
                return Some(Err(ApiError::new(
                    self.status,
                    Some("checkpoint_failed"),
                    message,
                )
                .into()));
            }
            if let Some(id) = event.checkpoint_id() {
                // Prefer the "created successfully" line, as the platform's clients do.
                if self.id.is_none() || event.data.contains("created successfully") {
                    self.id = Some(id.to_owned());
                }
            }
            return Some(Ok(event));
        }
    }
}

impl Sprite {
    /// Takes a checkpoint of the sprite's filesystem (`POST /v1/sprites/{name}/checkpoint`),
    /// while its processes keep running. The stream reports progress; its
    /// [`wait`](CheckpointStream::wait) returns the new id.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-cp-create", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let id = sprite.create_checkpoint()?.wait()?;
    /// assert_eq!(id, "v0");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Api`]: 404 for an unknown sprite, 409 when it holds as many checkpoints as
    /// the server allows, 501 when the server cannot checkpoint it; transport errors.
    pub fn create_checkpoint(&self) -> Result<CheckpointStream> {
        self.create_checkpoint_with_comment("")
    }

    /// [`create_checkpoint`](Self::create_checkpoint) with a comment (empty for none).
    pub fn create_checkpoint_with_comment(&self, comment: &str) -> Result<CheckpointStream> {
        let client = self.client();
        let body = if comment.is_empty() {
            json!({})
        } else {
            json!({ "comment": comment })
        };
        let request = client
            .streaming_request("POST", &self.path("/checkpoint"))
            .timeout(OPERATION_TIMEOUT);
        let response = client.send(request, Some(&body))?;
        Ok(CheckpointStream::new(
            response.status(),
            Box::new(response.into_reader()),
            None,
        ))
    }

    /// Lists the sprite's checkpoints (`GET /v1/sprites/{name}/checkpoints`), newest first
    /// as the server orders them, including the live state's synthetic entry
    /// ([`Checkpoint::is_current`]) where the server sends one.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] 404 for an unknown sprite (or an unknown `history` id on sprites-local);
    /// [`Error::Decode`] for a body that is not a JSON array; transport errors.
    pub fn list_checkpoints(&self, options: &CheckpointListOptions) -> Result<Vec<Checkpoint>> {
        let mut query = Query::new();
        if options.include_auto {
            query.push("includeAuto", "true");
        }
        query.push_opt("history", options.history.as_deref());
        let client = self.client();
        let path = self.path(&format!("/checkpoints{}", query.as_str()));
        let response = client.send(client.request("GET", &path), None)?;
        Client::decode(response)
    }

    /// One checkpoint (`GET /v1/sprites/{name}/checkpoints/{id}`).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] 404 for an unknown sprite or checkpoint; transport errors.
    pub fn get_checkpoint(&self, id: &str) -> Result<Checkpoint> {
        if id.is_empty() {
            return Err(Error::InvalidInput(
                "a checkpoint id must not be empty".into(),
            ));
        }
        let client = self.client();
        let path = self.path(&format!("/checkpoints/{}", encode(id)));
        let response = client.send(client.request("GET", &path), None)?;
        Client::decode(response)
    }

    /// Restores checkpoint `id` (`POST /v1/sprites/{name}/checkpoints/{id}/restore`): the
    /// sprite's processes and sessions end and its filesystem becomes the checkpoint's.
    /// Destructive: the current state is not kept unless you checkpoint it first.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-cp-restore", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// sprite.command("sh").args(["-c", "echo one > f"]).status()?;
    /// let id = sprite.create_checkpoint()?.wait()?;
    /// sprite.command("sh").args(["-c", "echo two > f"]).status()?;
    /// sprite.restore_checkpoint(&id)?.wait()?;
    /// assert_eq!(sprite.command("cat").arg("f").output()?.stdout, b"one\n");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Api`] 404 for an unknown sprite or checkpoint, 400 for
    /// [`CURRENT_CHECKPOINT`]; an `error` line becomes `Err` as it is read; transport errors.
    pub fn restore_checkpoint(&self, id: &str) -> Result<CheckpointStream> {
        if id.is_empty() {
            return Err(Error::InvalidInput(
                "a checkpoint id must not be empty".into(),
            ));
        }
        let client = self.client();
        let path = self.path(&format!("/checkpoints/{}/restore", encode(id)));
        let request = client
            .streaming_request("POST", &path)
            .timeout(OPERATION_TIMEOUT);
        let response = client.send(request, None)?;
        Ok(CheckpointStream::new(
            response.status(),
            Box::new(response.into_reader()),
            Some(id.to_owned()),
        ))
    }

    /// Deletes checkpoint `id` (`DELETE /v1/sprites/{name}/checkpoints/{id}`; the CLI's
    /// `sprite checkpoint delete`, not in the official SDKs).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] 404 for an unknown checkpoint, 409 for the one the sprite is on;
    /// transport errors.
    pub fn delete_checkpoint(&self, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::InvalidInput(
                "a checkpoint id must not be empty".into(),
            ));
        }
        let client = self.client();
        let path = self.path(&format!("/checkpoints/{}", encode(id)));
        client.send(client.request("DELETE", &path), None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: &str) -> CheckpointStream {
        CheckpointStream::from_reader(std::io::Cursor::new(body.to_owned().into_bytes()))
    }

    #[test]
    fn wait_returns_the_created_id_preferring_the_success_line() {
        let body = "{\"type\":\"info\",\"data\":\"  ID: v1\"}\n\n garbage\n\
                    {\"type\":\"info\",\"data\":\"Checkpoint v2 created successfully\",\"progress\":1}";
        assert_eq!(stream(body).wait().unwrap(), "v2");
    }

    #[test]
    fn an_error_line_is_an_err_and_ends_the_stream() {
        let body = "{\"type\":\"info\",\"data\":\"working\",\"progress\":0.5}\n\
                    {\"type\":\"error\",\"data\":\"disk full\"}\n\
                    {\"type\":\"info\",\"data\":\"  ID: v1\"}\n";
        let mut s = stream(body);
        let first = s.next().unwrap().unwrap();
        assert_eq!(first.progress, Some(0.5));
        match s.next().unwrap() {
            Err(Error::Api(api)) => {
                assert_eq!(api.code.as_deref(), Some("checkpoint_failed"));
                assert_eq!(api.message, "disk full");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.next().is_none());
        assert!(matches!(stream(body).wait(), Err(Error::Api(_))));
    }

    #[test]
    fn a_stream_without_an_id_is_a_protocol_error() {
        assert!(matches!(
            stream("{\"type\":\"info\",\"data\":\"ok\"}\n").wait(),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn an_oversized_stream_is_refused() {
        let line = "{\"type\":\"info\",\"data\":\"x\"}\n";
        let body = line.repeat((MAX_STREAM as usize / line.len()) + 2);
        assert!(matches!(
            stream(&body).wait(),
            Err(Error::ResponseTooLarge { .. })
        ));
    }
}
