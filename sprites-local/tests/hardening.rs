//! A server you can leave open to hostile clients: what an attacker without the token
//! (or with it, but misbehaving) can make it hold — memory, descriptors, threads — and
//! that real clients keep being served meanwhile. Each test names the attack it replays;
//! every one of them failed against the thread-per-connection server before the reactor.
//!
//! Memory, threads and limits are measured on a server in its own process
//! ([`ServerProcess`]); the caps and deadlines are checked on in-process servers. Every
//! wait is bounded; the only fixed waits are where the point is that nothing happens
//! (memory that must not grow) or where the rule itself is about time (eviction after 1 s).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{create, http, raise_nofile, Resp, Retry, ServerProcess, TempDir};
use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::client::IntoClientRequest;

const TIMEOUT: Duration = Duration::from_secs(20);

fn start(
    tag: &str,
    configure: impl FnOnce(sprites_local::ServerBuilder) -> sprites_local::ServerBuilder,
) -> (ServerHandle, TempDir) {
    let dir = TempDir::new(tag);
    let builder = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Host);
    (configure(builder).start().unwrap(), dir)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

/// Reads one response head (through its blank line) byte by byte, so nothing after it is
/// consumed. `None` if the connection ended first.
fn read_head(c: &mut TcpStream) -> Option<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a response head: {e}"),
        }
    }
    let text = String::from_utf8(head[..head.len() - 4].to_vec()).unwrap();
    Some(Resp::from_head(text))
}

/// Reads one complete response (`Content-Length` bodies).
fn read_response(c: &mut TcpStream) -> Resp {
    let mut r = read_head(c).expect("a response");
    let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
    r.body = vec![0u8; len];
    c.read_exact(&mut r.body).unwrap();
    r
}

/// An authenticated keep-alive request on `c`, answered.
fn get(c: &mut TcpStream, path: &str) -> Resp {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    read_response(c)
}

/// True once the server has closed `c` (EOF or reset), after whatever it sent.
fn closed_by_server(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The §3.1 error body of `r`, checked: a JSON object with the `error` code given.
fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.head);
    assert_eq!(
        r.json()["error"],
        code,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.json()["message"].is_string());
    assert_eq!(r.header("sprite-version"), Some("0.1.0"));
}

