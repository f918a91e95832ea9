//! Listening ports on a sprite as typed values: [`PortEvent`], delivered by an exec session
//! ([`PortEvents`], from [`Command::port_events`](crate::Command::port_events)) or by the
//! sprite's port watch ([`PortWatch`], from [`Sprite::watch_ports`](crate::Sprite::watch_ports);
//! [PROTOCOL.md §10](crate::protocol#10-tcp-proxy)).
//!
//! A port watch holds one WebSocket and one thread, which reads the server's messages and
//! pings while the connection is idle. Events wait in a bounded queue: a watch nobody reads
//! stops reading its socket, as an unread pipe does, so memory stays constant.

use super::io::{Keepalive, SESSION_INFO_WAIT};
use crate::error::{Error, Result};
use crate::sprite::Sprite;
use crate::types::ServerMessage;
use crate::watch_stream;
use crate::ws::{self, Socket};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events queued for a reader before the connection's thread waits for room.
const QUEUED_EVENTS: usize = 64;
/// Events a watch holds while it waits for the server's first snapshot (which comes first, so
/// a well-behaved server never fills this).
const EARLY_EVENTS: usize = 4096;
/// Listening ports accepted in one snapshot: far above what a sprite has, far below what
/// would hurt this process.
const MAX_SNAPSHOT: usize = 65_536;

/// Whether a port started or stopped listening.
///
/// ```
/// use sprites::{PortEvent, PortEventKind, ServerMessage};
/// let event = PortEvent::from_message(&ServerMessage::parse(
///     r#"{"type":"port_closed","port":3000,"address":"0.0.0.0","pid":41}"#,
/// )).unwrap();
/// assert_eq!(event.kind, PortEventKind::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortEventKind {
    /// A process started listening (`port_opened`, or a port in a watch's first snapshot).
    Opened,
    /// A process stopped listening (`port_closed`).
    Closed,
}

/// A process on the sprite started or stopped listening on a TCP port
/// ([PROTOCOL.md §6.4](crate::protocol#64-text-frames-from-the-server)).
///
/// ```
/// use sprites::{PortEvent, PortEventKind, ServerMessage};
/// let message = ServerMessage::parse(r#"{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":41}"#);
/// let event = PortEvent::from_message(&message).unwrap();
/// assert_eq!((event.kind, event.port, event.pid), (PortEventKind::Opened, 3000, Some(41)));
/// assert!(event.ip().unwrap().is_unspecified());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PortEvent {
    /// Opened or closed.
    pub kind: PortEventKind,
    /// The port.
    pub port: u16,
    /// The address as the server wrote it (`0.0.0.0`, `127.0.0.1`, `::`...): kept as text so
    /// that nothing the server says is lost; [`ip`](Self::ip) parses it.
    pub address: String,
    /// The listening process, on the sprite.
    pub pid: Option<u32>,
}

impl PortEvent {
    /// The event a server message carries, if it is `port_opened` or `port_closed`.
    ///
    /// ```
    /// use sprites::{PortEvent, ServerMessage};
    /// let exit = ServerMessage::parse(r#"{"type":"exit","exit_code":0}"#);
    /// assert_eq!(PortEvent::from_message(&exit), None);
    /// ```
    pub fn from_message(message: &ServerMessage) -> Option<PortEvent> {
        let (kind, port, address, pid) = match message {
            ServerMessage::PortOpened { port, address, pid } => {
                (PortEventKind::Opened, port, address, pid)
            }
            ServerMessage::PortClosed { port, address, pid } => {
                (PortEventKind::Closed, port, address, pid)
            }
            _ => return None,
        };
        Some(PortEvent {
            kind,
            port: *port,
            address: address.clone(),
            pid: *pid,
        })
    }

