//! Terminal sessions, attach and port events against scripted servers that do what
//! sprites-local never does: no `session_info`, output before it, garbage text, a terminal
//! closed without an exit report, old runtime versions, a path form that is not there, a port
//! watch without its snapshot. Each case says what the client must make of it.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::hostile::{Request, client, serve};
use sprites::{Error, PortEventKind, ServerMessage, Stdio};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server → client WebSocket frame (unmasked, final).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn text(stream: &mut TcpStream, text: &str) -> io::Result<()> {
    stream.write_all(&frame(0x1, text.as_bytes()))
}

fn binary(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    stream.write_all(&frame(0x2, data))
}

fn close(stream: &mut TcpStream, code: u16, reason: &str) -> io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    stream.write_all(&frame(0x8, &payload))
}

fn session_info(stream: &mut TcpStream, id: &str, tty: bool) -> io::Result<()> {
    text(
        stream,
        &format!(r#"{{"type":"session_info","session_id":"{id}","tty":{tty}}}"#),
    )
}

/// Accepts a WebSocket upgrade, with extra response headers.
fn accept(request: &Request, stream: &mut TcpStream, headers: &str) {
    let key = request.header("sec-websocket-key").unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{headers}\r\n"
    )
    .unwrap();
}

/// A whole response in one write, as a real server sends it: a WebSocket upgrade's failure
/// keeps only the body bytes that arrive with its head (tungstenite reads no further).
fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Answers `HEAD …/exec` with this runtime version.
fn head(stream: &mut TcpStream, version: &str) {
    respond(
        stream,
        "200 OK",
        &format!("Sprite-Version: {version}\r\n"),
        "",
    );
}

fn protocol_error(err: &io::Error) -> &str {
    match Error::from_io(err) {
        Some(Error::Protocol(message)) => message,
        other => panic!("expected a protocol error, got {other:?} ({err})"),
    }
}

