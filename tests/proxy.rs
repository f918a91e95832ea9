//! Through an HTTP proxy: a small proxy in this file (CONNECT tunnels and absolute-form
//! requests, as an HTTP proxy serves them) in front of a real `sprites-local`. The client is
//! pointed at `sprites.test`, a name that only the proxy can resolve, so every request that
//! works went through the proxy.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use sprites::{Client, Error};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "sprites.test";

/// A proxy that forwards `sprites.test:<port>` to `127.0.0.1:<port>` and records each request
/// line it receives (`CONNECT host:port` or `METHOD http://host:port/path`).
struct TestProxy {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    /// `credentials`: the `Proxy-Authorization` value required, if any.
    fn start(credentials: Option<&'static str>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let record = log.clone();
        // Ends with the test binary.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = proxy_one(client, &record, credentials);
                });
            }
        });
        TestProxy { url, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn proxy_one(
    client: TcpStream,
    log: &Mutex<Vec<String>>,
    credentials: Option<&str>,
) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let request_line = request_line.trim_end().to_owned();
    log.lock().unwrap().push(request_line.clone());
    let mut client_out = client.try_clone()?;
    if let Some(expected) = credentials {
        let given = headers.iter().find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_owned())
        });
        if given.as_deref() != Some(expected) {
            client_out.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
            )?;
            return Ok(());
        }
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let upstream_addr = |authority: &str| -> io::Result<SocketAddr> {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| io::Error::other("no port"))?;
        if host != NAME {
            return Err(io::Error::other("unknown host"));
        }
        Ok(SocketAddr::from((
            [127, 0, 0, 1],
            port.parse().map_err(io::Error::other)?,
        )))
    };
    let mut upstream;
    if method == "CONNECT" {
        upstream = TcpStream::connect(upstream_addr(target)?)?;
        client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        // Absolute form: http://host:port/path → origin form, one request per connection.
        let rest = target.strip_prefix("http://").unwrap_or(target);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        upstream = TcpStream::connect(upstream_addr(authority)?)?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for header in &headers {
            let lower = header.to_ascii_lowercase();
            if !lower.starts_with("connection:") && !lower.starts_with("proxy-") {
                head.push_str(header);
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        upstream.write_all(head.as_bytes())?;
    }
    // Splice both ways; what the reader buffered past the head goes first.
    let mut upstream_in = upstream.try_clone()?;
    let to_upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut reader, &mut upstream_in);
        let _ = upstream_in.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut upstream, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = to_upstream.join();
    Ok(())
}

fn client_through(local: &Local, proxy: &str) -> Client {
    let port = local.url().rsplit_once(':').unwrap().1.to_owned();
    Client::builder()
        .base_url(format!("http://{NAME}:{port}"))
        .token("test-token")
        .proxy(proxy)
        .build()
        .unwrap()
}

#[test]
fn http_and_websocket_traffic_both_go_through_the_proxy() {
    let local = Local::start();
    let proxy = TestProxy::start(None);
    let client = client_through(&local, &proxy.url);
    let port = local.url().rsplit_once(':').unwrap().1.to_owned();

    let sprite = client.create_sprite("via-proxy").unwrap();
    let out = sprite.command("echo").arg("tunnelled").output().unwrap();
    assert_eq!(out.stdout, b"tunnelled\n");
    let fs = sprite.fs_at("/tmp");
    fs.write("through-proxy.txt", "p").unwrap();
    assert_eq!(fs.read_to_string("through-proxy.txt").unwrap(), "p");

    let requests = proxy.requests();
    assert!(
        requests.contains(&format!("CONNECT {NAME}:{port} HTTP/1.1")),
        "the exec WebSocket tunnels through CONNECT: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("POST http://{NAME}:{port}/v1/sprites "))),
        "HTTP requests go to the proxy: {requests:?}"
    );

    // Without the proxy the name does not resolve: the traffic above had no other way.
    let direct = Client::builder()
        .base_url(format!("http://{NAME}:{port}"))
        .token("test-token")
        .no_proxy()
        .build()
        .unwrap();
    let err = direct.get_sprite("via-proxy").unwrap_err();
    assert_eq!(err.io_kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn proxy_credentials_from_the_url_are_sent_and_a_refusal_is_permission_denied() {
    let local = Local::start();
    // "user:s3cret" in base64.
    let proxy = TestProxy::start(Some("Basic dXNlcjpzM2NyZXQ="));
    let name = local.sprite("auth").name().to_owned();
    let with = client_through(&local, &proxy.url.replace("http://", "http://user:s3cret@"));
    let out = with.sprite(&name).command("true").output().unwrap();
    assert!(out.status.success());
    assert_eq!(with.get_sprite(&name).unwrap().name, name);

    let without = client_through(&local, &proxy.url);
    let err = without.sprite(&name).command("true").output().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(matches!(Error::from_io(&err), Some(Error::Transport(_))));
    // A plain-HTTP request the proxy refuses is its 407, a permission error too.
    let err = without.get_sprite(&name).unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(407));
    assert_eq!(err.io_kind(), io::ErrorKind::PermissionDenied);
}
