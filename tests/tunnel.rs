//! The TCP proxy through the real client against a real sprites-local (PROTOCOL.md §10):
//! `Sprite::proxy_socket` (a `ProxyStream`) and `Sprite::forward_port(s)` (a `PortForward`),
//! to servers run inside the sprite (python3 one-liners on its loopback). Runs on the host
//! runtime, and under `SPRITES_TEST_RUNTIME=sandbox` on the sandbox runtime, where the
//! sprite's `localhost` is its own.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use common::echo::{echo_both_ways, pattern};
use sprites::{Child, Error, Sprite, Stdio};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// Bytes echoed through the tunnel, both ways.
const ECHO_BYTES: usize = 64 << 20;

/// Starts `script` (python3) in the sprite; it prints its listening port as its first line.
/// Returns the process and the port, and the rest of its stdout.
fn serve(sprite: &Sprite, script: &str) -> (Child, u16, BufReader<sprites::ChildStdout>) {
    let mut child = sprite
        .command("python3")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read the port");
    let port = line.trim().parse().expect("a port number");
    (child, port, out)
}

/// An echo server for one connection: echoes until EOF, then sends `EOF-SEEN` and closes.
const ECHO: &str = "import socket\n\
    s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
    print(s.getsockname()[1], flush=True)\n\
    c,_=s.accept()\n\
    while True:\n\
    \x20   b=c.recv(1<<16)\n\
    \x20   if not b: break\n\
    \x20   c.sendall(b)\n\
    c.sendall(b'EOF-SEEN'); c.close()\n";

