//! End to end over TLS: the real client speaks HTTPS and WSS to a TLS front
//! (`tests/common/tls.rs`, native-tls with the certificates of `tests/data/tls/`), which relays
//! the plaintext to a real `sprites-local`. They run with either TLS backend of the client:
//! `cargo test --test tls` (native-tls) and
//! `cargo test --no-default-features --features rustls --test tls`.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::tls::{Cert, TlsFront, ca_pem};
use common::{Local, pseudo_random};
use sprites::{Client, Error, Stdio};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a refused certificate, a refused name or a cut may take at most: each is a handful of
/// round trips on loopback, far below every timeout of the client.
const PROMPT: Duration = Duration::from_secs(10);

/// A real server behind a TLS front (dropped in this order: the front, then the server).
struct Tls {
    front: TlsFront,
    /// Kept alive for the front to relay to.
    _local: Local,
}

impl Tls {
    fn start(cert: Cert) -> Tls {
        let local = Local::start();
        let backend = local.server.as_ref().expect("server running").addr();
        let front = TlsFront::start(cert, backend);
        Tls {
            front,
            _local: local,
        }
    }

    /// A client for `url` (one of the front's) that trusts the test CA.
    fn client(&self, url: &str) -> Client {
        Client::builder()
            .base_url(url)
            .token("test-token")
            .add_root_certificate(ca_pem())
            .build()
            .expect("client")
    }
}

/// A filesystem rooted in a fresh directory of the sprite's home (over the command and file
/// API both, so over WSS and HTTPS).
fn scratch(sprite: &sprites::Sprite) -> sprites::fs::Filesystem {
    let home = sprite
        .command("sh")
        .args(["-c", "printf %s \"$HOME\""])
        .output()
        .unwrap()
        .stdout;
    let home = String::from_utf8(home).unwrap();
    sprite.fs_at(&home).create_dir("tls-work").unwrap();
    sprite.fs_at(format!("{home}/tls-work"))
}

/// The error chain in one line, for assertions on what the TLS library said.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(" <- ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// The `TransportError` of a failed TLS handshake: `InvalidData`, the TLS library's error in
/// its source chain. Returns the chain's text for further checks.
fn assert_tls_refusal(err: &Error) -> String {
    let Error::Transport(transport) = err else {
        panic!("expected Error::Transport, got {err:?}");
    };
    assert_eq!(transport.kind(), io::ErrorKind::InvalidData, "{err:?}");
    assert_eq!(err.io_kind(), io::ErrorKind::InvalidData, "{err:?}");
    chain(err).to_lowercase()
}

/// A refusal because no trusted root signed the server's certificate, in the words of the
/// backend in use.
fn assert_unknown_issuer(err: &Error) {
    let text = assert_tls_refusal(err);
    if cfg!(feature = "rustls") {
        // "invalid peer certificate: UnknownIssuer"
        assert!(text.contains("unknownissuer"), "{text}");
    } else {
        // "certificate verify failed ... (self-signed certificate)" or "(unable to get local
        // issuer certificate)"
        assert!(text.contains("certificate verify failed"), "{text}");
        assert!(
            text.contains("issuer") || text.contains("self-signed"),
            "{text}"
        );
    }
}

#[test]
fn management_over_https_with_the_ca_added() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    assert!(client.base_url().starts_with("https://localhost:"));

    let (sprite, info) = client
        .create_sprite_with("over-tls", &sprites::CreateOptions::new().label("tls"))
        .unwrap();
    assert_eq!(info.name, "over-tls");
    assert_eq!(info.labels, ["tls"]);
    let names: Vec<String> = client.sprites().map(|info| info.unwrap().name).collect();
    assert!(names.contains(&"over-tls".to_owned()), "{names:?}");
    assert_eq!(client.get_sprite("over-tls").unwrap().labels, ["tls"]);
    sprite.delete().unwrap();
    let err = client.get_sprite("over-tls").unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_not_found()), "{err}");

    assert!(
        tls.front.handshakes() >= 1,
        "the requests went through the TLS front"
    );
    assert_eq!(tls.front.refused(), Vec::<String>::new());
}