    /// [`address`](Self::address) as an IP address (brackets around IPv6 allowed), if it is one.
    ///
    /// ```
    /// # use sprites::{PortEvent, ServerMessage};
    /// let event = PortEvent::from_message(&ServerMessage::parse(
    ///     r#"{"type":"port_closed","port":8080,"address":"[::1]","pid":7}"#,
    /// )).unwrap();
    /// assert_eq!(event.ip(), Some("::1".parse().unwrap()));
    /// ```
    pub fn ip(&self) -> Option<IpAddr> {
        self.address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// The port events of one running command, in the order the server sent them: from
/// [`Child::port_events`](crate::Child::port_events) after
/// [`Command::port_events(true)`](crate::Command::port_events).
///
/// Iterating blocks until the next event and ends when the command's connection does. Events
/// wait in a bounded queue: read them (or drop this handle) or the command's output stalls
/// behind them, as behind an unread pipe.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-events", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use std::time::Duration;
/// let mut child = sprite.command("python3")
///     .args(["-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); time.sleep(1)"])
///     .port_events(true)
///     .spawn()?;
/// let events = child.port_events().expect("asked for");
/// // Opened while the listener lives, closed when it exits; the iterator ends with the command.
/// let seen: Vec<_> = events.map(|e| (e.kind, e.port)).collect();
/// assert!(child.wait()?.success());
/// println!("{seen:?}");
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
pub struct PortEvents {
    rx: Receiver<PortEvent>,
}

impl PortEvents {
    pub(crate) fn new(rx: Receiver<PortEvent>) -> PortEvents {
        PortEvents { rx }
    }

    /// The next event, waiting at most `timeout`: `Err(Timeout)` when none came, and
    /// `Err(Disconnected)` once the command's connection has ended and every event was read.
    ///
    /// # Errors
    ///
    /// As above: std's [`mpsc::RecvTimeoutError`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-events-recv", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::sync::mpsc::RecvTimeoutError;
    /// use std::time::Duration;
    /// let mut child = sprite.command("sleep").arg("1").port_events(true).spawn()?;
    /// let events = child.port_events().unwrap();
    /// // `sleep` listens on nothing: nothing comes, then the command's end ends the events.
    /// assert_eq!(events.recv_timeout(Duration::from_millis(50)), Err(RecvTimeoutError::Timeout));
    /// child.wait()?;
    /// assert_eq!(events.recv_timeout(Duration::from_secs(5)), Err(RecvTimeoutError::Disconnected));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<PortEvent, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => mpsc::RecvTimeoutError::Timeout,
            RecvTimeoutError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
        })
    }

    /// The next event if one is queued, without waiting.
    ///
    /// # Errors
    ///
    /// std's [`mpsc::TryRecvError`]: `Empty`, or `Disconnected` once the connection has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-events-try", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::sync::mpsc::TryRecvError;
    /// let mut child = sprite.command("true").port_events(true).spawn()?;
    /// let events = child.port_events().unwrap();
    /// child.wait()?;
    /// assert_eq!(events.try_recv(), Err(TryRecvError::Disconnected));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&self) -> std::result::Result<PortEvent, mpsc::TryRecvError> {
        self.rx.try_recv().map_err(|e| {
            if e.is_empty() {
                mpsc::TryRecvError::Empty
            } else {
                mpsc::TryRecvError::Disconnected
            }
        })
    }
}

impl Iterator for PortEvents {
    type Item = PortEvent;
    /// Blocks until the next event; `None` once the command's connection has ended.
    fn next(&mut self) -> Option<PortEvent> {
        self.rx.recv().ok()
    }
}

impl fmt::Debug for PortEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortEvents")
            .field("queued", &self.rx.len())
            .finish()
    }
}

/// What the watch thread hands to the [`PortWatch`].
enum Item {
    Snapshot(Vec<PortEvent>),
    Event(PortEvent),
    /// The watch ended: `None` for a normal close (1000) by the server.
    End(Option<Error>),
}

