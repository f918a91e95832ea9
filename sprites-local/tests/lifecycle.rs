//! End-to-end tests of the lifecycle (docs/PROTOCOL.md §14, §5.4, §5.5) and sprite URLs:
//! a real server with short lifecycle periods, real execs, real HTTP servers inside sprites
//! (`python3`), raw HTTP from the test and a real headless Chromium. Host runtime
//! in-process; the sandbox variants are skipped (reason printed) where the kernel cannot
//! create sandboxes. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sprites_local::{Runtime, Server, ServerHandle};

/// Host-runtime sprites share the host's port 8080: their URL tests take turns.
static HOST_PORT_8080: Mutex<()> = Mutex::new(());

const WARM: Duration = Duration::from_millis(1200);
const COLD: Duration = Duration::from_millis(2500);

fn server(runtime: Runtime, dir: &TempDir, warm: Duration, cold: Duration) -> Option<ServerHandle> {
    match Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(runtime)
        .warm_after(warm)
        .cold_after(cold)
        .watch_heartbeat(Duration::from_millis(400))
        .start()
    {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("SKIPPED ({runtime}): {e}");
            None
        }
    }
}

fn status(s: &ServerHandle, name: &str) -> String {
    http(s, "GET", &format!("/v1/sprites/{name}"), None).json()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn wait_status(s: &ServerHandle, name: &str, want: &str) {
    wait_until(&format!("{name} {want}"), || status(s, name) == want);
}

/// One request to sprite `name`'s URL, on its own connection (`Host: <name>.localhost`).
fn url_request(s: &ServerHandle, name: &str, path: &str, token: Option<&str>) -> Resp {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {name}.localhost:{}\r\n{auth}X-App: 7\r\nConnection: close\r\n\r\n",
        s.addr().port()
    );
    http_raw(s, raw.as_bytes())
}