#[test]
fn an_ip_address_url_is_verified_against_the_certificates_ip_entry() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.ip_url());
    let sprite = client.create_sprite("by-ip").unwrap();
    let out = sprite.command("echo").arg("by ip").output().unwrap();
    assert_eq!(out.stdout, b"by ip\n");
    assert_eq!(client.get_sprite("by-ip").unwrap().name, "by-ip");
}

#[test]
fn exec_over_wss_reports_stdout_stderr_and_exit_status() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("wss").unwrap();
    let before = tls.front.handshakes();
    let out = sprite
        .command("sh")
        .args(["-c", "echo to-stdout; echo to-stderr >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"to-stdout\n");
    assert_eq!(out.stderr, b"to-stderr\n");
    assert_eq!(out.status.code(), Some(7));
    assert!(
        tls.front.handshakes() > before,
        "the command connection was a TLS connection of its own"
    );
}

/// Pushes `input` into `child`'s stdin from a second thread while this one reads its stdout:
/// both directions of one TLS connection busy at once.
fn duplex(mut child: sprites::Child, input: Vec<u8>) -> (Vec<u8>, sprites::ExitStatus) {
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut stdout = child.stdout.take().expect("stdout piped");
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            stdin.write_all(&input)?;
            // Dropping stdin is the EOF.
            drop(stdin);
            io::Result::Ok(())
        });
        let mut received = Vec::new();
        stdout.read_to_end(&mut received).unwrap();
        writer.join().expect("writer thread").unwrap();
        (received, child.wait().unwrap())
    })
}