/// Caught: JSON routes answered `100 Continue` and buffered up to 16 MiB before checking
/// the token (30 such connections: +710 MiB). Now the token is checked from the head: 401
/// at once, no `100 Continue`, none of the body read into memory.
#[test]
fn unauthenticated_bodies_are_refused_from_the_head() {
    let server = ServerProcess::start();
    http(&server, "GET", "/v1/sprites", None); // warm-up
    let before = server.rss_kib();
    let mut held = Vec::new();
    for i in 0..30 {
        let mut c = connect(server.addr);
        let auth = if i % 2 == 0 {
            ""
        } else {
            "Authorization: Bearer wrong\r\n"
        };
        let head = format!(
            "POST /v1/sprites HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\n\
             Content-Type: application/json\r\nContent-Length: 16777216\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert_error(&r, 401, "unauthorized");
        assert_eq!(r.header("connection"), Some("close"));
        held.push(c);
    }
    // Half of them send their body anyway, slowly; the rest say nothing more. All stay open.
    for round in 0..8 {
        for c in held.iter_mut().step_by(2) {
            let _ = c.write_all(&[b'x'; 64 * 1024]);
        }
        if round == 0 {
            thread::sleep(Duration::from_millis(50));
        }
    }
    thread::sleep(Duration::from_millis(200)); // nothing to wait for: memory must not move
    let after = server.rss_kib();
    eprintln!("server RSS {before} KiB -> {after} KiB with 30 refused 16 MiB uploads held");
    assert!(
        after < before + 10 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // The refused connections were half-closed after their answer.
    for c in held.iter_mut().skip(1).step_by(2) {
        c.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
        assert!(closed_by_server(c));
    }
}

/// Caught: a WebSocket frame header declaring 16 MiB made the server allocate and zero
/// 16 MiB before a byte of payload (20 connections: +322 MiB). Now the payload grows with
/// the bytes that arrive.
#[test]
fn frame_headers_declaring_16_mib_cost_nothing() {
    let server = ServerProcess::start();
    create(&server, "box");
    let open_exec = || {
        let url = format!(
            "ws://{}/v1/sprites/box/exec?cmd=cat&stdin=true",
            server.addr
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", "Bearer secret".parse().unwrap());
        let (mut ws, _) = tungstenite::client::client(req, Retry(connect(server.addr))).unwrap();
        let first = ws.read().unwrap(); // session_info
        assert!(first.is_text());
        ws
    };
    drop(open_exec()); // warm-up
    let before = server.rss_kib();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut ws = open_exec();
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(16u64 << 20).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]); // the mask, then no payload at all
        ws.get_mut().0.write_all(&header).unwrap();
        held.push(ws);
    }
    thread::sleep(Duration::from_millis(300)); // nothing to wait for: memory must not move
    let after = server.rss_kib();
    eprintln!("server RSS {before} KiB -> {after} KiB with 20 execs each promised 16 MiB");
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Caught: each idle connection held a thread and 4 descriptors, and the server never
/// raised its open-file limit: at a shell's usual soft limit of 1024, a few hundred idle
/// connections (the attack used 5 200) made every other request fail. Now an idle
/// connection is one descriptor in the reactor, and the limit is raised at start.
#[test]
fn idle_connections_do_not_starve_real_clients() {
    let limit = raise_nofile();
    let n = 2000.min(limit.saturating_sub(200) as usize);
    eprintln!("holding {n} idle connections (open-file limit {limit})");
    let server = ServerProcess::start_with(&[], Some(1024));
    let idle: Vec<TcpStream> = (0..n).map(|_| connect(server.addr)).collect();
    let started = Instant::now();
    let client = sprites::Client::builder()
        .base_url(format!("http://{}", server.addr))
        .token("secret")
        .build()
        .unwrap();
    let sprite = client.create_sprite("flooded").unwrap();
    let out = sprite.command("echo").arg("ok").output().unwrap();
    assert_eq!(out.stdout, b"ok\n");
    let took = started.elapsed();
    eprintln!(
        "create + exec took {took:?} beside {n} idle connections; server: {} threads, {} fds",
        server.threads(),
        server.fds()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // One descriptor per connection, and no thread for any of the idle ones.
    assert!(server.fds() < n + 100, "{} fds", server.fds());
    assert!(server.threads() < 20, "{} threads", server.threads());
    drop(idle);
}

/// Caught: the 300 s idle timer restarted on every byte, so a client trickling a header
/// byte at a time held its connection (and thread) forever. Now the head has a deadline
/// from the accept that arriving bytes do not move.
#[test]
fn a_slowloris_is_cut_at_the_head_deadline() {
    let (s, _d) = start("slowloris", |b| b.head_timeout(Duration::from_secs(1)));
    let mut c = connect(s.addr());
    let started = Instant::now();
    let mut writer = c.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for b in b"GET /v1/sprites HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = read_response(&mut c);
    let took = started.elapsed();
    assert_error(&r, 408, "request_timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
        "answered after {took:?}"
    );
    assert!(closed_by_server(&mut c));
    let _ = c.shutdown(Shutdown::Both);
    trickle.join().unwrap();
}

/// Caught: nothing capped connections. Now the one past `max_connections` gets 503 with
/// the §3.1 body at once, and a slot freed is a slot available again.
#[test]
fn connections_beyond_the_cap_get_503() {
    let (s, _d) = start("cap", |b| b.max_connections(50));
    let mut open: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = connect(s.addr());
            assert_eq!(get(&mut c, "/v1/sprites").status, 200);
            c
        })
        .collect();
    let mut extra = connect(s.addr());
    let r = read_response(&mut extra);
    assert_error(&r, 503, "server_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(closed_by_server(&mut extra));
    // Still serving the ones it has.
    assert_eq!(get(&mut open[0], "/v1/sprites").status, 200);

    open.truncate(40);
    // The server sees the closes as they reach it; until then a newcomer may still be
    // told 503, so try (boundedly) until one gets in.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut c = connect(s.addr());
        let req = "GET /v1/sprites HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n";
        c.write_all(req.as_bytes()).unwrap();
        let status = read_head(&mut c).map(|r| r.status);
        if status == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot after closing 10: {status:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Caught: silent connections could take every slot. Now at `max_unauthenticated`, a
/// newcomer evicts the oldest silent connection once it has waited a second (503), so a
/// client that sends its request promptly is never locked out; within that second the
/// newcomer is the one told to come back.
#[test]
fn silent_connections_are_evicted_for_real_ones() {
    let (s, _d) = start("unauth", |b| b.max_unauthenticated(20));
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect(s.addr())).collect();
    // Let the reactor take them all in before the newcomer.
    thread::sleep(Duration::from_millis(100));
    let mut early = connect(s.addr());
    let r = read_response(&mut early);
    assert_error(&r, 503, "server_busy");

    // The rule is about time: the silent ones must have waited a second.
    thread::sleep(Duration::from_millis(1100));
    let mut c = connect(s.addr());
    assert_eq!(get(&mut c, "/v1/sprites").status, 200);
    // The oldest silent one made room, and was told so.
    let r = read_response(&mut silent[0]);
    assert_error(&r, 503, "server_busy");
    assert!(closed_by_server(&mut silent[0]));
    // A request on an authenticated keep-alive connection does not count against the cap.
    assert_eq!(get(&mut c, "/v1/sprites").status, 200);
}

/// Caught: the server ran with whatever soft open-file limit it was started with (often
/// 1024). Now `start` raises it to the hard limit.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let server = ServerProcess::start_with(&[], Some(1024));
    let (soft, hard) = server.nofile_limits();
    assert_eq!(soft, hard, "soft {soft}, hard {hard}");
}

/// Caught: when `accept` failed for lack of descriptors, the server slept and retried,
/// leaving every waiting client hanging (with the connection queued, it cannot even tell
/// it was refused). Now it gives up a spare descriptor to accept and answer 503.
#[test]
fn out_of_descriptors_is_a_503_not_a_hang() {
    // A hard limit the server cannot raise, and caps above it, so accept itself fails.
    let server = ServerProcess::start_limited(
        &["--max-connections", "1000", "--max-unauthenticated", "1000"],
        None,
        Some(64),
    );
    let mut conns: Vec<TcpStream> = (0..80).map(|_| connect(server.addr)).collect();
    // The last ones cannot have a descriptor: each is answered (not left hanging).
    let mut refused = 0;
    for c in conns.iter_mut().rev().take(10) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = read_response(c);
        assert_error(&r, 503, "server_busy");
        refused += 1;
    }
    assert_eq!(refused, 10);
    // Descriptors freed are descriptors usable again.
    drop(conns);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut c = connect(server.addr);
        let req = "GET /v1/sprites HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n";
        c.write_all(req.as_bytes()).unwrap();
        if read_head(&mut c).map(|r| r.status) == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no service after the flood");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The caps can be set on the command line, and the server says what it runs with.
#[test]
fn caps_from_the_command_line() {
    let server = ServerProcess::start_with(
        &["--max-connections", "100", "--max-unauthenticated=10"],
        None,
    );
    assert!(
        server
            .startup
            .iter()
            .any(|l| l == "connections: at most 100 open, 10 of them before their first request"),
        "{:?}",
        server.startup
    );
    let _silent: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    thread::sleep(Duration::from_millis(100));
    let r = read_response(&mut connect(server.addr));
    assert_error(&r, 503, "server_busy");
}

/// Caught: every keep-alive connection held a thread while idle (and its 4 descriptors).
/// Now 200 requests on one connection, then 50 more connections that each made a request
/// and sit idle, leave the server with a handful of threads; and pipelined requests are
/// still answered in order.
#[test]
fn keep_alive_connections_hold_no_thread() {
    let server = ServerProcess::start();
    create(&server, "box");
    let base = server.threads();
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .max_idle_connections(1)
        .build();
    let url = format!("http://{}/v1/sprites/box", server.addr);
    for i in 0..200 {
        let r = agent
            .get(&url)
            .set("Authorization", "Bearer secret")
            .call()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_reader(r.into_reader()).unwrap();
        assert_eq!(v["name"], "box");
    }
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = connect(server.addr);
            assert_eq!(get(&mut c, "/v1/sprites/box").status, 200);
            c
        })
        .collect();
    let threads = server.threads();
    eprintln!("server threads: {base} at start, {threads} with 51 idle keep-alive connections");
    // Held threads would be 51 more. A few idle workers may remain in the pool (each waits
    // up to 1 ms for its client's next request, so the next connection's request can find
    // them busy and start another; idle ones exit after 5 s).
    assert!(threads <= base + 10, "{base} -> {threads} threads");

    // Two requests in one write: both answered, in order, on the same connection.
    let mut c = connect(server.addr);
    c.write_all(
        b"GET /v1/sprites/box HTTP/1.1\r\nAuthorization: Bearer secret\r\n\r\n\
          GET /v1/sprites/nope HTTP/1.1\r\nAuthorization: Bearer secret\r\n\r\n",
    )
    .unwrap();
    let first = read_response(&mut c);
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["name"], "box");
    assert_error(&read_response(&mut c), 404, "sprite_not_found");
    assert_eq!(get(&mut c, "/v1/sprites/box").status, 200);
    drop(idle);
}

