//! TCP proxies and attaches over pooled control connections (PROTOCOL.md §8.4, §8.3), with
//! the real client against a real sprites-local: an echo server in the sprite proxied both
//! ways, connection reuse counted on the server, a refused target, a server without
//! `/control`, a connection cut mid-proxy, and an attach that gets the scrollback and the
//! exit code. Runs on the host runtime, and under `SPRITES_TEST_RUNTIME=sandbox` on the
//! sandbox runtime.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use common::echo::echo_both_ways;
use common::relay::Relay;
use sprites::{Child, Client, Error, Sprite, Stdio};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Bytes echoed through the tunnel, both ways.
const ECHO_BYTES: usize = 8 << 20;

fn upgrades(local: &Local) -> u64 {
    local.server.as_ref().unwrap().control_upgrades()
}

/// An echo server for one connection at a time: echoes until EOF, sends `EOF-SEEN`, closes,
/// and takes the next. Prints its port first.
const ECHO_LOOP: &str = "import socket\n\
    s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
    print(s.getsockname()[1], flush=True)\n\
    while True:\n\
    \x20   c,_=s.accept()\n\
    \x20   while True:\n\
    \x20       b=c.recv(1<<16)\n\
    \x20       if not b: break\n\
    \x20       c.sendall(b)\n\
    \x20   c.sendall(b'EOF-SEEN'); c.close()\n";

/// Starts the echo server in the sprite (its command holds a connection of its own while it
/// runs); returns it and its port.
fn echo_server(sprite: &Sprite) -> (Child, u16) {
    let mut child = sprite
        .command("python3")
        .args(["-c", ECHO_LOOP])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read the port");
    (child, line.trim().parse().expect("a port number"))
}

/// One short exchange: `msg` out, our EOF, everything back to the target's end.
fn exchange(sprite: &Sprite, port: u16, msg: &[u8]) -> (bool, Vec<u8>) {
    let mut conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    conn.write_all(msg).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    (conn.over_control(), back)
}

#[test]
fn an_echo_server_proxied_over_a_control_connection_gets_8_mib_back_exactly() {
    let local = Local::start();
    let sprite = local.sprite("ctlecho");
    let (mut server, port) = echo_server(&sprite);
    sprite.connect().unwrap();
    let before = upgrades(&local);
    let conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    assert!(
        conn.over_control(),
        "the warm control connection carries it"
    );
    assert!(conn.supports_half_close());
    assert_eq!(conn.peer_addr().unwrap().port(), port);
    echo_both_ways(&conn, ECHO_BYTES);
    drop(conn);
    // Closed cleanly: the connection went back to the pool and carries the next one.
    let (over_control, back) = exchange(&sprite, port, b"again");
    assert!(over_control);
    assert_eq!(back, b"againEOF-SEEN");
    assert_eq!(upgrades(&local), before, "no new control connection");
    server.kill().unwrap();
}

#[test]
fn fifty_sequential_proxies_after_connect_reuse_the_control_connection() {
    let local = Local::start();
    let sprite = local.sprite("ctlreuse");
    let (mut server, port) = echo_server(&sprite);
    sprite.connect().unwrap();
    let before = upgrades(&local);
    for i in 0..50 {
        let msg = format!("ping {i}");
        let (over_control, back) = exchange(&sprite, port, msg.as_bytes());
        assert!(over_control, "proxy {i} over control");
        assert_eq!(back, format!("{msg}EOF-SEEN").as_bytes());
    }
    assert_eq!(
        upgrades(&local),
        before,
        "50 proxies ran on the warm connection"
    );
    // Dropped before its end: `release` ends the op and the connection is pooled again
    // (read off our thread); the pool never hands out a connection still carrying it.
    for _ in 0..5 {
        let mut conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
        conn.write_all(b"abandoned").unwrap();
        let mut first = [0u8; 4];
        conn.read_exact(&mut first).unwrap();
        drop(conn);
        assert_eq!(
            sprite.command("echo").arg("clean").output().unwrap().stdout,
            b"clean\n"
        );
    }
    server.kill().unwrap();
}

#[test]
fn a_refused_target_is_a_clear_error_and_the_connection_serves_the_next_exec() {
    let local = Local::start();
    let sprite = local.sprite("ctlrefused");
    sprite.connect().unwrap();
    let err = sprite.proxy_socket("localhost:1").unwrap_err();
    assert!(
        matches!(&err, Error::ProxyTarget { kind, .. } if *kind == io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert_eq!(err.io_kind(), io::ErrorKind::ConnectionRefused);
    for _ in 0..3 {
        assert_eq!(
            sprite.command("echo").arg("next").output().unwrap().stdout,
            b"next\n"
        );
    }
    assert_eq!(
        upgrades(&local),
        1,
        "the refused proxy left its connection usable"
    );
}

#[test]
fn a_server_without_control_still_proxies_over_its_own_sockets() {
    let local = Local::start_with(|b| b.control(false));
    let server = local.server.as_ref().unwrap();
    let client = &local.client;
    let sprite = client.create_sprite("plain").unwrap();
    sprite.connect().unwrap();
    let (mut echo, port) = echo_server(&sprite);
    for i in 0..3 {
        let msg = format!("direct {i}");
        let (over_control, back) = exchange(&sprite, port, msg.as_bytes());
        assert!(!over_control);
        assert_eq!(back, format!("{msg}EOF-SEEN").as_bytes());
    }
    assert_eq!(server.control_upgrades(), 0);
    echo.kill().unwrap();
}

#[test]
fn a_control_connection_cut_mid_proxy_fails_the_reads_and_the_next_proxy_works() {
    let local = Local::start();
    let sprite = local.sprite("ctlcut");
    // The echo server runs over a direct client; only the proxies go through the relay.
    let (mut server, port) = echo_server(&sprite);
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .build()
        .unwrap();
    let relayed = client.sprite(sprite.name());
    relayed.connect().unwrap();
    let mut conn = relayed.proxy_socket(&format!("localhost:{port}")).unwrap();
    assert!(conn.over_control());
    conn.write_all(b"before").unwrap();
    let mut got = [0u8; 6];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"before");
    let cut = Instant::now();
    relay.cut_all();
    let err = conn.read(&mut got).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
        "{err:?}"
    );
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "noticed in {:?}",
        cut.elapsed()
    );
    assert!(conn.write_all(b"more").is_err());
    drop(conn);
    let (_, back) = exchange(&relayed, port, b"after");
    assert_eq!(back, b"afterEOF-SEEN");
    server.kill().unwrap();
}