#[test]
fn stdin_streams_megabytes_through_cat_over_wss() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("cat").unwrap();
    let data = pseudo_random(8 << 20, 0x7155);
    let child = sprite
        .command("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (received, status) = duplex(child, data.clone());
    assert!(status.success());
    assert_eq!(received.len(), data.len());
    assert!(received == data, "8 MiB came back different");
    // On loopback this is well under a second; a reader and a writer stalling each other on
    // the shared TLS session would show as the keepalive limit (45 s) or worse.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn heavy_output_while_stdin_is_still_streaming_does_not_deadlock() {
    // The command writes 8 MiB of its own while it reads 8 MiB of ours, and only reports what
    // it read at the end: the client's reader and writer threads must both make progress on
    // the one TLS session the whole time.
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("duplex").unwrap();
    let child = sprite
        .command("sh")
        .args(["-c", "head -c 8388608 /dev/zero & wc -c; wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (received, status) = duplex(child, pseudo_random(8 << 20, 0xd0b1e));
    assert!(status.success());
    let zeros = received.iter().filter(|&&b| b == 0).count();
    let report: Vec<u8> = received.iter().copied().filter(|&b| b != 0).collect();
    assert_eq!(zeros, 8 << 20);
    assert_eq!(String::from_utf8_lossy(&report).trim(), "8388608");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn filesystem_reads_and_writes_over_https() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("files").unwrap();
    let fs = scratch(&sprite);

    fs.write("small.txt", "over https").unwrap();
    assert_eq!(fs.read_to_string("small.txt").unwrap(), "over https");

    let big = pseudo_random(6 << 20, 0xf11e);
    fs.write("big.bin", &big).unwrap();
    assert_eq!(fs.metadata("big.bin").unwrap().len(), big.len() as u64);
    assert!(
        fs.read("big.bin").unwrap() == big,
        "6 MiB came back different"
    );

    // Streamed both ways: a chunked upload, then a download read piecewise.
    let mut file = fs.create("streamed.bin").unwrap();
    for chunk in big.chunks(300_000) {
        file.write_all(chunk).unwrap();
    }
    file.close().unwrap();
    let mut back = Vec::new();
    fs.open("streamed.bin")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "the streamed file came back different");
}

#[test]
fn an_untrusted_certificate_is_a_transport_error_for_https_and_wss() {
    // The front presents a self-signed certificate for the right names; the client trusts the
    // test CA, which did not sign it.
    let tls = Tls::start(Cert::Untrusted);
    let client = tls.client(&tls.front.url());

    let started = Instant::now();
    assert_unknown_issuer(&client.get_sprite("any").unwrap_err());
    let err = client
        .sprite("any")
        .command("true")
        .output()
        .expect_err("the command connection refuses the certificate too");
    assert_unknown_issuer(Error::from_io(&err).expect("a sprites error"));
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    assert_eq!(tls.front.handshakes(), 0, "no handshake completed");
    // The server saw the client abort both handshakes.
    let refused = tls.front.stop();
    assert_eq!(refused.len(), 2, "{refused:?}");
}

#[test]
fn without_the_ca_the_test_certificate_is_untrusted() {
    // The default roots (the platform's, or Mozilla's with rustls) do not hold the test CA.
    let tls = Tls::start(Cert::Server);
    let client = Client::builder()
        .base_url(tls.front.url())
        .token("test-token")
        .build()
        .unwrap();
    assert_unknown_issuer(&client.get_sprite("any").unwrap_err());
    let err = client.sprite("any").command("true").status().unwrap_err();
    assert_unknown_issuer(Error::from_io(&err).expect("a sprites error"));
    assert_eq!(tls.front.handshakes(), 0);
}

#[test]
fn a_certificate_for_another_name_is_a_transport_error() {
    // Signed by the trusted CA, but for other.example only.
    let tls = Tls::start(Cert::Other);
    for url in [tls.front.url(), tls.front.ip_url()] {
        let client = tls.client(&url);
        let started = Instant::now();
        let err = client.get_sprite("any").unwrap_err();
        let http = assert_tls_refusal(&err);
        let err = client.sprite("any").command("true").output().unwrap_err();
        let wss = assert_tls_refusal(Error::from_io(&err).expect("a sprites error"));
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
        for text in [http, wss] {
            // native-tls (OpenSSL): "certificate verify failed ... hostname mismatch" or "IP
            // address mismatch"; rustls: "certificate not valid for name ...".
            assert!(
                text.contains("mismatch") || text.contains("not valid for name"),
                "{url}: {text}"
            );
        }
    }
    assert_eq!(tls.front.handshakes(), 0);
}

#[test]
fn https_to_a_plain_http_server_is_a_transport_error() {
    let local = Local::start();
    let url = local.url().replace("http://", "https://");
    let client = Client::builder()
        .base_url(url)
        .token("test-token")
        .add_root_certificate(ca_pem())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.get_sprite("any").unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let err = client.sprite("any").command("true").output().unwrap_err();
    assert!(
        matches!(Error::from_io(&err), Some(Error::Transport(_))),
        "{err:?}"
    );
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
}

#[test]
fn a_tls_connection_cut_mid_command_is_an_error_not_a_hang() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("cut").unwrap();
    let mut child = sprite
        .command("sh")
        .args(["-c", "echo started; exec sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n", "the command is running over TLS");

    let started = Instant::now();
    assert!(tls.front.cut() >= 1, "a connection was open to cut");
    let err = child
        .wait()
        .expect_err("a cut connection is no exit status");
    assert!(
        started.elapsed() < PROMPT,
        "took {:?}: the cut was noticed by a timeout, not by the connection's end",
        started.elapsed()
    );
    let typed = Error::from_io(&err).expect("a sprites error");
    assert!(
        matches!(typed, Error::ConnectionClosed { code: None, .. }),
        "{typed:?}"
    );
    // The pipe reports the same end rather than a clean EOF.
    let rest = stdout.read_to_end(&mut Vec::new());
    assert!(rest.is_err(), "{rest:?}");
}

#[test]
fn a_tls_download_cut_mid_body_is_an_error_not_a_hang() {
    let tls = Tls::start(Cert::Server);
    let client = tls.client(&tls.front.url());
    let sprite = client.create_sprite("cut-body").unwrap();
    let fs = scratch(&sprite);
    // Far more than the socket buffers and the front hold: the cut lands mid-body.
    fs.write("big.bin", pseudo_random(16 << 20, 0xc07)).unwrap();

    let mut file = fs.open("big.bin").unwrap();
    let mut first = vec![0; 64 << 10];
    file.read_exact(&mut first).unwrap();
    let started = Instant::now();
    assert!(tls.front.cut() >= 1, "the download's connection was open");
    let err = file
        .read_to_end(&mut Vec::new())
        .expect_err("a cut body is not a clean end of file");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    // The connection ended before the length the server announced: as std's `read_exact`
    // would say it. (A file's body reports ureq's error as it is, over TLS or not.)
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
}

#[test]
fn commands_through_a_connect_proxy_verify_the_server_with_the_added_ca() {
    let tls = Tls::start(Cert::Server);
    let direct = tls.client(&tls.front.url());
    direct.create_sprite("tunnelled").unwrap();
    let proxy = ConnectProxy::start();
    let client = Client::builder()
        .base_url(tls.front.url())
        .token("test-token")
        .proxy(&proxy.url)
        .add_root_certificate(ca_pem())
        .build()
        .unwrap();
    // The sprite's control connection (which carries the command) and an HTTP connection,
    // both opened up front through the proxy.
    client.sprite("tunnelled").connect().unwrap();
    assert_eq!(tls._local.server.as_ref().unwrap().control_upgrades(), 1);
    let out = client
        .sprite("tunnelled")
        .command("echo")
        .arg("tunnelled")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"tunnelled\n");
    // HTTP requests go through a tunnel too (ureq 2 writes their targets in absolute form,
    // `GET https://localhost:PORT/v1/...`, which a server must accept: RFC 9112 §3.2.2).
    let info = client.sprite("tunnelled").info().unwrap();
    assert_eq!(info.name, "tunnelled");
    drop(client); // and with it the request's pooled connection, so its tunnel ends

    let port = tls.front.addr().port();
    let tunnels = proxy.stop();
    // The control connection and at least one HTTP request (ureq 2 opens a new tunnel for
    // each HTTPS request through a proxy rather than pooling it).
    assert!(tunnels.len() >= 2, "{tunnels:?}");
    assert!(
        tunnels
            .iter()
            .all(|t| *t == format!("CONNECT localhost:{port} HTTP/1.1")),
        "the command and the request went through the proxy's tunnels: {tunnels:?}"
    );
}

