//! `/control` (PROTOCOL.md §8) on the wire, with a raw WebSocket client: both `op.start`
//! dialects, both stdin dialects, op endings, one op at a time, attach over control, the
//! `fs.*` operations, proxy ops (Go's start and the envelope's, `release`, the target's end,
//! failures), 404 when switched off, and the non-detachable exec killed with its
//! connection.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

fn each_runtime(tag: &str, test: impl Fn(&ServerHandle, SocketAddr)) {
    for runtime in [Runtime::Host, Runtime::Sandbox] {
        let dir = TempDir::new(&format!("{tag}-{runtime}"));
        let server = match Server::builder()
            .token("secret")
            .addr("127.0.0.1:0")
            .data_dir(&dir.0)
            .runtime(runtime)
            .start()
        {
            Ok(s) => s,
            Err(e) if runtime == Runtime::Sandbox => {
                eprintln!("SKIPPED sandbox: {e}");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        create(&server, "ctl");
        eprintln!("-- {runtime}");
        test(&server, server.addr());
    }
}

fn dial(addr: SocketAddr, sprite: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}/v1/sprites/{sprite}/control");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    match tungstenite::client::client(req, Retry(stream)) {
        Ok((ws, resp)) => {
            assert_eq!(resp.headers()["sprite-version"], "0.1.0");
            Ok(ws)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn start(ws: &mut Ws, op: &str, args: Value) {
    let text = format!(
        "control:{}",
        json!({"type": "op.start", "op": op, "args": args})
    );
    ws.send(Message::Text(text.into())).unwrap();
}

fn binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::Binary(data.to_vec().into())).unwrap();
}

/// What one exec op sent back.
#[derive(Debug, Default)]
struct Op {
    info: Option<Value>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<u8>,
    /// The `op.complete`/`op.error` message, without `control:` when it had it.
    end: Value,
    prefixed: bool,
}

/// Reads one op to its end (`op.complete` or `op.error`, prefixed or not).
fn read_op(ws: &mut Ws, tty: bool) -> Op {
    let mut op = Op::default();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                let (body, prefixed) = match t.strip_prefix("control:") {
                    Some(rest) => (rest.to_owned(), true),
                    None => (t.to_string(), false),
                };
                let v: Value = serde_json::from_str(&body).unwrap();
                match v["type"].as_str().unwrap_or("") {
                    "session_info" => op.info = Some(v),
                    "exit" => op.exit = Some(v["exit_code"].as_u64().unwrap() as u8),
                    "op.complete" | "op.error" => {
                        op.end = v;
                        op.prefixed = prefixed;
                        return op;
                    }
                    _ => {}
                }
            }
            Message::Binary(b) if tty => op.stdout.extend_from_slice(&b),
            Message::Binary(b) => match b.first() {
                Some(1) => op.stdout.extend_from_slice(&b[1..]),
                Some(2) => op.stderr.extend_from_slice(&b[1..]),
                Some(3) => op.exit = Some(b[1]),
                _ => {}
            },
            _ => {}
        }
    }
}

