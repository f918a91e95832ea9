//! End-to-end tests of the policy routes (PROTOCOL.md §13) on a real server over real
//! sockets: the round trip and its validation on the host runtime, and in the sandbox the
//! enforcement of the network policy by the sprite's resolver (against a DNS server this
//! test runs on loopback), the firewall, `/.sprite/policy/network.json`, and the
//! privileges and resources policies on new processes.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sprites_local::{Runtime, Server, ServerHandle};

const ENFORCEMENT: &str = "Sprites-Local-Enforcement";

fn host_server(dir: &TempDir) -> ServerHandle {
    Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .start()
        .unwrap()
}

fn body(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn policies_round_trip() {
    let dir = TempDir::new("policy-rt");
    let s = host_server(&dir);
    create(&s, "pol");
    let base = "/v1/sprites/pol/policy";

    let r = http(&s, "GET", &format!("{base}/network"), None);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.json(), serde_json::json!({"rules": []}));
    assert!(
        r.header(ENFORCEMENT).unwrap().starts_with("not enforced"),
        "{:?}",
        r.header(ENFORCEMENT)
    );

    let rules = r#"{"rules":[{"include":"defaults"},{"domain":"Example.com.","action":"allow"},
        {"domain":"*.example.com","action":"allow"},{"domain":"blocked.com","action":"deny"}]}"#;
    let r = http(&s, "POST", &format!("{base}/network"), Some(rules));
    assert_eq!(r.status, 204, "{}", body(&r));
    let r = http(&s, "GET", &format!("{base}/network"), None);
    assert_eq!(
        r.json(),
        serde_json::json!({"rules":[{"include":"defaults"},
            {"domain":"example.com","action":"allow"},
            {"domain":"*.example.com","action":"allow"},
            {"domain":"blocked.com","action":"deny"}]}),
        "stored normalised (lowercase, no trailing dot)"
    );
    // Persisted: a new server on the same data dir reports it.
    s.shutdown();
    let s = host_server(&dir);
    let r = http(&s, "GET", &format!("{base}/network"), None);
    assert_eq!(r.json()["rules"][3]["domain"], "blocked.com");

    // Privileges: JS 0.1.0 sends camelCase; snake_case is accepted too.
    let r = http(&s, "GET", &format!("{base}/privileges"), None);
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"profile": ""}))
    );
    let p = r#"{"profile":"standard","devices":["/dev/fuse"],"noNewPrivileges":true}"#;
    assert_eq!(
        http(&s, "POST", &format!("{base}/privileges"), Some(p)).status,
        204
    );
    let r = http(&s, "GET", &format!("{base}/privileges"), None);
    assert_eq!(
        r.json(),
        serde_json::from_str::<serde_json::Value>(p).unwrap()
    );
    let r = http(&s, "DELETE", &format!("{base}/privileges"), None);
    assert_eq!(r.status, 204);
    let r = http(&s, "GET", &format!("{base}/privileges"), None);
    assert_eq!(r.json(), serde_json::json!({"profile": ""}));

    // Resources: `limit_mb` on the wire.
    let r = http(&s, "GET", &format!("{base}/resources"), None);
    assert_eq!((r.status, r.json()), (200, serde_json::json!({})));
    let m = r#"{"memory":{"limit_mb":4096,"autoscale":true}}"#;
    assert_eq!(
        http(&s, "POST", &format!("{base}/resources"), Some(m)).status,
        204
    );
    let r = http(&s, "GET", &format!("{base}/resources"), None);
    assert_eq!(
        r.json(),
        serde_json::json!({"memory":{"limit_mb":4096,"autoscale":true}})
    );
    assert_eq!(
        http(&s, "DELETE", &format!("{base}/resources"), None).status,
        204
    );
    let r = http(&s, "GET", &format!("{base}/resources"), None);
    assert_eq!(r.json(), serde_json::json!({}));

    // The network policy is back to "no rules" when emptied.
    let r = http(
        &s,
        "POST",
        &format!("{base}/network"),
        Some(r#"{"rules":[]}"#),
    );
    assert_eq!(r.status, 204);
    let r = http(&s, "GET", &format!("{base}/network"), None);
    assert_eq!(r.json(), serde_json::json!({"rules": []}));
}