#[test]
fn an_attach_without_session_info_fails_within_its_bound_whatever_else_arrives() {
    let _watchdog = common::Watchdog::arm("no session_info on attach");
    let (url, _server) = serve(|request, _, mut stream| {
        if request.method == "HEAD" {
            return head(&mut stream, "0.1.0");
        }
        accept(&request, &mut stream, "");
        // Garbage and unknown messages, never the announcement, for longer than the bound.
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(15) {
            let garbage = if i % 2 == 0 {
                format!("not json {i}")
            } else {
                format!(r#"{{"type":"mystery","n":{i}}}"#)
            };
            if text(&mut stream, &garbage).is_err() {
                return;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let started = Instant::now();
    let err = client(&url).sprite("s").attach("7").unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(protocol_error(&err).contains("session_info"), "{err}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&waited),
        "gave up after {waited:?}, the bound is 10 s"
    );
}

#[test]
fn output_before_session_info_is_held_and_read_the_way_session_info_says() {
    let _watchdog = common::Watchdog::arm("early output");
    let (url, _server) = serve(|request, _, mut stream| {
        if request.method == "HEAD" {
            return head(&mut stream, "0.1.0");
        }
        accept(&request, &mut stream, "");
        let result = if request.target.ends_with("/exec/1") {
            // A terminal: "\x01abc" is raw output, not stdout "abc".
            binary(&mut stream, b"\x01abc")
                .and_then(|()| session_info(&mut stream, "1", true))
                .and_then(|()| binary(&mut stream, b"def"))
                .and_then(|()| text(&mut stream, r#"{"type":"exit","exit_code":0}"#))
                .and_then(|()| close(&mut stream, 1000, ""))
        } else {
            // Streams: stdout, stderr, then the exit frame, all before the announcement.
            binary(&mut stream, b"\x01out")
                .and_then(|()| binary(&mut stream, b"\x02err"))
                .and_then(|()| binary(&mut stream, b"\x03\x05"))
                .and_then(|()| session_info(&mut stream, "2", false))
        };
        result.unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let sprite = client(&url).sprite("s");

    let mut tty = sprite.attach("1").unwrap();
    assert!(tty.is_tty());
    assert!(tty.stderr.is_none());
    let mut out = Vec::new();
    tty.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b"\x01abcdef");
    assert!(tty.wait().unwrap().success());

    let streams = sprite.attach("2").unwrap();
    assert!(!streams.is_tty());
    let out = streams.wait_with_output().unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"out"[..], &b"err"[..])
    );
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn output_held_before_session_info_is_bounded_at_one_mebibyte() {
    let _watchdog = common::Watchdog::arm("early output limit");
    const LIMIT: usize = 1 << 20;
    let (url, _server) = serve(|request, _, mut stream| {
        if request.method == "HEAD" {
            return head(&mut stream, "0.1.0");
        }
        accept(&request, &mut stream, "");
        let extra = usize::from(request.target.ends_with("/exec/over"));
        let chunk = vec![b'x'; 64 << 10];
        let mut left = LIMIT + extra;
        while left > 0 {
            let n = left.min(chunk.len());
            if binary(&mut stream, &chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
        let _ = session_info(&mut stream, "9", true)
            .and_then(|()| text(&mut stream, r#"{"type":"exit","exit_code":0}"#));
        std::thread::sleep(Duration::from_millis(500));
    });
    let sprite = client(&url).sprite("s");
    let at_limit = sprite.attach("at").unwrap();
    let out = at_limit.wait_with_output().unwrap();
    assert_eq!(out.stdout.len(), LIMIT);
    let err = sprite.attach("over").unwrap_err();
    assert!(
        protocol_error(&err).contains("before session_info"),
        "{err}"
    );
}

#[test]
fn a_terminal_closed_without_an_exit_report_takes_its_status_from_the_close_code() {
    let _watchdog = common::Watchdog::arm("terminal close codes");
    let (url, _server) = serve(|request, _, mut stream| {
        accept(&request, &mut stream, "");
        let code = if request.target.contains("cmd=fine") {
            1000
        } else {
            1011
        };
        session_info(&mut stream, "5", true)
            .and_then(|()| binary(&mut stream, b"bye\r\n"))
            .and_then(|()| close(&mut stream, code, "done"))
            .unwrap();
        // The TCP connection stays open: the close frame alone must end the command.
        std::thread::sleep(Duration::from_secs(10));
    });
    let sprite = client(&url).sprite("s");
    let started = Instant::now();
    let out = sprite.command("fine").tty(true).output().unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.stdout, b"bye\r\n");
    let err = sprite.command("failed").tty(true).output().unwrap_err();
    match Error::from_io(&err) {
        Some(Error::ConnectionClosed { code, .. }) => assert_eq!(*code, Some(1011)),
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Without a terminal a close is never an exit status.
    let err = sprite.command("fine").output().unwrap_err();
    assert!(matches!(
        Error::from_io(&err),
        Some(Error::ConnectionClosed {
            code: Some(1000),
            ..
        })
    ));
}

/// A server whose sprites run different runtime versions: `HEAD` answers with the version the
/// sprite's name says, the path form of attach is missing where the name says `moved`, and
/// every request target is recorded.
fn versioned_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (url, _server) = serve(move |request, _, mut stream| {
        log.lock()
            .unwrap()
            .push(format!("{} {}", request.method, request.target));
        let sprite = request
            .target
            .split('/')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        let version = match sprite.as_str() {
            "old" | "oldgone" => Some("v0.0.1-rc29"),
            "none" => None,
            "gone" => Some("0.1.0"),
            "dev" => Some("0.0.1-dev-abc1234"),
            _ => Some("0.1.0"),
        };
        let version_header = version.map_or(String::new(), |v| format!("Sprite-Version: {v}\r\n"));
        if request.method == "HEAD" {
            if sprite == "gone" {
                return respond(&mut stream, "404 Not Found", &version_header, "");
            }
            return respond(&mut stream, "200 OK", &version_header, "");
        }
        let path_form = !request.target.contains("/exec?");
        if sprite == "refused" || (sprite == "oldgone" && !path_form) {
            // Not a missing route: the session cannot be attached (or is gone).
            let (status, code) = if sprite == "refused" {
                ("400 Bad Request", "invalid_request")
            } else {
                ("404 Not Found", "session_not_found")
            };
            return respond(
                &mut stream,
                status,
                "Content-Type: application/json\r\n",
                &format!(r#"{{"error":"{code}","message":"no"}}"#),
            );
        }
        if path_form && sprite == "moved" {
            return respond(
                &mut stream,
                "404 Not Found",
                "Content-Type: application/json\r\n",
                r#"{"error":"not_found","message":"no such route"}"#,
            );
        }
        accept(&request, &mut stream, &version_header);
        let _ =
            session_info(&mut stream, "7", false).and_then(|()| binary(&mut stream, b"\x03\x00"));
        std::thread::sleep(Duration::from_millis(300));
    });
    (url, seen)
}

#[test]
fn the_attach_url_follows_the_sprites_runtime_version() {
    let _watchdog = common::Watchdog::arm("attach url forms");
    let (url, seen) = versioned_server();
    let client = client(&url);
    let attach = |sprite: &str| -> Vec<String> {
        seen.lock().unwrap().clear();
        let child = client.sprite(sprite).attach("7").unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
        seen.lock().unwrap().clone()
    };
    // A release: the path form, after asking for the version once.
    assert_eq!(
        attach("new"),
        ["HEAD /v1/sprites/new/exec", "GET /v1/sprites/new/exec/7"]
    );
    assert_eq!(attach("new"), ["GET /v1/sprites/new/exec/7"]);
    // Before 0.0.1-rc30, or no version at all: the legacy form.
    assert_eq!(
        attach("old"),
        ["HEAD /v1/sprites/old/exec", "GET /v1/sprites/old/exec?id=7"]
    );
    assert_eq!(
        attach("none"),
        [
            "HEAD /v1/sprites/none/exec",
            "GET /v1/sprites/none/exec?id=7"
        ]
    );
    assert_eq!(
        attach("dev"),
        ["HEAD /v1/sprites/dev/exec", "GET /v1/sprites/dev/exec/7"]
    );
    // The header counts whatever the status of the HEAD.
    assert_eq!(
        attach("gone"),
        ["HEAD /v1/sprites/gone/exec", "GET /v1/sprites/gone/exec/7"]
    );
    // The path form answers 404: the legacy form, remembered once it worked.
    assert_eq!(
        attach("moved"),
        [
            "HEAD /v1/sprites/moved/exec",
            "GET /v1/sprites/moved/exec/7",
            "GET /v1/sprites/moved/exec?id=7"
        ]
    );
    assert_eq!(attach("moved"), ["GET /v1/sprites/moved/exec?id=7"]);
    // Only a 404 of the path form tries the other form; a 404 of the legacy form, or another
    // refusal of the path form, is the answer.
    let refuse = |sprite: &str| -> Vec<String> {
        seen.lock().unwrap().clear();
        client.sprite(sprite).attach("7").unwrap_err();
        seen.lock().unwrap().clone()
    };
    assert_eq!(
        refuse("refused"),
        [
            "HEAD /v1/sprites/refused/exec",
            "GET /v1/sprites/refused/exec/7"
        ]
    );
    assert_eq!(
        refuse("oldgone"),
        [
            "HEAD /v1/sprites/oldgone/exec",
            "GET /v1/sprites/oldgone/exec?id=7"
        ]
    );
}

#[test]
fn an_exec_upgrade_tells_the_version_so_a_later_attach_asks_for_nothing() {
    let _watchdog = common::Watchdog::arm("version from exec");
    let (url, seen) = versioned_server();
    let client = client(&url);
    let sprite = client.sprite("execd");
    assert!(sprite.command("x").status().unwrap().success());
    seen.lock().unwrap().clear();
    let child = sprite.attach("7").unwrap();
    child.wait_with_output().unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["GET /v1/sprites/execd/exec/7"]
    );
}

#[test]
fn an_unknown_session_is_not_found_in_both_forms_and_leaves_nothing_remembered() {
    let _watchdog = common::Watchdog::arm("unknown session");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (url, _server) = serve(move |request, _, mut stream| {
        log.lock().unwrap().push(request.target.clone());
        if request.method == "HEAD" {
            return head(&mut stream, "0.1.0");
        }
        respond(
            &mut stream,
            "404 Not Found",
            "Content-Type: application/json\r\n",
            r#"{"error":"session_not_found","message":"session \"7\" not found"}"#,
        );
    });
    let sprite = client(&url).sprite("s");
    for _ in 0..2 {
        let err = sprite.attach("7").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let api = Error::from_io(&err)
            .and_then(Error::api)
            .expect("an API error");
        assert_eq!(api.code.as_deref(), Some("session_not_found"));
    }
    // Both attaches tried the path form first: a 404 that the legacy form repeats does not
    // make the sprite "legacy".
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().filter(|t| t.ends_with("/exec/7")).count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn port_messages_on_an_exec_arrive_as_typed_events_and_still_reach_the_callback() {
    let _watchdog = common::Watchdog::arm("exec port events");
    let (url, _server) = serve(|request, _, mut stream| {
        accept(&request, &mut stream, "");
        session_info(&mut stream, "40", false)
            .and_then(|()| {
                text(
                    &mut stream,
                    r#"{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":41}"#,
                )
            })
            .and_then(|()| {
                text(
                    &mut stream,
                    r#"{"type":"port_closed","port":3000,"address":"0.0.0.0","pid":41}"#,
                )
            })
            .and_then(|()| binary(&mut stream, b"\x03\x00"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut child = client(&url)
        .sprite("s")
        .command("x")
        .port_events(true)
        .on_message(move |m| {
            let _ = tx.send(m);
        })
        .spawn()
        .unwrap();
    let events = child.port_events().unwrap();
    assert!(child.wait().unwrap().success());
    let events: Vec<_> = events.map(|e| (e.kind, e.port, e.pid)).collect();
    assert_eq!(
        events,
        [
            (PortEventKind::Opened, 3000, Some(41)),
            (PortEventKind::Closed, 3000, Some(41))
        ]
    );
    let messages: Vec<_> = rx.try_iter().collect();
    assert!(
        matches!(messages[1], ServerMessage::PortOpened { port: 3000, .. }),
        "{messages:?}"
    );
    // Not asked for: none.
    let mut plain = client(&url).sprite("s").command("x").spawn().unwrap();
    assert!(plain.port_events().is_none());
    plain.wait().unwrap();
}

#[test]
fn a_port_watch_gives_its_snapshot_then_events_then_ends_cleanly_or_says_why() {
    let _watchdog = common::Watchdog::arm("port watch");
    let (url, _server) = serve(|request, _, mut stream| {
        assert!(
            request.target.ends_with("/ports/watch"),
            "{}",
            request.target
        );
        accept(&request, &mut stream, "");
        let sprite = request
            .target
            .split('/')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        let result = match sprite.as_str() {
            // An event before the snapshot (held until after it), binary noise, garbage text.
            "clean" => text(&mut stream, r#"{"type":"port_opened","port":81,"address":"::","pid":2}"#)
                .and_then(|()| {
                    text(
                        &mut stream,
                        r#"{"type":"port_list","ports":[{"type":"port_opened","port":80,"address":"0.0.0.0","pid":1}]}"#,
                    )
                })
                .and_then(|()| binary(&mut stream, b"\x01noise"))
                .and_then(|()| text(&mut stream, "garbage"))
                .and_then(|()| text(&mut stream, r#"{"type":"port_closed","port":80,"address":"0.0.0.0","pid":1}"#))
                .and_then(|()| close(&mut stream, 1000, "")),
            // The event comes a while after the snapshot: a wait must really wait for it.
            _ => text(&mut stream, r#"{"type":"port_list","ports":[]}"#)
                .and_then(|()| {
                    std::thread::sleep(Duration::from_millis(300));
                    text(&mut stream, r#"{"type":"port_opened","port":9,"address":"127.0.0.1","pid":3}"#)
                })
                .and_then(|()| close(&mut stream, 1011, "broken")),
        };
        result.unwrap();
        std::thread::sleep(Duration::from_secs(5));
    });
    let client = client(&url);

    let mut watch = client.sprite("clean").watch_ports().unwrap();
    assert_eq!(watch.ports().len(), 1);
    let shown = format!("{watch:?}");
    assert!(
        shown.starts_with("PortWatch {")
            && shown.contains("port: 80")
            && shown.contains("ended: false"),
        "{shown}"
    );
    assert_eq!(
        (
            watch.ports()[0].kind,
            watch.ports()[0].port,
            watch.ports()[0].pid
        ),
        (PortEventKind::Opened, 80, Some(1))
    );
    let events: Vec<_> = watch
        .by_ref()
        .map(|e| e.map(|e| (e.kind, e.port, e.ip())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        events,
        [
            (PortEventKind::Opened, 81, Some("::".parse().unwrap())),
            (PortEventKind::Closed, 80, Some("0.0.0.0".parse().unwrap()))
        ]
    );
    assert!(matches!(
        watch.recv_timeout(Duration::from_millis(10)),
        Err(Error::ConnectionClosed { code: None, .. })
    ));

    let mut watch = client.sprite("broken").watch_ports().unwrap();
    assert!(watch.ports().is_empty());
    let event = watch.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((event.port, event.pid), (9, Some(3)));
    match watch.recv_timeout(Duration::from_secs(5)) {
        Err(Error::ConnectionClosed { code, reason }) => {
            assert_eq!((code, reason.as_str()), (Some(1011), "broken"))
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(watch.next().is_none());

    // Iterating says the same: the event, the reason once, then the end.
    let mut watch = client.sprite("broken").watch_ports().unwrap();
    assert_eq!(watch.next().unwrap().unwrap().port, 9);
    match watch.next() {
        Some(Err(Error::ConnectionClosed { code, .. })) => assert_eq!(code, Some(1011)),
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(watch.next().is_none());
}

#[test]
fn dropping_a_port_watch_closes_it_with_1000() {
    let _watchdog = common::Watchdog::arm("port watch drop");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        accept(&request, &mut stream, "");
        text(&mut stream, r#"{"type":"port_list","ports":[]}"#).unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        // The first frame the client sends: its close, with the code in the payload.
        let _ = tx.send(client_frame(&mut reader).ok());
    });
    let watch = client(&url).sprite("s").watch_ports().unwrap();
    let dropped = Instant::now();
    drop(watch);
    assert!(
        dropped.elapsed() < Duration::from_secs(2),
        "{:?}",
        dropped.elapsed()
    );
    let frame = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("a frame");
    assert_eq!(frame.0, 0x8, "{frame:?}");
    assert_eq!(&frame.1[..2], &1000u16.to_be_bytes());
}

#[test]
fn a_port_watch_without_its_snapshot_fails_within_its_bound() {
    let _watchdog = common::Watchdog::arm("port watch without snapshot");
    let (url, _server) = serve(|request, _, mut stream| {
        accept(&request, &mut stream, "");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if text(&mut stream, "garbage").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let started = Instant::now();
    let err = client(&url).sprite("s").watch_ports().unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("port_list")),
        "{err}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&waited),
        "gave up after {waited:?}, the bound is 10 s"
    );
}

#[test]
fn a_silent_port_watch_is_pinged_and_given_up_on() {
    let _watchdog = common::Watchdog::arm("silent port watch");
    let (url, _server) = serve(|request, mut reader, mut stream| {
        accept(&request, &mut stream, "");
        text(&mut stream, r#"{"type":"port_list","ports":[]}"#).unwrap();
        // Read (and drop) what the client sends, answer nothing, for a while.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut sink = [0u8; 256];
        while matches!(reader.read(&mut sink), Ok(1..)) {}
    });
    let client = sprites::Client::builder()
        .base_url(&url)
        .token("t")
        .keepalive(Duration::from_millis(100), Duration::from_millis(600))
        .build()
        .unwrap();
    let mut watch = client.sprite("s").watch_ports().unwrap();
    let started = Instant::now();
    let err = loop {
        match watch.recv_timeout(Duration::from_secs(5)) {
            Ok(None) => continue,
            Ok(Some(event)) => panic!("no event was sent: {event:?}"),
            Err(err) => break err,
        }
    };
    assert!(matches!(err, Error::KeepaliveTimeout(_)), "{err}");
    // Given up on after the limit (600 ms of silence from the snapshot on), not before.
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
}

/// CPU time (user + system) of this process's threads with this name, in clock ticks.
fn cpu_ticks_of_threads(name: &str) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name) {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // Fields after the ")" that ends the name: utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .collect();
            for i in [11, 12] {
                ticks += fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ticks
}

#[test]
fn a_port_watch_pings_at_its_interval_and_idles_without_spinning() {
    let _watchdog = common::Watchdog::arm("port watch pings");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        accept(&request, &mut stream, "");
        text(&mut stream, r#"{"type":"port_list","ports":[]}"#).unwrap();
        let sent = Instant::now();
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut pings = Vec::new();
        while sent.elapsed() < Duration::from_millis(1500) {
            match client_frame(&mut reader) {
                Ok((0x9, _)) => {
                    pings.push(sent.elapsed());
                    // The pong, so the client hears from us.
                    let _ = stream.write_all(&[0x8a, 0x00]);
                }
                Ok(_) => {}
                Err(_) => continue, // a read timeout: nothing sent yet
            }
        }
        let _ = tx.send(pings);
    });
    let client = sprites::Client::builder()
        .base_url(&url)
        .token("t")
        .keepalive(Duration::from_millis(300), Duration::from_secs(10))
        .build()
        .unwrap();
    let before = cpu_ticks_of_threads("sprites-port-wa");
    let watch = client.sprite("s").watch_ports().unwrap();
    let pings = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let spent = cpu_ticks_of_threads("sprites-port-wa").saturating_sub(before);
    drop(watch);
    // One every 300 ms, the first after 300 ms, not at once and not in a loop.
    assert!(
        pings
            .first()
            .is_some_and(|t| *t >= Duration::from_millis(250)),
        "{pings:?}"
    );
    assert!((3..=6).contains(&pings.len()), "{pings:?}");
    // Idle for 1.5 s: a thread that sleeps in poll(2) uses next to no CPU (ticks are 10 ms).
    assert!(
        spent <= 20,
        "the watch thread used {spent} ticks while idle"
    );
}

#[test]
fn a_port_watch_bounds_its_snapshot_and_the_events_before_it_at_their_limits() {
    let _watchdog = common::Watchdog::arm("port watch limits");
    const MAX_SNAPSHOT: usize = 65_536;
    const EARLY_EVENTS: usize = 4096;
    let (url, _server) = serve(|request, _, mut stream| {
        accept(&request, &mut stream, "");
        let sprite = request
            .target
            .split('/')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        let result = match sprite.as_str() {
            "snapshot-at" | "snapshot-over" => {
                let n = MAX_SNAPSHOT + usize::from(sprite == "snapshot-over");
                let ports = vec![r#"{"port":1}"#; n].join(",");
                text(
                    &mut stream,
                    &format!(r#"{{"type":"port_list","ports":[{ports}]}}"#),
                )
            }
            _ => {
                let n = EARLY_EVENTS + usize::from(sprite == "early-over");
                let event = frame(
                    0x1,
                    br#"{"type":"port_opened","port":2,"address":"::","pid":1}"#,
                );
                let mut all = Vec::with_capacity(event.len() * n);
                for _ in 0..n {
                    all.extend_from_slice(&event);
                }
                stream
                    .write_all(&all)
                    .and_then(|()| text(&mut stream, r#"{"type":"port_list","ports":[]}"#))
            }
        };
        let _ = result.and_then(|()| close(&mut stream, 1000, ""));
        std::thread::sleep(Duration::from_secs(2));
    });
    let client = client(&url);
    let watch = client.sprite("snapshot-at").watch_ports().unwrap();
    assert_eq!(watch.ports().len(), MAX_SNAPSHOT);
    drop(watch);
    let err = client.sprite("snapshot-over").watch_ports().unwrap_err();
    assert!(matches!(err, Error::ResponseTooLarge { .. }), "{err}");

    let watch = client.sprite("early-at").watch_ports().unwrap();
    assert!(watch.ports().is_empty());
    let events: Vec<_> = watch.collect::<Result<_, _>>().unwrap();
    assert_eq!(events.len(), EARLY_EVENTS);
    let err = client.sprite("early-over").watch_ports().unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("before its port_list")),
        "{err}"
    );
}

/// Reads one masked client frame: opcode and unmasked payload (short frames only).
fn client_frame(reader: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head)?;
    let len = usize::from(head[1] & 0x7f);
    let mut rest = vec![0u8; 4 + len];
    reader.read_exact(&mut rest)?;
    let (mask, payload) = rest.split_at(4);
    let payload = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok((head[0] & 0x0f, payload))
}

#[test]
fn an_attachment_frames_stdin_the_way_session_info_says() {
    let _watchdog = common::Watchdog::arm("attach stdin framing");
    let (tx, rx) = crossbeam_channel::unbounded();
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        if request.method == "HEAD" {
            return head(&mut stream, "0.1.0");
        }
        accept(&request, &mut stream, "");
        let tty = request.target.ends_with("/exec/tty");
        session_info(&mut stream, "3", tty).unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if let Ok(frame) = client_frame(&mut reader) {
            let _ = tx.send((tty, frame));
        }
        let _ = text(&mut stream, r#"{"type":"exit","exit_code":0}"#);
        std::thread::sleep(Duration::from_millis(300));
    });
    let sprite = client(&url).sprite("s");
    for id in ["tty", "streams"] {
        let mut child = sprite.attach(id).unwrap();
        child.stdin.as_mut().unwrap().write_all(b"ls\n").unwrap();
        let (tty, frame) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if tty {
            assert_eq!(
                frame,
                (0x2, b"ls\n".to_vec()),
                "a terminal's keystrokes go raw"
            );
        } else {
            assert_eq!(
                frame,
                (0x2, b"\x00ls\n".to_vec()),
                "streams' stdin has its byte"
            );
        }
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn stdin_of_a_terminal_is_raw_a_resize_goes_first_and_dropping_stdin_sends_nothing() {
    let _watchdog = common::Watchdog::arm("raw stdin");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        accept(&request, &mut stream, "");
        session_info(&mut stream, "5", true).unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        // Frames until the keystrokes, then whatever comes in the next 300 ms (nothing: no
        // EOF frame for a terminal).
        let mut frames = Vec::new();
        while let Ok(frame) = client_frame(&mut reader) {
            let keystrokes = frame.0 == 0x2;
            frames.push(frame);
            if keystrokes {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
                if let Ok(frame) = client_frame(&mut reader) {
                    frames.push(frame);
                }
                break;
            }
        }
        let _ = tx.send(frames);
        let _ = text(&mut stream, r#"{"type":"exit","exit_code":0}"#);
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut child = client(&url)
        .sprite("s")
        .command("sh")
        .tty(true)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.resize(30, 90).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ls\x03").unwrap();
    drop(stdin);
    let frames = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0, 0x1);
    let resize: serde_json::Value = serde_json::from_slice(&frames[0].1).unwrap();
    assert_eq!(
        resize,
        serde_json::json!({"type":"resize","rows":30,"cols":90})
    );
    // The keystrokes as typed: no stream byte, and no EOF frame after them.
    assert_eq!(frames[1], (0x2, b"ls\x03".to_vec()));
    assert!(child.wait().unwrap().success());
}
