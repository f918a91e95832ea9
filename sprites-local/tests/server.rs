//! End-to-end tests: a real server on loopback, driven with raw HTTP and a tungstenite
//! WebSocket client. Every wait is bounded by socket timeouts or explicit deadlines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

fn start(tag: &str) -> (ServerHandle, TempDir) {
    let dir = TempDir::new(tag);
    let s = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .start()
        .unwrap();
    (s, dir)
}

#[test]
fn exec_output_order_and_exit_code() {
    let (s, _d) = start("order");
    create(&s, "box");
    let mut ws = connect(
        &s,
        "box",
        &q(&["sh", "-c", "echo hi; echo err >&2; exit 3"]),
    );
    let run = collect(&mut ws);
    assert!(run.order_ok);
    assert_eq!(run.stdout, b"hi\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.exit, Some(3));
    assert!(run.session_id.parse::<u32>().is_ok());
    // Status moved cold -> running, where it stays for ~30 s of idleness before warm.
    let info = http(&s, "GET", "/v1/sprites/box", None).json();
    assert_eq!(info["status"], "running");
    // The info says whether config limits are enforced (never silently).
    assert!(info["resource_limits"]
        .as_str()
        .is_some_and(|l| !l.is_empty()));
    s.shutdown();
}

#[test]
fn exec_env_dir_and_home() {
    let (s, dir) = start("env");
    create(&s, "box");
    let query = format!(
        "{}&env=FOO%3Dbar&env=FOO%3Dbaz",
        q(&[
            "sh",
            "-c",
            "echo $HOME; pwd; echo $FOO; echo ${SPRITES_LOCAL_TOKEN:-none}"
        ])
    );
    let run = collect(&mut connect(&s, "box", &query));
    let home = dir.join("sprites/box/home");
    let expect = format!("{0}\n{0}\nbaz\nnone\n", home.display());
    assert_eq!(String::from_utf8_lossy(&run.stdout), expect);

    let run = collect(&mut connect(
        &s,
        "box",
        &format!("{}&dir=%2Ftmp", q(&["pwd"])),
    ));
    assert_eq!(run.stdout, b"/tmp\n");
}

#[test]
fn exec_stdin_round_trip() {
    let (s, _d) = start("stdin");
    create(&s, "box");
    let mut ws = connect(&s, "box", &format!("{}&stdin=true", q(&["cat"])));
    let mut payload = vec![0u8];
    payload.extend_from_slice(b"hello over stdin");
    ws.send(Message::Binary(payload.into())).unwrap();
    ws.send(Message::Binary(vec![0u8].into())).unwrap(); // empty stdin chunk: ignored
    ws.send(Message::Binary(vec![9u8, 1, 2].into())).unwrap(); // unknown id: ignored
    ws.send(Message::Binary(vec![4u8].into())).unwrap();
    let run = collect(&mut ws);
    assert_eq!(run.stdout, b"hello over stdin");
    assert_eq!(run.exit, Some(0));

    // stdin=false: the process sees /dev/null and stdin frames are ignored.
    let mut ws = connect(&s, "box", &q(&["cat"]));
    ws.send(Message::Binary(vec![0u8, b'x'].into())).unwrap();
    let run = collect(&mut ws);
    assert_eq!(run.stdout, b"");
    assert_eq!(run.exit, Some(0));
}

#[test]
fn upgrade_errors_are_plain_http() {
    let (s, _d) = start("errors");
    use std::os::unix::fs::PermissionsExt;
    create(&s, "box");
    let up =
        |path: &str, auth: bool| {
            let raw =
                format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\n{}Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            if auth { "Authorization: Bearer secret\r\n" } else { "" }
        );
            // Upgrade errors keep the connection alive; ask the server to close by using a
            // shutdown after the request.
            let mut c = TcpStream::connect(s.addr()).unwrap();
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            c.write_all(raw.as_bytes()).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).unwrap();
            let text = String::from_utf8_lossy(&all).into_owned();
            let status: u16 = text[9..12].parse().unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
            (status, body)
        };
    let (st, body) = up("/v1/sprites/box/exec?cmd=true", false);
    assert_eq!(st, 401, "{body}");
    let (st, body) = up("/v1/sprites/nope/exec?cmd=true", true);
    assert_eq!(st, 404);
    assert!(body.contains("sprite_not_found"));
    let (st, body) = up("/v1/sprites/box/exec", true);
    assert_eq!(st, 400);
    assert!(body.contains("exec requires at least one cmd parameter"));
    let (st, body) = up("/v1/sprites/box/exec?cmd=", true);
    assert_eq!(st, 400, "{body}");
    let (st, body) = up(
        "/v1/sprites/box/exec?cmd=definitely-not-a-program-xyz",
        true,
    );
    assert_eq!(st, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "command_not_found");
    assert_eq!(
        v["message"],
        "exec: \"definitely-not-a-program-xyz\": executable file not found in $PATH"
    );
    // A file without execute bits (EACCES even for root).
    let plain = _d.join("plain.txt");
    std::fs::write(&plain, "not a program").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path: String = plain.display().to_string().replace('/', "%2F");
    let (st, body) = up(&format!("/v1/sprites/box/exec?cmd={path}"), true);
    assert_eq!(st, 400);
    assert!(body.contains("permission_denied"), "{body}");
    let (st, body) = up("/v1/sprites/box/exec?cmd=true&tty=true&rows=0", true);
    assert_eq!(st, 400);
    assert!(body.contains("rows must be 1 to 65535"), "{body}");
    let (st, body) = up("/v1/sprites/box/exec?cmd=true&dir=%2Fno%2Fsuch%2Fdir", true);
    assert_eq!(st, 400);
    assert!(body.contains("invalid_directory"));
}

