//! A service's output as the server keeps it: the last lines in memory (for the logs route)
//! and a fan-out to whoever streams the service's events right now (an NDJSON response).
//! Both are bounded: [`RING_LINES`] lines / [`RING_BYTES`] bytes, and [`SUB_QUEUE`] events
//! queued per subscriber (a subscriber that falls further behind misses events, it never
//! makes the service or the server wait).
//!
//! The log *file* inside the sprite is written by [`super::run`]'s logger.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::lock;

/// Lines kept in memory per service.
pub const RING_LINES: usize = 1000;
/// Bytes kept in memory per service.
pub const RING_BYTES: usize = 256 * 1024;
/// Longest line kept whole; longer output is cut into lines of this size.
const MAX_LINE: usize = 16 * 1024;
/// Events queued per subscriber.
const SUB_QUEUE: usize = 1024;

/// Milliseconds since the Unix epoch, as service events carry them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One NDJSON event of a service stream (PROTOCOL.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `started`, `stdout`, `stderr`, `exit`, `error`, `stopping`, `stopped`, `complete`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Output (`stdout`/`stderr`) or a message (`error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For `exit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Unix milliseconds.
    pub timestamp: u64,
    /// For `complete`: where the service's log is inside the sprite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_files: Option<LogFiles>,
}

/// The `log_files` of a `complete` event: one combined log, named three ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogFiles {
    /// The log of stdout and stderr together.
    pub combined: String,
    /// Same file.
    pub stdout: String,
    /// Same file.
    pub stderr: String,
}

impl Event {
    /// An event of `kind` now, without data.
    pub fn new(kind: &'static str) -> Event {
        Event {
            kind,
            data: None,
            exit_code: None,
            timestamp: now_ms(),
            log_files: None,
        }
    }

    /// An event of `kind` now, with `data`.
    pub fn with_data(kind: &'static str, data: String) -> Event {
        Event {
            data: Some(data),
            ..Event::new(kind)
        }
    }

    /// `exit` with `code`.
    pub fn exit(code: i32) -> Event {
        Event {
            exit_code: Some(code),
            ..Event::new("exit")
        }
    }

    /// `complete`, naming `log` as every log file.
    pub fn complete(log: &str) -> Event {
        Event {
            log_files: Some(LogFiles {
                combined: log.to_owned(),
                stdout: log.to_owned(),
                stderr: log.to_owned(),
            }),
            ..Event::new("complete")
        }
    }

    /// The NDJSON line (with its `\n`).
    pub fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Which pipe output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

impl Stream {
    fn kind(self) -> &'static str {
        match self {
            Stream::Out => "stdout",
            Stream::Err => "stderr",
        }
    }
}

struct Line {
    stream: Stream,
    timestamp: u64,
    text: String,
}

#[derive(Default)]
struct Inner {
    lines: VecDeque<Line>,
    bytes: usize,
    /// Output after the last newline, per stream.
    partial: [Vec<u8>; 2],
    subs: Vec<Sender<Event>>,
}

/// One service's recent output and live subscribers.
#[derive(Default)]
pub struct Logs {
    inner: Mutex<Inner>,
}

impl Logs {
    /// Records output `chunk` and sends it to every subscriber.
    pub fn output(&self, stream: Stream, chunk: &[u8]) {
        let ts = now_ms();
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let ev = Event {
            timestamp: ts,
            ..Event::with_data(stream.kind(), String::from_utf8_lossy(chunk).into_owned())
        };
        send(&mut inner.subs, &ev);
        let idx = stream as usize;
        for mut piece in chunk.split_inclusive(|b| *b == b'\n') {
            while !piece.is_empty() {
                let room = MAX_LINE - inner.partial[idx].len();
                let (now, later) = piece.split_at(piece.len().min(room));
                inner.partial[idx].extend_from_slice(now);
                piece = later;
                let done = now.ends_with(b"\n") || inner.partial[idx].len() >= MAX_LINE;
                if done {
                    let bytes = std::mem::take(&mut inner.partial[idx]);
                    push_line(inner, stream, ts, &bytes);
                }
            }
        }
    }

