//! End-to-end tests of TTY execs and detachable sessions (PROTOCOL.md §6.3–§6.6, §7): a real
//! server on loopback driven by a tungstenite client, in the host runtime and — where the
//! machine allows it — the sandbox runtime, whose terminals come from each sprite's own
//! `devpts`.

mod common;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// Runs `test` against a host-runtime server, then a sandbox one where possible.
fn each_runtime(tag: &str, scrollback: Option<usize>, test: impl Fn(SocketAddr, &str)) {
    for runtime in [Runtime::Host, Runtime::Sandbox] {
        let dir = TempDir::new(&format!("{tag}-{runtime}"));
        let mut b = Server::builder()
            .token("secret")
            .addr("127.0.0.1:0")
            .data_dir(&dir.0)
            .runtime(runtime);
        if let Some(n) = scrollback {
            b = b.scrollback_bytes(n);
        }
        let server: ServerHandle = match b.start() {
            Ok(s) => s,
            Err(e) if runtime == Runtime::Sandbox => {
                eprintln!("SKIPPED sandbox: {e}");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        create(&server, "tty");
        eprintln!("-- {runtime}");
        test(server.addr(), runtime.as_str());
    }
}

/// Reads the first message: `session_info`, which must say `tty`; returns the session id.
fn tty_session_info(ws: &mut Ws, tty: bool) -> String {
    match ws.read().unwrap() {
        Message::Text(t) => {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "session_info", "{t}");
            assert_eq!(v["tty"], tty, "{t}");
            v["session_id"].as_str().unwrap().to_owned()
        }
        other => panic!("expected session_info first, got {other:?}"),
    }
}

/// Raw terminal output until it contains `needle` (bounded by the socket's timeout).
fn read_until(ws: &mut Ws, seen: &mut Vec<u8>, needle: &str) {
    while !String::from_utf8_lossy(seen).contains(needle) {
        match ws.read() {
            Ok(Message::Binary(b)) => seen.extend_from_slice(&b),
            Ok(Message::Text(t)) => panic!("text before {needle:?}: {t}"),
            Ok(_) => {}
            Err(e) => panic!(
                "waiting for {needle:?}: {e}; got {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

/// Reads to the text `exit` report; returns its code and the output before it.
fn tty_exit(ws: &mut Ws) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "exit", "{t}");
                return (v["exit_code"].as_u64().unwrap() as u8, out);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// The close frame that must follow an exit report; its code.
fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f.code,
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("expected the close, got {other:?}"),
            Err(e) => panic!("expected the close, got {e}"),
        }
    }
}

fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into())).unwrap();
}

fn attach_at(s: SocketAddr, sprite: &str, id: &str, legacy: bool) -> Ws {
    use tungstenite::client::IntoClientRequest;
    let url = if legacy {
        format!("ws://{s}/v1/sprites/{sprite}/exec?id={id}")
    } else {
        format!("ws://{s}/v1/sprites/{sprite}/exec/{id}")
    };
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = TcpStream::connect(s).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tungstenite::client::client(req, Retry(stream))
        .unwrap_or_else(|e| panic!("attach {id}: {e}"))
        .0
}

fn sessions(s: SocketAddr, sprite: &str) -> Vec<serde_json::Value> {
    let r = http(s, "GET", &format!("/v1/sprites/{sprite}/exec"), None);
    assert_eq!(r.status, 200);
    r.json()["sessions"].as_array().unwrap().clone()
}