#[test]
fn bad_policies_are_400_with_a_message_and_unknowns_404() {
    let dir = TempDir::new("policy-bad");
    let s = host_server(&dir);
    create(&s, "pol");
    let net = "/v1/sprites/pol/policy/network";
    for (doc, want) in [
        (r#"{"rules":[{"domain":"a.com"}]}"#, "either"),
        (
            r#"{"rules":[{"include":"defaults","domain":"a.com","action":"allow"}]}"#,
            "either",
        ),
        (
            r#"{"rules":[{"domain":"a.com","action":"block"}]}"#,
            "action",
        ),
        (
            r#"{"rules":[{"domain":"a.*.com","action":"deny"}]}"#,
            "malformed wildcard",
        ),
        (
            r#"{"rules":[{"domain":"*example.com","action":"deny"}]}"#,
            "malformed wildcard",
        ),
        (r#"{"rules":[{"include":"everything"}]}"#, "unknown include"),
        (r#"{"rules":"all"}"#, "array"),
        (r#"{}"#, "rules"),
        ("not json", "JSON"),
    ] {
        let r = http(&s, "POST", net, Some(doc));
        assert_eq!(r.status, 400, "{doc}: {}", body(&r));
        let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(want), "{doc}: {msg}");
    }
    // Nothing was stored by the failed requests.
    assert_eq!(
        http(&s, "GET", net, None).json(),
        serde_json::json!({"rules": []})
    );
    for (kind, doc) in [
        ("privileges", r#"{"profile":"root"}"#),
        ("privileges", r#"{"devices":["/etc/shadow"]}"#),
        ("privileges", r#"{"noNewPrivileges":"yes"}"#),
        ("resources", r#"{"memory":{"limit_mb":0}}"#),
        ("resources", r#"{"memory":{"limit_mb":"4096"}}"#),
        ("resources", r#"{"memory":{"autoscale":"on"}}"#),
    ] {
        let r = http(
            &s,
            "POST",
            &format!("/v1/sprites/pol/policy/{kind}"),
            Some(doc),
        );
        assert_eq!(r.status, 400, "{kind} {doc}: {}", body(&r));
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }
    let r = http(&s, "GET", "/v1/sprites/nope/policy/network", None);
    assert_eq!(r.status, 404);
    let r = http(
        &s,
        "POST",
        "/v1/sprites/nope/policy/network",
        Some(r#"{"rules":[]}"#),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        http(&s, "GET", "/v1/sprites/pol/policy/firewall", None).status,
        404
    );
    let r = http(&s, "DELETE", net, None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
}

/// A DNS server on loopback for the test: answers A queries for `allowed.example` with
/// 192.0.2.10, anything else with an empty NOERROR, and counts the queries it saw for
/// `denied.example` (the sprite's resolver must never forward those).
struct TestDns {
    addr: SocketAddr,
    denied_seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// What `gateway.example` resolves to (set by the test once it knows).
    gateway: Arc<std::sync::Mutex<Ipv4Addr>>,
}

impl TestDns {
    fn start() -> TestDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let denied_seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (denied_seen.clone(), stop.clone());
        let gateway = Arc::new(std::sync::Mutex::new(Ipv4Addr::UNSPECIFIED));
        let gw = gateway.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            // Bounded: the test stops it, and it gives up after 2 minutes anyway.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let gw = *gw.lock().unwrap();
                if let Some((reply, name)) = dns_reply(&buf[..n], gw) {
                    if name == "denied.example" {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        TestDns {
            addr,
            denied_seen,
            stop,
            gateway,
        }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The test server's answer to a query, and the name asked (uncompressed names only):
/// `allowed.example` is 192.0.2.10, `gateway.example` is `gw`.
fn dns_reply(q: &[u8], gw: Ipv4Addr) -> Option<(Vec<u8>, String)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(pos)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(pos + 1..pos + 1 + len)?).to_lowercase());
        pos += 1 + len;
    }
    let qend = pos + 5;
    let qtype = u16::from_be_bytes([*q.get(pos + 1)?, *q.get(pos + 2)?]);
    let name = labels.join(".");
    let mut out = q.get(..qend)?.to_vec();
    out[2] = 0x81;
    out[3] = 0x80;
    out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    let answer = match name.as_str() {
        "allowed.example" => Some(Ipv4Addr::new(192, 0, 2, 10)),
        "gateway.example" => Some(gw),
        _ => None,
    };
    if let (Some(ip), 1) = (answer, qtype) {
        out[7] = 1;
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some((out, name))
}

/// The sprite's firewall table as `nft` lists it, read from the host in the network
/// namespace of `pid` (a process of the sprite); empty when there is none.
fn firewall_table(pid: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["nft", "list", "table", "inet", "sprite_policy"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packet count of the counted rule of `listing` that mentions `rule`.
fn packets(listing: &str, rule: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(rule) && l.contains("counter"))
        .unwrap_or_else(|| panic!("no {rule} rule: {listing}"));
    let after = line.split("packets ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The ports in the first `port_list` of `/v1/sprites/{sprite}/ports/watch`.
fn watched_ports(addr: SocketAddr, sprite: &str) -> Vec<u64> {
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{addr}/v1/sprites/{sprite}/ports/watch");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client::client(req, Retry(stream)).unwrap();
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "port_list", "{v}");
            return v["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["port"].as_u64())
                .collect();
        }
    }
}

fn sandbox_server(dir: &TempDir, upstream: SocketAddr) -> Option<ServerHandle> {
    match Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Sandbox)
        .dns_upstream(upstream)
        .start()
    {
        Ok(s) if s.runtime_note().contains("egress through NAT") => Some(s),
        Ok(s) => {
            eprintln!("SKIPPED: sprites have no egress here: {}", s.runtime_note());
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

#[test]
fn the_network_policy_is_enforced_by_the_sprites_resolver() {
    let dns = TestDns::start();
    let dir = TempDir::new("policy-dns");
    let Some(s) = sandbox_server(&dir, dns.addr) else {
        return;
    };
    let a = s.addr();
    create(a, "dnsp");
    // Without rules, everything resolves (through our resolver and the test's server).
    assert_eq!(
        ok(a, "dnsp", "getent hosts allowed.example"),
        "192.0.2.10      allowed.example"
    );
    assert_eq!(
        ok(a, "dnsp", "cat /etc/resolv.conf | grep nameserver"),
        "nameserver 127.0.0.53"
    );

    // The sprite's gateway (the host end of its veth): an address the sprite can send to
    // without anything leaving this machine (the host then refuses it).
    let route = ok(a, "dnsp", "ip -4 route show default");
    let gw: Ipv4Addr = route
        .split_whitespace()
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no default route: {route}"));
    *dns.gateway.lock().unwrap() = gw;
    let rules = r#"{"rules":[{"domain":"allowed.example","action":"allow"},
        {"domain":"gateway.example","action":"allow"},
        {"domain":"denied.example","action":"deny"}]}"#;
    let r = http(a, "POST", "/v1/sprites/dnsp/policy/network", Some(rules));
    assert_eq!(r.status, 204, "{}", body(&r));
    assert!(r.header(ENFORCEMENT).unwrap().starts_with("enforced"));
    let before = dns.denied_seen.load(Ordering::SeqCst);
    // Applies live, to the running sprite.
    let (out, err, code) = sh(a, "dnsp", "getent hosts denied.example");
    assert_ne!(code, 0, "denied name resolved: {out} {err}");
    assert_eq!(out, "");
    // What a DNS client inside sees, over UDP and over TCP (python3 is in the base image;
    // CI installs it): REFUSED (rcode 5) for the denied name, the address for the allowed one.
    let script = r#"
import socket, struct
def q(name):
    return bytes.fromhex("abcd01000001000000000000") + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
def udp(name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(q(name), ("127.0.0.53", 53)); return s.recv(4096)
def tcp(name):
    s = socket.create_connection(("127.0.0.53", 53), timeout=5); m = q(name)
    s.sendall(struct.pack(">H", len(m)) + m)
    n = struct.unpack(">H", s.recv(2))[0]; b = b""
    while len(b) < n: b += s.recv(n - len(b))
    return b
for f in (udp, tcp):
    d, a = f("denied.example"), f("allowed.example")
    print(f.__name__, d[3] & 15, a[3] & 15, ".".join(map(str, a[-4:])))
"#;
    let out = ok(a, "dnsp", &format!("python3 -c '{script}'"));
    assert_eq!(out, "udp 5 0 192.0.2.10\ntcp 5 0 192.0.2.10");
    // The resolver's TCP listener is the server's, not a port of the sprite's: the port
    // watch's snapshot does not list it.
    assert!(!watched_ports(a, "dnsp").contains(&53));
    assert_eq!(
        dns.denied_seen.load(Ordering::SeqCst),
        before,
        "a denied name went upstream"
    );
    assert_eq!(
        ok(a, "dnsp", "getent hosts allowed.example"),
        "192.0.2.10      allowed.example"
    );
    // A name no rule matches: the list has an allow rule, so it is an allow list.
    assert_ne!(sh(a, "dnsp", "getent hosts other.example").2, 0);

    // Visible, read-only, inside.
    let seen = ok(a, "dnsp", "cat /.sprite/policy/network.json");
    let v: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(v["rules"][2]["domain"], "denied.example");
    let (_, _, code) = sh(a, "dnsp", "echo '{}' > /.sprite/policy/network.json");
    assert_ne!(code, 0);
    let (_, _, code) = sh(
        a,
        "dnsp",
        "sudo -n sh -c \"echo '{}' > /.sprite/policy/network.json\"",
    );
    assert_ne!(code, 0, "root inside cannot change it either");
    let (_, _, code) = sh(a, "dnsp", "sudo -n umount /.sprite/policy");
    assert_ne!(code, 0);

    // Connection level: the firewall in the sprite's namespace lets out only what an
    // allowed name resolved to. Seen from the host through a process of the sprite: its
    // rules count the packets they let through and reject.
    let (ws, _, host_pid) = connect_on_host(a, "dnsp", &["sleep", "30"]);
    let pid = host_pid.to_string();
    let table = || firewall_table(&pid);
    let listing = table();
    assert!(listing.contains("192.0.2.10"), "{listing}");
    let (rejected, passed) = (packets(&listing, "reject"), packets(&listing, "@allowed4"));
    // A raw address no allowed name resolved to: rejected by our table, at once.
    let (_, err, code) = sh(
        a,
        "dnsp",
        "timeout 10 bash -c 'echo > /dev/tcp/192.0.2.99/80'",
    );
    assert_ne!(code, 0);
    assert!(err.contains("No route to host"), "{err}");
    let listing = table();
    assert!(packets(&listing, "reject") > rejected, "{listing}");
    assert_eq!(packets(&listing, "@allowed4"), passed, "{listing}");
    // An address an allowed name resolved to passes our table (the host then refuses it:
    // sprites cannot reach the host; what matters is the counter).
    assert_eq!(
        ok(a, "dnsp", "getent hosts gateway.example"),
        format!("{gw:<15} gateway.example")
    );
    let _ = sh(
        a,
        "dnsp",
        &format!("timeout 10 bash -c 'echo > /dev/tcp/{gw}/80'"),
    );
    let listing = table();
    assert!(listing.contains(&gw.to_string()), "{listing}");
    assert!(packets(&listing, "@allowed4") > passed, "{listing}");
    // Root inside cannot remove the table (the namespace belongs to the host).
    let (_, _, code) = sh(a, "dnsp", "sudo -n nft delete table inet sprite_policy");
    assert_ne!(code, 0);

    // Back to no rules: no table, everything resolves.
    let r = http(
        a,
        "POST",
        "/v1/sprites/dnsp/policy/network",
        Some(r#"{"rules":[]}"#),
    );
    assert_eq!(r.status, 204);
    assert_eq!(table(), "", "the table is gone");
    let (out, _, code) = sh(a, "dnsp", "getent hosts denied.example; echo $?");
    assert_eq!(
        (out.trim(), code),
        ("2", 0),
        "NOERROR with no address: not found"
    );
    assert!(
        dns.denied_seen.load(Ordering::SeqCst) > before,
        "forwarded now"
    );
    drop(ws);
    s.shutdown();
}

#[test]
fn a_stored_policy_applies_when_the_sprite_starts_and_after_a_restart() {
    let dns = TestDns::start();
    let dir = TempDir::new("policy-restart");
    let Some(s) = sandbox_server(&dir, dns.addr) else {
        return;
    };
    create(s.addr(), "early");
    // Set before the sprite ever ran: its agent starts with it.
    let rules = r#"{"rules":[{"domain":"allowed.example","action":"allow"}]}"#;
    let r = http(
        s.addr(),
        "POST",
        "/v1/sprites/early/policy/network",
        Some(rules),
    );
    assert_eq!(r.status, 204);
    let check = |a: SocketAddr| {
        assert_ne!(sh(a, "early", "getent hosts denied.example").2, 0);
        assert_eq!(
            ok(a, "early", "getent hosts allowed.example"),
            "192.0.2.10      allowed.example"
        );
        // The firewall is up from the start: a raw address is rejected.
        let (_, err, code) = sh(
            a,
            "early",
            "timeout 10 bash -c 'echo > /dev/tcp/192.0.2.99/80'",
        );
        assert_ne!(code, 0);
        assert!(err.contains("No route to host"), "{err}");
    };
    check(s.addr());
    s.shutdown();
    let s = sandbox_server(&dir, dns.addr).unwrap();
    check(s.addr());
    assert_eq!(dns.denied_seen.load(Ordering::SeqCst), 0);
    s.shutdown();
}

#[test]
fn privileges_and_resources_apply_to_new_processes() {
    let dns = TestDns::start();
    let dir = TempDir::new("policy-priv");
    let Some(s) = sandbox_server(&dir, dns.addr) else {
        return;
    };
    let a = s.addr();
    create(a, "privp");
    assert_eq!(
        ok(a, "privp", "grep NoNewPrivs /proc/self/status"),
        "NoNewPrivs:\t0"
    );
    assert_eq!(ok(a, "privp", "sudo -n id -u"), "0");
    let r = http(
        a,
        "POST",
        "/v1/sprites/privp/policy/privileges",
        Some(r#"{"noNewPrivileges":true}"#),
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        ok(a, "privp", "grep NoNewPrivs /proc/self/status"),
        "NoNewPrivs:\t1"
    );
    assert_ne!(
        sh(a, "privp", "sudo -n id -u").2,
        0,
        "sudo needs new privileges"
    );
    assert_eq!(
        http(a, "DELETE", "/v1/sprites/privp/policy/privileges", None).status,
        204
    );
    assert_eq!(ok(a, "privp", "sudo -n id -u"), "0");

    let r = http(
        a,
        "POST",
        "/v1/sprites/privp/policy/resources",
        Some(r#"{"memory":{"limit_mb":64}}"#),
    );
    assert_eq!(r.status, 204);
    assert_eq!(ok(a, "privp", "ulimit -d"), (64 * 1024).to_string());
    assert_eq!(
        http(a, "DELETE", "/v1/sprites/privp/policy/resources", None).status,
        204
    );
    assert_ne!(ok(a, "privp", "ulimit -d"), (64 * 1024).to_string());
    s.shutdown();
}

#[test]
fn the_dns_upstream_option_takes_an_address_with_or_without_a_port() {
    let cli = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_sprites-local"))
            .args(["--dns-upstream", value, "--help"])
            .output()
            .unwrap()
    };
    // Valid values parse, then `--help` ends the run successfully.
    for ok in ["127.0.0.1", "127.0.0.1:5353", "[::1]:53"] {
        let out = cli(ok);
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("--dns-upstream ADDR"));
    }
    let out = cli("resolver.example");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"--dns-upstream: "resolver.example" is not an IP address[:port]"#),
        "{err}"
    );
}