#[test]
fn through_a_connect_proxy_an_untrusted_certificate_is_refused_for_https_and_wss() {
    let tls = Tls::start(Cert::Untrusted);
    let proxy = ConnectProxy::start();
    let client = Client::builder()
        .base_url(tls.front.url())
        .token("test-token")
        .proxy(&proxy.url)
        .add_root_certificate(ca_pem())
        .build()
        .unwrap();
    let started = Instant::now();
    assert_unknown_issuer(&client.get_sprite("any").unwrap_err());
    let err = client.sprite("any").command("true").output().unwrap_err();
    assert_unknown_issuer(Error::from_io(&err).expect("a sprites error"));
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    let port = tls.front.addr().port();
    let tunnel = format!("CONNECT localhost:{port} HTTP/1.1");
    assert_eq!(
        proxy.stop(),
        [tunnel.clone(), tunnel],
        "both went through the proxy's tunnel"
    );
    assert_eq!(
        tls.front.stop().len(),
        2,
        "the server saw both handshakes fail"
    );
}

/// A CONNECT-only HTTP proxy on loopback: tunnels `host:port` to `127.0.0.1:port` and records
/// each request line. Each tunnel is two threads that end when either side closes; `stop`
/// ends the accept loop and waits for them.
struct ConnectProxy {
    url: String,
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
    acceptor: std::thread::JoinHandle<Vec<std::thread::JoinHandle<()>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (record, stop) = (log.clone(), stopping.clone());
        let acceptor = std::thread::spawn(move || {
            let mut tunnels = Vec::new();
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let record = record.clone();
                tunnels.push(std::thread::spawn(move || {
                    let _ = tunnel(client, &record);
                }));
            }
            tunnels
        });
        ConnectProxy {
            url: format!("http://{addr}"),
            addr,
            log,
            stopping,
            acceptor,
        }
    }

    /// Stops accepting, waits for the open tunnels to end, and returns the request lines.
    fn stop(self) -> Vec<String> {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for tunnel in self.acceptor.join().expect("proxy accept loop") {
            let _ = tunnel.join();
        }
        self.log.lock().unwrap().clone()
    }
}