#[test]
fn exec_ops_one_after_another_on_one_connection_in_both_stdin_dialects() {
    each_runtime("ctl-exec", |server, addr| {
        let mut ws = dial(addr, "ctl").unwrap();
        // JS/Python: 0x00-prefixed stdin and a 0x04 EOF.
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["sh", "-c", "cat; echo err >&2; exit 3"], "stdin": "true"}),
        );
        binary(&mut ws, b"\x00hello ");
        binary(&mut ws, b"\x00world");
        binary(&mut ws, &[0x04]);
        let op = read_op(&mut ws, false);
        assert_eq!(op.info.as_ref().unwrap()["tty"], false);
        assert_eq!(
            (op.stdout.as_slice(), op.stderr.as_slice(), op.exit),
            (&b"hello world"[..], &b"err\n"[..], Some(3))
        );
        assert_eq!(
            op.end,
            json!({"type": "op.complete", "args": {"exitCode": 3, "ok": true}})
        );
        assert!(op.prefixed);
        // Go: raw stdin (no stream byte), then a lone 0x04; `release` between ops.
        ws.send(Message::Text(r#"{"type":"release"}"#.into()))
            .unwrap();
        start(&mut ws, "exec", json!({"cmd": ["cat"], "stdin": "true"}));
        binary(&mut ws, b"raw bytes");
        binary(&mut ws, &[0x04]);
        let op = read_op(&mut ws, false);
        assert_eq!(
            (op.stdout.as_slice(), op.exit),
            (&b"raw bytes"[..], Some(0))
        );
        // No stdin; env and dir; lenient scalar args.
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["sh", "-c", "echo $A; pwd"], "env": ["A=1"], "dir": "/tmp", "stdin": false}),
        );
        let op = read_op(&mut ws, false);
        assert_eq!(op.stdout, b"1\n/tmp\n");
        // A terminal: raw frames, the text exit, the JS SDK's resize sent as a binary frame.
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["sh", "-c", "read x; stty size; exit 5"], "tty": "true", "rows": "24", "cols": "80", "stdin": "true"}),
        );
        binary(&mut ws, br#"{"type":"resize","cols":100,"rows":30}"#);
        binary(&mut ws, b"go\r");
        let op = read_op(&mut ws, true);
        assert_eq!(op.info.as_ref().unwrap()["tty"], true);
        assert_eq!(op.exit, Some(5));
        assert!(
            String::from_utf8_lossy(&op.stdout).contains("30 100"),
            "{:?}",
            String::from_utf8_lossy(&op.stdout)
        );
        assert_eq!(server.control_upgrades(), 1);
    });
}

#[test]
fn op_errors_busy_connections_and_unknown_ops() {
    each_runtime("ctl-err", |_, addr| {
        let mut ws = dial(addr, "ctl").unwrap();
        start(&mut ws, "exec", json!({"cmd": ["no-such-program-here"]}));
        let op = read_op(&mut ws, false);
        assert_eq!(op.end["type"], "op.error");
        assert_eq!(op.end["args"]["code"], "command_not_found");
        assert_eq!(op.end["args"]["status"], 400);
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["true"], "dir": "/no/such/dir"}),
        );
        assert_eq!(
            read_op(&mut ws, false).end["args"]["code"],
            "invalid_directory"
        );
        start(&mut ws, "exec", json!({}));
        assert_eq!(read_op(&mut ws, false).end["type"], "op.error");
        start(&mut ws, "dance", json!({}));
        assert_eq!(read_op(&mut ws, false).end["type"], "op.error");
        ws.send(Message::Text("control:{broken".into())).unwrap();
        assert_eq!(read_op(&mut ws, false).end["type"], "op.error");
        // Go's start of an operation that does not exist is refused, unprefixed.
        ws.send(Message::Text(
            r#"{"type":"start","operation":"dance","params":{}}"#.into(),
        ))
        .unwrap();
        let op = read_op(&mut ws, false);
        assert_eq!(
            (op.end["type"].as_str(), op.prefixed),
            (Some("op.error"), false)
        );
        // One op at a time: a second start while one runs is refused; the first goes on.
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["sh", "-c", "read x; echo got $x"], "stdin": "true"}),
        );
        start(&mut ws, "exec", json!({"cmd": ["true"]}));
        let refused = read_op(&mut ws, false);
        assert_eq!(refused.end["type"], "op.error");
        assert!(refused.end["args"]["error"]
            .as_str()
            .unwrap()
            .contains("already"));
        binary(&mut ws, b"\x00it\n");
        let op = read_op(&mut ws, false);
        assert_eq!((op.stdout.as_slice(), op.exit), (&b"got it\n"[..], Some(0)));
        // The connection is still good.
        start(&mut ws, "exec", json!({"cmd": ["echo", "fine"]}));
        assert_eq!(read_op(&mut ws, false).stdout, b"fine\n");
    });
}