fn set_public(s: &ServerHandle, name: &str, public: bool) {
    let auth = if public { "public" } else { "sprite" };
    let r = http(
        s,
        "PUT",
        &format!("/v1/sprites/{name}"),
        Some(&format!(r#"{{"url_settings":{{"auth":"{auth}"}}}}"#)),
    );
    assert_eq!(r.status, 200);
}

/// The NDJSON watch of `GET /v1/sprites`, read line by line from its chunked body.
struct Watch {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Watch {
    fn open(s: &ServerHandle, query: &str) -> Watch {
        let c = TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut w = c.try_clone().unwrap();
        write!(
            w,
            "GET /v1/sprites{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\
             Accept: application/x-ndjson\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(c);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/x-ndjson"),
            "{head}"
        );
        assert!(lower.contains("transfer-encoding: chunked"), "{head}");
        Watch { r, buf: Vec::new() }
    }

    /// The next line as JSON; None when the stream ended.
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            // A cut connection (server shutdown) ends the stream too.
            let mut size = String::new();
            if !matches!(self.r.read_line(&mut size), Ok(n) if n > 0) {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0u8; n + 2];
            self.r.read_exact(&mut chunk).ok()?;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The statuses of `name`'s events until `last` is seen (heartbeats are checked and
    /// skipped).
    fn statuses_until(&mut self, name: &str, last: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let ev = self.next().expect("the watch ended early");
            assert!(ev["org"]["running"].is_u64(), "{ev}");
            assert!(ev["timestamp"].is_string(), "{ev}");
            if ev["type"] == "heartbeat" {
                assert!(ev.get("name").is_none(), "{ev}");
                continue;
            }
            if ev["name"] != name {
                continue;
            }
            let st = ev["status"].as_str().unwrap().to_owned();
            seen.push(st.clone());
            if st == last {
                return seen;
            }
        }
        panic!("no {last:?} for {name} in time; saw {seen:?}");
    }
}

fn lifecycle_runs_warms_and_cools(runtime: Runtime) {
    let dir = TempDir::new("life");
    let Some(s) = server(runtime, &dir, WARM, COLD) else {
        return;
    };
    let before = Instant::now();
    create(&s, "box");
    // Running without any command, within 2 s of the create.
    wait_until("running", || status(&s, "box") == "running");
    assert!(
        before.elapsed() < Duration::from_secs(2),
        "{:?}",
        before.elapsed()
    );
    let info = http(&s, "GET", "/v1/sprites/box", None).json();
    assert!(info["last_running_at"].is_string(), "{info}");
    assert!(info["last_warming_at"].is_null(), "{info}");
    assert_eq!(
        info["url"],
        format!("http://box.localhost:{}", s.addr().port())
    );
    // Idle: warm after the (short) warm period, not before.
    let running_at = Instant::now();
    wait_status(&s, "box", "warm");
    assert!(running_at.elapsed() >= WARM - Duration::from_millis(300));
    let info = http(&s, "GET", "/v1/sprites/box", None).json();
    assert!(info["last_warming_at"].is_string(), "{info}");
    // A background process outlives its exec while the sprite is up...
    let pid = ok(s.addr(), "box", "sleep 1000 >/dev/null 2>&1 & echo $!");
    assert_eq!(status(&s, "box"), "running", "an exec is activity");
    wait_status(&s, "box", "warm");
    assert_eq!(
        ok(s.addr(), "box", &format!("kill -0 {pid} && echo alive")),
        "alive"
    );
    // ...and a cold sprite has none (the sandbox halts it; the host runtime has no way to
    // find a process that left its session, so only the sandbox asserts this).
    wait_status(&s, "box", "cold");
    let list = http(&s, "GET", "/v1/sprites", None).json();
    assert_eq!(list["cold"], 1, "{list}");
    // A look does not wake it; activity does.
    assert_eq!(status(&s, "box"), "cold");
    if runtime == Runtime::Sandbox {
        assert_eq!(ok(s.addr(), "box", "pgrep -x sleep || echo none"), "none");
    } else {
        ok(s.addr(), "box", "true");
    }
    assert_eq!(status(&s, "box"), "running");
    if runtime == Runtime::Host {
        ok(s.addr(), "box", &format!("kill {pid}"));
    }
    s.shutdown();
}

#[test]
fn host_new_sprite_runs_by_itself_then_warms_then_cools() {
    lifecycle_runs_warms_and_cools(Runtime::Host);
}

#[test]
fn sandbox_new_sprite_runs_by_itself_then_warms_then_cools() {
    lifecycle_runs_warms_and_cools(Runtime::Sandbox);
}

#[test]
fn watch_streams_create_running_warm_delete() {
    let dir = TempDir::new("watch");
    let Some(s) = server(Runtime::Host, &dir, WARM, Duration::from_secs(600)) else {
        return;
    };
    create(&s, "old");
    let mut w = Watch::open(&s, "?prefix=w");
    let mut all = Watch::open(&s, "");
    // The opening snapshot names every matching sprite once: `old` only in the unfiltered one.
    let first = all.next().unwrap();
    assert_eq!(first["name"], "old", "{first}");
    create(&s, "w1");
    assert_eq!(
        w.statuses_until("w1", "warm"),
        ["cold", "running", "warm"],
        "create (cold), boot, idle"
    );
    assert_eq!(http(&s, "DELETE", "/v1/sprites/w1", None).status, 204);
    assert_eq!(w.statuses_until("w1", "deleted"), ["deleted"]);
    // The other watcher saw the same, and never anything about `old` from the filtered one.
    assert_eq!(
        all.statuses_until("w1", "deleted"),
        ["cold", "running", "warm", "deleted"]
    );
    // Quiet: heartbeats only.
    let hb = w.next().unwrap();
    assert_eq!(hb["type"], "heartbeat", "{hb}");
    // Bad input and no token.
    let r = http_raw(
        &s,
        b"GET /v1/sprites?max_results=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\
          Accept: application/x-ndjson\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let r = http_raw(
        &s,
        b"GET /v1/sprites HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401);
    // Shutdown ends the streams cleanly (the terminating chunk).
    s.shutdown();
    let deadline = Instant::now() + TIMEOUT;
    while w.next().is_some() {
        assert!(Instant::now() < deadline);
    }
}

fn check_and_restart(runtime: Runtime) {
    let dir = TempDir::new("restart");
    let Some(s) = server(runtime, &dir, WARM, COLD) else {
        return;
    };
    create(&s, "box");
    wait_status(&s, "box", "running");
    let c = http(&s, "GET", "/v1/sprites/box/check", None);
    assert_eq!(c.status, 200);
    let c = c.json();
    assert_eq!(c["sprite_name"], "box");
    assert!(
        c["sprite_id"].is_string() && c["checked_at"].is_string(),
        "{c}"
    );
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["reason"].is_null() && c["elapsed"].is_number(), "{c}");

    ok(s.addr(), "box", "echo kept > f");
    let mut ws = connect(&s, "box", &q(&["sleep", "1000"]));
    session_id(&mut ws);
    let r = http(&s, "POST", "/v1/sprites/box/restart", None);
    assert_eq!(r.status, 200);
    let r = r.json();
    assert_eq!(r["sprite_name"], "box");
    assert!(
        r["machine_id"].is_string() && r["message"].is_string(),
        "{r}"
    );
    // The running command ended (killed), files stayed, the sprite is up again.
    assert_eq!(exit_code(&mut ws), 137);
    assert_eq!(ok(s.addr(), "box", "cat f"), "kept");
    let list = http(&s, "GET", "/v1/sprites/box/exec", None).json();
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(0), "{list}");
    assert_eq!(status(&s, "box"), "running");

    // A cold sprite: check says so and does not wake it.
    wait_status(&s, "box", "cold");
    let c = http(&s, "GET", "/v1/sprites/box/check", None).json();
    assert_eq!(c["status"], "cold", "{c}");
    assert_eq!(status(&s, "box"), "cold");
    // Unknown sprites and wrong methods.
    assert_eq!(http(&s, "GET", "/v1/sprites/nope/check", None).status, 404);
    assert_eq!(
        http(&s, "POST", "/v1/sprites/nope/restart", None).status,
        404
    );
    assert_eq!(http(&s, "GET", "/v1/sprites/box/restart", None).status, 405);
    s.shutdown();
}