#[test]
fn an_echo_server_in_the_sprite_gets_64_mib_back_exactly_and_sees_our_eof() {
    let local = Local::start();
    let sprite = local.sprite("echo");
    let (mut child, port, _) = serve(&sprite, ECHO);
    let conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    assert!(conn.supports_half_close());
    assert_eq!(conn.target(), format!("localhost:{port}"));
    assert!(conn.peer_addr().unwrap().ip().is_loopback());
    assert_eq!(conn.peer_addr().unwrap().port(), port);
    echo_both_ways(&conn, ECHO_BYTES);
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_targets_half_close_arrives_as_eof_and_we_can_still_write() {
    let local = Local::start();
    let sprite = local.sprite("halfclose");
    // Says hello, shuts its write side, then counts what still arrives and prints it.
    let script = "import socket\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
        print(s.getsockname()[1], flush=True)\n\
        c,_=s.accept(); c.sendall(b'hello'); c.shutdown(socket.SHUT_WR)\n\
        n=0\n\
        while True:\n\
        \x20   b=c.recv(65536)\n\
        \x20   if not b: break\n\
        \x20   n+=len(b)\n\
        print('got', n, flush=True)\n";
    let (mut child, port, mut out) = serve(&sprite, script);
    let mut conn = sprite.proxy_socket(&format!("127.0.0.1:{port}")).unwrap();
    let mut hello = String::new();
    conn.read_to_string(&mut hello).unwrap();
    assert_eq!(hello, "hello");
    // The target no longer writes, but still reads: the tunnel stays open our way.
    conn.write_all(&vec![1u8; 300_000]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got 300000");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_refused_target_is_a_typed_connection_refused_error() {
    let local = Local::start();
    let sprite = local.sprite("refused");
    // A port that was just free inside the sprite, and is again.
    let script = "import socket\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1], flush=True)\n";
    let (mut child, port, _) = serve(&sprite, script);
    assert!(child.wait().unwrap().success());
    let err = sprite
        .proxy_socket(&format!("localhost:{port}"))
        .unwrap_err();
    match &err {
        Error::ProxyTarget {
            target,
            kind,
            message,
        } => {
            assert_eq!(target, &format!("localhost:{port}"));
            assert_eq!(*kind, std::io::ErrorKind::ConnectionRefused, "{message}");
            assert!(message.contains("refused"), "{message}");
        }
        other => panic!("expected ProxyTarget, got {other:?}"),
    }
    assert_eq!(err.io_kind(), std::io::ErrorKind::ConnectionRefused);
    // A malformed address never reaches the server.
    assert!(matches!(
        sprite.proxy_socket("localhost:http"),
        Err(Error::InvalidInput(_))
    ));
    // An unknown sprite is the API's 404.
    let ghost = local.client.sprite("no-such-sprite");
    let err = ghost.proxy_socket("localhost:80").unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(404), "{err:?}");
}

#[test]
fn localhost_through_the_proxy_is_the_sprites_own() {
    let local = Local::start();
    let sprite = local.sprite("loopback");
    // A listener on the host's loopback, which a sandboxed sprite must not reach.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let result = sprite.proxy_socket(&format!("localhost:{port}"));
    if common::test_runtime() == sprites_local::Runtime::Sandbox {
        let err = result.unwrap_err();
        assert_eq!(
            err.io_kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{err}"
        );
        assert_eq!(
            host.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the host's listener was reached"
        );
        // ... while a listener on the sprite's loopback, on that same port, is reached.
        let script = format!(
            "import socket\n\
             s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(1)\n\
             print({port}, flush=True)\n\
             c,_=s.accept(); c.sendall(b'sprite'); c.close()\n"
        );
        let (mut child, _, _) = serve(&sprite, &script);
        let mut conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
        let mut who = String::new();
        conn.read_to_string(&mut who).unwrap();
        assert_eq!(who, "sprite");
        assert!(child.wait().unwrap().success());
    } else {
        // The host runtime isolates nothing: the sprite's localhost is the host's.
        let _conn = result.unwrap();
        host.set_nonblocking(false).unwrap();
        let _accepted = host.accept().unwrap();
    }
}

/// `python3 -m http.server`'s handler on a free loopback port, serving `dir`.
fn http_server(sprite: &Sprite, dir: &str) -> (Child, u16) {
    let script = format!(
        "import http.server as h, functools\n\
         class Quiet(h.SimpleHTTPRequestHandler):\n\
         \x20   def log_message(self, *a): pass\n\
         s=h.ThreadingHTTPServer(('127.0.0.1',0),functools.partial(Quiet, directory={dir:?}))\n\
         print(s.server_address[1], flush=True)\n\
         s.serve_forever()\n"
    );
    let (child, port, _) = serve(sprite, &script);
    (child, port)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    (head, response[split + 4..].to_vec())
}

#[test]
fn a_forwarded_port_serves_20_concurrent_http_clients() {
    let local = Local::start();
    let sprite = local.sprite("forward");
    let page: Vec<u8> = (0..200_000).map(pattern).collect();
    let fs = sprite.fs();
    fs.create_dir_all("/tmp/site")
        .expect("make the site's directory");
    fs.write("/tmp/site/page.bin", &page)
        .expect("write the page");
    let (mut server, port) = http_server(&sprite, "/tmp/site");
    let forward = sprite.forward_port(0, port).unwrap();
    let addr = forward.local_addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(forward.ports(), &[(addr, port)]);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let page = page.clone();
            std::thread::spawn(move || {
                let (head, body) = http_get(addr, "/page.bin");
                assert!(head.starts_with("HTTP/1.0 200"), "{head}");
                assert!(body == page, "body of {} bytes differs", body.len());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Closing stops the listener: nothing accepts there any more.
    forward.close();
    assert!(TcpStream::connect(addr).is_err());
    server.kill().unwrap();
    let _ = server.wait();
}

#[test]
fn forward_ports_is_all_or_nothing() {
    let local = Local::start();
    let sprite = local.sprite("forwards");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let err = sprite
        .forward_ports(&[(free_port, 80), (taken_port, 81)])
        .unwrap_err();
    assert_eq!(err.io_kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // The first port was released with the failure.
    TcpListener::bind(("127.0.0.1", free_port)).expect("the first port is free again");
    assert!(matches!(
        sprite.forward_ports(&[]),
        Err(Error::InvalidInput(_))
    ));
    // A forward whose sprite port has no listener closes each accepted connection.
    let forward = sprite.forward_ports(&[(0, 1), (0, 2)]).unwrap();
    assert_eq!(forward.ports().len(), 2);
    let mut conn = TcpStream::connect(forward.ports()[1].0).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(conn.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn timeouts_and_clones_behave_like_tcp_streams() {
    let local = Local::start();
    let sprite = local.sprite("timeouts");
    let (mut child, port, _) = serve(&sprite, ECHO);
    let conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    assert_eq!(conn.read_timeout().unwrap(), None);
    assert_eq!(
        conn.set_read_timeout(Some(Duration::ZERO))
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::InvalidInput
    );
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(conn.write_timeout().unwrap(), Some(Duration::from_secs(5)));
    let mut buf = [0u8; 16];
    let err = (&conn).read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // Nothing was lost by the timeout: the echo still comes through, on a clone.
    let mut clone = conn.try_clone().unwrap();
    clone.write_all(b"ping").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = [0u8; 4];
    (&conn).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Shutting both ways closes the tunnel: the echo server sees EOF and exits.
    drop(clone);
    conn.shutdown(Shutdown::Both).unwrap();
    assert_eq!((&conn).read(&mut buf).unwrap(), 0);
    assert!(child.wait().unwrap().success());
}

/// A raw WebSocket to `/proxy`, for what the client never sends.
fn raw_proxy(
    local: &Local,
    sprite: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    use tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/v1/sprites/{sprite}/proxy",
        local.url().replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer test-token".parse().unwrap());
    let (ws, response) = tungstenite::connect(request).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The server's reply to `init`, and then the close code it ends with.
fn reply_to(
    local: &Local,
    sprite: &str,
    init: tungstenite::Message,
) -> (serde_json::Value, Option<u16>) {
    let mut ws = raw_proxy(local, sprite);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    ws.send(init).unwrap();
    let reply = match ws.read().unwrap() {
        tungstenite::Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a text reply, got {other:?}"),
    };
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("expected a close, got {e}"),
        }
    };
    (reply, code)
}

#[test]
fn malformed_init_messages_get_an_error_reply_then_a_close() {
    use tungstenite::Message;
    let local = Local::start();
    let sprite = local.sprite("malformed");
    for (init, code) in [
        (Message::text("not json"), "invalid_request"),
        (Message::text(r#"{"host":"localhost"}"#), "invalid_request"),
        (Message::text(r#"{"port":0}"#), "invalid_request"),
        (Message::text(r#"{"port":65536}"#), "invalid_request"),
        (
            Message::text(r#"{"host":"a b","port":80}"#),
            "invalid_request",
        ),
        (
            Message::binary(b"{\"port\":80}".to_vec()),
            "invalid_request",
        ),
        (
            Message::text(r#"{"host":"no-such-host.invalid","port":80}"#),
            "host_not_found",
        ),
    ] {
        let shown = format!("{init:?}");
        let (reply, close) = reply_to(&local, sprite.name(), init);
        assert_eq!(reply["status"], "error", "{shown}: {reply}");
        assert_eq!(reply["code"], code, "{shown}: {reply}");
        assert!(
            !reply["error"].as_str().unwrap_or("").is_empty(),
            "{shown}: {reply}"
        );
        assert_eq!(close, Some(1008), "{shown}");
    }
    // What is not a WebSocket upgrade is answered before any: 400 (401 without the token).
    let url = format!("{}/v1/sprites/{}/proxy", local.url(), sprite.name());
    match ureq::get(&url)
        .set("Authorization", "Bearer test-token")
        .call()
    {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 400),
        other => panic!("expected 400, got {other:?}"),
    }
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // A well-formed one gets the documented reply.
    let (_child, port, _) = serve(&sprite, ECHO);
    let mut ws = raw_proxy(&local, sprite.name());
    ws.send(Message::text(format!(r#"{{"port":{port}}}"#)))
        .unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["status"], "connected", "{v}");
            assert_eq!(v["target"], format!("localhost:{port}"), "{v}");
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    // Without half-close (an official client), bytes go both ways, and our close is
    // answered with a close.
    ws.send(Message::binary(b"abc".to_vec())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(b.as_ref(), b"abc"),
        other => panic!("expected the echo, got {other:?}"),
    }
    ws.send(Message::Close(None)).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("expected only the close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }
}

#[test]
fn a_target_that_resets_is_a_connection_reset_error_not_an_eof() {
    let local = Local::start();
    let sprite = local.sprite("reset");
    // Sends a little, then closes with SO_LINGER 0: a reset, not an orderly end.
    let script = "import socket,struct\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
        print(s.getsockname()[1], flush=True)\n\
        c,_=s.accept(); c.sendall(b'partial')\n\
        c.recv(1)\n\
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()\n";
    let (mut child, port, _) = serve(&sprite, script);
    let mut conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = [0u8; 7];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"partial");
    conn.write_all(b"x").unwrap();
    let mut rest = Vec::new();
    let err = conn.read_to_end(&mut rest).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(rest.is_empty(), "{rest:?}");
    // The failure stays: a second read says the same.
    assert_eq!(
        conn.read(&mut got).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_server_shutdown_ends_an_open_tunnel_cleanly() {
    let mut local = Local::start();
    let sprite = local.sprite("shutdown");
    let (_child, port, _) = serve(&sprite, ECHO);
    let mut conn = sprite.proxy_socket(&format!("localhost:{port}")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    conn.read_exact(&mut got).unwrap();
    // The server closes the tunnel with 1001 ("going away"), or its target's end comes
    // first (the host runtime's shutdown ends the echo server too): an end, not a hang.
    local.server.take().unwrap().shutdown();
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0);
}