#[test]
fn attach_over_control_gets_the_scrollback_and_the_exit_code() {
    let local = Local::start();
    let sprite = local.sprite("ctlattach");
    sprite.connect().unwrap();
    let mut child = sprite
        .command("sh")
        .args(["-c", "echo first; read x; echo second $x; exit 7"])
        .detachable(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"first\n");
    let id = child.session_id().unwrap();
    child.detach();
    sprite.connect().unwrap();
    let before = upgrades(&local);
    let mut attached = sprite.attach(&id).unwrap();
    assert_eq!(
        upgrades(&local),
        before,
        "the attach took the warm connection"
    );
    attached
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"now\n")
        .unwrap();
    let mut out = String::new();
    attached
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        out, "first\nsecond now\n",
        "the scrollback, then live output"
    );
    assert_eq!(attached.wait().unwrap().code(), Some(7));
    // The attach's connection went back to the pool; an unknown session is still a 404.
    assert_eq!(
        sprite.command("echo").arg("ok").output().unwrap().stdout,
        b"ok\n"
    );
    assert_eq!(upgrades(&local), before);
    let err = sprite.attach("99999999").unwrap_err();
    assert!(
        err.to_string().contains("404") || err.kind() == io::ErrorKind::NotFound,
        "{err}"
    );
}

/// Waits (bounded) until `forward` has no open connection: each one's control connection is
/// back in the pool by then.
fn settled(forward: &sprites::PortForward) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while forward.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "a forwarded connection never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn forwarded_connections_run_over_the_warm_control_connection() {
    let local = Local::start();
    let sprite = local.sprite("ctlfwd");
    let (mut server, port) = echo_server(&sprite);
    sprite.connect().unwrap();
    let before = upgrades(&local);
    let forward = sprite.forward_port(0, port).unwrap();
    // The first learns that the server serves proxies over control; the ones after it send
    // the local client's first bytes together with the start.
    for i in 0..20 {
        let mut conn = TcpStream::connect(forward.local_addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let msg = format!("forwarded {i}");
        conn.write_all(msg.as_bytes()).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        assert_eq!(back, format!("{msg}EOF-SEEN").as_bytes());
        settled(&forward);
    }
    assert_eq!(
        upgrades(&local),
        before,
        "every forwarded connection reused it"
    );
    // A refused target: the local connection just ends; the control connection goes on.
    let refused = sprite.forward_port(0, 1).unwrap();
    let mut conn = TcpStream::connect(refused.local_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = conn.write_all(b"x");
    let mut back = Vec::new();
    let _ = conn.read_to_end(&mut back); // EOF or a reset: either way, nothing
    assert!(back.is_empty());
    settled(&refused);
    assert_eq!(
        sprite.command("echo").arg("ok").output().unwrap().stdout,
        b"ok\n"
    );
    assert_eq!(upgrades(&local), before);
    server.kill().unwrap();
}

#[test]
fn a_server_that_does_not_proxy_over_control_gets_proxies_over_their_own_sockets() {
    let local = Local::start_with(|b| b.control_proxy(false));
    let server = local.server.as_ref().unwrap();
    let client = &local.client;
    let sprite = client.create_sprite("noproxyops").unwrap();
    let (mut echo, port) = echo_server(&sprite);
    sprite.connect().unwrap();
    let before = server.control_upgrades();
    // The first tries the warm connection, reads the op.error and falls back; the rest go
    // to /proxy at once.
    for i in 0..3 {
        let msg = format!("fallback {i}");
        let (over_control, back) = exchange(&sprite, port, msg.as_bytes());
        assert!(!over_control);
        assert_eq!(back, format!("{msg}EOF-SEEN").as_bytes());
    }
    let forward = sprite.forward_port(0, port).unwrap();
    let mut conn = TcpStream::connect(forward.local_addr()).unwrap();
    conn.write_all(b"forwarded").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"forwardedEOF-SEEN");
    // The refused proxy op left the warm connection clean: the next command runs on it.
    assert_eq!(
        sprite.command("echo").arg("ok").output().unwrap().stdout,
        b"ok\n"
    );
    assert_eq!(server.control_upgrades(), before);
    echo.kill().unwrap();
}
