//! Faults: a killed server, cut connections, misbehaving peers, and what a long run leaves behind.
//!
//! Most tests drive `sprites-local` in a child process (so it can be killed, and so the client's
//! threads and descriptors can be counted alone). Two tests need a peer that breaks the protocol
//! on purpose; they use a few lines of raw TCP that answer the WebSocket upgrade and then
//! misbehave — the real server never does that, which is the point.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, ServerProcess};
use sprites::{Client, Error, Stdio};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Entry point for [`ServerProcess`]: serves only when the test binary is re-run for that.
#[test]
#[ignore = "runs only as a server process for the other tests"]
fn server_process_entry() {
    common::serve_if_asked();
}

#[test]
fn server_killed_mid_stream_is_an_error_not_a_hang() {
    let mut server = ServerProcess::start("server_process_entry");
    let sprite = server.client.create_sprite("doomed").unwrap();
    let mut child = sprite
        .command("sh")
        .args(["-c", "while :; do echo tick; sleep 0.01; done"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 5];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"tick\n");

    let killed_at = Instant::now();
    server.kill();
    // Reading keeps going until the error arrives; then the pipe reports it once.
    let mut sink = Vec::new();
    let read_err = stdout.read_to_end(&mut sink).unwrap_err();
    assert_eq!(
        read_err.kind(),
        io::ErrorKind::ConnectionReset,
        "{read_err}"
    );
    let err = child.wait().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        matches!(
            Error::from_io(&err),
            Some(Error::ConnectionClosed { code: None, .. })
        ),
        "{err:?}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(45),
        "detected only after {:?}",
        killed_at.elapsed()
    );
}

#[test]
fn server_shutdown_closes_running_commands_with_a_close_code() {
    let mut local = Local::start();
    let sprite = local.sprite("shutdown");
    let mut child = common::spawn_sleeper(&sprite);
    assert!(child.session_id().is_some());
    local.server.take().unwrap().shutdown();
    let err = child.wait().unwrap_err();
    match Error::from_io(&err) {
        Some(Error::ConnectionClosed {
            code: Some(code),
            reason,
        }) => {
            assert_eq!(*code, 1001, "going away");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a close code, got {other:?} ({err})"),
    }
}

/// Answers one WebSocket upgrade on a fresh port, then writes `after_upgrade` raw bytes.
fn misbehaving_peer(after_upgrade: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut key = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("sec-websocket-key:") {
                key = line[line.len() - v.len()..].trim().to_owned();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        write!(
            stream,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        stream.write_all(after_upgrade).unwrap();
        // Hold the socket open briefly so the client sees the bytes, not just a reset.
        let mut rest = Vec::new();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.read_to_end(&mut rest);
    });
    (url, handle)
}

#[test]
fn a_close_without_exit_report_carries_code_and_reason() {
    // stdout "hi", then close 1011 "boom", and no exit report.
    let (url, peer) = misbehaving_peer(b"\x82\x03\x01hi\x88\x06\x03\xf3boom");
    let client = Client::builder().base_url(url).token("t").build().unwrap();
    let out = client.sprite("any").command("anything").output();
    let err = out.unwrap_err();
    match Error::from_io(&err) {
        Some(Error::ConnectionClosed { code, reason }) => {
            assert_eq!(*code, Some(1011));
            assert_eq!(reason, "boom");
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn a_malformed_frame_is_a_protocol_error() {
    // Opcode 0x3 is reserved: no valid server sends it.
    let (url, peer) = misbehaving_peer(b"\x83\x01\x00");
    let client = Client::builder().base_url(url).token("t").build().unwrap();
    let err = client
        .sprite("any")
        .command("anything")
        .output()
        .unwrap_err();
    assert!(
        matches!(Error::from_io(&err), Some(Error::Protocol(_))),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    peer.join().unwrap();
}

#[test]
fn an_exec_upgrade_without_cmd_is_rejected() {
    let local = Local::start();
    local.sprite("nocmd");
    let ws_url = local.url().replacen("http://", "ws://", 1);
    for query in ["", "?cmd=", "?path=sh&stdin=true"] {
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{ws_url}/v1/sprites/nocmd-0/exec{query}"
        ))
        .unwrap();
        request
            .headers_mut()
            .insert("Authorization", "Bearer test-token".parse().unwrap());
        match tungstenite::connect(request) {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "query {query:?}")
            }
            Ok(_) => panic!("the server accepted an exec with no command ({query:?})"),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn a_silent_server_is_given_up_on_after_the_keepalive_limit() {
    // Accepts the upgrade, then says nothing (no pongs, no output, no close) for 5 s.
    let (url, peer) = misbehaving_peer(b"");
    let client = Client::builder()
        .base_url(url)
        .token("t")
        .keepalive(Duration::from_millis(200), Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .sprite("any")
        .command("anything")
        .output()
        .unwrap_err();
    assert!(
        matches!(Error::from_io(&err), Some(Error::KeepaliveTimeout(limit)) if *limit == Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up only after {:?}",
        started.elapsed()
    );
    peer.join().unwrap();
}