#[test]
fn signal_message_kills_with_128_plus_n() {
    let (s, _d) = start("signal");
    create(&s, "box");
    let mut ws = connect(&s, "box", &q(&["sh", "-c", "echo ready; exec sleep 100"]));
    let Message::Text(_) = ws.read().unwrap() else {
        panic!()
    };
    let Message::Binary(b) = ws.read().unwrap() else {
        panic!()
    };
    assert_eq!(&b[..], b"\x01ready\n");
    ws.send(Message::Text(
        r#"{"type":"signal","signal":"SIGTERM"}"#.into(),
    ))
    .unwrap();
    loop {
        if let Message::Binary(b) = ws.read().unwrap() {
            assert_eq!(&b[..], &[3, 128 + 15]);
            break;
        }
    }
}

#[test]
fn disconnect_kills_the_process_group() {
    let (s, _d) = start("disconnect");
    create(&s, "box");
    let mut ws = connect(&s, "box", &q(&["sh", "-c", "sleep 1000 & echo $!; wait"]));
    let leader: i32 = session_id(&mut ws).parse().unwrap();
    let Message::Binary(b) = ws.read().unwrap() else {
        panic!()
    };
    let bg: i32 = std::str::from_utf8(&b[1..])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_gone(bg));
    // Session list shows it while it runs.
    let list = http(&s, "GET", "/v1/sprites/box/exec", None).json();
    assert_eq!(list["sessions"][0]["id"], leader.to_string());
    assert_eq!(list["sessions"][0]["is_active"], true);
    assert_eq!(
        http(&s, "GET", "/v1/sprites/box", None).json()["status"],
        "running"
    );
    drop(ws); // TCP close without a close frame
    wait_until("background process killed", || process_gone(bg));
    wait_until("leader reaped", || process_gone(leader));
    wait_until("session list empty", || {
        http(&s, "GET", "/v1/sprites/box/exec", None).json()["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[test]
fn kill_endpoint() {
    let (s, _d) = start("kill");
    create(&s, "box");
    let mut ws = connect(&s, "box", &q(&["sleep", "100"]));
    let id = session_id(&mut ws);

    let r = http(&s, "POST", "/v1/sprites/box/exec/999999999/kill", None);
    assert_eq!(r.status, 404);
    let r = http(
        &s,
        "POST",
        &format!("/v1/sprites/box/exec/{id}/kill"),
        Some(r#"{"signal":"SIGINT","timeout":10}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["type"], "signal");
    assert_eq!(lines[0]["signal"], "SIGINT");
    assert_eq!(lines[0]["message"], "sent SIGINT");
    assert_eq!(lines[0]["data"], "sent SIGINT");
    assert_eq!(lines[0]["pid"].to_string(), id);
    // The process ended within the grace period: its status is reported.
    assert_eq!(lines[1]["type"], "exited");
    assert_eq!(lines[1]["exit_code"], 128 + 2);
    assert_eq!(lines[2]["type"], "complete");
    loop {
        if let Message::Binary(b) = ws.read().unwrap() {
            assert_eq!(&b[..], &[3, 128 + 2]);
            break;
        }
    }
    let r = http(
        &s,
        "POST",
        &format!("/v1/sprites/box/exec/{id}/kill?signal=TERM&timeout=0s"),
        None,
    );
    assert_eq!(r.status, 410);
}

#[test]
fn many_concurrent_execs() {
    let (s, _d) = start("concurrent");
    create(&s, "box");
    let handles: Vec<_> = (0..60)
        .map(|i| {
            let addr = s.addr();
            let query = q(&["sh", "-c", &format!("sleep 0.2; echo {i}")]);
            std::thread::spawn(move || {
                let mut ws = connect(addr, "box", &query);
                (i, collect(&mut ws))
            })
        })
        .collect();
    for h in handles {
        let (i, run) = h.join().unwrap();
        assert_eq!(run.stdout, format!("{i}\n").into_bytes());
        assert_eq!(run.exit, Some(0));
    }
}

#[test]
fn large_output_arrives_complete() {
    let (s, _d) = start("large");
    create(&s, "box");
    let mut ws = connect(&s, "box", &q(&["head", "-c", "50000000", "/dev/zero"]));
    let run = collect(&mut ws);
    assert_eq!(run.stdout.len(), 50_000_000);
    assert!(run.stdout.iter().all(|b| *b == 0));
    assert_eq!(run.exit, Some(0));
}

#[test]
fn malformed_frame_closes_with_1002_and_kills() {
    let (s, _d) = start("malformed");
    create(&s, "box");
    let mut ws = connect(&s, "box", &format!("{}&stdin=true", q(&["sleep", "100"])));
    let pid: i32 = session_id(&mut ws).parse().unwrap();
    // An unmasked client frame is a protocol error.
    ws.get_mut().write_all(&[0x82, 0x02, 0x00, b'x']).unwrap();
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break f.code,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, CloseCode::Protocol);
    wait_until("process killed", || process_gone(pid));
}

#[test]
fn restart_keeps_sprites_and_shutdown_is_fast() {
    let (s, dir) = start("restart");
    create(&s, "keep");
    let r = http(
        &s,
        "PUT",
        "/v1/sprites/keep",
        Some(r#"{"labels":["x","y"]}"#),
    );
    assert_eq!(r.status, 200);
    // A running exec must not hold shutdown up.
    let mut ws = connect(&s, "keep", &q(&["sleep", "100"]));
    let Message::Text(_) = ws.read().unwrap() else {
        panic!()
    };
    let t = Instant::now();
    s.shutdown();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The running exec was told why it ended.
    let close = loop {
        match ws.read() {
            Ok(Message::Close(f)) => break f.expect("close frame with a code"),
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason, "server shutting down");

    let s = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .start()
        .unwrap();
    let v = http(&s, "GET", "/v1/sprites/keep", None).json();
    assert_eq!(v["labels"], serde_json::json!(["x", "y"]));
    // Its processes did not survive the server: cold until something wakes it.
    assert_eq!(v["status"], "cold");
    let v = http(&s, "GET", "/v1/sprites", None).json();
    assert_eq!(v["sprites"].as_array().unwrap().len(), 1);
}

#[test]
fn list_pagination() {
    let (s, _d) = start("pages");
    for n in ["a1", "a2", "a3", "b1"] {
        create(&s, n);
    }
    let v = http(&s, "GET", "/v1/sprites?prefix=a&max_results=2", None).json();
    let names: Vec<_> = v["sprites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].clone())
        .collect();
    assert_eq!(names, ["a1", "a2"]);
    assert_eq!(v["has_more"], true);
    // New sprites boot by themselves (cold → running), so only the total is fixed.
    let total = |o: &serde_json::Value| {
        ["running", "warm", "cold"]
            .iter()
            .map(|k| o[*k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(total(&v), 4);
    assert_eq!(total(&v["org"]), 4);
    let tok = v["next_continuation_token"].as_str().unwrap();
    let v = http(
        &s,
        "GET",
        &format!("/v1/sprites?prefix=a&max_results=2&continuation_token={tok}"),
        None,
    )
    .json();
    assert_eq!(v["sprites"][0]["name"], "a3");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["next_continuation_token"], serde_json::Value::Null);
    let r = http(&s, "GET", "/v1/sprites?continuation_token=garbage", None);
    assert_eq!(r.status, 400);
    let r = http(&s, "GET", "/v1/sprites?max_results=101", None);
    assert_eq!(r.status, 400);
}

#[test]
fn management_errors() {
    let (s, _d) = start("mgmt");
    create(&s, "box");
    let r = http(&s, "POST", "/v1/sprites", Some(r#"{"name":"box"}"#));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"error":"sprite_already_exists","message":"sprite \"box\" already exists"})
    );
    assert_eq!(
        http(&s, "POST", "/v1/sprites", Some(r#"{"name":"a-"}"#)).json()["error"],
        "invalid_name"
    );
    assert_eq!(http(&s, "POST", "/v1/sprites", Some("[1]")).status, 400);
    assert_eq!(
        http(&s, "PUT", "/v1/sprites/box", Some(r#"{"labels":"x"}"#)).status,
        400
    );
    assert_eq!(http(&s, "PUT", "/v1/sprites/nope", Some("{}")).status, 404);
    assert_eq!(
        http(&s, "GET", "/v1/sprites/nope", None).json()["error"],
        "sprite_not_found"
    );
    assert_eq!(
        http(&s, "POST", "/v1/sprites/box/upgrade", None).status,
        204
    );
    assert_eq!(
        http(&s, "POST", "/v1/sprites/nope/upgrade", None).status,
        404
    );
    assert_eq!(http(&s, "DELETE", "/v1/sprites/box", None).status, 204);
    assert_eq!(http(&s, "DELETE", "/v1/sprites/box", None).status, 404);
    assert_eq!(
        http(&s, "GET", "/v1/whatever", None).json()["error"],
        "not_found"
    );
    assert_eq!(http(&s, "DELETE", "/v1/sprites", None).status, 405);
    let r = http_raw(
        &s,
        b"GET /v1/sprites HTTP/1.1\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401);
    assert!(r.head.contains("Sprite-Version: 0.1.0"));
    let r = http_raw(&s, b"BLAH\r\n\r\n");
    assert_eq!(r.status, 400);
    // The same name can be created again right after a delete.
    create(&s, "box");
}

#[test]
fn keep_alive_and_chunked_request() {
    let (s, _d) = start("keepalive");
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let body = r#"{"name":"chunky"}"#;
    let req = format!(
        "POST /v1/sprites HTTP/1.1\r\nAuthorization: Bearer secret\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
         GET /v1/sprites/chunky HTTP/1.1\r\nAuthorization: Bearer secret\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 201 Created\r\n"), "{all}");
    assert_eq!(all.matches("HTTP/1.1 ").count(), 2);
    assert!(all.contains("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn server_closes_five_seconds_after_exit_if_client_does_not() {
    let (s, _d) = start("linger");
    create(&s, "box");
    let mut ws = connect(&s, "box", &q(&["true"]));
    let Message::Text(_) = ws.read().unwrap() else {
        panic!()
    };
    let Message::Binary(b) = ws.read().unwrap() else {
        panic!()
    };
    assert_eq!(&b[..], &[3, 0]);
    let t = Instant::now();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close, got {other:?}"),
    }
    let waited = t.elapsed();
    assert!(
        waited > Duration::from_secs(4) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
}

#[test]
fn pipelined_frames_right_behind_the_upgrade_request() {
    // The client sends stdin + EOF in the same write as the upgrade request; the server must
    // not lose bytes that arrived with the HTTP head.
    let (s, _d) = start("pipelined");
    create(&s, "box");
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut raw = b"GET /v1/sprites/box/exec?cmd=cat&stdin=true HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer secret\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    let mask = [1u8, 2, 3, 4];
    for payload in [&b"\x00abc"[..], &b"\x04"[..]] {
        raw.push(0x82);
        raw.push(0x80 | payload.len() as u8);
        raw.extend_from_slice(&mask);
        raw.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    c.write_all(&raw).unwrap();
    // Read the 101 head byte by byte so no frame bytes are consumed with it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let mut ws = WebSocket::from_raw_socket(Retry(c), tungstenite::protocol::Role::Client, None);
    let run = collect(&mut ws);
    assert_eq!(run.stdout, b"abc");
    assert_eq!(run.exit, Some(0));
}