#[test]
fn filesystem_ops_in_both_args_dialects() {
    each_runtime("ctl-fs", |_, addr| {
        let mut ws = dial(addr, "ctl").unwrap();
        // Where the files go: the sprite's own /tmp (the host runtime's is this machine's).
        let dir = format!("/tmp/ctl-fs-{}", random_hex());
        let fs_op = |ws: &mut Ws,
                     op: &str,
                     args: Value,
                     content: Option<&[u8]>|
         -> (Value, Option<Vec<u8>>, Value) {
            start(ws, op, args);
            if let Some(c) = content {
                binary(ws, c);
            }
            let mut result = Value::Null;
            let mut data = None;
            loop {
                match ws.read().unwrap() {
                    Message::Text(t) => match t.strip_prefix("control:") {
                        Some(end) => return (result, data, serde_json::from_str(end).unwrap()),
                        None => result = serde_json::from_str(&t).unwrap(),
                    },
                    Message::Binary(b) => data = Some(b.to_vec()),
                    _ => {}
                }
            }
        };
        let path = format!("{dir}/sub/a.txt");
        let (written, _, end) = fs_op(
            &mut ws,
            "fs.write",
            json!({"path": path, "mode": "0600"}),
            Some(b"hello"),
        );
        assert_eq!(end["type"], "op.complete", "{written}");
        assert_eq!(
            (written["size"].as_u64(), written["mode"].as_str()),
            (Some(5), Some("0600"))
        );
        let (meta, data, _) = fs_op(&mut ws, "fs.read", json!({"path": path}), None);
        assert_eq!(
            (meta["size"].as_u64(), data.as_deref()),
            (Some(5), Some(&b"hello"[..]))
        );
        let (_, data, _) = fs_op(
            &mut ws,
            "fs.read",
            json!({"path": path, "start": "1", "end": "3"}),
            None,
        );
        assert_eq!(data.as_deref(), Some(&b"el"[..]));
        let (listing, _, _) = fs_op(
            &mut ws,
            "fs.list",
            json!({"path": format!("{dir}/sub")}),
            None,
        );
        assert_eq!(listing["count"], 1);
        assert_eq!(listing["entries"][0]["name"], "a.txt");
        // Go's dialect: unprefixed, args as a query string, relative to workingDir; its end
        // comes back unprefixed too.
        let go = format!(
            r#"{{"type":"op.start","op":"fs.rename","args":"source=sub%2Fa.txt&dest=b.txt&workingDir={}"}}"#,
            enc(&dir)
        );
        ws.send(Message::Text(go.into())).unwrap();
        let renamed: Value = match ws.read().unwrap() {
            Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(renamed["dest"], format!("{dir}/b.txt"));
        match ws.read().unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("an unprefixed end");
                assert_eq!(v["type"], "op.complete");
            }
            other => panic!("{other:?}"),
        }
        let (_, _, end) = fs_op(
            &mut ws,
            "fs.copy",
            json!({"source": format!("{dir}/b.txt"), "dest": format!("{dir}/c.txt")}),
            None,
        );
        assert_eq!(end["type"], "op.complete");
        let (chmod, _, _) = fs_op(
            &mut ws,
            "fs.chmod",
            json!({"path": format!("{dir}/c.txt"), "mode": "0640"}),
            None,
        );
        assert_eq!(chmod["affected"][0]["mode"], "0640", "{chmod}");
        // Errors: the §3.2 body, then op.error with its code.
        let (body, _, end) = fs_op(
            &mut ws,
            "fs.read",
            json!({"path": format!("{dir}/missing")}),
            None,
        );
        assert_eq!(
            (body["code"].as_str(), end["type"].as_str()),
            (Some("ENOENT"), Some("op.error"))
        );
        assert_eq!(end["args"]["code"], "ENOENT");
        let (body, _, _) = fs_op(
            &mut ws,
            "fs.write",
            json!({"path": format!("{dir}/x/y"), "mkdirParents": "false"}),
            Some(b"z"),
        );
        assert_eq!(body["code"], "ENOENT");
        let (_, _, end) = fs_op(
            &mut ws,
            "fs.delete",
            json!({"path": dir, "recursive": "true"}),
            None,
        );
        assert_eq!(end["type"], "op.complete");
        // An exec right after: the connection is idle again.
        start(&mut ws, "exec", json!({"cmd": ["echo", "after fs"]}));
        assert_eq!(read_op(&mut ws, false).stdout, b"after fs\n");
    });
}

#[test]
fn attach_over_control_and_detachable_sessions_survive_the_connection() {
    each_runtime("ctl-attach", |_, addr| {
        let mut ws = dial(addr, "ctl").unwrap();
        start(
            &mut ws,
            "exec",
            json!({"cmd": ["sh", "-c", "echo first; read x; echo second $x"], "detachable": "true", "stdin": "true"}),
        );
        let info = loop {
            if let Message::Text(t) = ws.read().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "session_info" {
                    break v;
                }
            }
        };
        let id = info["session_id"].as_str().unwrap().to_owned();
        drop(ws); // cut: a detachable session goes on
        let mut ws = dial(addr, "ctl").unwrap();
        start(&mut ws, "exec", json!({"id": id, "stdin": "true"}));
        binary(&mut ws, b"\x00now\n");
        let op = read_op(&mut ws, false);
        assert_eq!(
            op.stdout, b"first\nsecond now\n",
            "the scrollback, then live output"
        );
        assert_eq!(op.exit, Some(0));
        start(&mut ws, "attach", json!({"id": "99999999"}));
        assert_eq!(read_op(&mut ws, false).end["type"], "op.error");
    });
}

