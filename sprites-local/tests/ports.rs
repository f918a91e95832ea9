//! End-to-end tests of port events (PROTOCOL.md §6.4, §10 "Port watch"): real listeners
//! opened by `python3` in real execs, seen by a real server, reported on exec WebSockets
//! and on `/ports/watch`. Host runtime in-process; the sandbox tests are skipped (with the
//! reason printed) where the kernel cannot create sandboxes. Every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use serde_json::Value;
use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// Listens on every `FAMILY/HOST[/PORT]` spec `COUNT` times, prints `PID PORT…`, waits for
/// a line on stdin, closes them all, prints `closed` and waits for stdin's end. With
/// `wait` first, it waits for a line before it listens.
const LISTEN: &str = r#"
import os, resource, socket, sys
mode, count, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if mode == "wait":
    sys.stdin.readline()
socks = []
for spec in specs:
    fam, host, port = (spec.split("/") + ["0"])[:3]
    for _ in range(count):
        s = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET)
        if fam == "6":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, int(port)))
        s.listen(1)
        socks.append(s)
print(os.getpid(), *[s.getsockname()[1] for s in socks], flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
print("closed", flush=True)
sys.stdin.read()
"#;

fn start_host(tag: &str, max_ports: Option<usize>) -> (ServerHandle, TempDir) {
    let dir = TempDir::new(tag);
    let mut b = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Host);
    if let Some(n) = max_ports {
        b = b.max_ports_per_sprite(n);
    }
    (b.start().unwrap(), dir)
}

/// A WebSocket exec of the listener script, with what it has sent so far.
struct Listener {
    ws: Ws,
    stdout: String,
    /// Port messages received, in order.
    events: Vec<Value>,
    session_id: u32,
    exit: Option<u8>,
}

impl Listener {
    /// Starts the script with `args` (`now|wait COUNT SPEC…`) in `sprite`, directly or
    /// (with `via_shell`) as a child of `sh`.
    fn start(addr: SocketAddr, sprite: &str, args: &[&str], via_shell: bool) -> Listener {
        let mut argv: Vec<&str> = if via_shell {
            vec!["sh", "-c", "python3 -c \"$0\" \"$@\"; echo done", LISTEN]
        } else {
            vec!["python3", "-c", LISTEN]
        };
        argv.extend_from_slice(args);
        let mut ws = connect(addr, sprite, &format!("{}&stdin=true", q(&argv)));
        let session_id = session_id(&mut ws).parse().unwrap();
        Listener {
            ws,
            stdout: String::new(),
            events: Vec::new(),
            session_id,
            exit: None,
        }
    }