/// The worker's short wait for a keep-alive client's next request (instead of handing the
/// connection straight back to the reactor) serves only heads that are complete: a head
/// that arrives in pieces right after a response is still answered, and one that stops
/// half-way is still cut at the head deadline rather than holding a worker.
#[test]
fn a_next_request_in_pieces_is_served_and_a_stalled_one_still_times_out() {
    let (server, _dir) = start("linger", |b| b.head_timeout(Duration::from_millis(400)));
    create(&server, "box");
    let req = b"GET /v1/sprites/box HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n";
    let mut c = connect(server.addr());
    for split in [1, 20, req.len() - 1] {
        assert_eq!(get(&mut c, "/v1/sprites/box").status, 200);
        // At once (inside the worker's wait), part of the next head; the rest later.
        c.write_all(&req[..split]).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        c.write_all(&req[split..]).unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, 200, "split at {split}");
        assert_eq!(r.json()["name"], "box");
    }
    // A next head that stops after one byte is the reactor's again: cut at its deadline.
    assert_eq!(get(&mut c, "/v1/sprites/box").status, 200);
    c.write_all(b"G").unwrap();
    let cut = std::time::Instant::now();
    let r = read_response(&mut c);
    assert_error(&r, 408, "request_timeout");
    assert!(closed_by_server(&mut c));
    assert!(cut.elapsed() < TIMEOUT);
    // A client that closes right after its response leaves nothing behind.
    let mut c = connect(server.addr());
    assert_eq!(get(&mut c, "/v1/sprites/box").status, 200);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut c));
}