#[test]
fn an_exec_dies_with_its_control_connection() {
    each_runtime("ctl-cut", |_, addr| {
        let mut ws = dial(addr, "ctl").unwrap();
        start(&mut ws, "exec", json!({"cmd": ["sleep", "60"]}));
        let info = loop {
            if let Message::Text(t) = ws.read().unwrap() {
                break serde_json::from_str::<Value>(&t).unwrap();
            }
        };
        let pid = info["session_id"].as_str().unwrap().to_owned();
        drop(ws);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = http(addr, "GET", "/v1/sprites/ctl/exec", None).json();
            let running = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"].as_str() == Some(pid.as_str()));
            if !running {
                break;
            }
            assert!(Instant::now() < deadline, "sleep outlived its connection");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn control_answers_404_when_switched_off_or_for_an_unknown_sprite() {
    let dir = TempDir::new("ctl-off");
    let server = Server::builder()
        .token("secret")
        .addr("127.0.0.1:0")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .control(false)
        .start()
        .unwrap();
    create(&server, "ctl");
    let err = dial(server.addr(), "ctl").unwrap_err();
    assert!(err.contains("404"), "{err}");
    assert_eq!(server.control_upgrades(), 0);
    let dir = TempDir::new("ctl-on");
    let server = Server::builder()
        .token("secret")
        .addr("127.0.0.1:0")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .start()
        .unwrap();
    let err = dial(server.addr(), "nobody").unwrap_err();
    assert!(err.contains("404"), "{err}");
    // Not an upgrade: 400. The stats endpoint needs the token and counts upgrades.
    assert_eq!(
        http(&server, "GET", "/v1/sprites/nobody/control", None).status,
        404
    );
    create(&server, "ctl");
    assert_eq!(
        http(&server, "GET", "/v1/sprites/ctl/control", None).status,
        400
    );
    let mut ws = dial(server.addr(), "ctl").unwrap();
    // fs ops are counted by op; unknown ones are not (the map stays bounded).
    for op in ["fs.list", "fs.list", "fs.nope"] {
        start(&mut ws, op, json!({"path": "/"}));
        loop {
            match ws.read().unwrap() {
                Message::Text(t) if t.starts_with("control:") => break,
                _ => {}
            }
        }
    }
    let stats = http(&server, "GET", "/_sprites-local/stats", None);
    assert_eq!(
        stats.json(),
        json!({"control_upgrades": 1, "control_upgrades_by_sprite": {"ctl": 1},
               "control_fs_ops": {"fs.list": 2}})
    );
    assert_eq!(server.control_fs_ops("fs.list"), 2);
    assert_eq!(server.control_fs_ops("fs.nope"), 0);
    let raw = http_raw(
        &server,
        b"GET /_sprites-local/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw.status, 401);
}

/// An echo server in the sprite for one connection at a time: echoes until EOF, then closes
/// and takes the next. Prints its port first.
const ECHO_LOOP: &str = "import socket\n\
    s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
    print(s.getsockname()[1], flush=True)\n\
    while True:\n\
    \x20   c,_=s.accept()\n\
    \x20   while True:\n\
    \x20       b=c.recv(65536)\n\
    \x20       if not b: break\n\
    \x20       c.sendall(b)\n\
    \x20   c.close()\n";

/// Reads an exec socket's stdout until its first line: the port the server printed.
fn read_port(ws: &mut Ws) -> u16 {
    let mut out = Vec::new();
    while !out.contains(&b'\n') {
        if let Message::Binary(b) = ws.read().unwrap() {
            if b.first() == Some(&1) {
                out.extend_from_slice(&b[1..]);
            }
        }
    }
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

/// The proxy reply (§10.3): the first unprefixed text frame.
fn proxy_reply(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            assert!(!t.starts_with("control:"), "an end before the reply: {t}");
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Reads a proxy op to its end: the bytes of its binary frames, whether an empty frame
/// (half-close) came, and the end message (prefixed, as proxy ends always are).
fn read_proxy(ws: &mut Ws, want: usize) -> (Vec<u8>, bool, Option<Value>) {
    let (mut bytes, mut eof) = (Vec::new(), false);
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) if b.is_empty() => eof = true,
            Message::Binary(b) => {
                bytes.extend_from_slice(&b);
                if want > 0 && bytes.len() >= want {
                    return (bytes, eof, None);
                }
            }
            Message::Text(t) => {
                let body = t.strip_prefix("control:").expect("a prefixed end");
                return (bytes, eof, Some(serde_json::from_str(body).unwrap()));
            }
            _ => {}
        }
    }
}

#[test]
fn proxy_ops_in_both_forms_end_with_release_or_the_target_and_leave_the_connection_usable() {
    each_runtime("ctl-proxy", |_, addr| {
        let mut echo = common::connect(addr, "ctl", &q(&["python3", "-c", ECHO_LOOP]));
        let port = read_port(&mut echo);
        let mut ws = dial(addr, "ctl").unwrap();

        // Go's form, unprefixed, ended by Go's unprefixed `release`.
        let go_start = json!({"type": "start", "operation": "proxy",
            "params": {"host": "localhost", "port": port, "keep_alive": true}});
        ws.send(Message::Text(go_start.to_string().into())).unwrap();
        let reply = proxy_reply(&mut ws);
        assert_eq!(reply["status"], "connected");
        assert_eq!(reply["target"], format!("localhost:{port}"));
        assert_eq!(reply["half_close"], false);
        binary(&mut ws, b"hello ");
        binary(&mut ws, b"proxy");
        let (bytes, _, end) = read_proxy(&mut ws, 11);
        assert_eq!((bytes.as_slice(), end), (&b"hello proxy"[..], None));
        ws.send(Message::Text(r#"{"type":"release"}"#.into()))
            .unwrap();
        let (_, _, end) = read_proxy(&mut ws, 0);
        assert_eq!(end.unwrap()["type"], "op.complete");
        // Bytes after the op's end go nowhere; a second release is ignored.
        binary(&mut ws, b"stray");
        ws.send(Message::Text(r#"control:{"type":"release"}"#.into()))
            .unwrap();

        // The envelope's form with string args and half-close: our EOF reaches the target,
        // which closes; its EOF comes back as an empty frame and the op completes by itself.
        start(
            &mut ws,
            "proxy",
            json!({"host": "127.0.0.1", "port": port.to_string(), "half_close": "true"}),
        );
        let reply = proxy_reply(&mut ws);
        assert_eq!(
            (reply["status"].as_str(), reply["half_close"].as_bool()),
            (Some("connected"), Some(true))
        );
        let big: Vec<u8> = (0..300_000u32).map(|i| ((i * 7) >> 3) as u8).collect();
        binary(&mut ws, &big);
        binary(&mut ws, b"");
        let (bytes, eof, end) = read_proxy(&mut ws, 0);
        assert!(
            bytes == big,
            "300000 bytes echoed exactly ({} back)",
            bytes.len()
        );
        assert!(eof, "the target's EOF as an empty frame");
        assert_eq!(end.unwrap()["type"], "op.complete");

        // A refused target: the §10.3 error reply, then op.error; a malformed start too.
        start(&mut ws, "proxy", json!({"port": 1}));
        let reply = proxy_reply(&mut ws);
        assert_eq!(
            (reply["status"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("connection_refused"))
        );
        let end = read_proxy(&mut ws, 0).2.unwrap();
        assert_eq!(
            (end["type"].as_str(), end["args"]["code"].as_str()),
            (Some("op.error"), Some("connection_refused"))
        );
        ws.send(Message::Text(
            r#"{"type":"start","operation":"proxy","params":{"port":0}}"#.into(),
        ))
        .unwrap();
        assert_eq!(proxy_reply(&mut ws)["code"], "invalid_request");
        assert_eq!(read_proxy(&mut ws, 0).2.unwrap()["type"], "op.error");

        // One op at a time while a proxy runs; the connection still serves an exec after.
        start(&mut ws, "proxy", json!({"port": port}));
        assert_eq!(proxy_reply(&mut ws)["status"], "connected");
        start(&mut ws, "exec", json!({"cmd": ["true"]}));
        let refused = read_proxy(&mut ws, 0).2.unwrap();
        assert!(refused["args"]["error"]
            .as_str()
            .unwrap()
            .contains("already"));
        ws.send(Message::Text(r#"{"type":"release"}"#.into()))
            .unwrap();
        assert_eq!(read_proxy(&mut ws, 0).2.unwrap()["type"], "op.complete");
        // Go sends `release` and its next start back to back: the proxy's end comes first,
        // then the next op runs as usual.
        for _ in 0..3 {
            start(&mut ws, "proxy", json!({"port": port}));
            assert_eq!(proxy_reply(&mut ws)["status"], "connected");
            ws.send(Message::Text(r#"{"type":"release"}"#.into()))
                .unwrap();
            start(&mut ws, "proxy", json!({"port": port}));
            assert_eq!(read_proxy(&mut ws, 0).2.unwrap()["type"], "op.complete");
            assert_eq!(proxy_reply(&mut ws)["status"], "connected");
            binary(&mut ws, b"second");
            assert_eq!(read_proxy(&mut ws, 6).0, b"second");
            ws.send(Message::Text(r#"{"type":"release"}"#.into()))
                .unwrap();
            assert_eq!(read_proxy(&mut ws, 0).2.unwrap()["type"], "op.complete");
        }
        start(&mut ws, "exec", json!({"cmd": ["echo", "fine"]}));
        assert_eq!(read_op(&mut ws, false).stdout, b"fine\n");
        drop(echo);
    });
}

#[test]
fn a_proxy_target_that_resets_ends_the_op_with_target_failed_and_the_connection_goes_on() {
    // Accepts one connection, reads a byte, and resets it (SO_LINGER 0).
    const RESET: &str = "import socket,struct\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
        print(s.getsockname()[1], flush=True)\n\
        c,_=s.accept(); c.recv(1)\n\
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii',1,0)); c.close()\n";
    each_runtime("ctl-proxy-reset", |_, addr| {
        let mut target = common::connect(addr, "ctl", &q(&["python3", "-c", RESET]));
        let port = read_port(&mut target);
        let mut ws = dial(addr, "ctl").unwrap();
        start(&mut ws, "proxy", json!({"port": port, "half_close": true}));
        assert_eq!(proxy_reply(&mut ws)["status"], "connected");
        binary(&mut ws, b"x");
        let end = read_proxy(&mut ws, 0).2.unwrap();
        assert_eq!(
            (end["type"].as_str(), end["args"]["code"].as_str()),
            (Some("op.error"), Some("target_failed")),
            "{end}"
        );
        start(&mut ws, "exec", json!({"cmd": ["echo", "still"]}));
        assert_eq!(read_op(&mut ws, false).stdout, b"still\n");
        assert_eq!(common::exit_code(&mut target), 0);
    });
}

#[test]
fn an_open_proxy_op_keeps_the_sprite_running_until_released() {
    // Host runtime: the target is a listener of this test (no isolation), so no command of
    // the sprite's own holds it running.
    const WARM: Duration = Duration::from_millis(800);
    let dir = TempDir::new("ctl-proxy-life");
    let server = Server::builder()
        .token("secret")
        .addr("127.0.0.1:0")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .warm_after(WARM)
        .cold_after(Duration::from_secs(600))
        .start()
        .unwrap();
    create(&server, "life");
    let status = || {
        http(&server, "GET", "/v1/sprites/life", None).json()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut ws = dial(server.addr(), "life").unwrap();
    wait_until("an idle sprite warms", || status() == "warm");
    start(&mut ws, "proxy", json!({"host": "127.0.0.1", "port": port}));
    assert_eq!(proxy_reply(&mut ws)["status"], "connected");
    let (_target, _) = listener.accept().unwrap();
    assert_eq!(status(), "running", "an open proxy is activity");
    std::thread::sleep(WARM * 2);
    assert_eq!(status(), "running", "and stays so while it is open");
    ws.send(Message::Text(r#"{"type":"release"}"#.into()))
        .unwrap();
    assert_eq!(read_proxy(&mut ws, 0).2.unwrap()["type"], "op.complete");
    wait_until("released, the sprite warms again", || status() == "warm");
}
