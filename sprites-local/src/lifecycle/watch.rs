//! The NDJSON watch of `GET /v1/sprites` (`Accept: application/x-ndjson`, §5.5): one
//! line per matching sprite at the start, then one per status change, and a heartbeat line
//! when nothing happened for [`super::LifecycleOptions::heartbeat`]. The stream never ends
//! by itself; it ends when the client leaves (a write fails), the server shuts down, or
//! the client fell [`super::WATCH_QUEUE`] events behind (cut off rather than buffered).

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;

use super::Event;
use crate::api::DuplexResponse;
use crate::net::body::RequestBody;
use crate::net::http::{response_head, ChunkedWriter};
use crate::state::State;

/// Longest a write to a watcher may block (a client that stopped reading) before the
/// stream is given up.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// The organisation's counts, as every line carries them (§5.3 `org`).
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OrgCounts {
    pub running: usize,
    pub warm: usize,
    pub cold: usize,
}

/// One line of the stream.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_running_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_warming_at: Option<&'a str>,
    timestamp: &'a str,
    org: Org,
}

#[derive(Serialize)]
struct Org {
    name: &'static str,
    running: usize,
    warm: usize,
    cold: usize,
    running_limit: usize,
    warm_limit: usize,
}

/// The running version reported for sprites (this server's own).
const RUNNING_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The watch response, ready to run on its connection.
pub(crate) struct Watch {
    state: Arc<State>,
    prefix: String,
    /// The opening snapshot (at most `max_results` sprites).
    snapshot: Vec<Event>,
    events: Receiver<Event>,
}

impl Watch {
    /// Subscribes and takes the snapshot now, at once (so the stream has every change
    /// after the snapshot, none twice).
    pub fn new(state: &Arc<State>, prefix: &str, max: usize) -> Watch {
        let (events, snapshot) = state.lifecycle.subscribe_with_snapshot(state, prefix, max);
        Watch {
            events,
            snapshot,
            state: state.clone(),
            prefix: prefix.to_owned(),
        }
    }

    fn line(&self, ev: Option<&Event>, org: OrgCounts) -> Vec<u8> {
        let now;
        let line = match ev {
            Some(e) => Line {
                kind: None,
                name: Some(&e.name),
                status: Some(e.status),
                running_version: (e.status != "deleted").then_some(RUNNING_VERSION),
                last_running_at: e.last_running_at.as_deref(),
                last_warming_at: e.last_warming_at.as_deref(),
                timestamp: &e.timestamp,
                org: org.into(),
            },
            None => {
                now = crate::time::now_rfc3339();
                Line {
                    kind: Some("heartbeat"),
                    name: None,
                    status: None,
                    running_version: None,
                    last_running_at: None,
                    last_warming_at: None,
                    timestamp: &now,
                    org: org.into(),
                }
            }
        };
        let mut out = serde_json::to_vec(&line).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

impl From<OrgCounts> for Org {
    fn from(c: OrgCounts) -> Org {
        Org {
            name: crate::api::ORG,
            running: c.running,
            warm: c.warm,
            cold: c.cold,
            running_limit: crate::api::RUNNING_LIMIT,
            warm_limit: crate::api::WARM_LIMIT,
        }
    }
}

impl DuplexResponse for Watch {
    fn run(self: Box<Self>, stream: &TcpStream, _body: &mut dyn RequestBody) {
        let _ = stream.set_write_timeout(Some(WRITE_STALL));
        let head = response_head(
            200,
            &[
                ("Content-Type", "application/x-ndjson".into()),
                ("Cache-Control", "no-store".into()),
            ],
            None,
            false,
        );
        let mut raw = stream;
        if raw.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut out = ChunkedWriter::new(stream);
        let state = &self.state;
        let org = crate::api::org_counts(state);
        for ev in &self.snapshot {
            if out.write_all(&self.line(Some(ev), org)).is_err() {
                return;
            }
        }
        let heartbeat = state.lifecycle.options().heartbeat;
        loop {
            if state.is_shutting_down() {
                break;
            }
            let line = match self.events.recv_timeout(heartbeat) {
                Ok(ev) if ev.name.starts_with(&self.prefix) => {
                    self.line(Some(&ev), crate::api::org_counts(state))
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => self.line(None, crate::api::org_counts(state)),
                // Cut off (fell behind) or the server is shutting down.
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if out.write_all(&line).is_err() {
                return;
            }
        }
        let _ = out.finish();
    }
}