#[test]
fn host_check_and_restart() {
    check_and_restart(Runtime::Host);
}

#[test]
fn sandbox_check_and_restart() {
    check_and_restart(Runtime::Sandbox);
}

/// A server on port 8080 that answers `<path> auth=<Authorization> x=<X-App>`, and echoes
/// bytes back after a `101` when asked to upgrade.
const ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8080))
s.listen(16)
while True:
    c, _ = s.accept()
    f = c.makefile("rb")
    line = f.readline().decode()
    h = {}
    while True:
        l = f.readline().decode()
        if l in ("\r\n", "\n", ""):
            break
        k, v = l.split(":", 1)
        h[k.strip().lower()] = v.strip()
    if "upgrade" in h:
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        while True:
            b = f.read1(4096)
            if not b:
                break
            c.sendall(b)
    else:
        body = ("%s auth=%s x=%s" % (line.split()[1], h.get("authorization", "none"), h.get("x-app", "none"))).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    f.close()
    c.close()
"#;

fn url_reaches_port_8080(runtime: Runtime) {
    let _turn = (runtime == Runtime::Host)
        .then(|| HOST_PORT_8080.lock().unwrap_or_else(|e| e.into_inner()));
    let dir = TempDir::new("url");
    let Some(s) = server(runtime, &dir, WARM, Duration::from_secs(600)) else {
        return;
    };
    create(&s, "web");
    wait_status(&s, "web", "running");
    // Nothing listens yet: 502, said so.
    let r = url_request(&s, "web", "/", Some("secret"));
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"], "sprite_unreachable");

    // `python3 -m http.server 8080`, serving a page the test wrote.
    let mut server_ws = connect(
        &s,
        "web",
        &q(&[
            "sh",
            "-c",
            "d=$(mktemp -d) && cd $d && echo hello-from-web > index.html && exec python3 -m http.server 8080",
        ]),
    );
    session_id(&mut server_ws);
    wait_until("http.server listening", || {
        url_request(&s, "web", "/index.html", Some("secret")).status == 200
    });
    let r = url_request(&s, "web", "/index.html", Some("secret"));
    assert_eq!(r.body, b"hello-from-web\n");
    // Without the token (or with a wrong one): refused, by the server, not the sprite.
    let r = url_request(&s, "web", "/index.html", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        url_request(&s, "web", "/index.html", Some("wrong")).status,
        401
    );
    // Public: no token needed.
    set_public(&s, "web", true);
    let r = url_request(&s, "web", "/index.html", None);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello-from-web\n"[..])
    );
    // A public URL's Host never reaches the API: the path goes to the sprite's server.
    let r = url_request(&s, "web", "/v1/sprites", None);
    assert_eq!(r.status, 404, "python's own 404");
    assert!(!String::from_utf8_lossy(&r.body).contains("\"sprites\""));
    // Back to private.
    set_public(&s, "web", false);
    assert_eq!(url_request(&s, "web", "/index.html", None).status, 401);
    // Unknown sprites: 404 with the token, 401 without.
    let r = url_request(&s, "nope", "/", Some("secret"));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, "sprite_not_found".into())
    );
    assert_eq!(url_request(&s, "nope", "/", None).status, 401);
    drop(server_ws);
    s.shutdown();
}