#[test]
fn a_terminal_has_its_size_resizes_and_is_a_tty() {
    each_runtime("tty-size", None, |s, _| {
        let script = "test -t 0 && test -t 1 && echo is-a-tty; \
                      [ \"$(stat -c %u \"$(tty)\")\" = \"$(id -u)\" ] && echo mine; \
                      stty size; read go; stty size; echo term=$TERM";
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true&rows=33&cols=101", q(&["sh", "-c", script])),
        );
        tty_session_info(&mut ws, true);
        let mut seen = Vec::new();
        read_until(&mut ws, &mut seen, "33 101");
        assert!(String::from_utf8_lossy(&seen).contains("is-a-tty"));
        // The terminal belongs to the user the command runs as.
        assert!(
            String::from_utf8_lossy(&seen).contains("mine"),
            "{:?}",
            String::from_utf8_lossy(&seen)
        );
        ws.send(Message::Text(
            r#"{"type":"resize","rows":40,"cols":120}"#.into(),
        ))
        .unwrap();
        send(&mut ws, b"go\r");
        read_until(&mut ws, &mut seen, "40 120");
        let (code, rest) = tty_exit(&mut ws);
        assert_eq!(code, 0);
        let all = String::from_utf8_lossy(&[seen, rest].concat()).into_owned();
        // A terminal's output has its line discipline's "\r\n".
        assert!(all.contains("40 120\r\n"), "{all:?}");
        assert!(all.contains("term=xterm-256color"), "{all:?}");
        // The server closes at once after the exit report, without waiting for ours.
        let at = Instant::now();
        assert_eq!(close_code(&mut ws), CloseCode::Normal);
        assert!(
            at.elapsed() < Duration::from_millis(100),
            "{:?}",
            at.elapsed()
        );
    });
}

#[test]
fn a_failed_terminal_command_closes_with_1011_after_its_exit_report() {
    each_runtime("tty-fail", None, |s, _| {
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true", q(&["sh", "-c", "exit 3"])),
        );
        tty_session_info(&mut ws, true);
        assert_eq!(tty_exit(&mut ws).0, 3);
        assert_eq!(close_code(&mut ws), CloseCode::Error);
    });
}

#[test]
fn ctrl_c_interrupts_the_foreground_process() {
    each_runtime("tty-intr", None, |s, _| {
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true", q(&["sh", "-c", "echo ready; exec sleep 30"])),
        );
        tty_session_info(&mut ws, true);
        read_until(&mut ws, &mut Vec::new(), "ready");
        // The process may not have exec'd sleep yet; ^C reaches whichever is in front.
        send(&mut ws, &[0x03]);
        let (code, _) = tty_exit(&mut ws);
        assert_eq!(code, 128 + 2, "killed by SIGINT");
    });
}

#[test]
fn a_full_screen_program_runs() {
    each_runtime("tty-top", None, |s, _| {
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true&rows=30&cols=100", q(&["top", "-b", "-n", "1"])),
        );
        tty_session_info(&mut ws, true);
        let (code, out) = tty_exit(&mut ws);
        let out = String::from_utf8_lossy(&out);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("PID"), "{out}");
    });
}

#[test]
fn detach_then_attach_replays_the_scrollback_and_goes_on_live() {
    each_runtime("tty-attach", None, |s, _| {
        let script = "echo first-line; read x; echo got-$x; read y; echo bye-$y";
        let mut ws = connect(s, "tty", &format!("{}&tty=true", q(&["sh", "-c", script])));
        let id = tty_session_info(&mut ws, true);
        read_until(&mut ws, &mut Vec::new(), "first-line");
        // Vanish without a close frame: the session must survive it.
        ws.get_mut().0.shutdown(Shutdown::Both).unwrap();
        drop(ws);
        let listed = sessions(s, "tty");
        let me = listed
            .iter()
            .find(|v| v["id"] == id.as_str())
            .expect("listed");
        assert_eq!(me["tty"], true);
        assert_eq!(me["is_active"], true);

        let mut a = attach_at(s, "tty", &id, false);
        assert_eq!(tty_session_info(&mut a, true), id);
        let mut seen = Vec::new();
        read_until(&mut a, &mut seen, "first-line");
        // A second client at the legacy address sees the same history and what follows.
        let mut b = attach_at(s, "tty", &id, true);
        tty_session_info(&mut b, true);
        let mut seen_b = Vec::new();
        read_until(&mut b, &mut seen_b, "first-line");
        send(&mut a, b"one\r");
        read_until(&mut a, &mut seen, "got-one");
        read_until(&mut b, &mut seen_b, "got-one");
        // Either may type.
        send(&mut b, b"two\r");
        let (code, rest) = tty_exit(&mut a);
        assert_eq!(code, 0);
        assert!(String::from_utf8_lossy(&[seen, rest].concat()).contains("bye-two"));
        assert_eq!(tty_exit(&mut b).0, 0);
        wait_until("the session leaves the list", || {
            sessions(s, "tty").iter().all(|v| v["id"] != id.as_str())
        });
        // Attaching to it now: 404; killing it: 410 (already exited).
        let r = http(s, "GET", &format!("/v1/sprites/tty/exec/{id}"), None);
        assert_eq!(r.status, 404);
        let r = http(s, "POST", &format!("/v1/sprites/tty/exec/{id}/kill"), None);
        assert_eq!(r.status, 410);
    });
}