fn tunnel(client: TcpStream, log: &Mutex<Vec<String>>) -> io::Result<()> {
    client.set_read_timeout(Some(PROMPT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    let request_line = request_line.trim_end().to_owned();
    log.lock().unwrap().push(request_line.clone());
    let port = request_line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| io::Error::other(format!("not a CONNECT: {request_line}")))?;
    let upstream = TcpStream::connect(("127.0.0.1", port))?;
    let mut client_out = client.try_clone()?;
    client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // The tunnel carries TLS, which may sit idle between requests.
    client.set_read_timeout(None)?;
    let (mut upstream_in, mut upstream_out) = (upstream.try_clone()?, upstream);
    let to_upstream = std::thread::spawn(move || {
        // What the reader buffered past the head goes first (nothing, for a CONNECT client).
        let _ = io::copy(&mut reader, &mut upstream_in);
        let _ = upstream_in.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut upstream_out, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = to_upstream.join();
    Ok(())
}

/// With native-tls, OpenSSL reads `SSL_CERT_FILE` (once per process, when the first TLS
/// connector is made), so each case runs in a child process of this test binary with its own
/// environment. rustls trusts its built-in roots (webpki-roots) and ignores the variable: the
/// module is for native-tls only.
#[cfg(all(feature = "native-tls", not(feature = "rustls")))]
mod ssl_cert_file {
    use super::*;
    use std::process::Command;

    /// Set in the child: what it should find (`trusted` or `untrusted`).
    const EXPECT: &str = "SPRITES_TEST_TLS_EXPECT";

    #[test]
    #[ignore = "the child process of `ssl_cert_file_is_honoured_for_https_and_wss`"]
    fn child_entry() {
        let Ok(expect) = std::env::var(EXPECT) else {
            return;
        };
        let tls = Tls::start(Cert::Server);
        // No add_root_certificate: only the environment can make the test CA trusted.
        let client = Client::builder()
            .base_url(tls.front.url())
            .token("test-token")
            .build()
            .unwrap();
        if expect == "trusted" {
            let sprite = client.create_sprite("from-env").unwrap();
            let out = sprite.command("echo").arg("env ca").output().unwrap();
            assert_eq!(out.stdout, b"env ca\n");
        } else {
            assert_unknown_issuer(&client.get_sprite("any").unwrap_err());
            let err = client.sprite("any").command("true").output().unwrap_err();
            assert_unknown_issuer(Error::from_io(&err).expect("a sprites error"));
        }
        println!("CHILD_OK {expect}");
    }

    /// Runs `child_entry` with `SSL_CERT_FILE` set to `ca_file`, or unset; bounded by the
    /// child's own watchdog (`Local::start` arms one).
    fn run_child(ca_file: Option<&std::path::Path>, expect: &str) {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "ssl_cert_file::child_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EXPECT, expect)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(file) = ca_file {
            command.env("SSL_CERT_FILE", file);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("CHILD_OK {expect}")),
            "{expect}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn ssl_cert_file_is_honoured_for_https_and_wss() {
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem");
        run_child(Some(&ca), "trusted");
        // The control: the same child without the variable refuses the certificate.
        run_child(None, "untrusted");
    }
}