#[test]
fn host_url_reaches_port_8080_with_the_token_or_when_public() {
    url_reaches_port_8080(Runtime::Host);
}

#[test]
fn sandbox_url_reaches_port_8080_with_the_token_or_when_public() {
    url_reaches_port_8080(Runtime::Sandbox);
}

fn url_passes_upgrades_and_keeps_the_token(runtime: Runtime) {
    let _turn = (runtime == Runtime::Host)
        .then(|| HOST_PORT_8080.lock().unwrap_or_else(|e| e.into_inner()));
    let dir = TempDir::new("urlws");
    let Some(s) = server(runtime, &dir, WARM, COLD) else {
        return;
    };
    create(&s, "echo");
    let mut echo_ws = connect(&s, "echo", &q(&["python3", "-c", ECHO]));
    session_id(&mut echo_ws);
    wait_until("echo listening", || {
        url_request(&s, "echo", "/", Some("secret")).status == 200
    });
    // The API token is not passed on; the request line and other headers are.
    let r = url_request(&s, "echo", "/p?q=1", Some("secret"));
    assert_eq!(String::from_utf8_lossy(&r.body), "/p?q=1 auth=none x=7");
    // An upgrade passes through, then bytes flow both ways.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        c,
        "GET /ws HTTP/1.1\r\nHost: echo.localhost:{}\r\nAuthorization: Bearer secret\r\n\
         Connection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        s.addr().port()
    )
    .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    for msg in ["ping\n", "second message\n"] {
        c.write_all(msg.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
    }
    // An open connection keeps the sprite running past the warm period.
    std::thread::sleep(WARM + Duration::from_millis(300));
    assert_eq!(status(&s, "echo"), "running");
    drop((c, r, echo_ws));
    s.shutdown();
}

#[test]
fn host_url_passes_upgrades_and_keeps_the_token() {
    url_passes_upgrades_and_keeps_the_token(Runtime::Host);
}

#[test]
fn sandbox_url_passes_upgrades_and_keeps_the_token() {
    url_passes_upgrades_and_keeps_the_token(Runtime::Sandbox);
}