/// Every listening port of a sprite and its changes, from
/// `GET /v1/sprites/{name}/ports/watch` ([`Sprite::watch_ports`]): first the ports listening
/// now ([`ports`](Self::ports)), then an event each time a process in the sprite starts or
/// stops listening, whatever started it.
///
/// Dropping the watch closes its connection (close 1000) and ends its thread.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-watch", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # let sprite = client.create_sprite("doc")?;
/// use std::time::Duration;
/// let mut watch = sprite.watch_ports()?;
/// for port in watch.ports() {
///     println!("listening: {}:{} (pid {:?})", port.address, port.port, port.pid);
/// }
/// if let Some(event) = watch.recv_timeout(Duration::from_millis(100))? {
///     println!("{:?} {}", event.kind, event.port);
/// }
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
pub struct PortWatch {
    ports: Vec<PortEvent>,
    rx: Option<Receiver<Item>>,
    /// Why the watch ended, until reported once; `clean` for a normal close by the server.
    end: Option<End>,
    socket: Arc<Socket>,
    thread: Option<JoinHandle<()>>,
}

/// How a watch ended, kept until reported.
struct End {
    error: Error,
    clean: bool,
}

/// What the next item of the queue is, for the caller.
enum Next {
    Event(PortEvent),
    Timeout,
    /// The watch has ended; the reason is in `PortWatch::end` until reported.
    Ended,
}

impl PortWatch {
    pub(crate) fn open(sprite: &Sprite) -> Result<PortWatch> {
        let client = sprite.client();
        let accepted = ws::dial(client, &sprite.path("/ports/watch"))?;
        let socket = Arc::new(accepted.socket);
        let (tx, rx) = bounded(QUEUED_EVENTS);
        let watcher = Watcher {
            socket: socket.clone(),
            tx,
            keepalive: client.inner.keepalive,
        };
        let thread = std::thread::Builder::new()
            .name("sprites-port-watch".into())
            .spawn(move || watcher.run())
            .map_err(Error::Io)?;
        let mut watch = PortWatch {
            ports: Vec::new(),
            rx: Some(rx),
            end: None,
            socket,
            thread: Some(thread),
        };
        // Bounded by the thread, which gives up on a missing snapshot after SESSION_INFO_WAIT
        // (and ends, dropping its sender, if anything else goes wrong).
        let first = watch.rx.as_ref().map(Receiver::recv);
        match first {
            Some(Ok(Item::Snapshot(ports))) => {
                watch.ports = ports;
                Ok(watch)
            }
            Some(Ok(Item::End(Some(err)))) => Err(err),
            Some(Ok(Item::End(None))) => Err(Error::ConnectionClosed {
                code: Some(1000),
                reason: "the server closed the port watch before its snapshot".into(),
            }),
            // The thread sends the snapshot before any event.
            Some(Ok(Item::Event(_))) | Some(Err(_)) | None => Err(no_snapshot()),
        }
    }