    /// Sends `ev` (a lifecycle event) to every subscriber.
    pub fn event(&self, ev: Event) {
        send(&mut lock(&self.inner).subs, &ev);
    }

    /// The last `n` lines (each ends with `\n` unless cut at [`MAX_LINE`]) as `stdout` /
    /// `stderr` events with the times they were written, plus a receiver of what comes
    /// next — taken together, so nothing falls between them.
    pub fn tail_and_follow(&self, n: usize) -> (Vec<Event>, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(SUB_QUEUE);
        let mut g = lock(&self.inner);
        let skip = g.lines.len().saturating_sub(n);
        let tail = g
            .lines
            .iter()
            .skip(skip)
            .map(|l| Event {
                timestamp: l.timestamp,
                ..Event::with_data(l.stream.kind(), l.text.clone())
            })
            .collect();
        g.subs.push(tx);
        (tail, rx)
    }

    /// A receiver of the events from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.tail_and_follow(0).1
    }
}

fn push_line(inner: &mut Inner, stream: Stream, timestamp: u64, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    inner.bytes += text.len();
    inner.lines.push_back(Line {
        stream,
        timestamp,
        text,
    });
    while inner.lines.len() > RING_LINES || inner.bytes > RING_BYTES {
        match inner.lines.pop_front() {
            Some(old) => inner.bytes -= old.text.len(),
            None => break,
        }
    }
}

/// Sends to every subscriber that still listens; one that is full misses this event.
fn send(subs: &mut Vec<Sender<Event>>, ev: &Event) {
    subs.retain(|s| !matches!(s.try_send(ev.clone()), Err(TrySendError::Disconnected(_))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_across_chunks_and_bounded() {
        let logs = Logs::default();
        logs.output(Stream::Out, b"one\ntw");
        logs.output(Stream::Err, b"err\n");
        logs.output(Stream::Out, b"o\nthree\n");
        let (tail, _) = logs.tail_and_follow(10);
        let texts: Vec<_> = tail.iter().map(|e| e.data.clone().unwrap()).collect();
        assert_eq!(texts, ["one\n", "err\n", "two\n", "three\n"]);
        assert_eq!(tail[1].kind, "stderr");
        let (last2, _) = logs.tail_and_follow(2);
        assert_eq!(last2[0].data.as_deref(), Some("two\n"));
        for i in 0..RING_LINES + 5 {
            logs.output(Stream::Out, format!("{i}\n").as_bytes());
        }
        let (all, _) = logs.tail_and_follow(usize::MAX);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all.last().unwrap().data.as_deref(), Some("1004\n"));
        logs.output(Stream::Out, &vec![b'x'; MAX_LINE + 1]);
        let (last, _) = logs.tail_and_follow(1);
        assert_eq!(last[0].data.as_ref().unwrap().len(), MAX_LINE);
        let big = vec![b'y'; RING_BYTES];
        logs.output(Stream::Out, &big);
        assert!(lock(&logs.inner).bytes <= RING_BYTES);
    }

    #[test]
    fn subscribers_get_events_and_slow_ones_are_not_waited_for() {
        let logs = Logs::default();
        let rx = logs.subscribe();
        logs.event(Event::new("started"));
        logs.output(Stream::Out, b"hi");
        assert_eq!(rx.recv().unwrap().kind, "started");
        assert_eq!(rx.recv().unwrap().data.as_deref(), Some("hi"));
        for _ in 0..SUB_QUEUE + 10 {
            logs.event(Event::new("stdout"));
        }
        assert_eq!(rx.len(), SUB_QUEUE);
        drop(rx);
        logs.event(Event::new("stopped"));
        assert!(lock(&logs.inner).subs.is_empty());
    }

    #[test]
    fn event_lines() {
        let mut e = Event::exit(3);
        e.timestamp = 1780420025035;
        assert_eq!(
            String::from_utf8(e.line()).unwrap(),
            "{\"type\":\"exit\",\"exit_code\":3,\"timestamp\":1780420025035}\n"
        );
        let c = Event::complete("/.sprite/logs/services/web.log");
        let v: serde_json::Value = serde_json::from_slice(&c.line()).unwrap();
        assert_eq!(v["log_files"]["combined"], "/.sprite/logs/services/web.log");
    }
}