    /// Reads one message; false at the exit frame.
    fn pump(&mut self) -> bool {
        match self.ws.read().unwrap() {
            Message::Binary(b) => match b[0] {
                1 => self.stdout.push_str(&String::from_utf8_lossy(&b[1..])),
                2 => panic!("stderr: {}", String::from_utf8_lossy(&b[1..])),
                3 => {
                    self.exit = Some(b[1]);
                    return false;
                }
                _ => panic!("unknown frame {b:?}"),
            },
            Message::Text(t) => self.events.push(serde_json::from_str(&t).unwrap()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        true
    }

    /// The script's first line: (its pid, its ports).
    fn listening(&mut self) -> (u32, Vec<u16>) {
        while !self.stdout.contains('\n') {
            assert!(self.pump(), "exited early: {}", self.stdout);
        }
        let line = self.stdout.lines().next().unwrap().to_owned();
        let mut f = line.split_whitespace().map(|w| w.parse::<u32>().unwrap());
        let pid = f.next().unwrap();
        (pid, f.map(|p| p as u16).collect())
    }

    /// Waits until `n` port messages have arrived.
    fn events(&mut self, n: usize) -> &[Value] {
        while self.events.len() < n {
            assert!(self.pump(), "exited with events {:?}", self.events);
        }
        &self.events
    }

    fn stdin(&mut self, data: &[u8]) {
        let mut frame = vec![0u8];
        frame.extend_from_slice(data);
        self.ws.send(Message::Binary(frame.into())).unwrap();
    }

    /// Asks the script to close its listeners and waits for `closed`.
    fn close_listeners(&mut self) {
        self.stdin(b"\n");
        while !self.stdout.contains("closed") {
            assert!(self.pump());
        }
    }

    /// Ends the script, which must exit 0.
    fn finish(mut self) {
        self.ws.send(Message::Binary(vec![4u8].into())).unwrap();
        while self.pump() {}
        assert_eq!(self.exit, Some(0), "{}", self.stdout);
        let _ = self.ws.close(None);
    }
}

/// `{"type":T,"port":P,"address":A,"pid":N}`.
fn event(kind: &str, port: u16, address: &str, pid: u32) -> Value {
    serde_json::json!({"type": kind, "port": port, "address": address, "pid": pid})
}

/// Opens `/v1/sprites/{sprite}/ports/watch`.
fn watch(addr: SocketAddr, sprite: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}/v1/sprites/{sprite}/ports/watch");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tungstenite::client::client(req, Retry(stream))
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// The next text message on a watch, as JSON. The server pings every 15 s, so a wait this
/// short sees one ping at most.
fn next_text(ws: &mut Ws) -> Value {
    let mut pings = 0;
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) => {
                pings += 1;
                assert!(pings <= 1, "pinged more than every 15 s");
            }
            Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The ports of a `port_list`.
fn listed(list: &Value) -> Vec<Value> {
    assert_eq!(list["type"], "port_list", "{list}");
    list["ports"].as_array().unwrap().clone()
}

#[test]
fn a_listener_in_an_exec_gives_port_opened_then_port_closed() {
    let (s, _d) = start_host("opened", None);
    create(&s, "box");
    let mut l = Listener::start(s.addr(), "box", &["now", "1", "4/127.0.0.1"], false);
    let (pid, ports) = l.listening();
    assert_eq!(pid, l.session_id, "python is the exec itself");
    let opened = event("port_opened", ports[0], "127.0.0.1", pid);
    assert_eq!(l.events(1), [opened]);
    l.close_listeners();
    let closed = event("port_closed", ports[0], "127.0.0.1", pid);
    assert_eq!(l.events(2)[1], closed);
    l.finish();
}

#[test]
fn ipv6_wildcards_and_listeners_of_child_processes() {
    let (s, _d) = start_host("ipv6", None);
    create(&s, "box");
    let mut l = Listener::start(
        s.addr(),
        "box",
        &["now", "1", "4/0.0.0.0", "6/::", "6/::1"],
        true,
    );
    let (pid, ports) = l.listening();
    assert_ne!(pid, l.session_id, "python is a child of the exec's shell");
    let got: BTreeSet<String> = l.events(3).iter().map(Value::to_string).collect();
    let want: BTreeSet<String> = [
        event("port_opened", ports[0], "0.0.0.0", pid),
        event("port_opened", ports[1], "::", pid),
        event("port_opened", ports[2], "::1", pid),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    assert_eq!(got, want);
    l.close_listeners();
    assert!(l.events(6)[3..]
        .iter()
        .all(|e| e["type"] == "port_closed" && e["pid"] == pid));
    l.finish();
}

#[test]
fn the_watch_sends_a_snapshot_then_every_change_in_the_sprite() {
    let (s, _d) = start_host("watch", None);
    create(&s, "box");
    let a = s.addr();
    let mut first = Listener::start(a, "box", &["now", "1", "4/127.0.0.1"], false);
    let (pid1, ports1) = first.listening();
    first.events(1); // the scanner has seen it

    let mut w = watch(a, "box").unwrap();
    let list = next_text(&mut w);
    assert_eq!(
        listed(&list),
        [event("port_opened", ports1[0], "127.0.0.1", pid1)]
    );

    let mut second = Listener::start(a, "box", &["now", "1", "6/::1"], false);
    let (pid2, ports2) = second.listening();
    assert_eq!(
        next_text(&mut w),
        event("port_opened", ports2[0], "::1", pid2)
    );
    second.close_listeners();
    assert_eq!(
        next_text(&mut w),
        event("port_closed", ports2[0], "::1", pid2)
    );
    second.finish();
    // Pings are answered; a close is answered with a close.
    w.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    loop {
        match w.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    w.close(None).unwrap();
    loop {
        match w.read() {
            Ok(Message::Close(c)) => {
                assert_eq!(c.map(|c| u16::from(c.code)), Some(1000));
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected the close echoed, got {other:?}"),
        }
    }
    // The first exec's listener outlives the watch, and a new watch lists it again.
    let mut w = watch(a, "box").unwrap();
    assert_eq!(listed(&next_text(&mut w)).len(), 1);
    first.close_listeners();
    assert_eq!(next_text(&mut w)["type"], "port_closed");
    first.finish();
}

#[test]
fn an_exec_hears_only_its_own_listeners() {
    let (s, _d) = start_host("own", None);
    create(&s, "box");
    let a = s.addr();
    let mut late = Listener::start(a, "box", &["wait", "1", "4/127.0.0.1"], false);
    let mut early = Listener::start(a, "box", &["now", "1", "4/127.0.0.1"], false);
    let (early_pid, _) = early.listening();
    assert_eq!(early.events(1)[0]["pid"], early_pid);
    // `early`'s listener was reported before `late` listens, so had `late` been told
    // about it, that message would come first.
    late.stdin(b"\n");
    let (late_pid, late_ports) = late.listening();
    assert_eq!(
        late.events(1)[0],
        event("port_opened", late_ports[0], "127.0.0.1", late_pid)
    );
    early.close_listeners();
    late.close_listeners();
    assert_eq!(late.events(2)[1]["pid"], late_pid);
    early.finish();
    late.finish();
}

#[test]
fn watch_errors_are_http_answers_before_the_upgrade() {
    let (s, _d) = start_host("watcherr", None);
    create(&s, "box");
    let e = watch(s.addr(), "nope").unwrap_err();
    assert!(e.contains("404"), "{e}");
    let r = http(&s, "GET", "/v1/sprites/box/ports/watch", None);
    assert_eq!(r.status, 400, "not an upgrade");
    let r = http(&s, "POST", "/v1/sprites/box/ports/watch", None);
    assert_eq!(r.status, 405);
    let r = http_raw(
        &s,
        b"GET /v1/sprites/box/ports/watch HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(r.status, 401);
    // An upgrade needs all three: the upgrade headers, a key, version 13.
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (what, headers) in [
        ("no upgrade", format!("{key}Sec-WebSocket-Version: 13\r\n")),
        ("no key", format!("{upgrade}Sec-WebSocket-Version: 13\r\n")),
        (
            "version 12",
            format!("{upgrade}{key}Sec-WebSocket-Version: 12\r\n"),
        ),
    ] {
        let raw = format!(
            "GET /v1/sprites/box/ports/watch HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer secret\r\n{headers}\r\n"
        );
        let r = head_of(s.addr(), raw.as_bytes());
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.header("sec-websocket-version"), Some("13"), "{what}");
    }
}

/// Sends `raw` and reads the response head only (the connection may stay open).
fn head_of(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(raw).unwrap();
    let mut r = BufReader::new(c);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed: {head}");
        if line == "\r\n" {
            return Resp::from_head(head.trim_end().to_owned());
        }
        head.push_str(&line);
    }
}

/// An HTTP exec of the listener script (which subscribes to nothing), left running: its
/// connection and (pid, ports).
fn listen_quietly(addr: SocketAddr, sprite: &str, args: &[&str]) -> (TcpStream, u32, Vec<u16>) {
    let mut argv = vec!["python3", "-c", LISTEN];
    argv.extend_from_slice(args);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        c,
        "POST /v1/sprites/{sprite}/exec?{}&stdin=true HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer secret\r\nTransfer-Encoding: chunked\r\n\r\n",
        q(&argv)
    )
    .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0);
    }
    // Output frames until the first line is complete.
    let mut out = Vec::new();
    while !out.contains(&b'\n') {
        line.clear();
        r.read_line(&mut line).unwrap();
        let n = usize::from_str_radix(line.trim_end(), 16).unwrap();
        let mut data = vec![0u8; n + 2];
        r.read_exact(&mut data).unwrap();
        assert_eq!(data[0], 1, "{}", String::from_utf8_lossy(&data));
        out.extend_from_slice(&data[1..n]);
    }
    let text = String::from_utf8(out).unwrap();
    let mut f = text.split_whitespace().map(|w| w.parse::<u32>().unwrap());
    let pid = f.next().unwrap();
    (c, pid, f.map(|p| p as u16).collect())
}

#[test]
fn the_cap_on_listeners_per_sprite_holds_at_its_boundary() {
    let (s, _d) = start_host("cap", Some(8));
    let a = s.addr();
    for (sprite, count) in [("eight", 8usize), ("nine", 9), ("many", 10_000)] {
        create(a, sprite);
        // Listening before anything watches the sprite: the watch's first scan sees them
        // all at once.
        let (conn, pid, ports) =
            listen_quietly(a, sprite, &["now", &count.to_string(), "4/127.0.0.1"]);
        assert_eq!(ports.len(), count);
        let mut w = watch(a, sprite).unwrap();
        let list = listed(&next_text(&mut w));
        assert_eq!(list.len(), count.min(8), "{sprite}");
        for e in &list {
            assert_eq!(e["pid"], pid);
            assert!(ports.contains(&(e["port"].as_u64().unwrap() as u16)), "{e}");
        }
        drop(conn);
        wait_until("the listeners to go", || process_gone(pid as i32));
    }
}

#[test]
fn in_a_sandbox_each_sprite_sees_only_its_own_ports_with_pids_inside() {
    let Some((s, _dir)) = common::start("ports") else {
        return;
    };
    let a = s.addr();
    create(a, "one");
    create(a, "two");
    let mut w = watch(a, "two").unwrap();
    assert!(listed(&next_text(&mut w)).is_empty());

    let mut l1 = Listener::start(a, "one", &["now", "1", "4/0.0.0.0/4001"], false);
    let (pid1, _) = l1.listening();
    assert!(pid1 < 100, "pid {pid1} is as seen inside the sprite");
    assert_eq!(l1.events(1), [event("port_opened", 4001, "0.0.0.0", pid1)]);
    // Sprite two hears of its own listener, never of sprite one's (reported first).
    let mut l2 = Listener::start(a, "two", &["now", "1", "6/::/4002"], false);
    let (pid2, _) = l2.listening();
    assert_eq!(next_text(&mut w), event("port_opened", 4002, "::", pid2));
    assert_eq!(l2.events(1), [event("port_opened", 4002, "::", pid2)]);
    l1.close_listeners();
    assert_eq!(l1.events(2)[1], event("port_closed", 4001, "0.0.0.0", pid1));
    l2.close_listeners();
    assert_eq!(next_text(&mut w), event("port_closed", 4002, "::", pid2));
    l1.finish();
    l2.finish();

    // Ten thousand listeners cost one scan no more than the default cap (256) of lines.
    create(a, "many");
    let (conn, pid, ports) = listen_quietly(a, "many", &["now", "10000", "4/0.0.0.0"]);
    assert_eq!(ports.len(), 10_000);
    let mut w = watch(a, "many").unwrap();
    let list = listed(&next_text(&mut w));
    assert_eq!(list.len(), 256);
    assert!(list.iter().all(|e| e["pid"] == pid));
    drop(conn);
}