    /// The ports that were listening when the watch started (the server's `port_list`), each
    /// as an [`Opened`](PortEventKind::Opened) event.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-watch-ports", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use sprites::PortEventKind;
    /// let watch = sprite.watch_ports()?;
    /// assert!(watch.ports().iter().all(|p| p.kind == PortEventKind::Opened));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn ports(&self) -> &[PortEvent] {
        &self.ports
    }

    /// The next change, waiting at most `timeout`: `Ok(None)` when nothing happened.
    ///
    /// # Errors
    ///
    /// Once the watch has ended: [`Error::ConnectionClosed`] with code 1000 when the server
    /// closed it normally, else what ended it ([`Error::KeepaliveTimeout`], a transport error,
    /// another close code). The first call after the end says why; later calls say only that
    /// it has ended (a `ConnectionClosed` without a code).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-port-watch-recv", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// let mut watch = sprite.watch_ports()?;
    /// // Nothing starts listening here: the wait ends empty-handed.
    /// assert_eq!(watch.recv_timeout(Duration::from_millis(100))?, None);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<PortEvent>> {
        match self.next_item(Some(Instant::now() + timeout)) {
            Next::Event(event) => Ok(Some(event)),
            Next::Timeout => Ok(None),
            Next::Ended => Err(match self.end.take() {
                Some(end) => end.error,
                None => Error::ConnectionClosed {
                    code: None,
                    reason: "the port watch has ended".into(),
                },
            }),
        }
    }

    fn next_item(&mut self, deadline: Option<Instant>) -> Next {
        loop {
            let Some(rx) = self.rx.as_ref() else {
                return Next::Ended;
            };
            let item = match deadline {
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(item) => item,
                    Err(RecvTimeoutError::Timeout) => return Next::Timeout,
                    Err(RecvTimeoutError::Disconnected) => Item::End(None),
                },
                None => rx.recv().unwrap_or(Item::End(None)),
            };
            match item {
                Item::Event(event) => return Next::Event(event),
                // Only the first item is a snapshot, taken by `open`.
                Item::Snapshot(_) => continue,
                Item::End(reason) => {
                    self.rx = None;
                    self.end = Some(match reason {
                        Some(error) => End {
                            error,
                            clean: false,
                        },
                        None => End {
                            error: Error::ConnectionClosed {
                                code: Some(1000),
                                reason: "the server closed the port watch".into(),
                            },
                            clean: true,
                        },
                    });
                    return Next::Ended;
                }
            }
        }
    }
}

impl Iterator for PortWatch {
    type Item = Result<PortEvent>;
    /// Blocks until the next change. Ends (`None`) when the server closes the watch normally;
    /// any other end is yielded once as `Err`, then `None`.
    fn next(&mut self) -> Option<Result<PortEvent>> {
        match self.next_item(None) {
            Next::Event(event) => Some(Ok(event)),
            Next::Timeout => None,
            Next::Ended => match self.end.take() {
                Some(End {
                    error,
                    clean: false,
                }) => Some(Err(error)),
                _ => None,
            },
        }
    }
}