/// The Chromium binary, if one is installed.
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

#[test]
fn chromium_loads_a_page_from_a_sprite_url() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed");
        return;
    };
    // The sandbox isolates the sprite's port 8080; without it, take the host's in turn.
    let dir = TempDir::new("chromium");
    let sandboxed = server(Runtime::Sandbox, &dir, WARM, Duration::from_secs(600));
    let _turn = sandboxed
        .is_none()
        .then(|| HOST_PORT_8080.lock().unwrap_or_else(|e| e.into_inner()));
    let Some(s) = sandboxed.or_else(|| server(Runtime::Host, &dir, WARM, Duration::from_secs(600)))
    else {
        return;
    };
    create(&s, "page");
    set_public(&s, "page", true);
    let page = "<!doctype html><html><body><p id=x>from-sprite</p>\
                <script>document.getElementById('x').textContent += '-and-its-script'</script>\
                </body></html>";
    let mut server_ws = connect(
        &s,
        "page",
        &q(&[
            "sh",
            "-c",
            &format!(
                "d=$(mktemp -d) && cd $d && printf '%s' \"{page}\" > index.html && exec python3 -m http.server 8080"
            ),
        ]),
    );
    session_id(&mut server_ws);
    wait_until("http.server listening", || {
        url_request(&s, "page", "/", None).status == 200
    });
    let profile = TempDir::new("chromium-profile");
    let url = format!("http://page.localhost:{}/", s.addr().port());
    let mut child = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.0.display()),
            "--dump-dom",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = reader.join().unwrap();
    // The page came from the sprite, and the browser ran its script.
    assert!(dom.contains("from-sprite-and-its-script"), "{dom}");
    drop(server_ws);
    s.shutdown();
}

/// A free TCP port on the host's loopback (for a host-runtime service).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn service_is_the_url_target_and_comes_back(runtime: Runtime) {
    let dir = TempDir::new("svcurl");
    let Some(s) = server(runtime, &dir, WARM, COLD) else {
        return;
    };
    create(&s, "svc");
    wait_status(&s, "svc", "running");
    let port = if runtime == Runtime::Host {
        free_port()
    } else {
        3000
    };
    // Serves a page with a random word chosen at each start.
    let script = format!(
        "d=$(mktemp -d) && cd $d && head -c8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > index.html \
         && exec python3 -m http.server {port} --bind 127.0.0.1"
    );
    let body = serde_json::json!({"cmd": "sh", "args": ["-c", script], "http_port": port});
    let r = http(
        &s,
        "PUT",
        "/v1/sprites/svc/services/web?duration=0s",
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let page = || {
        let mut last = None;
        wait_until("the service answers at the URL", || {
            let r = url_request(&s, "svc", "/index.html", Some("secret"));
            let ok = r.status == 200;
            last = Some(String::from_utf8_lossy(&r.body).into_owned());
            ok
        });
        last.unwrap()
    };
    let first = page();
    assert_eq!(first.len(), 16, "{first}");
    // Cold: the service was stopped with everything else; a URL request wakes the sprite
    // and the service comes back (a new start: a new word).
    wait_status(&s, "svc", "cold");
    let second = page();
    assert_ne!(first, second);
    assert_eq!(status(&s, "svc"), "running");
    // Restart: the service starts again too.
    assert_eq!(
        http(&s, "POST", "/v1/sprites/svc/restart", None).status,
        200
    );
    let third = page();
    assert_ne!(second, third);
    s.shutdown();
}

#[test]
fn host_a_service_is_the_url_target_and_comes_back_after_cold_and_restart() {
    service_is_the_url_target_and_comes_back(Runtime::Host);
}

#[test]
fn sandbox_a_service_is_the_url_target_and_comes_back_after_cold_and_restart() {
    service_is_the_url_target_and_comes_back(Runtime::Sandbox);
}