#[test]
fn a_non_tty_detachable_session_keeps_its_streams_apart() {
    each_runtime("detach-pipes", None, |s, _| {
        let script = "echo out; echo err >&2; read x; echo got-$x";
        let query = format!("{}&detachable=true&stdin=true", q(&["sh", "-c", script]));
        let mut ws = connect(s, "tty", &query);
        let id = tty_session_info(&mut ws, false);
        ws.close(None).unwrap();
        while ws.read().is_ok() {}

        let mut a = attach_at(s, "tty", &id, false);
        assert_eq!(tty_session_info(&mut a, false), id);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while !(out.ends_with(b"out\n") && err.ends_with(b"err\n")) {
            match a.read().unwrap() {
                Message::Binary(b) if b[0] == 1 => out.extend_from_slice(&b[1..]),
                Message::Binary(b) if b[0] == 2 => err.extend_from_slice(&b[1..]),
                other => panic!("{other:?}"),
            }
        }
        send(&mut a, b"\x00x\n");
        let run = {
            let mut more = Vec::new();
            loop {
                match a.read().unwrap() {
                    Message::Binary(b) if b[0] == 1 => more.extend_from_slice(&b[1..]),
                    Message::Binary(b) if b[0] == 3 => break (more, b[1]),
                    Message::Ping(_) => {}
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(run, (b"got-x\n".to_vec(), 0));
    });
}

#[test]
fn scrollback_keeps_the_newest_output_up_to_its_limit() {
    each_runtime("scrollback", Some(1000), |s, _| {
        // 5000 numbered bytes, then wait.
        let script = "i=0; while [ $i -lt 500 ]; do printf '%09d\\n' $i; i=$((i+1)); done; \
                      echo done-writing; read x";
        let query = format!("{}&detachable=true&stdin=true", q(&["sh", "-c", script]));
        let mut ws = connect(s, "tty", &query);
        let id = tty_session_info(&mut ws, false);
        let mut all = Vec::new();
        while !all.ends_with(b"done-writing\n") {
            match ws.read().unwrap() {
                Message::Binary(b) if b[0] == 1 => all.extend_from_slice(&b[1..]),
                other => panic!("{other:?}"),
            }
        }
        let mut a = attach_at(s, "tty", &id, false);
        tty_session_info(&mut a, false);
        let mut replay = Vec::new();
        while !replay.ends_with(b"done-writing\n") {
            match a.read().unwrap() {
                Message::Binary(b) if b[0] == 1 => replay.extend_from_slice(&b[1..]),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(replay.len(), 1000);
        assert_eq!(replay, all[all.len() - 1000..]);
        send(&mut ws, b"\x00\n");
        assert_eq!(exit_code(&mut ws), 0);
    });
}

#[test]
fn max_run_after_disconnect_ends_a_forsaken_session() {
    each_runtime("max-run", None, |s, _| {
        let query = format!(
            "{}&tty=true&max_run_after_disconnect=300ms",
            q(&["sh", "-c", "echo up; exec sleep 60"])
        );
        let mut ws = connect(s, "tty", &query);
        let id = tty_session_info(&mut ws, true);
        read_until(&mut ws, &mut Vec::new(), "up");
        drop(ws);
        wait_until("the forsaken session is ended", || {
            sessions(s, "tty").iter().all(|v| v["id"] != id.as_str())
        });
    });
}

#[test]
fn kill_reports_its_progress_as_ndjson() {
    each_runtime("kill", None, |s, _| {
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true", q(&["sh", "-c", "echo up; exec sleep 60"])),
        );
        let id = tty_session_info(&mut ws, true);
        read_until(&mut ws, &mut Vec::new(), "up");
        let r = http(
            s,
            "POST",
            &format!("/v1/sprites/tty/exec/{id}/kill"),
            Some(r#"{"signal":"SIGTERM","timeout":5}"#),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&r.body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["signal", "exited", "complete"], "{lines:?}");
        assert_eq!(lines[0]["signal"], "SIGTERM");
        assert_eq!(lines[1]["exit_code"], 128 + 15);
        assert_eq!(lines[1]["pid"].to_string(), id);
        assert_eq!(tty_exit(&mut ws).0, 128 + 15);

        // A process that ignores TERM is killed when the grace period runs out.
        let script = "trap '' TERM; echo up; while :; do sleep 1; done";
        let mut ws = connect(s, "tty", &format!("{}&tty=true", q(&["sh", "-c", script])));
        let id = tty_session_info(&mut ws, true);
        read_until(&mut ws, &mut Vec::new(), "up");
        let r = http(
            s,
            "POST",
            &format!("/v1/sprites/tty/exec/{id}/kill?signal=TERM&timeout=200ms"),
            None,
        );
        let kinds: Vec<String> = String::from_utf8_lossy(&r.body)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                r#""signal""#,
                r#""timeout""#,
                r#""killed""#,
                r#""exited""#,
                r#""complete""#
            ]
        );
        assert_eq!(tty_exit(&mut ws).0, 128 + 9);
    });
}

#[test]
fn shutdown_closes_attached_terminals_with_going_away() {
    let dir = TempDir::new("tty-shutdown");
    let server = Server::builder()
        .token("secret")
        .addr("127.0.0.1:0")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .start()
        .unwrap();
    create(&server, "tty");
    let addr = server.addr();
    let mut ws = connect(
        addr,
        "tty",
        &format!("{}&tty=true", q(&["sh", "-c", "echo up; exec sleep 60"])),
    );
    let id = tty_session_info(&mut ws, true);
    read_until(&mut ws, &mut Vec::new(), "up");
    let mut other = attach_at(addr, "tty", &id, false);
    tty_session_info(&mut other, true);
    server.shutdown();
    for ws in [&mut ws, &mut other] {
        // Whichever the writer saw first: the shutdown's 1001, or the killed process's exit
        // report (then 1011); never a connection cut without a close frame.
        let code = loop {
            match ws.read() {
                Ok(Message::Close(Some(f))) => break f.code,
                Ok(Message::Text(t)) => assert!(t.contains("exit"), "{t}"),
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        };
        assert!(
            matches!(code, CloseCode::Away | CloseCode::Error),
            "{code:?}"
        );
    }
}

#[test]
fn a_listener_in_a_terminal_session_is_announced_to_every_attached_client() {
    each_runtime("tty-ports", None, |s, _runtime| {
        let script = "import socket, sys\n\
                      s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
                      print('port', s.getsockname()[1], flush=True)\n\
                      sys.stdin.readline(); s.close()\n\
                      print('closed', flush=True); sys.stdin.readline()\n";
        let mut ws = connect(
            s,
            "tty",
            &format!("{}&tty=true", q(&["python3", "-c", script])),
        );
        let id = tty_session_info(&mut ws, true);
        let mut other = attach_at(s, "tty", &id, false);
        tty_session_info(&mut other, true);
        // Output and port messages, until a `port_opened`/`port_closed` text arrives.
        let next_port_event = |ws: &mut Ws, out: &mut Vec<u8>| -> serde_json::Value {
            loop {
                match ws.read().unwrap() {
                    Message::Binary(b) => out.extend_from_slice(&b),
                    Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                    _ => {}
                }
            }
        };
        let mut out = Vec::new();
        let opened = next_port_event(&mut ws, &mut out);
        let opened_other = next_port_event(&mut other, &mut Vec::new());
        read_until(&mut ws, &mut out, "\r\n");
        let text = String::from_utf8_lossy(&out).into_owned();
        let port: u64 = text
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        for ev in [&opened, &opened_other] {
            assert_eq!(ev["type"], "port_opened", "{ev}");
            assert_eq!(ev["port"], port, "{ev}");
            assert_eq!(ev["address"], "127.0.0.1", "{ev}");
            assert!(ev["pid"].as_u64().is_some_and(|p| p > 0), "{ev}");
            // The listener is the session's leader: port pids and session ids are both
            // pids as the sprite sees them.
            assert_eq!(ev["pid"].to_string(), id, "{ev}");
        }
        send(&mut ws, b"\r");
        let closed = next_port_event(&mut ws, &mut Vec::new());
        assert_eq!(closed["type"], "port_closed", "{closed}");
        assert_eq!(closed["port"], port);
        send(&mut ws, b"\r");
        let (code, _) = tty_exit(&mut ws);
        assert_eq!(code, 0);
    });
}