impl Drop for PortWatch {
    fn drop(&mut self) {
        // Dropping the queue first frees a thread waiting for room in it; the close wakes one
        // waiting on the socket.
        self.rx = None;
        self.socket.close_now(1000);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for PortWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortWatch")
            .field("ports", &self.ports)
            .field("ended", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}

fn no_snapshot() -> Error {
    Error::Protocol(format!(
        "the server sent no port_list within {SESSION_INFO_WAIT:?} of the port watch"
    ))
}

/// `{"type":"port_list","ports":[{"port":3000,"address":"0.0.0.0","pid":41}]}`.
fn parse_port_list(text: &str) -> Option<Vec<PortEvent>> {
    #[derive(Deserialize)]
    struct Entry {
        port: u16,
        #[serde(default)]
        address: Option<String>,
        #[serde(default)]
        pid: Option<u32>,
    }
    #[derive(Deserialize)]
    struct List {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        ports: Option<Vec<Entry>>,
    }
    let list: List = serde_json::from_str(text).ok()?;
    if list.kind != "port_list" {
        return None;
    }
    Some(
        list.ports
            .unwrap_or_default()
            .into_iter()
            .map(|e| PortEvent {
                kind: PortEventKind::Opened,
                port: e.port,
                address: e.address.unwrap_or_default(),
                pid: e.pid,
            })
            .collect(),
    )
}

/// The thread behind a [`PortWatch`] ([`crate::watch_stream`]): the snapshot first, then
/// events (any that came before the snapshot, delivered after it).
struct Watcher {
    socket: Arc<Socket>,
    tx: Sender<Item>,
    keepalive: Keepalive,
}

impl Watcher {
    fn run(self) {
        let mut decoder = Decode {
            early: Some(Vec::new()),
        };
        let tx = &self.tx;
        let end = watch_stream::run(&self.socket, self.keepalive, &mut decoder, |item| {
            tx.send(item).is_ok()
        });
        let _ = self.tx.send(Item::End(end));
    }
}

/// What a port watch's messages mean: `port_list`, then `port_opened`/`port_closed`.
struct Decode {
    /// Events that came before the snapshot (`None` once it came).
    early: Option<Vec<PortEvent>>,
}

impl watch_stream::Decoder for Decode {
    type Item = Item;

    fn unconfirmed(&self) -> bool {
        self.early.is_some()
    }

    fn late(&self) -> Error {
        no_snapshot()
    }

    fn text(&mut self, text: &str, deliver: &mut dyn FnMut(Item) -> bool) -> Result<bool> {
        if let Some(ports) = parse_port_list(text) {
            if ports.len() > MAX_SNAPSHOT {
                return Err(Error::ResponseTooLarge {
                    what: "a port_list snapshot (in ports)".into(),
                    limit: MAX_SNAPSHOT as u64,
                });
            }
            let queued = self.early.take().unwrap_or_default();
            return Ok(deliver(Item::Snapshot(ports))
                && queued.into_iter().all(|event| deliver(Item::Event(event))));
        }
        let Some(event) = PortEvent::from_message(&ServerMessage::parse(text)) else {
            return Ok(true);
        };
        match &mut self.early {
            Some(queued) if queued.len() >= EARLY_EVENTS => Err(Error::Protocol(format!(
                "the server sent more than {EARLY_EVENTS} port events before its port_list"
            ))),
            Some(queued) => {
                queued.push(event);
                Ok(true)
            }
            None => Ok(deliver(Item::Event(event))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::io::close_reason;

    #[test]
    fn port_list_snapshots() {
        let ports = parse_port_list(
            r#"{"type":"port_list","ports":[{"type":"port_opened","port":80,"address":"0.0.0.0","pid":9},{"port":22}]}"#,
        )
        .unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0],
            PortEvent {
                kind: PortEventKind::Opened,
                port: 80,
                address: "0.0.0.0".into(),
                pid: Some(9)
            }
        );
        assert_eq!((ports[1].port, ports[1].pid), (22, None));
        assert_eq!(
            parse_port_list(r#"{"type":"port_list","ports":null}"#),
            Some(vec![])
        );
        assert_eq!(parse_port_list(r#"{"type":"port_list"}"#), Some(vec![]));
        assert_eq!(parse_port_list(r#"{"type":"port_opened","port":1}"#), None);
        assert_eq!(parse_port_list("garbage"), None);
        assert_eq!(
            parse_port_list(r#"{"type":"port_list","ports":[{"port":70000}]}"#),
            None
        );
    }

    #[test]
    fn events_from_messages() {
        let closed = PortEvent::from_message(&ServerMessage::parse(
            r#"{"type":"port_closed","port":5432,"address":"127.0.0.1","pid":3}"#,
        ))
        .unwrap();
        assert_eq!(closed.kind, PortEventKind::Closed);
        assert_eq!(closed.ip(), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(
            PortEvent::from_message(&ServerMessage::Exit { code: 0 }),
            None
        );
        let odd = PortEvent {
            address: "localhost".into(),
            ..closed
        };
        assert_eq!(odd.ip(), None);
    }

    #[test]
    fn port_events_debug_shows_the_queue() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let events = PortEvents::new(rx);
        tx.send(PortEvent {
            kind: PortEventKind::Opened,
            port: 1,
            address: String::new(),
            pid: None,
        })
        .unwrap();
        assert_eq!(format!("{events:?}"), "PortEvents { queued: 1 }");
    }

    #[test]
    fn close_reasons() {
        use tungstenite::protocol::CloseFrame;
        assert!(
            close_reason(Some(CloseFrame {
                code: 1000.into(),
                reason: "".into()
            }))
            .is_none()
        );
        assert!(matches!(
            close_reason(Some(CloseFrame { code: 1011.into(), reason: "boom".into() })),
            Some(Error::ConnectionClosed { code: Some(1011), reason }) if reason == "boom"
        ));
        assert!(matches!(
            close_reason(None),
            Some(Error::ConnectionClosed {
                code: Some(1005),
                ..
            })
        ));
    }
}
